"""Regression tests for the native core review: send-batch overflow, NACK/late-packet numbering (SRTP nonce
reuse), SRTP stream table (size, freeing, creation only after authentication), control calls on closed
entities, NACK amplification, paused retransmissions, thread-mode control calls. 127.0.0.1 only."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from enx_media._native import _core
from rtp_util import recv_all, rtp, udp, video

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests")
GCM = "AEAD_AES_128_GCM"


def pump(w, n=2):
    time.sleep(0.05)
    w.drain(n)


def run_isolated(code, timeout=60):
    """Run code in a fresh interpreter (a memory error must fail the test, not kill pytest); it can import
    the tests' helper modules (rtp_util)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": TESTS})


class Rig:
    """A worker, a plain publish transport and a subscribe transport (plain or SRTP)."""

    def __init__(self, profile="none", **kw):
        self.w = _core.NativeWorker("127.0.0.1", 0, **kw)
        self.pub, self.sub = udp(), udp()
        self.tp = self.w.create_transport("none")
        self.w.bind_transport(self.tp, *self.pub.getsockname())
        if profile == "none":
            self.ts = self.w.create_transport("none")
            self.up = self.down = None
        else:
            k1, s1, k2, s2 = os.urandom(16), os.urandom(12), os.urandom(16), os.urandom(12)
            self.ts = self.w.create_transport(profile, k1, s1, k2, s2)
            self.up = _core.SrtpContext(profile, k1, s1)       # subscriber -> SFU
            self.down = _core.SrtpContext(profile, k2, s2)     # SFU -> subscriber
        self.w.bind_transport(self.ts, *self.sub.getsockname())

    def publish(self, data):
        self.pub.sendto(data, self.w.local_address)

    def feedback(self, rtcp):
        self.sub.sendto(self.up.protect_rtcp(rtcp) if self.up else rtcp, self.w.local_address)

    def video_consumer(self, max_temporal_layer=None):
        """A VP8 producer 0xA and a consumer 0xC of it: (producer, consumer)."""
        p = self.w.create_producer(self.tp, 0xA, "vp8")
        c = self.w.create_consumer(self.ts, p, 0xC, 96)
        if max_temporal_layer is not None:
            c.max_temporal_layer = max_temporal_layer
        return p, c

    def switchable(self):
        """Two opus producers 0xA and 0xB, a consumer 0xC of the first: (pa, pb, consumer)."""
        pa = self.w.create_producer(self.tp, 0xA, "opus")
        pb = self.w.create_producer(self.tp, 0xB, "opus")
        return pa, pb, self.w.create_consumer(self.ts, pa, 0xC, 111)

    def received(self):
        out = []
        for d in recv_all(self.sub):
            p = _core.parse_rtp(self.down.unprotect(d) if self.down else d)
            out.append((p["sequence_number"], p["payload"][4:]))
        return out


# -- 1. send batch overflow -----------------------------------------------------------------------------

