"""The live room: a room with a session on this node, its participants, their streams, the floor and
the duration timer, and the moderator actions on them. Rules come from `policy`; media from `media`;
what happens is published on the event bus; what participants are told goes through the `Notifier`
the room is given (signaling implements it), so the room never imports the protocol.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from .. import errors as E
from .. import events as ev
from ..limits import Limits
from ..control.rooms import Room, RoomService
from ..recording.recorder import Recorder, StreamInfo, Take
from ..recording.transcripts import Transcriber
from ..control.tokens import TokenService
from ..sfu.router import Producer
from ..webrtc.server import WebRtcServer
from . import policy
from .recording_mix import RecordingMix
from .media import ParticipantMedia, RoomMedia, Subscription

log = logging.getLogger(__name__)

QUALITY_INTERVAL_S = 10.0   # one QualitySample per participant this often (settings.quality_interval_s)
LAYER_INTERVAL_S = 0.5      # simulcast consumers are pointed at their layer again this often (sizes change)
APP = "app"                 # who acted, when the application did (REST) rather than a moderator


class Channel(Protocol):
    """A participant's link to its client."""

    async def send(self, message: dict[str, Any], sender: str | None = None) -> None:
        """sender: the participant id a chat or relay comes from (None: the node's own message)."""

    async def close(self, code: int, reason: str) -> None: ...


class Notifier(Protocol):
    """What the room tells participants; `to` is who receives it."""

    async def participant_joined(self, to: Iterable["Participant"], p: "Participant") -> None: ...

    async def participant_left(self, to: Iterable["Participant"], p: "Participant", reason: str) -> None: ...

    async def stream_added(self, to: Iterable["Participant"], s: Producer) -> None: ...

    async def stream_removed(self, to: Iterable["Participant"], s: Producer) -> None: ...

    async def muted(self, to: Iterable["Participant"], target: "Participant", kind: str, muted: bool,
                    by: "Participant", streams: list[str]) -> None: ...

    async def floor(self, to: Iterable["Participant"], action: str, target: "Participant",
                    by: "Participant") -> None: ...

    async def chat(self, to: Iterable["Participant"], sender: "Participant", text: str,
                   recipients: list[str] | None, sent: float) -> None: ...

    async def session_warning(self, to: Iterable["Participant"], seconds_left: int) -> None: ...

    async def session_ended(self, to: Iterable["Participant"], reason: str) -> None: ...

    async def removed(self, p: "Participant", by: str, reason: str) -> None:
        """p is removed: by a moderator (their participant id) or by the application ("app")."""

    async def offer(self, p: "Participant", sdp: str, subscriptions: list[Subscription]) -> None: ...

    async def stream_switched(self, p: "Participant", sm: Subscription, was: str) -> None:
        """p's m-line sm carries another stream from now on (was: the stream it carried)."""

    async def transport_closed(self, p: "Participant", direction: str, reason: str) -> None: ...

    async def relay(self, p: "Participant", sender: "Participant", payload: dict[str, Any]) -> None: ...

    async def layers(self, p: "Participant", s: Producer, active: list[bool]) -> None:
        """Dynacast: which simulcast layers of p's stream s someone receives (the others may pause)."""

    async def stream_state(self, p: "Participant", s: Producer, paused: bool) -> None:
        """Stream s is paused (or flows again) to p because its downlink cannot carry it."""

    async def active_speaker(self, p: "Participant", s: Producer) -> None:
        """The participant publishing audio stream s is now the room's active speaker."""

    async def disconnect(self, p: "Participant", why: str) -> None:
        """End p's connection after what was sent to it; why: session-ended or removed."""


@dataclass(eq=False)
class Participant:
    participant_id: str
    user_ref: str
    name: str
    role: str
    token_id: str
    channel: Channel
    joined: float = field(default_factory=time.time)
    floor: bool = False
    media: ParticipantMedia = field(default_factory=ParticipantMedia)


