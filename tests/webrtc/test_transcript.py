"""After the session: a speech transcript of what two aiortc participants said (speech made by espeak-ng, sent as
Opus, recorded, transcribed offline by pocketsphinx in a process of its own) holds the spoken words, per
speaker, on one timeline; the chat transcript (a private message with its recipients); the session metadata
with every item's state; transcript.ready and chat.ready at a real receiver."""
import asyncio
import shutil
import subprocess
import time

import pytest
from aiortc.contrib.media import MediaPlayer

from media_util import Api
from node_util import Node
from webhook_receiver import Receiver

SPEECH = {
    "alice": "hello. this is a test of the recording. the weather today is sunny and warm.",
    "bob": "please call me tomorrow morning about the project. my name is bob and i like to play music with my friends.",
}
WORDS = {"alice": {"hello", "test", "recording", "weather", "today", "warm"},
         "bob": {"please", "call", "tomorrow", "morning", "name", "music", "friends"}}

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="Debian's espeak-ng is not installed (scripts/setup test installs it)")


@pytest.fixture(scope="module")
def speech_node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("speech"), ENX_WEBHOOK_ALLOW_LOOPBACK="on", ENX_WEBHOOK_RETRY_MS="100")
    n.main_creds = n.create_app("speech")
    n.start()
    yield n
    n.stop()


def test_what_was_said_is_in_the_transcript_by_speaker_with_chat_and_metadata(speech_node, tmp_path):
    for user, text in SPEECH.items():
        subprocess.run(["espeak-ng", "-v", "en-us+klatt3", "-s", "140", "-w", str(tmp_path / f"{user}.wav"), text],
                       check=True)
    api = Api(speech_node, speech_node.main_creds)
    receiver = Receiver()
    hook = api.http.post("/webhooks", json={"url": receiver.url}).json()["webhook"]
    room = api.room(settings={"mode": "group", "moderators": 2, "transcription": True})
    joined = {}

    async def scenario():
        clients = {u: await api.joined(room["room_id"], u, "moderator") for u in SPEECH}
        joined.update({u: c.participant_id for u, c in clients.items()})
        try:
            await clients["alice"].chat("hi all")
            await clients["bob"].chat("psst alice", to=[clients["alice"].participant_id])
            players = {u: MediaPlayer(str(tmp_path / f"{u}.wav")) for u in SPEECH}
            await clients["alice"].publish([players["alice"].audio])
            await asyncio.sleep(1.0)
            await clients["bob"].publish([players["bob"].audio])
            await asyncio.sleep(8.5)                       # both have spoken (5 and 7 s)
        finally:
            for c in clients.values():
                await c.leave()

    try:
        asyncio.run(scenario())
        end = time.monotonic() + 120
        while True:
            events = receiver.acknowledged(hook["secret"])
            if any(e["type"] == "transcript.ready" for e in events):
                break
            assert time.monotonic() < end, [e["type"] for e in events]
            time.sleep(0.2)
    finally:
        receiver.close()
    ready = next(e for e in events if e["type"] == "transcript.ready")["data"]
    assert ready["state"] == "ready", ready
    kinds = [e["type"] for e in events]
    assert kinds.index("session.ended") < kinds.index("chat.ready") < kinds.index("transcript.ready")
    session_id = ready["session_id"]

    transcript = api.http.get(ready["path"]).json()["transcript"]
    assert transcript["engine"] == "pocketsphinx" and transcript["state"] == "ready"
    segments = transcript["segments"]
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    for user, words in WORDS.items():
        said = " ".join(s["text"] for s in segments if s["user_ref"] == user).split()
        assert len(words & set(said)) >= 4, (user, said)
        assert all(s["participant_id"] == joined[user] for s in segments if s["user_ref"] == user)
    first = {u: min(s["start"] for s in segments if s["user_ref"] == u) for u in SPEECH}
    assert first["alice"] < first["bob"]                   # bob began a second later

    chat = api.http.get(f"/sessions/{session_id}/chat").json()
    assert [(m["sender_ref"], m["text"], m["to"]) for m in chat["messages"]] == [
        ("alice", "hi all", None), ("bob", "psst alice", [joined["alice"]])]

    meta = api.http.get(f"/sessions/{session_id}").json()["session"]
    assert meta["mode"] == "group" and meta["participants"] == {"total": 2, "users": 2}
    assert {k: v["state"] for k, v in meta["items"].items()} == {
        "cdr": "ready", "chat": "ready", "recordings": "ready", "transcript": "ready"}
    assert meta["items"]["chat"]["messages"] == 2 and meta["items"]["recordings"]["files"] == 2
    assert api.http.get(meta["items"]["recordings"]["path"]).json()["total"] == 1


def test_unknown_sessions_and_rooms_without_transcription(speech_node):
    api = Api(speech_node, speech_node.main_creds)
    for path in ("/sessions/nope", "/sessions/nope/chat", "/sessions/nope/transcript"):
        r = api.http.get(path)
        assert r.status_code == 404 and r.json()["error"] == "session not found", (path, r.text)
    room = api.room(settings={"mode": "group"})

    async def one():
        c = await api.joined(room["room_id"], "solo", "moderator")
        await c.leave()
    asyncio.run(one())
    session_id = api.http.get(f"/cdr/room/{room['room_id']}").json()["cdr"][0]["conf_num"]
    r = api.http.get(f"/sessions/{session_id}/transcript")
    assert r.status_code == 404 and r.json()["error"] == "transcript not found"
    meta = api.http.get(f"/sessions/{session_id}").json()["session"]
    assert meta["items"]["transcript"]["state"] == "none" and meta["items"]["recordings"]["state"] == "none"
    other = Api(speech_node, speech_node.create_app("other"))
    assert other.http.get(f"/sessions/{session_id}").status_code == 404        # another app's session
