"""Downlink bandwidth estimation in the core (ext/bwe.pxi) on real sockets (127.0.0.1): the transport-wide
seq and abs-send-time each subscriber transport's copies carry, the estimator's answer to transport-cc
feedback (steady, a queue that builds, loss, garbage), to REMB, and probes with padding. The test plays the
subscriber: it receives the copies and writes the feedback a link of a chosen rate would cause."""
import os
import random
import time

from enx_media._native import _core
from rtp_util import GCM, Peer, pump_for, rtp, video, vp8

TCC, AST, MID = 3, 4, 1


def subscriber(worker, publisher_ssrc=0xA1, out_ssrc=0xB1, ext_ids=None):
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, publisher_ssrc, "vp8")
    sub = Peer(worker, GCM)
    consumer = worker.create_consumer(sub.transport, producer, out_ssrc, 96, 90000,
                                      ext_ids=ext_ids if ext_ids is not None else {"mid": MID, "transport_cc": TCC},
                                      mid="0")
    return pub, sub, consumer


def frame(seq, ssrc=0xA1, size=1000, key=False):
    """A one-packet VP8 frame (marker set: the frame ends here) of `size` bytes, 30 fps timestamps."""
    return _core.write_rtp(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=3000 * seq, ssrc=ssrc,
                           payload=vp8(b"\x00" * size, key=key), marker=1)


def tcc_seq(packet):
    return int.from_bytes(_core.parse_rtp(packet)["extensions"][TCC], "big")


class Link:
    """What a subscriber behind a link of `rate_bps` sees: a packet arrives when the link has carried the
    ones before it (a queue that grows once the sender sends more than the rate); `lose` is the share of
    packets that never arrive."""

    def __init__(self, rate_bps=None, lose=0.0):
        self.rate, self.lose, self.free_at = rate_bps, lose, 0.0
        self.rng = random.Random(7)

    def arrive(self, size, now_us):
        if self.rng.random() < self.lose:
            return None
        if self.rate is None:
            return now_us
        self.free_at = max(self.free_at, now_us) + size * 8 * 1e6 / self.rate
        return int(self.free_at)


def run(worker, pub, sub, link, seconds, pps=200, start_seq=0, size=1000):
    """The publisher sends pps packets/s of `size` for `seconds`; the subscriber reports their arrivals on
    `link` every 50 ms. Returns (next publisher seq, received copies)."""
    pump = pump_for(worker)
    seq, got, pending, last_fb, reported = start_seq, [], [], time.monotonic(), None
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        pub.send_rtp(frame(seq, size=size, key=seq == start_seq))
        seq += 1
        pump()
        for d in sub.take():
            p = sub.open(d)
            got.append(p)
            at = link.arrive(len(d), int(time.monotonic() * 1e6))
            if at is not None:
                pending.append((tcc_seq(p), at))
        if time.monotonic() - last_fb >= 0.05 and pending:
            # each feedback starts at the last packet the one before reported (reported again, counted
            # once), so that a loss between two feedbacks is reported too, as a browser's ring does
            pending.sort(key=lambda x: x[1])
            for fb in _core.build_transport_feedback(([reported] if reported else []) + pending, 0x51, 0xB1):
                sub.send_rtcp(fb)
            reported = max(pending, key=lambda x: (x[0] - pending[0][0]) & 0xFFFF)
            pending, last_fb = [], time.monotonic()
        time.sleep(max(0.0, t0 + (seq - start_seq) / pps - time.monotonic()))
    pump()
    return seq, got


def bwe(transport):
    return transport.stats["bwe"]


def test_copies_carry_one_transport_wide_seq_per_subscriber_transport(worker):
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker)
    producer2 = worker.create_producer(pub.transport, 0xA2, "vp8")
    worker.create_consumer(sub.transport, producer2, 0xB2, 96, 90000, ext_ids={"mid": MID, "transport_cc": TCC},
                           mid="1")
    for i in range(10):
        pub.send_rtp(video(i, 0xA1 if i % 2 == 0 else 0xA2))
    got = sub.recv_all(10, pump)
    seqs = [tcc_seq(p) for p in got]
    assert sorted(seqs) == list(range(10)), "both consumers number one transport-wide sequence"
    assert bwe(sub.transport)["transport_cc"] is True


def test_receivers_without_transport_cc_get_abs_send_time(worker):
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker, ext_ids={"mid": MID, "abs_send_time": AST})
    pub.send_rtp(video(0, 0xA1))
    [p] = sub.recv_all(1, pump)
    ext = _core.parse_rtp(p)["extensions"]
    assert TCC not in ext
    ast = int.from_bytes(ext[AST], "big")
    now = int(time.monotonic() * (1 << 18)) & 0xFFFFFF
    assert min((now - ast) % (1 << 24), (ast - now) % (1 << 24)) < (1 << 18) // 10, "send time within 100 ms"
    assert bwe(sub.transport)["transport_cc"] is False


