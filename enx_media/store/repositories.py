"""Repository interfaces of the control plane's durable data: one Protocol per aggregate, and the records
they carry. A storage backend is one module implementing these; the control services see nothing else.

Every method is one atomic operation. Where the services need several statements to agree (ending a
session that deletes its ad hoc room, binding a token to its first session, deleting a room only while no
session is live), that is one method here, so a backend keeps it in one transaction.

Times are epoch seconds (float); ``settings``, ``data`` and chat ``recipients`` are JSON-shaped values the
backend stores as it likes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable


# --- records -------------------------------------------------------------------------------------
# The end reason of a session that a stopped node left open (its next start ends it). Its tokens may
# join the room's next session: the single-use rule does not punish them for the node's crash.
NODE_RESTART = "node-restart"


@dataclass(frozen=True)
class AppRecord:
    app_id: str
    name: str
    created: float
    token_secret: bytes
    key_salt: bytes
    key_hash: bytes


@dataclass(frozen=True)
class RoomRecord:
    room_id: str
    app_id: str
    name: str
    owner_ref: str
    mode: str
    type: str
    settings: dict[str, Any]
    data: dict[str, Any]
    created: float
    updated: float


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    app_id: str
    room_id: str
    user_ref: str
    role: str
    issued: float
    expires: float
    revoked: float | None = None
    used_session: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    app_id: str
    room_id: str
    started: float
    ended: float | None = None
    end_reason: str | None = None
    room_details: dict[str, Any] | None = None    # the room as it was when the session started


@dataclass(frozen=True)
class ParticipantRecord:
    session_id: str
    participant_id: str
    user_ref: str
    name: str
    role: str
    token_id: str | None
    joined: float
    left: float | None = None
    leave_reason: str | None = None


@dataclass(frozen=True)
class ChatMessageRecord:
    session_id: str
    room_id: str
    sender_id: str
    sender_ref: str
    sender_name: str
    recipients: list[str] | None  # None: everyone in the room
    text: str
    sent: float
    message_id: int | None = None  # given by the backend, increasing in the order messages were added


@dataclass(frozen=True)
class CdrRow:
    """One participant leg (a join until its leave) of a session, with its usage and quality aggregate."""
    session: SessionRecord
    participant: ParticipantRecord
    leg: int                            # 1 for the user's first join of the session, 2 after a reconnect, ...
    usage: dict[str, Any] | None        # what control.cdr last saved for it (None: nothing yet)


@dataclass(frozen=True)
class RecordingRecord:
    """One recorded track: a file of one participant's stream during one recording (start .. stop)."""
    file_id: str
    recording_id: str           # the start .. stop it belongs to
    app_id: str
    room_id: str
    session_id: str
    participant_id: str
    user_ref: str
    kind: str                   # audio, video
    source: str                 # camera, screen, composite, mix
    codec: str
    path: str                   # the file, under the node's data directory
    started: float
    ended: float | None = None
    bytes: int | None = None
    duration: float | None = None   # seconds of media in the file
    state: str = "recording"    # recording, ready, recovered (a crash cut it; repaired at the next start), failed
    error: str | None = None


@dataclass(frozen=True)
class TranscriptRecord:
    """A session's speech transcript: pending until the engine has been through its recorded audio."""
    session_id: str
    app_id: str
    room_id: str
    state: str                  # pending, ready, failed
    engine: str
    segments: list[dict[str, Any]] | None     # the merged timeline: {start, end, participant_id, user_ref, text}
    error: str | None
    created: float
    updated: float


@dataclass(frozen=True)
class WebhookRecord:
    hook_id: str
    app_id: str
    url: str
    events: list[str] | None    # the event types it receives; None: all
    secret: str                 # the HMAC-SHA256 key of its signatures
    created: float


@dataclass(frozen=True)
class OutboxEvent:
    """A webhook event, written with the state change it reports (SessionRepository's outbox arguments)."""
    event_id: str
    app_id: str
    room_id: str
    type: str                   # session.started, participant.joined, ...
    body: dict[str, Any]        # the JSON the receiver gets
    created: float


@dataclass(frozen=True)
class DeliveryRecord:
    """One event on its way to one webhook."""
    event_id: str
    hook_id: str
    url: str
    secret: str
    type: str
    body: str                   # serialized once: every attempt sends (and signs) the same bytes
    created: float              # when the event happened
    state: str                  # pending, delivered, failed
    attempts: int
    next_at: float
    last_error: str | None
    updated: float


