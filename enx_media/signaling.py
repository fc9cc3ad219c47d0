"""Signaling: the room logic behind the WebSocket (join with a token, publish, subscribe, chat, floor
control, moderator actions, session lifecycle). Transport-agnostic: a connection is a `send` coroutine
and a `close` coroutine, so an embedding server can carry the same JSON messages over its own socket.

Errors are EnxError kinds; this module alone turns them into `error` messages with a code.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import jsonschema

from . import errors as E
from .rooms import MODE_CAPACITY, Room
from .sessions import SessionStore
from .webrtc import sdp as sdp_mod
from .webrtc.server import WebRtcServer, WebRtcTransport

log = logging.getLogger(__name__)

# The contract lives in api/signaling.schema.json; the package carries it as a symlink (a copy in wheels).
SCHEMA_PATH = Path(__file__).parent / "signaling.schema.json"
MAX_MESSAGE_CHARS = 256 * 1024
JOIN_TIMEOUT = 30.0
PLI_INTERVAL = 0.5   # the native core's per-producer key-frame request limit (PLI_INTERVAL_NS)

Send = Callable[[dict], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


def _load_validators() -> tuple[dict[str, jsonschema.protocols.Validator], set[str]]:
    """One validator per client message type, so an error names the field, not "no oneOf matched"."""
    schema = json.loads(SCHEMA_PATH.read_text())
    validators = {}
    for name, sub in schema["$defs"].items():
        msg_type = sub.get("properties", {}).get("type", {}).get("const")
        if msg_type is None or name.startswith("server_"):
            continue
        validators[msg_type] = jsonschema.Draft202012Validator({**sub, "$defs": schema["$defs"]})
    return validators, set(validators)


_VALIDATORS, MESSAGE_TYPES = _load_validators()


# --- room state -------------------------------------------------------------------------------------
@dataclass
class Stream:
    stream_id: str
    participant_id: str
    kind: str
    codec: str
    mid: str
    ssrc: int | None
    transport: WebRtcTransport
    producer: Any = None      # native Producer once the publish transport is connected
    muted: bool = False
    last_keyframe_request: float = 0.0

    def describe(self) -> dict:
        return {"stream_id": self.stream_id, "participant_id": self.participant_id, "kind": self.kind,
                "codec": self.codec, "muted": self.muted}


@dataclass
class SubscribedMedia:
    media: sdp_mod.OutgoingMedia
    stream: Stream
    consumer: Any = None
    offered_active: bool = False   # what the last offer sent said about this section


@dataclass
class Participant:
    participant_id: str
    user_ref: str
    name: str
    role: str
    token_id: str
    connection: "Connection"
    joined: float = field(default_factory=time.time)
    floor: bool = False
    publish_transports: list[WebRtcTransport] = field(default_factory=list)
    subscribe_transport: WebRtcTransport | None = None
    subscribed: list[SubscribedMedia] = field(default_factory=list)
    follow_all: bool = False
    wanted: set[str] = field(default_factory=set)
    offer_version: int = 0
    offer_pending: bool = False
    renegotiate: bool = False
    next_mid: int = 0

    def describe(self) -> dict:
        return {"participant_id": self.participant_id, "user_ref": self.user_ref, "name": self.name,
                "role": self.role, "floor": self.floor}

    @property
    def info(self) -> dict[str, str]:
        return {"participant_id": self.participant_id, "user_ref": self.user_ref, "name": self.name}


class RoomRuntime:
    """A room with a live session on this node."""

    def __init__(self, hub: "SignalingHub", room: Room, session_id: str):
        self.hub = hub
        self.room = room
        self.session_id = session_id
        self.participants: dict[str, Participant] = {}
        self.streams: dict[str, Stream] = {}
        self.floor_requests: set[str] = set()
        self.ended = False
        self.timer: asyncio.Task | None = None
        # A scheduled room's session ends with its window; any other ends `duration` after it started.
        limit = room.window[1] - time.time() if room.window else room.duration_s
        if limit:
            self.timer = asyncio.get_running_loop().create_task(self._duration_limit(max(1, int(limit))))

    def cancel_timer(self) -> None:
        if self.timer is not None and asyncio.current_task() is not self.timer:
            self.timer.cancel()

    async def broadcast(self, message: dict, *, exclude: str | None = None,
                        only: set[str] | None = None) -> None:
        for p in list(self.participants.values()):
            if p.participant_id == exclude or (only is not None and p.participant_id not in only):
                continue
            await p.connection.send(message)

    def moderators(self) -> set[str]:
        return {pid for pid, p in self.participants.items() if p.role == "moderator"}

    def audience_of(self, p: Participant) -> set[str] | None:
        """Who hears about p joining or leaving. In a lecture an audience member is announced to the
        moderators only: 2000 people announcing themselves to each other would be 4 million messages."""
        if self.room.mode == "lecture" and p.role != "moderator" and not p.floor:
            return self.moderators()
        return None

    def visible_to(self, viewer: Participant) -> list[Participant]:
        if self.room.mode == "lecture" and viewer.role != "moderator":
            return [x for x in self.participants.values()
                    if x.role == "moderator" or x.floor or x is viewer]
        return list(self.participants.values())

    async def _duration_limit(self, seconds: int) -> None:
        # Warn a minute before the end (a fifth of the session if shorter), then end it.
        warn_before = min(60, seconds // 5)
        try:
            await asyncio.sleep(seconds - warn_before)
            await self.broadcast({"type": "session-warning", "seconds_left": warn_before,
                                  "desc": "the session reaches its duration limit soon"})
            await asyncio.sleep(warn_before)
            await self.hub.end_session(self, "duration")
        except asyncio.CancelledError:
            pass


# --- the hub ------------------------------------------------------------------------------------------
class SignalingHub:
    def __init__(self, engine, server: WebRtcServer | None):
        self.engine = engine
        self.server = server
        self.sessions = SessionStore(engine.store, engine.rooms)
        self.rooms: dict[str, RoomRuntime] = {}
        if server is not None:
            server.event_handlers.append(self._on_media_event)

    def connect(self, send: Send, close: Close) -> "Connection":
        return Connection(self, send, close)

    async def end_session(self, runtime: RoomRuntime, reason: str) -> None:
        if runtime.ended:
            return
        runtime.ended = True
        runtime.cancel_timer()
        await runtime.broadcast({"type": "session-ended", "reason": reason})
        for p in list(runtime.participants.values()):
            await self._drop_participant(runtime, p, f"session-ended:{reason}", announce=False)
            await p.connection.close(4000, "session ended")
        self.rooms.pop(runtime.room.room_id, None)
        self.sessions.end(runtime.session_id, reason)
        log.info("session ended room=%s session=%s reason=%s", runtime.room.room_id, runtime.session_id, reason)

    # -- join / leave ---------------------------------------------------------------------------------
    async def join(self, conn: "Connection", token: str, room_id: str | None = None) -> tuple[RoomRuntime, Participant]:
        # No await from here to the end: the checks and the bookkeeping happen as one step of the loop.
        claims = self.engine.tokens.verify(token, room_id=room_id)
        room = self.engine.rooms.find(claims.room_id)
        if room is None:
            raise E.TokenRevoked("the token's room no longer exists")
        window = room.window
        if window is not None and not window[0] <= time.time() < window[1]:
            # DESIGN: joins outside a scheduled room's window are refused (tokens come a little earlier).
            raise E.TokenOutsideWindow("this scheduled room is not open now")
        runtime = self.rooms.get(room.room_id)
        if runtime is not None:
            runtime.room = room  # settings changed by a PATCH apply to the next join
            for p in runtime.participants.values():
                if p.token_id == claims.token_id:
                    raise E.TokenAlreadyUsed("this token is in use by a connected participant")
        self._check_capacity(room, runtime.participants if runtime else {}, claims.role)
        created = runtime is None
        if created:
            runtime = RoomRuntime(self, room, self.sessions.start(room))
            self.rooms[room.room_id] = runtime
        try:
            self.engine.tokens.claim_for_session(claims, runtime.session_id)
        except E.EnxError:
            if created:  # nobody joined: no session happened
                self.rooms.pop(room.room_id, None)
                runtime.cancel_timer()
                self.sessions.discard(runtime.session_id)
            raise
        p = Participant(secrets.token_hex(6), claims.user_ref, claims.name or claims.user_ref, claims.role,
                        claims.token_id, conn)
        runtime.participants[p.participant_id] = p
        self.sessions.participant_joined(runtime.session_id, p.participant_id, p.user_ref, p.name, p.role,
                                         claims.token_id)
        log.info("joined room=%s participant=%s role=%s", room.room_id, p.participant_id, p.role)
        return runtime, p

    def _check_capacity(self, room: Room, present: dict[str, Participant], role: str) -> None:
        cap = MODE_CAPACITY[room.mode]
        if len(present) >= cap:
            raise E.CapacityExceeded(f"{room.mode} rooms hold at most {cap} people and this one is full")
        moderators = sum(1 for p in present.values() if p.role == "moderator")
        others = len(present) - moderators
        if role == "moderator" and moderators >= room.settings["moderators"]:
            raise E.CapacityExceeded(f"this room admits {room.settings['moderators']} moderator(s)")
        if role != "moderator" and others >= room.settings["participants"]:
            raise E.CapacityExceeded(f"this room admits {room.settings['participants']} participant(s)")

    async def leave(self, runtime: RoomRuntime, p: Participant, reason: str) -> None:
        if p.participant_id not in runtime.participants:
            return
        await self._drop_participant(runtime, p, reason, announce=True)
        if not runtime.participants and not runtime.ended:
            await self.end_session(runtime, "last-left")

    async def _drop_participant(self, runtime: RoomRuntime, p: Participant, reason: str, announce: bool) -> None:
        runtime.participants.pop(p.participant_id, None)
        runtime.floor_requests.discard(p.participant_id)
        for s in [s for s in runtime.streams.values() if s.participant_id == p.participant_id]:
            await self._remove_stream(runtime, s, announce=announce)
        for t in p.publish_transports:
            t.on_closed = None
            t.close("participant left")
        if p.subscribe_transport is not None:
            p.subscribe_transport.on_closed = None
            p.subscribe_transport.close("participant left")
        p.subscribed.clear()
        self.sessions.participant_left(runtime.session_id, p.participant_id, reason)
        log.info("left room=%s participant=%s reason=%s", runtime.room.room_id, p.participant_id, reason)
        if announce:
            await runtime.broadcast({"type": "participant-left", "participant_id": p.participant_id,
                                     "reason": reason}, only=runtime.audience_of(p))

    # -- publish --------------------------------------------------------------------------------------
    def may_publish(self, runtime: RoomRuntime, p: Participant) -> None:
        mode = runtime.room.mode
        if mode == "p2p":
            raise E.Forbidden("p2p rooms carry media peer to peer: use relay messages, not publish")
        if p.role == "viewer":
            raise E.Forbidden("viewers do not publish")
        if mode == "lecture" and p.role != "moderator" and not p.floor:
            raise E.Forbidden("in a lecture only moderators publish; request the floor first")

    async def publish(self, runtime: RoomRuntime, p: Participant, offer_sdp: str) -> str:
        self.may_publish(runtime, p)
        if self.server is None:
            raise E.Conflict("this node runs without a media worker")
        try:
            offer = sdp_mod.parse(offer_sdp, "offer")
        except sdp_mod.SdpError as exc:
            raise E.ValidationFailed(str(exc)) from None
        if offer.setup not in (None, "actpass", "active"):
            raise E.ValidationFailed("the offer must let the node be the DTLS server (a=setup:actpass or active)")
        accepted: dict[str, bool] = {}
        ext_ids: dict[str, int] = {}
        kinds_seen: set[str] = set()
        for m in offer.media:
            ok = m.codec is not None and m.direction in ("sendonly", "sendrecv") and m.port != 0
            accepted[m.mid] = ok
            if ok:
                ext_ids.update(m.extensions)
                kinds_seen.add(m.kind)
        if not any(accepted.values()):
            raise E.ValidationFailed("the offer has no audio (Opus) or video (VP8/H.264) section to publish")
        t = self.server.create_transport("publish", ext_ids)
        t.set_remote(offer.ice_ufrag, offer.fingerprint)
        p.publish_transports.append(t)
        pending = []
        for m in offer.media:
            if accepted[m.mid]:
                s = Stream(f"{p.participant_id}-{secrets.token_hex(3)}", p.participant_id, m.kind, m.codec, m.mid,
                           m.ssrc, t)
                pending.append(s)
        t.on_connected = lambda tr: asyncio.ensure_future(self._publish_connected(runtime, p, tr, pending))
        t.on_closed = lambda tr, reason: asyncio.ensure_future(self._transport_closed(runtime, p, tr, reason))
        return sdp_mod.write_answer(offer, ice_ufrag=t.ufrag, ice_pwd=t.pwd, fingerprint=self.server.fingerprint,
                                    ip=self.server.announced_ip, port=self.server.port, accepted=accepted)

    async def _publish_connected(self, runtime: RoomRuntime, p: Participant, t: WebRtcTransport,
                                 pending: list[Stream]) -> None:
        if runtime.ended or p.participant_id not in runtime.participants or t.state != "connected":
            return
        for s in pending:
            runtime.streams[s.stream_id] = s
            if s.ssrc is not None:
                self._create_producer(s)
        for s in pending:
            if s.producer is not None:
                await self._announce_stream(runtime, s)

    def _create_producer(self, s: Stream) -> None:
        try:
            s.producer = self.server.worker.create_producer(s.transport.native, s.ssrc, s.codec)
        except ValueError as exc:
            log.warning("producer refused stream=%s: %s", s.stream_id, exc)

    async def _announce_stream(self, runtime: RoomRuntime, s: Stream) -> None:
        await runtime.broadcast({"type": "stream-added", "stream": s.describe()})
        for sub in runtime.participants.values():
            if sub.participant_id != s.participant_id and (sub.follow_all or s.stream_id in sub.wanted):
                await self._update_subscription(runtime, sub)

    def _on_media_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "unknown_ssrc":
            _, transport_id, ssrc, mid = event[:4]
            for runtime in self.rooms.values():
                for s in runtime.streams.values():
                    if (s.ssrc is None and s.mid == mid and s.transport.native is not None
                            and s.transport.native.id == transport_id):
                        s.ssrc = ssrc
                        self._create_producer(s)
                        if s.producer is not None:
                            asyncio.ensure_future(self._announce_stream(runtime, s))
                        return

    async def unpublish(self, runtime: RoomRuntime, p: Participant, stream_ids: list[str] | None) -> list[str]:
        own = [s for s in runtime.streams.values() if s.participant_id == p.participant_id]
        if stream_ids is not None:
            unknown = set(stream_ids) - {s.stream_id for s in own}
            if unknown:
                raise E.NotFound(f"not your stream(s): {', '.join(sorted(unknown))}")
            own = [s for s in own if s.stream_id in stream_ids]
        emptied = {id(s.transport): s.transport for s in own}
        for s in own:
            await self._remove_stream(runtime, s, announce=True)
        # Close the transports this call emptied; one still connecting (its streams not yet live) stays.
        for t in emptied.values():
            if t in p.publish_transports and not any(x.transport is t for x in runtime.streams.values()):
                p.publish_transports.remove(t)
                t.on_closed = None
                t.close("unpublished")
        return [s.stream_id for s in own]

    async def _remove_stream(self, runtime: RoomRuntime, s: Stream, announce: bool) -> None:
        if runtime.streams.pop(s.stream_id, None) is None:
            return
        for sub in runtime.participants.values():
            changed = False
            for sm in sub.subscribed:
                if sm.stream is s and sm.media.active:
                    if sm.consumer is not None:
                        self.server.worker.close_consumer(sm.consumer)
                        sm.consumer = None
                    sm.media.active = False
                    changed = True
            if changed:
                await self._update_subscription(runtime, sub)
        if s.producer is not None:
            self.server.worker.close_producer(s.producer)
            s.producer = None
        if announce:
            await runtime.broadcast({"type": "stream-removed", "stream_id": s.stream_id,
                                     "participant_id": s.participant_id})

    async def _transport_closed(self, runtime: RoomRuntime, p: Participant, t: WebRtcTransport, reason: str) -> None:
        if p.participant_id not in runtime.participants:
            return
        if t in p.publish_transports:
            p.publish_transports.remove(t)
            for s in [s for s in runtime.streams.values() if s.transport is t]:
                await self._remove_stream(runtime, s, announce=True)
        if t is p.subscribe_transport:
            p.subscribe_transport = None
            p.subscribed.clear()
            p.offer_pending = False
        await p.connection.error(E.Conflict(f"{t.direction} transport closed: {reason}", reason="transport closed"),
                                 transport=t.direction)

    # -- subscribe ------------------------------------------------------------------------------------
    async def subscribe(self, runtime: RoomRuntime, p: Participant, stream_ids: list[str] | None) -> None:
        if runtime.room.mode == "p2p":
            raise E.Forbidden("p2p rooms carry media peer to peer: use relay messages")
        if self.server is None:
            raise E.Conflict("this node runs without a media worker")
        if stream_ids is None:
            p.follow_all = True
        else:
            unknown = [sid for sid in stream_ids if sid not in runtime.streams]
            if unknown:
                raise E.NotFound(f"unknown stream(s): {', '.join(unknown)}")
            p.wanted |= set(stream_ids)
        await self._update_subscription(runtime, p, force=True)

    def _wanted_streams(self, runtime: RoomRuntime, p: Participant) -> list[Stream]:
        return [s for s in runtime.streams.values()
                if s.participant_id != p.participant_id and s.producer is not None
                and (p.follow_all or s.stream_id in p.wanted)]

    async def _update_subscription(self, runtime: RoomRuntime, p: Participant, force: bool = False) -> None:
        """Bring p's subscribe transport in line with the streams it wants; send a new offer if needed."""
        if self.server is None or runtime.ended or (not p.follow_all and not p.wanted and not p.subscribed):
            return
        if p.offer_pending:
            p.renegotiate = True
            return
        have = {sm.stream.stream_id for sm in p.subscribed if sm.media.active}
        added = [s for s in self._wanted_streams(runtime, p) if s.stream_id not in have]
        dropped = any(sm.offered_active and not sm.media.active for sm in p.subscribed)
        if not (added or dropped or force) or not (added or p.subscribed):
            return  # nothing to offer yet: the first stream-added brings the first offer
        if p.subscribe_transport is None:
            t = self.server.create_transport("subscribe")
            p.subscribe_transport = t
            t.on_connected = lambda tr: asyncio.ensure_future(self._subscribe_connected(runtime, p))
            t.on_closed = lambda tr, reason: asyncio.ensure_future(self._transport_closed(runtime, p, tr, reason))
        for s in added:
            ssrc = secrets.randbits(31) | 1
            media = sdp_mod.OutgoingMedia(str(p.next_mid), s.kind, s.codec, ssrc, s.participant_id, s.stream_id)
            p.next_mid += 1
            p.subscribed.append(SubscribedMedia(media, s))
        for sm in p.subscribed:
            sm.offered_active = sm.media.active
        t = p.subscribe_transport
        p.offer_version += 1
        offer = sdp_mod.write_offer([sm.media for sm in p.subscribed], ice_ufrag=t.ufrag, ice_pwd=t.pwd,
                                    fingerprint=self.server.fingerprint, ip=self.server.announced_ip,
                                    port=self.server.port, version=p.offer_version)
        p.offer_pending = True
        await p.connection.send({"type": "offer", "sdp": offer,
                                 "streams": [{"mid": sm.media.mid, **sm.stream.describe()}
                                             for sm in p.subscribed if sm.media.active]})

    async def answer(self, runtime: RoomRuntime, p: Participant, answer_sdp: str) -> None:
        if not p.offer_pending or p.subscribe_transport is None:
            raise E.Conflict("no subscribe offer is waiting for an answer")
        try:
            answer = sdp_mod.parse(answer_sdp, "answer")
        except sdp_mod.SdpError as exc:
            raise E.ValidationFailed(str(exc)) from None
        if answer.setup not in (None, "active"):
            raise E.ValidationFailed("the answer must take the DTLS client role (a=setup:active)")
        t = p.subscribe_transport
        if t.remote_ufrag is None:
            t.set_remote(answer.ice_ufrag, answer.fingerprint)
        p.offer_pending = False
        if t.state == "connected":
            self._create_consumers(runtime, p)
        if p.renegotiate:
            p.renegotiate = False
            await self._update_subscription(runtime, p, force=True)

    async def _subscribe_connected(self, runtime: RoomRuntime, p: Participant) -> None:
        if p.participant_id in runtime.participants:
            self._create_consumers(runtime, p)

    def _create_consumers(self, runtime: RoomRuntime, p: Participant) -> None:
        t = p.subscribe_transport
        for sm in p.subscribed:
            s = sm.stream
            if not sm.media.active or sm.consumer is not None or s.producer is None:
                continue
            _, pt, _, _ = sdp_mod.NODE_CODECS[s.codec]
            try:
                sm.consumer = self.server.worker.create_consumer(t.native, s.producer, sm.media.ssrc, pt,
                                                                 sdp_mod.CLOCK_RATES[s.codec],
                                                                 wait_keyframe=s.kind == "video")
            except ValueError as exc:
                log.warning("consumer refused stream=%s: %s", s.stream_id, exc)
                continue
            if s.muted:
                sm.consumer.pause()
            if s.kind == "video":
                self.request_keyframe(s)

    def request_keyframe(self, s: Stream, retry: bool = True) -> None:
        """PLI to the publisher. The core sends at most one per PLI_INTERVAL per producer; a request that
        falls inside that window is sent again the moment it closes, or a new subscriber would wait for
        the encoder's next periodic key frame."""
        if s.producer is None:
            return
        now = time.monotonic()
        if self.server.worker.request_keyframe(s.producer):
            s.last_keyframe_request = now
        elif retry:
            delay = max(0.01, PLI_INTERVAL - (now - s.last_keyframe_request) + 0.005)
            asyncio.get_running_loop().call_later(delay, self.request_keyframe, s, False)

    # -- moderator and floor actions -------------------------------------------------------------------
    def _target(self, runtime: RoomRuntime, pid: str) -> Participant:
        target = runtime.participants.get(pid)
        if target is None:
            raise E.NotFound(f"no participant {pid!r} in this session")
        return target

    async def set_muted(self, runtime: RoomRuntime, p: Participant, pid: str, kind: str, muted: bool) -> list[str]:
        if p.role != "moderator":
            raise E.Forbidden("only moderators mute others")
        target = self._target(runtime, pid)
        changed = []
        for s in runtime.streams.values():
            if s.participant_id == target.participant_id and kind in ("all", s.kind):
                s.muted = muted
                changed.append(s.stream_id)
                for sub in runtime.participants.values():
                    for sm in sub.subscribed:
                        if sm.stream is s and sm.consumer is not None:
                            sm.consumer.pause() if muted else sm.consumer.resume(True)
                if not muted and s.kind == "video":
                    self.request_keyframe(s)
        await runtime.broadcast({"type": "muted", "participant_id": pid, "kind": kind, "muted": muted,
                                 "by": p.participant_id, "streams": changed})
        return changed

    async def remove(self, runtime: RoomRuntime, p: Participant, pid: str, reason: str) -> None:
        if p.role != "moderator":
            raise E.Forbidden("only moderators remove participants")
        target = self._target(runtime, pid)
        if target is p:
            raise E.ValidationFailed("use leave to leave the room")
        await target.connection.send({"type": "removed", "by": p.participant_id, "reason": reason})
        await self.leave(runtime, target, "removed")
        await target.connection.close(4001, "removed by a moderator")

    async def floor(self, runtime: RoomRuntime, p: Participant, action: str, pid: str | None) -> dict:
        if runtime.room.mode != "lecture":
            raise E.Forbidden("floor control exists in lecture rooms")
        if action == "request":
            if p.role != "participant":
                raise E.Forbidden("only participants request the floor")
            runtime.floor_requests.add(p.participant_id)
            await runtime.broadcast({"type": "floor-requested", "participant": p.describe()},
                                    only=runtime.moderators())
            return {}
        if action == "release":
            if not p.floor:
                raise E.Conflict("you do not hold the floor")
            await self._take_floor(runtime, p, "floor-released", p.participant_id)
            return {}
        if p.role != "moderator":
            raise E.Forbidden("only moderators grant or revoke the floor")
        target = self._target(runtime, pid or "")
        if target.role != "participant":
            raise E.ValidationFailed("the floor is granted to participants")
        if action == "grant":
            target.floor = True
            runtime.floor_requests.discard(target.participant_id)
            await runtime.broadcast({"type": "floor-granted", "participant_id": target.participant_id,
                                     "by": p.participant_id})
        else:
            if not target.floor:
                raise E.Conflict("that participant does not hold the floor")
            await self._take_floor(runtime, target, "floor-revoked", p.participant_id)
        return {}

    async def _take_floor(self, runtime: RoomRuntime, target: Participant, event: str, by: str) -> None:
        target.floor = False
        await self.unpublish(runtime, target, None)
        await runtime.broadcast({"type": event, "participant_id": target.participant_id, "by": by})

    async def chat(self, runtime: RoomRuntime, p: Participant, text: str, to: list[str] | None) -> dict:
        if to is not None:
            missing = [pid for pid in to if pid not in runtime.participants]
            if missing:
                raise E.NotFound(f"no participant(s) {', '.join(missing)} in this session")
        sent = self.sessions.record_chat(runtime.session_id, runtime.room.room_id, p.info, text, to)
        message = {"type": "chat", "from": p.participant_id, "name": p.name, "text": text, "to": to,
                   "sent": sent}
        await runtime.broadcast(message, only=None if to is None else set(to) | {p.participant_id})
        return {"sent": sent}

    async def relay(self, runtime: RoomRuntime, p: Participant, to: str, payload: dict) -> None:
        if runtime.room.mode != "p2p":
            raise E.Forbidden("relay is for p2p rooms; other rooms publish and subscribe through the node")
        target = self._target(runtime, to)
        await target.connection.send({"type": "relay", "from": p.participant_id, "payload": payload})


