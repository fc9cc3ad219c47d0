"""A live room's media: publishing (a publish transport per offer, its tracks as producers), subscribing
(one subscribe transport per participant, renegotiated as streams come and go) and the transports'
lifecycle. Uses the SFU router for producers and consumers and the WebRTC server for transports."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import errors as E
from . import policy
from ..mcu.speaker import ActiveSpeaker
from .lecture import LectureMix
from ..sfu.router import Consumer, Producer, Router
from ..webrtc import negotiation, sdp
from ..webrtc.server import WebRtcServer, WebRtcTransport

if TYPE_CHECKING:
    from .live import LiveRoom, Participant

log = logging.getLogger(__name__)

DYNACAST_HOLD_S = 3.0    # a simulcast layer nobody wants this long is paused at its publisher


@dataclass(eq=False)
class Subscription:
    """One m-line of a subscribe transport: the section offered and the consumer behind it."""
    section: sdp.OutgoingMedia
    producer: Producer
    consumer: Consumer | None = None
    offered_active: bool = False   # what the last offer sent said about this section
    ext_ids: dict[str, int] = field(default_factory=dict)   # header extensions the answer kept
    max_height: int | None = None  # the subscriber's wanted picture height (stream-settings)
    max_fps: float | None = None   # ... and frame rate
    rtx_pt: int = 0                # RTX payload type the answer kept (0: retransmissions on the media SSRC)


@dataclass(eq=False)
class ParticipantMedia:
    # each publish transport with the number of tracks its offer carried
    publish_transports: dict[WebRtcTransport, int] = field(default_factory=dict)
    publish_sources: dict[WebRtcTransport, str] = field(default_factory=dict)   # ... and its video's source
    subscribe_transport: WebRtcTransport | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    follow_all: bool = False        # subscribed to every stream, now and later
    wanted: set[str] = field(default_factory=set)
    offer_version: int = 0
    offer_pending: bool = False
    renegotiate: bool = False
    next_mid: int = 0


class RoomMedia:
    def __init__(self, room: "LiveRoom", server: WebRtcServer):
        self.room = room
        self.server = server
        self.router = Router(server.worker)
        self.speaker = ActiveSpeaker()
        # a lecture composites its publishers once there are two (lecture.py)
        settings = room.room.settings
        width, height = (int(x) for x in settings.get("composite_size", "1280x720").split("x"))
        self.lecture = (LectureMix(self, width=width, height=height, fps=settings.get("composite_fps", 30),
                                   layout=settings.get("layout", "speaker"), codec=settings.get("composite_codec", "vp8"),
                                   small=(width // 2, height // 2) if height > 360 else None)
                        if room.room.mode == "lecture" else None)

    @property
    def producers(self) -> dict[str, Producer]:
        return self.router.producers

    def live_producers(self) -> list[Producer]:
        return [p for p in self.router.producers.values() if p.live]

    # -- publish ------------------------------------------------------------------------------------
    def publish(self, p: "Participant", offer_sdp: str, source: str = "camera") -> str:
        """Answer a publish offer with a new publish transport; its tracks become producers once the
        transport connects (its video ones showing `source`: camera or screen). The participant's caps
        (transports, tracks, m-lines) are checked here."""
        limits = self.room.manager.limits
        if len(p.media.publish_transports) >= limits.publish_transports_per_participant:
            raise E.CapacityExceeded(f"at most {limits.publish_transports_per_participant} publish transports "
                                     "per participant: unpublish one first", reason="too many transports")
        # kept to the live ones here, so a transport closed by any route counts no more
        p.media.publish_sources = {t: s for t, s in p.media.publish_sources.items() if t in p.media.publish_transports}
        if source == "screen" and sum(s == "screen" for s in p.media.publish_sources.values()) >= \
                limits.screens_per_participant:
            raise E.CapacityExceeded(f"at most {limits.screens_per_participant} screen share per participant: "
                                     "stop the one shared first", reason="too many screens")
        try:
            offer = sdp.parse(offer_sdp, "offer")
            if len(offer.media) > limits.mlines_per_offer:
                raise ValueError(f"a publish offer may carry at most {limits.mlines_per_offer} m-lines, "
                                 f"this one has {len(offer.media)}")
            negotiation.check_offer_roles(offer)
            plan = negotiation.plan_publish(offer)
        except (sdp.SdpError, ValueError) as exc:
            raise E.ValidationFailed(str(exc)) from None
        if self.streams_of(p) + len(plan.tracks) > limits.streams_per_participant:
            raise E.CapacityExceeded(f"at most {limits.streams_per_participant} published tracks per participant",
                                     reason="too many streams")
        t = self.server.create_transport("publish", plan.ext_ids, owner=p.participant_id)
        t.set_remote(offer.ice_ufrag, offer.fingerprint)
        p.media.publish_transports[t] = len(plan.tracks)
        p.media.publish_sources[t] = source
        pending = [Producer(f"{p.participant_id}-{secrets.token_hex(3)}", p.participant_id, tr.kind, tr.codec,
                            tr.mid, tr.ssrc, t, encodings=tr.encodings, rtx=tr.rtx, rtx_ssrcs=tr.rtx_ssrcs,
                            source=source if tr.kind == "video" else "camera") for tr in plan.tracks]
        t.on_connected = lambda tr: self._publish_connected(p, tr, pending)
        t.on_closed = lambda tr, reason: asyncio.ensure_future(self.transport_closed(p, tr, reason))
        return sdp.write_answer(offer, ice_ufrag=t.ufrag, ice_pwd=t.pwd, fingerprint=self.server.fingerprint,
                                ip=self.server.announced_ip, port=self.server.port, accepted=plan.accepted,
                                simulcast=plan.simulcast)

    def streams_of(self, p: "Participant") -> int:
        """p's published tracks: its producers, and the tracks of its transports still connecting."""
        producing = sum(1 for s in self.producers.values() if s.participant_id == p.participant_id)
        return producing + sum(n for t, n in p.media.publish_transports.items() if t.state != "connected")

    def _publish_connected(self, p: "Participant", t: WebRtcTransport, pending: list[Producer]) -> None:
        """Open the producers at once, in the same step as the transport (a track without a=ssrc is
        bound by the MID extension of its first packets, which must not arrive before its producer);
        announcing them waits for the loop."""
        if not self.room.has(p) or t.state != "connected":
            return
        try:
            # The right is checked again where it takes effect: a floor revoked (or a role changed)
            # while this transport was connecting leaves it nothing to publish.
            policy.check_publish(self.room.room, p)
        except E.EnxError as exc:
            t.close(f"not allowed to publish: {exc.desc}")
            return
        muted = self.room.muted.get(p.user_ref, set())
        for producer in pending:
            self.router.create_producer(producer)
            if producer.kind in muted:      # a server mute holds across republishing
                self.router.set_paused(producer, True)
        asyncio.ensure_future(self._announce([x for x in pending if x.live]))

    async def _announce(self, producers: list[Producer]) -> None:
        for producer in producers:
            if self.producers.get(producer.producer_id) is producer:
                await self.room.stream_live(producer)

    async def producer_learned(self, producer: Producer) -> None:
        """A producer's SSRC was learned from its first packets (no a=ssrc in the offer)."""
        await self.room.stream_live(producer)

    async def unpublish(self, p: "Participant", stream_ids: list[str] | None) -> list[str]:
        own = [s for s in self.producers.values() if s.participant_id == p.participant_id]
        if stream_ids is not None:
            unknown = set(stream_ids) - {s.producer_id for s in own}
            if unknown:
                raise E.NotFound(f"not your stream(s): {', '.join(sorted(unknown))}")
            own = [s for s in own if s.producer_id in stream_ids]
        emptied = {id(s.transport): s.transport for s in own}
        for s in own:
            await self.remove_producer(s, "unpublished")
        # Close the transports this call emptied; unpublishing everything also closes the ones still
        # connecting (whose streams would otherwise go live later, after the right was withdrawn).
        closing = list(p.media.publish_transports) if stream_ids is None else list(emptied.values())
        for t in closing:
            if t in p.media.publish_transports and not any(x.transport is t for x in self.producers.values()):
                del p.media.publish_transports[t]
                t.on_closed = None
                t.close("unpublished")
        return [s.producer_id for s in own]

    async def remove_producer(self, s: Producer, reason: str, announce: bool = True) -> None:
        if self.producers.get(s.producer_id) is not s:
            return
        was_live = s.live
        if s.kind == "audio":
            self.speaker.forget(s.participant_id)
        # Closed first, in this step of the loop: the renegotiations below must not offer it again, and
        # a second removal racing this one (unpublish and a transport closing) finds nothing to do.
        self.router.close_producer(s)
        for sub in list(self.room.participants.values()):
            changed = False
            for sm in sub.media.subscriptions:
                if sm.producer is s and sm.section.active:
                    sm.consumer = None          # closed with the producer
                    sm.section.active = False
                    changed = True
            if changed:
                await self.update_subscription(sub)
        if was_live:
            await self.room.stream_gone(s, reason, announce)
        if self.lecture is not None and not self.lecture.is_output(s):
            await self.lecture.update()

    async def transport_closed(self, p: "Participant", t: WebRtcTransport, reason: str) -> None:
        if not self.room.has(p):
            return
        if t in p.media.publish_transports:
            del p.media.publish_transports[t]
            for s in [s for s in self.producers.values() if s.transport is t]:
                await self.remove_producer(s, "transport closed")
        if t is p.media.subscribe_transport:
            for sm in p.media.subscriptions:
                if sm.consumer is not None:
                    self.router.close_consumer(sm.consumer)
            p.media.subscribe_transport = None
            p.media.subscriptions.clear()
            p.media.offer_pending = False
        await self.room.notifier.transport_closed(p, t.direction, reason)

    def close_participant(self, p: "Participant") -> None:
        """Close p's transports (its producers are removed by the caller first)."""
        for sm in p.media.subscriptions:
            if sm.consumer is not None:
                self.router.close_consumer(sm.consumer)
        for t in p.media.publish_transports:
            t.on_closed = None
            t.close("participant left")
        if p.media.subscribe_transport is not None:
            p.media.subscribe_transport.on_closed = None
            p.media.subscribe_transport.close("participant left")
        p.media.subscriptions.clear()

    # -- subscribe ----------------------------------------------------------------------------------
    async def subscribe(self, p: "Participant", stream_ids: list[str] | None) -> None:
        if stream_ids is None:
            p.media.follow_all = True
        else:
            unknown = [sid for sid in stream_ids if sid not in self.producers]
            if unknown:
                raise E.NotFound(f"unknown stream(s): {', '.join(unknown)}")
            p.media.wanted |= set(stream_ids)
        await self.update_subscription(p, force=True)

    def wants(self, p: "Participant", s: Producer) -> bool:
        if s.participant_id == p.participant_id:
            return False
        decided = self.lecture.wants(p, s) if self.lecture is not None else None
        if s.participant_id not in self.room.participants and decided is None:
            return False        # its publisher is leaving: its streams go in a moment
        if decided is not None:
            return decided
        return p.media.follow_all or s.producer_id in p.media.wanted

    async def update_subscription(self, p: "Participant", force: bool = False) -> None:
        """Bring p's subscribe transport in line with the streams it wants; send a new offer if needed."""
        m = p.media
        if self.room.ended or (not m.follow_all and not m.wanted and not m.subscriptions):
            return
        if m.offer_pending or (m.subscribe_transport is not None and m.subscribe_transport.state != "connected"):
            # One negotiation at a time, and none while the transport's first connect runs: aiortc 1.16
            # never starts the receivers of m-lines that a renegotiation adds during its ICE/DTLS
            # connect (its __connect races itself), so their tracks get no packets. Offered again once
            # the answer is in and the transport is connected.
            m.renegotiate = True
            return
        have = {sm.producer.producer_id for sm in m.subscriptions if sm.section.active}
        added = [s for s in self.live_producers() if self.wants(p, s) and s.producer_id not in have]
        dropped = any(sm.offered_active and not sm.section.active for sm in m.subscriptions)
        if not (added or dropped or force) or not (added or m.subscriptions):
            return  # nothing to offer yet: the first stream-added brings the first offer
        if m.subscribe_transport is None:
            t = self.server.create_transport("subscribe", owner=p.participant_id)
            m.subscribe_transport = t
            t.on_connected = lambda tr: asyncio.ensure_future(self._subscribe_connected(p))
            t.on_closed = lambda tr, reason: asyncio.ensure_future(self.transport_closed(p, tr, reason))
        for s in added:
            section = negotiation.subscriber_section(m.next_mid, s.kind, s.codec, s.participant_id, s.producer_id)
            m.next_mid += 1
            m.subscriptions.append(Subscription(section, s))
        for sm in m.subscriptions:
            sm.offered_active = sm.section.active
        t = m.subscribe_transport
        m.offer_version += 1
        offer = sdp.write_offer([sm.section for sm in m.subscriptions], ice_ufrag=t.ufrag, ice_pwd=t.pwd,
                                fingerprint=self.server.fingerprint, ip=self.server.announced_ip,
                                port=self.server.port, version=m.offer_version)
        m.offer_pending = True
        await self.room.notifier.offer(p, offer, [sm for sm in m.subscriptions if sm.section.active])

    async def answer(self, p: "Participant", answer_sdp: str) -> None:
        m = p.media
        if not m.offer_pending or m.subscribe_transport is None:
            raise E.Conflict("no subscribe offer is waiting for an answer")
        try:
            answer = sdp.parse(answer_sdp, "answer")
            negotiation.check_answer_roles(answer)
        except (sdp.SdpError, ValueError) as exc:
            raise E.ValidationFailed(str(exc)) from None
        t = m.subscribe_transport
        if t.remote_ufrag is None:
            t.set_remote(answer.ice_ufrag, answer.fingerprint)
        kept = negotiation.answered_extensions(answer)
        rtx = negotiation.answered_rtx(answer)
        for sm in m.subscriptions:
            if sm.consumer is None:   # a live consumer keeps what it was created with
                sm.ext_ids = kept.get(sm.section.mid, {})
                sm.rtx_pt = rtx.get(sm.section.mid, 0)
        m.offer_pending = False
        if t.state == "connected":
            self._create_consumers(p)
            await self._renegotiate_if_asked(p)

    async def _renegotiate_if_asked(self, p: "Participant") -> None:
        if p.media.renegotiate and not p.media.offer_pending:
            p.media.renegotiate = False
            await self.update_subscription(p, force=True)

    async def _subscribe_connected(self, p: "Participant") -> None:
        if self.room.has(p):
            self._create_consumers(p)
            await self._renegotiate_if_asked(p)

    def _create_consumers(self, p: "Participant") -> None:
        t = p.media.subscribe_transport
        for sm in p.media.subscriptions:
            if not sm.section.active or sm.consumer is not None or not sm.producer.live:
                continue
            pt, clock_rate = negotiation.consumer_rtp_parameters(sm.producer.codec)
            sm.consumer = self.router.create_consumer(sm.producer, t, p.participant_id, sm.section.ssrc, pt,
                                                      clock_rate, ext_ids=sm.ext_ids, mid=sm.section.mid,
                                                      max_height=sm.max_height, max_fps=sm.max_fps,
                                                      rtx_ssrc=sm.section.rtx_ssrc, rtx_payload_type=sm.rtx_pt)

    def switch_subscription(self, p: "Participant", sm: Subscription, s: Producer) -> Consumer | None:
        """p's m-line sm carries stream s (same kind and codec) from now on instead of its stream, without
        renegotiating: the consumer changes over at s's next key frame, the old stream feeding it until
        then (Router.switch_consumer), so the picture never stops. p is told (stream-switched). Returns
        the consumer (None while the m-line has none yet)."""
        was = sm.producer.producer_id
        sm.producer = s
        if sm.consumer is not None and not self.router.switch_consumer(sm.consumer, s):
            self.router.close_consumer(sm.consumer)
            sm.consumer = None
        asyncio.ensure_future(self.room.notifier.stream_switched(p, sm, was))
        return sm.consumer

    def stream_settings(self, p: "Participant", stream_id: str, max_height: int | None,
                        max_fps: float | None = None) -> int | None:
        sm = next((x for x in p.media.subscriptions if x.producer.producer_id == stream_id and x.section.active), None)
        if sm is None:
            raise E.NotFound(f"you do not receive stream {stream_id}")
        if sm.producer.kind != "video":
            raise E.ValidationFailed("stream settings are for video streams")
        sm.max_height, sm.max_fps = max_height, max_fps
        if len(sm.producer.encodings) < 2:
            # one encoding: only its VP8 temporal layers can follow max_fps
            if sm.consumer is not None and sm.consumer.native is not None:
                sm.consumer.max_height, sm.consumer.max_fps = max_height, max_fps
                self.router.select_encoding(sm.consumer)
            return None
        if sm.consumer is None or sm.consumer.native is None:
            return 0               # a consumer starts on the lowest; the setting applies once it exists
        sm.consumer.max_height, sm.consumer.max_fps = max_height, max_fps
        target = self.router.select_encoding(sm.consumer)
        return sm.consumer.native.target_encoding if target is None else target

    def select_layers(self) -> None:
        """Share each subscriber's downlink estimate across its streams (Router.allocate: layers allowed,
        streams paused for bandwidth, told to the subscriber), point every simulcast consumer at its layer
        again (a layer's size is known only once its key frames arrive, and a browser changes sizes as its
        bandwidth ramps), then dynacast: the layers above
        the highest one any consumer wants are paused at the publisher after DYNACAST_HOLD_S unwanted,
        and resumed the moment one is wanted."""
        now = time.monotonic()
        for producer in self.producers.values():
            self.router.observe_encodings(producer)
        self.reallocate(now)
        self._follow_speaker(now)
        for producer in list(self.producers.values()):
            active = self.router.dynacast(producer, now, DYNACAST_HOLD_S)
            owner = self.room.participants.get(producer.participant_id)
            if active is not None and owner is not None:
                asyncio.ensure_future(self.room.notifier.layers(owner, producer, active))
            elif active is not None and self.lecture is not None:
                self.lecture.set_layers(producer, active)

    def _follow_speaker(self, now: float) -> None:
        """The active speaker from the publishers' audio levels; a change is told to everyone in the room."""
        levels = self.router.audio_levels()
        by_participant = {k: level for k, (_, level) in levels.items()}
        if self.lecture is not None:
            self.lecture.set_levels(by_participant)
        who = self.speaker.update(by_participant, now)
        if who is not None and who in levels:
            stream = levels[who][0]
            for p in list(self.room.participants.values()):
                asyncio.ensure_future(self.room.notifier.active_speaker(p, stream))

    def reallocate(self, now: float) -> None:
        """Allocation and layer selection on what was last observed (a subscriber's estimate fell: act
        now; observing again this soon would see the layers between two packets as not arriving)."""
        for c in self.router.allocate(now):
            subscriber = self.room.participants.get(c.subscriber_id)
            if subscriber is not None:
                asyncio.ensure_future(self.room.notifier.stream_state(subscriber, c.producer, c.bandwidth_paused))
        for c in self.router.consumers:
            self.router.select_encoding(c)

    def close(self) -> None:
        if self.lecture is not None:
            self.lecture.close()
        self.router.close()