class RoomDeletion(enum.Enum):
    """What deleting a room did."""
    DELETED = "deleted"
    NOT_FOUND = "not found"
    SESSION_LIVE = "session live"


class ClaimOutcome(enum.Enum):
    """What binding a token to a session did."""
    CLAIMED = "claimed"                # bound to the session now, or it already was bound to it
    UNKNOWN = "unknown"                # no such token
    USED_ELSEWHERE = "used elsewhere"  # bound to an earlier session


# A room change computed from the current record and the room's live session id (None if none). It
# returns the record to write, or raises to leave the room as it was.
RoomChange = Callable[[RoomRecord, Optional[str]], RoomRecord]


# --- repositories ------------------------------------------------------------------------------------
@runtime_checkable
class AppRepository(Protocol):
    def add(self, app: AppRecord) -> None: ...

    def get(self, app_id: str) -> AppRecord | None: ...

    def list(self) -> list[AppRecord]:
        """All apps, oldest first."""
        ...

    def count(self) -> int: ...


@runtime_checkable
class RoomRepository(Protocol):
    def add(self, room: RoomRecord) -> None: ...

    def get(self, room_id: str, app_id: str | None = None) -> RoomRecord | None:
        """The room; with ``app_id``, only if it belongs to that app."""
        ...

    def list(self, app_id: str, offset: int, limit: int) -> tuple[int, list[RoomRecord]]:
        """(how many rooms the app has, one page of them ordered by creation)."""
        ...

    def count(self) -> int: ...

    def update(self, app_id: str, room_id: str, change: RoomChange) -> RoomRecord | None:
        """Read the app's room and its live session, write what ``change`` returns, in one transaction.
        None if the app has no such room; an exception from ``change`` leaves the room unchanged."""
        ...

    def delete_if_idle(self, app_id: str, room_id: str, at: float) -> RoomDeletion:
        """Delete the app's room and revoke its tokens (revoked=at), unless a session of it is live."""
        ...


@runtime_checkable
class TokenRepository(Protocol):
    def add(self, token: TokenRecord) -> None: ...

    def get(self, token_id: str) -> TokenRecord | None: ...

    def count(self) -> int: ...

    def revoke(self, app_id: str, room_id: str, token_id: str, at: float) -> bool:
        """Mark the token revoked (kept as it was if it already is). False if the app's room has no such
        token."""
        ...

    def claim_for_session(self, token_id: str, session_id: str) -> ClaimOutcome:
        """Bind the token to ``session_id`` unless it is bound to another session."""
        ...


@runtime_checkable
class WebhookRepository(Protocol):
    def add(self, hook: WebhookRecord) -> None: ...

    def of_app(self, app_id: str) -> list[WebhookRecord]: ...

    def get(self, app_id: str, hook_id: str) -> WebhookRecord | None: ...

    def delete(self, app_id: str, hook_id: str) -> bool:
        """Remove it and its pending deliveries; False if it is not the app's."""
        ...

    def set_secret(self, app_id: str, hook_id: str, secret: str) -> bool: ...

    def hooks_with_pending(self) -> list[str]:
        """Webhooks with deliveries still to make."""
        ...

    def pending(self, hook_id: str, limit: int) -> list[DeliveryRecord]:
        """The hook's oldest pending deliveries, oldest first (events go out in the order they happened)."""
        ...

    def deliveries(self, app_id: str, hook_id: str, limit: int) -> list[DeliveryRecord]:
        """The hook's latest deliveries, newest first."""
        ...

    def settle(self, event_id: str, hook_id: str, state: str, attempts: int, next_at: float, error: str | None,
               at: float) -> None:
        """Record an attempt: delivered, failed (given up), or pending again from next_at."""
        ...

    def requeue(self, app_id: str, hook_id: str, event_id: str | None, start: float, end: float, at: float) -> int:
        """Make the hook's deliveries pending again, due now: the one of event_id, or (event_id None) those
        of the events created in [start, end). Returns how many."""
        ...


