"""Sessions: the live instance of a room, and who was in it when. SessionRecorder writes the record from
the live room's events; SessionService reads it (post-session data, CDR) and closes what a stopped node
left open."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .. import errors as E
from .. import events as ev
from ..store import NODE_RESTART, ChatMessageRecord, ParticipantRecord, SessionRecord, Store
from . import cdr
from .rooms import iso
from .webhooks import outbox_events

log = logging.getLogger(__name__)


class SessionService:
    def __init__(self, store: Store):
        self.store = store

    def _session(self, session_id: str, app_id: str | None) -> SessionRecord:
        s = self.store.sessions.get(session_id)
        if s is None or (app_id is not None and s.app_id != app_id):
            raise E.NotFound("no such session (conf_num)", reason="session not found")
        return s

    def get(self, session_id: str, app_id: str | None = None) -> dict[str, Any]:
        """The session and who was in it when (NotFound for none, or another app's)."""
        s = self._session(session_id, app_id)
        return {"session_id": s.session_id, "room_id": s.room_id, "started": iso(s.started),
                "ended": iso(s.ended), "end_reason": s.end_reason,
                "participants": [{"participant_id": p.participant_id, "user_ref": p.user_ref, "name": p.name,
                                  "role": p.role, "joined": iso(p.joined), "left": iso(p.left),
                                  "leave_reason": p.leave_reason}
                                 for p in self.store.sessions.participants(session_id)]}

    def chat_transcript(self, session_id: str, app_id: str | None = None) -> list[dict[str, Any]]:
        """The session's chat in order: sender, recipients (participant ids; null: everyone), time, text. A
        private message is here with its recipients, and only here: the room showed it to them alone."""
        self._session(session_id, app_id)
        return [{"sender_id": m.sender_id, "sender_ref": m.sender_ref, "sender_name": m.sender_name,
                 "to": m.recipients, "text": m.text, "sent": iso(m.sent)}
                for m in self.store.sessions.chat_messages(session_id)]

    def speech_transcript(self, session_id: str, app_id: str) -> dict[str, Any]:
        self._session(session_id, app_id)
        t = self.store.transcripts.get(session_id)
        if t is None:
            raise E.NotFound("the session has no speech transcript (its room's settings.transcription was off)",
                             reason="transcript not found")
        return {"session_id": session_id, "state": t.state, "engine": t.engine, "error": t.error,
                "segments": t.segments or []}

    def metadata(self, session_id: str, app_id: str) -> dict[str, Any]:
        """The session, its room as it was, its participants, and every post-session item with its state
        (pending, ready, failed; none where the room made none) and where to read it."""
        s = self._session(session_id, app_id)
        people = self.store.sessions.participants(session_id)
        ended = s.ended is not None
        files = self.store.recordings.find(app_id, session_id=session_id)
        if not files:
            recordings = "none"
        elif any(f.state == "recording" for f in files):
            recordings = "pending"
        else:
            recordings = "ready" if any(f.state in ("ready", "recovered") for f in files) else "failed"
        t = self.store.transcripts.get(session_id)
        details = s.room_details or {}
        return {"session_id": session_id, "room_id": s.room_id, "mode": details.get("mode"),
                "room_details": details, "started": iso(s.started), "ended": iso(s.ended),
                "end_reason": s.end_reason,
                "duration": round((s.ended - s.started) if s.ended is not None else time.time() - s.started, 3),
                "participants": {"total": len(people), "users": len({p.user_ref for p in people})},
                "items": {
                    "cdr": {"state": "ready" if ended else "pending", "path": f"/cdr/conf/{session_id}"},
                    "chat": {"state": "ready" if ended else "pending", "path": f"/sessions/{session_id}/chat",
                             "messages": len(self.store.sessions.chat_messages(session_id))},
                    "recordings": {"state": recordings, "path": f"/archive/conf/{session_id}", "files": len(files)},
                    "transcript": {"state": t.state if t is not None else "none",
                                   "path": f"/sessions/{session_id}/transcript"},
                }}

    def close_dangling(self) -> int:
        """Sessions left open by a node that stopped without ending them: end them now, and tell their
        webhooks (each participant still in left, then the session ended, reason node-restart)."""
        ids = self.store.sessions.open_session_ids()
        for session_id in ids:
            s = self.store.sessions.get(session_id)
            # The session ended, as far as anyone can tell, when the record last shows it alive (its last
            # quality save, join or leave): the CDR does not bill the time the node was down.
            at = self.store.sessions.last_activity(session_id) or time.time()
            outbox = []
            if s is not None:
                for p in self.store.sessions.participants(session_id):
                    if p.left is None:
                        outbox += outbox_events(ev.ParticipantLeft(session_id, s.room_id, s.app_id, p.participant_id,
                                                                   f"session-ended:{NODE_RESTART}", at=at))
                outbox += outbox_events(ev.SessionEnded(session_id, s.room_id, s.app_id, NODE_RESTART, at=at))
                outbox.append(cdr.ready_event(s.app_id, s.room_id, session_id, at))
            self.store.sessions.end(session_id, NODE_RESTART, at, outbox)
        return len(ids)


class SessionRecorder:
    """The session record as a subscriber of the event bus: what the live room publishes (sessions
    started and ended, participants joining and leaving, chat) is written as it happens, so the REST
    API's live users, the post-session data and a restarted node all read the same record."""

    def __init__(self, store: Store, on_outbox: Callable[[], None] | None = None):
        """on_outbox: called after webhook events were written (the dispatcher's wake)."""
        self.sessions = store.sessions
        self.on_outbox = on_outbox

    def __call__(self, event: ev.Event) -> None:
        # the webhook events that report the change go into the same transaction (control/webhooks.py)
        outbox = outbox_events(event)
        if isinstance(event, ev.SessionStarted):
            stale = self.sessions.start(event.app_id, event.room_id, event.session_id, event.at, outbox,
                                        event.room_details)
            if stale != event.session_id:
                # The record still holds a session of this room that this node no longer runs (its end
                # was not written): end it, or this one's participants would be written nowhere.
                log.warning("ending stale session=%s room=%s", stale, event.room_id)
                self.sessions.end(stale, "superseded", event.at)
                self.sessions.start(event.app_id, event.room_id, event.session_id, event.at, outbox,
                                    event.room_details)
        elif isinstance(event, ev.SessionEnded):
            self.sessions.end(event.session_id, event.reason, event.at, outbox)
        elif isinstance(event, ev.ParticipantJoined):
            self.sessions.add_participant(ParticipantRecord(event.session_id, event.participant_id, event.user_ref,
                                                            event.name, event.role, event.token_id, event.at), outbox)
        elif isinstance(event, ev.ParticipantLeft):
            self.sessions.participant_left(event.session_id, event.participant_id, event.reason, event.at, outbox)
        elif isinstance(event, ev.ChatMessage):
            self.sessions.add_chat_message(ChatMessageRecord(
                event.session_id, event.room_id, event.sender_id, event.sender_ref, event.sender_name,
                list(event.to) if event.to else None, event.text, event.at))
        if outbox and self.on_outbox is not None:
            self.on_outbox()
