"""The Python-fed ("direct") producer: feed() fans packets out like any producer's, over real UDP sockets
with SRTP (pylibsrtp decrypts): per-consumer rewrite, NACKs answered from its history, sender reports,
key frame requests reported back to Python as events."""
import threading

import pytest

from enx_media._native import _core
from rtp_util import CM, GCM, Peer, pump_for, rtp, vp8


def test_feed_fans_out_with_srtp(worker):
    p = worker.create_direct_producer("vp8", ssrc=0x3001)
    assert p.transport is None and p.ssrc == 0x3001
    subs = [Peer(worker, GCM), Peer(worker, CM)]
    cons = [worker.create_consumer(s.transport, p, 0x3100 + i, 100 + i) for i, s in enumerate(subs)]
    packets = [rtp(65530 + i, 1000 + 3000 * i, 0x3001, payload=vp8(b"mcu%d" % i, 0, key=i == 0)) for i in range(80)]
    assert worker.feed(p, packets + [b"\x80\x60junk"]) == 80            # 80 > one batch of 64
    assert worker.stats["drops"]["truncated"] == 1
    for i, s in enumerate(subs):
        got = s.recv_all(80, pump_for(worker))
        assert len(got) == 80
        hs = [_core.parse_rtp(x) for x in got]
        assert [h["ssrc"] for h in hs] == [0x3100 + i] * 80
        assert [h["payload_type"] for h in hs] == [100 + i] * 80
        assert [h["sequence_number"] for h in hs] == [(65530 + k) & 0xffff for k in range(80)]
        assert [h["payload"][4:] for h in hs] == [b"mcu%d" % k for k in range(80)]
    assert p.stats["packets_in"] == 80 and [c.stats["packets_out"] for c in cons] == [80, 80]
    with pytest.raises(ValueError):
        worker.feed(worker.create_producer(subs[0].transport, 0x3999, "opus"), packets[:1])
    for s in subs:
        s.close()


def test_direct_producer_answers_nacks_reports_and_asks_python_for_key_frames(worker):
    p = worker.create_direct_producer("vp8", ssrc=0x4001)
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, p, 0x4002, 96)
    worker.feed(p, [rtp(10 + i, 90 * i, 0x4001, payload=vp8(b"f%d" % i, 0, key=False)) for i in range(10)])
    got = sub.recv_all(10, pump_for(worker), lose=(4,))
    assert len(got) == 9
    sub.send_rtcp(_core.write_nack(0x1, 0x4002, [14]))
    rtx = sub.recv_all(1, pump_for(worker))
    assert _core.parse_rtp(rtx[0])["payload"][4:] == b"f4" and c.stats["retransmits"] == 1
    events = []
    worker.on_event = events.append
    sub.send_rtcp(_core.write_pli(0x1, 0x4002))
    for _ in range(10):
        worker.poll_once(2)
    assert events == [_core.MediaEvent("keyframe_requested", 0, p.id, 0x4001)]
    assert worker.request_keyframe(p) is False                         # within 500 ms of the last one
    worker.native.send_sender_reports()
    sr = sub.recv_all(1, pump_for(worker), rtcp=True)
    pkt = _core.parse_rtcp(sr[0])[0]
    assert pkt["type"] == "sr" and pkt["ssrc"] == 0x4002 and pkt["packet_count"] == 11   # 10 + the resend
    sub.close()


def test_feed_releases_the_gil(worker):
    """Another Python thread runs while one feed() call fans a large batch out to many consumers."""
    p = worker.create_direct_producer("opus", ssrc=0x5001)
    sink = Peer(worker, GCM)
    for i in range(200):
        worker.create_consumer(sink.transport, p, 0x51000 + i, 111, 48000)
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)

    th = threading.Thread(target=spin)
    th.start()
    try:
        before = len(ticks)
        worker.feed(p, [rtp(i, 960 * i, 0x5001, payload=b"\x00" * 900) for i in range(3000)])
        during = len(ticks) - before
    finally:
        stop.set()
        th.join()
    assert during > 0
    sink.close()


def test_direct_producer_audio_level_reaches_subscribers_that_negotiated_it(worker):
    p = worker.create_direct_producer("opus", ssrc=0x6001, ext_ids={"audio_level": 1})
    sub = Peer(worker, GCM)
    worker.create_consumer(sub.transport, p, 0x6002, 111, 48000, ext_ids={"mid": 4, "audio_level": 2}, mid="mcu")
    worker.feed(p, [rtp(1, 960, 0x6001, payload=b"a", pt=111, ext=[(1, b"\x8a")])])
    got = sub.recv_all(1, pump_for(worker))
    assert _core.parse_rtp(got[0])["extensions"] == {4: b"mcu", 2: b"\x8a"}
    sub.close()


def test_a_tap_hands_a_producers_packets_to_python_in_batches(worker):
    """What arrives from a publisher, decrypted, in arrival order; a repeat is not handed on twice, a late
    one is; a reader that falls behind loses the newest, counted; untapped, nothing is kept."""
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0x5001, "vp8")
    with pytest.raises(ValueError):
        worker.tap_read(p)
    worker.tap(p)
    sent = [rtp(100 + i, 3000 * i, 0x5001, payload=vp8(b"in%d" % i, 0, key=i == 0)) for i in range(6)]
    for i in (0, 1, 3, 2, 2, 4, 5):                # 2 late, then repeated
        pub.send_rtp(sent[i])
    for _ in range(20):
        worker.poll_once(5)
    got = worker.tap_read(p)
    assert [pkt for _, pkt in got] == [sent[i] for i in (0, 1, 3, 2, 4, 5)]
    assert all(a <= b for (a, _), (b, _) in zip(got, got[1:])) and got[0][0] > 0
    assert worker.tap_read(p) == []
    ring = 1024                                    # TAP_PACKETS (ext/direct.pxi)
    many = [rtp(106 + i, 9000, 0x5001, payload=vp8(b"x", 0, key=False)) for i in range(ring + 10)]
    for k in range(0, len(many), 50):
        for pkt in many[k:k + 50]:
            pub.send_rtp(pkt)
        for _ in range(5):
            worker.poll_once(2)
    assert len(worker.tap_read(p)) == ring
    assert worker.native.tap_stats(p)["overflow"] == 10
    worker.tap(p, False)
    assert worker.native.tap_stats(p) == {}
    pub.close()


def test_two_readers_of_a_tap_each_get_every_packet(worker):
    """The MCU and a recording tap the same producer: each reads all of its packets, whoever reads first;
    the ring is freed when the last stops."""
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0x5002, "vp8")
    worker.tap(p, reader="mcu")
    worker.tap(p, reader="recording")
    sent = [rtp(200 + i, 3000 * i, 0x5002, payload=vp8(b"t%d" % i, 0, key=i == 0)) for i in range(4)]
    for pkt in sent[:2]:
        pub.send_rtp(pkt)
    for _ in range(10):
        worker.poll_once(5)
    assert [pkt for _, pkt in worker.tap_read(p, "mcu")] == sent[:2]
    for pkt in sent[2:]:
        pub.send_rtp(pkt)
    for _ in range(10):
        worker.poll_once(5)
    assert [pkt for _, pkt in worker.tap_read(p, "recording")] == sent
    assert [pkt for _, pkt in worker.tap_read(p, "mcu")] == sent[2:]
    worker.tap(p, False, reader="mcu")
    assert worker.native.tap_stats(p) != {}
    with pytest.raises(ValueError):
        worker.tap_read(p, "mcu")
    worker.tap(p, False, reader="recording")
    assert worker.native.tap_stats(p) == {}
    pub.close()
