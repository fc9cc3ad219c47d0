"""Producers with encodings (simulcast: rid -> SSRC), SSRC learning from mid/rid in the core, a consumer's
current/target encoding, fan-out of a batch that mixes encodings, NACKs across an encoding switch.
Real UDP sockets on 127.0.0.1, SRTP both ways (pylibsrtp on the peers' side)."""
import time

import pytest

from enx_media._native import _core
from enx_media.sfu import Worker
from rtp_util import GCM, Peer, pump_for, rtp, vp8

IDS = {"mid": 1, "rid": 2, "repaired_rid": 3}


def seqs(pkts):
    return [_core.parse_rtp(p)["sequence_number"] for p in pkts]


def payloads(pkts):
    return [_core.parse_rtp(p)["payload"] for p in pkts]


def test_positional_call_is_one_encoding(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0x77, "opus")
    assert p.ssrc == 0x77 and p.mid == ""
    assert [(e["index"], e["rid"], e["ssrc"]) for e in p.encodings] == [(0, "", 0x77)]
    with pytest.raises(ValueError):
        worker.create_producer(pub.transport, 0x78, "vp8", encodings=[("", 0), ("", 0)])   # rid twice
    with pytest.raises(ValueError):
        worker.create_producer(pub.transport, 0, "vp8", encodings=[("q", 0)])              # no mid to learn by
    with pytest.raises(ValueError):
        worker.create_producer(pub.transport, 0, "vp8", mid="v", encodings=[("q", 0x77)])  # SSRC taken
    pub.close()


def test_ssrc_learned_from_mid_rid_in_the_core(worker):
    pub = Peer(worker, GCM, ext_ids=IDS)
    p = worker.create_producer(pub.transport, codec="vp8", mid="v", encodings=[("q", 0), ("h", 0)])
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, p, 0xC1, 96)
    events = []
    worker.on_event = events.append
    # encoding "q": mid/rid on the first packets only (as Chromium does), then plain packets
    for i in range(6):
        ext = [(1, b"v"), (2, b"q")] if i < 3 else None
        pub.send_rtp(rtp(100 + i, 3000 * i, 0xA0, payload=vp8(b"q%d" % i, 0, key=i == 0), ext=ext))
    # another mid: nobody's; a repair stream of "v": not bound either
    pub.send_rtp(rtp(1, 1, 0xEE, ext=[(1, b"x"), (2, b"q")]))
    pub.send_rtp(rtp(1, 1, 0xEF, ext=[(1, b"v"), (3, b"q")]))
    got = sub.recv_all(6, pump_for(worker))
    assert [pl[4:] for pl in payloads(got)] == [b"q%d" % i for i in range(6)]
    assert seqs(got) == list(range(100, 106))
    assert [(e["rid"], e["ssrc"]) for e in p.encodings] == [("q", 0xA0), ("h", 0)]
    for _ in range(5):
        worker.poll_once(2)
    bound = [e for e in events if e.kind == _core.ENCODING_BOUND]
    assert bound == [_core.MediaEvent("encoding_bound", pub.transport.id, p.id, 0xA0, "v", "q")]
    unknown = sorted(e.ssrc for e in events if e.kind == _core.UNKNOWN_SSRC)
    assert unknown == [0xEE, 0xEF]
    assert p.encodings[0]["stats"]["packets_in"] == 6 and p.stats["packets_in"] == 6
    assert c.encoding == 0 and c.target_encoding == 0
    pub.close()
    sub.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_mixing_two_encodings_serves_every_consumer(threads):
    """Consumers of encoding 0 and 1 of one producer, two of them on one subscriber transport: packets of
    both encodings interleaved in ONE receive batch all reach their consumers (grouping is by producer,
    the encoding is decided per packet), also with a fan-out helper thread."""
    worker = Worker("127.0.0.1", 0, fanout_threads=threads)
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, codec="vp8", mid="v", encodings=[("q", 0xA1), ("h", 0xA2)])
    shared, other = Peer(worker, GCM), Peer(worker, GCM)
    c0 = worker.create_consumer(shared.transport, p, 0xC0, 96)
    c1 = worker.create_consumer(shared.transport, p, 0xC1, 97)
    c2 = worker.create_consumer(other.transport, p, 0xC2, 98)
    worker.set_target_encoding(c1, 1)
    worker.set_target_encoding(c2, 1)
    assert (c1.encoding, c1.target_encoding) == (1, 1)       # nothing sent yet: switched at once
    n = 12
    for i in range(n):
        pub.send_rtp(rtp(500 + i, 3000 * i, 0xA1, payload=vp8(b"q%d" % i, 0, key=i == 0)))
        pub.send_rtp(rtp(9000 + i, 7 + 3000 * i, 0xA2, payload=vp8(b"h%d" % i, 0, key=i == 0)))
    time.sleep(0.05)
    before = worker.stats["batches"]
    worker.native.drain(1)
    assert worker.stats["batches"] == before + 1
    got = shared.recv_all(2 * n, lambda: None)
    by_ssrc = {}
    for pkt in got:
        h = _core.parse_rtp(pkt)
        by_ssrc.setdefault(h["ssrc"], []).append((h["sequence_number"], h["payload"][4:]))
    assert by_ssrc[0xC0] == [(500 + i, b"q%d" % i) for i in range(n)]
    assert by_ssrc[0xC1] == [(9000 + i, b"h%d" % i) for i in range(n)]
    got2 = other.recv_all(n, lambda: None)
    assert [pl[4:] for pl in payloads(got2)] == [b"h%d" % i for i in range(n)]
    assert [c.stats["packets_out"] for c in (c0, c1, c2)] == [n, n, n]
    for x in (pub, shared, other):
        x.close()
    worker.stop()


