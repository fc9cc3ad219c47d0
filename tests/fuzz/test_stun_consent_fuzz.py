"""The core's consent answers (stun.pxi) on mangled binding requests: it never crashes, hands up what it
does not answer byte for byte, and answers only a request that aioice's STUN also finds valid for the
transport (integrity, fingerprint, username), with a response aioice accepts."""
from hypothesis import HealthCheck, given, settings, strategies as st

from aioice import stun

from enx_media._native import _core
from native.test_stun_consent import PWD, REMOTE, UFRAG, connected, request
from rtp_util import udp

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
WORKER = _core.NativeWorker("127.0.0.1", 0)
PEER = udp(0.002)
TRANSPORT = connected(WORKER, PEER)
VALID = request()


def valid_for_the_transport(data: bytes) -> bool:
    try:
        msg = stun.parse_message(data)
    except Exception:  # noqa: BLE001 - aioice raises what its parser hits
        return False
    fp = msg.attributes.get("FINGERPRINT")
    return (msg.message_method == stun.Method.BINDING and msg.message_class == stun.Class.REQUEST
            and msg.attributes.get("USERNAME") == f"{UFRAG}:{REMOTE}" and fp is not None
            and fp == stun.message_fingerprint(data[:-8]) and msg.check_message_integrity(PWD.encode()))


@st.composite
def mangled(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set_length"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif len(data) >= 4:
            data[2:4] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(data)


@FUZZ
@given(mangled())
def test_mangled_consent_checks(data):
    answered = WORKER.stats["stun_answered"]
    PEER.sendto(data, WORKER.local_address)
    assert WORKER.wait(200)
    control, _ = WORKER.drain(4)
    got = []
    try:
        while True:
            got.append(PEER.recv(2048))
    except OSError:
        pass
    if WORKER.stats["stun_answered"] > answered:
        assert control == [] and len(got) == 1 and valid_for_the_transport(data)
        resp = stun.parse_message(got[0])
        assert resp.check_message_integrity(PWD.encode()) and resp.transaction_id == data[8:20]
        assert resp.attributes["XOR-MAPPED-ADDRESS"] == PEER.getsockname()
    else:
        up = bool(data) and (data[0] <= 3 or 20 <= data[0] <= 63)   # RFC 7983: STUN or DTLS, else dropped
        assert got == [] and control == ([(data, PEER.getsockname())] if up else [])
