"""Rooms: validation of both request shapes, the canonical room, and the room service over the repositories.

Two request shapes reach ``POST /rooms``:

* the seed document's: ``{"name", "mode", "duration": <seconds>, "settings": {"auto_record": bool}}``
* what EnableX sample apps send: ``{"name", "owner_ref", "settings": {"description", "mode",
  "scheduled", "adhoc", "scheduled_time", "duration": <minutes>, "moderators", "participants",
  "auto_recording", "quality", ...}, "data": {}}``, often with numbers and booleans as strings.

Both are normalised into one canonical record; responses carry both views (``settings.duration`` in
minutes, top-level ``duration`` in seconds) so either kind of client reads what it sent.
"""
from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..errors import Conflict, NotFound, ValidationFailed
from ..store import RoomDeletion, RoomRecord, Store

MODES = ("group", "lecture", "p2p")
TYPES = ("permanent", "scheduled", "adhoc")
ROLES = ("moderator", "participant", "viewer")
# Participant caps per mode, from the seed (group SFU 100, lecture 2000, p2p 2).
MODE_CAPACITY = {"group": 100, "lecture": 2000, "p2p": 2}
QUALITIES = ("SD", "HD", "FHD")
# a lecture's composite (the MCU's layouts, enx_media/mcu/layout.py; the control plane imports no media code)
MCU_LAYOUTS = ("speaker", "grid", "single")
MCU_CODECS = ("vp8", "h264")
MCU_SIZES = ("640x360", "960x540", "1280x720", "1920x1080")
MCU_MAX_FPS = 30
MIN_DURATION_MIN, MAX_DURATION_MIN = 1, 1440
DEFAULT_SCHEDULED_DURATION_MIN = 60
MAX_SCHEDULE_AHEAD_S = 366 * 86400
MAX_ACTIVE_TALKERS = 12

TOP_LEVEL_KEYS = {"name", "owner_ref", "mode", "type", "duration", "description", "settings", "data"}
BOOL_SETTINGS = ("scheduled", "adhoc", "auto_recording", "canvas", "screen_share", "abwd",
                 "wait_for_moderator", "single_file_recording", "transcription")
STR_SETTINGS = {"description": 1000, "billing_code": 100, "media_zone": 32}
SETTINGS_KEYS = set(BOOL_SETTINGS) | set(STR_SETTINGS) | {
    "mode", "type", "scheduled_time", "duration", "moderators", "participants", "quality",
    "max_active_talkers", "auto_record", "layout", "composite_codec", "composite_size", "composite_fps"}


