"""Python face of the native worker: lifecycle and a drive loop, nothing per packet.

The packet path lives in ``enx_media._native._core.NativeWorker``; this class owns it, runs its
drain loop (in a thread, or on an asyncio loop via ``add_reader``) and hands STUN/DTLS datagrams and
events (``MediaEvent``: typed, one ``kind`` each, listed in its docstring) to callbacks, once per batch.
Control actions delegate to the core: transports, producers (one track, up to 3 encodings rid -> SSRC,
SSRCs learned in the core from mid/rid), Python-fed producers (``create_direct_producer`` + ``feed``, a
batch per call), consumers (per-subscriber header extensions, a target encoding switched at its key
frame).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Callable, Optional

from enx_media._native import _core

log = logging.getLogger(__name__)

TAP_BACKLOG = 4096          # packets a tap reader may leave unread (~20 s of a 1.5 Mbit/s video)

# NACK retries to publishers (max(20 ms, RTT) apart), transport-cc feedback and the pacers need a clock when
# nothing arrives; the drain handles them too while packets flow (and the pacers ask for pace_tick_ms)
TIMER_INTERVAL_S = 0.02

MediaEvent = _core.MediaEvent
MEDIA_EVENT_KINDS = _core.MEDIA_EVENT_KINDS
NativeTransport = _core.Transport   # what create_transport*() returns (a 5-tuple and its SRTP keys)

Addr = tuple[str, int]   # (host, port)
Encodings = list[tuple[str, int]] | list[tuple[str, int, int]]   # [(rid, ssrc[, rtx_ssrc])]

ControlHandler = Callable[[bytes, Addr], None]
EventHandler = Callable[[MediaEvent], None]


class Worker:
    """One UDP socket and its forwarding state (transports, producers, consumers)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, buffer_bytes: int = 8 * 1024 * 1024,
                 on_control: Optional[ControlHandler] = None, on_event: Optional[EventHandler] = None,
                 fanout_threads: int = 1) -> None:
        self.native = _core.NativeWorker(host, port, buffer_bytes, fanout_threads=fanout_threads)
        self._tap_lock = threading.Lock()
        self._taps: dict[_core.Producer, dict[str, list[tuple[int, bytes]]]] = {}   # producer -> reader -> backlog
        self.tap_overflow = 0           # packets a reader lost by not reading (its backlog was full)
        self.on_control = on_control
        self.on_event = on_event
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._serve_fds: Optional[tuple[int, int]] = None     # serve()'s eventfds: (notify, stop)
        self._serve_loop: Optional[asyncio.AbstractEventLoop] = None

    # control actions delegate to the native worker
    @property
    def address(self) -> Addr:
        return self.native.local_address

    def create_transport(self, profile: str = "none", rx_key: bytes = b"", rx_salt: bytes = b"",
                         tx_key: bytes = b"", tx_salt: bytes = b"", ext_ids: Optional[dict[str, int]] = None
                         ) -> _core.Transport:
        return self.native.create_transport(profile, rx_key, rx_salt, tx_key, tx_salt, ext_ids)

    def create_transport_from_keying_material(self, profile: str, material: bytes, is_server: bool = True,
                                              ext_ids: Optional[dict[str, int]] = None) -> _core.Transport:
        """Keys as exported by DTLS-SRTP (RFC 5764 §4.2)."""
        (lk, ls), (rk, rs) = _core.split_keying_material(material, profile, is_server)
        return self.native.create_transport(profile, rk, rs, lk, ls, ext_ids)

    def bind_transport(self, transport: _core.Transport, host: str, port: int) -> None:
        self.native.bind_transport(transport, host, port)

    def accept_from(self, transport: _core.Transport, host: str, port: int) -> None:
        """Accept the transport's datagrams from another address too (another valid ICE pair)."""
        self.native.accept_from(transport, host, port)

    def set_ice_credentials(self, transport: _core.Transport, local_ufrag: str, local_pwd: str,
                            remote_ufrag: str) -> None:
        """Let the core answer the transport's consent checks on its send address (RFC 7675)."""
        self.native.set_ice_credentials(transport, local_ufrag, local_pwd, remote_ufrag)

    def close_transport(self, transport: _core.Transport | None) -> None:
        self.native.close_transport(transport)

    def create_producer(self, transport: _core.Transport, ssrc: int = 0, codec: str = "vp8", *, mid: str = "",
                        encodings: Optional[Encodings] = None, payload_type: int = 0, rtx_payload_type: int = 0,
                        rtx_ssrc: int = 0) -> _core.Producer:
        """A track received on transport. encodings: [(rid, ssrc)] or [(rid, ssrc, rtx_ssrc)] (up to 3, ssrc
        0 while unknown: the core learns it from the mid/rid header extensions and emits an
        ``encoding_bound`` event); without it one encoding (rid "", ssrc, rtx_ssrc). With RTX negotiated
        (rtx_payload_type, apt = payload_type) retransmissions on an encoding's RTX SSRC (given, or
        learned from the repaired-rid extension) repair that encoding."""
        return self.native.create_producer(transport, ssrc, codec, mid=mid, encodings=encodings,
                                           payload_type=payload_type, rtx_payload_type=rtx_payload_type,
                                           rtx_ssrc=rtx_ssrc)

    def create_direct_producer(self, codec: str = "vp8", ssrc: int = 0, *, encodings: Optional[Encodings] = None,
                               ext_ids: Optional[dict[str, int]] = None) -> _core.Producer:
        """A producer fed from Python (feed()), e.g. the MCU's output; key frame requests for it come back
        as ``keyframe_requested`` events with its producer_id (transport_id 0)."""
        return self.native.create_direct_producer(codec, ssrc, encodings=encodings, ext_ids=ext_ids)

    def feed(self, producer: _core.Producer, packets: list[bytes]) -> int:
        """Fan out a batch of packetized RTP (list of bytes) of a direct producer; the GIL is released while
        the core fans out. Returns how many packets were valid RTP."""
        return self.native.feed(producer, packets)

    # The core keeps one tap ring per producer with one reader; several Python readers (the MCU, the
    # recorder) share it here: whoever reads drains the ring into every reader's backlog (each bounded).
    def tap(self, producer: _core.Producer, on: bool = True, reader: str = "mcu") -> None:
        """Keep the producer's packets for reader's tap_read() (the MCU's inputs, a recording), or stop."""
        with self._tap_lock:
            readers = self._taps.get(producer)
            if on:
                if readers is None:
                    self.native.tap(producer, True)
                    readers = self._taps[producer] = {}
                readers.setdefault(reader, [])
            elif readers is not None:
                readers.pop(reader, None)
                if not readers:
                    del self._taps[producer]
                    self.native.tap(producer, False)

    def tap_read(self, producer: _core.Producer, reader: str = "mcu") -> list[tuple[int, bytes]]:
        """The packets of a tapped producer since reader's last call: (arrival time.monotonic_ns(), RTP
        packet). ValueError if reader does not tap it or it closed."""
        with self._tap_lock:
            readers = self._taps.get(producer)
            if readers is None or reader not in readers:
                raise ValueError("the producer is not tapped by " + reader)
            batch = self.native.tap_read(producer)
            for name, backlog in readers.items():
                backlog.extend(batch)
                if len(backlog) > TAP_BACKLOG:
                    self.tap_overflow += len(backlog) - TAP_BACKLOG
                    del backlog[:len(backlog) - TAP_BACKLOG]
            out, readers[reader] = readers[reader], []
            return out

    def close_producer(self, producer: _core.Producer | None) -> None:
        if producer is not None:
            with self._tap_lock:
                self._taps.pop(producer, None)
        self.native.close_producer(producer)

    def create_consumer(self, transport: _core.Transport, producer: _core.Producer, ssrc: int, payload_type: int,
                        clock_rate: int = 90000, wait_keyframe: bool = False,
                        ext_ids: Optional[dict[str, int]] = None, mid: str = "", *, rtx_ssrc: int = 0,
                        rtx_payload_type: int = 0) -> _core.Consumer:
        """ext_ids: the subscriber's negotiated header extension map (name -> id); each forwarded packet
        then carries mid (this value) and audio_level with those IDs, nothing else; None: no
        extensions. rtx_ssrc / rtx_payload_type: retransmissions go out as RTX on that SSRC."""
        return self.native.create_consumer(transport, producer, ssrc, payload_type, clock_rate, wait_keyframe,
                                           ext_ids, mid, rtx_ssrc=rtx_ssrc, rtx_payload_type=rtx_payload_type)

    def close_consumer(self, consumer: _core.Consumer | None) -> None:
        self.native.close_consumer(consumer)

    def switch_producer(self, consumer: _core.Consumer, producer: _core.Producer, at_keyframe: bool = False,
                        encoding: int = -1) -> None:
        """Feed the consumer from another producer, numbering continuous; with at_keyframe video changes
        over at the new producer's next key frame (asked for now), the old one feeding it until then."""
        self.native.switch_producer(consumer, producer, at_keyframe, encoding)

    def set_target_encoding(self, consumer: _core.Consumer, encoding: int) -> None:
        """Switch the consumer to the producer's encoding index at its next key frame (PLI sent now)."""
        self.native.set_target_encoding(consumer, encoding)

    def request_keyframe(self, producer: _core.Producer, encoding: int = -1) -> bool:
        """PLI for one encoding (-1: all known ones), rate-limited per encoding; True if one was sent."""
        return self.native.request_keyframe(producer, encoding)

    def probe(self, transport: _core.Transport, target_bps: int, duration_ms: int = 1000) -> None:
        """Probe a subscriber transport's downlink up to target_bps (padding) before stepping up."""
        self.native.probe(transport, target_bps, duration_ms)

    def run_timers(self) -> bool:
        """Feedback that is due (NACK retries, transport-cc) and what the pacers may send now; True while
        pacers still hold copies (call again within native.pace_tick_ms)."""
        return self.native.run_timers()

    def send(self, data: bytes, addr: Addr) -> None:
        self.native.send(data, addr[0], addr[1])

    @property
    def stats(self) -> dict[str, Any]:
        return self.native.stats

    # driving
    def poll_once(self, timeout_ms: int = 0) -> int:
        """Wait up to timeout_ms, drain, dispatch; returns how many control datagrams/events came up."""
        if timeout_ms and not self.native.wait(timeout_ms):
            self.native.run_timers()
            return 0
        control, events = self.native.drain()
        self._dispatch(control, events)
        return len(control) + len(events)

    def _dispatch(self, control: list[tuple[bytes, Addr]], events: list[MediaEvent]) -> None:
        if self.on_control is not None:
            for data, addr in control:
                self.on_control(data, addr)
        if self.on_event is not None:
            for ev in events:
                self.on_event(ev)

    def start_thread(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """Drain in a thread of its own: media keeps flowing whatever the asyncio loop is doing, and the
        GIL is released while the core works and waits. With `loop`, the thread runs the core's own
        loop (NativeWorker.serve: no Python per wakeup) and wakes `loop` through an eventfd when STUN/
        DTLS datagrams or events wait; the handlers run there, a batch of them per wakeup, as with
        attach(). Without, the thread waits and drains from Python and the handlers run in it.

        Control calls (create/close/bind/switch/request_keyframe/send) may come from any thread: the
        native worker holds a mutex for each receive batch and for each control call, so they run
        between batches, never while a batch fans out."""
        if self._thread is not None:
            return
        self._stop.clear()
        if loop is not None:
            notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._serve_fds = (notify, stop)
            self._serve_loop = loop
            loop.add_reader(notify, self._take_queues, notify)
            timer_ms = int(TIMER_INTERVAL_S * 1000)
            self._thread = threading.Thread(target=self.native.serve, args=(notify, stop, timer_ms),
                                            name="enx-media-worker", daemon=True)
            self._thread.start()
            return

        def run() -> None:
            while not self._stop.is_set():
                if self.native.wait(int(TIMER_INTERVAL_S * 1000)):
                    control, events = self.native.drain()
                    self._dispatch(control, events)
                else:
                    self.native.run_timers()

        self._thread = threading.Thread(target=run, name="enx-media-worker", daemon=True)
        self._thread.start()

    def _take_queues(self, notify: int) -> None:
        try:
            os.eventfd_read(notify)
        except BlockingIOError:
            pass                  # already taken with the wakeup before
        control, events = self.native.take_queues()
        self._dispatch(control, events)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drain from an asyncio loop whenever the socket is readable (no extra thread)."""
        self._loop = loop
        loop.add_reader(self.native.fileno(), self._on_readable)
        self._timer = loop.call_later(TIMER_INTERVAL_S, self._on_timer)

    def _on_timer(self) -> None:
        if self._loop is None:
            return
        pacing = self.native.run_timers()
        self._timer = self._loop.call_later(self.native.pace_tick_ms / 1000 if pacing else TIMER_INTERVAL_S,
                                            self._on_timer)

    def _on_readable(self) -> None:
        control, events = self.native.drain()
        self._dispatch(control, events)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.native.fileno())
            self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None:
            self._stop.set()
            if self._serve_fds is not None:
                os.eventfd_write(self._serve_fds[1], 1)
            self._thread.join()
            self._thread = None
        if self._serve_fds is not None:
            notify, stop = self._serve_fds
            self._serve_fds = None
            if self._serve_loop is not None and not self._serve_loop.is_closed():
                self._serve_loop.remove_reader(notify)
            self._serve_loop = None
            os.close(notify)
            os.close(stop)

    def close(self) -> None:
        """Stop driving and close the UDP socket: its port is free again at once."""
        self.stop()
        self.native.close()
