"""A live room's media in-process: a real WebRTC server on 127.0.0.1 and aiortc peers in the same loop,
no WebSocket. Publishing makes live streams, a follower is offered them and gets consumers, and a
stream removed is offered again only as a disabled section."""
import asyncio
import time

import pytest

from aiortc import RTCSessionDescription

from enx_media import errors as E
from enx_media import events as ev
from enx_media.limits import Limits
from enx_media.room import RoomManager
from enx_media.signaling import MessageNotifier
from enx_media.webrtc.server import WebRtcServer
from media_util import COLORS, ColorTrack, ToneTrack, peer_connection, sendonly_offer
from test_live_room import Rig


async def next_message(channel, msg_type, after=0, timeout=10.0):
    """The first message of msg_type at index >= after in what the channel was sent, and its index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, m in enumerate(channel.messages[after:], start=after):
            if m["type"] == msg_type:
                return m, i
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {msg_type} message; got {[m['type'] for m in channel.messages]}")


async def answer_offer(live, p, pc, offer):
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await live.answer(p, pc.localDescription.sdp)


async def until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_publish_follow_and_remove_a_stream(tmp_path):
    rig = Rig(tmp_path)

    async def scenario():
        server = WebRtcServer("127.0.0.1", 0, "127.0.0.1")
        server.start()
        rig.rooms = RoomManager(rig.engine.rooms, rig.engine.tokens, server, rig.engine.events, MessageNotifier())
        pcs = []
        try:
            live, (alice, bob) = rig.populate("group", "moderator", "participant")
            await live.subscribe(bob, None)                      # follows everything, nothing live yet
            pub = await sendonly_offer(ColorTrack(COLORS[0]), ToneTrack())
            sub = peer_connection()
            pcs += [pub, sub]
            answer = await live.publish(alice, pub.localDescription.sdp)
            await pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))

            # answer every offer until both streams are consumed and no renegotiation is due
            at = -1
            while len(live.media.router.consumers) < 2 or bob.media.offer_pending or bob.media.renegotiate:
                offer, at = await next_message(bob.channel, "offer", after=at + 1)
                await answer_offer(live, bob, sub, offer)
                await until(lambda: sub.connectionState == "connected")
                await asyncio.sleep(0.05)
            offered = {s["stream_id"]: s["kind"] for s in offer["streams"]}
            assert sorted(offered.values()) == ["audio", "video"] and set(offered) == set(live.media.producers)
            assert all(c.subscriber_id == bob.participant_id for c in live.media.router.consumers)

            # media flows: the quality sample counts it per participant and direction
            await until(lambda: all(c.native.stats["packets_out"] > 5 for c in live.media.router.consumers))
            live.sample_quality()
            samples = {e.participant_id: e for e in rig.of(ev.QualitySample)}
            assert samples[alice.participant_id].streams_sent == 2 and samples[alice.participant_id].packets_in > 10
            assert samples[bob.participant_id].streams_received == 2 and samples[bob.participant_id].bytes_out > 0

            video = next(s for s in live.media.producers.values() if s.kind == "video")
            mark = len(bob.channel.messages)
            assert await live.unpublish(alice, [video.producer_id]) == [video.producer_id]
            again, at = await next_message(bob.channel, "offer", after=mark)
            assert [s["stream_id"] for s in again["streams"]] == [s for s, k in offered.items() if k == "audio"]
            assert "m=video 0 " in again["sdp"]                  # the section is disabled, not offered anew
            assert [m for m in bob.channel.messages if m["type"] == "stream-removed"] == [
                {"type": "stream-removed", "stream_id": video.producer_id, "participant_id": alice.participant_id}]
            assert len(live.media.router.consumers) == 1 and video.producer_id not in live.media.producers
            await answer_offer(live, bob, sub, again)
            await live.leave(alice, "left")
            await until(lambda: not live.media.router.consumers and not live.media.producers)
        finally:
            for pc in pcs:
                await pc.close()
            await rig.rooms.end_all("test over")
            await server.stop()
            assert server.stats()["worker"]["consumers"] == 0

    asyncio.run(scenario())
    rig.engine.close()


def run_with_server(tmp_path, body, limits=None):
    """Run body(rig) with the rig's rooms on a real WebRTC server (127.0.0.1), then tear down."""
    rig = Rig(tmp_path)
    limits = limits or Limits()

    async def scenario():
        server = WebRtcServer("127.0.0.1", 0, "127.0.0.1", max_transports=limits.max_transports)
        server.start()
        rig.rooms = RoomManager(rig.engine.rooms, rig.engine.tokens, server, rig.engine.events, MessageNotifier(),
                                limits)
        try:
            await body(rig)
        finally:
            await rig.rooms.end_all("test over")
            await server.stop()

    asyncio.run(scenario())
    rig.engine.close()


def test_a_floor_revoked_while_connecting_publishes_nothing(tmp_path):
    async def body(rig):
        live, (mod, student) = rig.populate("lecture", "moderator", "participant")
        await live.floor(mod, "grant", student.participant_id)
        pc = await sendonly_offer(ColorTrack(COLORS[1]), ToneTrack())
        try:
            answer = await live.publish(student, pc.localDescription.sdp)   # answered, ICE not started yet
            await live.floor(mod, "revoke", student.participant_id)
            assert student.media.publish_transports == {}                  # closed while connecting
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.sleep(2)                                         # what ICE/DTLS would have taken
            assert live.media.producers == {}
            assert "stream-added" not in mod.channel.types()
        finally:
            await pc.close()
    run_with_server(tmp_path, body)


