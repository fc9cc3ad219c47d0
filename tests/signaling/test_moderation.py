"""The application's decisions take effect at once against a real node: revoking a token through the REST
API disconnects its holder, removing a user drops all of them and keeps them out of the session."""
import asyncio
import json
import time

import pytest

from enx_media.client import SignalingClosed, SignalingError
from enx_media.limits import DEFAULT_RATE_LIMITS
from media_util import Api
from node_util import Node


def test_revoking_a_token_disconnects_its_holder(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group"})
    r = api.http.post(f"/rooms/{room['room_id']}/tokens", json={"user_id": "held", "role": "participant"})
    token, token_id = r.json()["token"], r.json()["token_id"]

    async def scenario():
        mod = api.client(room["room_id"], "mod", "moderator")
        holder = api.client_for(token)
        await mod.join()
        await holder.join()
        assert api.http.delete(f"/rooms/{room['room_id']}/tokens/{token_id}").json()["revoked"] is True
        removed = await holder.next_event("removed", timeout=5)
        assert (removed["by"], removed["reason"]) == ("app", "token revoked")
        with pytest.raises(SignalingClosed) as closed:
            await holder.next_event("chat", timeout=5)
        assert closed.value.code == 4002
        left = await mod.next_event("participant-left", timeout=5)
        assert left["participant_id"] == holder.participant_id and left["reason"] == "removed"
        users = api.http.get(f"/rooms/{room['room_id']}/users").json()["users"]
        assert [u["user_ref"] for u in users] == ["mod"]
        again = api.client_for(token)
        with pytest.raises(SignalingError) as refused:
            await again.join()
        assert refused.value.code == 4007                       # revoked
        await again.close()
        await holder.close()
        await mod.leave()

    asyncio.run(scenario())


def test_removing_a_user_drops_every_connection_and_keeps_them_out(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "participants": 5})

    async def scenario():
        mod = api.client(room["room_id"], "mod", "moderator")
        first, second = api.client(room["room_id"], "pest", "participant"), api.client(room["room_id"], "pest", "participant")
        for c in (mod, first, second):
            await c.join()
        reply = api.http.delete(f"/rooms/{room['room_id']}/users/pest").json()
        assert sorted(reply["removed"]) == sorted([first.participant_id, second.participant_id])
        for c in (first, second):
            assert (await c.next_event("removed", timeout=5))["by"] == "app"
            with pytest.raises(SignalingClosed) as closed:
                await c.next_event("chat", timeout=5)
            assert closed.value.code == 4002
        back = api.client(room["room_id"], "pest", "participant")   # a fresh token for the same user
        with pytest.raises(SignalingError) as refused:
            await back.join()
        assert refused.value.code == 1403 and "removed" in refused.value.message["desc"]
        assert api.http.delete(f"/rooms/{room['room_id']}/users/nobody").json()["removed"] == []
        # the app lets them in again
        assert api.http.post(f"/rooms/{room['room_id']}/users/pest/readmit").json()["readmitted"] is True
        assert api.http.post(f"/rooms/{room['room_id']}/users/pest/readmit").status_code == 404   # not removed now
        welcome = api.client(room["room_id"], "pest", "participant")
        await welcome.join()
        for c in (first, second, back, welcome):
            await c.close()
        await mod.leave()

    asyncio.run(scenario())
    other_app = api.http.delete("/rooms/000000000000000000000000/users/pest")
    assert other_app.status_code == 404


def test_a_moderator_removes_and_readmits_a_user(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "participants": 5})

    async def scenario():
        mod, pest, other = [await api.joined(room["room_id"], u, r) for u, r in
                            [("mod", "moderator"), ("pest", "participant"), ("other", "participant")]]
        await mod.request("remove", participant_id=pest.participant_id, reason="spam")
        refused_again = api.client(room["room_id"], "pest", "participant")
        with pytest.raises(SignalingError):
            await refused_again.join()
        with pytest.raises(SignalingError) as not_mod:
            await other.request("readmit", user_ref="pest")
        assert not_mod.value.code == 1403
        assert (await mod.request("readmit", user_ref="pest"))["request"] == "readmit"
        back = await api.joined(room["room_id"], "pest", "participant")
        assert back.participant_id
        with pytest.raises(SignalingError) as unknown:
            await mod.request("readmit", user_ref="never-removed")
        assert unknown.value.code == 1404
        for c in (pest, refused_again, back, other):
            await c.close()
        await mod.leave()

    asyncio.run(scenario())


