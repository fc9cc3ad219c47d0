"""DTLS-SRTP, node side (always the DTLS server: the node is ICE-lite and answers `a=setup:passive`).

pyOpenSSL over memory BIOs: datagrams go in with `feed()`, what OpenSSL wants to send comes out of it;
OpenSSL reassembles fragmented handshake messages (Chromium's ClientHello with a post-quantum key
share arrives in two fragments) and handles retransmission through `handle_timeout()`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import cast, overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

log = logging.getLogger(__name__)

# Server preference: AES-128-GCM is the cheapest protect we measured (DESIGN.md) and both Chromium and
# aiortc offer it; SHA1_80 stays for older clients.
SRTP_PROFILES = {
    b"SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    b"SRTP_AEAD_AES_256_GCM": ("AEAD_AES_256_GCM", 32, 12),
    b"SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
}
SRTP_PREFERENCE = b"SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80"


class DtlsError(Exception):
    """The handshake failed; `reason` says why (e.g. 'fingerprint mismatch')."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SrtpKeys:
    profile: str
    material: bytes  # RFC 5764 §4.2 layout: client key | server key | client salt | server salt


class NodeCertificate:
    """The node's DTLS certificate; its SHA-256 fingerprint goes into every SDP the node writes."""

    @overload
    def __init__(self) -> None: ...
    @overload
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None: ...

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None, cert: x509.Certificate | None = None) -> None:
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enx-media-" + os.urandom(4).hex())])
            now = dt.datetime.now(dt.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                    .sign(key, hashes.SHA256()))
        self.key = key
        # cast: a key comes with its certificate (the overloads), or both were made just above
        self.cert = cast(x509.Certificate, cert)
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    def context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
        # The peer's certificate is self-signed; it is authenticated by the SDP fingerprint instead.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        ctx.use_certificate(self.cert)
        ctx.use_privatekey(self.key)
        ctx.set_tlsext_use_srtp(SRTP_PREFERENCE)
        return ctx


def certificate_fingerprint(cert: x509.Certificate, algorithm: str) -> str:
    algo = {"sha-256": hashlib.sha256, "sha-384": hashlib.sha384, "sha-512": hashlib.sha512,
            "sha-1": hashlib.sha1}[algorithm]
    return ":".join(f"{b:02X}" for b in algo(cert.public_bytes(serialization.Encoding.DER)).digest())


class DtlsServer:
    """One DTLS association. `remote_fingerprint` is (algorithm, value) from the peer's SDP."""

    def __init__(self, ctx: SSL.Context, remote_fingerprint: tuple[str, str]):
        self.ssl = SSL.Connection(ctx)
        self.ssl.set_accept_state()
        self.ssl.set_ciphertext_mtu(1200)
        self.remote_fingerprint = remote_fingerprint
        self.done = False
        self.failed: str | None = None
        self.keys: SrtpKeys | None = None

    def _drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                data = self.ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not data:
                break
            out.append(data)
        return out

    def feed(self, datagram: bytes) -> list[bytes]:
        """Give a received DTLS datagram; returns the datagrams to send back. Raises DtlsError."""
        if self.failed:
            raise DtlsError(self.failed)
        self.ssl.bio_write(datagram)
        if not self.done:
            try:
                self.ssl.do_handshake()
            except SSL.WantReadError:
                return self._drain()
            except SSL.Error as exc:
                self.failed = f"handshake failed: {exc}"
                raise DtlsError(self.failed) from None
            out = self._drain()
            self._finish()
            return out
        # After the handshake: alerts (close_notify) or retransmitted Finished; nothing for the app.
        try:
            self.ssl.recv(1500)
        except SSL.ZeroReturnError:
            self.failed = "closed by peer"
            raise DtlsError(self.failed) from None
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            log.debug("dtls after handshake: %s", exc)
        return self._drain()

    def _finish(self) -> None:
        cert = self.ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self.failed = "peer sent no certificate"
            raise DtlsError(self.failed)
        if self.remote_fingerprint is None:  # never accept a certificate nothing vouches for
            self.failed = "no fingerprint to check the peer's certificate against"
            raise DtlsError(self.failed)
        algorithm, value = self.remote_fingerprint
        try:
            actual = certificate_fingerprint(cert, algorithm.lower())
        except KeyError:
            self.failed = f"unsupported fingerprint algorithm {algorithm}"
            raise DtlsError(self.failed) from None
        if actual != value.upper():
            self.failed = "fingerprint mismatch"
            raise DtlsError(self.failed)
        selected = self.ssl.get_selected_srtp_profile()
        if selected not in SRTP_PROFILES:
            self.failed = "no SRTP profile negotiated"
            raise DtlsError(self.failed)
        profile, key_len, salt_len = SRTP_PROFILES[selected]
        material = self.ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
        self.keys = SrtpKeys(profile, material)
        self.done = True

    def timeout(self) -> float | None:
        """Seconds until OpenSSL wants `handle_timeout()` (handshake retransmission), or None."""
        if self.done or self.failed:
            return None
        return self.ssl.DTLSv1_get_timeout()

    def handle_timeout(self) -> list[bytes]:
        if self.done or self.failed:
            return []
        self.ssl.DTLSv1_handle_timeout()
        return self._drain()
