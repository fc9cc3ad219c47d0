"""RTX (RFC 4588) in the core on real sockets (127.0.0.1). Towards subscribers: a NACKed packet goes out on
the consumer's RTX SSRC with its own numbering and the original seq (OSN) ahead of the payload. From
publishers: a retransmission on an encoding's RTX SSRC (given, or learned from mid + repaired-rid) repairs
that encoding: the gap the node NACKed is filled and the consumers get the packet under their own numbering.
Bad input: another payload type, a payload too short for its OSN, padding-only RTX (a publisher's probe),
RTX that nobody negotiated, and random RTX payloads."""
import os
import random

import pytest

from enx_media._native import _core
from rtp_util import FANOUT, GCM, Peer, pump_for, rtp, video, vp8

MID_ID, RID_ID, RRID_ID = 1, 2, 3
PT, RTX_PT = 96, 97
PUB_EXT = {"mid": MID_ID, "rid": RID_ID, "repaired_rid": RRID_ID}
BODY = b"\x33" * 400


def rtx(osn, seq, ssrc, original_payload, pt=RTX_PT, ts=0, ext=None):
    """The RTX form of a packet: OSN, then its payload."""
    return rtp(seq, ts, ssrc, osn.to_bytes(2, "big") + original_payload, pt=pt, ext=ext)


def publisher_and_subscriber(worker, **consumer_kw):
    """A publisher with RTX negotiated (media 0xA1, RTX 0xA9) and a subscriber of it (0xB1, no RTX)."""
    pub = Peer(worker, GCM, ext_ids=PUB_EXT)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8", payload_type=PT, rtx_payload_type=RTX_PT,
                                      rtx_ssrc=0xA9)
    sub = Peer(worker, GCM)
    worker.create_consumer(sub.transport, producer, 0xB1, PT, **consumer_kw)
    return pub, producer, sub


