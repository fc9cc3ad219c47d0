"""RTP/RTCP parse+write against aiortc.rtp on generated packets, and hand-checked edge cases."""
import pytest
from aiortc import rtp as artp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enx_media._native import _core

u32 = st.integers(0, 2 ** 32 - 1)
u16 = st.integers(0, 2 ** 16 - 1)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def extensions(draw):
    if draw(st.booleans()):   # one-byte form: IDs 1-14, 1-16 bytes
        ids = draw(st.lists(st.integers(1, 14), unique=True, max_size=5))
        return [(i, draw(st.binary(min_size=1, max_size=16))) for i in ids]
    ids = draw(st.lists(st.integers(1, 255), unique=True, min_size=1, max_size=5))
    exts = [(i, draw(st.binary(min_size=0, max_size=40))) for i in ids]
    if all(i < 15 and 0 < len(v) <= 16 for i, v in exts):
        exts.append((200, b"force two-byte"))
    return exts


@st.composite
def rtp_fields(draw):
    return dict(payload_type=draw(st.integers(0, 127)), sequence_number=draw(u16), timestamp=draw(u32),
                ssrc=draw(u32), marker=draw(st.integers(0, 1)), csrc=draw(st.lists(u32, max_size=15)),
                payload=draw(st.binary(max_size=300)), padding_size=draw(st.sampled_from([0, 0, 1, 4, 255])),
                exts=draw(st.one_of(st.none(), extensions())))


@FAST
@given(rtp_fields())
def test_rtp_write_then_parse_matches_aiortc(f):
    exts = f.pop("exts")
    kw = {}
    if exts is not None:
        prof, val = _core.pack_header_extensions(exts)
        assert (prof, val) == artp.pack_header_extensions(exts) or prof == 0x1000
        kw = dict(extension_profile=prof, extension_value=val)
    data = _core.write_rtp(**f, **kw)
    ours = _core.parse_rtp(data)
    theirs = artp.RtpPacket.parse(data)
    for k in ("payload_type", "sequence_number", "timestamp", "ssrc", "marker", "payload", "padding_size"):
        assert ours[k] == getattr(theirs, k) == f[k]
    assert ours["csrc"] == theirs.csrc == f["csrc"]
    if exts:
        assert ours["extensions"] == dict(artp.unpack_header_extensions(kw["extension_profile"],
                                                                        kw["extension_value"])) == dict(exts)
    if not f["padding_size"]:
        theirs.extensions = artp.HeaderExtensions()
        if exts is None:
            assert theirs.serialize() == data


@FAST
@given(st.binary(min_size=0, max_size=120))
def test_rtp_random_bytes_agree_with_aiortc(data):
    try:
        theirs = artp.RtpPacket.parse(data)
    except ValueError:
        theirs = None
    try:
        ours = _core.parse_rtp(data)
    except ValueError as e:
        ours = None
        err = str(e)
    if theirs is None:
        assert ours is None
    elif ours is None:
        # we also check extension elements (aiortc does only when an ID is mapped)
        assert "extension" in err
    else:
        assert ours["payload"] == theirs.payload and ours["ssrc"] == theirs.ssrc


def test_rtp_named_extensions():
    prof, val = _core.pack_header_extensions([(1, b"0"), (2, b"hi"), (3, b"\x12\x34\x56"), (4, b"\x01\x02"),
                                              (5, b"\x85"), (6, b"lo")])
    data = _core.write_rtp(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"x",
                           extension_profile=prof, extension_value=val)
    ids = {"mid": 1, "rid": 2, "abs_send_time": 3, "transport_cc": 4, "audio_level": 5, "repaired_rid": 6}
    d = _core.parse_rtp(data, ids)
    assert (d["mid"], d["rid"], d["repaired_rid"]) == ("0", "hi", "lo")
    assert d["abs_send_time"] == 0x123456 and d["transport_cc"] == 0x0102
    assert d["audio_level"] == (-5, True)
    # two-byte form with a long MID
    prof, val = _core.pack_header_extensions([(1, b"a" * 20), (2, b"")])
    assert prof == 0x1000
    d = _core.parse_rtp(_core.write_rtp(payload_type=96, sequence_number=1, timestamp=2, ssrc=3,
                                        extension_profile=prof, extension_value=val), ids)
    assert d["mid"] == "a" * 20 and d["rid"] == ""


