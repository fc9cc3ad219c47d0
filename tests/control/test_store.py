"""The SQLite repositories on a real database file: each repository's operations, the atomicity of the
multi-statement ones, migration of a v1 file, and the contract a new backend has to implement."""
import ast
import dataclasses
import inspect
import sqlite3
import threading
import typing
from pathlib import Path

import pytest

from enx_media.store import (AppRecord, ChatMessageRecord, ClaimOutcome, ParticipantRecord, RecordingRecord, RoomDeletion,
                             RoomRecord, SqliteStore, Store, TokenRecord, TranscriptRecord)
from enx_media.store import repositories
from enx_media.store.sqlite import MIGRATIONS

CONTROL = Path(__file__).resolve().parents[2] / "enx_media" / "control"
RECORDING = CONTROL.parent / "recording"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "enx.sqlite3"


@pytest.fixture
def store(path):
    s = SqliteStore(path)
    yield s
    s.close()


def app(app_id="a1", created=1.0):
    return AppRecord(app_id, "name-" + app_id, created, b"s" * 32, b"salt" * 4, b"h" * 32)


def room(room_id="r1", app_id="a1", type="permanent", created=1.0):
    return RoomRecord(room_id, app_id, "room " + room_id, "owner", "group", type, {"mode": "group", "n": [1, 2]},
                      {"k": "v"}, created, created)


def token(token_id="t1", room_id="r1", app_id="a1"):
    return TokenRecord(token_id, app_id, room_id, "u1", "moderator", 10.0, 1000.0)


def participant(session_id, participant_id="p1", joined=2.0):
    return ParticipantRecord(session_id, participant_id, "u-" + participant_id, "Name " + participant_id,
                             "participant", "t1", joined)


def inject_failure(path, sql_event):
    """Make the next statement matching ``sql_event`` (e.g. 'DELETE ON rooms') fail inside SQLite."""
    db = sqlite3.connect(str(path))
    db.execute(f"CREATE TRIGGER injected_failure BEFORE {sql_event} BEGIN SELECT RAISE(ABORT, 'injected'); END")
    db.commit()
    db.close()


def remove_failure(path):
    db = sqlite3.connect(str(path))
    db.execute("DROP TRIGGER injected_failure")
    db.commit()
    db.close()


# --- apps --------------------------------------------------------------------------------------------
def test_apps(store):
    assert store.apps.count() == 0 and store.apps.list() == [] and store.apps.get("a1") is None
    store.apps.add(app("a2", created=2.0))
    store.apps.add(app("a1", created=1.0))
    assert store.apps.get("a1") == app("a1", created=1.0)
    assert [a.app_id for a in store.apps.list()] == ["a1", "a2"]
    assert store.apps.count() == 2
    with pytest.raises(sqlite3.IntegrityError):
        store.apps.add(app("a1"))


# --- rooms -------------------------------------------------------------------------------------------
def test_rooms_add_get_list(store):
    store.apps.add(app("a1"))
    store.apps.add(app("a2"))
    for i in range(5):
        store.rooms.add(room(f"r{i}", created=float(i)))
    store.rooms.add(room("other", app_id="a2"))
    assert store.rooms.get("r1") == room("r1", created=1.0)
    assert store.rooms.get("r1", "a1") == room("r1", created=1.0)
    assert store.rooms.get("r1", "a2") is None and store.rooms.get("nope") is None
    total, page = store.rooms.list("a1", 1, 2)
    assert total == 5 and [r.room_id for r in page] == ["r1", "r2"]
    assert store.rooms.count() == 6
    with pytest.raises(sqlite3.IntegrityError):  # rooms reference their app
        store.rooms.add(room("orphan", app_id="no-such-app"))


