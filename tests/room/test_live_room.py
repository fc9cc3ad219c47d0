"""The live room in-process, without a WebSocket: an Engine on a real SQLite file, participants whose
channel records what they are sent, the room's rules and the events it publishes. (Media is tested
through a real node in tests/webrtc; here the room runs without a media worker, as it does when an
embedding server starts none.)"""
import asyncio

import pytest

from enx_media import Engine, Settings
from enx_media import errors as E
from enx_media import events as ev
from enx_media.room import RoomManager
from enx_media.signaling import MessageNotifier


class RecordingChannel:
    """A participant's channel that keeps what the room sends it (the room's side of a socket)."""

    def __init__(self):
        self.messages: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, message: dict, sender: str | None = None) -> None:
        self.messages.append(message)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


class Rig:
    def __init__(self, tmp_path):
        self.engine = Engine(Settings(data_dir=str(tmp_path)))
        self.app = self.engine.apps.create("room-tests")
        self.events: list[ev.Event] = []
        self.engine.events.subscribe(self.events.append)
        self.rooms = RoomManager(self.engine.rooms, self.engine.tokens, None, self.engine.events, MessageNotifier())

    def room(self, **body):
        body.setdefault("name", "r")
        return self.engine.rooms.create(self.app.app_id, body)

    def join(self, room, user, role):
        token = self.engine.tokens.issue(self.engine.apps.get(self.app.app_id), room,
                                         {"user_id": user, "role": role}).token
        channel = RecordingChannel()
        live, p = self.rooms.join(channel, token)
        return live, p, channel

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def populate(self, mode, *roles, **settings):
        """A new room of `mode` joined by one participant per role (user names: role + index)."""
        room = self.room(mode=mode, **({"settings": settings} if settings else {}))
        joined = [self.join(room, f"{role}{i}", role) for i, role in enumerate(roles)]
        return joined[0][0], [p for _, p, _ in joined]

    def run(self, scenario):
        """Run an async test body, then end every live room it left."""
        async def body():
            try:
                await scenario()
            finally:
                await self.rooms.end_all("test over")
        asyncio.run(body())


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.engine.close()


def test_join_starts_a_session_and_records_it(rig):
    async def scenario():
        room = rig.room(mode="group")
        live, alice, _ = rig.join(room, "alice", "moderator")
        await live.announce_join(alice)
        live2, bob, bob_ch = rig.join(room, "bob", "participant")
        await live2.announce_join(bob)
        assert live2 is live and set(live.participants) == {alice.participant_id, bob.participant_id}
        assert [type(e) for e in rig.events[:3]] == [ev.SessionStarted, ev.ParticipantJoined, ev.ParticipantJoined]
        record = rig.engine.sessions.get(live.session_id)
        assert {p["user_ref"] for p in record["participants"]} == {"alice", "bob"}
        assert alice.channel.messages[-1]["type"] == "participant-joined"
        await live.leave(bob, "left")
        await live.leave(alice, "left")
        assert rig.of(ev.SessionEnded)[0].reason == "last-left"
        assert rig.engine.sessions.get(live.session_id)["end_reason"] == "last-left"
        assert rig.rooms.live == {}
    rig.run(scenario)


def test_capacity_per_mode_and_role(rig):
    async def scenario():
        p2p = rig.room(mode="p2p")
        rig.join(p2p, "a", "moderator")
        rig.join(p2p, "b", "participant")
        with pytest.raises(E.CapacityExceeded):
            rig.join(p2p, "c", "participant")
        lecture = rig.room(mode="lecture", settings={"moderators": 1})
        rig.join(lecture, "m1", "moderator")
        with pytest.raises(E.CapacityExceeded):
            rig.join(lecture, "m2", "moderator")
    rig.run(scenario)


def test_a_token_is_used_once_at_a_time(rig):
    async def scenario():
        room = rig.room(mode="group")
        token = rig.engine.tokens.issue(rig.engine.apps.get(rig.app.app_id), room,
                                        {"user_id": "u", "role": "participant"}).token
        rig.rooms.join(RecordingChannel(), token)
        with pytest.raises(E.TokenAlreadyUsed):
            rig.rooms.join(RecordingChannel(), token)
    rig.run(scenario)


def test_lecture_floor_rules(rig):
    async def scenario():
        live, (mod, student, viewer) = rig.populate("lecture", "moderator", "participant", "viewer")
        mod_ch, student_ch = mod.channel, student.channel
        with pytest.raises(E.Forbidden):
            await live.publish(student, "v=0")           # no floor yet: refused before any SDP is read
        with pytest.raises(E.Forbidden):
            await live.floor(viewer, "request", None)
        await live.floor(student, "request", None)
        assert mod_ch.types()[-1] == "floor-requested" and "floor-requested" not in student_ch.types()
        with pytest.raises(E.Forbidden):
            await live.floor(student, "grant", student.participant_id)
        with pytest.raises(E.ValidationFailed):
            await live.floor(mod, "grant", viewer.participant_id)
        await live.floor(mod, "grant", student.participant_id)
        assert student.floor and student_ch.types()[-1] == "floor-granted"
        with pytest.raises(E.Conflict):
            await live.publish(student, "v=0")           # allowed now, but this room has no media worker
        await live.floor(mod, "revoke", student.participant_id)
        assert not student.floor
        with pytest.raises(E.Conflict):
            await live.floor(mod, "revoke", student.participant_id)
        assert [e.action for e in rig.of(ev.FloorChanged)] == ["requested", "granted", "revoked"]
        # an audience member is shown only the moderators and itself
        assert {p.participant_id for p in live.visible_to(viewer)} == {mod.participant_id, viewer.participant_id}
    rig.run(scenario)