def test_steady_feedback_keeps_the_estimate_near_what_gets_through(worker):
    pub, sub, _ = subscriber(worker)
    run(worker, pub, sub, Link(), 2.0)
    b = bwe(sub.transport)
    assert b["feedback"] >= 20 and b["feedback_bad"] == 0
    assert 1.2e6 < b["acked_bps"] < 2.2e6            # 200 packets/s of ~1040 bytes
    assert b["decreases"] == 0 and not b["limited"]
    assert b["estimate_bps"] <= 1.5 * b["acked_bps"] + 10000 + 1200000   # grows only as far as acked allows


def test_a_queue_that_builds_is_over_use_and_the_estimate_drops_below_the_link(worker):
    pub, sub, _ = subscriber(worker)
    seq, _ = run(worker, pub, sub, Link(), 1.0)
    before = bwe(sub.transport)["estimate_bps"]
    run(worker, pub, sub, Link(rate_bps=800_000), 2.0, start_seq=seq)    # we send ~1.7 Mbit/s into 800 kbit/s
    b = bwe(sub.transport)
    assert b["overuses"] >= 1 and b["limited"]
    assert b["estimate_bps"] < before
    assert b["estimate_bps"] <= 800_000 * 1.1


def test_loss_in_the_feedback_lowers_the_estimate(worker):
    pub, sub, _ = subscriber(worker)
    run(worker, pub, sub, Link(lose=0.3), 1.5)
    b = bwe(sub.transport)
    assert b["loss"] > 0.05 and b["decreases"] >= 1   # the last window's share (20+ packets): noisy
    assert b["estimate_bps"] < 1_200_000


def test_garbage_feedback_is_counted_and_changes_nothing(worker):
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker)
    pub.send_rtp(video(0, 0xA1))
    sub.recv_all(1, pump)
    rng = random.Random(3)
    header = bytes([0x8F, 205])
    for _ in range(300):
        body = (0x51).to_bytes(4, "big") + (0xB1).to_bytes(4, "big") + os.urandom(rng.randrange(0, 60))
        body += b"\x00" * (-len(body) % 4)
        sub.send_rtcp(header + (len(body) // 4).to_bytes(2, "big") + body)
        if rng.random() < 0.2:
            pump()
    pump()
    b = bwe(sub.transport)
    assert b["feedback_bad"] > 0
    assert b["estimate_bps"] == 1_200_000 and not b["limited"], "nothing acknowledged, nothing learned"
    # the worker still forwards
    pub.send_rtp(video(1, 0xA1))
    assert len(sub.recv_all(1, pump)) == 1


def test_a_falling_remb_is_followed_down_a_rising_one_is_not_followed_up(worker):
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker, ext_ids={"mid": MID, "abs_send_time": AST})
    pub.send_rtp(video(0, 0xA1))
    sub.recv_all(1, pump)
    for bitrate in (900_000, 5_000_000, 8_000_000):
        sub.send_rtcp(_core.write_remb(0x51, bitrate, [0xB1]))
        pump()
    b = bwe(sub.transport)
    assert b["estimate_bps"] == 1_200_000 and b["rembs"] == 3
    events = []
    worker.on_event = events.append
    sub.send_rtcp(_core.write_remb(0x51, 600_000, [0xB1]))
    pump()
    b = bwe(sub.transport)
    assert b["limited"] and abs(b["estimate_bps"] - 600_000) < 5000
    assert [(e.kind, e.transport_id) for e in events] == [("bandwidth_down", sub.transport.id)]


def test_a_remb_that_names_the_video_only_leaves_room_for_the_audio_it_does_not_cover(worker):
    """aiortc's REMB covers its video stream alone: when it falls, the estimate is the REMB plus what the
    transport sends on the SSRCs the REMB does not name; a REMB naming all of them is the estimate itself."""
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker, ext_ids={"mid": MID, "abs_send_time": AST})
    mic = worker.create_producer(pub.transport, 0xA2, "opus")
    voice = worker.create_consumer(sub.transport, mic, 0xB2, 111, 48000, ext_ids={"mid": MID}, mid="1")
    pub.send_rtp(video(0, 0xA1))
    sub.recv_all(1, pump)
    sub.send_rtcp(_core.write_remb(0x51, 900_000, [0xB1]))             # the baseline
    pump()
    start, sent = time.monotonic(), voice.stats["bytes_out"]
    for seq in range(50):
        pub.send_rtp(rtp(seq, 960 * seq, 0xA2, payload=b"\x55" * 400, pt=111))
        pump()
        time.sleep(0.01)
    sub.recv_all(50, pump)
    audio_bps = (voice.stats["bytes_out"] - sent) * 8 / (time.monotonic() - start)
    sub.send_rtcp(_core.write_remb(0x51, 300_000, [0xB1]))
    pump()
    b = bwe(sub.transport)
    assert b["limited"] and 300_000 + 0.7 * audio_bps < b["estimate_bps"] < 300_000 + 1.3 * audio_bps, (b, audio_bps)
    time.sleep(0.35)                  # one decrease per 300 ms
    sub.send_rtcp(_core.write_remb(0x51, 200_000, [0xB1, 0xB2]))
    pump()
    assert abs(bwe(sub.transport)["estimate_bps"] - 200_000) < 5000


