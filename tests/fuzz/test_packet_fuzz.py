"""Every parser on random and truncated bytes: a clean ValueError or a counted drop, never a crash."""
import os
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enx_media._native import _core
from enx_media.sfu import Worker

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = {"AES_CM_128_HMAC_SHA1_80": (b"k" * 16, b"s" * 14), "AEAD_AES_128_GCM": (b"k" * 16, b"s" * 12),
        "AEAD_AES_256_GCM": (b"k" * 32, b"s" * 12)}
IDS = {"mid": 1, "rid": 2, "repaired_rid": 3, "abs_send_time": 4, "transport_cc": 5, "audio_level": 6}


def _valid_rtp():
    prof, val = _core.pack_header_extensions([(1, b"m"), (2, b"r"), (4, b"\x01\x02\x03")])
    return _core.write_rtp(payload_type=96, sequence_number=5, timestamp=6, ssrc=7, csrc=[1, 2],
                           payload=b"\x90\x80\x05\x00" * 10, extension_profile=prof, extension_value=val,
                           padding_size=3)


def _valid_rtcp():
    return (_core.write_sr(1, 2, 3, 4, 5, [{"ssrc": 9}]) + _core.write_nack(1, 2, [3, 4, 30])
            + _core.write_remb(1, 100000, [5]) + _core.write_fir(1, 2))


@st.composite
def mangled(draw, base):
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


def _try(fn, *a):
    try:
        fn(*a)
    except ValueError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), mangled(_valid_rtp()), mangled(_valid_rtcp())))
def test_packet_parsers(data):
    _try(_core.parse_rtp, data, IDS)
    _try(_core.parse_rtcp, data)
    _try(_core.parse_vp8_descriptor, data)
    _try(_core.is_keyframe, "h264", data)
    _try(_core.is_keyframe, "vp8", data)


CTX = {name: _core.SrtpContext(name, *kv) for name, kv in KEYS.items()}


@FUZZ
@given(st.sampled_from(sorted(KEYS)), st.one_of(st.binary(max_size=120), mangled(_valid_rtp()),
                                                mangled(_valid_rtcp())))
def test_srtp_unprotect(name, data):
    _try(CTX[name].unprotect, data)
    _try(CTX[name].unprotect_rtcp, data)


def test_worker_survives_garbage():
    w = Worker("127.0.0.1", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for name in ("none", "AEAD_AES_128_GCM"):
            kv = KEYS.get(name, (b"", b""))
            t = w.create_transport(name, *kv, *kv, IDS)
            w.bind_transport(t, *s.getsockname())
            p = w.create_producer(t, 7 if name == "none" else 8, "vp8")
            w.create_consumer(t, p, 100 + p.ssrc, 96)
            rnd = __import__("random").Random(1)
            for i in range(600):
                base = _valid_rtp() if i % 2 else _valid_rtcp()
                data = bytearray(base)
                for _ in range(rnd.randint(0, 3)):
                    data[rnd.randrange(len(data))] = rnd.randrange(256)
                data = bytes(data[:rnd.randint(0, len(data))]) or os.urandom(1)
                data = bytes([0x80 | (data[0] & 0x3f)]) + data[1:] if i % 3 else data
                s.sendto(data, w.address)
                if i % 50 == 0:
                    w.poll_once(1)
            for _ in range(20):
                w.poll_once(2)
    st_ = w.stats
    assert st_["packets_in"] > 1000
    assert sum(st_["drops"].values()) > 0
