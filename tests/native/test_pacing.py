"""Pacing towards subscriber transports (ext/pacer.pxi) on real sockets (127.0.0.1): a key frame to a
subscriber whose estimate is limited leaves at its pacing rate, not as one burst, also to 100 subscribers at
once; a subscriber without feedback is not held; audio is not held behind video; paced copies carry their
real send time (the estimator does not take the pacer's delay for a queue); held copies of a consumer that
closes or switches producer (the switch's released copies not charged to the new stream). The test plays the subscribers, and reads each copy's send time from its
abs-send-time."""
import time

import pytest

from enx_media._native import _core
from rtp_util import FANOUT, GCM, Peer, pump_for, vp8

MID, TCC, AST = 1, 3, 4
PACKET = 1100


def key_frame(first_seq, ssrc=0xA1, packets=40, ts=90000):
    """A VP8 key frame of `packets` packets of PACKET bytes, as a publisher sends it: back to back."""
    return [_core.write_rtp(payload_type=96, sequence_number=(first_seq + i) & 0xFFFF, timestamp=ts, ssrc=ssrc,
                            payload=vp8(bytes([i]) * PACKET, key=i == 0), marker=int(i == packets - 1))
            for i in range(packets)]


def opus(seq, ssrc=0xA2):
    return _core.write_rtp(payload_type=111, sequence_number=seq, timestamp=960 * seq, ssrc=ssrc,
                           payload=b"\xfc" + b"\x01" * 80)


def subscribe(worker, producer, out_ssrc, ext_ids=None, mid="0", peer=None):
    peer = peer or Peer(worker, GCM)
    consumer = worker.create_consumer(peer.transport, producer, out_ssrc, 96, 90000,
                                      ext_ids=ext_ids or {"mid": MID, "abs_send_time": AST}, mid=mid)
    return peer, consumer


def limit(peer, bps, ssrc):
    """The subscriber's REMB falls to bps (a first REMB is its baseline, a fall is the signal): its estimate,
    and with it the pacing rate (1.5x), follows."""
    peer.send_rtcp(_core.write_remb(0x51, 2 * bps, [ssrc]))
    peer.send_rtcp(_core.write_remb(0x51, bps, [ssrc]))


def send_times(packets):
    """Seconds after the first copy each copy was sent, from abs-send-time (6.18 fixed point, 64 s wrap)."""
    ast = [int.from_bytes(_core.parse_rtp(p)["extensions"][AST], "big") for p in packets]
    return [((a - ast[0]) % (1 << 24)) / (1 << 18) for a in ast]


def worst_window(times, sizes, window):
    """The most bytes sent within any `window` seconds."""
    worst, j, acc = 0, 0, 0
    for i, t in enumerate(times):
        acc += sizes[i]
        while times[j] < t - window:
            acc -= sizes[j]
            j += 1
        worst = max(worst, acc)
    return worst


def warm(worker, pub, peers, seq=0):
    """One packet through to every subscriber, so that each has sent (and its REMB names a live SSRC)."""
    pump = pump_for(worker)
    pub.send_rtp(key_frame(seq, packets=1)[0])
    for p in peers:
        assert len(p.recv_all(1, pump)) == 1
    return seq + 1


def check_paced(peer, got, frame, worker_rate_bps):
    """All of the frame, in order and intact, spread at the pacing rate: no window of 20 ms carries more
    than the bucket (20 ms of the rate) plus the rate for the window plus one packet."""
    parsed = [_core.parse_rtp(p) for p in got]
    seqs = [p["sequence_number"] for p in parsed]
    assert seqs == list(range(seqs[0], seqs[0] + len(frame)))
    assert [p["payload"] for p in parsed] == [_core.parse_rtp(f)["payload"] for f in frame]
    times = send_times(got)
    rate = worker_rate_bps / 8
    burst = max(rate * 0.02, 3000)
    total = sum(len(p) for p in got)
    assert times[-1] >= 0.6 * (total - burst) / rate, (times[-1], total, rate)
    assert times[-1] <= 2.0 * total / rate + 0.1
    assert worst_window(times, [len(p) for p in got], 0.02) <= burst + rate * 0.02 + 1500


