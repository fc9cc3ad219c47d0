"""Sessions: the live instance of a room, and who was in it when. SessionRecorder writes the record from
the live room's events; SessionService reads it (post-session data, CDR) and closes what a stopped node
left open."""
from __future__ import annotations

import logging
import time
from typing import Any

from .. import events as ev
from ..store import NODE_RESTART, ChatMessageRecord, ParticipantRecord, Store
from .rooms import iso

log = logging.getLogger(__name__)


class SessionService:
    def __init__(self, store: Store):
        self.store = store

    def get(self, session_id: str) -> dict[str, Any] | None:
        s = self.store.sessions.get(session_id)
        if s is None:
            return None
        return {"session_id": s.session_id, "room_id": s.room_id, "started": iso(s.started),
                "ended": iso(s.ended), "end_reason": s.end_reason,
                "participants": [{"participant_id": p.participant_id, "user_ref": p.user_ref, "name": p.name,
                                  "role": p.role, "joined": iso(p.joined), "left": iso(p.left),
                                  "leave_reason": p.leave_reason}
                                 for p in self.store.sessions.participants(session_id)]}

    def chat_transcript(self, session_id: str) -> list[dict[str, Any]]:
        return [{"sender_id": m.sender_id, "sender_ref": m.sender_ref, "sender_name": m.sender_name,
                 "to": m.recipients, "text": m.text, "sent": iso(m.sent)}
                for m in self.store.sessions.chat_messages(session_id)]

    def close_dangling(self) -> int:
        """Sessions left open by a node that stopped without ending them: end them now."""
        ids = self.store.sessions.open_session_ids()
        for session_id in ids:
            self.store.sessions.end(session_id, NODE_RESTART, time.time())
        return len(ids)


class SessionRecorder:
    """The session record as a subscriber of the event bus: what the live room publishes (sessions
    started and ended, participants joining and leaving, chat) is written as it happens, so the REST
    API's live users, the post-session data and a restarted node all read the same record."""

    def __init__(self, store: Store):
        self.sessions = store.sessions

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionStarted):
            stale = self.sessions.start(event.app_id, event.room_id, event.session_id, event.at)
            if stale != event.session_id:
                # The record still holds a session of this room that this node no longer runs (its end
                # was not written): end it, or this one's participants would be written nowhere.
                log.warning("ending stale session=%s room=%s", stale, event.room_id)
                self.sessions.end(stale, "superseded", event.at)
                self.sessions.start(event.app_id, event.room_id, event.session_id, event.at)
        elif isinstance(event, ev.SessionEnded):
            self.sessions.end(event.session_id, event.reason, event.at)
        elif isinstance(event, ev.ParticipantJoined):
            self.sessions.add_participant(ParticipantRecord(event.session_id, event.participant_id, event.user_ref,
                                                            event.name, event.role, event.token_id, event.at))
        elif isinstance(event, ev.ParticipantLeft):
            self.sessions.participant_left(event.session_id, event.participant_id, event.reason, event.at)
        elif isinstance(event, ev.ChatMessage):
            self.sessions.add_chat_message(ChatMessageRecord(
                event.session_id, event.room_id, event.sender_id, event.sender_ref, event.sender_name,
                list(event.to) if event.to else None, event.text, event.at))