def test_switch_at_target_key_frame_with_continuity_and_nack_from_the_right_history(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, codec="vp8", mid="v", encodings=[("q", 0xB1), ("h", 0xB2)])
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, p, 0xCC, 96)
    pump = pump_for(worker)

    def send(i, key_h=False):
        pub.send_rtp(rtp(100 + i, 1000 + 3000 * i, 0xB1, payload=vp8(b"q%d" % i, 0, key=i == 0)))
        pub.send_rtp(rtp(40000 + i, 555555 + 3000 * i, 0xB2, payload=vp8(b"h%d" % i, 0, key=key_h)))

    for i in range(4):
        send(i)
    got = sub.recv_all(4, pump)
    worker.set_target_encoding(c, 1)
    assert (c.encoding, c.target_encoding) == (0, 1)
    pli = pub.recv_all(1, pump, rtcp=True)
    assert [(x["type"], x["media_ssrc"]) for x in _core.parse_rtcp(pli[0])] == [("pli", 0xB2)]
    for i in range(4, 6):                  # no key frame of "h" yet: still "q"
        send(i)
    got += sub.recv_all(2, pump)
    send(6, key_h=True)                    # q6 then h6, the key frame: "h" from there on, "q" no more
    for i in range(7, 9):
        send(i)
    got += sub.recv_all(4, pump)
    assert sub.recv_all(1, pump, deadline=0.2) == []
    assert [pl[4:] for pl in payloads(got)] == [b"q%d" % i for i in range(7)] + [b"h6", b"h7", b"h8"]
    out = seqs(got)
    assert out == list(range(100, 110))                     # continuous across the switch
    ts = [_core.parse_rtp(x)["timestamp"] for x in got]
    assert all(0 < b - a < 90000 for a, b in zip(ts, ts[1:]))
    assert (c.encoding, c.target_encoding) == (1, 1)
    # a NACK for one seq sent from "q" and one from "h": each from its own encoding's history
    sub.send_rtcp(_core.write_nack(0x1, 0xCC, [out[2], out[8]]))
    sub.rx = sub.fresh_rx()                # the copies are byte-identical: a replay to the old session
    rtx = sub.recv_all(2, pump)
    assert sorted(zip(seqs(rtx), [pl[4:] for pl in payloads(rtx)])) == [(out[2], b"q2"), (out[8], b"h7")]
    assert [_core.parse_rtp(x)["timestamp"] for x in rtx] == [ts[2], ts[8]]
    pub.close()
    sub.close()


def vp8_full(picid, tl0, tid=0, key=False, body=b"", short=False):
    """A VP8 payload with picture ID (15 bits, or 7 with short), TL0PICIDX and TID (RFC 7741 §4.2)."""
    pid = bytes([picid & 0x7F]) if short else bytes([0x80 | (picid >> 8) & 0x7F, picid & 0xFF])
    return bytes([0x90, 0xE0]) + pid + bytes([tl0 & 0xFF, tid << 6]) + bytes([0x00 if key else 0x01]) + body