def test_a_nacked_packet_goes_out_as_rtx_on_the_consumers_rtx_ssrc(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    sub = Peer(worker, GCM)
    consumer = worker.create_consumer(sub.transport, producer, 0xB1, PT, rtx_ssrc=0xB9, rtx_payload_type=RTX_PT)
    for i in range(6):
        pub.send_rtp(video(100 + i, 0xA1, bytes([i]) + BODY))
    sent = [_core.parse_rtp(p) for p in sub.recv_all(6, pump)]
    wanted = [sent[1]["sequence_number"], sent[4]["sequence_number"]]
    sub.send_rtcp(_core.write_nack(0x51, 0xB1, wanted))
    got = [_core.parse_rtp(p) for p in Peer.recv_all(sub, 2, pump)]
    assert [p["ssrc"] for p in got] == [0xB9, 0xB9] and [p["payload_type"] for p in got] == [RTX_PT] * 2
    assert got[1]["sequence_number"] == (got[0]["sequence_number"] + 1) & 0xFFFF, "the RTX stream's own numbering"
    for p, i in zip(got, (1, 4)):
        assert int.from_bytes(p["payload"][:2], "big") == sent[i]["sequence_number"]
        assert p["payload"][2:] == sent[i]["payload"] and p["timestamp"] == sent[i]["timestamp"]
    st = consumer.stats
    assert st["retransmits"] == 2 and st["rtx_ssrc"] == 0xB9


def test_a_consumer_without_rtx_retransmits_on_its_own_ssrc_and_rtx_needs_its_own_ssrc(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM)
    producer = worker.create_producer(pub.transport, 0xA1, "vp8")
    sub = Peer(worker, GCM)
    worker.create_consumer(sub.transport, producer, 0xB1, PT)
    pub.send_rtp(video(1, 0xA1, BODY))
    [first] = [_core.parse_rtp(p) for p in sub.recv_all(1, pump)]
    sub.send_rtcp(_core.write_nack(0x51, 0xB1, [first["sequence_number"]]))
    rx = sub.fresh_rx()                       # same index as the original: the first session refuses it
    sub.sock.settimeout(0.5)
    pump()
    again = _core.parse_rtp(rx.unprotect(sub.sock.recv(4096)))
    assert again["ssrc"] == 0xB1 and again["payload"] == first["payload"]
    for ssrc, bad in [(0xB2, dict(rtx_ssrc=0xB3)), (0xB2, dict(rtx_payload_type=RTX_PT)),
                      (0xB2, dict(rtx_ssrc=0xB2, rtx_payload_type=RTX_PT)),
                      (0xB2, dict(rtx_ssrc=0xB1, rtx_payload_type=RTX_PT))]:   # used before: SRTP nonces
        with pytest.raises(ValueError):
            worker.create_consumer(sub.transport, producer, ssrc, PT, **bad)


@FANOUT
def test_rtx_from_the_publisher_fills_the_gap_the_node_nacked(worker):
    pump = pump_for(worker)
    pub, producer, sub = publisher_and_subscriber(worker)
    for s in range(10):
        if s != 5:
            pub.send_rtp(video(s, 0xA1, bytes([s]) + BODY))
    first = [_core.parse_rtp(p) for p in sub.recv_all(9, pump)]
    assert len(first) == 9
    original = vp8(bytes([5]) + BODY)
    pub.send_rtp(rtx(5, 7000, 0xA9, original))
    [late] = [_core.parse_rtp(p) for p in sub.recv_all(1, pump)]
    assert late["ssrc"] == 0xB1 and late["payload_type"] == PT and late["payload"] == original
    assert late["sequence_number"] == (first[4]["sequence_number"] + 1) & 0xFFFF, "under the seq it was missing at"
    st = producer.stats
    assert st["rtx_received"] == 1 and st["nack_recovered"] == 1 and st["nack_pending"] == 0


def test_an_rtx_stream_is_learned_from_mid_and_repaired_rid(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM, ext_ids=PUB_EXT)
    producer = worker.create_producer(pub.transport, codec="vp8", mid="0", encodings=[("q", 0), ("f", 0)],
                                      payload_type=PT, rtx_payload_type=RTX_PT)
    sub = Peer(worker, GCM)
    worker.create_consumer(sub.transport, producer, 0xB1, PT)
    names = [(MID_ID, b"0"), (RID_ID, b"q")]
    for s in range(6):
        if s != 3:
            pub.send_rtp(rtp(s, 0, 0xC1, vp8(bytes([s]) + BODY), ext=names))
    assert len(sub.recv_all(5, pump)) == 5
    original = vp8(bytes([3]) + BODY)
    pub.send_rtp(rtx(3, 1, 0xC9, original, ext=[(MID_ID, b"0"), (RRID_ID, b"q")]))
    [late] = [_core.parse_rtp(p) for p in sub.recv_all(1, pump)]
    assert late["payload"] == original
    enc = producer.stats["encodings"][0]
    assert enc["rtx_received"] == 1 and enc["nack_recovered"] == 1
    # a repaired-rid of an encoding that is not there, or without RTX negotiated, binds nothing
    events = []
    worker.on_event = events.append
    pub.send_rtp(rtx(4, 2, 0xCA, original, ext=[(MID_ID, b"0"), (RRID_ID, b"zz")]))
    pump()
    assert producer.stats["encodings"][0]["rtx_received"] == 1
    assert any(getattr(e, "kind", "") == "unknown_ssrc" and e.ssrc == 0xCA for e in events)


def test_bad_rtx_is_counted_and_changes_nothing(worker):
    pump = pump_for(worker)
    pub, producer, sub = publisher_and_subscriber(worker)
    for s in range(4):
        pub.send_rtp(video(s, 0xA1, bytes([s]) + BODY))
    assert len(sub.recv_all(4, pump)) == 4
    pub.send_rtp(rtx(2, 1, 0xA9, vp8(BODY), pt=PT))                    # not the RTX payload type
    pub.send_rtp(rtp(2, 0, 0xA9, b"\x00", pt=RTX_PT))                   # too short for its OSN
    pub.send_rtp(_core.write_rtp(payload_type=RTX_PT, sequence_number=3, timestamp=0, ssrc=0xA9,
                                 padding_size=200))                     # padding only: a probe
    rng = random.Random(5)
    pub.send_rtp(rtx(900, 2, 0xA9, vp8(BODY)))                          # ahead of the stream: no repair
    for k in range(200):                                                # random RTX payloads
        pub.send_rtp(rtp(10 + k, 0, 0xA9, os.urandom(rng.randrange(1, 80)), pt=RTX_PT))
    pump()
    pump()
    st = pub.transport.stats
    assert st["drops"]["bad_rtx"] >= 3 and producer.stats["restarts"] == 0, "garbage RTX never renumbers the stream"
    assert producer.stats["rtx_padding"] == 1
    # whatever the random ones unwrapped to, forwarding goes on in order
    pub.send_rtp(video(4, 0xA1, bytes([4]) + BODY))
    got = [_core.parse_rtp(p) for p in sub.recv_all(50, pump, deadline=0.5)]
    assert got and got[-1]["payload"] == vp8(bytes([4]) + BODY)


def test_rtx_on_a_producer_without_it_negotiated_is_an_unknown_ssrc(worker):
    pump = pump_for(worker)
    pub = Peer(worker, GCM, ext_ids=PUB_EXT)
    worker.create_producer(pub.transport, codec="vp8", mid="0", encodings=[("f", 0)])
    events = []
    worker.on_event = events.append
    pub.send_rtp(rtx(3, 1, 0xC9, vp8(BODY), ext=[(MID_ID, b"0"), (RRID_ID, b"f")]))
    pump()
    assert [e.ssrc for e in events if getattr(e, "kind", "") == "unknown_ssrc"] == [0xC9]


def test_redundant_rtx_is_not_passed_on_and_a_late_key_frame_packet_is_no_switch_point(worker):
    """libwebrtc probes with RTX copies of recent packets: a copy of what went out already is a duplicate.
    And a key frame's first packet that comes late (repaired) does not end a consumer's wait for a key
    frame: the rest of that frame went by while it waited."""
    pump = pump_for(worker)
    pub, producer, sub = publisher_and_subscriber(worker, wait_keyframe=True)
    for s in (10, 12, 13, 14, 15):              # 11, a key frame's first packet, is lost
        pub.send_rtp(video(s, 0xA1, bytes([s]) + BODY, key=False))
    pump()
    pub.send_rtp(rtx(11, 1, 0xA9, vp8(bytes([11]) + BODY, key=True)))
    pub.send_rtp(rtx(13, 2, 0xA9, vp8(bytes([13]) + BODY, key=False)))   # redundant: 13 came already
    assert sub.recv_all(1, pump, deadline=0.3) == [], "nothing before the next key frame"
    pub.send_rtp(video(16, 0xA1, bytes([16]) + BODY, key=True))
    [p] = [_core.parse_rtp(d) for d in sub.recv_all(1, pump)]
    assert p["payload"] == vp8(bytes([16]) + BODY, key=True)
    st = producer.stats
    assert st["rtx_received"] == 2 and st["duplicates"] == 1 and st["nack_recovered"] == 1
