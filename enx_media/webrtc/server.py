"""WebRtcServer: the worker's one UDP port shared by every transport (ICE-lite, like mediasoup's
WebRtcServer). STUN and DTLS datagrams come up from the native drain in batches; a transport whose DTLS
handshake completes gets a native SRTP transport bound to its 5-tuple, and from then on its media never
reaches Python.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Callable

from .. import errors as E
from ..sfu import MediaEvent, Worker
from ..sfu.worker import NativeTransport
from . import ice
from .dtls import DtlsError, DtlsServer, NodeCertificate

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 20.0   # a transport that does not finish ICE+DTLS in this time is closed
HANDSHAKE_TICK_S = 0.05   # transports in their handshake have their DTLS retransmission timers run this often
CONSENT_SWEEP_S = 1.0     # connected transports are checked for expired consent this often (and SRs sent)


class WebRtcTransport:
    """One ICE/DTLS association on the shared port (a participant has one to publish, one to subscribe)."""

    def __init__(self, server: "WebRtcServer", direction: str, ext_ids: dict[str, int] | None = None,
                 owner: str | None = None) -> None:
        self.server = server
        self.id = secrets.token_hex(6)
        self.direction = direction
        self.owner = owner      # who it serves (a participant id): only the owner may move its 5-tuple
        self.ufrag, self.pwd = ice.new_credentials()
        self.remote_ufrag: str | None = None
        self.remote_fingerprint: tuple[str, str] | None = None
        self.ext_ids = dict(ext_ids or {})
        self.addr: tuple[str, int] | None = None      # where the node sends (the selected pair)
        self.addrs: set[tuple[str, int]] = set()       # every pair that passed a check: accepted from
        self.dtls: DtlsServer | None = None
        self.native: NativeTransport | None = None
        self.profile: str | None = None
        self.state = "new"             # new -> connecting -> connected -> closed
        self.close_reason: str | None = None
        self.created = time.monotonic()
        self.last_consent = self.created
        self.stun_errors = 0
        # DTLS that arrives before the peer's SDP (a subscriber starts its handshake when it applies its
        # answer, before the node has read it) waits here: the certificate can't be checked without it.
        self.held_dtls: list[tuple[bytes, tuple[str, int]]] = []
        self.on_connected: Callable[["WebRtcTransport"], object] | None = None
        self.on_closed: Callable[["WebRtcTransport", str], object] | None = None

    def set_remote(self, ufrag: str, fingerprint: tuple[str, str]) -> None:
        self.remote_ufrag = ufrag
        self.remote_fingerprint = fingerprint
        held, self.held_dtls = self.held_dtls, []
        for data, addr in held:
            self.server._on_dtls(data, addr)

    def close(self, reason: str = "closed") -> None:
        self.server.close_transport(self, reason)


class WebRtcServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, announced_ip: str = "127.0.0.1",
                 worker: Worker | None = None, consent_timeout: float = ice.CONSENT_TIMEOUT,
                 threaded: bool = True, max_transports: int = 10000) -> None:
        self.max_transports = max_transports
        self.worker = worker or Worker(host, port, on_control=self._on_control, on_event=self._on_event)
        self.worker.on_control = self._on_control
        self.worker.on_event = self._on_event
        self.announced_ip = announced_ip
        self.consent_timeout = consent_timeout
        self.threaded = threaded     # forward on the worker's own thread (else on the asyncio loop)
        self.certificate = NodeCertificate()
        self._ssl_ctx = self.certificate.context()
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_addr: dict[tuple[str, int], WebRtcTransport] = {}
        self.handshaking: dict[str, WebRtcTransport] = {}   # by ufrag: not connected yet (their timers run)
        self._handshake_started = asyncio.Event()
        self.counters = {"stun_ok": 0, "stun_refused": 0, "stun_malformed": 0, "stun_tuple_held": 0,
                         "dtls_unknown_source": 0, "dtls_failed": 0, "dtls_connected": 0, "consent_expired": 0,
                         "handshake_timeout": 0, "control_errors": 0, "transport_cap": 0}
        self.event_handlers: list[Callable[[Any], None]] = []   # called with each native MediaEvent
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        return self.worker.address[1]

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint

    def stats(self) -> dict[str, Any]:
        """Handshake outcomes, open transports and the native worker's counters."""
        worker = self.worker.stats
        handshake = dict(self.counters)
        handshake["stun_ok"] += worker["stun_answered"]   # the consent checks the core answered
        return {"handshake": handshake, "transports": len(self.by_ufrag), "worker": worker}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        if self.threaded:
            self.worker.start_thread(self._loop)
        else:
            self.worker.attach(self._loop)
        self._task = self._loop.create_task(self._housekeeping())

    async def stop(self) -> None:
        for t in list(self.by_ufrag.values()):
            self.close_transport(t, "server stopped")
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.worker.close()   # the UDP port is free again: media can start anew in this process

    def create_transport(self, direction: str, ext_ids: dict[str, int] | None = None,
                         owner: str | None = None) -> WebRtcTransport:
        if len(self.by_ufrag) >= self.max_transports:
            self.counters["transport_cap"] += 1
            raise E.CapacityExceeded(f"the node holds its maximum of {self.max_transports} transports",
                                     reason="node full")
        t = WebRtcTransport(self, direction, ext_ids, owner)
        self.by_ufrag[t.ufrag] = t
        self.handshaking[t.ufrag] = t
        self._handshake_started.set()
        return t

    def close_transport(self, t: WebRtcTransport, reason: str) -> None:
        if t.state == "closed":
            return
        t.state = "closed"
        t.close_reason = reason
        self.by_ufrag.pop(t.ufrag, None)
        self.handshaking.pop(t.ufrag, None)
        for addr in t.addrs:
            if self.by_addr.get(addr) is t:
                del self.by_addr[addr]
        if t.native is not None:
            self.worker.close_transport(t.native)
        log.info("transport closed id=%s direction=%s reason=%s", t.id, t.direction, reason)
        if t.on_closed:
            t.on_closed(t, reason)

    # -- datagrams from the native drain --------------------------------------------------------------
    def _on_control(self, data: bytes, addr: tuple[str, int]) -> None:
        # Called once per datagram of a drained batch: whatever a datagram holds, the rest of the batch
        # must still be handled, so nothing escapes from here.
        first = data[0] if data else 255
        try:
            if first < 4:
                self._on_stun(data, addr)
            elif 20 <= first <= 63:
                self._on_dtls(data, addr)
        except Exception:  # noqa: BLE001
            self.counters["control_errors"] += 1
            log.exception("control datagram from %s failed", addr)

    def _on_stun(self, data: bytes, addr: tuple[str, int]) -> None:
        msg, ufrag, error = ice.local_ufrag_of(data)
        if msg is None:
            self.counters["stun_malformed"] += 1
            return
        t = self.by_ufrag.get(ufrag) if ufrag else None
        if t is None or t.state == "closed":
            self.counters["stun_refused"] += 1
            return
        outcome = ice.answer_binding(msg, t.ufrag, t.pwd, t.remote_ufrag, addr)
        holder = self.by_addr.get(addr)
        if outcome.error is None and holder is not None and holder is not t and holder.state == "connected" \
                and holder.owner != t.owner:
            # A check that authenticates for one transport never takes another's live 5-tuple: a
            # participant who knows its own ufrag/pwd could otherwise spoof a victim's address and
            # have the victim's transport closed. The same participant may move it (an ICE restart).
            self.counters["stun_tuple_held"] += 1
            log.info("stun refused transport=%s addr=%s: the 5-tuple belongs to transport %s", t.id, addr, holder.id)
            return
        if outcome.response is not None:
            self.worker.send(outcome.response, addr)
        if outcome.error:
            self.counters["stun_refused"] += 1
            t.stun_errors += 1
            log.debug("stun refused transport=%s addr=%s: %s", t.id, addr, outcome.error)
            return
        self.counters["stun_ok"] += 1
        t.last_consent = time.monotonic()
        self._accept(t, addr, select=t.addr is None or (outcome.nominated and t.addr != addr))
        if t.state == "new":
            t.state = "connecting"

    def _accept(self, t: WebRtcTransport, addr: tuple[str, int], select: bool) -> None:
        """addr passed a check for t: accept media and DTLS from it (RFC 8445 §7.3: any valid pair may
        carry media, and a browser may send on one pair before it nominates another); `select` makes
        it the pair the node sends on."""
        other = self.by_addr.get(addr)
        if other is not None and other is not t:
            self.close_transport(other, "5-tuple taken over")
        if addr not in t.addrs:
            t.addrs.add(addr)
            self.by_addr[addr] = t
            if t.native is not None and not select:
                self.worker.accept_from(t.native, addr[0], addr[1])
        if select:
            t.addr = addr
            if t.native is not None:
                self.worker.bind_transport(t.native, addr[0], addr[1])

    def _on_dtls(self, data: bytes, addr: tuple[str, int]) -> None:
        t = self.by_addr.get(addr)
        if t is None or t.state == "closed":
            self.counters["dtls_unknown_source"] += 1
            return
        if t.remote_fingerprint is None:
            if len(t.held_dtls) < 16:
                t.held_dtls.append((data, addr))
            return
        if t.dtls is None:
            t.dtls = DtlsServer(self._ssl_ctx, t.remote_fingerprint)
        try:
            out = t.dtls.feed(data)
        except DtlsError as exc:
            self.counters["dtls_failed"] += 1
            self.close_transport(t, f"dtls: {exc.reason}")
            return
        for d in out:
            self.worker.send(d, addr)
        if t.dtls.done and t.native is None:
            keys = t.dtls.keys
            if keys is None or t.addr is None:   # a finished handshake has both: a check passed first
                raise RuntimeError("DTLS finished without SRTP keys or a selected address")
            t.profile = keys.profile
            t.native = self.worker.create_transport_from_keying_material(keys.profile, keys.material, True,
                                                                          t.ext_ids)
            self.worker.bind_transport(t.native, t.addr[0], t.addr[1])
            for other in t.addrs - {t.addr}:
                self.worker.accept_from(t.native, other[0], other[1])
            # from here the core answers the consent checks on the selected pair (stun.pxi)
            self.worker.set_ice_credentials(t.native, t.ufrag, t.pwd, t.remote_ufrag or "")
            t.state = "connected"
            self.handshaking.pop(t.ufrag, None)
            self.counters["dtls_connected"] += 1
            log.info("transport connected id=%s direction=%s profile=%s addr=%s", t.id, t.direction,
                     keys.profile, addr)
            if t.on_connected:
                t.on_connected(t)

    def _on_event(self, event: MediaEvent) -> None:   # a native MediaEvent
        for handler in self.event_handlers:
            handler(event)

    # -- timers ---------------------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        last_sweep = time.monotonic()
        while True:
            # Handshakes need their retransmission timers every tick; connected transports only once a
            # second (consent lasts 30 s): walking hundreds of them 20 times a second cost the loop, so
            # with no handshake running the task sleeps until the sweep or the next transport.
            if self.handshaking:
                await asyncio.sleep(HANDSHAKE_TICK_S)
            else:
                self._handshake_started.clear()
                try:
                    await asyncio.wait_for(self._handshake_started.wait(),
                                           max(0.0, last_sweep + CONSENT_SWEEP_S - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
            now = time.monotonic()
            for t in list(self.handshaking.values()):
                if now - t.created > HANDSHAKE_TIMEOUT:
                    self.counters["handshake_timeout"] += 1
                    self.close_transport(t, "ICE/DTLS did not complete in time")
                elif t.dtls is not None and t.addr is not None:
                    timeout = t.dtls.timeout()
                    if timeout is not None and timeout <= 0:
                        for d in t.dtls.handle_timeout():
                            self.worker.send(d, t.addr)
            if now - last_sweep >= CONSENT_SWEEP_S:
                last_sweep = now
                self._sweep_consent(now)
                self.worker.native.send_sender_reports()

    def _sweep_consent(self, now: float) -> None:
        for t in list(self.by_ufrag.values()):
            if t.state != "connected":
                continue
            answered = t.native.last_consent if t.native is not None else None
            if answered is not None and answered > t.last_consent:
                t.last_consent = answered              # a check the core answered (stun.pxi)
            if now - t.last_consent > self.consent_timeout:
                self.counters["consent_expired"] += 1
                self.close_transport(t, "consent expired")