# --- one client connection ---------------------------------------------------------------------------
class Connection:
    # A client that stops reading is dropped once this many messages wait for it, so one slow socket
    # never holds up a room's broadcasts.
    MAX_QUEUED = 2000

    def __init__(self, hub: SignalingHub, send: Send, close: Close):
        self.hub = hub
        self._send = send
        self._close = close
        self.runtime: RoomRuntime | None = None
        self.participant: Participant | None = None
        self.closed = False
        self.errors = 0
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, tuple):  # (code, reason): close after everything queued before it
                try:
                    await self._close(*item)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                return
            try:
                await self._send(item)
            except Exception:  # noqa: BLE001 - a vanished peer; its disconnect handler cleans up
                log.debug("send failed", exc_info=True)
                return

    async def send(self, message: dict) -> None:
        if self.closed:
            return
        if self._outbox.qsize() >= self.MAX_QUEUED:
            # Its writer is stuck on a socket nobody reads: stop it, free the seat now, close the socket.
            log.warning("dropping a client that does not read its messages")
            self.closed = True
            self._writer.cancel()
            asyncio.ensure_future(self._drop_slow())
            return
        self._outbox.put_nowait(message)

    async def _drop_slow(self) -> None:
        try:
            await asyncio.wait_for(self._close(4009, "too slow"), 2)
        except Exception:  # noqa: BLE001 - the socket may be wedged; leaving matters more
            pass
        await self.disconnected()

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait((code, reason))

    async def flushed(self, timeout: float = 5.0) -> None:
        """Wait until the writer has sent (or given up on) everything queued."""
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._writer.cancel()

    async def error(self, exc: E.EnxError, request_id: Any = None, **extra) -> None:
        self.errors += 1
        msg = {"type": "error", "code": exc.code, "error": exc.reason, "desc": exc.desc, **extra}
        if request_id is not None:
            msg["id"] = request_id
        await self.send(msg)

    async def handle_text(self, text: str) -> None:
        """One incoming frame. Never raises: problems become error messages."""
        request_id = msg_type = None
        try:
            if len(text) > MAX_MESSAGE_CHARS:
                raise E.PayloadTooLarge(f"messages are limited to {MAX_MESSAGE_CHARS} characters")
            try:
                msg = json.loads(text)
            except (ValueError, RecursionError):
                raise E.InvalidRequest("message is not valid JSON") from None
            if not isinstance(msg, dict):
                raise E.InvalidRequest("message must be a JSON object")
            request_id = msg.get("id") if isinstance(msg.get("id"), (str, int)) else None
            msg_type = msg.get("type")
            if not isinstance(msg_type, str) or msg_type not in MESSAGE_TYPES:
                raise E.ValidationFailed(f"unknown message type {str(msg_type)[:40]!r}")
            problems = sorted(_VALIDATORS[msg_type].iter_errors(msg), key=lambda e: list(e.path))
            if problems:
                where = "/".join(str(x) for x in problems[0].path) or msg_type
                raise E.ValidationFailed(f"{where}: {problems[0].message[:200]}")
            reply = await self._dispatch(msg_type, msg)
            if reply is not None:
                if request_id is not None:
                    reply["id"] = request_id
                await self.send(reply)
        except E.EnxError as exc:
            await self.error(exc, request_id)
            if self.participant is None and msg_type == "join":
                await self.close(4003, exc.reason)  # a refused join ends the connection
        except Exception:  # noqa: BLE001 - never let one message kill the connection or the room
            log.exception("signaling handler failed")
            await self.error(E.EnxError("the node failed to handle this message", reason="internal error",
                                        code=1500), request_id)

    async def _dispatch(self, msg_type: str, msg: dict) -> dict | None:
        hub = self.hub
        if msg_type == "ping":
            return {"type": "pong", "t": time.time()}
        if msg_type == "join":
            if self.participant is not None:
                raise E.Conflict("already joined")
            runtime, p = await hub.join(self, msg["token"], msg.get("room_id"))
            self.runtime, self.participant = runtime, p
            await runtime.broadcast({"type": "participant-joined", "participant": p.describe()},
                                    exclude=p.participant_id, only=runtime.audience_of(p))
            room = runtime.room
            return {"type": "joined", "participant_id": p.participant_id, "session_id": runtime.session_id,
                    "role": p.role, "room": {"room_id": room.room_id, "name": room.name, "mode": room.mode,
                                             "duration": room.duration_s},
                    "participants": [x.describe() for x in runtime.visible_to(p)],
                    "streams": [s.describe() for s in runtime.streams.values() if s.producer is not None]}
        runtime, p = self.runtime, self.participant
        if runtime is None or p is None:
            raise E.Conflict("send join first")
        if msg_type == "leave":
            await hub.leave(runtime, p, "left")
            reply = {"type": "ok", "request": "leave"}
            if "id" in msg:
                reply["id"] = msg["id"]
            await self.send(reply)
            await self.close(1000, "left")
            return None
        if msg_type == "publish":
            answer = await hub.publish(runtime, p, msg["sdp"])
            return {"type": "answer", "sdp": answer}
        if msg_type == "subscribe":
            await hub.subscribe(runtime, p, msg.get("streams"))
            # The offer (if there is anything to receive yet) is a message of its own.
            return {"type": "ok", "request": "subscribe"}
        if msg_type == "answer":
            await hub.answer(runtime, p, msg["sdp"])
            return {"type": "ok", "request": "answer"}
        if msg_type == "unpublish":
            removed = await hub.unpublish(runtime, p, msg.get("streams"))
            return {"type": "ok", "request": "unpublish", "streams": removed}
        if msg_type == "chat":
            extra = await hub.chat(runtime, p, msg["text"], msg.get("to"))
            return {"type": "ok", "request": "chat", **extra}
        if msg_type.startswith("floor-"):
            await hub.floor(runtime, p, msg_type.split("-", 1)[1], msg.get("participant_id"))
            return {"type": "ok", "request": msg_type}
        if msg_type == "mute":
            streams = await hub.set_muted(runtime, p, msg["participant_id"], msg.get("kind", "all"),
                                          msg.get("muted", True))
            return {"type": "ok", "request": "mute", "streams": streams}
        if msg_type == "remove":
            await hub.remove(runtime, p, msg["participant_id"], msg.get("reason", ""))
            return {"type": "ok", "request": "remove"}
        if msg_type == "relay":
            await hub.relay(runtime, p, msg["to"], msg["payload"])
            return {"type": "ok", "request": "relay"}
        raise E.ValidationFailed(f"unhandled message type {msg_type}")

    async def disconnected(self) -> None:
        """The socket is gone (left, closed, or vanished): clean up as a leave."""
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait((1001, "gone"))
        if self.runtime is not None and self.participant is not None:
            await self.hub.leave(self.runtime, self.participant, "disconnected")
        self._writer.cancel()

