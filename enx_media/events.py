"""Domain events and the in-process bus that carries them.

The live room publishes what happens in a session (started / ended, participants joining and leaving,
streams, chat, floor, moderator actions, periodic quality samples) as typed events. Whoever needs a
record of it subscribes: control.sessions.SessionRecorder today; CDR, webhooks, recordings and a
multi-node relay later. Publishing is synchronous and in order; a subscriber that raises is logged and counted, never
propagated, so no subscriber can break a room.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    session_id: str
    room_id: str
    app_id: str
    at: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class SessionStarted(Event):
    room_details: dict[str, Any] = field(default_factory=dict)    # the room as it is now (the API's shape)


@dataclass(frozen=True)
class SessionEnded(Event):
    reason: str        # last-left, duration, node-stopped, ...


@dataclass(frozen=True)
class ParticipantJoined(Event):
    participant_id: str
    user_ref: str
    name: str
    role: str
    token_id: str


@dataclass(frozen=True)
class ParticipantLeft(Event):
    participant_id: str
    reason: str        # left, disconnected, removed, session-ended:<why>, ...


@dataclass(frozen=True)
class StreamPublished(Event):
    participant_id: str
    stream_id: str
    kind: str
    codec: str
    source: str = "camera"      # or "screen"


@dataclass(frozen=True)
class StreamUnpublished(Event):
    participant_id: str
    stream_id: str
    reason: str


@dataclass(frozen=True)
class ChatMessage(Event):
    sender_id: str
    sender_ref: str
    sender_name: str
    text: str
    to: tuple[str, ...] | None


@dataclass(frozen=True)
class FloorChanged(Event):
    participant_id: str
    action: str        # requested, granted, revoked, released
    by: str


@dataclass(frozen=True)
class ModeratorAction(Event):
    moderator_id: str
    action: str        # mute, unmute, remove
    target_id: str
    detail: str = ""


@dataclass(frozen=True)
class QualitySample(Event):
    """One participant's media as the core counted it, every quality interval: totals since its streams
    opened (a CDR takes the difference of two samples), the worst of the latest receiver reports about
    what the node sends it, and how many of its simulcast video consumers are on each layer (rid, or
    "paused") now."""
    participant_id: str
    streams_sent: int
    streams_received: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    packets_lost: int          # of packets_out, as its receiver reports counted them
    keyframe_requests: int     # PLIs sent to this participant's encoders
    freezes: int               # key frames its decoders asked for (a frozen or broken picture)
    fraction_lost: float       # worst receiver report of what the node sends this participant
    jitter_ms: float
    rtt_ms: float
    layers: dict[str, int] = field(default_factory=dict)


E = TypeVar("E", bound=Event)
class EventBus:
    def __init__(self) -> None:
        self._handlers: list[tuple[type[Event], Callable[[Any], None]]] = []
        self.failures = 0

    def subscribe(self, handler: Callable[[E], None], kind: type[E] | None = None) -> Callable[[], None]:
        """Call handler with every event of `kind` (any event when None; subclasses included); returns
        an unsubscribe."""
        entry: tuple[type[Event], Callable[[Any], None]] = (kind or Event, handler)
        self._handlers.append(entry)
        return lambda: self._handlers.remove(entry) if entry in self._handlers else None

    def publish(self, event: Event) -> None:
        for kind, handler in list(self._handlers):
            if isinstance(event, kind):
                try:
                    handler(event)
                except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the room
                    self.failures += 1
                    log.exception("event subscriber failed event=%s", type(event).__name__)
