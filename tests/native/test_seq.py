"""Sequence and timestamp continuity of a consumer across an encoding switch (seq.pxi): output timestamps
stay on one clock through the encodings' sender reports; before both have one, the arrival time elapsed.
127.0.0.1, SRTP both ways."""
import random
import time

from enx_media._native import _core
from rtp_util import GCM, Peer, pump_for, rtp, vp8

NTP0 = 3_900_000_000 << 32          # some NTP time (32.32)
FRAME = 3000                        # 30 fps at 90 kHz


def _setup(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, codec="vp8", mid="v", encodings=[("q", 0xD1), ("h", 0xD2)])
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, p, 0xDC, 96)
    return pub, p, sub, c


def _run(worker, pub, sub, c, bases, pause=0.0):
    """q frames 0-5, a switch to h, then h frames 10 and 11 (h10 a key frame). Returns the output
    (seq, ts) of the 8 packets sent."""
    (sq, tq), (sh, th) = bases
    pump = pump_for(worker)
    for k in range(6):
        pub.send_rtp(rtp(sq + k, tq + FRAME * k, 0xD1, payload=vp8(b"q%d" % k, 0, key=k == 0)))
    got = sub.recv_all(6, pump)
    worker.set_target_encoding(c, 1)
    time.sleep(pause)
    for k in (10, 11):
        pub.send_rtp(rtp(sh + k, th + FRAME * k, 0xD2, payload=vp8(b"h%d" % k, 0, key=k == 10)))
    got += sub.recv_all(2, pump)
    assert [_core.parse_rtp(x)["payload"][4:] for x in got] == [b"q%d" % k for k in range(6)] + [b"h10", b"h11"]
    assert c.encoding == 1
    return [(_core.parse_rtp(x)["sequence_number"], _core.parse_rtp(x)["timestamp"]) for x in got]


def _bases(rnd):
    return [(rnd.randrange(1 << 16), rnd.randrange(1 << 32)) for _ in range(2)]


def test_switch_maps_timestamps_through_sender_reports(worker):
    rnd = random.Random(7)
    for _ in range(3):
        pub, p, sub, c = _setup(worker)
        bases = _bases(rnd)
        (sq, tq), (sh, th) = bases
        # the sender's two reports, at different instants, on one NTP clock: frame 0 of q at NTP0,
        # frame 15 of h half a second later
        pub.send_rtcp(_core.write_sr(0xD1, NTP0, tq, 0, 0))
        pub.send_rtcp(_core.write_sr(0xD2, NTP0 + (1 << 31), (th + 15 * FRAME) & 0xffffffff, 0, 0))
        for _ in range(10):
            worker.poll_once(2)
        assert [e["stats"]["sender_reports"] for e in p.encodings] == [1, 1]
        out = _run(worker, pub, sub, c, bases)
        s0, t0 = out[0]
        assert [s for s, _ in out] == [(s0 + i) & 0xffff for i in range(8)]
        # h10 lands where frame 10 of q would have: 10 frame intervals after q0, on q's clock
        assert [(t - t0) & 0xffffffff for _, t in out] == [FRAME * k for k in range(6)] + [FRAME * 10, FRAME * 11]
        for x in (pub, sub):
            worker.close_transport(x.transport)
            x.close()


def test_switch_before_sender_reports_uses_arrival_time(worker):
    rnd = random.Random(8)
    pub, p, sub, c = _setup(worker)
    bases = _bases(rnd)
    # only q has reported: not enough to relate the clocks
    pub.send_rtcp(_core.write_sr(0xD1, NTP0, bases[0][1], 0, 0))
    out = _run(worker, pub, sub, c, bases, pause=0.2)
    t5, t10, t11 = out[5][1], out[6][1], out[7][1]
    gap = (t10 - t5) & 0xffffffff
    assert 0.15 * 90000 < gap < 0.5 * 90000          # ~0.2 s of arrival time, not 5 frame intervals
    assert (t11 - t10) & 0xffffffff == FRAME          # then h's own clock
    assert [s for s, _ in out] == [(out[0][0] + i) & 0xffff for i in range(8)]
    for x in (pub, sub):
        x.close()
