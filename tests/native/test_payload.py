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


def annexb_nals(data):
    """The NAL units of an Annex-B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    parts, i = [], 0
    starts = [j for j in range(len(data) - 2) if data[j:j + 3] == b"\x00\x00\x01"]
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        nal = data[s + 3:end]
        parts.append(nal.rstrip(b"\x00") if k + 1 < len(starts) else nal)
    return parts


def x264_sps(w, h, profile):
    """The SPS libx264 (through PyAV) writes for a w x h stream of that profile."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"profile": profile, "preset": "ultrafast", "tune": "zerolatency"}
    data = b"".join(bytes(p) for f in frames(1, w, h) for p in ctx.encode(f.reformat(format="yuv420p")))
    return next(n for n in annexb_nals(data) if n[0] & 0x1F == 7)


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (1280, 720), (176, 144)])
def test_h264_picture_size_from_the_sps_aiortc_sends(size):
    """aiortc's H.264 encoder puts SPS and PPS in a STAP-A ahead of the IDR: the size is read from there
    (cropped: 180 and 360 lines are not whole macroblocks)."""
    payloads, _ = H264Encoder().encode(next(frames(1, *size)), force_keyframe=True)
    assert _core.h264_size(payloads[0]) == size
    with pytest.raises(ValueError):
        _core.h264_size(payloads[-1])           # a slice: no SPS in it


@pytest.mark.parametrize("profile", ["baseline", "main", "high"])
def test_h264_picture_size_from_libx264_sps_of_each_profile(profile):
    sps = x264_sps(640, 360, profile)
    assert _core.h264_size(sps) == (640, 360)
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps
    assert _core.h264_size(stap) == (640, 360)


def test_malformed_sps_is_an_error_never_a_crash():
    import random

    sps = x264_sps(1280, 720, "high")
    rng = random.Random(11)
    sizes = set()
    for n in range(3000):
        b = bytearray(sps[:rng.randrange(2, len(sps) + 1)] if n % 3 == 0 else sps)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(1, len(b))] = rng.randrange(256)
        try:
            w, h = _core.h264_size(bytes(b))
        except ValueError:
            continue
        assert 0 < w <= 16384 and 0 < h <= 32768
        sizes.add((w, h))
    for junk in (b"", b"\x67", b"\x67" + b"\x00" * 40, b"\x18\x00\x10\x67", b"\x18" + b"\x00" * 10):
        with pytest.raises(ValueError):
            _core.h264_size(junk)
