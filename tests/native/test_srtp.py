"""SRTP/SRTCP against pylibsrtp (libsrtp2), both directions, rollover, replay, tampering."""
import os
from functools import partial

import pytest

from enx_media._native import _core
from rtp_util import CM, GCM, GCM256, rtp, session as libsrtp

PROFILES = [CM, GCM, GCM256]
EXT = [(1, b"a"), (3, b"\x01\x02\x03")]
packet = partial(rtp, ts=1000, ssrc=0x11223344, payload=b"\xab" * 160)


@pytest.mark.parametrize("name,prof,kl,sl", PROFILES)
def test_protect_matches_libsrtp_both_ways(name, prof, kl, sl):
    key, salt = os.urandom(kl), os.urandom(sl)
    ours_tx, ours_rx = _core.SrtpContext(name, key, salt), _core.SrtpContext(name, key, salt)
    lib_tx, lib_rx = libsrtp(prof, key, salt, True), libsrtp(prof, key, salt, False)
    # start near the wrap so 65535 -> 0 increments the ROC on both sides
    for i in range(65530, 65530 + 20):
        seq = i & 0xffff
        plain = packet(seq, ts=i * 3000, ext=EXT if i % 2 == 0 else None)
        a = ours_tx.protect(plain)
        b = lib_tx.protect(plain)
        assert a == b, "ciphertext differs at seq %d" % seq
        assert lib_rx.unprotect(a) == plain
        assert ours_rx.unprotect(b) == plain


@pytest.mark.parametrize("name,prof,kl,sl", PROFILES)
def test_replay_and_tamper_rejected(name, prof, kl, sl):
    key, salt = os.urandom(kl), os.urandom(sl)
    lib_tx = libsrtp(prof, key, salt, True)
    rx = _core.SrtpContext(name, key, salt)
    pkts = [lib_tx.protect(packet(s)) for s in range(100, 110)]
    for p in pkts:
        rx.unprotect(p)
    with pytest.raises(ValueError, match="replay"):
        rx.unprotect(pkts[5])
    bad = bytearray(lib_tx.protect(packet(111)))
    bad[20] ^= 1
    with pytest.raises(ValueError, match="authentication"):
        rx.unprotect(bytes(bad))
    # a late but unseen packet inside the window is accepted
    late = lib_tx.protect(packet(110))
    assert rx.unprotect(late) == packet(110)
    assert rx.stats["replayed"] == 1 and rx.stats["auth_fail"] == 1


@pytest.mark.parametrize("name,prof,kl,sl", PROFILES)
def test_srtcp_both_ways(name, prof, kl, sl):
    key, salt = os.urandom(kl), os.urandom(sl)
    ours_tx, ours_rx = _core.SrtpContext(name, key, salt), _core.SrtpContext(name, key, salt)
    lib_tx, lib_rx = libsrtp(prof, key, salt, True), libsrtp(prof, key, salt, False)
    for i in range(5):
        plain = _core.write_rr(0x1234, [{"ssrc": 0x5678, "fraction_lost": i, "packets_lost": i,
                                         "highest_seq": 1000 + i}]) + _core.write_pli(0x1234, 0x5678)
        a = ours_tx.protect_rtcp(plain)
        b = lib_tx.protect_rtcp(plain)
        assert a == b
        assert lib_rx.unprotect_rtcp(a) == plain
        assert ours_rx.unprotect_rtcp(b) == plain
    with pytest.raises(ValueError, match="replay"):
        ours_rx.unprotect_rtcp(b)
    bad = bytearray(lib_tx.protect_rtcp(plain))
    bad[9] ^= 0x40
    with pytest.raises(ValueError, match="authentication"):
        ours_rx.unprotect_rtcp(bytes(bad))


def test_keying_material_split():
    mat = bytes(range(56))
    (lk, ls), (rk, rs) = _core.split_keying_material(mat, "AEAD_AES_128_GCM", True)
    assert lk == mat[16:32] and rk == mat[:16] and rs == mat[32:44] and ls == mat[44:56]
    assert _core.keying_material_length("AES_CM_128_HMAC_SHA1_80") == 60
    with pytest.raises(ValueError):
        _core.SrtpContext("AEAD_AES_128_GCM", b"x" * 15, b"y" * 12)


@pytest.mark.parametrize("name,prof,kl,sl", PROFILES)
def test_rtp_replay_window_is_1024(name, prof, kl, sl):
    """A NACKed retransmission hundreds of packets late still passes; one seen before, or older than the
    window, does not (across the 16-bit wrap)."""
    key, salt = os.urandom(kl), os.urandom(sl)
    lib_tx = libsrtp(prof, key, salt, True)
    rx = _core.SrtpContext(name, key, salt)
    held = {}
    for s in range(64000, 64000 + 1600):
        p = lib_tx.protect(packet(s & 0xFFFF))
        if s in (64000 + 100, 64000 + 1000, 64000 + 1400):
            held[s] = p                      # "lost" on the way
        else:
            rx.unprotect(p)
            if s == 64000 + 900:
                held["seen"] = p
    # highest is 65599 (wrapped): 1400 is 200 behind, 1000 is 600 behind, 100 is 1500 behind
    assert rx.unprotect(held[64000 + 1400]) == packet((64000 + 1400) & 0xFFFF)
    assert rx.unprotect(held[64000 + 1000]) == packet((64000 + 1000) & 0xFFFF)
    with pytest.raises(ValueError, match="replay"):
        rx.unprotect(held[64000 + 1000])
    with pytest.raises(ValueError, match="replay"):
        rx.unprotect(held["seen"])
    with pytest.raises(ValueError, match="replay"):
        rx.unprotect(held[64000 + 100])
    assert rx.stats["replayed"] == 3