@pytest.mark.parametrize("data,why", [
    (b"\x80\x60\x00", "truncated"),
    (b"\x40" + b"\x00" * 11, "version"),
    (b"\x82" + b"\x00" * 11 + b"\x00\x00\x00\x01", "truncated"),   # 2 CSRCs, 1 present
    (b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x02\x00\x00\x00\x00", "truncated"),
    (b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x01\x13\x00\x00\x00", "extension"),
    (b"\xa0" + b"\x00" * 11 + b"\x01\x02\x00", "padding"),
    (b"\xa0" + b"\x00" * 11 + b"\x01\x02\x09", "padding"),
])
def test_rtp_malformed_rejected(data, why):
    with pytest.raises(ValueError, match=why):
        _core.parse_rtp(data)


reports = st.builds(artp.RtcpReceiverInfo, ssrc=u32, fraction_lost=st.integers(0, 255),
                    packets_lost=st.integers(-(2 ** 23), 2 ** 23 - 1), highest_sequence=u32, jitter=u32,
                    lsr=u32, dlsr=u32)
rtcp_packets = st.one_of(
    st.builds(artp.RtcpSrPacket, ssrc=u32, sender_info=st.builds(
        artp.RtcpSenderInfo, ntp_timestamp=st.integers(0, 2 ** 64 - 1), rtp_timestamp=u32,
        packet_count=u32, octet_count=u32), reports=st.lists(reports, max_size=3)),
    st.builds(artp.RtcpRrPacket, ssrc=u32, reports=st.lists(reports, max_size=3)),
    st.builds(artp.RtcpRtpfbPacket, fmt=st.just(1), ssrc=u32, media_ssrc=u32,
              lost=st.lists(u16, min_size=1, max_size=30, unique=True).map(sorted)),
    st.builds(artp.RtcpPsfbPacket, fmt=st.just(1), ssrc=u32, media_ssrc=u32),
    st.builds(artp.RtcpByePacket, sources=st.lists(u32, max_size=4)),
    st.builds(artp.RtcpSdesPacket, chunks=st.lists(st.builds(
        artp.RtcpSourceInfo, ssrc=u32, items=st.lists(st.tuples(st.integers(1, 8),
                                                                st.binary(min_size=1, max_size=20)),
                                                      max_size=3)), max_size=1)),
    # one chunk only: aiortc pads the SDES payload as a whole, not each chunk (RFC 3550 §6.5)
)


def _same(ours, theirs):
    if isinstance(theirs, (artp.RtcpSrPacket, artp.RtcpRrPacket)):
        assert ours["type"] == ("sr" if isinstance(theirs, artp.RtcpSrPacket) else "rr")
        assert ours["ssrc"] == theirs.ssrc
        if ours["type"] == "sr":
            si = theirs.sender_info
            assert (ours["ntp"], ours["rtp_timestamp"], ours["packet_count"], ours["octet_count"]) == \
                (si.ntp_timestamp, si.rtp_timestamp, si.packet_count, si.octet_count)
        assert [(r["ssrc"], r["fraction_lost"], r["packets_lost"], r["highest_seq"], r["jitter"], r["lsr"],
                 r["dlsr"]) for r in ours["reports"]] == \
            [(r.ssrc, r.fraction_lost, r.packets_lost, r.highest_sequence, r.jitter, r.lsr, r.dlsr)
             for r in theirs.reports]
    elif isinstance(theirs, artp.RtcpRtpfbPacket):
        assert ours["type"] == "nack" and sorted(ours["lost"]) == sorted(theirs.lost)
        assert (ours["ssrc"], ours["media_ssrc"]) == (theirs.ssrc, theirs.media_ssrc)
    elif isinstance(theirs, artp.RtcpPsfbPacket):
        assert ours["type"] == "pli" and (ours["ssrc"], ours["media_ssrc"]) == (theirs.ssrc, theirs.media_ssrc)
    elif isinstance(theirs, artp.RtcpByePacket):
        assert ours["type"] == "bye" and ours["sources"] == theirs.sources
    elif isinstance(theirs, artp.RtcpSdesPacket):
        assert ours["type"] == "sdes"
        assert [(c["ssrc"], c["items"]) for c in ours["chunks"]] == \
            [(c.ssrc, list(c.items)) for c in theirs.chunks]


@FAST
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_rtcp_compound_from_aiortc(pkts):
    data = b"".join(bytes(p) for p in pkts)
    ours = _core.parse_rtcp(data)
    assert len(ours) == len(pkts)
    for o, t in zip(ours, pkts):
        _same(o, t)


@FAST
@given(u32, st.integers(0, 2 ** 64 - 1), u32, u32, u32, st.lists(u16, min_size=1, max_size=40, unique=True))
def test_rtcp_writers_parse_in_aiortc(ssrc, ntp, ts, pc, oc, lost):
    rep = {"ssrc": ssrc ^ 1, "fraction_lost": 3, "packets_lost": -2, "highest_seq": 9, "jitter": 4,
           "lsr": 5, "dlsr": 6}
    data = (_core.write_sr(ssrc, ntp, ts, pc, oc, [rep]) + _core.write_rr(ssrc, [rep])
            + _core.write_nack(ssrc, 7, lost) + _core.write_pli(ssrc, 8) + _core.write_fir(ssrc, 9, 3)
            + _core.write_remb(ssrc, 1500000, [1, 2]))
    theirs = artp.RtcpPacket.parse(data)
    ours = _core.parse_rtcp(data)
    assert [o["type"] for o in ours] == ["sr", "rr", "nack", "pli", "fir", "remb"]
    for o, t in zip(ours[:4], theirs[:4]):
        _same(o, t)
    assert sorted(ours[2]["lost"]) == sorted(set(lost))
    assert ours[4]["entries"] == [(9, 3)] and ours[4]["fmt"] == 4
    assert ours[5]["bitrate"] == 1500000 and ours[5]["ssrcs"] == [1, 2]
    assert theirs[5].fmt == 15 and theirs[5].fci[:4] == b"REMB"


def test_rtcp_transport_cc_header():
    # one run-length chunk: 5 x "received, small delta", then the 5 one-byte deltas (+ 1 byte to align)
    fci = (1000).to_bytes(2, "big") + (5).to_bytes(2, "big") + b"\x00\x01\x02" + b"\x07" + b"\x20\x05" \
        + bytes([1, 2, 3, 4, 5]) + b"\x00"
    body = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + fci
    data = bytes([0x8f, 205]) + (len(body) // 4).to_bytes(2, "big") + body
    (p,) = _core.parse_rtcp(data)
    assert (p["type"], p["base_seq"], p["status_count"], p["reference_time"], p["fb_pkt_count"]) == \
        ("transport_cc", 1000, 5, 0x000102, 7)
    assert p["statuses"] == [1] * 5 and p["deltas"] == [1, 2, 3, 4, 5]
    # the same with two deltas missing (3 bytes of RTCP padding instead) is malformed
    short = bytes([0xaf, 205, 0, 6]) + body[:18] + bytes([1, 2, 3]) + b"\x00\x00\x03"
    with pytest.raises(ValueError, match="transport-cc"):
        _core.parse_rtcp(short)


@pytest.mark.parametrize("data,why", [
    (b"\x80\xc9\x00", "truncated"),
    (b"\x40\xc9\x00\x01\x00\x00\x00\x01", "version"),
    (b"\x80\xc9\x00\x02\x00\x00\x00\x01", "truncated"),           # says 12 bytes, has 8
    (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "report"),              # 1 report block, none present
    (b"\xa0\xc9\x00\x01\x00\x00\x00\x09", "padding"),
    (b"\x81\xcd\x00\x01\x00\x00\x00\x01", "feedback"),
])
def test_rtcp_malformed_rejected(data, why):
    with pytest.raises(ValueError, match=why):
        _core.parse_rtcp(data)
