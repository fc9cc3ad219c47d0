"""SQLite store (WAL). The node creates and migrates its own schema.

One connection guarded by a lock: the control plane's writes are small and the event loop calls them
directly; WAL keeps readers in other processes (the CLI) from blocking the node.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

# Each entry moves the schema one version forward. Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE apps (
        app_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_salt BLOB NOT NULL,
        key_hash BLOB NOT NULL,
        token_secret BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE rooms (
        room_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(app_id),
        name TEXT NOT NULL,
        owner_ref TEXT,
        mode TEXT NOT NULL,
        type TEXT NOT NULL,
        settings TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX rooms_by_app ON rooms(app_id, created, room_id);
    CREATE TABLE tokens (
        token_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        user_ref TEXT NOT NULL,
        role TEXT NOT NULL,
        issued REAL NOT NULL,
        expires REAL NOT NULL,
        revoked REAL,
        used_session TEXT
    );
    CREATE INDEX tokens_by_room ON tokens(room_id);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        end_reason TEXT
    );
    CREATE INDEX sessions_by_room ON sessions(room_id, started);
    CREATE TABLE participants (
        session_id TEXT NOT NULL REFERENCES sessions(session_id),
        participant_id TEXT NOT NULL,
        user_ref TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        token_id TEXT,
        joined REAL NOT NULL,
        left REAL,
        PRIMARY KEY (session_id, participant_id)
    );
    """,
    """
    CREATE TABLE chat_messages (
        message_id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        sender_ref TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        recipients TEXT,
        text TEXT NOT NULL,
        sent REAL NOT NULL
    );
    CREATE INDEX chat_by_session ON chat_messages(session_id, message_id);
    ALTER TABLE participants ADD COLUMN leave_reason TEXT;
    """,
)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # -- schema -------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self.schema_version
                for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for stmt in script.split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={i}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plumbing -----------------------------------------------------------------------------------
    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(params))

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def query_one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchone()

    def transaction(self) -> "_Transaction":
        return _Transaction(self)


class _Transaction:
    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        self.store._db.execute("BEGIN IMMEDIATE")
        return self.store._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()


def now() -> float:
    return time.time()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
