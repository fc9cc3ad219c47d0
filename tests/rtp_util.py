"""Helpers for tests of the native core on real UDP sockets (127.0.0.1 only): SRTP peers made with
pylibsrtp (an independent implementation), RTP packets and VP8 payloads, sockets, a pump for the worker,
and a reader for the worker's events."""
import os
import socket
import time

import pylibsrtp
import pytest

from enx_media._native import _core

# (profile name for the native core, pylibsrtp profile, key length, salt length)
GCM = ("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12)
CM = ("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14)
GCM256 = ("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12)
PLAIN = ("none", None, 0, 0)       # a transport without SRTP either way

# @FANOUT on a test that takes the `worker` fixture (tests/native/conftest.py): once with the draining
# thread alone, once with a second fan-out thread.
FANOUT = pytest.mark.parametrize("worker", [1, 2], ids=["one_thread", "two_fanout_threads"], indirect=True)


def session(prof, key, salt, outbound):
    """A pylibsrtp session for any SSRC in one direction."""
    pol = pylibsrtp.Policy(key=key + salt, srtp_profile=prof,
                           ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                           else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    pol.allow_repeat_tx = True
    return pylibsrtp.Session(policy=pol)


def udp(timeout=0.2, rcvbuf=4 << 20):
    """A UDP socket bound to a free port on 127.0.0.1."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    return s


def recv_all(sock):
    """Every datagram that arrives until the socket's timeout passes without one."""
    out = []
    try:
        while True:
            out.append(sock.recv(4096))
    except socket.timeout:
        return out


class Peer:
    """A UDP socket on 127.0.0.1 with its own SRTP keys in both directions (none with PLAIN), and a transport
    for it on `worker` (an enx_media.sfu.Worker or a bare _core.NativeWorker)."""

    def __init__(self, worker, spec, ext_ids=None, timeout=0.01, rcvbuf=4 << 20):
        name, prof, kl, sl = spec
        self.sock = udp(timeout, rcvbuf)
        if prof is None:
            self.tx = self.rx = None
            self.transport = worker.create_transport(name, b"", b"", b"", b"", ext_ids)
        else:
            up = (os.urandom(kl), os.urandom(sl))      # peer -> worker
            down = (os.urandom(kl), os.urandom(sl))    # worker -> peer
            self.tx = session(prof, *up, True)
            self.rx = session(prof, *down, False)
            self._down = (prof, down)
            self.transport = worker.create_transport(name, up[0], up[1], down[0], down[1], ext_ids)
        worker.bind_transport(self.transport, *self.sock.getsockname())
        self.worker = worker
        self.dest = worker.address if hasattr(worker, "address") else worker.local_address

    def fresh_rx(self):
        """A new inbound SRTP session with this peer's keys: reads a retransmission that the replay
        window of self.rx refuses (same index as the original, by design)."""
        prof, down = self._down
        return session(prof, *down, False)

    def send_rtp(self, plain):
        self.sock.sendto(self.tx.protect(plain) if self.tx else plain, self.dest)

    def send_rtcp(self, plain):
        self.sock.sendto(self.tx.protect_rtcp(plain) if self.tx else plain, self.dest)

    def open(self, datagram, rtcp=False):
        """The datagram decrypted (as it is on a PLAIN peer)."""
        if self.rx is None:
            return datagram
        return self.rx.unprotect_rtcp(datagram) if rtcp else self.rx.unprotect(datagram)

    def recv(self, n):
        """n datagrams as they arrive (raw, still protected), each within the socket's timeout."""
        return [self.sock.recv(65536) for _ in range(n)]

    def take(self):
        """The datagrams the socket holds now (raw, still protected), without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096))
        except OSError:
            return out
        finally:
            self.sock.settimeout(0.01)

    def recv_all(self, want, pump, rtcp=False, deadline=3.0, lose=()):
        """Receive and decrypt `want` datagrams; indexes in `lose` are discarded unread (simulated loss)."""
        out = []
        seen = 0
        end = time.monotonic() + deadline
        while len(out) < want and time.monotonic() < end:
            pump()
            try:
                while len(out) < want:
                    d = self.sock.recv(4096)
                    seen += 1
                    if seen - 1 in lose:
                        want -= 1
                        continue
                    out.append(self.open(d, rtcp))
            except OSError:
                pass
        return out

    def recv_until(self, pump, until, deadline=2.0, rtcp=True, parse=None):
        """Decrypted datagrams (with parse: what parse(datagram) lists) until until(got) holds or the
        deadline passes."""
        got = []
        end = time.monotonic() + deadline
        while time.monotonic() < end and not until(got):
            pump()
            try:
                while True:
                    d = self.open(self.sock.recv(4096), rtcp)
                    got += parse(d) if parse else [d]
            except OSError:
                pass
        return got

    def close(self):
        self.sock.close()


def rtp(seq, ts, ssrc, payload=b"\x10\x00" + b"\x55" * 1000, pt=96, ext=None):
    """An RTP packet; ext is [(id, bytes)] for header extensions (the one- or two-byte form as needed)."""
    kw = {}
    if ext:
        prof, val = _core.pack_header_extensions(ext)
        kw = dict(extension_profile=prof, extension_value=val)
    return _core.write_rtp(payload_type=pt, sequence_number=seq & 0xffff, timestamp=ts & 0xffffffff,
                           ssrc=ssrc, payload=payload, **kw)


def vp8(body=b"", tid=None, key=True):
    """A VP8 RTP payload (RFC 7741): the descriptor (S=1, partition 0; with tid: X=1, T=1, TID in the top two
    bits), then the first byte of the VP8 payload header (P bit 0 on a key frame), then body."""
    desc = bytes([0x10]) if tid is None else bytes([0x90, 0x20, tid << 6])
    return desc + bytes([0x00 if key else 0x01]) + body


def video(seq, ssrc, body=b"", tid=None, key=True, pt=96):
    """A VP8 packet whose timestamp moves 3000 (one 30 fps frame at 90 kHz) per sequence number."""
    return rtp(seq, 3000 * seq, ssrc, payload=vp8(body, tid, key), pt=pt)


def pump_for(w):
    return lambda: w.poll_once(5)


def unknown_ssrc(event):
    """(transport id, ssrc, mid, rid, repaired rid) of an unknown-SSRC event from the native core, or None
    for any other event. The one place that knows the event's form (a tuple today)."""
    if isinstance(event, tuple):
        if event[0] != "unknown_ssrc":
            return None
        return tuple(event[1:6])
    if getattr(event, "kind", None) != "unknown_ssrc":
        return None
    return (event.transport_id, event.ssrc, event.mid, event.rid, getattr(event, "repaired_rid", ""))


def pair(worker, ssrc, out_ssrc, pt=96, codec="vp8", pub=GCM, sub=GCM, clock_rate=90000, ext_ids=None, **peer_kw):
    """A publishing peer with a producer (ssrc, codec) and a subscribing peer with a consumer of it
    (out_ssrc, pt): (publisher, producer, subscriber, consumer)."""
    prod = Peer(worker, pub, ext_ids=ext_ids, **peer_kw)
    producer = worker.create_producer(prod.transport, ssrc, codec)
    sink = Peer(worker, sub, **peer_kw)
    consumer = worker.create_consumer(sink.transport, producer, out_ssrc, pt, clock_rate)
    return prod, producer, sink, consumer


def stun_binding(username: str, password) -> bytes:
    """A STUN binding request (as an ICE agent checks a pair) signed with password (str or bytes)."""
    from aioice import stun

    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.add_message_integrity(password.encode() if isinstance(password, str) else password)
    return bytes(msg)
