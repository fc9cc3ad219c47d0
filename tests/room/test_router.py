"""The SFU router in-process on a real native worker and real UDP sockets (127.0.0.1): producers that
learn their SSRC from the MID header extension, consumers, pausing, closing. The router only needs a
transport's native handle, so the transports here are plain-RTP native transports (the DTLS handshake
that makes them in a node is tested in tests/webrtc)."""
import asyncio
import socket
from types import SimpleNamespace

from enx_media.sfu import Worker
from enx_media.sfu.router import Producer, Router
from rtp_util import PLAIN, Peer, rtp, vp8

MID_EXT = 4


def forwarded(peer, pump, want, deadline=2.0):
    out = []
    loop_end = asyncio.get_event_loop().time() + deadline
    while len(out) < want and asyncio.get_event_loop().time() < loop_end:
        pump()
        try:
            while True:
                out.append(peer.sock.recv(4096))
        except (socket.timeout, BlockingIOError):
            pass
    return out


def test_producer_learns_its_ssrc_from_mid_and_feeds_consumers():
    async def scenario():
        events = []
        worker = Worker("127.0.0.1", 0, on_event=events.append)
        router = Router(worker)
        pub = Peer(worker, PLAIN, ext_ids={"mid": MID_EXT})
        sub = Peer(worker, PLAIN)
        pub_t, sub_t = SimpleNamespace(native=pub.transport), SimpleNamespace(native=sub.transport)
        producer = router.create_producer(Producer("p1", "alice", "video", "vp8", "v0", None, pub_t))
        assert not producer.live

        pub.send_rtp(rtp(1, 3000, 0xAB01, payload=vp8(b"k" * 100, key=True), ext=[(MID_EXT, b"v0")]))
        for _ in range(20):
            worker.poll_once(5)
            if events:
                break
        bound = [router.encoding_bound(e.producer_id, e.ssrc) for e in events if e.kind == "encoding_bound"]
        assert bound == [producer] and producer.ssrc == 0xAB01 and producer.live

        consumer = router.create_consumer(producer, sub_t, "bob", 0x1234, 96, 90000)
        assert consumer is not None and worker.stats["consumers"] == 1
        for seq in range(2, 6):
            pub.send_rtp(rtp(seq, 3000 * seq, 0xAB01, payload=vp8(b"k" * 100, key=True)))
        got = forwarded(sub, lambda: worker.poll_once(5), 4)
        assert len(got) == 4 and all(int.from_bytes(d[8:12], "big") == 0x1234 for d in got)

        router.set_paused(producer, True)
        assert consumer.native.paused
        pub.send_rtp(rtp(6, 18000, 0xAB01, payload=vp8(b"k" * 100, key=True)))
        assert forwarded(sub, lambda: worker.poll_once(5), 1, deadline=0.3) == []
        router.set_paused(producer, False)
        assert not consumer.native.paused

        quality = router.quality()
        assert quality["alice"]["streams_sent"] == 1 and quality["alice"]["packets_in"] >= 5
        assert quality["bob"]["streams_received"] == 1 and quality["bob"]["packets_out"] == 4
        router.close_producer(producer)
        assert router.consumers == [] and worker.stats["consumers"] == 0 and worker.stats["producers"] == 0
        pub.close()
        sub.close()
        worker.stop()
    asyncio.run(scenario())


def test_encoding_bound_only_concerns_the_routers_waiting_producers():
    async def scenario():
        worker = Worker("127.0.0.1", 0)
        router, other = Router(worker), Router(worker)
        a = Peer(worker, PLAIN, ext_ids={"mid": MID_EXT})
        known = router.create_producer(Producer("k", "alice", "audio", "opus", "a0", 0x5555,
                                                SimpleNamespace(native=a.transport)))
        waiting = router.create_producer(Producer("w", "alice", "video", "vp8", "v0", None,
                                                  SimpleNamespace(native=a.transport)))
        assert known.live and not waiting.live
        assert other.encoding_bound(waiting.native.id, 0x7777) is None       # another room's producer
        assert router.encoding_bound(known.native.id, 0x7777) is None        # its SSRC came from the SDP
        assert router.encoding_bound(waiting.native.id, 0x7777) is waiting and waiting.ssrc == 0x7777
        router.close()
        assert worker.stats["producers"] == 0
        a.close()
        worker.stop()
    asyncio.run(scenario())


def test_every_native_event_kind_has_a_handler(tmp_path):
    from enx_media import Engine, Settings
    from enx_media.room import RoomManager
    from enx_media.signaling import MessageNotifier
    from enx_media.sfu.worker import MEDIA_EVENT_KINDS

    engine = Engine(Settings(data_dir=str(tmp_path)))
    manager = RoomManager(engine.rooms, engine.tokens, None, engine.events, MessageNotifier())
    assert set(manager.media_event_handlers) == set(MEDIA_EVENT_KINDS)
    engine.close()


def test_python_fed_producer_fans_out_and_asks_its_source_for_key_frames():
    async def scenario():
        from enx_media._native import _core

        events = []
        worker = Worker("127.0.0.1", 0, on_event=events.append)
        router = Router(worker)
        sub = Peer(worker, PLAIN)
        asked = []
        mcu = router.create_direct_producer(Producer("mcu", "mcu", "video", "vp8", "", 0x6001, None,
                                                     on_keyframe_request=lambda: asked.append(1)))
        consumer = router.create_consumer(mcu, SimpleNamespace(native=sub.transport), "bob", 0x6002, 96, 90000)
        assert mcu.live and consumer is not None
        sent = router.feed(mcu, [rtp(i, 3000 * i, 0x6001, payload=vp8(b"m%d" % i, key=i == 0)) for i in range(5)])
        got = forwarded(sub, lambda: worker.poll_once(5), 5)
        assert sent == 5 and len(got) == 5 and all(int.from_bytes(d[8:12], "big") == 0x6002 for d in got)

        sub.send_rtcp(_core.write_pli(0x1, 0x6002))
        for _ in range(20):
            worker.poll_once(5)
            if events:
                break
        for e in events:
            if e.kind == "keyframe_requested":
                router.keyframe_requested(router.by_native_id(e.producer_id))
        assert asked == [1] and mcu.keyframes_requested == 1
        router.close()
        sub.close()
        worker.stop()
    asyncio.run(scenario())


