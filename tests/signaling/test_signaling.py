"""Signaling over the real WebSocket: token refusals, malformed messages, chat, moderator actions,
session lifecycle, and clients that vanish."""
import asyncio
import itertools
import json
import socket
import time

import jwt
import pytest
import websockets
from aioice import stun
from hypothesis import HealthCheck, given, settings, strategies as st

from enx_media.client import SignalingClosed, SignalingError, schema_problems
from media_util import COLORS, Api, ColorTrack, ToneTrack, publish_offer, receive_video, sendonly_offer
from rtp_util import stun_binding, udp
from token_util import claims as claims_of, resign


def run(coro):
    return asyncio.run(coro)


async def raw(api, messages, *, expect=1):
    """Send raw frames on a fresh connection; return the replies (until `expect` replies or close)."""
    replies = []
    async with websockets.connect(api.ws_url) as ws:
        for m in messages:
            await ws.send(m if isinstance(m, str) else json.dumps(m))
        try:
            while len(replies) < expect:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                assert not schema_problems(replies[-1]), schema_problems(replies[-1])
        except websockets.ConnectionClosed:
            pass
    return replies


# --- tokens ------------------------------------------------------------------------------------------
def test_join_refusals(node, creds, engine):
    api = Api(node, creds)
    room = api.room()
    other = api.room()
    token = api.token(room["room_id"], "u1", "participant")
    secret = engine.apps.get(creds[0]).token_secret
    cases = {
        4003: resign(token, secret, exp=int(time.time()) - 5),
        4002: resign(token, b"wrong key of thirty-two bytes..."),
        4006: jwt.encode(claims_of(token), None, algorithm="none"),
        4001: "not-a-token",
    }
    for code, bad in cases.items():
        replies = run(raw(api, [{"type": "join", "token": bad, "id": 1}]))
        assert replies and replies[0]["type"] == "error" and replies[0]["code"] == code, (code, replies)
        assert replies[0]["id"] == 1
    replies = run(raw(api, [{"type": "join", "token": token, "room_id": other["room_id"]}]))
    assert replies[0]["code"] == 4005


def test_token_reuse(node, creds):
    api = Api(node, creds)
    room = api.room()
    token = api.token(room["room_id"], "u1", "participant")

    async def scenario():
        first = api.client_for(token)
        await first.join()
        second = api.client_for(token)
        with pytest.raises(SignalingError) as again:
            await second.join()
        assert again.value.code == 4009
        await asyncio.wait_for(second.closed.wait(), 5)  # a refused join closes the socket
        # Rejoining the same live session after leaving it is allowed (token stays bound to the session).
        keeper = await api.joined(room["room_id"], "keeper", "participant")
        await first.leave()
        back = api.client_for(token)
        await back.join()
        await back.leave()
        await keeper.leave()
        # The session is over: the token was single-use for it.
        late = api.client_for(token)
        with pytest.raises(SignalingError) as used:
            await late.join()
        assert used.value.code == 4009
        await late.close()

    run(scenario())


# --- malformed messages --------------------------------------------------------------------------------
def test_malformed_messages_keep_connection_usable(node, creds):
    api = Api(node, creds)
    room = api.room()
    token = api.token(room["room_id"], "u1", "moderator")
    replies = run(raw(api, [
        "{not json", "[1,2]", {"type": "publish", "sdp": "v=0"}, {"type": "no-such-type"},
        {"no": "type"}, {"type": "join", "token": token, "id": "j"},
        {"type": "chat", "id": 2}, {"type": "chat", "text": "", "id": 3}, {"type": "chat", "text": "x" * 5000, "id": 4},
        {"type": "publish", "sdp": "garbage", "id": 5}, {"type": "publish", "sdp": "v=0\r\nm=video x\r\n", "id": 6},
        {"type": "answer", "sdp": "v=0", "id": 7}, {"type": "mute", "participant_id": "nobody", "id": 8},
        {"type": "join", "token": token, "id": 9}, {"type": "floor-request", "id": 10},
        {"type": "relay", "to": "x", "payload": {}, "id": 11}, {"type": "ping", "id": 12},
    ], expect=17))
    by_id = {r.get("id"): r for r in replies if "id" in r}
    untagged = [r for r in replies if "id" not in r]
    assert [r["code"] for r in untagged[:5]] == [1001, 1001, 1409, 1002, 1002]
    assert by_id["j"]["type"] == "joined"
    assert by_id[2]["code"] == 1002 and "text" in by_id[2]["desc"]
    assert by_id[3]["code"] == 1002 and by_id[4]["code"] == 1002
    assert by_id[5]["code"] == 1002 and "SDP" in by_id[5]["desc"]
    assert by_id[6]["code"] == 1002
    assert by_id[7]["code"] == 1409
    assert by_id[8]["code"] == 1404
    assert by_id[9]["code"] == 1409          # already joined
    assert by_id[10]["code"] == 1403         # floor is a lecture thing
    assert by_id[11]["code"] == 1403         # relay is a p2p thing
    assert by_id[12]["type"] == "pong"       # still usable after all that


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["type", "id", "sdp", "token", "text", "to", "streams", "participant_id",
                                         "payload", "kind", "muted"]) | st.text(max_size=8), inner, max_size=5),
                    max_leaves=12),
       st.sampled_from(["join", "publish", "subscribe", "answer", "chat", "mute", "remove", "relay",
                        "floor-grant", "unpublish", "leave-not", "ping"]))
