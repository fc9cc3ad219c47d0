"""The SQLite backend (WAL) of the repository interfaces: all of the project's SQL, schema migrations included.

One connection guarded by a lock: the control plane's writes are small and the event loop calls them
directly; WAL keeps readers in other processes (the CLI) from blocking the node.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .repositories import (NODE_RESTART, AppRecord, CdrRow, ChatMessageRecord, ClaimOutcome, DeliveryRecord,
                           OutboxEvent, ParticipantRecord, RecordingRecord, RoomChange, RoomDeletion, RoomRecord,
                           SessionRecord, TokenRecord, TranscriptRecord, WebhookRecord)

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
    """
    CREATE TABLE webhooks (
        hook_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(app_id),
        url TEXT NOT NULL,
        events TEXT,
        secret TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX webhooks_by_app ON webhooks(app_id, created);
    CREATE TABLE webhook_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        app_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        seq INTEGER NOT NULL REFERENCES webhook_events(seq),
        hook_id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        last_error TEXT,
        updated REAL NOT NULL,
        PRIMARY KEY (hook_id, seq)
    );
    CREATE INDEX deliveries_pending ON webhook_deliveries(state, hook_id, seq);
    """,
    """
    ALTER TABLE sessions ADD COLUMN room_details TEXT;
    CREATE INDEX sessions_by_app ON sessions(app_id, started);
    CREATE INDEX participants_by_joined ON participants(joined);
    CREATE TABLE participant_usage (
        session_id TEXT NOT NULL,
        participant_id TEXT NOT NULL,
        usage TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (session_id, participant_id)
    );
    """,
    """
    CREATE TABLE recordings (
        file_id TEXT PRIMARY KEY,
        recording_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        participant_id TEXT NOT NULL,
        user_ref TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        codec TEXT NOT NULL,
        path TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        bytes INTEGER,
        duration REAL,
        state TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX recordings_by_room ON recordings(app_id, room_id, started);
    CREATE INDEX recordings_by_session ON recordings(session_id, started);
    CREATE INDEX recordings_by_state ON recordings(state);
    """,
    """
    CREATE TABLE transcripts (
        session_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        state TEXT NOT NULL,
        engine TEXT NOT NULL,
        segments TEXT,
        error TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX transcripts_by_state ON transcripts(state);
    """,
)


class _Database:
    """The connection, its lock, and the migrations that bring its schema to the current version."""

    def __init__(self, path: Path):
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            return version

    def migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for stmt in script.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version={i}")

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(params))

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, tuple(params)).fetchone()  # row_factory is sqlite3.Row
            return row

    def count(self, sql: str, params: Iterable[Any] = ()) -> int:
        """The single number a `SELECT count(*)` returns."""
        row = self.one(sql, params)
        return int(row[0]) if row is not None else 0

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises (the exception goes on)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# --- apps --------------------------------------------------------------------------------------------
def _app(r: sqlite3.Row) -> AppRecord:
    return AppRecord(r["app_id"], r["name"], r["created"], r["token_secret"], r["key_salt"], r["key_hash"])


class SqliteApps:
    def __init__(self, db: _Database):
        self._db = db

    def add(self, app: AppRecord) -> None:
        self._db.execute(
            "INSERT INTO apps(app_id, name, key_salt, key_hash, token_secret, created) VALUES (?,?,?,?,?,?)",
            (app.app_id, app.name, app.key_salt, app.key_hash, app.token_secret, app.created))

    def get(self, app_id: str) -> AppRecord | None:
        r = self._db.one("SELECT * FROM apps WHERE app_id=?", (app_id,))
        return _app(r) if r else None

    def list(self) -> list[AppRecord]:
        return [_app(r) for r in self._db.all("SELECT * FROM apps ORDER BY created")]

    def count(self) -> int:
        return self._db.count("SELECT count(*) FROM apps")


# --- rooms -------------------------------------------------------------------------------------------
def _room(r: sqlite3.Row) -> RoomRecord:
    return RoomRecord(r["room_id"], r["app_id"], r["name"], r["owner_ref"] or "", r["mode"], r["type"],
                      json.loads(r["settings"]), json.loads(r["data"]), r["created"], r["updated"])


def _live_session(db: sqlite3.Connection, room_id: str) -> str | None:
    r = db.execute("SELECT session_id FROM sessions WHERE room_id=? AND ended IS NULL", (room_id,)).fetchone()
    return r["session_id"] if r else None


def _delete_room(db: sqlite3.Connection, room_id: str, at: float) -> None:
    db.execute("DELETE FROM rooms WHERE room_id=?", (room_id,))
    db.execute("UPDATE tokens SET revoked=? WHERE room_id=? AND revoked IS NULL", (at, room_id))


class SqliteRooms:
    def __init__(self, db: _Database):
        self._db = db

    def add(self, room: RoomRecord) -> None:
        self._db.execute(
            "INSERT INTO rooms(room_id, app_id, name, owner_ref, mode, type, settings, data, created, updated)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (room.room_id, room.app_id, room.name, room.owner_ref, room.mode, room.type, _dumps(room.settings),
             _dumps(room.data), room.created, room.updated))

    def get(self, room_id: str, app_id: str | None = None) -> RoomRecord | None:
        if app_id is None:
            r = self._db.one("SELECT * FROM rooms WHERE room_id=?", (room_id,))
        else:
            r = self._db.one("SELECT * FROM rooms WHERE room_id=? AND app_id=?", (room_id, app_id))
        return _room(r) if r else None

    def list(self, app_id: str, offset: int, limit: int) -> tuple[int, list[RoomRecord]]:
        with self._db.transaction() as db:  # the total and the page from one snapshot
            total = db.execute("SELECT count(*) FROM rooms WHERE app_id=?", (app_id,)).fetchone()[0]
            rows = db.execute("SELECT * FROM rooms WHERE app_id=? ORDER BY created, room_id LIMIT ? OFFSET ?",
                              (app_id, limit, offset)).fetchall()
        return total, [_room(r) for r in rows]

    def count(self) -> int:
        return self._db.count("SELECT count(*) FROM rooms")

    def update(self, app_id: str, room_id: str, change: RoomChange) -> RoomRecord | None:
        with self._db.transaction() as db:
            r = db.execute("SELECT * FROM rooms WHERE room_id=? AND app_id=?", (room_id, app_id)).fetchone()
            if r is None:
                return None
            new = change(_room(r), _live_session(db, room_id))
            db.execute("UPDATE rooms SET name=?, owner_ref=?, mode=?, type=?, settings=?, data=?, updated=?"
                       " WHERE room_id=?", (new.name, new.owner_ref, new.mode, new.type, _dumps(new.settings),
                                            _dumps(new.data), new.updated, room_id))
            return new

    def delete_if_idle(self, app_id: str, room_id: str, at: float) -> RoomDeletion:
        with self._db.transaction() as db:
            if db.execute("SELECT 1 FROM rooms WHERE room_id=? AND app_id=?", (room_id, app_id)).fetchone() is None:
                return RoomDeletion.NOT_FOUND
            if _live_session(db, room_id):
                return RoomDeletion.SESSION_LIVE
            _delete_room(db, room_id, at)
            return RoomDeletion.DELETED


# --- tokens ------------------------------------------------------------------------------------------
def _token(r: sqlite3.Row) -> TokenRecord:
    return TokenRecord(r["token_id"], r["app_id"], r["room_id"], r["user_ref"], r["role"], r["issued"],
                       r["expires"], r["revoked"], r["used_session"])


class SqliteTokens:
    def __init__(self, db: _Database):
        self._db = db

    def add(self, token: TokenRecord) -> None:
        self._db.execute(
            "INSERT INTO tokens(token_id, app_id, room_id, user_ref, role, issued, expires, revoked, used_session)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (token.token_id, token.app_id, token.room_id, token.user_ref, token.role, token.issued, token.expires,
             token.revoked, token.used_session))

    def get(self, token_id: str) -> TokenRecord | None:
        r = self._db.one("SELECT * FROM tokens WHERE token_id=?", (token_id,))
        return _token(r) if r else None

    def count(self) -> int:
        return self._db.count("SELECT count(*) FROM tokens")

    def revoke(self, app_id: str, room_id: str, token_id: str, at: float) -> bool:
        with self._db.transaction() as db:
            cur = db.execute("UPDATE tokens SET revoked=? WHERE token_id=? AND room_id=? AND app_id=?"
                             " AND revoked IS NULL", (at, token_id, room_id, app_id))
            if cur.rowcount:
                return True
            return db.execute("SELECT 1 FROM tokens WHERE token_id=? AND room_id=? AND app_id=?",
                              (token_id, room_id, app_id)).fetchone() is not None

    def claim_for_session(self, token_id: str, session_id: str) -> ClaimOutcome:
        with self._db.transaction() as db:
            r = db.execute("SELECT used_session FROM tokens WHERE token_id=?", (token_id,)).fetchone()
            if r is None:
                return ClaimOutcome.UNKNOWN
            if r["used_session"] not in (None, session_id):
                # A session that ended because its node stopped without ending it (close_dangling)
                # was not the token's to lose: it may join the room's next session.
                cut = db.execute("SELECT end_reason FROM sessions WHERE session_id=?", (r["used_session"],)).fetchone()
                if cut is None or cut["end_reason"] != NODE_RESTART:
                    return ClaimOutcome.USED_ELSEWHERE
            db.execute("UPDATE tokens SET used_session=? WHERE token_id=?", (session_id, token_id))
            return ClaimOutcome.CLAIMED


# --- sessions, participants, chat ----------------------------------------------------------------------
def _session(r: sqlite3.Row) -> SessionRecord:
    return SessionRecord(r["session_id"], r["app_id"], r["room_id"], r["started"], r["ended"], r["end_reason"],
                         json.loads(r["room_details"]) if r["room_details"] else None)


def _participant(r: sqlite3.Row) -> ParticipantRecord:
    return ParticipantRecord(r["session_id"], r["participant_id"], r["user_ref"], r["name"], r["role"],
                             r["token_id"], r["joined"], r["left"], r["leave_reason"])


def _chat(r: sqlite3.Row) -> ChatMessageRecord:
    return ChatMessageRecord(r["session_id"], r["room_id"], r["sender_id"], r["sender_ref"], r["sender_name"],
                             None if r["recipients"] is None else json.loads(r["recipients"]), r["text"], r["sent"],
                             r["message_id"])


def _enqueue(db: sqlite3.Connection, events: Sequence[OutboxEvent]) -> None:
    """The events, and a pending delivery of each to every webhook of its app that wants its type; inside
    the caller's transaction (the state change they report)."""
    for e in events:
        cur = db.execute("INSERT INTO webhook_events(event_id, app_id, room_id, type, body, created)"
                         " VALUES (?,?,?,?,?,?)", (e.event_id, e.app_id, e.room_id, e.type, _dumps(e.body), e.created))
        for h in db.execute("SELECT hook_id, events FROM webhooks WHERE app_id=?", (e.app_id,)).fetchall():
            if h["events"] is None or e.type in json.loads(h["events"]):
                db.execute("INSERT INTO webhook_deliveries(seq, hook_id, state, attempts, next_at, updated)"
                           " VALUES (?,?,'pending',0,?,?)", (cur.lastrowid, h["hook_id"], e.created, e.created))


@contextlib.contextmanager
def _maybe_transaction(database: "_Database", outbox: Sequence[OutboxEvent]) -> Iterator[Any]:
    """A transaction when events go with the change; a single statement needs none."""
    if outbox:
        with database.transaction() as db:
            yield db
            _enqueue(db, outbox)
    else:
        yield database


class SqliteSessions:
    def __init__(self, db: _Database):
        self._db = db

    def start(self, app_id: str, room_id: str, session_id: str, at: float,
              outbox: Sequence[OutboxEvent] = (), room_details: dict[str, Any] | None = None) -> str:
        with self._db.transaction() as db:
            live = _live_session(db, room_id)
            if live:
                return live
            db.execute("INSERT INTO sessions(session_id, app_id, room_id, started, room_details) VALUES (?,?,?,?,?)",
                       (session_id, app_id, room_id, at, None if room_details is None else _dumps(room_details)))
            _enqueue(db, outbox)
            return session_id

    def end(self, session_id: str, reason: str, at: float, outbox: Sequence[OutboxEvent] = ()) -> str | None:
        with self._db.transaction() as db:
            _enqueue(db, outbox)
            db.execute("UPDATE participants SET left=?, leave_reason=? WHERE session_id=? AND left IS NULL",
                       (at, "session-ended", session_id))
            db.execute("UPDATE sessions SET ended=?, end_reason=? WHERE session_id=? AND ended IS NULL",
                       (at, reason, session_id))
            r = db.execute("SELECT s.room_id, r.type FROM sessions s JOIN rooms r ON r.room_id = s.room_id"
                           " WHERE s.session_id=?", (session_id,)).fetchone()
            # Ad hoc rooms live for one session (seed: "created on demand and destroyed after use").
            if r and r["type"] == "adhoc":
                room_id: str = r["room_id"]
                _delete_room(db, room_id, at)
                return room_id
            return None

    def get(self, session_id: str) -> SessionRecord | None:
        r = self._db.one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        return _session(r) if r else None

    def open_session_ids(self) -> list[str]:
        return [r["session_id"] for r in self._db.all("SELECT session_id FROM sessions WHERE ended IS NULL")]

    def live_session(self, room_id: str) -> str | None:
        r = self._db.one("SELECT session_id FROM sessions WHERE room_id=? AND ended IS NULL", (room_id,))
        return r["session_id"] if r else None

    def add_participant(self, participant: ParticipantRecord, outbox: Sequence[OutboxEvent] = ()) -> None:
        p = participant
        with _maybe_transaction(self._db, outbox) as db:
            db.execute(
                "INSERT INTO participants(session_id, participant_id, user_ref, name, role, token_id, joined, left,"
                " leave_reason) VALUES (?,?,?,?,?,?,?,?,?)",
                (p.session_id, p.participant_id, p.user_ref, p.name, p.role, p.token_id, p.joined, p.left,
                 p.leave_reason))

    def participant_left(self, session_id: str, participant_id: str, reason: str, at: float,
                         outbox: Sequence[OutboxEvent] = ()) -> None:
        with _maybe_transaction(self._db, outbox) as db:
            db.execute("UPDATE participants SET left=?, leave_reason=? WHERE session_id=? AND participant_id=?"
                       " AND left IS NULL", (at, reason, session_id, participant_id))

    def participants(self, session_id: str) -> list[ParticipantRecord]:
        return [_participant(r) for r in
                self._db.all("SELECT * FROM participants WHERE session_id=? ORDER BY joined", (session_id,))]

    def live_participants(self, room_id: str) -> list[ParticipantRecord]:
        rows = self._db.all(
            "SELECT p.* FROM participants p JOIN sessions s ON s.session_id = p.session_id"
            " WHERE s.room_id=? AND s.ended IS NULL AND p.left IS NULL ORDER BY p.joined", (room_id,))
        return [_participant(r) for r in rows]

    def add_chat_message(self, message: ChatMessageRecord) -> int:
        m = message
        cur = self._db.execute(
            "INSERT INTO chat_messages(session_id, room_id, sender_id, sender_ref, sender_name, recipients, text,"
            " sent) VALUES (?,?,?,?,?,?,?,?)",
            (m.session_id, m.room_id, m.sender_id, m.sender_ref, m.sender_name,
             None if m.recipients is None else _dumps(m.recipients), m.text, m.sent))
        return int(cur.lastrowid or 0)

    def chat_messages(self, session_id: str) -> list[ChatMessageRecord]:
        return [_chat(r) for r in
                self._db.all("SELECT * FROM chat_messages WHERE session_id=? ORDER BY message_id", (session_id,))]

    def save_usage(self, session_id: str, usage: Mapping[str, dict[str, Any]], at: float,
                   outbox: Sequence[OutboxEvent] = ()) -> None:
        with self._db.transaction() as db:
            db.executemany("INSERT INTO participant_usage(session_id, participant_id, usage, updated) VALUES (?,?,?,?)"
                           " ON CONFLICT(session_id, participant_id) DO UPDATE SET usage=excluded.usage,"
                           " updated=excluded.updated",
                           [(session_id, pid, _dumps(u), at) for pid, u in usage.items()])
            _enqueue(db, outbox)

    def last_activity(self, session_id: str) -> float | None:
        r = self._db.one("SELECT max(t) FROM (SELECT max(updated) AS t FROM participant_usage WHERE session_id=?"
                         " UNION ALL SELECT max(max(joined), coalesce(max(left), 0)) FROM participants"
                         " WHERE session_id=? UNION ALL SELECT started FROM sessions WHERE session_id=?)",
                         (session_id, session_id, session_id))
        return None if r is None or r[0] is None else float(r[0])

    def cdr(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
            joined_from: float | None = None, joined_to: float | None = None, offset: int = 0,
            limit: int = 100) -> tuple[int, list[CdrRow]]:
        where: list[str] = ["s.app_id=?"]
        params: list[Any] = [app_id]
        for clause, value in (("s.room_id=?", room_id), ("s.session_id=?", session_id),
                              ("p.joined>=?", joined_from), ("p.joined<?", joined_to)):
            if value is not None:
                where.append(clause)
                params.append(value)
        cond = " AND ".join(where)
        base = " FROM participants p JOIN sessions s ON s.session_id = p.session_id WHERE " + cond
        with self._db.transaction() as db:     # the count and the page agree
            total = int(db.execute("SELECT count(*)" + base, params).fetchone()[0])
            rows = db.execute(
                "SELECT p.*, s.app_id, s.room_id, s.started, s.ended, s.end_reason, s.room_details, u.usage,"
                " (SELECT count(*) FROM participants q WHERE q.session_id = p.session_id AND q.user_ref = p.user_ref"
                "  AND (q.joined < p.joined OR (q.joined = p.joined AND q.participant_id <= p.participant_id))) AS leg"
                " FROM participants p JOIN sessions s ON s.session_id = p.session_id"
                " LEFT JOIN participant_usage u ON u.session_id = p.session_id AND u.participant_id = p.participant_id"
                " WHERE " + cond + " ORDER BY p.joined, p.participant_id LIMIT ? OFFSET ?",
                [*params, limit, offset]).fetchall()
        return total, [CdrRow(_session(r), _participant(r), int(r["leg"]),
                              json.loads(r["usage"]) if r["usage"] else None) for r in rows]


# --- the store -------------------------------------------------------------------------------------------
# --- webhooks ----------------------------------------------------------------------------------------
def _hook(r: sqlite3.Row) -> WebhookRecord:
    return WebhookRecord(r["hook_id"], r["app_id"], r["url"], json.loads(r["events"]) if r["events"] else None,
                         r["secret"], r["created"])


_DELIVERY = ("SELECT e.event_id, d.hook_id, h.url, h.secret, e.type, e.body, e.created, d.state, d.attempts,"
             " d.next_at, d.last_error, d.updated FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.seq"
             " JOIN webhooks h ON h.hook_id = d.hook_id")


def _delivery(r: sqlite3.Row) -> DeliveryRecord:
    return DeliveryRecord(r["event_id"], r["hook_id"], r["url"], r["secret"], r["type"], r["body"], r["created"],
                          r["state"], r["attempts"], r["next_at"], r["last_error"], r["updated"])


class SqliteWebhooks:
    def __init__(self, db: _Database):
        self._db = db

    def add(self, hook: WebhookRecord) -> None:
        self._db.execute("INSERT INTO webhooks(hook_id, app_id, url, events, secret, created) VALUES (?,?,?,?,?,?)",
                         (hook.hook_id, hook.app_id, hook.url, None if hook.events is None else _dumps(hook.events),
                          hook.secret, hook.created))

    def of_app(self, app_id: str) -> list[WebhookRecord]:
        return [_hook(r) for r in self._db.all("SELECT * FROM webhooks WHERE app_id=? ORDER BY created", (app_id,))]

    def get(self, app_id: str, hook_id: str) -> WebhookRecord | None:
        r = self._db.one("SELECT * FROM webhooks WHERE app_id=? AND hook_id=?", (app_id, hook_id))
        return _hook(r) if r else None

    def delete(self, app_id: str, hook_id: str) -> bool:
        with self._db.transaction() as db:
            if db.execute("DELETE FROM webhooks WHERE app_id=? AND hook_id=?", (app_id, hook_id)).rowcount == 0:
                return False
            db.execute("DELETE FROM webhook_deliveries WHERE hook_id=?", (hook_id,))
            return True

    def set_secret(self, app_id: str, hook_id: str, secret: str) -> bool:
        cur = self._db.execute("UPDATE webhooks SET secret=? WHERE app_id=? AND hook_id=?", (secret, app_id, hook_id))
        return cur.rowcount > 0

    def hooks_with_pending(self) -> list[str]:
        return [r["hook_id"] for r in
                self._db.all("SELECT DISTINCT hook_id FROM webhook_deliveries WHERE state='pending'")]

    def pending(self, hook_id: str, limit: int) -> list[DeliveryRecord]:
        return [_delivery(r) for r in self._db.all(
            _DELIVERY + " WHERE d.hook_id=? AND d.state='pending' ORDER BY d.seq LIMIT ?", (hook_id, limit))]

    def deliveries(self, app_id: str, hook_id: str, limit: int) -> list[DeliveryRecord]:
        return [_delivery(r) for r in self._db.all(
            _DELIVERY + " WHERE d.hook_id=? AND h.app_id=? ORDER BY d.seq DESC LIMIT ?", (hook_id, app_id, limit))]

    def settle(self, event_id: str, hook_id: str, state: str, attempts: int, next_at: float, error: str | None,
               at: float) -> None:
        self._db.execute("UPDATE webhook_deliveries SET state=?, attempts=?, next_at=?, last_error=?, updated=?"
                         " WHERE hook_id=? AND seq=(SELECT seq FROM webhook_events WHERE event_id=?)",
                         (state, attempts, next_at, error, at, hook_id, event_id))


    def requeue(self, app_id: str, hook_id: str, event_id: str | None, start: float, end: float, at: float) -> int:
        which = "e.event_id=?" if event_id is not None else "e.created >= ? AND e.created < ?"
        args: tuple[Any, ...] = (event_id,) if event_id is not None else (start, end)
        cur = self._db.execute(
            "UPDATE webhook_deliveries SET state='pending', next_at=?, updated=? WHERE hook_id=?"
            " AND hook_id IN (SELECT hook_id FROM webhooks WHERE app_id=?)"
            f" AND seq IN (SELECT e.seq FROM webhook_events e WHERE {which})", (at, at, hook_id, app_id, *args))
        return cur.rowcount


# --- recordings --------------------------------------------------------------------------------------
def _recording(r: sqlite3.Row) -> RecordingRecord:
    return RecordingRecord(r["file_id"], r["recording_id"], r["app_id"], r["room_id"], r["session_id"],
                           r["participant_id"], r["user_ref"], r["kind"], r["source"], r["codec"], r["path"],
                           r["started"], r["ended"], r["bytes"], r["duration"], r["state"], r["error"])


class SqliteRecordings:
    def __init__(self, db: _Database):
        self._db = db

    def add(self, files: Sequence[RecordingRecord], outbox: Sequence[OutboxEvent] = ()) -> None:
        with self._db.transaction() as db:
            db.executemany("INSERT INTO recordings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           [(f.file_id, f.recording_id, f.app_id, f.room_id, f.session_id, f.participant_id,
                             f.user_ref, f.kind, f.source, f.codec, f.path, f.started, f.ended, f.bytes, f.duration,
                             f.state, f.error) for f in files])
            _enqueue(db, outbox)

    def finish(self, file_id: str, state: str, ended: float, size: int, duration: float, error: str | None,
               outbox: Sequence[OutboxEvent] = ()) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE recordings SET state=?, ended=?, bytes=?, duration=?, error=? WHERE file_id=?",
                       (state, ended, size, duration, error, file_id))
            _enqueue(db, outbox)

    def get(self, file_id: str, app_id: str | None = None) -> RecordingRecord | None:
        r = self._db.one("SELECT * FROM recordings WHERE file_id=?" + (" AND app_id=?" if app_id else ""),
                         (file_id, app_id) if app_id else (file_id,))
        return _recording(r) if r else None

    def find(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
             recording_id: str | None = None, started_from: float | None = None,
             started_to: float | None = None) -> list[RecordingRecord]:
        where: list[str] = ["app_id=?"]
        params: list[Any] = [app_id]
        for clause, value in (("room_id=?", room_id), ("session_id=?", session_id), ("recording_id=?", recording_id),
                              ("started>=?", started_from), ("started<?", started_to)):
            if value is not None:
                where.append(clause)
                params.append(value)
        return [_recording(r) for r in self._db.all(
            "SELECT * FROM recordings WHERE " + " AND ".join(where) + " ORDER BY started, file_id", params)]

    def unfinished(self) -> list[RecordingRecord]:
        return [_recording(r) for r in self._db.all("SELECT * FROM recordings WHERE state='recording'")]

    def delete(self, app_id: str, file_id: str) -> RecordingRecord | None:
        with self._db.transaction() as db:
            r = db.execute("SELECT * FROM recordings WHERE file_id=? AND app_id=?", (file_id, app_id)).fetchone()
            if r is None:
                return None
            db.execute("DELETE FROM recordings WHERE file_id=?", (file_id,))
            return _recording(r)


