"""Key frame detection on payloads from aiortc's real VP8/H.264 packetizers, and VP8 descriptor fields."""
import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import H264Encoder, Vp8Encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor

from enx_media._native import _core


def frames(n, w=320, h=240):
    for i in range(n):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, :, 0] = (np.arange(w) * 3 + i * 7) % 256
        img[:, :, 1] = ((np.arange(h) * 5)[:, None] + i * 11) % 256
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i * 3000
        f.time_base = fractions.Fraction(1, 90000)
        yield f


@pytest.mark.parametrize("enc_cls,codec", [(Vp8Encoder, "vp8"), (H264Encoder, "h264")])
def test_keyframes_from_aiortc_encoders(enc_cls, codec):
    enc = enc_cls()
    keyed = []
    for i, f in enumerate(frames(12)):
        payloads, _ = enc.encode(f, force_keyframe=(i == 8))
        assert payloads
        flags = [_core.is_keyframe(codec, p) for p in payloads]
        # a key frame is flagged on its first packet (VP8 S bit/FU-A start); later packets are not starts
        keyed.append(flags[0])
        assert not any(flags[1:]) or codec == "h264"
    assert keyed[0] and keyed[8]
    assert not any(keyed[1:8]) and not any(keyed[9:])


def test_vp8_descriptor_matches_aiortc():
    enc = Vp8Encoder()
    for f in frames(3):
        payloads, _ = enc.encode(f)
        for p in payloads:
            theirs, rest = VpxPayloadDescriptor.parse(p)
            ours = _core.parse_vp8_descriptor(p)
            assert ours["s"] == theirs.partition_start
            assert ours["pid"] == theirs.partition_id
            assert ours["picture_id"] == theirs.picture_id
            assert ours["tl0picidx"] == theirs.tl0picidx
            assert ours["header_len"] == len(p) - len(rest)


def test_vp8_descriptor_fields():
    # X, S; I L T K; M + 15-bit picture id 0x1234; TL0PICIDX 7; TID 2, Y, KEYIDX 5; payload P bit 0
    p = bytes([0x90, 0xF0, 0x92, 0x34, 0x07, (2 << 6) | 0x20 | 5, 0x00])
    d = _core.parse_vp8_descriptor(p)
    assert (d["picture_id"], d["picture_id_bits"], d["tl0picidx"], d["tid"], d["layer_sync"], d["keyidx"]) \
        == (0x1234, 15, 7, 2, 1, 5)
    assert d["keyframe"] and d["header_len"] == 6
    assert not _core.parse_vp8_descriptor(bytes([0x10, 0x01]))["keyframe"]      # P bit set: inter frame
    assert not _core.parse_vp8_descriptor(bytes([0x11, 0x00]))["keyframe"]      # partition 1
    assert _core.parse_vp8_descriptor(bytes([0x90, 0x80, 0x05, 0x00]))["picture_id"] == 5
    with pytest.raises(ValueError):
        _core.parse_vp8_descriptor(bytes([0x90, 0x80, 0x85]))                   # 15-bit id cut short


def test_h264_forms():
    assert _core.is_keyframe("h264", b"\x65\x88")                 # IDR slice
    assert _core.is_keyframe("h264", b"\x67\x42")                 # SPS
    assert not _core.is_keyframe("h264", b"\x41\x9a")             # non-IDR slice
    stap = b"\x18" + b"\x00\x02\x09\x10" + b"\x00\x03\x67\x42\x00"
    assert _core.is_keyframe("h264", stap)                        # STAP-A with an SPS
    assert not _core.is_keyframe("h264", b"\x18\x00\x02\x09\x10")
    assert _core.is_keyframe("h264", b"\x7c\x85\x00")             # FU-A start of IDR
    assert not _core.is_keyframe("h264", b"\x7c\x05\x00")         # FU-A continuation
    with pytest.raises(ValueError):
        _core.is_keyframe("h264", b"\x18\x00\x09\x09")            # STAP-A size past the end
    assert not _core.is_keyframe("opus", b"\xfc\xff\xfe")


def test_vp8_descriptor_roundtrip_aiortc_written():
    for pid in (5, 300):
        for tid in (None, (1, 1)):
            desc = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=pid, tl0picidx=9,
                                        tid=tid, keyidx=3 if tid else None)
            d = _core.parse_vp8_descriptor(bytes(desc) + b"\x00")
            assert (d["picture_id"], d["tl0picidx"], d["header_len"]) == (pid, 9, len(bytes(desc)))
            assert d["tid"] == (tid[0] if tid else None) and d["keyframe"]