def test_fuzzed_messages_get_errors_not_crashes(fuzz_socket, value, msg_type):
    ws, loop, counter = fuzz_socket
    if isinstance(value, dict) and "type" not in value and msg_type != "leave-not":
        value = {**value, "type": msg_type}
    if isinstance(value, dict) and value.get("type") == "leave":
        value["type"] = "ping"  # keep this one connection alive for every example
    if isinstance(value, dict) and value.get("type") == "join":
        value["token"] = "x"  # a refused join would close the socket
    marker = f"probe-{next(counter)}"

    async def exchange():
        await ws.send(json.dumps(value if isinstance(value, dict) else {"w": value}))
        await ws.send(json.dumps({"type": "ping", "id": marker}))
        replies = []
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == marker:
                return replies
            replies.append(reply)

    replies = loop.run_until_complete(asyncio.wait_for(exchange(), 20))
    for reply in replies:
        if reply["type"] == "error":
            assert isinstance(reply["code"], int) and reply["code"] != 1500, reply


@pytest.fixture(scope="module")
def fuzz_socket(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 2})
    loop = asyncio.new_event_loop()
    ws = loop.run_until_complete(websockets.connect(api.ws_url))
    loop.run_until_complete(ws.send(json.dumps({"type": "join", "token": api.token(room["room_id"], "f", "moderator")})))
    assert json.loads(loop.run_until_complete(ws.recv()))["type"] == "joined"
    yield ws, loop, itertools.count()
    loop.run_until_complete(ws.close())
    loop.close()


# --- chat, moderator actions -----------------------------------------------------------------------------
def test_chat_everyone_and_private_is_stored(node, creds, engine):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 5})

    async def scenario():
        a, b, c = (api.client(room["room_id"], n, r) for n, r in (("ann", "moderator"), ("ben", "participant"),
                                                                   ("cat", "participant")))
        for x in (a, b, c):
            await x.join()
        await a.chat("hello all")
        for x in (b, c):
            msg = await x.next_event("chat")
            assert (msg["text"], msg["from"], msg["name"], msg["to"]) == ("hello all", a.participant_id, "ann", None)
        await b.chat("psst", to=[c.participant_id])
        msg = await c.next_event("chat")
        assert msg["text"] == "psst" and msg["to"] == [c.participant_id]
        assert (await a.next_event("chat"))["text"] == "hello all"  # the sender sees its own message
        with pytest.raises(asyncio.TimeoutError):
            await a.next_event("chat", timeout=0.5)  # but not the private one: a was not a recipient
        with pytest.raises(SignalingError) as bad:
            await b.chat("x", to=["ghost"])
        assert bad.value.code == 1404
        session_id = a.joined["session_id"]
        for x in (a, b, c):
            await x.leave()
        return session_id

    session_id = run(scenario())
    transcript = engine.sessions.chat_transcript(session_id)
    assert [(m["sender_name"], m["text"], m["to"]) for m in transcript] == [
        ("ann", "hello all", None), ("ben", "psst", [transcript[1]["to"][0]])]