def test_room_update(store):
    store.apps.add(app())
    store.rooms.add(room())
    seen = []

    def change(current, live):
        seen.append(live)
        return RoomRecord(current.room_id, current.app_id, "renamed", current.owner_ref, "lecture", current.type,
                          {"x": 1}, {}, current.created, 5.0)

    updated = store.rooms.update("a1", "r1", change)
    assert updated.name == "renamed" and store.rooms.get("r1") == updated and seen == [None]
    assert store.rooms.update("a2", "r1", change) is None  # another app's room
    store.sessions.start("a1", "r1", "s1", 6.0)
    store.rooms.update("a1", "r1", change)
    assert seen[-1] == "s1"  # the change sees the live session


def test_room_update_is_atomic(store):
    store.apps.add(app())
    store.rooms.add(room())

    def refuse(current, live):
        raise ValueError("no")

    with pytest.raises(ValueError):
        store.rooms.update("a1", "r1", refuse)
    assert store.rooms.get("r1") == room()


def test_room_delete(store, path):
    store.apps.add(app())
    store.rooms.add(room())
    store.tokens.add(token("t1"))
    assert store.rooms.delete_if_idle("a2", "r1", 7.0) is RoomDeletion.NOT_FOUND
    store.sessions.start("a1", "r1", "s1", 6.0)
    assert store.rooms.delete_if_idle("a1", "r1", 7.0) is RoomDeletion.SESSION_LIVE
    assert store.rooms.get("r1") is not None and store.tokens.get("t1").revoked is None
    store.sessions.end("s1", "done", 8.0)

    inject_failure(path, "UPDATE ON tokens")  # the room's row goes first, then its tokens are revoked
    with pytest.raises(sqlite3.DatabaseError):
        store.rooms.delete_if_idle("a1", "r1", 9.0)
    assert store.rooms.get("r1") is not None and store.tokens.get("t1").revoked is None
    remove_failure(path)

    assert store.rooms.delete_if_idle("a1", "r1", 9.0) is RoomDeletion.DELETED
    assert store.rooms.get("r1") is None and store.tokens.get("t1").revoked == 9.0
    assert store.rooms.delete_if_idle("a1", "r1", 9.0) is RoomDeletion.NOT_FOUND


# --- tokens ------------------------------------------------------------------------------------------
def test_tokens(store):
    store.tokens.add(token("t1"))
    store.tokens.add(token("t2"))
    assert store.tokens.get("t1") == token("t1") and store.tokens.get("nope") is None
    assert store.tokens.count() == 2
    assert store.tokens.revoke("a1", "r1", "t1", 20.0) is True
    assert store.tokens.revoke("a1", "r1", "t1", 30.0) is True  # already revoked: kept as it was
    assert store.tokens.get("t1").revoked == 20.0
    assert store.tokens.revoke("a1", "other-room", "t2", 20.0) is False
    assert store.tokens.revoke("other-app", "r1", "t2", 20.0) is False
    assert store.tokens.revoke("a1", "r1", "nope", 20.0) is False
    assert store.tokens.get("t2").revoked is None


def test_token_claim(store):
    store.tokens.add(token("t1"))
    assert store.tokens.claim_for_session("t1", "s1") is ClaimOutcome.CLAIMED
    assert store.tokens.claim_for_session("t1", "s1") is ClaimOutcome.CLAIMED  # a rejoin of the same session
    assert store.tokens.claim_for_session("t1", "s2") is ClaimOutcome.USED_ELSEWHERE
    assert store.tokens.claim_for_session("nope", "s1") is ClaimOutcome.UNKNOWN
    assert store.tokens.get("t1").used_session == "s1"