def test_a_reader_that_stops_reading_loses_nothing_to_flooders(tmp_path):
    """Per-sender fairness in the outbox (finding 5, the slow-reader half): with chat rate limits opened
    wide, flooders fill a moderator's outbox while it does not read; each flooder's share is capped and
    the rest of its messages are dropped and counted, and the moderator is not dropped as too slow:
    when it reads again it gets what was queued and its own replies."""
    import socket

    import websockets

    node = Node(tmp_path, ENX_SIGNALING_RATE_LIMITS="chat=5000/5000", ENX_OUTBOX_LIMIT="3000",
                ENX_OUTBOX_PER_SENDER="30", ENX_CHAT_BYTES_PER_SESSION=str(64 << 20))
    node.start()
    try:
        api = Api(node, node.create_app())
        room = api.room(settings={"mode": "lecture", "participants": 20})

        async def scenario():
            # A reader that does not read: the client library stops reading its socket while this test does
            # not recv() (max_queue=1), the socket's buffer is small and fixed, nothing is compressed.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect(("127.0.0.1", node.port))
            reader = await websockets.connect(api.ws_url, sock=sock, max_queue=1, max_size=None, compression=None)
            await reader.send(json.dumps({"type": "join", "token": api.token(room["room_id"], "mod", "moderator")}))
            joined = json.loads(await reader.recv())
            mod_id = joined["participant_id"]
            floods = [await api.joined(room["room_id"], f"v{i}", "viewer") for i in range(5)]
            for f in floods:
                for i in range(1000):
                    await f.send_raw(json.dumps({"type": "chat", "id": i, "text": "x" * 4000, "to": [mod_id]}))
            for f in floods:     # every message is answered (the echoes of its own chats come between)
                answered = 0
                while answered < 1000:
                    answered += "id" in await f.next_event(timeout=20)
            dropped = api.metric("enx_signaling_dropped_from_peers_total")
            await reader.send(json.dumps({"type": "ping", "id": "still-here"}))
            got = {"chat": 0}
            while True:
                msg = json.loads(await asyncio.wait_for(reader.recv(), 20))
                if msg.get("id") == "still-here":
                    break
                got[msg["type"]] = got.get(msg["type"], 0) + 1
            assert msg["type"] == "pong"
            # its share per flooder, and what the sockets' buffers held; the rest was dropped and counted
            # (with the flooders' own echoes, which they were too busy sending to read)
            assert 0 < got["chat"] < 5 * 1000 and dropped >= 5 * 1000 - got["chat"]
            for f in floods:
                await f.close()
            await reader.close()

        asyncio.run(scenario())
    finally:
        node.stop()


def test_a_chat_flood_is_refused_to_the_sender_and_the_target_stays(node, creds):
    """Viewers flood the moderator with private chats (finding 5): each sender gets its allowance and
    then rate-limit errors; the moderator is not dropped as a slow reader and still works."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "participants": 20})

    async def scenario():
        mod = api.client(room["room_id"], "mod", "moderator")
        await mod.join()
        floods = [api.client(room["room_id"], f"v{i}", "viewer") for i in range(4)]
        for f in floods:
            await f.join()
        burst = 300
        rate, allowance = DEFAULT_RATE_LIMITS["chat"]     # the test node runs with the defaults
        start = time.monotonic()
        for f in floods:
            for i in range(burst):
                await f.send_raw(json.dumps({"type": "chat", "id": i, "text": "x" * 4000,
                                             "to": [mod.participant_id]}))
        accepted = 0
        for f in floods:   # every flooder hears back about each of its messages
            replies: dict[int, dict] = {}
            while len(replies) < burst:     # the answers to its messages, by id (other events go by)
                r = await f.next_event(timeout=10)
                if r["type"] in ("ok", "error") and "id" in r:
                    replies[r["id"]] = r
            refused = [r for r in replies.values() if r["type"] == "error"]
            # its allowance, and what the bucket refilled while the node worked through the flood
            assert burst - len(refused) <= allowance + rate * (time.monotonic() - start) + 1, len(refused)
            assert {r["code"] for r in refused} == {1429} and refused[0]["error"] == "rate limited"
            accepted += burst - len(refused)
        got = 0
        while True:
            try:
                await mod.next_event("chat", timeout=1)
            except asyncio.TimeoutError:
                break
            got += 1
        assert 4 * allowance <= got == accepted, (got, accepted)     # what was accepted, and nothing else
        assert not mod.closed.is_set()
        reply = await mod.request("ping")
        assert reply["type"] == "pong"
        for f in floods:
            await f.close()
        await mod.leave()

    asyncio.run(scenario())