def test_moderator_mute_and_remove(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 5})

    async def scenario():
        mod = api.client(room["room_id"], "mod", "moderator")
        pub = api.client(room["room_id"], "pub", "participant")
        watcher = api.client(room["room_id"], "watch", "participant")
        for x in (mod, pub, watcher):
            await x.join()
        await pub.publish([ColorTrack(COLORS[4]), ToneTrack()])
        await watcher.subscribe()
        track = await watcher.wait_track(await watcher.wait_stream(pub.participant_id, "video"))
        assert await receive_video(track, COLORS[4], 5) >= 4
        with pytest.raises(SignalingError) as not_mod:
            await watcher.request("mute", participant_id=pub.participant_id)
        assert not_mod.value.code == 1403
        reply = await mod.request("mute", participant_id=pub.participant_id, kind="video")
        assert len(reply["streams"]) == 1
        muted = await pub.next_event("muted")
        assert muted["kind"] == "video" and muted["muted"] is True
        await asyncio.sleep(0.3)
        while not track._queue.empty():   # drop frames decoded before the mute took effect
            track._queue.get_nowait()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(track.recv(), 1.5)
        await mod.request("mute", participant_id=pub.participant_id, kind="video", muted=False)
        assert await receive_video(track, COLORS[4], 5) >= 4

        await mod.request("remove", participant_id=pub.participant_id, reason="off topic")
        removed = await pub.next_event("removed")
        assert removed["reason"] == "off topic"
        await asyncio.wait_for(pub.closed.wait(), 5)
        t0 = time.monotonic()
        with pytest.raises(SignalingClosed) as closed:      # at once, not after the 20 s timeout
            await pub.next_event("chat")
        assert (closed.value.code, closed.value.reason) == (4001, "removed by a moderator")
        assert time.monotonic() - t0 < 1
        left = await watcher.next_event("participant-left")
        assert left["participant_id"] == pub.participant_id and left["reason"] == "removed"
        users = api.http.get(f"/rooms/{room['room_id']}/users").json()
        assert {u["name"] for u in users["users"]} == {"mod", "watch"}
        await pub.close()
        await mod.leave()
        await watcher.leave()

    run(scenario())


# --- session lifecycle ------------------------------------------------------------------------------
def test_session_lifecycle_and_adhoc_cleanup(node, creds, engine):
    api = Api(node, creds)
    room = api.room(settings={"adhoc": True, "moderators": 1, "participants": 3})

    async def scenario():
        a = api.client(room["room_id"], "a", "moderator")
        b = api.client(room["room_id"], "b", "participant")
        ja = await a.join()
        jb = await b.join()
        assert ja["session_id"] == jb["session_id"]
        event = await a.next_event("participant-joined")
        assert event["participant"]["name"] == "b"
        assert api.http.delete(f"/rooms/{room['room_id']}").status_code == 409  # live session
        await b.leave()
        await a.leave()
        return ja["session_id"]

    session_id = run(scenario())
    record = engine.sessions.get(session_id)
    assert record["ended"] and record["end_reason"] == "last-left"
    assert [(p["name"], p["leave_reason"]) for p in record["participants"]] == [("a", "left"), ("b", "left")]
    assert all(p["joined"] <= p["left"] for p in record["participants"])
    # ad hoc: gone with its session
    assert api.http.get(f"/rooms/{room['room_id']}").status_code == 404


def test_capacity_per_role(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 1})

    async def scenario():
        m1 = await api.joined(room["room_id"], "m1", "moderator")
        m2 = api.client(room["room_id"], "m2", "moderator")
        with pytest.raises(SignalingError) as full:
            await m2.join()
        assert full.value.code == 1429 and "moderator" in full.value.message["desc"]
        await m2.close()
        await m1.leave()

    run(scenario())


def test_duration_limit_warns_then_ends(node, creds):
    api = Api(node, creds)
    room = api.room(duration=60)

    async def scenario():
        a = await api.joined(room["room_id"], "a", "moderator")
        warn = await a.next_event("session-warning", timeout=70)
        assert warn["seconds_left"] == 12
        ended = await a.next_event("session-ended", timeout=30)
        assert ended["reason"] == "duration"
        await asyncio.wait_for(a.closed.wait(), 5)
        await a.close()

    started = time.monotonic()
    run(scenario())
    assert 55 <= time.monotonic() - started <= 75


# --- media-plane bad input -----------------------------------------------------------------------------
def _udp(port, data):
    with udp(2) as s:
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recvfrom(2048)[0]
        except socket.timeout:
            return None


