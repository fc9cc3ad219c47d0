"""The SFU router of one live room: its producers (published tracks) and consumers (a track as sent to
one subscriber), named after mediasoup's objects. The only Python code that asks the native worker
for producers and consumers; media never passes through here, only their lifecycle.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import allocation
from .worker import Worker

log = logging.getLogger(__name__)

# Probes (padding up to what a step up needs, ext/bwe.pxi): at most one per transport this often, this long
PROBE_INTERVAL_S = 2.0
PROBE_BACKOFF_MAX_S = 4.0
PROBE_HOLD_S = 4.0
PROBE_DURATION_MS = 600
PROBE_MAX_BPS = 20_000_000
# A link is congested (allocation gives the current layer no margin) after this many decreases within this
# window, or while the loss in its feedback is above this
CONGESTED_WINDOW_S = 3.0
CONGESTED_LOSS = 0.02


@dataclass(eq=False)
class Producer:
    """A published track (one mid of a publish transport). It is live once its SSRC is known: from the
    offer's a=ssrc lines, or bound by the core from the MID header extension of its first packets (the
    `encoding_bound` event)."""
    producer_id: str
    participant_id: str
    kind: str
    codec: str
    mid: str
    ssrc: int | None
    transport: Any                  # webrtc.server.WebRtcTransport; None for a Python-fed producer
    native: Any = None
    paused: bool = False
    keyframes_requested: int = 0    # PLIs the core sent upstream for it (or asked Python for)
    # A Python-fed producer's source (the MCU's encoder) is asked for a key frame through this: there
    # is no upstream transport to send a PLI on.
    on_keyframe_request: Callable[[], None] | None = field(default=None, repr=False)
    # simulcast: [(rid, ssrc)] lowest first (ssrc 0 until the core binds it); empty for one encoding
    encodings: list[tuple[str, int]] = field(default_factory=list)
    rtx: tuple[int, int] | None = None   # (payload type, RTX payload type) negotiated with the publisher
    rtx_ssrcs: list[int] = field(default_factory=list)   # per encoding (or the one stream); 0: learned
    source: str = "camera"          # "camera" or "screen" (a screen share goes first in allocation)
    # per encoding: packets in at the last look, and whether any came since the one before
    seen: list[int] = field(default_factory=list, repr=False)
    active: list[bool] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)   # (width, height) per encoding, (0, 0): unknown
    # per encoding: frame rate of temporal layers 0..k together, for each k (VP8 TID), smoothed
    fps_upto: list[list[float]] = field(default_factory=list)
    frames_seen: list[list[int]] = field(default_factory=list, repr=False)
    seen_at: float = 0.0
    # bits per second arriving, per encoding (simulcast) and in all, smoothed; bytes at the last look
    bitrates: list[float] = field(default_factory=list)
    bitrate: float = 0.0
    bytes_seen: list[int] = field(default_factory=list, repr=False)
    levels_seen: tuple[int, int] = (0, 0)   # audio: the core's (level sum, packets with a level) last read
    # dynacast: the layers the publisher was last told to send, and since when each is unwanted
    sent_active: list[bool] = field(default_factory=list)
    unwanted_since: dict[int, float | None] = field(default_factory=dict, repr=False)
    recorded: bool = False          # a recording takes its top encoding: dynacast never pauses that

    @property
    def top_ssrc(self) -> int | None:
        """The SSRC of its best encoding (what a recording takes): None while the core has not bound it yet;
        without simulcast its only one (0: whatever its packets carry)."""
        if self.encodings:
            return self.encodings[-1][1] or None
        return self.ssrc or 0

    @property
    def live(self) -> bool:
        return self.native is not None and self.ssrc is not None


@dataclass
class ProbeState:
    """When a subscriber transport may be probed again: PROBE_INTERVAL_S after the last probe, longer
    (doubling, up to PROBE_BACKOFF_MAX_S) after a probe that failed or one whose step up the link then
    could not hold (a decrease within PROBE_HOLD_S of its success), back to the start once one holds."""
    interval: float = 0.0
    last: float = float("-inf")
    ok_at: float | None = None
    seen: dict[str, int] = field(default_factory=dict)
    decreased_at: list[float] = field(default_factory=list)

    def observe(self, bwe: dict[str, Any], now: float, counts: dict[str, int]) -> None:
        ok, failed, decreases = bwe["probes_ok"], bwe["probes_failed"], bwe["decreases"]
        before = self.seen or {"ok": ok, "failed": failed, "decreases": decreases}
        self.interval = self.interval or PROBE_INTERVAL_S
        if failed > before["failed"]:
            counts["probes_failed"] += failed - before["failed"]
            self.interval = min(self.interval * 2, PROBE_BACKOFF_MAX_S)
        if ok > before["ok"]:
            counts["probes_ok"] += ok - before["ok"]
            self.ok_at = now
        if self.ok_at is not None:
            if decreases > before["decreases"]:
                self.ok_at = None
                self.interval = min(self.interval * 2, PROBE_BACKOFF_MAX_S)
            elif now - self.ok_at >= PROBE_HOLD_S:
                self.ok_at = None
                self.interval = PROBE_INTERVAL_S
        if decreases > before["decreases"]:
            self.decreased_at = [t for t in self.decreased_at if now - t < CONGESTED_WINDOW_S] + [now]
        self.seen = {"ok": ok, "failed": failed, "decreases": decreases}

    def congested(self, bwe: dict[str, Any], now: float) -> bool:
        """The link shows congestion that is not a one-off: two decreases within CONGESTED_WINDOW_S, or
        loss in its feedback above CONGESTED_LOSS."""
        recent = [t for t in self.decreased_at if now - t < CONGESTED_WINDOW_S]
        return len(recent) >= 2 or bwe["loss"] > CONGESTED_LOSS

    def due(self, now: float) -> bool:
        return now - self.last >= (self.interval or PROBE_INTERVAL_S)

    def started(self, now: float) -> None:
        self.last = now


@dataclass(eq=False)
class Consumer:
    producer: Producer
    transport: Any
    subscriber_id: str
    ssrc: int
    payload_type: int
    clock_rate: int
    native: Any = None
    max_height: int | None = None   # the subscriber's wanted picture height (None: the best there is)
    max_fps: float | None = None    # the subscriber's wanted frame rate (None: every frame)
    # bandwidth allocation (allocation.py): the encoding its transport's estimate allows (None: no cap
    # yet), whether it is paused because even its lowest layer does not fit, and its encoding switches
    allowed: int | None = None
    bandwidth_paused: bool = False
    switches: int = 0


def pick_temporal_layer(fps_upto: list[float], max_fps: float | None) -> int:
    """The highest VP8 temporal layer whose frame rate (with the layers below) stays within max_fps
    (15 % over is within: a 7.5 fps base layer serves 7 fps); the base layer at the least. 255 (all)
    without a wish or before any frame rate is known."""
    if max_fps is None or not fps_upto or not any(fps_upto):
        return 255
    fitting = [k for k, fps in enumerate(fps_upto) if fps <= max_fps * 1.15]
    return max(fitting) if fitting else 0


def pick_encoding(sizes: list[tuple[int, int]], active: list[bool], max_height: int | None) -> int | None:
    """The encoding to send for a wanted height (None: the best there is), among those arriving now:
    the highest whose height fits, else the smallest. sizes: (width, height) per encoding, lowest first,
    (0, 0) until a key frame told it (an arriving one of unknown size counts as the lowest choice).
    None when nothing arrives: the consumer stays where it is."""
    live = [i for i, on in enumerate(active) if on]
    if not live:
        return None
    known = [(i, sizes[i][1]) for i in live if sizes[i][1]]
    if not known:
        return live[0]
    fitting = [i for i, h in known if max_height is None or h <= max_height]
    return max(fitting) if fitting else min(known, key=lambda ih: ih[1])[0]


class Router:
    """Producers and consumers of one room on one worker."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.producers: dict[str, Producer] = {}
        self.consumers: list[Consumer] = []
        self._probes: dict[int, ProbeState] = {}   # id(subscriber transport) -> its probing schedule
        # what this router did, since it opened (metrics): simulcast switches, probes, bandwidth pauses
        self.counts = {"layer_switches": 0, "probes": 0, "probes_ok": 0, "probes_failed": 0,
                       "bandwidth_pauses": 0}

    # -- producers ----------------------------------------------------------------------------------
    def create_producer(self, producer: Producer) -> Producer:
        """Open the producer in the core; without an SSRC the core binds it from the MID extension."""
        self.producers[producer.producer_id] = producer
        try:
            pt, rtx_pt = producer.rtx or (0, 0)
            rtx = producer.rtx_ssrcs if rtx_pt else []
            encodings = ([(rid, ssrc, rtx[i] if i < len(rtx) else 0) for i, (rid, ssrc) in enumerate(producer.encodings)]
                         if producer.encodings else None)
            producer.native = self.worker.create_producer(
                producer.transport.native, 0 if encodings else producer.ssrc or 0, producer.codec,
                mid=producer.mid, encodings=encodings, payload_type=pt, rtx_payload_type=rtx_pt,
                rtx_ssrc=rtx[0] if rtx and encodings is None else 0)
        except ValueError as exc:
            log.warning("producer refused producer=%s: %s", producer.producer_id, exc)
        return producer

    def create_direct_producer(self, producer: Producer) -> Producer:
        """A producer fed from Python (feed()), fanned out like any other: the MCU's output, a test
        publisher. Its SSRC is the one its packets carry (with encodings, each encoding's)."""
        if producer.ssrc is None:
            raise ValueError("a Python-fed producer needs the SSRC its packets carry")
        if producer.encodings:           # simulcast: [(rid, ssrc)] lowest first
            producer.native = self.worker.create_direct_producer(producer.codec, encodings=list(producer.encodings))
        else:
            producer.native = self.worker.create_direct_producer(producer.codec, producer.ssrc)
        self.producers[producer.producer_id] = producer
        return producer

    def feed(self, p: Producer, packets: list[bytes]) -> int:
        """Hand the core a batch of p's packetized RTP; returns how many were valid RTP."""
        return self.worker.feed(p.native, packets)

    def keyframe_requested(self, p: Producer) -> None:
        p.keyframes_requested += 1
        if p.transport is None and p.on_keyframe_request is not None:
            p.on_keyframe_request()

    def by_native_id(self, native_id: int) -> Producer | None:
        for p in self.producers.values():
            if p.native is not None and p.native.id == native_id:
                return p
        return None

    def close_producer(self, p: Producer) -> None:
        """Close the producer and every consumer of it."""
        if self.producers.pop(p.producer_id, None) is None:
            return
        for c in [c for c in self.consumers if c.producer is p]:
            self.close_consumer(c)
        if p.native is not None:
            self.worker.close_producer(p.native)
            p.native = None

    def encoding_bound(self, native_id: int, ssrc: int) -> Producer | None:
        """The core bound an SSRC to one of this router's producers (it had none from the SDP): the
        producer is live from now on. None if the producer is not this router's or was live already."""
        p = self.by_native_id(native_id)
        if p is None or p.ssrc is not None:
            return None
        p.ssrc = ssrc
        return p

    def set_paused(self, p: Producer, paused: bool) -> None:
        """Stop or resume forwarding to every consumer of p (a server mute)."""
        p.paused = paused
        for c in self.consumers:
            if c.producer is p and c.native is not None:
                c.native.pause() if paused or c.bandwidth_paused else c.native.resume(True)
        if not paused and p.kind == "video":
            self.request_keyframe(p)

    # -- consumers ----------------------------------------------------------------------------------
    def create_consumer(self, p: Producer, transport: Any, subscriber_id: str, ssrc: int, payload_type: int,
                        clock_rate: int, *, ext_ids: dict[str, int] | None = None, mid: str = "",
                        max_height: int | None = None, max_fps: float | None = None, rtx_ssrc: int = 0,
                        rtx_payload_type: int = 0) -> Consumer | None:
        """p as sent on a subscriber's transport: its SSRC and payload type, and the header extensions
        the subscriber negotiated (ext_ids; `mid` is the subscriber's m-line, written into each packet);
        retransmissions as RTX on rtx_ssrc if the subscriber kept RTX."""
        if p.native is None or transport.native is None:
            return None
        try:
            native = self.worker.create_consumer(transport.native, p.native, ssrc, payload_type, clock_rate,
                                                 wait_keyframe=p.kind == "video", ext_ids=ext_ids or None, mid=mid,
                                                 rtx_ssrc=rtx_ssrc if rtx_payload_type else 0,
                                                 rtx_payload_type=rtx_payload_type)
        except ValueError as exc:
            log.warning("consumer refused producer=%s: %s", p.producer_id, exc)
            return None
        c = Consumer(p, transport, subscriber_id, ssrc, payload_type, clock_rate, native, max_height, max_fps)
        self.consumers.append(c)
        self.select_encoding(c)
        if p.paused:
            native.pause()
        if p.kind == "video":
            self.request_keyframe(p)
        return c

    def switch_consumer(self, c: Consumer, p: Producer) -> bool:
        """Feed c from p (same kind and codec) instead of its producer: video changes over at p's next key
        frame (asked for now; the old producer feeds it until then, so the picture never stops), audio at
        once; numbering stays continuous (the core's switch_producer). Starts on p's lowest layer; the
        allocation raises it. False if either is closed."""
        if c.native is None or p.native is None:
            return False
        self.worker.switch_producer(c.native, p.native, at_keyframe=True, encoding=0)
        c.producer, c.allowed = p, None
        if (p.paused or c.bandwidth_paused) != c.native.paused:
            self._apply_pause(c)
        self.select_encoding(c)
        return True

    def observe_encodings(self, p: Producer) -> None:
        """Note which of p's encodings are arriving (packets since the last look): a browser starts its
        top layer late and drops layers when its uplink shrinks, and a paused one sends nothing. And the
        bitrate of each (what allocation counts a layer at)."""
        if p.native is None:
            return
        now = time.monotonic()
        encodings = p.native.encodings
        nbytes = [e["stats"]["bytes_in"] for e in encodings]
        if p.bytes_seen and now > p.seen_at:
            dt = now - p.seen_at
            old_bps = p.bitrates or [0.0] * len(nbytes)
            # smoothed over a few ticks: a key frame is several times a tick's average
            p.bitrates = [0.6 * o + 0.4 * (n - b) * 8 / dt if n > b else 0.6 * o
                          for o, n, b in zip(old_bps, nbytes, p.bytes_seen)]
            p.bitrate = sum(p.bitrates)
        p.bytes_seen = nbytes
        if len(p.encodings) >= 2:
            counts = [e["stats"]["packets_in"] for e in encodings]
            p.active = [n > before for n, before in zip(counts, p.seen or [0] * len(counts))]
            p.seen = counts
            p.sizes = [(e["stats"]["width"], e["stats"]["height"]) for e in encodings]
        # the frame rates of the temporal layers, of a single VP8 encoding too (a max_fps applies to it)
        frames = [list(e["stats"]["frames_by_tid"]) for e in encodings]
        if p.frames_seen and now > p.seen_at:
            dt = now - p.seen_at
            rates = [[sum(f[: k + 1]) - sum(b[: k + 1]) for k in range(len(f))] for f, b in zip(frames, p.frames_seen)]
            prev = p.fps_upto or [[0.0] * len(f) for f in frames]
            # smoothed: a tick holds a handful of frames of a low layer
            p.fps_upto = [[0.7 * o + 0.3 * (n / dt) for o, n in zip(before, new)] for before, new in zip(prev, rates)]
        p.frames_seen, p.seen_at = frames, now

    def audio_levels(self) -> dict[str, tuple[Producer, float]]:
        """Per publishing participant, its audio producer and the mean RFC 6464 level (dBov: 0 loudest,
        127 silence) its packets carried since the last call; publishers whose packets carried none since
        are left out."""
        out: dict[str, tuple[Producer, float]] = {}
        for p in self.producers.values():
            if p.kind != "audio" or p.native is None or p.paused:
                continue
            st = p.native.stats
            total, count = st["audio_level_sum"], st["audio_level_count"]
            d_total, d_count = total - p.levels_seen[0], count - p.levels_seen[1]
            p.levels_seen = (total, count)
            if d_count > 0:
                level = d_total / d_count
                if p.participant_id not in out or level < out[p.participant_id][1]:
                    out[p.participant_id] = (p, level)
        return out

    def wanted_encodings(self, p: Producer) -> list[bool]:
        """Per encoding of p: is it wanted (False: dynacast may pause it at the publisher)? Wanted are
        the lowest (kept for joiners and as the fallback), every one up to the highest a consumer wants,
        and a layer whose size no key frame told yet when it may be the one a consumer wants (a browser
        starts its top layers late: they are not paused before anyone could tell); all of a recorded one."""
        n = len(p.encodings)
        if p.recorded:
            return [True] * n
        sizes = p.sizes or [(0, 0)] * n
        known = [h > 0 for _, h in sizes]
        top = 0
        for c in self.consumers:
            if c.producer is not p:
                continue
            if c.max_height is None:
                top = n - 1
                break
            pick = pick_encoding(sizes, known, c.max_height) or 0
            if sizes[pick][1] < c.max_height:      # a larger layer of unknown size might fit too
                pick = next((i for i in range(pick + 1, n) if not known[i]), pick)
            top = max(top, pick)
        return [i <= top for i in range(n)]

    def dynacast(self, p: Producer, now: float, hold: float) -> list[bool] | None:
        """The layers p's publisher should send now, when that changed (None: tell it nothing): an
        unwanted layer is paused once unwanted for `hold` seconds, a wanted one resumed at once."""
        if len(p.encodings) < 2 or not p.live:
            return None
        sent = p.sent_active or [True] * len(p.encodings)
        active = list(sent)
        for i, want in enumerate(self.wanted_encodings(p)):
            since = p.unwanted_since.get(i)
            if want:
                p.unwanted_since[i] = None
                active[i] = True
            elif since is None:
                p.unwanted_since[i] = now
            elif now - since >= hold:
                active[i] = False
        if active == sent:
            return None
        p.sent_active = active
        return active

    def select_encoding(self, c: Consumer) -> int | None:
        """Point a simulcast consumer at the encoding its wanted height asks for among those arriving
        (the core switches at that encoding's next key frame and keeps the current one until then).
        Returns the target; None for a consumer of one encoding (its temporal layer is still chosen by
        its max_fps) or while nothing arrives."""
        p = c.producer
        if c.native is None or p.native is None:
            return None
        if c.native.switching:
            # waiting for p's key frame to change over (switch_consumer): ask again (the core keeps
            # one request per encoding per 500 ms)
            self.worker.request_keyframe(p.native, c.native.target_encoding)
        if len(p.encodings) < 2:
            layer = pick_temporal_layer(p.fps_upto[0] if p.fps_upto else [], c.max_fps)
            if c.native.max_temporal_layer != layer:
                c.native.max_temporal_layer = layer
            return None
        target = pick_encoding(p.sizes, p.active, c.max_height)   # as observe_encodings last saw them
        if target is not None and c.allowed is not None:
            target = min(target, c.allowed)                        # what its transport's estimate allows
        layer = pick_temporal_layer(p.fps_upto[target] if target is not None and p.fps_upto else [], c.max_fps)
        if c.native.max_temporal_layer != layer:
            c.native.max_temporal_layer = layer     # one int the fan-out reads: dropping starts at once
        if target is not None and target != c.native.target_encoding:
            self.worker.set_target_encoding(c.native, target)      # sends a PLI for the target
            c.switches += 1
            self.counts["layer_switches"] += 1
        elif not c.native.switching and c.native.encoding != c.native.target_encoding:
            # Still waiting for the target's key frame: ask again (the core keeps one PLI per encoding
            # per 500 ms). Chromium leaves some requests for a simulcast layer unanswered.
            self.worker.request_keyframe(p.native, c.native.target_encoding)
        return target

    def allocate(self, now: float) -> list[Consumer]:
        """Share each subscriber transport's downlink estimate across its consumers (allocation.py):
        set each one's allowed encoding, pause for bandwidth what does not fit (once the estimate is
        evidence) and resume it when it fits, and probe a transport whose streams get less than they
        ask for (ProbeState says when). Returns the consumers whose bandwidth pause changed."""
        by_transport: dict[Any, list[Consumer]] = {}
        for c in self.consumers:
            if c.native is not None and c.transport is not None and c.transport.native is not None:
                by_transport.setdefault(c.transport, []).append(c)
        changed = []
        live = {id(t) for t in by_transport}
        self._probes = {k: v for k, v in self._probes.items() if k in live}
        for t, consumers in by_transport.items():
            bwe = t.native.bwe
            state = self._probes.setdefault(id(t), ProbeState())
            state.observe(bwe, now, self.counts)
            wants = [self._want(c) for c in consumers]
            choices, probe_bps = allocation.allocate(bwe["estimate_bps"], wants, evidence=bwe["limited"],
                                                     congested=state.congested(bwe, now))
            for choice in choices:
                consumer = choice.key
                assert isinstance(consumer, Consumer)
                consumer.allowed = choice.encoding
                if choice.paused != consumer.bandwidth_paused:
                    log.info("stream %s to %s %s for bandwidth (estimate %d bit/s)", consumer.producer.producer_id,
                             consumer.subscriber_id, "paused" if choice.paused else "resumed", bwe["estimate_bps"])
                    consumer.bandwidth_paused = choice.paused
                    self.counts["bandwidth_pauses"] += choice.paused
                    self._apply_pause(consumer)
                    changed.append(consumer)
            if probe_bps is not None and not bwe["probing"] and state.due(now):
                log.debug("probe transport=%s to %d bit/s (estimate %d, remb %d, ok %d, failed %d, decreases %d)",
                          t.native.id, probe_bps, bwe["estimate_bps"], bwe["remb_bps"], bwe["probes_ok"],
                          bwe["probes_failed"], bwe["decreases"])
                state.started(now)
                self.counts["probes"] += 1
                self.worker.probe(t.native, int(min(probe_bps, PROBE_MAX_BPS)), PROBE_DURATION_MS)
        return changed

    def has_transport(self, native_id: int) -> bool:
        """Whether a consumer of this router sends on the native transport with this id."""
        return any(c.transport is not None and c.transport.native is not None and c.transport.native.id == native_id
                   for c in self.consumers)

    def stats(self) -> dict[str, int]:
        """The counts, and what holds now: streams paused for bandwidth, subscribers whose estimate is
        evidence of a limit, transports probing."""
        out = dict(self.counts)
        out["streams_paused_bandwidth"] = sum(c.bandwidth_paused for c in self.consumers)
        transports = {id(c.transport): c.transport for c in self.consumers
                      if c.transport is not None and c.transport.native is not None}
        bwe = [t.native.bwe for t in transports.values()]
        out["subscribers_limited"] = sum(b["limited"] for b in bwe)
        out["subscribers_probing"] = sum(b["probing"] for b in bwe)
        return out

    @staticmethod
    def _want(c: Consumer) -> allocation.Want:
        p = c.producer
        if len(p.encodings) < 2:
            return allocation.Want(c, p.kind, None, bps=p.bitrate, screen=p.source == "screen")
        desired = pick_encoding(p.sizes, p.active, c.max_height)
        return allocation.Want(c, p.kind, desired, list(p.bitrates) or [0.0] * len(p.encodings),
                               list(p.active), screen=p.source == "screen", height=c.max_height or 0,
                               current=c.native.encoding)

    def _apply_pause(self, c: Consumer) -> None:
        if c.native is None:
            return
        if c.bandwidth_paused or c.producer.paused:
            c.native.pause()
        else:
            c.native.resume(True)
            self.request_keyframe(c.producer)

    def close_consumer(self, c: Consumer) -> None:
        if c in self.consumers:
            self.consumers.remove(c)
        if c.native is not None:
            self.worker.close_consumer(c.native)
            c.native = None

    # -- key frames ---------------------------------------------------------------------------------
    def request_keyframe(self, p: Producer) -> None:
        """A PLI to p's sender. The core keeps the rate limit (one per encoding per 500 ms) and sends a
        request that falls inside it when the window closes."""
        if p.native is not None and self.producers.get(p.producer_id) is p:
            self.worker.request_keyframe(p.native)

    # -- stats --------------------------------------------------------------------------------------
    def quality(self) -> dict[str, dict[str, Any]]:
        """Per participant, what the core counted for its producers and consumers so far (totals since
        they opened: packets and bytes each way, the losses receiver reports counted, key-frame requests
        to its encoders and from its decoders), the worst loss, jitter and RTT the last receiver reports
        gave, and how many of its video consumers of simulcast producers are on each encoding now. One
        pass over the room's producers and consumers, however many participants."""
        out: dict[str, dict[str, Any]] = {}

        def entry(pid: str) -> dict[str, Any]:
            return out.setdefault(pid, dict(streams_sent=0, streams_received=0, packets_in=0, bytes_in=0,
                                            packets_out=0, bytes_out=0, packets_lost=0, keyframe_requests=0,
                                            freezes=0, fraction_lost=0.0, jitter_ms=0.0, rtt_ms=0.0, layers={}))
        for p in self.producers.values():
            if p.native is not None:
                s, q = p.native.stats, entry(p.participant_id)
                q["streams_sent"] += 1
                q["packets_in"] += s["packets_in"]
                q["bytes_in"] += s["bytes_in"]
                q["keyframe_requests"] += p.keyframes_requested
        for c in self.consumers:
            if c.native is not None:
                s, q = c.native.stats, entry(c.subscriber_id)
                q["streams_received"] += 1
                q["packets_out"] += s["packets_out"]
                q["bytes_out"] += s["bytes_out"]
                q["packets_lost"] += max(0, s["packets_lost"])     # cumulative, as its receiver reports it
                q["freezes"] += s["plis"]          # the subscriber's decoder lost its picture and asked again
                q["fraction_lost"] = max(q["fraction_lost"], s["fraction_lost"])
                q["jitter_ms"] = max(q["jitter_ms"], round(s["jitter"] * 1000 / (c.clock_rate or 90000), 2))
                q["rtt_ms"] = max(q["rtt_ms"], s["rtt_ms"])
                if c.producer.kind == "video" and len(c.producer.encodings) > 1 and s["encoding"] >= 0:
                    rid = ("paused" if c.bandwidth_paused
                           else c.producer.encodings[min(s["encoding"], len(c.producer.encodings) - 1)][0])
                    q["layers"][rid] = q["layers"].get(rid, 0) + 1
        return out

    def close(self) -> None:
        for p in list(self.producers.values()):
            self.close_producer(p)
        for c in list(self.consumers):
            self.close_consumer(c)