# --- speech transcripts --------------------------------------------------------------------------------
def _transcript(r: sqlite3.Row) -> TranscriptRecord:
    return TranscriptRecord(r["session_id"], r["app_id"], r["room_id"], r["state"], r["engine"],
                            json.loads(r["segments"]) if r["segments"] else None, r["error"], r["created"],
                            r["updated"])


class SqliteTranscripts:
    def __init__(self, db: _Database):
        self._db = db

    def begin(self, transcript: TranscriptRecord) -> None:
        t = transcript
        self._db.execute("INSERT INTO transcripts(session_id, app_id, room_id, state, engine, created, updated)"
                         " VALUES (?,?,?,?,?,?,?) ON CONFLICT(session_id) DO UPDATE SET state=excluded.state,"
                         " updated=excluded.updated",
                         (t.session_id, t.app_id, t.room_id, t.state, t.engine, t.created, t.updated))

    def finish(self, session_id: str, state: str, segments: list[dict[str, Any]] | None, error: str | None,
               at: float, outbox: Sequence[OutboxEvent] = ()) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE transcripts SET state=?, segments=?, error=?, updated=? WHERE session_id=?",
                       (state, None if segments is None else _dumps(segments), error, at, session_id))
            _enqueue(db, outbox)

    def get(self, session_id: str) -> TranscriptRecord | None:
        r = self._db.one("SELECT * FROM transcripts WHERE session_id=?", (session_id,))
        return _transcript(r) if r else None

    def pending(self) -> list[TranscriptRecord]:
        return [_transcript(r) for r in self._db.all("SELECT * FROM transcripts WHERE state='pending'"
                                                     " ORDER BY created")]


class SqliteStore:
    """The default backend: one SQLite file (created, and migrated to the current schema, on open)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _Database(self.path)
        self._db.migrate()
        self.apps = SqliteApps(self._db)
        self.rooms = SqliteRooms(self._db)
        self.tokens = SqliteTokens(self._db)
        self.sessions = SqliteSessions(self._db)
        self.webhooks = SqliteWebhooks(self._db)
        self.recordings = SqliteRecordings(self._db)
        self.transcripts = SqliteTranscripts(self._db)

    @property
    def schema_version(self) -> int:
        return self._db.schema_version

    def close(self) -> None:
        self._db.close()
