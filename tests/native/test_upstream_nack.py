"""Upstream NACK (node -> publisher, RFC 4585 §6.2.1) on real sockets (127.0.0.1): the worker names the
seqs a publisher's stream skipped, forwards them when they come late, gives up after ~1 s with a PLI."""
import time

import pytest
from aiortc.rtp import RtcpPacket, RtcpPsfbPacket, RtcpRtpfbPacket

from enx_media._native import _core
from rtp_util import CM, FANOUT, GCM, Peer, pair, pump_for, rtp, video

WORKER_RTCP_SSRC = 0x454E5801


BODY = b"\x22" * 300


def feedback(peer, w, until, deadline=2.0):
    """Decrypted RTCP packets (aiortc's parser) reaching the publisher until until(packets) holds."""
    return peer.recv_until(pump_for(w), until, deadline, parse=RtcpPacket.parse)


def nacks(pkts, media):
    out = [p for p in pkts if isinstance(p, RtcpRtpfbPacket) and p.fmt == 1]
    assert all(p.ssrc == WORKER_RTCP_SSRC and p.media_ssrc == media for p in out)
    for p in out:
        p.lost = [x & 0xFFFF for x in p.lost]      # aiortc adds PID + bit without the 16-bit wrap
    return out


@FANOUT
@pytest.mark.parametrize("spec", [GCM, CM], ids=["gcm", "cm"])
def test_gap_is_nacked_and_late_packets_are_forwarded_mapped(worker, spec):
    prod = Peer(worker, spec)
    producer = worker.create_producer(prod.transport, 0xAB01, "vp8")
    subs = [Peer(worker, GCM), Peer(worker, CM)]
    for i, s in enumerate(subs):
        worker.create_consumer(s.transport, producer, 0xAB10 + i, 100 + i)
    skipped = {65533, 65534, 2}          # across the 16-bit wrap
    seqs = [(65525 + i) & 0xFFFF for i in range(20)]
    for s in seqs:
        if s not in skipped:
            prod.send_rtp(video(s, 0xAB01, bytes([s & 0xFF]) + BODY))
    got = feedback(prod, worker, lambda g: nacks(g, 0xAB01))
    first = nacks(got, 0xAB01)
    assert first and set(first[0].lost) == skipped          # all of them at once, nothing else
    for s in subs:
        out = s.recv_all(17, pump_for(worker))
        assert [_core.parse_rtp(p)["sequence_number"] for p in out] == [q for q in seqs if q not in skipped]
    # the publisher resends them (same SSRC) late: consumers get them with their mapped seqs
    for s in sorted(skipped, key=lambda q: (q - 65525) & 0xFFFF):
        prod.send_rtp(video(s, 0xAB01, bytes([s & 0xFF]) + BODY))
    prod.send_rtp(video(seqs[-1] + 1, 0xAB01, bytes([0x77]) + BODY))
    for s in subs:
        out = [_core.parse_rtp(p) for p in s.recv_all(4, pump_for(worker))]
        assert [h["sequence_number"] for h in out] == [65533, 65534, 2, seqs[-1] + 1]
        assert [h["payload"][2] for h in out] == [65533 & 0xFF, 65534 & 0xFF, 2, 0x77]
    st = producer.stats
    assert st["nack_recovered"] == 3 and st["nack_gave_up"] == 0 and st["restarts"] == 0
    assert st["nacks_sent"] >= 1 and st["nack_pending"] == 0
    # nothing more is asked for once they arrived
    before = st["nacks_sent"]
    feedback(prod, worker, lambda g: False, deadline=0.2)
    assert producer.stats["nacks_sent"] == before
    for p in subs + [prod]:
        p.close()


@FANOUT
def test_never_resent_gives_up_with_a_pli(worker):
    prod, producer, sub, _ = pair(worker, 0xAC01, 0xAC02, 96)
    for s in range(100, 110):
        if s != 105:
            prod.send_rtp(video(s, 0xAC01, bytes(1) + BODY))
    t0 = time.monotonic()
    got = feedback(prod, worker, lambda g: any(isinstance(p, RtcpPsfbPacket) for p in g), deadline=3.0)
    elapsed = time.monotonic() - t0
    plis = [p for p in got if isinstance(p, RtcpPsfbPacket) and p.fmt == 1]
    assert len(plis) == 1 and plis[0].media_ssrc == 0xAC01 and 0.9 < elapsed < 2.0
    ns = nacks(got, 0xAC01)
    assert len(ns) == 3 and all(p.lost == [105] for p in ns)    # first + 2 retries
    st = producer.stats
    assert st["nack_gave_up"] == 1 and st["nacks_sent"] == 3 and st["nack_recovered"] == 0
    assert st["pli_forwarded"] == 1 and st["nack_pending"] == 0
    prod.close()
    sub.close()


@FANOUT
def test_reordering_within_a_batch_is_not_nacked_and_audio_never(worker):
    prod = Peer(worker, GCM)
    video_p = worker.create_producer(prod.transport, 0xAD01, "vp8")
    audio_p = worker.create_producer(prod.transport, 0xAD02, "opus")
    for s in (1, 3, 2, 4):
        prod.send_rtp(video(s, 0xAD01, bytes(1) + BODY))
    for s in (1, 2, 5, 6):
        prod.send_rtp(rtp(s, 960 * s, 0xAD02, payload=b"\x01" * 40))
    got = feedback(prod, worker, lambda g: False, deadline=0.3)
    assert got == []
    assert video_p.stats["nacks_sent"] == 0 and audio_p.stats["nacks_sent"] == 0
    assert audio_p.stats["nack_pending"] == 0
    prod.close()


@FANOUT
def test_gap_too_large_asks_for_a_key_frame(worker):
    prod = Peer(worker, GCM)
    producer = worker.create_producer(prod.transport, 0xAE01, "h264")
    prod.send_rtp(video(10, 0xAE01, bytes(1) + BODY))
    for _ in range(5):
        worker.poll_once(2)
    prod.send_rtp(video(10 + 1000, 0xAE01, bytes(1) + BODY))        # 999 lost: more than the list holds
    got = feedback(prod, worker, lambda g: any(isinstance(p, RtcpPsfbPacket) for p in g))
    assert any(isinstance(p, RtcpPsfbPacket) and p.media_ssrc == 0xAE01 for p in got)
    assert nacks(got, 0xAE01) == []
    st = producer.stats
    assert st["nack_gave_up"] == 999 and st["nack_pending"] == 0 and st["restarts"] == 0
    prod.close()


def test_nack_packing_matches_write_nack(worker):
    """The native PID+BLP packing (seen through a worker) is byte for byte the Python writer's for the
    same losses (a batch boundary may split them over two NACKs)."""
    prod = Peer(worker, GCM)
    worker.create_producer(prod.transport, 0xAF01, "vp8")
    lost = {3, 4, 19, 20, 21, 40, 56, 57, 100}
    for s in range(1, 102):
        if s not in lost:
            prod.send_rtp(video(s, 0xAF01, bytes(1) + BODY))

    def named(got):
        return {q for _, p in got for q in p.get("lost", ())}

    raw = prod.recv_until(pump_for(worker), lambda got: named(got) == lost,
                          parse=lambda d: [(d, _core.parse_rtcp(d)[0])])
    assert all(p["type"] == "nack" and p["media_ssrc"] == 0xAF01 for _, p in raw)
    assert named(raw) == lost
    for d, p in raw:
        assert set(p["lost"]) <= lost
        assert d == _core.write_nack(WORKER_RTCP_SSRC, 0xAF01, p["lost"])
    prod.close()