def test_bad_stun_dtls_rtp_are_counted_drops(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 5})

    async def scenario():
        pub, sub = await api.moderator_and_participant(room["room_id"])
        pc = await pub.publish([ColorTrack(COLORS[5])])
        answer = pc.remoteDescription.sdp
        ufrag = next(l.split(":", 1)[1] for l in answer.splitlines() if l.startswith("a=ice-ufrag:"))
        port = int(next(l.split()[1] for l in answer.splitlines() if l.startswith("m=video")))
        await sub.subscribe()
        track = await sub.wait_track(await sub.wait_stream(pub.participant_id, "video"))
        assert await receive_video(track, COLORS[5], 3) >= 2

        refused = api.metric("enx_media_handshake_total", 'outcome="stun_refused"')
        reply = await asyncio.to_thread(_udp, port, stun_binding(f"{ufrag}:whoever", b"not the password"))
        parsed = stun.parse_message(reply)
        assert parsed.message_class == stun.Class.ERROR and parsed.attributes["ERROR-CODE"][0] == 401
        assert api.metric("enx_media_handshake_total", 'outcome="stun_refused"') == refused + 1
        malformed = api.metric("enx_media_handshake_total", 'outcome="stun_malformed"')
        await asyncio.to_thread(_udp, port, b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"x" * 10)
        assert api.metric("enx_media_handshake_total", 'outcome="stun_malformed"') == malformed + 1
        unknown = api.metric("enx_media_handshake_total", 'outcome="dtls_unknown_source"')
        await asyncio.to_thread(_udp, port, bytes([22]) + b"\xfe\xfd" + bytes(60))
        assert api.metric("enx_media_handshake_total", 'outcome="dtls_unknown_source"') == unknown + 1
        for junk in (bytes([0x80, 96]) + bytes(30), bytes([0x81, 200]) + bytes(6), b"\xff" * 40):
            await asyncio.to_thread(_udp, port, junk)
        # The association that was working still works.
        assert await receive_video(track, COLORS[5], 5) >= 4
        await pub.leave()
        await sub.leave()

    run(scenario())
    assert api.http.get("/rooms").status_code == 200


def test_client_that_vanishes_is_cleaned_up(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 5})

    async def scenario():
        stay, ghost = await api.moderator_and_participant(room["room_id"], ("stay", "ghost"))
        await ghost.publish([ColorTrack(COLORS[1]), ToneTrack()])
        await ghost.subscribe()
        await stay.subscribe()
        await stay.wait_stream(ghost.participant_id, "video")
        transports = api.metric("enx_media_transports")
        assert transports >= 2  # ghost's publish transport, stay's subscribe transport
        # No leave, no close handshake: the TCP connection just drops, and its peer connections stop.
        ghost.ws.transport.abort()
        for pc in ghost.publish_pcs + [ghost.subscribe_pc]:
            await pc.close()
        left = await stay.next_event("participant-left")
        assert left["participant_id"] == ghost.participant_id and left["reason"] == "disconnected"
        removed = [await stay.next_event("stream-removed") for _ in range(2)]
        assert {r["participant_id"] for r in removed} == {ghost.participant_id}
        assert api.metric("enx_media_transports") <= transports - 1
        users = api.http.get(f"/rooms/{room['room_id']}/users").json()
        assert [u["name"] for u in users["users"]] == ["stay"]
        await stay.leave()

    run(scenario())


# --- transports that fail or die ------------------------------------------------------------------------
def test_fingerprint_mismatch_closes_transport_with_reason(node, creds):
    api = Api(node, creds)
    room = api.room()

    async def scenario():
        c = await api.joined(room["room_id"], "mallory", "moderator")
        pc = await sendonly_offer(ColorTrack(COLORS[0]))
        lines = pc.localDescription.sdp.splitlines()
        forged = "\r\n".join(("a=fingerprint:sha-256 " + ":".join(["AB"] * 32)) if l.startswith("a=fingerprint:")
                             else l for l in lines) + "\r\n"
        await publish_offer(c, pc, forged)
        err = await c.next_event("error", timeout=20)
        assert err["transport"] == "publish" and "fingerprint mismatch" in err["desc"]
        assert api.metric("enx_media_handshake_total", 'outcome="dtls_failed"') >= 1
        await pc.close()
        await c.leave()

    run(scenario())