def picture_fields(packet):
    """(picture ID, TL0PICIDX) of a VP8 packet written by vp8_full."""
    pl = _core.parse_rtp(packet)["payload"]
    if pl[2] & 0x80:
        return ((pl[2] & 0x7F) << 8) | pl[3], pl[4]
    return pl[2] & 0x7F, pl[3]


def test_picture_id_and_tl0picidx_stay_continuous_across_a_layer_switch(worker):
    """Each encoding numbers its own pictures; the subscriber sees one numbering: after the switch the new
    layer's key frame continues right after the last picture written, both packets of one picture keep one
    ID, the field keeps its size, and a retransmission from before the switch has the ID it was sent with."""
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, codec="vp8", mid="v", encodings=[("q", 0xD1), ("h", 0xD2)])
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, p, 0xDD, 96)
    pump = pump_for(worker)
    seq = {0xD1: 200, 0xD2: 9000}

    def picture(ssrc, picid, tl0, key=False, packets=1, short=False):
        for k in range(packets):
            pub.send_rtp(rtp(seq[ssrc], 3000 * picid, ssrc,
                             payload=vp8_full(picid, tl0, key=key and k == 0, body=b"%d" % k, short=short)))
            seq[ssrc] += 1

    picture(0xD1, 32766, 250, key=True, packets=2)    # q: picture IDs about to wrap, TL0PICIDX too
    picture(0xD1, 32767, 251, packets=2)
    picture(0xD1, 0, 252)
    got = sub.recv_all(5, pump)
    assert [picture_fields(x) for x in got] == [(32766, 250)] * 2 + [(32767, 251)] * 2 + [(0, 252)]
    worker.set_target_encoding(c, 1)
    picture(0xD2, 12000, 7, key=True, packets=2)      # h's own numbering: the switch happens here
    picture(0xD2, 12001, 8)
    picture(0xD1, 1, 253)                             # q goes on, no longer sent
    picture(0xD2, 12002, 9)
    got += sub.recv_all(4, pump)
    assert sub.recv_all(1, pump, deadline=0.2) == []
    assert [picture_fields(x) for x in got[5:]] == [(1, 253)] * 2 + [(2, 254), (3, 255)]
    # a NACK for a packet of q sent before the switch: the ID it had then, not h's mapping
    first_seq = _core.parse_rtp(got[2])["sequence_number"]
    sub.send_rtcp(_core.write_nack(0x1, 0xDD, [first_seq]))
    sub.rx = sub.fresh_rx()
    [rtx] = sub.recv_all(1, pump)
    assert picture_fields(rtx) == (32767, 251)
    # a switch back to an encoding with 7-bit IDs keeps 7 bits and continues modulo 128
    worker.set_target_encoding(c, 0)
    picture(0xD1, 100, 17, key=True, short=True)
    [back] = sub.recv_all(1, pump)
    pl = _core.parse_rtp(back)["payload"]
    assert not pl[2] & 0x80 and picture_fields(back) == (4, 0)
    pub.close()
    sub.close()


def test_h264_encodings_learn_their_size_from_the_sps_of_their_key_frames(worker):
    """H.264 layers say their size only in the SPS ahead of an IDR (aiortc's encoder: a STAP-A): the core
    reads it, so that a selector by height works for H.264 simulcast as for VP8."""
    import fractions

    import av
    import numpy as np
    from aiortc.codecs import H264Encoder

    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, codec="h264", encodings=[("q", 0x51), ("h", 0x52)])
    seq = 0
    for ssrc, (w, h) in ((0x51, (320, 180)), (0x52, (640, 360))):
        frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 90, np.uint8), format="rgb24")
        frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
        payloads, ts = H264Encoder().encode(frame, force_keyframe=True)
        for i, payload in enumerate(payloads):
            pub.send_rtp(rtp(seq, ts, ssrc, payload, pt=102))
            seq += 1
    for _ in range(5):
        pump()
    assert [(e["stats"]["width"], e["stats"]["height"]) for e in p.encodings] == [(320, 180), (640, 360)]
