"""Header extensions towards subscribers: each forwarded copy (and retransmission) carries only what
the subscriber negotiated, with its IDs: mid (its own m-line's value, on every packet), audio_level
(copied) and the subscriber transport's own transport-wide seq (one per packet sent, a retransmission
too); the rest of the publisher's block is dropped; no ext_ids: no block. Real UDP + SRTP; aiortc's
parser reads the result."""
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from enx_media._native import _core
from rtp_util import CM, GCM, Peer, pump_for, rtp

PUB_IDS = {"mid": 1, "rid": 2, "abs_send_time": 3, "transport_cc": 4, "audio_level": 5}
URIS = {"mid": "urn:ietf:params:rtp-hdrext:sdes:mid", "audio_level": "urn:ietf:params:rtp-hdrext:ssrc-audio-level"}


def aiortc_parse(data, ids):
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=URIS[n])
                                                   for n, i in ids.items() if n in URIS]))
    return RtpPacket.parse(data, m)


def pub_packet(seq, two_byte=False):
    ext = [(1, b"pubmid"), (2, b"q"), (3, b"\x01\x02\x03"), (4, b"\x00\x01"), (5, b"\x9e")]
    if two_byte:
        ext.append((200, b"forces the two-byte form"))
    p = rtp(seq, 960 * seq, 0x6001, payload=b"opus-%d" % seq, pt=111, ext=ext)
    # CSRCs and padding too: rebuilt with write_rtp around the same extension block
    h = _core.parse_rtp(p)
    return _core.write_rtp(payload_type=111, sequence_number=seq, timestamp=960 * seq, ssrc=0x6001,
                           payload=h["payload"], csrc=[7, 8], extension_profile=h["extension_profile"],
                           extension_value=h["extension_value"], padding_size=5)


def test_each_copy_gets_the_subscribers_extensions(worker):
    pub = Peer(worker, GCM, ext_ids=PUB_IDS)
    producer = worker.create_producer(pub.transport, 0x6001, "opus")
    a, b, c = Peer(worker, GCM), Peer(worker, CM), Peer(worker, GCM)
    a_ids = {"mid": 9, "audio_level": 10, "rid": 11, "transport_cc": 12, "abs_send_time": 13}
    ca = worker.create_consumer(a.transport, producer, 0x6101, 111, 48000, ext_ids=a_ids, mid="s0")
    worker.create_consumer(b.transport, producer, 0x6102, 111, 48000)
    worker.create_consumer(c.transport, producer, 0x6103, 111, 48000, ext_ids={"mid": 3}, mid="a1")
    sent = [pub_packet(1), pub_packet(2, two_byte=True), pub_packet(3)]
    assert _core.parse_rtp(sent[1])["extension_profile"] == 0x1000
    for p in sent:
        pub.send_rtp(p)
    got_a = a.recv_all(3, pump_for(worker), lose=(1,))
    got_b = b.recv_all(3, pump_for(worker))
    got_c = c.recv_all(3, pump_for(worker))
    assert len(got_a) == 2 and len(got_b) == 3 and len(got_c) == 3
    for x, twseq in zip(got_a, (0, 2)):
        h = _core.parse_rtp(x)
        assert h["extension_profile"] == 0xBEDE
        assert h["extensions"] == {9: b"s0", 10: b"\x9e", 12: twseq.to_bytes(2, "big")}
        assert h["csrc"] == [7, 8] and h["padding_size"] == 5 and h["payload"].startswith(b"opus-")
        pkt = aiortc_parse(x, a_ids)
        assert pkt.extensions.mid == "s0" and pkt.extensions.audio_level == (True, 30)
    for x in got_b:
        h = _core.parse_rtp(x)
        assert not h["extension"] and h["csrc"] == [7, 8] and h["padding_size"] == 5
    assert [_core.parse_rtp(x)["extensions"] for x in got_c] == [{3: b"a1"}] * 3
    # the lost one comes back rewritten the same way
    a.send_rtcp(_core.write_nack(0x1, 0x6101, [_core.parse_rtp(got_a[0])["sequence_number"] + 1]))
    a.rx = a.fresh_rx()
    rtx = a.recv_all(1, pump_for(worker))
    h = _core.parse_rtp(rtx[0])
    assert h["payload"] == b"opus-2" and ca.stats["retransmits"] == 1
    assert h["extensions"] == {9: b"s0", 10: b"\x9e", 12: b"\x00\x03"}
    for x in (pub, a, b, c):
        x.close()


def test_consumer_extension_map_is_checked(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0x6201, "opus")
    with pytest.raises(ValueError):
        worker.create_consumer(pub.transport, p, 0x6202, 111, ext_ids={"mid": 15}, mid="0")
    with pytest.raises(ValueError):
        worker.create_consumer(pub.transport, p, 0x6203, 111, ext_ids={"mid": 1}, mid="x" * 17)
    for name in ("transport_cc", "abs_send_time"):
        with pytest.raises(ValueError):
            worker.create_consumer(pub.transport, p, 0x6204, 111, ext_ids={name: 15})
    pub.close()
