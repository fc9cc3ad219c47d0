"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
the native builder checked against a parser written here from the draft's text, then a worker on real
sockets (127.0.0.1) reporting what a publisher sent."""
import random
import time

import pytest

from enx_media._native import _core
from rtp_util import CM, GCM, PLAIN, Peer, pair, pump_for, rtp

WORKER_RTCP_SSRC = 0x454E5801


def parse_twcc(pkt):
    """RTPFB FMT=15 per the draft §3.1, independent of the native parser.

    Returns dict(base, count, ref, fbc, sender, media, statuses, times, chunks) where times maps each
    received 16-bit seq to its arrival in µs (reference time * 64 ms + running sum of deltas)."""
    assert pkt[0] >> 6 == 2 and pkt[0] & 0x1F == 15 and pkt[1] == 205
    assert (int.from_bytes(pkt[2:4], "big") + 1) * 4 == len(pkt)
    end = len(pkt) - (pkt[-1] if pkt[0] & 0x20 else 0)
    sender, media = int.from_bytes(pkt[4:8], "big"), int.from_bytes(pkt[8:12], "big")
    base, count = int.from_bytes(pkt[12:14], "big"), int.from_bytes(pkt[14:16], "big")
    ref = int.from_bytes(pkt[16:19], "big", signed=True)
    fbc = pkt[19]
    pos, statuses, chunks = 20, [], []
    while len(statuses) < count:
        chunk = int.from_bytes(pkt[pos:pos + 2], "big")
        pos += 2
        if chunk >> 15 == 0:                       # run length chunk: T=0, S(2), run length(13)
            chunks.append("run")
            statuses += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif (chunk >> 14) & 1 == 0:               # status vector, S=0: 14 x 1 bit
            chunks.append("vec1")
            statuses += [(chunk >> (13 - i)) & 1 for i in range(14)]
        else:                                      # status vector, S=1: 7 x 2 bits
            chunks.append("vec2")
            statuses += [(chunk >> (12 - 2 * i)) & 3 for i in range(7)]
    statuses = statuses[:count]
    times, t = {}, ref * 64000
    for i, s in enumerate(statuses):
        if s == 0:
            continue
        if s == 1:
            d = pkt[pos]
            pos += 1
        elif s == 2:
            d = int.from_bytes(pkt[pos:pos + 2], "big", signed=True)
            pos += 2
        else:
            raise AssertionError("reserved status symbol")
        t += d * 250
        times[(base + i) & 0xFFFF] = t
    assert pos <= end, "deltas run past the packet"
    return dict(base=base, count=count, ref=ref, fbc=fbc, sender=sender, media=media,
                statuses=statuses, times=times, chunks=chunks)


def check(packets, arrivals, fb_start=0):
    """Every feedback packet parses, covers consecutive seqs, and every arrival is reported once within
    125 µs (the rounding of one 250 µs delta); the native parser agrees with ours."""
    parsed = [parse_twcc(p) for p in packets]
    seen = {}
    next_base = None
    for k, (raw, f) in enumerate(zip(packets, parsed)):
        assert len(raw) <= 1200 and f["fbc"] == (fb_start + k) & 0xFF and f["count"] > 0
        if next_base is not None:
            assert f["base"] == next_base
        next_base = (f["base"] + f["count"]) & 0xFFFF
        for i, s in enumerate(f["statuses"]):
            seq = (f["base"] + i) & 0xFFFF
            assert (s != 0) == (seq in arrivals), (seq, s)
        for seq, t in f["times"].items():
            assert seq not in seen
            seen[seq] = t
        native = _core.parse_rtcp(raw)[0]
        assert native["type"] == "transport_cc" and native["statuses"] == f["statuses"]
        assert native["base_seq"] == f["base"] and native["fb_pkt_count"] == f["fbc"]
        ticks = []
        t = f["ref"] * 64000
        for s, d in zip([s for s in f["statuses"] if s], native["deltas"]):
            assert (s == 1) == (0 <= d <= 255)
            ticks.append(d)
        assert [f["times"][q] for q in sorted(f["times"], key=lambda q: (q - f["base"]) & 0xFFFF)] == \
            [t + 250 * sum(ticks[:i + 1]) for i in range(len(ticks))]
    assert set(seen) == set(arrivals)
    for seq, t in seen.items():
        assert abs(t - arrivals[seq]) <= 125, (seq, t, arrivals[seq])
    return parsed


def build(pattern, **kw):
    """pattern: [(seq, arrival_us)] in arrival order."""
    pkts = _core.build_transport_feedback(pattern, **kw)
    return pkts, check(pkts, {s & 0xFFFF: a for s, a in pattern}, kw.get("fb_count", 0))


T0 = 5_000_000_000        # µs, like CLOCK_MONOTONIC on a machine up for a while


def test_in_order_small_deltas():
    pkts, f = build([(i, T0 + 1000 * i) for i in range(30)], sender_ssrc=7, media_ssrc=9)
    assert len(pkts) == 1 and f[0]["count"] == 30 and f[0]["sender"] == 7 and f[0]["media"] == 9
    assert all(s == 1 for s in f[0]["statuses"])
    assert f[0]["ref"] == T0 // 64000 and f[0]["chunks"] == ["run"]


def test_gaps_are_not_received():
    seqs = [0, 1, 2, 5, 6, 20, 21, 23, 40]
    pkts, f = build([(s, T0 + 700 * i) for i, s in enumerate(seqs)])
    assert len(pkts) == 1 and f[0]["base"] == 0 and f[0]["count"] == 41
    assert [i for i, s in enumerate(f[0]["statuses"]) if s] == seqs


def test_reordering_gives_negative_deltas():
    order = [0, 2, 1, 3, 5, 4, 6]
    pkts, f = build([(s, T0 + 500 * i) for i, s in enumerate(order)])
    st = f[0]["statuses"]
    assert st[2] == 2 and st[5] == 2          # arrived before the seq below it: negative delta
    assert "vec2" in f[0]["chunks"]


def test_sequence_wrap():
    seqs = list(range(65530, 65536)) + list(range(0, 6))
    pkts, f = build([(s, T0 + 2000 * i) for i, s in enumerate(seqs)])
    assert len(pkts) == 1 and f[0]["base"] == 65530 and f[0]["count"] == 12


def test_large_time_gap_splits():
    # 10 s does not fit a 16-bit delta of 250 µs (8.19 s): a new packet with its own reference time
    pattern = [(100, T0), (101, T0 + 1000), (102, T0 + 10_000_000), (103, T0 + 10_001_000)]
    pkts, f = build(pattern, fb_count=255)
    assert len(pkts) == 2 and [x["fbc"] for x in f] == [255, 0]
    assert f[0]["count"] == 2 and f[1]["base"] == 102 and f[1]["ref"] != f[0]["ref"]
    # 5 s fits in one large delta
    pkts, f = build([(1, T0), (2, T0 + 5_000_000)])
    assert len(pkts) == 1 and f[0]["statuses"] == [1, 2]


def test_long_loss_run_and_size_split():
    pkts, f = build([(0, T0), (900, T0 + 3000)])
    assert len(pkts) == 1 and f[0]["count"] == 901 and "run" in f[0]["chunks"]
    # 1000 packets with 2-byte deltas need more than 1200 bytes: split, all kept under the limit
    order = []
    for i in range(0, 1000, 2):
        order += [i + 1, i]
    pkts, f = build([(s, T0 + 300 * k) for k, s in enumerate(order)])
    assert len(pkts) >= 2 and all(len(p) <= 1200 for p in pkts)
    assert sum(x["count"] for x in f) == 1000


def test_ring_full_reports_then_records_on():
    pattern = [((50000 + i) & 0xFFFF, T0 + 400 * i) for i in range(3000)]     # wraps, 3 rings' worth
    pkts, f = build(pattern)
    assert sum(x["count"] for x in f) == 3000


@pytest.mark.parametrize("seed", range(6))
def test_random_patterns(seed):
    rnd = random.Random(seed)
    start = rnd.randrange(65536)
    seqs = [start + i for i in range(rnd.randrange(1, 900)) if rnd.random() > 0.2]
    if not seqs:
        seqs = [start]
    for _ in range(len(seqs) // 5):                 # local reordering
        i = rnd.randrange(len(seqs))
        j = min(len(seqs) - 1, i + rnd.randrange(1, 4))
        seqs[i], seqs[j] = seqs[j], seqs[i]
    t, pattern = T0 + rnd.randrange(64000), []
    for s in seqs:
        t += rnd.choice([0, 3, 250, 1000, 20000, 70000, rnd.randrange(0, 3_000_000)])
        pattern.append((s & 0xFFFF, t))
    pkts, f = build(pattern, max_size=rnd.choice([200, 600, 1200]))
    assert all(x["count"] for x in f)


def test_max_size_is_kept():
    order = []
    for i in range(0, 600, 2):
        order += [i + 1, i]
    pkts, f = build([(s, T0 + 300 * k) for k, s in enumerate(order)], max_size=128)
    assert all(len(p) <= 128 for p in pkts) and len(pkts) > 5


# ---- the worker on real sockets ----

def twcc_rtp(seq, ts, ssrc, twseq, ext_id=3):
    return rtp(seq, ts, ssrc, payload=b"\x10\x00" + b"\x11" * 200, ext=[(ext_id, (twseq & 0xFFFF).to_bytes(2, "big"))])


def _rtcp_one(d):
    assert (int.from_bytes(d[2:4], "big") + 1) * 4 == len(d)    # one packet, no compound
    return d


@pytest.mark.parametrize("spec", [GCM, CM], ids=["gcm", "cm"])
def test_worker_sends_feedback_srtcp(worker, spec):
    w = worker
    prod, producer, sub, _ = pair(w, 0x7C01, 0x7C02, 96, pub=spec, ext_ids={"transport_cc": 3})
    sent = [i for i in range(65520, 65560) if i not in (65530, 65531, 65540)]
    for k, s in enumerate(sent):
        prod.send_rtp(twcc_rtp(2000 + k, 3000 * k, 0x7C01, s))
    for _ in range(10):
        w.poll_once(5)
    w.native.send_transport_feedback()
    reported = {}

    def done(got):
        for d in got[len(done.seen):]:
            for p in _core.parse_rtcp(d):
                assert p["type"] == "transport_cc"
                f = parse_twcc(_rtcp_one(d))
                assert f["sender"] == WORKER_RTCP_SSRC and f["media"] == 0x7C01
                for i, st in enumerate(f["statuses"]):
                    reported.setdefault((f["base"] + i) & 0xFFFF, st)
        done.seen = list(got)
        return len([1 for v in reported.values() if v]) >= len(sent)
    done.seen = []
    prod.recv_until(pump_for(w), done)
    assert {s & 0xFFFF for s, st in reported.items() if st} == {s & 0xFFFF for s in sent}
    assert all(reported[s & 0xFFFF] == 0 for s in (65530, 65531, 65540))
    st = prod.transport.stats
    assert st["tcc_feedback_sent"] >= 1 and st["tcc_packets_reported"] == len(sent)
    assert producer.stats["packets_in"] == len(sent)
    prod.close()
    sub.close()


@pytest.mark.parametrize("worker", [2], ids=["two_fanout_threads"], indirect=True)
def test_worker_feedback_from_the_drain_every_50ms_plain_and_threads(worker):
    """Without an explicit call: the drain (and run_timers when idle) reports at least every 50 ms;
    with two fan-out threads the draining thread alone builds it."""
    w = worker
    prod = Peer(w, PLAIN, ext_ids={"transport_cc": 5})
    producer = w.create_producer(prod.transport, 0x7D01, "opus")
    subs = [Peer(w, PLAIN) for _ in range(2)]
    for i, s in enumerate(subs):
        w.create_consumer(s.transport, producer, 0x7D10 + i, 111, clock_rate=48000)
    for k in range(40):
        prod.send_rtp(twcc_rtp(k, 960 * k, 0x7D01, 7 + k, ext_id=5))
        w.poll_once(5)
        time.sleep(0.005)
    got = prod.recv_until(pump_for(w), lambda g: sum(parse_twcc(x)["count"] for x in g) >= 40)
    seqs = set()
    for d in got:
        f = parse_twcc(d)
        seqs |= {(f["base"] + i) & 0xFFFF for i, s in enumerate(f["statuses"]) if s}
    assert seqs == set(range(7, 47))
    assert len(got) >= 2                   # spread over > 200 ms: more than one report
    assert prod.transport.stats["tcc_packets_reported"] == 40
    for s in subs:
        assert len(s.recv_all(40, pump_for(w), deadline=1.0)) == 40
        s.close()
    prod.close()


def test_no_feedback_without_the_extension(worker):
    w = worker
    prod = Peer(w, GCM)
    w.create_producer(prod.transport, 0x7E01, "vp8")
    for k in range(5):
        prod.send_rtp(twcc_rtp(k, 3000 * k, 0x7E01, k))
    for _ in range(10):
        w.poll_once(5)
    w.native.send_transport_feedback()
    assert prod.recv_until(pump_for(w), lambda g: False, deadline=0.2) == []
    assert prod.transport.stats["tcc_feedback_sent"] == 0
    prod.close()