def test_a_probe_pads_between_frames_and_raises_the_estimate_to_what_got_through(worker):
    pump = pump_for(worker)
    pub, sub, consumer = subscriber(worker)
    seq, got = run(worker, pub, sub, Link(), 0.5, pps=100)
    worker.probe(sub.transport, 4_000_000, 400)
    seq, more = run(worker, pub, sub, Link(), 1.2, pps=100, start_seq=seq)
    got += more
    b = bwe(sub.transport)
    assert b["padding_packets"] > 50 and not b["probing"]
    assert b["probes_ok"] == 1, b
    assert b["estimate_bps"] >= 3_200_000
    parsed = [_core.parse_rtp(p) for p in got]
    pads = [p for p in parsed if p["padding"] and not p["payload"]]
    assert pads and all(p["ssrc"] == 0xB1 and not p["marker"] for p in pads)
    out = [p["sequence_number"] for p in parsed]
    assert out == list(range(out[0], out[0] + len(out))), "media and padding share one gapless numbering"
    # a NACK for a lost padding packet: nothing to resend, no key frame asked for
    sub.send_rtcp(_core.write_nack(0x51, 0xB1, [pads[-1]["sequence_number"]]))   # a recent one
    pump()
    assert consumer.stats["drops"].get("nack_padding") == 1 and consumer.stats["retransmits"] == 0
    assert consumer.stats["unrepairable"] == 0
    # padding follows a frame's end: every padding packet comes after a marker packet or another padding
    for prev, p in zip(parsed, parsed[1:]):
        if p in pads:
            assert prev["marker"] or prev in pads
            assert p["timestamp"] == prev["timestamp"]
    del consumer


def test_a_probe_pads_on_a_paused_video_when_it_is_the_only_one(worker):
    """A subscriber whose only video is paused for bandwidth gets it back only through a probe: the padding
    goes on the paused consumer (no media of it)."""
    pub, sub, consumer = subscriber(worker)
    seq, _ = run(worker, pub, sub, Link(), 0.5, pps=100)
    consumer.pause()
    worker.probe(sub.transport, 2_000_000, 400)
    seq, got = run(worker, pub, sub, Link(), 1.0, pps=100, start_seq=seq)
    parsed = [_core.parse_rtp(p) for p in got]
    assert parsed and all(p["padding"] and not p["payload"] for p in parsed), "media of a paused consumer"
    assert bwe(sub.transport)["probes_ok"] == 1
    del consumer


def test_a_probe_into_a_link_that_cannot_carry_it_fails(worker):
    pub, sub, _ = subscriber(worker)
    seq, _ = run(worker, pub, sub, Link(rate_bps=1_500_000), 0.5, pps=100)
    worker.probe(sub.transport, 6_000_000, 400)
    run(worker, pub, sub, Link(rate_bps=1_500_000), 1.2, pps=100, start_seq=seq)
    b = bwe(sub.transport)
    assert b["probes_failed"] == 1 and b["probes_ok"] == 0
    assert b["estimate_bps"] < 3_000_000


def test_a_remb_probe_fails_when_a_receiver_report_shows_loss(worker):
    """A REMB receiver whose REMB does not fall, but whose receiver report says 8 % were lost while the probe
    ran: the probe filled a queue that dropped its tail, so the estimate stays where it was."""
    pump = pump_for(worker)
    pub, sub, _ = subscriber(worker, ext_ids={"mid": MID, "abs_send_time": AST})
    seq = 0

    def send_for(seconds):
        nonlocal seq
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pub.send_rtp(frame(seq, key=seq == 0))
            seq += 1
            pump()
            sub.take()
            time.sleep(0.01)

    send_for(0.2)
    sub.send_rtcp(_core.write_remb(0x51, 1_500_000, [0xB1]))
    worker.probe(sub.transport, 3_000_000, 400)
    send_for(0.3)
    sub.send_rtcp(_core.write_remb(0x51, 1_500_000, [0xB1]))           # not falling: REMB alone says ok
    sub.send_rtcp(_core.write_rr(0x51, [{"ssrc": 0xB1, "fraction_lost": 20, "highest_seq": seq}]))
    send_for(1.4)
    b = bwe(sub.transport)
    assert b["probes_failed"] == 1 and b["probes_ok"] == 0, b
    assert b["estimate_bps"] == 1_200_000
