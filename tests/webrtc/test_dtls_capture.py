"""Chromium's own DTLS ClientHello (captured: tests/data/README.md; DTLS 1.3 and a post-quantum key share
offered, so 1413 bytes in two fragments) fed to the node's DtlsServer: it reassembles the message and
answers with its ServerHello flight, choosing SRTP AEAD_AES_128_GCM."""
import json
import pathlib

import pytest

from enx_media.webrtc.dtls import DtlsServer, NodeCertificate

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
SERVER_HELLO, CERTIFICATE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE = 2, 11, 13, 14
USE_SRTP, SRTP_AEAD_AES_128_GCM = 14, 0x0007


def captured() -> list[bytes]:
    doc = json.loads((DATA / "chromium_dtls_client_hello.json").read_text())
    return [bytes.fromhex(d) for d in doc["datagrams"]]


def fragments(datagrams):
    """(msg_type, length, msg_seq, fragment_offset, fragment) of every handshake record (RFC 6347 §4.2.2)."""
    out = []
    for d in datagrams:
        pos = 0
        while pos < len(d):
            ctype, n = d[pos], int.from_bytes(d[pos + 11:pos + 13], "big")
            body = d[pos + 13:pos + 13 + n]
            pos += 13 + n
            if ctype != 22:
                continue
            hs = 0
            while hs + 12 <= len(body):
                flen = int.from_bytes(body[hs + 9:hs + 12], "big")
                out.append((body[hs], int.from_bytes(body[hs + 1:hs + 4], "big"), int.from_bytes(body[hs + 4:hs + 6], "big"),
                            int.from_bytes(body[hs + 6:hs + 9], "big"), body[hs + 12:hs + 12 + flen]))
                hs += 12 + flen
    return out


def messages(datagrams) -> dict[int, bytes]:
    """Handshake messages by type, reassembled from their fragments."""
    parts: dict[int, dict[int, bytes]] = {}
    lengths = {}
    for mtype, length, _seq, offset, frag in fragments(datagrams):
        parts.setdefault(mtype, {})[offset] = frag
        lengths[mtype] = length
    out = {}
    for mtype, frags in parts.items():
        body = b"".join(frags[k] for k in sorted(frags))
        assert len(body) == lengths[mtype]
        out[mtype] = body
    return out


def extensions(hello: bytes) -> dict[int, bytes]:
    """The extensions of a (Server)Hello body: version, random, session id, cipher suite, compression."""
    pos = 2 + 32
    pos += 1 + hello[pos]
    pos += 2 + 1
    end = pos + 2 + int.from_bytes(hello[pos:pos + 2], "big")
    pos += 2
    out = {}
    while pos < end:
        etype, n = int.from_bytes(hello[pos:pos + 2], "big"), int.from_bytes(hello[pos + 2:pos + 4], "big")
        out[etype] = hello[pos + 4:pos + 4 + n]
        pos += 4 + n
    return out


def test_capture_is_one_client_hello_in_two_fragments():
    frags = fragments(captured())
    assert [(t, length, off) for t, length, _, off, _ in frags] == [(1, 1413, 0), (1, 1413, len(frags[0][4]))]
    assert sum(len(f[4]) for f in frags) == 1413


@pytest.mark.parametrize("order", ["as_sent", "reversed"])
def test_fragmented_client_hello_is_reassembled_and_answered(order):
    server = DtlsServer(NodeCertificate().context(), ("sha-256", ":".join(["00"] * 32)))
    datagrams = captured()
    if order == "reversed":
        datagrams.reverse()
    replies = [server.feed(d) for d in datagrams]
    assert replies[0] == []                   # half a ClientHello: nothing to answer yet
    flight = replies[-1]
    assert flight and not server.done and server.failed is None
    got = messages(flight)
    assert {SERVER_HELLO, CERTIFICATE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE} <= set(got)
    hello = got[SERVER_HELLO]
    assert hello[:2] == b"\xfe\xfd"          # DTLS 1.2 (Chromium offered 1.3 too)
    srtp = extensions(hello)[USE_SRTP]
    assert int.from_bytes(srtp[2:4], "big") == SRTP_AEAD_AES_128_GCM