def test_dead_peer_times_out_on_consent(tmp_path):
    """Peer connections stop but the WebSocket stays: consent freshness (here 3 s) closes the transports."""
    from node_util import Node

    node = Node(tmp_path, ENX_CONSENT_TIMEOUT="3")
    node.start()
    try:
        creds = node.create_app()
        api = Api(node, creds)
        room = api.room(settings={"moderators": 1, "participants": 5})

        async def scenario():
            pub, sub = await api.moderator_and_participant(room["room_id"])
            await pub.publish([ColorTrack(COLORS[2])])
            await sub.subscribe()
            sid = await sub.wait_stream(pub.participant_id, "video")
            assert await receive_video(await sub.wait_track(sid), COLORS[2], 3) >= 2
            # The media side goes silent (its ICE sockets close; no DTLS close_notify) while signaling stays up.
            for pc in pub.publish_pcs:
                await pc.getTransceivers()[0].sender.transport.transport._connection.close()
            err = await pub.next_event("error", timeout=15)
            assert err["transport"] == "publish" and "consent expired" in err["desc"]
            removed = await sub.next_event("stream-removed", timeout=5)
            assert removed["stream_id"] == sid
            assert api.metric("enx_media_handshake_total", 'outcome="consent_expired"') >= 1
            await pub.leave()
            await sub.leave()

        run(scenario())
    finally:
        node.stop()


def test_schema_checker_rejects_wrong_messages():
    assert schema_problems({"type": "pong", "t": 1.0}) == []
    assert schema_problems({"type": "joined"})            # required fields missing
    assert schema_problems({"type": "pong", "t": 1, "extra": 1})
    assert schema_problems({"type": "no-such-event"})


# --- regressions from review ------------------------------------------------------------------------------
def test_refused_first_join_leaves_no_session(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 0})
    replies = run(raw(api, [{"type": "join", "token": api.token(room["room_id"], "p", "participant")}]))
    assert replies[0]["code"] == 1429
    assert api.http.delete(f"/rooms/{room['room_id']}").status_code == 200  # no phantom live session


def test_vanished_client_can_rejoin_at_once(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"moderators": 1, "participants": 5})
    token = api.token(room["room_id"], "flaky", "participant")

    async def scenario():
        keeper = await api.joined(room["room_id"], "keeper", "moderator")
        first = api.client_for(token)
        await first.join()
        first.ws.transport.abort()
        left = await keeper.next_event("participant-left", timeout=2)  # not after a 5 s flush wait
        assert left["reason"] == "disconnected"
        again = api.client_for(token)
        await again.join()
        await again.leave()
        await keeper.leave()

    run(scenario())


def test_join_refused_before_a_scheduled_window(node, creds):
    import datetime as dt

    api = Api(node, creds)
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    room = api.room(settings={"scheduled": True, "scheduled_time": start, "duration": 30})
    token = api.token(room["room_id"], "early", "participant")  # tokens come 15 min ahead...
    replies = run(raw(api, [{"type": "join", "token": token}]))
    assert replies[0]["code"] == 4010  # ...but the room opens at its scheduled time


def test_subscribe_in_an_empty_room_opens_nothing_yet(node, creds):
    api = Api(node, creds)
    room = api.room()

    async def scenario():
        c = await api.joined(room["room_id"], "alone", "moderator")
        before = api.metric("enx_media_transports")
        await c.subscribe()
        assert api.metric("enx_media_transports") == before  # no offer, no transport left to time out
        await c.leave()

    run(scenario())


def test_errors_before_join_end_the_connection(node, creds):
    api = Api(node, creds)
    replies = run(raw(api, ["nope"] * 25, expect=25))
    assert len(replies) == 20 and all(r["code"] == 1001 for r in replies)


def test_publish_offer_that_wants_to_be_dtls_server_is_refused(node, creds):
    api = Api(node, creds)
    room = api.room()

    async def scenario():
        c = await api.joined(room["room_id"], "pub", "moderator")
        pc = await sendonly_offer(ColorTrack(COLORS[0]))
        with pytest.raises(SignalingError) as bad:
            await publish_offer(c, pc, pc.localDescription.sdp.replace("a=setup:actpass", "a=setup:passive"))
        assert bad.value.code == 1002 and "DTLS server" in bad.value.message["desc"]
        await pc.close()
        await c.leave()

    run(scenario())