def test_a_key_frame_leaves_at_the_pacing_rate_to_a_limited_subscriber_and_at_once_to_one_without_feedback(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    slow, _ = subscribe(worker, producer, 0xB1)
    fast, _ = subscribe(worker, producer, 0xB2)
    seq = warm(worker, pub, [slow, fast])
    limit(slow, 600_000, 0xB1)
    pump()
    frame = key_frame(seq)
    for p in frame:
        pub.send_rtp(p)
    got_slow = slow.recv_all(len(frame), pump, deadline=3.0)
    got_fast = fast.recv_all(len(frame), pump)
    pacer = slow.transport.stats["pacer"]
    assert pacer["active"] and pacer["rate_bps"] == pytest.approx(900_000, rel=0.01)
    check_paced(slow, got_slow, frame, pacer["rate_bps"])
    assert pacer["held"] >= 30 and pacer["sent"] == pacer["held"] and pacer["queued"] == 0
    assert pacer["overflow"] == 0 and pacer["expired"] == 0 and pacer["delay_max_ms"] > 200
    assert len(got_fast) == len(frame) and send_times(got_fast)[-1] < 0.02, "no feedback: not held"
    assert not fast.transport.stats["pacer"]["active"]


@FANOUT
def test_a_key_frame_to_100_limited_subscribers_is_paced_for_each_and_reaches_all(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    subs = [subscribe(worker, producer, 0xB000 + i)[0] for i in range(100)]
    seq = warm(worker, pub, subs)
    for i, s in enumerate(subs):
        limit(s, 600_000, 0xB000 + i)
    pump()
    frame = key_frame(seq)
    t0 = time.monotonic()
    for p in frame:
        pub.send_rtp(p)
    got = [[] for _ in subs]
    while any(len(g) < len(frame) for g in got) and time.monotonic() - t0 < 5.0:
        pump()
        for s, g in zip(subs, got):
            g += [s.open(d) for d in s.take()]
    for s, g in zip(subs, got):
        check_paced(s, g, frame, s.transport.stats["pacer"]["rate_bps"])
    assert time.monotonic() - t0 < 3.0, "100 queues drain side by side, not one after another"


def test_audio_is_not_held_behind_the_video_the_pacer_holds(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    video = worker.create_producer(pub.transport, 0xA1, "vp8")
    audio = worker.create_producer(pub.transport, 0xA2, "opus")
    sub, _ = subscribe(worker, video, 0xB1)
    worker.create_consumer(sub.transport, audio, 0xB2, 111, 48000, ext_ids={"mid": MID}, mid="1")
    seq = warm(worker, pub, [sub])
    limit(sub, 600_000, 0xB1)
    pump()
    for p in key_frame(seq):
        pub.send_rtp(p)
    pump()
    pub.send_rtp(opus(1))
    got = sub.recv_all(41, pump, deadline=3.0)
    ssrcs = [_core.parse_rtp(p)["ssrc"] for p in got]
    assert sorted(ssrcs) == [0xB1] * 40 + [0xB2]
    assert ssrcs.index(0xB2) < 30, "the audio packet went out while most of the key frame waited"


def test_paced_copies_carry_their_send_time_so_the_estimator_sees_no_queue(worker):
    """transport-cc: the publisher sends more than the pacing rate (a queue grows in the pacer for 1.5 s) on
    a link without a queue of its own; numbered when they go out, the copies' send times match their
    arrivals and the delay-based detector stays normal (numbered when queued, the pacer's growing delay
    would read as a queue on the link: over-use)."""
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    sub, _ = subscribe(worker, producer, 0xB1, ext_ids={"mid": MID, "transport_cc": TCC})
    seq = warm(worker, pub, [sub])
    sub.send_rtcp(_core.build_transport_feedback([(0, int(time.monotonic() * 1e6))], 0x51, 0xB1)[0])
    pump()
    arrivals, last_fb, seen = [], time.monotonic(), []
    t0, pps = time.monotonic(), 270         # ~2.4 Mbit/s into a pacer of 1.5 x 1.2 Mbit/s
    while time.monotonic() - t0 < 1.5:
        pub.send_rtp(key_frame(seq, packets=1, ts=3000 * seq)[0])
        seq += 1
        pump()
        for d in sub.take():
            n = int.from_bytes(_core.parse_rtp(sub.open(d))["extensions"][TCC], "big")
            arrivals.append((n, int(time.monotonic() * 1e6)))
            seen.append(n)
        if time.monotonic() - last_fb >= 0.05 and arrivals:
            for fb in _core.build_transport_feedback(arrivals, 0x51, 0xB1):
                sub.send_rtcp(fb)
            arrivals, last_fb = arrivals[-1:], time.monotonic()
        time.sleep(max(0.0, t0 + (seq - 1) / pps - time.monotonic()))
    assert seen == sorted(seen), "transport-wide seqs in the order the copies went out"
    b = sub.transport.stats["bwe"]
    pacer = sub.transport.stats["pacer"]
    assert pacer["held"] > 100 and pacer["delay_max_ms"] > 100, ("the pacer did hold a growing queue", pacer)
    assert b["feedback"] >= 20 and b["overuses"] == 0 and b["decreases"] == 0, b


def test_held_copies_of_a_consumer_that_closes_are_dropped_and_of_one_that_switches_are_sent_first(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    other = worker.create_producer(pub.transport, 0xA3, "vp8")
    sub, closing = subscribe(worker, producer, 0xB1)
    _, switching = subscribe(worker, producer, 0xB2, mid="1", peer=sub)
    seq = warm(worker, pub, [sub])
    sub.recv_all(1, pump)
    limit(sub, 300_000, 0xB1)
    pump()
    for p in key_frame(seq):
        pub.send_rtp(p)
    pump()
    assert sub.transport.stats["pacer"]["queued"] > 40, "both consumers' copies wait"
    worker.close_consumer(closing)
    worker.switch_producer(switching, other)      # its held copies are the old producer's: out now
    got = [_core.parse_rtp(p) for p in sub.recv_all(200, pump, deadline=0.2)]   # sent at once: no refill
    assert sub.transport.stats["pacer"]["queued"] == 0     # nothing left in the queue of either
    mine = [p["sequence_number"] for p in got if p["ssrc"] == 0xB2]
    assert len(mine) == 40 and mine == list(range(mine[0], mine[0] + 40))
    assert sum(p["ssrc"] == 0xB1 for p in got) < 40, "the closed consumer's held copies were not sent"
    # the switched consumer continues from the other producer, after what it was sent, at once: the copies
    # the switch released are not charged to the new stream (they would hold its key frame ~0.8 s here)
    sent = time.monotonic()
    for p in key_frame(0, ssrc=0xA3, packets=4):
        pub.send_rtp(p)
    first = sub.recv_all(1, pump)
    waited = time.monotonic() - sent
    got = [_core.parse_rtp(d) for d in first + sub.recv_all(3, pump)]
    assert [p["ssrc"] for p in got] == [0xB2] * 4 and got[0]["sequence_number"] == (mine[-1] + 1) & 0xFFFF
    assert waited < 0.15, waited