def test_pick_encoding_follows_the_wanted_height_among_arriving_layers():
    from enx_media.sfu.router import pick_encoding

    sizes = [(320, 180), (640, 360), (1280, 720)]
    on = [True, True, True]
    assert pick_encoding(sizes, on, None) == 2                     # the best there is
    assert pick_encoding(sizes, on, 400) == 1 and pick_encoding(sizes, on, 360) == 1
    assert pick_encoding(sizes, on, 100) == 0                      # nothing fits: the smallest
    assert pick_encoding(sizes, [True, True, False], None) == 1    # the top one stopped arriving
    assert pick_encoding([(320, 180), (0, 0), (0, 0)], on, None) == 0   # sizes not told yet
    assert pick_encoding([(0, 0)] * 3, [False, True, True], None) == 1  # arriving, size unknown: lowest
    assert pick_encoding(sizes, [False] * 3, None) is None         # nothing arrives: stay
    assert pick_encoding(sizes, [], 720) is None                   # not looked at yet


def test_pick_temporal_layer_keeps_within_the_wanted_frame_rate():
    from enx_media.sfu.router import pick_temporal_layer

    l1t3 = [7.5, 15.0, 30.0, 30.0]        # Chromium's VP8 layers at 30 fps (no TID 3: the same rate)
    assert pick_temporal_layer(l1t3, None) == 255
    assert pick_temporal_layer(l1t3, 30) == 3 and pick_temporal_layer(l1t3, 15) == 1
    assert pick_temporal_layer(l1t3, 7) == 0 and pick_temporal_layer(l1t3, 1) == 0   # the base layer at least
    assert pick_temporal_layer([0.0] * 4, 10) == 255 and pick_temporal_layer([], 10) == 255   # not measured yet


def test_a_single_vp8_encoding_follows_max_fps_by_its_temporal_layers():
    """No simulcast, but VP8 temporal layers (TID 0,2,1,2: 10, 20 and 40 frames a second here): a consumer
    that wants 12 frames a second gets the base layer only, one that wants all gets every frame."""
    async def scenario():
        import time

        worker = Worker("127.0.0.1", 0)
        router = Router(worker)
        pub, slow, full = Peer(worker, PLAIN), Peer(worker, PLAIN), Peer(worker, PLAIN)
        producer = router.create_producer(Producer("p1", "alice", "video", "vp8", "v0", 0xAB01,
                                                   SimpleNamespace(native=pub.transport)))
        few = router.create_consumer(producer, SimpleNamespace(native=slow.transport), "bob", 0x1234, 96, 90000,
                                     max_fps=12)
        every = router.create_consumer(producer, SimpleNamespace(native=full.transport), "carol", 0x1235, 96,
                                       90000)
        pattern, seq, started = [0, 2, 1, 2], 0, time.monotonic()
        while time.monotonic() - started < 1.6:
            for _ in range(10):                       # 40 frames a second, one packet each
                tid = pattern[seq % 4]
                pub.send_rtp(rtp(seq, 2250 * seq, 0xAB01, payload=vp8(b"t" * 50, tid=tid, key=seq == 0)))
                seq += 1
                worker.poll_once(0)
                await asyncio.sleep(0.025)
            router.observe_encodings(producer)
            assert router.select_encoding(few) is None and router.select_encoding(every) is None
        assert few.native.max_temporal_layer == 0 and every.native.max_temporal_layer == 255
        forwarded(slow, lambda: worker.poll_once(5), 1000, deadline=0.3)     # what went before the choice
        forwarded(full, lambda: worker.poll_once(5), 1000, deadline=0.3)
        base = seq
        for i in range(8):
            pub.send_rtp(rtp(base + i, 2250 * (base + i), 0xAB01, payload=vp8(b"t" * 50, tid=pattern[(base + i) % 4],
                                                                            key=False)))
        got_few = forwarded(slow, lambda: worker.poll_once(5), 100, deadline=0.5)
        got_all = forwarded(full, lambda: worker.poll_once(5), 100, deadline=0.5)
        assert len(got_all) == 8 and len(got_few) == 2, "the base layer: every fourth frame"
        router.close()
        for p in (pub, slow, full):
            p.close()
        worker.stop()
    asyncio.run(scenario())


def test_a_link_is_congested_after_decreases_in_a_row_or_under_loss():
    from enx_media.sfu.router import ProbeState
    state, counts = ProbeState(), {"probes_ok": 0, "probes_failed": 0}
    bwe = {"probes_ok": 0, "probes_failed": 0, "decreases": 0, "loss": 0.0}
    state.observe(bwe, 0.0, counts)
    state.observe(dict(bwe, decreases=1), 1.0, counts)
    assert not state.congested(bwe, 1.0)                 # one decrease: maybe a receiver's busy moment
    state.observe(dict(bwe, decreases=2), 2.5, counts)
    assert state.congested(bwe, 2.5)
    assert not state.congested(bwe, 6.0)                 # long ago
    assert state.congested(dict(bwe, loss=0.05), 6.0)
