"""Helpers for tests of the native core on real UDP sockets (127.0.0.1 only): SRTP peers made with
pylibsrtp (an independent implementation), RTP packets, a pump for the worker."""
import os
import socket
import time

import pylibsrtp

from enx_media._native import _core

GCM = ("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12)
CM = ("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14)
GCM256 = ("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12)


def session(prof, key, salt, outbound):
    pol = pylibsrtp.Policy(key=key + salt, srtp_profile=prof,
                           ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                           else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    pol.allow_repeat_tx = True
    return pylibsrtp.Session(policy=pol)


class Peer:
    """A UDP socket on 127.0.0.1 with its own SRTP keys in both directions, and a transport for it."""

    def __init__(self, worker, spec, ext_ids=None):
        name, prof, kl, sl = spec
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.01)
        up = (os.urandom(kl), os.urandom(sl))      # peer -> worker
        down = (os.urandom(kl), os.urandom(sl))    # worker -> peer
        self.tx = session(prof, *up, True)
        self.rx = session(prof, *down, False)
        self.transport = worker.create_transport(name, up[0], up[1], down[0], down[1], ext_ids)
        worker.bind_transport(self.transport, *self.sock.getsockname())
        self.worker = worker

    def send_rtp(self, plain):
        self.sock.sendto(self.tx.protect(plain), self.worker.address)

    def send_rtcp(self, plain):
        self.sock.sendto(self.tx.protect_rtcp(plain), self.worker.address)

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
                    out.append(self.rx.unprotect_rtcp(d) if rtcp else self.rx.unprotect(d))
            except (socket.timeout, BlockingIOError):
                pass
        return out

    def close(self):
        self.sock.close()


def rtp(seq, ts, ssrc, payload=b"\x10\x00" + b"\x55" * 1000, pt=96, ext=None):
    kw = {}
    if ext:
        prof, val = _core.pack_header_extensions(ext)
        kw = dict(extension_profile=prof, extension_value=val)
    return _core.write_rtp(payload_type=pt, sequence_number=seq & 0xffff, timestamp=ts & 0xffffffff,
                           ssrc=ssrc, payload=payload, **kw)


def pump_for(w):
    return lambda: w.poll_once(5)