def test_a_server_mute_holds_across_republishing(tmp_path):
    async def body(rig):
        live, (mod, alice) = rig.populate("group", "moderator", "participant")
        pcs = []
        try:
            for round_ in range(2):
                pc = await sendonly_offer(ColorTrack(COLORS[0]), ToneTrack())
                pcs.append(pc)
                answer = await live.publish(alice, pc.localDescription.sdp)
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                await until(lambda: len(live.media.live_producers()) == 2)
                if round_ == 0:
                    assert await live.set_muted(mod, alice.participant_id, "all", True)
                    await live.unpublish(alice, None)                      # ... and publish again
            assert all(s.paused for s in live.media.live_producers())
            added = [m["stream"] for m in mod.channel.messages if m["type"] == "stream-added"]
            assert [s["muted"] for s in added[-2:]] == [True, True]        # announced as muted too
            await live.set_muted(mod, alice.participant_id, "audio", False)
            assert {s.kind: s.paused for s in live.media.live_producers()} == {"audio": False, "video": True}
        finally:
            for pc in pcs:
                await pc.close()
    run_with_server(tmp_path, body)


def test_a_check_for_one_transport_cannot_take_another_participants_5_tuple(tmp_path):
    """Another app's participant knows its own transport's ufrag/pwd and sends one valid nominating
    Binding request from a victim's address (spoofed): the victim's connected transport stays."""
    from aioice import stun

    async def body(rig):
        live, (victim,) = rig.populate("group", "participant")
        other_app = rig.engine.apps.create("attacker")
        rig.app = other_app
        attacker_live, (attacker,) = rig.populate("group", "participant")
        pc = await sendonly_offer(ColorTrack(COLORS[0]), ToneTrack())
        try:
            answer = await live.publish(victim, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await until(lambda: len(live.media.live_producers()) == 2)
            held = next(iter(victim.media.publish_transports))
            bait = await sendonly_offer(ColorTrack(COLORS[1]))
            pcs.append(bait)
            await attacker_live.publish(attacker, bait.localDescription.sdp)
            mine = next(iter(attacker.media.publish_transports))
            msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            msg.attributes.update({"USERNAME": f"{mine.ufrag}:{mine.remote_ufrag}", "PRIORITY": 1,
                                   "ICE-CONTROLLING": 1, "USE-CANDIDATE": None})
            msg.add_message_integrity(mine.pwd.encode())
            msg.add_fingerprint()
            server = live.media.server
            server._on_control(bytes(msg), held.addr)                 # arriving "from" the victim's pair
            assert server.counters["stun_tuple_held"] == 1
            assert held.state == "connected" and server.by_addr[held.addr] is held
            assert len(live.media.live_producers()) == 2
        finally:
            for x in pcs + [pc]:
                await x.close()

    pcs: list = []
    run_with_server(tmp_path, body)


def test_caps_on_transports_tracks_and_m_lines(tmp_path):
    """Finding 9 (hundreds of transports from one participant): over each cap, a clear error and nothing
    held; unpublishing frees the participant's share; the node-wide cap holds against everyone."""
    limits = Limits(publish_transports_per_participant=2, streams_per_participant=3, mlines_per_offer=2,
                    max_transports=4)

    async def body(rig):
        live, (alice, bob, carol) = rig.populate("group", "moderator", "participant", "participant")
        pcs = []

        async def offer(*tracks):
            pcs.append(await sendonly_offer(*tracks))
            return pcs[-1].localDescription.sdp

        try:
            with pytest.raises(E.ValidationFailed, match="at most 2 m-lines"):
                live.media.publish(alice, await offer(ColorTrack(COLORS[0]), ToneTrack(), ToneTrack()))
            live.media.publish(alice, await offer(ColorTrack(COLORS[0]), ToneTrack()))
            with pytest.raises(E.CapacityExceeded, match="at most 3 published tracks"):
                live.media.publish(alice, await offer(ColorTrack(COLORS[1]), ToneTrack()))
            live.media.publish(alice, await offer(ToneTrack()))
            with pytest.raises(E.CapacityExceeded, match="at most 2 publish transports") as over:
                live.media.publish(alice, await offer(ToneTrack()))
            assert over.value.reason == "too many transports" and len(alice.media.publish_transports) == 2
            await live.unpublish(alice, None)                        # connecting ones are closed too
            assert alice.media.publish_transports == {} and live.media.streams_of(alice) == 0
            for p in (alice, bob, bob, carol):                       # the node holds 4 at most
                live.media.publish(p, await offer(ToneTrack()))
            with pytest.raises(E.CapacityExceeded, match="maximum of 4 transports"):
                live.media.publish(carol, await offer(ToneTrack()))
            assert rig.rooms.server.stats()["handshake"]["transport_cap"] == 1
            # one screen share per participant: a second is refused until the first is unpublished
            await live.unpublish(bob, None)
            live.media.publish(bob, await offer(ColorTrack(COLORS[0])), source="screen")
            with pytest.raises(E.CapacityExceeded, match="at most 1 screen share") as screens:
                live.media.publish(bob, await offer(ColorTrack(COLORS[1])), source="screen")
            assert screens.value.reason == "too many screens"
            await live.unpublish(bob, None)
            live.media.publish(bob, await offer(ColorTrack(COLORS[1])), source="screen")
        finally:
            for pc in pcs:
                await pc.close()
    run_with_server(tmp_path, body, limits)