@runtime_checkable
class RecordingRepository(Protocol):
    def add(self, files: Sequence[RecordingRecord], outbox: Sequence[OutboxEvent] = ()) -> None:
        """Files that start being written (none: only the events, e.g. a recording started before any
        stream), with the events."""
        ...

    def finish(self, file_id: str, state: str, ended: float, size: int, duration: float, error: str | None,
               outbox: Sequence[OutboxEvent] = ()) -> None: ...

    def get(self, file_id: str, app_id: str | None = None) -> RecordingRecord | None: ...

    def find(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
             recording_id: str | None = None, started_from: float | None = None,
             started_to: float | None = None) -> list[RecordingRecord]:
        """The app's files that match, oldest first."""
        ...

    def unfinished(self) -> list[RecordingRecord]:
        """Files still being written (after a restart: the ones a crash cut)."""
        ...

    def delete(self, app_id: str, file_id: str) -> RecordingRecord | None:
        """Forget the app's file (the caller removes it from disk); what it was, or None."""
        ...


@runtime_checkable
class TranscriptRepository(Protocol):
    def begin(self, transcript: TranscriptRecord) -> None:
        """Record it pending (again, if it was there)."""
        ...

    def finish(self, session_id: str, state: str, segments: list[dict[str, Any]] | None, error: str | None,
               at: float, outbox: Sequence[OutboxEvent] = ()) -> None: ...

    def get(self, session_id: str) -> TranscriptRecord | None: ...

    def pending(self) -> list[TranscriptRecord]:
        """Transcripts still to make (after a restart: the ones a stop interrupted), oldest first."""
        ...


@runtime_checkable
class SessionRepository(Protocol):
    """start / end / add_participant / participant_left take the webhook events (``outbox``) that report
    the change: they are written in the same transaction, with one delivery per webhook of the app that
    wants the event's type, so no change is ever reported twice or lost."""

    def start(self, app_id: str, room_id: str, session_id: str, at: float,
              outbox: Sequence[OutboxEvent] = (), room_details: dict[str, Any] | None = None) -> str:
        """The room's live session id; if it has none, start one with ``session_id`` (and a copy of the room
        as it is now, which the CDR keeps after the room is gone) and return that."""
        ...

    def end(self, session_id: str, reason: str, at: float, outbox: Sequence[OutboxEvent] = ()) -> str | None:
        """End the session and mark its present participants left ("session-ended"); if its room is ad hoc,
        delete the room and revoke its tokens. One transaction. Returns the deleted room's id, if any."""
        ...

    def get(self, session_id: str) -> SessionRecord | None: ...

    def open_session_ids(self) -> list[str]:
        """Sessions not ended (after a restart: left open by a node that stopped without ending them)."""
        ...

    def live_session(self, room_id: str) -> str | None: ...

    def add_participant(self, participant: ParticipantRecord, outbox: Sequence[OutboxEvent] = ()) -> None: ...

    def participant_left(self, session_id: str, participant_id: str, reason: str, at: float,
                         outbox: Sequence[OutboxEvent] = ()) -> None:
        """Mark the participant left, if it has not left already."""
        ...

    def participants(self, session_id: str) -> list[ParticipantRecord]:
        """Everyone who joined the session, in join order."""
        ...

    def live_participants(self, room_id: str) -> list[ParticipantRecord]:
        """Who is in the room's live session now, in join order."""
        ...

    def add_chat_message(self, message: ChatMessageRecord) -> int:
        """Store the message; returns its message_id."""
        ...

    def chat_messages(self, session_id: str) -> list[ChatMessageRecord]:
        """The session's chat in the order it was sent."""
        ...

    def save_usage(self, session_id: str, usage: Mapping[str, dict[str, Any]], at: float,
                   outbox: Sequence[OutboxEvent] = ()) -> None:
        """Replace the usage aggregates of these participants (by participant_id), with the events."""
        ...

    def last_activity(self, session_id: str) -> float | None:
        """The last moment the record shows the session alive: its latest usage save, join or leave."""
        ...

    def cdr(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
            joined_from: float | None = None, joined_to: float | None = None, offset: int = 0,
            limit: int = 100) -> tuple[int, list[CdrRow]]:
        """The app's participant legs that match (joined in [joined_from, joined_to)), oldest join first:
        (how many match, one page)."""
        ...


@runtime_checkable
class Store(Protocol):
    """One backend: its repositories over one database, and closing it."""

    # read-only members: a backend's own repository classes satisfy them
    @property
    def apps(self) -> AppRepository: ...

    @property
    def rooms(self) -> RoomRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def recordings(self) -> RecordingRepository: ...

    @property
    def transcripts(self) -> TranscriptRepository: ...

    def close(self) -> None: ...