def test_token_claim_is_atomic_across_connections(path):
    """Two stores on one file (two processes, say) race to claim one token: exactly one session gets it."""
    stores = [SqliteStore(path) for _ in range(2)]
    try:
        for i in range(20):
            stores[0].tokens.add(token(f"t{i}"))
        results = []
        barrier = threading.Barrier(2)

        def claim(s, session_id):
            barrier.wait()
            results.extend((i, s.tokens.claim_for_session(f"t{i}", session_id)) for i in range(20))

        threads = [threading.Thread(target=claim, args=(s, f"s{n}")) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(20):
            outcomes = sorted(o.value for j, o in results if j == i)
            assert outcomes == [ClaimOutcome.CLAIMED.value, ClaimOutcome.USED_ELSEWHERE.value], i
    finally:
        for s in stores:
            s.close()


# --- sessions, participants, chat ----------------------------------------------------------------------
def test_sessions_and_participants(store):
    store.apps.add(app())
    store.rooms.add(room())
    assert store.sessions.live_session("r1") is None
    sid = store.sessions.start("a1", "r1", "s1", 1.0)
    assert sid == "s1" and store.sessions.start("a1", "r1", "s2", 2.0) == "s1"  # one live session per room
    assert store.sessions.get("s1") == repositories.SessionRecord("s1", "a1", "r1", 1.0)
    assert store.sessions.get("s2") is None
    assert store.sessions.live_session("r1") == "s1" and store.sessions.open_session_ids() == ["s1"]
    store.sessions.add_participant(participant("s1", "p2", joined=3.0))
    store.sessions.add_participant(participant("s1", "p1", joined=2.0))
    assert [p.participant_id for p in store.sessions.participants("s1")] == ["p1", "p2"]
    store.sessions.participant_left("s1", "p1", "left", 4.0)
    store.sessions.participant_left("s1", "p1", "again", 5.0)  # the first leave stands
    p1 = store.sessions.participants("s1")[0]
    assert (p1.left, p1.leave_reason) == (4.0, "left")
    assert [p.participant_id for p in store.sessions.live_participants("r1")] == ["p2"]

    assert store.sessions.end("s1", "moderator", 6.0) is None  # a permanent room stays
    s = store.sessions.get("s1")
    assert (s.ended, s.end_reason) == (6.0, "moderator") and store.rooms.get("r1") is not None
    p1, p2 = store.sessions.participants("s1")
    assert (p1.leave_reason, p2.left, p2.leave_reason) == ("left", 6.0, "session-ended")
    assert store.sessions.live_session("r1") is None and store.sessions.live_participants("r1") == []
    assert store.sessions.open_session_ids() == []


def test_cdr_rows_legs_usage_and_filters(store):
    store.apps.add(app())
    store.rooms.add(room())
    store.sessions.start("a1", "r1", "s1", 100.0, room_details={"name": "standup"})
    store.sessions.add_participant(participant("s1", "p1", joined=100.0))
    store.sessions.add_participant(ParticipantRecord("s1", "p2", "u2", "Bob", "participant", None, 101.0))
    store.sessions.participant_left("s1", "p1", "disconnected", 150.0)
    store.sessions.add_participant(ParticipantRecord("s1", "p3", "u-p1", "Name p1", "participant", None, 160.0))
    store.sessions.save_usage("s1", {"p1": {"samples": 1}, "p2": {"samples": 2}}, 170.0)
    store.sessions.save_usage("s1", {"p2": {"samples": 3}}, 180.0)            # replaces p2's
    assert store.sessions.last_activity("s1") == 180.0
    total, rows = store.sessions.cdr("a1")
    assert total == 3 and [(r.participant.participant_id, r.leg, r.usage) for r in rows] == [
        ("p1", 1, {"samples": 1}), ("p2", 1, {"samples": 3}), ("p3", 2, None)]       # p3: p1's user again
    assert rows[0].session.room_details == {"name": "standup"}
    assert store.sessions.cdr("a1", offset=1, limit=1)[0] == 3
    assert [r.participant.participant_id for r in store.sessions.cdr("a1", offset=1, limit=1)[1]] == ["p2"]
    assert store.sessions.cdr("a1", joined_from=101.0, joined_to=160.0)[0] == 1
    assert store.sessions.cdr("a1", session_id="s2")[0] == 0 and store.sessions.cdr("other")[0] == 0
    assert store.sessions.cdr("a1", room_id="r1")[0] == 3 and store.sessions.last_activity("nope") is None


def test_recordings(store):
    rec = RecordingRecord("f1", "rec1", "a1", "r1", "s1", "p1", "u1", "video", "camera", "vp8", "/x/f1.webm", 10.0)
    store.recordings.add([rec, dataclasses.replace(rec, file_id="f2", kind="audio", codec="opus", started=11.0)])
    store.recordings.add([dataclasses.replace(rec, file_id="f3", app_id="a2")])
    assert [f.file_id for f in store.recordings.unfinished()] == ["f1", "f2", "f3"]
    store.recordings.finish("f1", "ready", 20.0, 1234, 9.9, None)
    assert store.recordings.get("f1") == dataclasses.replace(rec, ended=20.0, bytes=1234, duration=9.9, state="ready")
    assert store.recordings.get("f1", "a2") is None and store.recordings.get("f3", "a2") is not None
    assert [f.file_id for f in store.recordings.find("a1")] == ["f1", "f2"]
    assert [f.file_id for f in store.recordings.find("a1", started_from=10.5, started_to=12.0)] == ["f2"]
    assert store.recordings.find("a1", room_id="r2") == [] and len(store.recordings.find("a1", session_id="s1")) == 2
    assert len(store.recordings.find("a1", recording_id="rec1")) == 2
    assert store.recordings.delete("a2", "f1") is None and store.recordings.delete("a1", "f1").file_id == "f1"
    assert [f.file_id for f in store.recordings.find("a1")] == ["f2"]


def test_transcripts(store):
    store.transcripts.begin(TranscriptRecord("s1", "a1", "r1", "pending", "pocketsphinx", None, None, 1.0, 1.0))
    store.transcripts.begin(TranscriptRecord("s2", "a1", "r1", "pending", "pocketsphinx", None, None, 2.0, 2.0))
    assert [t.session_id for t in store.transcripts.pending()] == ["s1", "s2"]
    store.transcripts.finish("s1", "ready", [{"start": 0.5, "text": "hi"}], None, 3.0)
    t = store.transcripts.get("s1")
    assert (t.state, t.segments, t.updated) == ("ready", [{"start": 0.5, "text": "hi"}], 3.0)
    assert [t.session_id for t in store.transcripts.pending()] == ["s2"] and store.transcripts.get("s3") is None
    store.transcripts.begin(TranscriptRecord("s1", "a1", "r1", "pending", "pocketsphinx", None, None, 4.0, 4.0))
    assert store.transcripts.get("s1").state == "pending"            # asked again: made again


def test_chat_messages(store):
    first = store.sessions.add_chat_message(ChatMessageRecord("s1", "r1", "p1", "u1", "Alice", None, "hi", 1.0))
    second = store.sessions.add_chat_message(
        ChatMessageRecord("s1", "r1", "p2", "u2", "Bob", ["p1"], "psst \u00e9", 2.0))
    store.sessions.add_chat_message(ChatMessageRecord("s2", "r1", "p1", "u1", "Alice", None, "elsewhere", 3.0))
    assert second > first
    messages = store.sessions.chat_messages("s1")
    assert [(m.text, m.recipients, m.message_id) for m in messages] == [("hi", None, first),
                                                                         ("psst \u00e9", ["p1"], second)]


def test_session_end_deletes_adhoc_room(store):
    store.apps.add(app())
    store.rooms.add(room("r1", type="adhoc"))
    store.tokens.add(token("t1"))
    store.sessions.start("a1", "r1", "s1", 1.0)
    assert store.sessions.end("s1", "done", 5.0) == "r1"
    assert store.rooms.get("r1") is None and store.tokens.get("t1").revoked == 5.0


def test_session_end_is_atomic(store, path):
    store.apps.add(app())
    store.rooms.add(room("r1", type="adhoc"))
    store.tokens.add(token("t1"))
    store.sessions.start("a1", "r1", "s1", 1.0)
    store.sessions.add_participant(participant("s1"))
    inject_failure(path, "UPDATE ON tokens")  # the last statement of end(): revoking the room's tokens
    with pytest.raises(sqlite3.DatabaseError):
        store.sessions.end("s1", "done", 5.0)
    assert store.sessions.get("s1").ended is None
    assert store.sessions.participants("s1")[0].left is None
    assert store.rooms.get("r1") is not None and store.tokens.get("t1").revoked is None
    remove_failure(path)
    assert store.sessions.end("s1", "done", 6.0) == "r1"


# --- schema ----------------------------------------------------------------------------------------------
# The schema as version 1 shipped it (a copy, so an edit of the released migration shows up here).
V1_SCHEMA = """
CREATE TABLE apps (app_id TEXT PRIMARY KEY, name TEXT NOT NULL, key_salt BLOB NOT NULL, key_hash BLOB NOT NULL,
                   token_secret BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE rooms (room_id TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES apps(app_id), name TEXT NOT NULL,
                    owner_ref TEXT, mode TEXT NOT NULL, type TEXT NOT NULL, settings TEXT NOT NULL,
                    data TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX rooms_by_app ON rooms(app_id, created, room_id);
CREATE TABLE tokens (token_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, room_id TEXT NOT NULL, user_ref TEXT NOT NULL,
                     role TEXT NOT NULL, issued REAL NOT NULL, expires REAL NOT NULL, revoked REAL,
                     used_session TEXT);
CREATE INDEX tokens_by_room ON tokens(room_id);
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, room_id TEXT NOT NULL,
                       started REAL NOT NULL, ended REAL, end_reason TEXT);
CREATE INDEX sessions_by_room ON sessions(room_id, started);
CREATE TABLE participants (session_id TEXT NOT NULL REFERENCES sessions(session_id),
                           participant_id TEXT NOT NULL, user_ref TEXT NOT NULL, name TEXT NOT NULL,
                           role TEXT NOT NULL, token_id TEXT, joined REAL NOT NULL, left REAL,
                           PRIMARY KEY (session_id, participant_id));
INSERT INTO apps VALUES ('a1', 'old app', x'00', x'01', x'02', 1.0);
INSERT INTO rooms VALUES ('r1', 'a1', 'old room', NULL, 'group', 'permanent', '{"mode":"group"}', '{}', 1.0, 1.0);
INSERT INTO tokens VALUES ('t1', 'a1', 'r1', 'u1', 'moderator', 1.0, 99.0, NULL, 's1');
INSERT INTO sessions VALUES ('s1', 'a1', 'r1', 2.0, NULL, NULL);
INSERT INTO participants VALUES ('s1', 'p1', 'u1', 'Alice', 'moderator', 't1', 3.0, NULL);
PRAGMA user_version=1;
"""


def test_v1_database_is_migrated(path):
    db = sqlite3.connect(str(path))
    db.executescript(V1_SCHEMA)
    db.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS) == 6
        assert store.apps.get("a1").name == "old app"
        assert store.rooms.get("r1").owner_ref == ""  # NULL owner_ref of old rows reads as empty
        assert store.tokens.get("t1").used_session == "s1"
        assert store.sessions.participants("s1")[0].leave_reason is None  # column added by v2
        store.sessions.add_chat_message(ChatMessageRecord("s1", "r1", "p1", "u1", "Alice", None, "hi", 4.0))
        store.sessions.end("s1", "node-restart", 5.0)
        assert store.sessions.participants("s1")[0].leave_reason == "session-ended"
        assert store.webhooks.of_app("a1") == []                      # tables added by v3
        assert store.sessions.get("s1").room_details is None          # column added by v4
        assert store.sessions.cdr("a1")[0] == 1
        assert store.recordings.unfinished() == []                    # table added by v5
        assert store.transcripts.pending() == []                      # table added by v6
    finally:
        store.close()
    again = SqliteStore(path)  # a current file opens without migrating anything
    try:
        assert again.schema_version == 6 and len(again.sessions.chat_messages("s1")) == 1
    finally:
        again.close()


