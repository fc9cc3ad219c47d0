"""Sessions: the live instance of a room, and who was in it when. What the signaling layer records and
the CDR and post-session APIs read."""
from __future__ import annotations

import secrets
import json
from typing import Any

from .rooms import Room, RoomService, iso
from .store import Store, dumps, now


class SessionStore:
    def __init__(self, store: Store, rooms: RoomService):
        self.store = store
        self.rooms = rooms

    def start(self, room: Room) -> str:
        """The live session of the room, started now if there is none."""
        with self.store.transaction() as db:
            row = db.execute("SELECT session_id FROM sessions WHERE room_id=? AND ended IS NULL",
                             (room.room_id,)).fetchone()
            if row:
                return row["session_id"]
            session_id = secrets.token_hex(12)
            db.execute("INSERT INTO sessions(session_id, app_id, room_id, started) VALUES (?,?,?,?)",
                       (session_id, room.app_id, room.room_id, now()))
            return session_id

    def end(self, session_id: str, reason: str) -> None:
        t = now()
        with self.store.transaction() as db:
            db.execute("UPDATE participants SET left=?, leave_reason=? WHERE session_id=? AND left IS NULL",
                       (t, "session-ended", session_id))
            db.execute("UPDATE sessions SET ended=?, end_reason=? WHERE session_id=? AND ended IS NULL",
                       (t, reason, session_id))
            row = db.execute("SELECT s.room_id, r.type FROM sessions s JOIN rooms r ON r.room_id = s.room_id"
                             " WHERE s.session_id=?", (session_id,)).fetchone()
            # Ad hoc rooms live for one session (seed: "created on demand and destroyed after use").
            if row and row["type"] == "adhoc":
                db.execute("DELETE FROM rooms WHERE room_id=?", (row["room_id"],))
                db.execute("UPDATE tokens SET revoked=? WHERE room_id=? AND revoked IS NULL", (t, row["room_id"]))

    def discard(self, session_id: str) -> None:
        """Forget a session nobody ended up joining (its first join was refused)."""
        with self.store.transaction() as db:
            if db.execute("SELECT count(*) FROM participants WHERE session_id=?", (session_id,)).fetchone()[0]:
                return
            db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))

    def participant_joined(self, session_id: str, participant_id: str, user_ref: str, name: str, role: str,
                           token_id: str) -> None:
        self.store.execute(
            "INSERT INTO participants(session_id, participant_id, user_ref, name, role, token_id, joined)"
            " VALUES (?,?,?,?,?,?,?)", (session_id, participant_id, user_ref, name, role, token_id, now()))

    def participant_left(self, session_id: str, participant_id: str, reason: str) -> None:
        self.store.execute("UPDATE participants SET left=?, leave_reason=? WHERE session_id=? AND participant_id=?"
                           " AND left IS NULL", (now(), reason, session_id, participant_id))

    def record_chat(self, session_id: str, room_id: str, sender: dict[str, str], text: str,
                    recipients: list[str] | None) -> float:
        t = now()
        self.store.execute(
            "INSERT INTO chat_messages(session_id, room_id, sender_id, sender_ref, sender_name, recipients, text,"
            " sent) VALUES (?,?,?,?,?,?,?,?)",
            (session_id, room_id, sender["participant_id"], sender["user_ref"], sender["name"],
             dumps(recipients) if recipients else None, text, t))
        return t

    def get(self, session_id: str) -> dict[str, Any] | None:
        row = self.store.query_one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        if row is None:
            return None
        parts = self.store.query("SELECT * FROM participants WHERE session_id=? ORDER BY joined", (session_id,))
        return {"session_id": row["session_id"], "room_id": row["room_id"], "started": iso(row["started"]),
                "ended": iso(row["ended"]), "end_reason": row["end_reason"],
                "participants": [{"participant_id": p["participant_id"], "user_ref": p["user_ref"],
                                  "name": p["name"], "role": p["role"], "joined": iso(p["joined"]),
                                  "left": iso(p["left"]), "leave_reason": p["leave_reason"]} for p in parts]}

    def chat_transcript(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM chat_messages WHERE session_id=? ORDER BY message_id", (session_id,))
        return [{"sender_id": r["sender_id"], "sender_ref": r["sender_ref"], "sender_name": r["sender_name"],
                 "to": None if r["recipients"] is None else json.loads(r["recipients"]),
                 "text": r["text"], "sent": iso(r["sent"])} for r in rows]

    def close_dangling(self) -> int:
        """Sessions left open by a node that stopped without ending them: end them now."""
        rows = self.store.query("SELECT session_id FROM sessions WHERE ended IS NULL")
        for r in rows:
            self.end(r["session_id"], "node-restart")
        return len(rows)