# --- coercion: EnableX apps send numbers and booleans as strings ------------------------------------
def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise ValidationFailed(f"{field} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text and text[0] in "+-":
            sign, digits = text[0], text[1:]
        else:
            sign, digits = "", text
        if digits.isascii() and digits.isdigit() and len(digits) <= 12:
            return int(sign + digits)
    raise ValidationFailed(f"{field} must be an integer, got {_show(value)}")


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValidationFailed(f"{field} must be a boolean, got {_show(value)}")


def _str(value: Any, field: str, max_len: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a string, got {_show(value)}")
    if len(value) > max_len:
        raise ValidationFailed(f"{field} is longer than {max_len} characters")
    if not allow_empty and not value.strip():
        raise ValidationFailed(f"{field} must not be empty")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise ValidationFailed(f"{field} contains control characters")
    return value


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in (c.lower() for c in choices):
        v = value.strip().lower()
        return next(c for c in choices if c.lower() == v)
    raise ValidationFailed(f"{field} must be one of {', '.join(choices)}, got {_show(value)}")


def _json_chars(value: Any) -> int:
    """Length of the compact JSON form: what the size limits on ``data`` count."""
    return len(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_time(value: Any, field: str) -> float:
    """Accept 'YYYY-MM-DD HH:MM:SS' (UTC, as EnableX apps send), ISO 8601, or epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValidationFailed(f"{field} must be a positive epoch time")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValidationFailed(
                f"{field} must be 'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601, got {_show(value)}") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        try:
            return t.timestamp()
        except (OverflowError, OSError, ValueError):
            raise ValidationFailed(f"{field} is out of range") from None
    raise ValidationFailed(f"{field} must be a time string, got {_show(value)}")


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def enablex_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# --- the canonical room --------------------------------------------------------------------------
@dataclass(frozen=True)
class Room(RoomRecord):
    """A stored room with what the control plane reads off it (duration, window, the API's shapes)."""

    @property
    def duration_s(self) -> int | None:
        d = self.settings.get("duration")
        return None if d is None else int(d) * 60

    @property
    def window(self) -> tuple[float, float] | None:
        """(start, end) of a scheduled room, epoch seconds."""
        if self.type != "scheduled":
            return None
        start = self.settings["scheduled_time_epoch"]
        return start, start + (self.duration_s or DEFAULT_SCHEDULED_DURATION_MIN * 60)

    def to_json(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.settings.items() if k != "scheduled_time_epoch"}
        return {
            "room_id": self.room_id,
            "name": self.name,
            "owner_ref": self.owner_ref,
            "mode": self.mode,
            "type": self.type,
            "duration": self.duration_s,
            "settings": settings,
            "data": self.data,
            "created": iso(self.created),
            "updated": iso(self.updated),
        }

    def as_request(self) -> dict[str, Any]:
        """The room written back as an EnableX-shaped request, the base a PATCH merges into."""
        settings = {k: v for k, v in self.settings.items() if k not in ("scheduled_time_epoch",)}
        return {"name": self.name, "owner_ref": self.owner_ref, "settings": settings, "data": dict(self.data)}


def _refuse_unknown(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise ValidationFailed(f"unknown {what}: {', '.join(sorted(unknown))}")


def _object_field(body: dict[str, Any], key: str) -> dict[str, Any]:
    """body[key] as an object; missing or null is empty."""
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(f"{key} must be an object")
    return value


def normalize_room_request(body: Any, *, at: float, previous: Room | None = None) -> dict[str, Any]:
    """Validate a create (or merged PATCH) body and return the canonical fields.

    Raises ValidationFailed with a message naming the offending field."""
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object")
    _refuse_unknown(body, TOP_LEVEL_KEYS, "field(s)")
    settings_in = _object_field(body, "settings")
    _refuse_unknown(settings_in, SETTINGS_KEYS, "settings field(s)")
    data = _object_field(body, "data")
    if _json_chars(data) > 8192:
        raise ValidationFailed("data must serialise to at most 8192 bytes")

    if "name" not in body:
        raise ValidationFailed("name is required")
    name = _str(body["name"], "name", 255, allow_empty=False).strip()
    owner_ref = _str(body.get("owner_ref") or "", "owner_ref", 255)

    # mode: top-level (seed) or settings (EnableX); both must agree.
    modes = {k: _choice(v, k, MODES) for k, v in (("mode", body.get("mode")),
                                                   ("settings.mode", settings_in.get("mode"))) if v is not None}
    if len(set(modes.values())) > 1:
        raise ValidationFailed("mode and settings.mode disagree")
    mode = next(iter(modes.values()), "group")

    # duration: top-level seconds (seed) or settings minutes (EnableX).
    duration_min = None
    if body.get("duration") is not None:
        secs = _int(body["duration"], "duration")
        if not MIN_DURATION_MIN * 60 <= secs <= MAX_DURATION_MIN * 60:
            raise ValidationFailed(f"duration is in seconds and must be {MIN_DURATION_MIN * 60}.."
                                   f"{MAX_DURATION_MIN * 60}")
        duration_min = math.ceil(secs / 60)
    if settings_in.get("duration") not in (None, ""):
        mins = _int(settings_in["duration"], "settings.duration")
        if not MIN_DURATION_MIN <= mins <= MAX_DURATION_MIN:
            raise ValidationFailed(f"settings.duration is in minutes and must be {MIN_DURATION_MIN}.."
                                   f"{MAX_DURATION_MIN}")
        if duration_min is not None and duration_min != mins:
            raise ValidationFailed("duration (seconds) and settings.duration (minutes) disagree")
        duration_min = mins

    # type: explicit `type`, or EnableX's scheduled/adhoc flags; they must not contradict.
    flags = {k: _bool(settings_in[k], f"settings.{k}") for k in ("scheduled", "adhoc") if k in settings_in}
    if flags.get("scheduled") and flags.get("adhoc"):
        raise ValidationFailed("a room cannot be both scheduled and adhoc")
    from_flags = "scheduled" if flags.get("scheduled") else "adhoc" if flags.get("adhoc") else None
    explicit = {k: _choice(v, k, TYPES) for k, v in (("type", body.get("type")),
                                                     ("settings.type", settings_in.get("type"))) if v is not None}
    if len(set(explicit.values())) > 1:
        raise ValidationFailed("type and settings.type disagree")
    room_type = next(iter(explicit.values()), None)
    if room_type and from_flags and room_type != from_flags:
        raise ValidationFailed(f"type {room_type} contradicts settings.{from_flags}")
    if room_type and room_type != "scheduled" and flags.get("scheduled"):
        raise ValidationFailed(f"type {room_type} contradicts settings.scheduled")
    room_type = room_type or from_flags or "permanent"

    settings: dict[str, Any] = {"mode": mode, "type": room_type,
                                "scheduled": room_type == "scheduled", "adhoc": room_type == "adhoc"}

    scheduled_raw = settings_in.get("scheduled_time")
    if scheduled_raw in ("", None):
        scheduled_raw = None
    if room_type == "scheduled":
        if scheduled_raw is None:
            raise ValidationFailed("a scheduled room needs settings.scheduled_time")
        start = float(int(parse_time(scheduled_raw, "settings.scheduled_time")))  # whole seconds, as shown
        changed = previous is None or previous.settings.get("scheduled_time_epoch") != start
        if changed and start <= at:
            raise ValidationFailed("settings.scheduled_time must be in the future")
        if start > at + MAX_SCHEDULE_AHEAD_S:
            raise ValidationFailed("settings.scheduled_time is more than a year ahead")
        settings["scheduled_time"] = enablex_time(start)
        settings["scheduled_time_epoch"] = start
        duration_min = duration_min or DEFAULT_SCHEDULED_DURATION_MIN
    elif scheduled_raw is not None:
        raise ValidationFailed("settings.scheduled_time is only for scheduled rooms")
    settings["duration"] = duration_min

    cap = MODE_CAPACITY[mode]
    moderators = _int(settings_in["moderators"], "settings.moderators") if "moderators" in settings_in else None
    participants = (_int(settings_in["participants"], "settings.participants")
                    if "participants" in settings_in else None)
    if moderators is None:
        moderators = 1
    if participants is None:
        participants = cap - moderators
    for field, value in (("settings.moderators", moderators), ("settings.participants", participants)):
        if not 0 <= value <= cap:
            raise ValidationFailed(f"{field} must be 0..{cap} in {mode} mode")
    if moderators + participants > cap:
        raise ValidationFailed(f"{mode} rooms hold at most {cap} people: moderators + participants = "
                               f"{moderators + participants}")
    if moderators + participants < 1:
        raise ValidationFailed("a room must admit at least one person")
    settings["moderators"] = moderators
    settings["participants"] = participants

    talkers = settings_in.get("max_active_talkers")
    talkers = _int(talkers, "settings.max_active_talkers") if talkers is not None else min(6, cap)
    if not 1 <= talkers <= min(MAX_ACTIVE_TALKERS, cap):
        raise ValidationFailed(f"settings.max_active_talkers must be 1..{min(MAX_ACTIVE_TALKERS, cap)}")
    settings["max_active_talkers"] = talkers

    settings["quality"] = _choice(settings_in.get("quality", "SD"), "settings.quality", QUALITIES)
    settings["layout"] = _choice(settings_in.get("layout", "speaker"), "settings.layout", MCU_LAYOUTS)
    settings["composite_codec"] = _choice(settings_in.get("composite_codec", "vp8"), "settings.composite_codec",
                                          MCU_CODECS)
    settings["composite_size"] = _choice(settings_in.get("composite_size", "1280x720"), "settings.composite_size",
                                         MCU_SIZES)
    fps = _int(settings_in.get("composite_fps", MCU_MAX_FPS), "settings.composite_fps")
    if not 1 <= fps <= MCU_MAX_FPS:
        raise ValidationFailed(f"settings.composite_fps must be 1..{MCU_MAX_FPS}")
    settings["composite_fps"] = fps

    rec = {k: _bool(settings_in[k], f"settings.{k}") for k in ("auto_recording", "auto_record") if k in settings_in}
    if len(set(rec.values())) > 1:
        raise ValidationFailed("auto_recording and auto_record disagree")
    settings["auto_recording"] = next(iter(rec.values()), False)
    for key in BOOL_SETTINGS:
        if key in ("scheduled", "adhoc", "auto_recording"):
            continue
        if key in settings_in:
            settings[key] = _bool(settings_in[key], f"settings.{key}")
    description = settings_in.get("description", body.get("description"))
    settings["description"] = _str(description, "settings.description", 1000) if description is not None else ""
    for key, max_len in STR_SETTINGS.items():
        if key != "description" and key in settings_in:
            settings[key] = _str(settings_in[key], f"settings.{key}", max_len)

    return {"name": name, "owner_ref": owner_ref, "mode": mode, "type": room_type,
            "settings": settings, "data": data}


def merge_patch(room: Room, patch: Any) -> dict[str, Any]:
    """Merge a PATCH body into the room's current request form: settings merge key by key, and keys
    that depend on each other (type/scheduled/adhoc/scheduled_time, the two duration units, the two
    recording spellings) are replaced as a group when the patch touches one of them."""
    if not isinstance(patch, dict):
        raise ValidationFailed("request body must be a JSON object")
    if not patch:
        raise ValidationFailed("empty update")
    unknown = set(patch) - TOP_LEVEL_KEYS
    if unknown:
        raise ValidationFailed(f"unknown field(s): {', '.join(sorted(unknown))}")
    patch_settings = patch.get("settings") or {}
    if not isinstance(patch_settings, dict):
        raise ValidationFailed("settings must be an object")
    base = room.as_request()
    settings = dict(base["settings"])
    if "type" in patch or {"type", "scheduled", "adhoc"} & set(patch_settings):
        for key in ("type", "scheduled", "adhoc", "scheduled_time"):
            settings.pop(key, None)
        wants_scheduled = (str(patch.get("type") or patch_settings.get("type") or "").lower() == "scheduled"
                           or patch_settings.get("scheduled") in (True, 1, "true", "1"))
        if room.type == "scheduled" and wants_scheduled and "scheduled_time" not in patch_settings:
            settings["scheduled_time"] = base["settings"].get("scheduled_time")
    if "duration" in patch:
        settings.pop("duration", None)
    if "mode" in patch:
        settings.pop("mode", None)
    new_mode = patch.get("mode", patch_settings.get("mode"))
    if new_mode is not None and new_mode != room.mode:
        # Seats and talkers were sized for the old mode's cap: size them anew unless the patch says.
        for key in ("participants", "max_active_talkers"):
            if key not in patch_settings:
                settings.pop(key, None)
    if "auto_record" in patch_settings:
        settings.pop("auto_recording", None)
    settings.update(patch_settings)
    merged = {"name": patch.get("name", base["name"]), "owner_ref": patch.get("owner_ref", base["owner_ref"]),
              "settings": settings, "data": patch.get("data", base["data"])}
    for key in ("duration", "type", "mode"):
        if key in patch:
            merged[key] = patch[key]
    return merged


def _room(r: RoomRecord) -> Room:
    return r if isinstance(r, Room) else Room(**vars(r))


class RoomService:
    def __init__(self, store: Store):
        self.store = store

    def create(self, app_id: str, body: Any) -> Room:
        t = time.time()
        fields = normalize_room_request(body, at=t)
        room = Room(secrets.token_hex(12), app_id, fields["name"], fields["owner_ref"], fields["mode"],
                    fields["type"], fields["settings"], fields["data"], t, t)
        self.store.rooms.add(room)
        return room

    def get(self, app_id: str, room_id: str) -> Room:
        """The room if it belongs to this app. Another app's room is reported as not found."""
        r = self.store.rooms.get(room_id, app_id)
        if r is None:
            raise _no_room(room_id)
        return _room(r)

    def find(self, room_id: str) -> Room | None:
        r = self.store.rooms.get(room_id)
        return _room(r) if r else None

    def list(self, app_id: str, offset: int, limit: int) -> tuple[int, list[Room]]:
        total, records = self.store.rooms.list(app_id, offset, limit)
        return total, [_room(r) for r in records]

    def count(self) -> int:
        return self.store.rooms.count()

    def update(self, app_id: str, room_id: str, patch: Any) -> Room:
        def change(current: RoomRecord, live_session: str | None) -> RoomRecord:
            room = _room(current)
            fields = normalize_room_request(merge_patch(room, patch), at=time.time(), previous=room)
            if fields["mode"] != room.mode and live_session:
                raise Conflict("the room's mode cannot change while a session is live", reason="session live")
            return dataclasses.replace(room, name=fields["name"], owner_ref=fields["owner_ref"], mode=fields["mode"],
                                       type=fields["type"], settings=fields["settings"], data=fields["data"],
                                       updated=time.time())

        r = self.store.rooms.update(app_id, room_id, change)
        if r is None:
            raise _no_room(room_id)
        return _room(r)

    def delete(self, app_id: str, room_id: str) -> None:
        outcome = self.store.rooms.delete_if_idle(app_id, room_id, time.time())
        if outcome is RoomDeletion.NOT_FOUND:
            raise _no_room(room_id)
        if outcome is RoomDeletion.SESSION_LIVE:
            raise Conflict("the room has a live session; it can be deleted once the session ends",
                           reason="session live")

    # -- sessions (recorded from the event bus by SessionRecorder) ----------------------------------
    def live_session(self, room_id: str) -> str | None:
        return self.store.sessions.live_session(room_id)

    def live_users(self, app_id: str, room_id: str) -> builtins.list[dict[str, Any]]:
        self.get(app_id, room_id)
        return [{"participant_id": p.participant_id, "user_ref": p.user_ref, "name": p.name, "role": p.role,
                 "joined": iso(p.joined)} for p in self.store.sessions.live_participants(room_id)]


def _no_room(room_id: str) -> NotFound:
    return NotFound(f"no room {room_id!r} in this app", reason="room not found")