def test_file_is_in_wal_mode(store, path):
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


# --- the contract a backend implements -----------------------------------------------------------------
def _members(protocol) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(typing.get_type_hints(protocol))


# attribute name -> repository Protocol (Store declares them as read-only properties)
REPOSITORIES = {name: typing.get_type_hints(member.fget)["return"] for name, member in vars(Store).items()
                if isinstance(member, property)}


def _is_store(node) -> bool:
    """``store`` (a constructor argument) or ``self.store``."""
    return (isinstance(node, ast.Name) and node.id == "store") or (
        isinstance(node, ast.Attribute) and node.attr == "store" and isinstance(node.value, ast.Name)
        and node.value.id == "self")


def _repository_calls():
    """(module, line, repository attribute, method) for every ``self.store.<repo>.<method>`` (or ``store.`` in a
    module function) in control and recording, and every ``self.<alias>.<method>`` where a class keeps
    ``self.<alias> = store.<repo>``."""
    for path in sorted([*CONTROL.glob("*.py"), *RECORDING.glob("*.py")]):
        tree = ast.parse(path.read_text())
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)] + [
                n for n in tree.body if isinstance(n, ast.FunctionDef)]:
            aliases = {}
            for node in ast.walk(cls):
                if (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Attribute)
                        and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == "self"
                        and isinstance(node.value, ast.Attribute) and _is_store(node.value.value)):
                    aliases[node.targets[0].attr] = node.value.attr
            for node in ast.walk(cls):
                if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
                    continue
                holder = node.value
                if _is_store(holder.value):
                    yield path.name, node.lineno, holder.attr, node.attr
                elif (isinstance(holder.value, ast.Name) and holder.value.id == "self" and holder.attr in aliases):
                    yield path.name, node.lineno, aliases[holder.attr], node.attr


