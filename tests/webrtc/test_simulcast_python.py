"""Simulcast from the Python test publisher (tests/simulcast_publisher.py: three real VP8 encodes of one
moving pattern, 160x90 / 320x180 / 640x360, on three SSRCs with rid extensions over SRTP) to aiortc
subscribers: each decodes the layer it asked for, follows when it asks again, and a switch decodes without
a decoder error, a gap in the sequence numbers or a freeze longer than the key-frame wait. Bad input at the
switch points: a key frame of the target layer that arrives reversed and with packets lost (NACK repairs
them), an encoding that stops arriving (the subscriber falls back and returns when it comes back), and
packets of a rid nobody offered."""
import asyncio
import logging
import time

from media_util import Api, Heights
from simulcast_publisher import SimulcastPublisher


async def video_inbound(client, stream_id):
    """The subscriber's inbound-rtp stats (aiortc) of that stream's video."""
    mid = next(m for m, s in client._mid_to_stream.items() if s == stream_id)
    receiver = next(t.receiver for t in client.subscribe_pc.getTransceivers() if t.mid == mid)
    stats = await receiver.getStats()
    return next(s for s in stats.values() if s.type == "inbound-rtp")


async def publishing(api, room_id, *subscribers):
    """A moderator publishing through the simulcast test publisher, and participants that subscribed first:
    (its client, the publisher, [subscriber clients], the stream's id)."""
    pub = await api.joined(room_id, "pub", "moderator")
    subs = [await api.joined(room_id, name, "participant") for name in subscribers]
    for s in subs:
        await s.subscribe()
    sp = SimulcastPublisher(pub)
    await sp.start()
    sp.stream_id = await subs[0].wait_stream(pub.participant_id, "video")
    return pub, sp, subs, sp.stream_id


def decoder_errors(caplog):
    return [r.getMessage() for r in caplog.records if "decode" in r.getMessage().lower() and r.levelno >= logging.WARNING]


def test_each_subscriber_decodes_its_layer_and_switches_cleanly(node, creds, caplog):
    caplog.set_level(logging.WARNING)
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        pub, sp, (small, best), stream_id = await publishing(api, room["room_id"], "small", "best")
        watched = []
        try:
            assert await small.stream_settings(stream_id, 90) is not None    # a simulcast stream
            low, high = Heights(await small.wait_track(stream_id)), Heights(await best.wait_track(stream_id))
            watched += [low, high]
            await low.settle_on(90, 10)
            await high.settle_on(360, 20)
            since = time.monotonic()
            # down, then up again: each at a key frame of the target, on one SSRC
            await best.stream_settings(stream_id, 180)
            down = await high.settle_on(180, 5)
            await best.stream_settings(stream_id, None)
            up = await high.settle_on(360, 10)
            assert high.longest_gap(since) < 1.0, "a switch froze the picture"
            assert [h for _, h in low.frames[-20:]] == [90] * 20, "the other subscriber was not moved"
            st = await video_inbound(best, stream_id)
            assert st.packetsLost <= 0, f"a gap in the sequence numbers across the switches: {st}"
            assert not decoder_errors(caplog), decoder_errors(caplog)
            print(f"switch down {down:.2f} s, up {up:.2f} s; key frames asked {sp.key_requests}")
            # the live quality view says which layer each subscriber is on (rids q / h / f)
            users = {u["user_ref"]: u["quality"] for u in api.http.get(f"/rooms/{room['room_id']}/users").json()["users"]}
            assert users["small"]["layers"] == {"q": 1} and users["best"]["layers"] == {"f": 1}, users
        finally:
            for h in watched:
                h.stop()
            await sp.close()
            for c in (pub, small, best):
                await c.leave()

    asyncio.run(scenario())


def test_bad_input_at_the_switch_points(node, creds, caplog):
    caplog.set_level(logging.WARNING)
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})
    unknown_before = api.metric("enx_media_unknown_ssrc_events_total")

    async def scenario():
        pub, sp, (sub,), stream_id = await publishing(api, room["room_id"], "sub")
        watched = []
        try:
            seen = Heights(await sub.wait_track(stream_id))
            watched.append(seen)
            await seen.settle_on(360, 20)

            # the key frame the switch waits for comes reversed, two of its packets lost (NACKed, resent)
            h = sp.encoding("h")
            h.reorder_key, h.lose = True, 2
            since = time.monotonic()
            await sub.stream_settings(stream_id, 180)
            await seen.settle_on(180, 5)
            assert sp.retransmitted >= 2 and not h.reorder_key, "the mangled key frame was sent and repaired"

            # the top encoding stops arriving: back on h although the subscriber wants the best
            await sub.stream_settings(stream_id, None)
            await seen.settle_on(360, 10)
            sp.encoding("f").stopped = True
            stopped = time.monotonic()
            fell = await seen.settle_on(180, 6)
            sp.encoding("f").stopped, sp.encoding("f").force_key = False, True
            back = await seen.settle_on(360, 10)

            # a rid nobody offered: dropped as an unknown SSRC, the stream goes on
            await sp.send_unknown_rid(20)
            await asyncio.sleep(0.5)
            assert [x for _, x in seen.frames[-10:]] == [360] * 10
            assert seen.longest_gap(since) < 3.0 and seen.longest_gap(stopped + fell + 0.5) < 1.0
            assert not decoder_errors(caplog), decoder_errors(caplog)
            print(f"fell back {fell:.2f} s after the top encoding stopped, back {back:.2f} s after it resumed")
        finally:
            for x in watched:
                x.stop()
            await sp.close()
            for c in (pub, sub):
                await c.leave()

    asyncio.run(scenario())
    assert api.metric("enx_media_unknown_ssrc_events_total") > unknown_before