@pytest.mark.parametrize("k,threads", [(10, 1), (40, 1), (10, 2)])
def test_send_batch_overflow_same_transport_consumers(k, threads):
    r = run_isolated(f"""
        import time
        from enx_media._native import _core
        from rtp_util import recv_all, rtp, udp
        w = _core.NativeWorker("127.0.0.1", 0, fanout_threads={threads})
        pub, sub = udp(), udp(0.3, rcvbuf=8 << 20)
        tp = w.create_transport("none"); w.bind_transport(tp, *pub.getsockname())
        ts = w.create_transport("none"); w.bind_transport(ts, *sub.getsockname())
        pa = w.create_producer(tp, 0xA, "opus"); pb = w.create_producer(tp, 0xB, "opus")
        w.create_consumer(ts, pa, 0x100, 111)
        for i in range({k}):
            w.create_consumer(ts, pb, 0x200 + i, 111)
        pub.sendto(rtp(1, 960, 0xA, bytes(1200), 111), w.local_address)
        for s in range(63):
            pub.sendto(rtp(100 + s, (100 + s) * 960, 0xB, bytes(1000), 111), w.local_address)
        time.sleep(0.05)
        w.drain(1)
        got = len(recv_all(sub))
        print(w.stats["packets_out"], got)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    sent, got = map(int, r.stdout.split())
    assert sent == 1 + 63 * k and got == sent


# -- 2. NACK and late packets: one output seq, one packet -----------------------------------------------

def test_nack_retransmits_the_packet_sent_under_that_seq():
    g = Rig()
    p, c = g.video_consumer(max_temporal_layer=0)
    for s in range(1, 7):
        g.publish(video(s, 0xA, b"in-seq-%d" % s, tid=(s + 1) % 2, key=False))
    pump(g.w)
    first = g.received()
    assert [t for _, t in first] == [b"in-seq-1", b"in-seq-3", b"in-seq-5"]
    seq1 = first[0][0]
    g.feedback(_core.write_nack(0x55, 0xC, [seq1]))
    pump(g.w)
    assert g.received() == [(seq1, b"in-seq-1")]


def test_nack_retransmission_is_byte_identical_no_nonce_reuse():
    g = Rig(GCM)
    p, c = g.video_consumer(max_temporal_layer=0)
    for s in range(1, 7):
        g.publish(video(s, 0xA, b"secret-payload-%d" % s, tid=(s + 1) % 2, key=False))
    pump(g.w)
    raw = recv_all(g.sub)
    assert len(raw) == 3
    seq1 = _core.parse_rtp(g.down.unprotect(raw[0]))["sequence_number"]
    g.feedback(_core.write_nack(0x55, 0xC, [seq1]))
    pump(g.w)
    assert recv_all(g.sub) == [raw[0]]      # same index, same plaintext: the very same ciphertext


def test_late_packets_get_their_own_number_or_none():
    g = Rig()
    p, c = g.video_consumer(max_temporal_layer=0)
    # 2 missing, 4 dropped by the layer selector, then 2 arrives late, then a duplicate of 3
    for s, tid in [(1, 0), (3, 0), (4, 1), (5, 0), (2, 0), (3, 0)]:
        g.publish(video(s, 0xA, b"in-%d" % s, tid=tid, key=False))
        pump(g.w, 1)
    got = g.received()
    seqs = [s for s, _ in got]
    assert len(set(seqs)) == len(seqs), got                 # no output seq used twice
    by_payload = dict((t, s) for s, t in got)
    assert set(by_payload) == {b"in-1", b"in-2", b"in-3", b"in-5"}
    o1 = by_payload[b"in-1"]
    assert [by_payload[b"in-%d" % i] for i in (2, 3, 5)] == [o1 + 1, o1 + 2, o1 + 3]
    assert p.stats["duplicates"] == 1                      # the duplicate of 3: not passed on again
    assert "late" not in c.stats["drops"]


def test_late_packet_after_switch_gets_no_used_number():
    g = Rig()
    pa, pb, c = g.switchable()
    for s in (1, 2, 3):
        g.publish(rtp(s, 3000 * s, 0xA, b"\0\0\0\0a%d" % s, 111))
        pump(g.w, 1)
    g.w.switch_producer(c, pb)
    for s in (500, 502, 499, 501):
        g.publish(rtp(s, 3000 * s, 0xB, b"\0\0\0\0b%d" % s, 111))
        pump(g.w, 1)
    got = g.received()
    seqs = [s for s, _ in got]
    assert len(set(seqs)) == len(seqs), got
    assert [t for _, t in got] == [b"a1", b"a2", b"a3", b"b500", b"b502", b"b501"]
    assert seqs[3:] == [seqs[2] + 1, seqs[2] + 3, seqs[2] + 2]
    assert c.stats["drops"]["late"] == 1                   # 499: older than the switch


def test_nack_for_numbers_from_before_a_switch_is_not_served():
    g = Rig()
    pa, pb, c = g.switchable()
    for s in (1, 2, 3):
        g.publish(rtp(s, 3000 * s, 0xA, b"\0\0\0\0a%d" % s, 111))
    pump(g.w)
    old = [s for s, _ in g.received()]
    g.w.switch_producer(c, pb)
    for s in (1, 2, 3):            # same input numbers on the new producer
        g.publish(rtp(s, 3000 * s, 0xB, b"\0\0\0\0b%d" % s, 111))
    pump(g.w)
    new = g.received()
    g.feedback(_core.write_nack(0x55, 0xC, old))
    pump(g.w)
    assert g.received() == []
    g.feedback(_core.write_nack(0x55, 0xC, [new[0][0]]))
    pump(g.w)
    assert g.received() == [new[0]]


# -- 3./4. SRTP stream table ----------------------------------------------------------------------------

def test_srtp_context_holds_hundreds_of_streams_and_frees_them():
    g = Rig(GCM)
    p = g.w.create_producer(g.tp, 0xA, "opus")
    cons = [g.w.create_consumer(g.ts, p, 0x2000 + i, 111) for i in range(600)]
    g.publish(rtp(1, 3000, 0xA, b"x" * 50, 111))
    pump(g.w)
    got = recv_all(g.sub)
    assert len(got) == 600
    assert {_core.parse_rtp(g.down.unprotect(d))["ssrc"] for d in got} == {0x2000 + i for i in range(600)}
    assert sum(c.stats["drops"].get("too_many_streams", 0) for c in cons) == 0
    assert g.ts.tx.stats["streams"] == 600
    for c in cons[:500]:
        g.w.close_consumer(c)
    assert g.ts.tx.stats["streams"] == 100
    with pytest.raises(ValueError):          # its SRTP index would restart under the same key
        g.w.create_consumer(g.ts, p, 0x2000, 111)


def test_forged_packets_create_no_srtp_streams():
    key, salt = os.urandom(16), os.urandom(12)
    rx, tx = _core.SrtpContext(GCM, key, salt), _core.SrtpContext(GCM, key, salt)
    for i in range(100):
        with pytest.raises(ValueError):
            rx.unprotect(rtp(1, 3000, 0xdead0000 + i, b"\0" * 40))
        with pytest.raises(ValueError):
            rx.unprotect_rtcp(_core.write_nack(0xbeef0000 + i, 1, [1]) + b"\0" * 20)
    assert rx.stats["streams"] == 0 and rx.stats["auth_fail"] == 200
    rx.unprotect(tx.protect(rtp(5, 15000, 0x1234, b"\0" * 40)))
    rx.unprotect_rtcp(tx.protect_rtcp(_core.write_nack(0x1234, 1, [1])))
    assert rx.stats["streams"] == 1


# -- 5. control calls on closed entities ----------------------------------------------------------------

def test_control_calls_refuse_closed_or_foreign_entities():
    g = Rig()
    p = g.w.create_producer(g.tp, 0xA, "opus")
    p2 = g.w.create_producer(g.tp, 0xB, "opus")
    c = g.w.create_consumer(g.ts, p, 0xC, 111)
    g.w.close_consumer(c)
    g.w.close_consumer(c)                   # twice: nothing
    with pytest.raises(ValueError):
        g.w.switch_producer(c, p2)
    assert p2.stats["consumers"] == 0
    c2 = g.w.create_consumer(g.ts, p, 0xD, 111)
    g.w.close_producer(p2)
    g.w.close_producer(p2)
    with pytest.raises(ValueError):
        g.w.switch_producer(c2, p2)
    with pytest.raises(ValueError):
        g.w.create_consumer(g.ts, p2, 0xE, 111)
    with pytest.raises(ValueError):
        g.w.request_keyframe(p2)
    other = _core.NativeWorker("127.0.0.1", 0)
    op = other.create_producer(other.create_transport("none"), 0xF, "opus")
    with pytest.raises(ValueError):
        g.w.switch_producer(c2, op)
    with pytest.raises(ValueError):
        g.w.create_consumer(g.ts, op, 0x10, 111)
    t = g.w.create_transport("none")
    g.w.close_transport(t)
    g.w.close_transport(t)
    for call in (lambda: g.w.bind_transport(t, "127.0.0.1", 9), lambda: g.w.accept_from(t, "127.0.0.1", 9),
                 lambda: g.w.create_producer(t, 0x11, "opus"), lambda: g.w.create_consumer(t, p, 0x12, 111)):
        with pytest.raises(ValueError):
            call()
    # a producer re-created on the SSRC of a closed one keeps its routing when the old one is closed again
    pa2 = g.w.create_producer(g.tp, 0xB, "opus")
    g.w.close_producer(p2)
    c3 = g.w.create_consumer(g.ts, pa2, 0x13, 111)
    g.publish(rtp(1, 3000, 0xB, b"\0\0\0\0zz", 111))
    pump(g.w)
    assert c3.stats["packets_out"] == 1


# -- 6./7. NACK amplification, paused consumers ---------------------------------------------------------

def _sent_video(g, n, size=1000):
    p, c = g.video_consumer()
    for s in range(1, n + 1):
        g.publish(video(s, 0xA, b"%04d" % s + b"\0" * size, tid=0, key=False))
        if s % 50 == 0:
            pump(g.w, 4)
    pump(g.w, 4)
    got = g.received()
    assert len(got) == n
    return c, got


def test_nack_amplification_is_bounded():
    g = Rig()
    c, got = _sent_video(g, 100)
    base = got[0][0]
    # ~1.2 KB NACK: 300 FCIs, every one naming 17 seqs (mostly the same ones again)
    fcis = b"".join(((base + (i % 100)) & 0xffff).to_bytes(2, "big") + b"\xff\xff" for i in range(300))
    pkt = bytearray(_core.write_nack(0x55, 0xC, [base]))
    nack = bytes(pkt[:12]) + fcis
    nack = bytes([nack[0], nack[1]]) + ((len(nack) // 4) - 1).to_bytes(2, "big") + nack[4:]
    g.feedback(nack)
    g.feedback(nack)            # the same again, drained together: well within 20 ms / RTT
    pump(g.w)
    first = g.received()
    assert len(first) == 100 == len({s for s, _ in first})       # each held seq once, not ~10000 copies
    assert c.stats["retransmits"] == 100
    assert c.stats["drops"]["nack_too_soon"] == 2 * 300 * 17 - 100 - c.stats["drops"]["nack_not_held"]


def test_nack_retransmission_byte_budget():
    g = Rig()
    c, got = _sent_video(g, 400)
    g.feedback(_core.write_nack(0x55, 0xC, [s for s, _ in got]))
    pump(g.w, 8)
    rtx = g.received()
    assert 150 <= len(rtx) <= 220                # 200 kB burst of ~1 kB packets
    assert c.stats["drops"]["nack_budget"] == 400 - len(rtx)


def test_paused_consumer_retransmits_nothing():
    g = Rig()
    c, got = _sent_video(g, 10)
    c.pause()
    g.feedback(_core.write_nack(0x55, 0xC, [s for s, _ in got]))
    pump(g.w)
    assert g.received() == []
    assert c.stats["retransmits"] == 0


# -- 9. thread mode ------------------------------------------------------------------------------------

def test_thread_mode_control_calls_race_with_drain():
    r = run_isolated("""
        import threading, time
        from enx_media.sfu import Worker
        from rtp_util import rtp, udp
        w = Worker("127.0.0.1", 0)
        pub, sub = udp(None), udp(None)
        tp = w.create_transport("none"); w.bind_transport(tp, *pub.getsockname())
        prods = [w.create_producer(tp, 0x100 + i, "opus") for i in range(4)]
        w.start_thread()
        stop = threading.Event()
        def blast():
            s = 0
            while not stop.is_set():
                s += 1
                for i in range(4):
                    pub.sendto(rtp(s, s * 960, 0x100 + i, bytes(300), 111), w.address)
        th = threading.Thread(target=blast, daemon=True); th.start()
        ssrc = 0x10000
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            ts = w.create_transport("none"); w.bind_transport(ts, *sub.getsockname())
            cons = []
            for k in range(40):
                ssrc += 1
                cons.append(w.create_consumer(ts, prods[k % 4], ssrc, 111))
            for k, c in enumerate(cons[:20]):
                w.switch_producer(c, prods[(k + 1) % 4])
            for c in cons[::2]:
                w.close_consumer(c)
            del cons
            w.close_transport(ts)
        stop.set(); th.join()
        w.stop()
        print("ok", w.stats["packets_out"] > 0)
    """, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["ok", "True"]