def test_services_call_only_declared_repository_methods():
    calls = list(_repository_calls())
    assert {repo for _, _, repo, _ in calls} == {"apps", "rooms", "tokens", "sessions", "webhooks", "recordings",
                                                 "transcripts"}
    for module, line, repo, method in calls:
        assert repo in REPOSITORIES, f"{module}:{line} uses store.{repo}, which Store does not declare"
        assert method in _members(REPOSITORIES[repo]), \
            f"{module}:{line} calls store.{repo}.{method}, which {REPOSITORIES[repo].__name__} does not declare"


def test_every_declared_method_has_a_caller():
    """The interfaces hold what the services need and nothing more: a backend implements no dead code."""
    called = {(repo, method) for _, _, repo, method in _repository_calls()}
    for repo, protocol in REPOSITORIES.items():
        unused = {m for m in _members(protocol) if (repo, m) not in called}
        assert not unused, f"{protocol.__name__} declares {sorted(unused)}, which no service calls"


def test_services_reach_the_store_only_through_repositories():
    for path in sorted([*CONTROL.glob("*.py"), *RECORDING.glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _is_store(node.value):
                assert node.attr in _members(Store), f"{path.name}:{node.lineno} uses store.{node.attr}"


def test_sqlite_implements_every_declared_method(store):
    assert isinstance(store, Store)
    for attr, protocol in REPOSITORIES.items():
        repo = getattr(store, attr)
        assert isinstance(repo, protocol)
        for name in _members(protocol):
            declared = inspect.signature(getattr(protocol, name))
            implemented = inspect.signature(getattr(type(repo), name))
            assert list(implemented.parameters) == list(declared.parameters), (attr, name)
