"""The signaling protocol's messages: client messages checked against api/signaling.schema.json, and
builders for every message the node sends (so their shape is written once)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from .. import errors as E

if TYPE_CHECKING:
    from ..room.live import LiveRoom, Participant
    from ..room.media import Subscription
    from ..sfu.router import Producer

# The contract lives in api/signaling.schema.json; the package carries it as a symlink (a copy in wheels).
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "signaling.schema.json"
MAX_MESSAGE_CHARS = 256 * 1024


def _load_validators() -> dict[str, jsonschema.Draft202012Validator]:
    """One validator per client message type, so an error names the field, not "no oneOf matched"."""
    schema = json.loads(SCHEMA_PATH.read_text())
    validators = {}
    for name, sub in schema["$defs"].items():
        msg_type = sub.get("properties", {}).get("type", {}).get("const")
        if msg_type is None or name.startswith("server_"):
            continue
        validators[msg_type] = jsonschema.Draft202012Validator({**sub, "$defs": schema["$defs"]})
    return validators


_VALIDATORS = _load_validators()
MESSAGE_TYPES = frozenset(_VALIDATORS)


def parse(text: str) -> tuple[dict[str, Any], Any]:
    """A client frame as (message, request id); raises the EnxError that says what is wrong. The id is
    known as soon as the JSON is, so a refusal can still answer the request."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise E.PayloadTooLarge(f"messages are limited to {MAX_MESSAGE_CHARS} characters")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise E.InvalidRequest("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise E.InvalidRequest("message must be a JSON object")
    return msg, (msg.get("id") if isinstance(msg.get("id"), (str, int)) else None)


def validate(msg: dict[str, Any]) -> str:
    """The message's type once it follows the schema."""
    msg_type = msg.get("type")
    if not isinstance(msg_type, str) or msg_type not in MESSAGE_TYPES:
        raise E.ValidationFailed(f"unknown message type {str(msg_type)[:40]!r}")
    problems = sorted(_VALIDATORS[msg_type].iter_errors(msg), key=lambda e: list(e.path))
    if problems:
        where = "/".join(str(x) for x in problems[0].path) or msg_type
        raise E.ValidationFailed(f"{where}: {problems[0].message[:200]}")
    return msg_type


# -- builders ----------------------------------------------------------------------------------------
def participant_info(p: "Participant") -> dict[str, Any]:
    return {"participant_id": p.participant_id, "user_ref": p.user_ref, "name": p.name, "role": p.role,
            "floor": p.floor}


def stream_info(s: "Producer") -> dict[str, Any]:
    return {"stream_id": s.producer_id, "participant_id": s.participant_id, "kind": s.kind, "codec": s.codec,
            "muted": s.paused, "source": s.source}


def ok(request: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ok", "request": request, **extra}


def error(exc: E.EnxError, request_id: Any = None, **extra: Any) -> dict[str, Any]:
    msg = {"type": "error", "code": exc.code, "error": exc.reason, "desc": exc.desc, **extra}
    if request_id is not None:
        msg["id"] = request_id
    return msg


def joined(live: "LiveRoom", p: "Participant", visible: list["Participant"]) -> dict[str, Any]:
    room = live.room
    return {"type": "joined", "participant_id": p.participant_id, "session_id": live.session_id, "role": p.role,
            "room": {"room_id": room.room_id, "name": room.name, "mode": room.mode, "duration": room.duration_s},
            "participants": [participant_info(x) for x in visible],
            "streams": [stream_info(s) for s in live.live_streams(p)]}


def participant_joined(p: "Participant") -> dict[str, Any]:
    return {"type": "participant-joined", "participant": participant_info(p)}


def participant_left(p: "Participant", reason: str) -> dict[str, Any]:
    return {"type": "participant-left", "participant_id": p.participant_id, "reason": reason}


def stream_added(s: "Producer") -> dict[str, Any]:
    return {"type": "stream-added", "stream": stream_info(s)}


def stream_removed(s: "Producer") -> dict[str, Any]:
    return {"type": "stream-removed", "stream_id": s.producer_id, "participant_id": s.participant_id}


def offer(sdp: str, subscriptions: list["Subscription"]) -> dict[str, Any]:
    return {"type": "offer", "sdp": sdp,
            "streams": [{"mid": sm.section.mid, **stream_info(sm.producer)} for sm in subscriptions]}


def stream_switched(sm: "Subscription", was: str) -> dict[str, Any]:
    return {"type": "stream-switched", "mid": sm.section.mid, "from": was, "stream": stream_info(sm.producer)}


def answer(sdp: str) -> dict[str, Any]:
    return {"type": "answer", "sdp": sdp}


def muted(target: "Participant", kind: str, is_muted: bool, by: "Participant", streams: list[str]) -> dict[str, Any]:
    return {"type": "muted", "participant_id": target.participant_id, "kind": kind, "muted": is_muted,
            "by": by.participant_id, "streams": streams}


def floor(action: str, target: "Participant", by: "Participant") -> dict[str, Any]:
    if action == "requested":
        return {"type": "floor-requested", "participant": participant_info(target)}
    return {"type": f"floor-{action}", "participant_id": target.participant_id, "by": by.participant_id}


def chat(sender: "Participant", text: str, to: list[str] | None, sent: float) -> dict[str, Any]:
    return {"type": "chat", "from": sender.participant_id, "name": sender.name, "text": text, "to": to,
            "sent": sent}


def session_warning(seconds_left: int) -> dict[str, Any]:
    return {"type": "session-warning", "seconds_left": seconds_left,
            "desc": "the session reaches its duration limit soon"}


def session_ended(reason: str) -> dict[str, Any]:
    return {"type": "session-ended", "reason": reason}


def layers(s: "Producer", active: list[bool]) -> dict[str, Any]:
    return {"type": "layers", "stream_id": s.producer_id, "mid": s.mid, "active": active}


def stream_state(s: "Producer", paused: bool) -> dict[str, Any]:
    return {"type": "stream-state", "stream_id": s.producer_id, "paused": paused,
            "reason": "bandwidth" if paused else None}


def active_speaker(s: "Producer") -> dict[str, Any]:
    return {"type": "active-speaker", "participant_id": s.participant_id, "stream_id": s.producer_id}


def removed(by: str, reason: str) -> dict[str, Any]:
    return {"type": "removed", "by": by, "reason": reason}


def relay(sender: "Participant", payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "relay", "from": sender.participant_id, "payload": payload}


def pong(t: float) -> dict[str, Any]:
    return {"type": "pong", "t": t}