def test_chat_goes_to_its_recipients_and_on_the_bus(rig):
    async def scenario():
        live, (a, b, c) = rig.populate("group", "participant", "participant", "participant")
        b_ch, c_ch = b.channel, c.channel
        await live.chat(a, "hello all", None)
        await live.chat(a, "psst", [b.participant_id])
        assert [m["text"] for m in b_ch.messages if m["type"] == "chat"] == ["hello all", "psst"]
        assert [m["text"] for m in c_ch.messages if m["type"] == "chat"] == ["hello all"]
        with pytest.raises(E.NotFound):
            await live.chat(a, "x", ["nobody"])
        chats = rig.of(ev.ChatMessage)
        assert [(m.text, m.to) for m in chats] == [("hello all", None), ("psst", (b.participant_id,))]
        assert [m["text"] for m in rig.engine.sessions.chat_transcript(live.session_id)] == ["hello all", "psst"]
    rig.run(scenario)


def test_remove_is_a_moderator_action(rig):
    async def scenario():
        live, (mod, p) = rig.populate("group", "moderator", "participant")
        p_ch = p.channel
        with pytest.raises(E.Forbidden):
            await live.remove(p, mod.participant_id, "no")
        await live.remove(mod, p.participant_id, "spam")
        assert p_ch.types()[-1] == "removed" and p_ch.closed == (4001, "removed by a moderator")
        assert p.participant_id not in live.participants
        assert [(a.action, a.target_id) for a in rig.of(ev.ModeratorAction)] == [("remove", p.participant_id)]
        assert rig.of(ev.ParticipantLeft)[-1].reason == "removed"
    rig.run(scenario)


def test_a_failing_subscriber_does_not_break_the_room(rig):
    def broken(event):
        raise RuntimeError("subscriber bug")

    async def scenario():
        rig.engine.events.subscribe(broken)
        live, (p,) = rig.populate("group", "participant")
        await live.chat(p, "still works", None)
        assert rig.engine.events.failures >= 3      # started, joined, chat
        assert rig.engine.sessions.get(live.session_id) is not None
    rig.run(scenario)


def test_session_ends_at_its_duration(rig):
    async def scenario():
        live, (p,) = rig.populate("group", "participant")
        ch = p.channel
        live.limit_duration(1)
        await asyncio.sleep(1.3)
        assert "session-ended" in ch.types() and ch.closed == (4000, "session ended")
        assert rig.of(ev.SessionEnded)[0].reason == "duration"
    rig.run(scenario)


def test_a_session_left_open_in_the_record_is_ended_when_a_new_one_starts(rig):
    async def scenario():
        room = rig.room(mode="group")
        rig.engine.store.sessions.start(room.app_id, room.room_id, "stale-session", 1.0)   # its end never written
        live, p, _ = rig.join(room, "u", "participant")
        assert rig.engine.sessions.get("stale-session")["end_reason"] == "superseded"
        record = rig.engine.sessions.get(live.session_id)
        assert record["ended"] is None and [x["user_ref"] for x in record["participants"]] == ["u"]
        assert rig.engine.rooms.live_session(room.room_id) == live.session_id
    rig.run(scenario)


def test_a_removed_user_cannot_rejoin_the_session(rig):
    async def scenario():
        room = rig.room(mode="group")
        live, mod, _ = rig.join(room, "mod", "moderator")
        token = rig.engine.tokens.issue(rig.engine.apps.get(rig.app.app_id), room,
                                        {"user_id": "pest", "role": "participant"}).token
        _, pest = rig.rooms.join(RecordingChannel(), token)
        await live.remove(mod, pest.participant_id, "spam")
        with pytest.raises(E.Forbidden, match="removed"):
            rig.rooms.join(RecordingChannel(), token)                 # the same token, at once
        with pytest.raises(E.Forbidden, match="removed"):
            rig.join(room, "pest", "participant")                     # a new token for the same user
        rig.join(room, "someone-else", "participant")                 # others still get in
    rig.run(scenario)


def test_a_sessions_chat_storage_is_capped(rig):
    async def scenario():
        live, (a, b) = rig.populate("group", "participant", "participant")
        live.chat_bytes_left = 10_000
        for _ in range(2):
            await live.chat(a, "x" * 4000, None)
        with pytest.raises(E.CapacityExceeded, match="transcript is full"):
            await live.chat(b, "y" * 4000, None)
        assert len(rig.engine.sessions.chat_transcript(live.session_id)) == 2
    rig.run(scenario)
