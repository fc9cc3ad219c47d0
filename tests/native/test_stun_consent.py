"""Consent checks (RFC 7675) answered by the core: a connected transport's peer gets a correct, signed
binding response from the core with nothing going up to Python; every request the core cannot vouch for
goes up to Python untouched, as before. Requests are built, and responses checked, with aioice's STUN."""
import time

from aioice import stun

from enx_media._native import _core
from rtp_util import udp

UFRAG, PWD, REMOTE = "srvU", "server-password-22chars", "peer"


def request(username=f"{UFRAG}:{REMOTE}", pwd=PWD, fingerprint=True, extra=None) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = 0x1234_5678_9ABC_DEF0
    msg.attributes["USE-CANDIDATE"] = None
    for k, v in (extra or {}).items():
        msg.attributes[k] = v
    msg.add_message_integrity(pwd.encode())      # and FINGERPRINT after it
    if not fingerprint:
        del msg.attributes["FINGERPRINT"]
    return bytes(msg)


def connected(w, sock, creds=True):
    t = w.create_transport("none")
    w.bind_transport(t, *sock.getsockname())
    if creds:
        w.set_ice_credentials(t, UFRAG, PWD, REMOTE)
    return t


def exchange(w, sock, data, src=None):
    """Send data to the worker from src (default sock), drain; (datagrams sock got, control handed to Python)."""
    (src or sock).sendto(data, w.local_address)
    time.sleep(0.02)
    control, _ = w.drain(4)
    got = []
    try:
        while True:
            got.append(sock.recv(2048))
    except OSError:
        pass
    return got, control


def test_a_consent_check_on_the_selected_pair_is_answered_by_the_core():
    w = _core.NativeWorker("127.0.0.1", 0)
    sock = udp(0.05)
    t = connected(w, sock)
    assert t.last_consent is None
    before = time.monotonic()
    req = request()
    got, control = exchange(w, sock, req)
    assert control == [] and len(got) == 1
    resp = stun.parse_message(got[0])
    assert resp.check_message_integrity(PWD.encode())
    assert resp.attributes["FINGERPRINT"] == stun.message_fingerprint(got[0][:-8])
    assert resp.message_method == stun.Method.BINDING and resp.message_class == stun.Class.RESPONSE
    assert resp.transaction_id == stun.parse_message(req).transaction_id
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()
    assert before <= t.last_consent <= time.monotonic()
    assert w.stats["stun_answered"] == 1


def test_what_the_core_cannot_vouch_for_goes_up_to_python_unanswered():
    w = _core.NativeWorker("127.0.0.1", 0)
    sock, other = udp(0.05), udp(0.05)
    connected(w, sock)
    bare = connected(w, udp(0.05), creds=False)
    good = request()
    cases = {
        "wrong password": request(pwd="not-the-password-at-all"),
        "another transport's ufrag": request(username=f"xxxx:{REMOTE}"),
        "another remote ufrag": request(username=f"{UFRAG}:else"),
        "no fingerprint": request(fingerprint=False),
        "a corrupted fingerprint": good[:-1] + bytes([good[-1] ^ 1]),
        "a flipped bit under the integrity": good[:30] + bytes([good[30] ^ 0x10]) + good[31:],
        "truncated": good[:-8],
        "an indication": bytes([0x00, 0x11]) + good[2:],
        "a response": bytes([0x01, 0x01]) + good[2:],
        "a comprehension-required attribute it does not know":
            request(extra={"LIFETIME": 600}),
    }
    for name, data in cases.items():
        got, control = exchange(w, sock, data)
        assert got == [] and control == [(data, sock.getsockname())], name
    # the right request, but from an address other than the transport's send address (a new pair to
    # nominate or a spoofed source): Python decides
    got, control = exchange(w, sock, good, src=other)
    assert control == [(good, other.getsockname())] and got == []
    assert bare.last_consent is None and w.stats["stun_answered"] == 0


def test_a_closed_transport_is_no_longer_answered():
    w = _core.NativeWorker("127.0.0.1", 0)
    sock = udp(0.05)
    t = connected(w, sock)
    assert len(exchange(w, sock, request())[0]) == 1
    w.close_transport(t)
    got, control = exchange(w, sock, request())
    assert got == [] and len(control) == 1 and w.stats["stun_answered"] == 1