class LiveRoom:
    def __init__(self, manager: "RoomManager", room: Room, session_id: str):
        self.manager = manager
        self.notifier = manager.notifier
        self.bus = manager.bus
        self.room = room
        self.session_id = session_id
        self.participants: dict[str, Participant] = {}
        self.floor_requests: set[str] = set()
        # Moderator decisions the room holds for the rest of the session, by user id (so a rejoin does not
        # undo them): the kinds a user is server-muted in, and the users removed (any token of theirs).
        self.muted: dict[str, set[str]] = {}
        self.removed_users: set[str] = set()
        self.chat_bytes_left = manager.limits.chat_bytes_per_session
        self.ended = False
        self.media = RoomMedia(self, manager.server) if manager.server is not None else None
        self._timer: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        # the core's totals per participant at the last quality sample (monotonic time, totals), and the
        # rates computed then: what current_quality() measures against
        self._quality_seen: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._quality_rates: dict[str, dict[str, float]] = {}
        self.recording: Take | None = None       # the recording running now (recording/recorder.py)
        self.recording_mix: RecordingMix | None = None   # its composite, in a group room that asks for one
        # A scheduled room's session ends with its window; any other ends `duration` after it started.
        limit = room.window[1] - time.time() if room.window else room.duration_s
        if limit:
            self.limit_duration(max(1, int(limit)))
        if self.media is not None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_quality())
        # a transcript is made from the recorded audio: a room that wants one is recorded
        self.transcribe = bool(room.settings.get("transcription")) and manager.transcriber is not None
        if ((room.settings.get("auto_recording") or self.transcribe) and self.media is not None
                and manager.recorder is not None):
            self.start_recording("auto")

    def limit_duration(self, seconds: int) -> None:
        """End the session `seconds` from now (with a warning before), replacing any earlier limit."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().create_task(self._duration_limit(seconds))

    # -- helpers ------------------------------------------------------------------------------------
    def has(self, p: Participant) -> bool:
        return not self.ended and self.participants.get(p.participant_id) is p

    def everyone(self, exclude: Participant | None = None) -> list[Participant]:
        return [p for p in self.participants.values() if p is not exclude]

    def moderators(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.role == "moderator"]

    def audience_of(self, p: Participant) -> list[Participant]:
        """Who hears about p joining or leaving."""
        people = self.everyone(exclude=p)
        return people if policy.announced(self.room, p) else [x for x in people if x.role == "moderator"]

    def visible_to(self, p: Participant) -> list[Participant]:
        return policy.visible_to(self.room, p, self.participants.values())

    def target(self, pid: str) -> Participant:
        t = self.participants.get(pid)
        if t is None:
            raise E.NotFound(f"no participant {pid!r} in this session")
        return t

    def _event(self, event_type: type[ev.Event], /, **fields: Any) -> None:
        self.bus.publish(event_type(self.session_id, self.room.room_id, self.room.app_id, **fields))

    def _media(self) -> RoomMedia:
        if self.media is None:
            raise E.Conflict("this node runs without a media worker")
        return self.media

    def live_streams(self, p: Participant) -> list[Producer]:
        """The live streams p may know of (a lecture's MCU outputs only as they are announced to p)."""
        if self.media is None:
            return []
        lecture = self.media.lecture
        return [s for s in self.media.live_producers() if lecture is None or lecture.visible_to(p, s)]

    # -- membership ---------------------------------------------------------------------------------
    def admit(self, p: Participant) -> None:
        self.participants[p.participant_id] = p
        self._event(ev.ParticipantJoined, participant_id=p.participant_id, user_ref=p.user_ref, name=p.name,
                    role=p.role, token_id=p.token_id)
        log.info("joined room=%s participant=%s role=%s", self.room.room_id, p.participant_id, p.role)

    async def announce_join(self, p: Participant) -> None:
        await self.notifier.participant_joined(self.audience_of(p), p)

    async def leave(self, p: Participant, reason: str) -> None:
        if p.participant_id not in self.participants:
            return
        await self._drop(p, reason, announce=True)
        if not self.participants and not self.ended:
            await self.end("last-left")

    async def _drop(self, p: Participant, reason: str, announce: bool) -> None:
        audience = self.audience_of(p)
        self.participants.pop(p.participant_id, None)
        self.floor_requests.discard(p.participant_id)
        if self.media is not None:
            for s in [s for s in self.media.producers.values() if s.participant_id == p.participant_id]:
                await self.media.remove_producer(s, "participant left", announce=announce)
            self.media.close_participant(p)
        self._event(ev.ParticipantLeft, participant_id=p.participant_id, reason=reason)
        log.info("left room=%s participant=%s reason=%s", self.room.room_id, p.participant_id, reason)
        if announce:
            await self.notifier.participant_left([x for x in audience if x.participant_id in self.participants],
                                                 p, reason)

    async def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True       # before any await: the duration timer and the last leave may both get here
        for task in (self._timer, self._sampler):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        await self.notifier.session_ended(self.everyone(), reason)
        if self.recording is not None:
            self.stop_recording("session-ended")
        if self.transcribe and self.manager.transcriber is not None:
            self.manager.transcriber.request(self.room.app_id, self.room.room_id, self.session_id)
        for p in list(self.participants.values()):
            await self._drop(p, f"session-ended:{reason}", announce=False)
            await self.notifier.disconnect(p, "session-ended")
        if self.media is not None:
            self.media.close()
        self.manager.forget(self)
        self._event(ev.SessionEnded, reason=reason)
        log.info("session ended room=%s session=%s reason=%s", self.room.room_id, self.session_id, reason)

    async def _duration_limit(self, seconds: int) -> None:
        # Warn a minute before the end (a fifth of the session if shorter), then end it.
        warn_before = min(60, seconds // 5)
        try:
            await asyncio.sleep(seconds - warn_before)
            await self.notifier.session_warning(self.everyone(), warn_before)
            await asyncio.sleep(warn_before)
            await self.end("duration")
        except asyncio.CancelledError:
            pass

    async def _sample_quality(self) -> None:
        try:
            next_sample = time.monotonic() + self.manager.quality_interval
            while not self.ended:
                await asyncio.sleep(LAYER_INTERVAL_S)
                if self.media is not None:
                    self.media.select_layers()
                if time.monotonic() >= next_sample:
                    next_sample += self.manager.quality_interval
                    self.sample_quality()
        except asyncio.CancelledError:
            pass

    def sample_quality(self) -> None:
        """A QualitySample per participant from the core's counters (what the CDR will read)."""
        if self.media is None:
            return
        quality = self.media.router.quality()
        for pid in self.participants:
            if pid in quality:
                self._event(ev.QualitySample, participant_id=pid, **quality[pid])
        now = time.monotonic()
        self._quality_rates = self._rates(quality, now)
        self._quality_seen = (now, quality)

    def _rates(self, quality: dict[str, dict[str, Any]], now: float) -> dict[str, dict[str, float]]:
        """Bits per second each participant sent to the node and received from it since the last sample."""
        if self._quality_seen is None:
            return {}
        at, seen = self._quality_seen
        dt = now - at
        out = {}
        for pid, q in quality.items():
            before = seen.get(pid)
            if before is not None and dt > 0:
                out[pid] = {"bitrate_sent_bps": max(0.0, (q["bytes_in"] - before["bytes_in"]) * 8 / dt),
                            "bitrate_received_bps": max(0.0, (q["bytes_out"] - before["bytes_out"]) * 8 / dt)}
        return out

    def current_quality(self) -> dict[str, dict[str, Any]]:
        """Per participant, its media as the core counts it now (the REST API's live view): stream counts,
        the worst loss / jitter / RTT of the latest receiver reports about what the node sends it, key-frame
        requests, and its bitrates since the last quality sample (a second at least; the sample's own
        before that)."""
        if self.media is None:
            return {}
        now = time.monotonic()
        quality = self.media.router.quality()
        if self._quality_seen is None:
            self._quality_seen = (now, quality)          # the first look: rates from the next one on
        fresh = now - self._quality_seen[0] >= 1.0
        rates = self._rates(quality, now) if fresh else self._quality_rates
        out = {}
        for pid in self.participants:
            q = quality.get(pid)
            if q is None:
                continue
            out[pid] = {"streams_sent": q["streams_sent"], "streams_received": q["streams_received"],
                        "fraction_lost": q["fraction_lost"], "jitter_ms": q["jitter_ms"],
                        "rtt_ms": q["rtt_ms"], "keyframe_requests": q["keyframe_requests"], "freezes": q["freezes"],
                        "layers": q["layers"],
                        "bitrate_sent_bps": round(rates.get(pid, {}).get("bitrate_sent_bps", 0.0)),
                        "bitrate_received_bps": round(rates.get(pid, {}).get("bitrate_received_bps", 0.0))}
        return out

    # -- recording ----------------------------------------------------------------------------------
    def start_recording(self, by: str) -> str:
        """Record every published track (and those published later) until stop_recording or the end;
        by: the moderator's participant id, "app" (REST) or "auto" (the room's auto_recording).
        Returns the recording id."""
        if self.media is None or self.manager.recorder is None:
            raise E.Conflict("this node does not record", reason="recording unavailable")
        if self.recording is not None:
            raise E.Conflict("the room is being recorded already", reason="already recording")
        settings = self.room.settings
        if self.room.mode == "group" and settings.get("single_file_recording"):
            width, height = (int(x) for x in settings.get("composite_size", "1280x720").split("x"))
            self.recording_mix = RecordingMix(self.media, width=width, height=height,
                                              fps=int(settings.get("composite_fps", 15)),
                                              codec=settings.get("composite_codec", "vp8"))
        streams = [self._stream_info(s) for s in self.media.router.producers.values() if self._recordable(s)]
        self.recording = self.manager.recorder.begin(self.room.app_id, self.room.room_id, self.session_id, by,
                                                     streams)
        log.info("recording room=%s recording=%s by=%s", self.room.room_id, self.recording.recording_id, by)
        return self.recording.recording_id

    def stop_recording(self, by: str) -> str:
        if self.recording is None or self.manager.recorder is None:
            raise E.Conflict("the room is not being recorded", reason="not recording")
        take, self.recording = self.recording, None
        self.manager.recorder.end(take)
        if self.recording_mix is not None:
            self.recording_mix.stop()
            self.recording_mix = None
        log.info("recording stopped room=%s recording=%s by=%s", self.room.room_id, take.recording_id, by)
        return take.recording_id

    def record(self, p: Participant, action: str) -> str:
        """A moderator starts or stops the room's recording over signaling."""
        policy.check_moderator(p, "start or stop recording")
        return self.start_recording(p.participant_id) if action == "start" else self.stop_recording(p.participant_id)

    def record_streams(self, streams: list[Producer]) -> None:
        """Streams that went live while the room records (a publisher's, the lecture MCU's outputs)."""
        if self.recording_mix is not None:
            self.recording_mix.update()
        if self.recording is not None and self.manager.recorder is not None:
            for s in streams:
                if self._recordable(s):
                    self.manager.recorder.add_stream(self.recording, self._stream_info(s))

    def _recordable(self, s: Producer) -> bool:
        """A participant's live stream, or the lecture MCU's composite and mix (not a mix-minus)."""
        if not s.live:
            return False
        lecture = self.media.lecture if self.media is not None else None
        if lecture is not None and lecture.is_output(s):
            return s is lecture.video or s is lecture.audio
        if self.recording_mix is not None and s in self.recording_mix.outputs:
            return True
        return s.participant_id in self.participants

    def _stream_info(self, s: Producer) -> StreamInfo:
        publisher = self.participants.get(s.participant_id)
        user = publisher.user_ref if publisher else s.participant_id       # the MCU's outputs: "mcu"
        return StreamInfo(s.native, s, s.producer_id, s.participant_id, user, s.kind, s.source, s.codec)

    # -- streams ------------------------------------------------------------------------------------
    async def publish(self, p: Participant, offer_sdp: str, source: str = "camera") -> str:
        policy.check_publish(self.room, p)
        return self._media().publish(p, offer_sdp, source)

    async def stream_live(self, s: Producer) -> None:
        """A producer is live (its transport connected and its SSRC known): tell everyone, feed the
        subscribers that want it."""
        publisher = self.participants.get(s.participant_id)
        if publisher is None or self.media is None:
            return
        self._event(ev.StreamPublished, participant_id=s.participant_id, stream_id=s.producer_id, kind=s.kind,
                    codec=s.codec, source=s.source)
        self.record_streams([s])
        await self.notifier.stream_added(self.everyone(), s)
        if self.media.lecture is not None:
            await self.media.lecture.update()      # first: a second video publisher moves everyone to the MCU
        for sub in self.everyone(exclude=publisher):
            if self.media.wants(sub, s):
                await self.media.update_subscription(sub)

    async def stream_gone(self, s: Producer, reason: str, announce: bool) -> None:
        if self.recording is not None and self.manager.recorder is not None:
            self.manager.recorder.end_stream(self.recording, s.producer_id)
        if self.recording_mix is not None:
            self.recording_mix.update()
        lecture = self.media.lecture if self.media is not None else None
        if lecture is not None and lecture.is_output(s):
            if announce:
                await self.notifier.stream_removed(lecture.announce_to(s), s)
            return
        self._event(ev.StreamUnpublished, participant_id=s.participant_id, stream_id=s.producer_id, reason=reason)
        if announce:
            await self.notifier.stream_removed(self.everyone(), s)

    async def unpublish(self, p: Participant, stream_ids: list[str] | None) -> list[str]:
        if self.media is None:
            return []
        return await self.media.unpublish(p, stream_ids)

    async def subscribe(self, p: Participant, stream_ids: list[str] | None) -> None:
        policy.check_subscribe(self.room)
        await self._media().subscribe(p, stream_ids)

    async def answer(self, p: Participant, answer_sdp: str) -> None:
        await self._media().answer(p, answer_sdp)

    def stream_settings(self, p: Participant, stream_id: str, max_height: int | None,
                        max_fps: float | None = None) -> int | None:
        """How p wants a stream it receives: at most max_height lines and max_fps frames a second (None:
        the best there is). Returns the encoding it is sent now or after the next key frame (None for a
        stream of one encoding)."""
        return self._media().stream_settings(p, stream_id, max_height, max_fps)

    def set_layout(self, p: Participant, layout: str) -> None:
        """A moderator picks the lecture composite's layout (room/lecture.py)."""
        policy.check_moderator(p, "choose the layout")
        if self.media is None or self.media.lecture is None:
            raise E.Forbidden("layouts are for the composite of lecture rooms")
        self.media.lecture.set_layout(layout)

    # -- moderation and floor -----------------------------------------------------------------------
    async def set_muted(self, p: Participant, pid: str, kind: str, muted: bool) -> list[str]:
        policy.check_moderator(p, "mute others")
        target = self.target(pid)
        kinds = {"audio", "video"} if kind == "all" else {kind}
        held = self.muted.setdefault(target.user_ref, set())
        if muted:
            held |= kinds
        else:
            held -= kinds
        changed = []
        if self.media is not None:
            router = self.media.router
            for s in list(router.producers.values()):
                if s.participant_id == target.participant_id and kind in ("all", s.kind):
                    router.set_paused(s, muted)
                    changed.append(s.producer_id)
        self._event(ev.ModeratorAction, moderator_id=p.participant_id, action="mute" if muted else "unmute",
                    target_id=pid, detail=kind)
        await self.notifier.muted(self.everyone(), target, kind, muted, p, changed)
        return changed

    async def remove(self, p: Participant, pid: str, reason: str) -> None:
        policy.check_moderator(p, "remove participants")
        target = self.target(pid)
        if target is p:
            raise E.ValidationFailed("use leave to leave the room")
        self.removed_users.add(target.user_ref)
        await self._remove(target, p.participant_id, reason, "removed")

    def readmit(self, user_ref: str, by: Participant | None = None) -> None:
        """Let a removed user join this session again; by: the moderator who allows it (None: the app)."""
        if by is not None:
            policy.check_moderator(by, "readmit users")
        if user_ref not in self.removed_users:
            raise E.NotFound("that user was not removed from this session")
        self.removed_users.discard(user_ref)
        self._event(ev.ModeratorAction, moderator_id=APP if by is None else by.participant_id, action="readmit",
                    target_id=user_ref, detail="user")

    async def remove_by_app(self, user_ref: str | None, token_id: str | None, reason: str) -> list[str]:
        """The application removes a user (every participant of theirs; the user cannot rejoin the
        session) or a revoked token's holder (a new token for them is the app's to issue): they are
        told, and disconnected at once."""
        targets = [x for x in self.everyone() if x.user_ref == user_ref or x.token_id == token_id]
        if user_ref is not None:
            self.removed_users.add(user_ref)
        for target in targets:
            await self._remove(target, APP, reason, "removed-by-app")
        return [x.participant_id for x in targets]

    async def _remove(self, target: Participant, by: str, reason: str, why: str) -> None:
        self._event(ev.ModeratorAction, moderator_id=by, action="remove", target_id=target.participant_id,
                    detail=reason)
        await self.notifier.removed(target, by, reason)
        await self.leave(target, "removed")
        await self.notifier.disconnect(target, why)

    async def floor(self, p: Participant, action: str, pid: str | None) -> None:
        policy.check_floor(self.room, p, action)
        target = p
        if action in ("grant", "revoke"):
            target = self.target(pid or "")
            policy.check_floor_target(target, action)
        if action == "request":
            self.floor_requests.add(p.participant_id)
            self._event(ev.FloorChanged, participant_id=p.participant_id, action="requested", by=p.participant_id)
            await self.notifier.floor(self.moderators(), "requested", p, p)
        elif action == "grant":
            target.floor = True
            self.floor_requests.discard(target.participant_id)
            self._event(ev.FloorChanged, participant_id=target.participant_id, action="granted", by=p.participant_id)
            await self.notifier.floor(self.everyone(), "granted", target, p)
        else:
            target.floor = False
            await self.unpublish(target, None)
            done = "released" if action == "release" else "revoked"
            self._event(ev.FloorChanged, participant_id=target.participant_id, action=done, by=p.participant_id)
            await self.notifier.floor(self.everyone(), done, target, p)

    async def chat(self, p: Participant, text: str, to: list[str] | None) -> float:
        if to is not None:
            missing = [pid for pid in to if pid not in self.participants]
            if missing:
                raise E.NotFound(f"no participant(s) {', '.join(missing)} in this session")
        size = len(text.encode("utf-8"))
        if size > self.chat_bytes_left:
            raise E.CapacityExceeded("this session's chat transcript is full", reason="chat full")
        self.chat_bytes_left -= size
        sent = time.time()
        self._event(ev.ChatMessage, sender_id=p.participant_id, sender_ref=p.user_ref, sender_name=p.name, text=text,
                    to=None if to is None else tuple(to), at=sent)
        recipients = self.everyone() if to is None else [x for x in self.everyone()
                                                           if x.participant_id in set(to) | {p.participant_id}]
        await self.notifier.chat(recipients, p, text, to, sent)
        return sent

    async def relay(self, p: Participant, to: str, payload: dict[str, Any]) -> None:
        policy.check_relay(self.room)
        await self.notifier.relay(self.target(to), p, payload)


class RoomManager:
    """The live rooms of this node: joins by token, sessions started and ended, media events routed to
    the room they belong to."""

    def __init__(self, rooms: RoomService, tokens: TokenService, server: WebRtcServer | None,
                 bus: ev.EventBus, notifier: Notifier, limits: Limits | None = None, *,
                 quality_interval: float = QUALITY_INTERVAL_S, recorder: Recorder | None = None,
                 transcriber: Transcriber | None = None):
        self.limits = limits or Limits()
        self.quality_interval = quality_interval
        self.recorder = recorder
        self.transcriber = transcriber
        self.rooms_service = rooms
        self.tokens = tokens
        self.server = server
        self.bus = bus
        self.notifier = notifier
        self.live: dict[str, LiveRoom] = {}
        self.unknown_ssrc_events = 0
        self.media_counts: dict[str, int] = {}    # the routers' counts of the sessions that ended
        self.media_event_handlers = {"encoding_bound": self._encoding_bound, "unknown_ssrc": self._unknown_ssrc,
                                     "keyframe_requested": self._keyframe_requested,
                                     "producer_restart": self._producer_restart,
                                     "bandwidth_down": self._bandwidth_down}
        if server is not None:
            server.event_handlers.append(self._on_media_event)

    def join(self, channel: Channel, token: str, room_id: str | None = None) -> tuple[LiveRoom, Participant]:
        """Admit the token's holder to its room's live session, starting one if needed. One step of the
        loop (no await): the checks and the bookkeeping cannot interleave with another join."""
        claims = self.tokens.verify(token, room_id=room_id)
        room = self.rooms_service.find(claims.room_id)
        if room is None:
            raise E.TokenRevoked("the token's room no longer exists")
        window = room.window
        if window is not None and not window[0] <= time.time() < window[1]:
            # DESIGN: joins outside a scheduled room's window are refused (tokens come a little earlier).
            raise E.TokenOutsideWindow("this scheduled room is not open now")
        live = self.live.get(room.room_id)
        if live is not None:
            live.room = room  # settings changed by a PATCH apply to the next join
            if any(p.token_id == claims.token_id for p in live.participants.values()):
                raise E.TokenAlreadyUsed("this token is in use by a connected participant")
            if claims.user_ref in live.removed_users:
                raise E.Forbidden("a moderator removed this user from the session", reason="removed")
        policy.check_capacity(room, live.participants.values() if live else (), claims.role)
        session_id = live.session_id if live is not None else secrets.token_hex(12)
        # Claimed before the session exists anywhere: a refused first join leaves no session behind.
        self.tokens.claim_for_session(claims, session_id)
        if live is None:
            live = LiveRoom(self, room, session_id)
            self.live[room.room_id] = live
            self.bus.publish(ev.SessionStarted(session_id, room.room_id, room.app_id, room_details=room.to_json()))
        p = Participant(secrets.token_hex(6), claims.user_ref, claims.name or claims.user_ref, claims.role,
                        claims.token_id, channel)
        live.admit(p)
        return live, p

    def readmit_by_app(self, room_id: str, user_ref: str) -> None:
        """The application lets a removed user join the room's live session again."""
        live = self.live.get(room_id)
        if live is None:
            raise E.NotFound("the room has no live session", reason="not found")
        live.readmit(user_ref)

    async def remove_by_app(self, room_id: str, *, user_ref: str | None = None, token_id: str | None = None,
                            reason: str) -> list[str]:
        """Remove a user or a token's holder from the room's live session (none live: nothing to do)."""
        live = self.live.get(room_id)
        return await live.remove_by_app(user_ref, token_id, reason) if live is not None else []

    def forget(self, live: LiveRoom) -> None:
        if self.live.get(live.room.room_id) is live:
            del self.live[live.room.room_id]
            if live.media is not None:
                for k, v in live.media.router.counts.items():
                    self.media_counts[k] = self.media_counts.get(k, 0) + v

    async def end_all(self, reason: str) -> None:
        for live in list(self.live.values()):
            await live.end(reason)

    # -- native media events: one handler per kind the core emits (MediaEvent's docstring lists them) -
    def _on_media_event(self, event: Any) -> None:
        handler = self.media_event_handlers.get(event.kind)
        if handler is None:
            log.warning("media event of unknown kind %r", event.kind)
            return
        try:
            handler(event)
        except Exception:  # noqa: BLE001 - the rest of the drain's events must still be handled
            log.exception("media event handler failed kind=%s", event.kind)

    def _find_producer(self, native_id: int) -> tuple[LiveRoom, RoomMedia, Producer] | None:
        for live in self.live.values():
            if live.media is not None:
                p = live.media.router.by_native_id(native_id)
                if p is not None:
                    return live, live.media, p
        return None

    def _encoding_bound(self, event: Any) -> None:
        for live in self.live.values():
            if live.media is not None:
                producer = live.media.router.encoding_bound(event.producer_id, event.ssrc)
                if producer is not None:
                    asyncio.ensure_future(live.media.producer_learned(producer))
                    return

    def _unknown_ssrc(self, event: Any) -> None:
        # Not a producer's (a repair stream, a mid nobody published, a stale sender): the core dropped it.
        self.unknown_ssrc_events += 1
        log.debug("unknown ssrc transport=%s ssrc=%s mid=%r rid=%r", event.transport_id, event.ssrc, event.mid,
                  event.rid)

    def _keyframe_requested(self, event: Any) -> None:
        found = self._find_producer(event.producer_id)
        if found is not None:
            _, media, p = found
            media.router.keyframe_requested(p)

    def _bandwidth_down(self, event: Any) -> None:
        # A subscriber's estimate fell: its room shares the new figure now, not at the next layer tick.
        for live in self.live.values():
            if live.media is not None and live.media.router.has_transport(event.transport_id):
                live.media.reallocate(time.monotonic())
                return

    def _producer_restart(self, event: Any) -> None:
        # Its consumers continue without a gap (seq.pxi); worth a line in the log, nothing to decide.
        found = self._find_producer(event.producer_id)
        if found is not None:
            live, _, p = found
            log.info("producer restarted its numbering room=%s producer=%s ssrc=%s", live.room.room_id,
                     p.producer_id, event.ssrc)

    def stats(self) -> dict[str, Any]:
        downlink = dict(self.media_counts)
        for r in self.live.values():
            if r.media is not None:
                for k, v in r.media.router.stats().items():
                    downlink[k] = downlink.get(k, 0) + v
        mcu: dict[str, float] = {"running": 0}
        for r in self.live.values():
            if r.media is not None and r.media.lecture is not None and r.media.lecture.running:
                mcu["running"] += 1
                for name, value in r.media.lecture.stats().items():
                    mcu[name] = mcu.get(name, 0) + value
        return {"live_rooms": len(self.live), "unknown_ssrc_events": self.unknown_ssrc_events,
                "live_participants": sum(len(r.participants) for r in self.live.values()),
                "downlink": downlink, "mcu": mcu}
