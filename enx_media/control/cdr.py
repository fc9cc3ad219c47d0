"""Call detail records: what each participant leg of a session used and how its media fared.

CdrRecorder subscribes to the event bus. Per participant leg it folds the live room's quality samples
(the core's totals, every quality interval) into an aggregate: loss of what the node sent it (average,
and the worst sample window), jitter and RTT of its receiver reports, bitrates each way, stream-seconds
subscribed, simulcast layer time, key-frame requests and freezes; and what it published, stream by
stream, from the publish events. Aggregates are saved once per sampling tick (one transaction for the
room), and at a leave; the session's end saves the last of them with the cdr.ready webhook event, so a
receiver told "ready" always reads a complete record. A node killed mid-session leaves the record as
of its last save (one quality interval at most); the next start closes it there.

CdrService reads the record in EnableX's CDR shape (GET /cdr/...), JSON or CSV.
"""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import errors as E
from .. import events as ev
from ..store import CdrRow, OutboxEvent, Store
from .rooms import iso
from .webhooks import outbox_event

MAX_PERIOD_DAYS = 366


def ready_event(app_id: str, room_id: str, session_id: str, at: float) -> OutboxEvent:
    """cdr.ready: the session's CDR is complete (path: where to read it, under the API's base)."""
    return outbox_event("cdr.ready", app_id, room_id, {"session_id": session_id, "ended": iso(at),
                                                       "path": f"/cdr/conf/{session_id}"}, at)


@dataclass
class Usage:
    """One participant leg's aggregate, as saved (JSON) and read back."""
    joined: float
    left: float | None = None
    # what it published: [kind, source, start, end or None while live]
    streams: dict[str, list[Any]] = field(default_factory=dict)
    samples: int = 0
    last_at: float | None = None                 # the latest sample, and its totals
    last: dict[str, float] = field(default_factory=dict)
    sampled_s: float = 0.0                       # time the samples cover
    packets_out: float = 0.0                     # sent to it (the loss average's denominator)
    packets_lost: float = 0.0
    worst_loss: float = 0.0                      # of one sample window
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    max_sent_bps: float = 0.0
    max_received_bps: float = 0.0
    jitter_sum: float = 0.0
    jitter_max: float = 0.0
    rtt_sum: float = 0.0
    rtt_max: float = 0.0
    reports: int = 0                             # samples with receiver-report figures
    subscribed_s: float = 0.0                    # stream-seconds received
    layer_s: dict[str, float] = field(default_factory=dict)
    keyframe_requests: int = 0
    freezes: int = 0

    def add_sample(self, s: ev.QualitySample) -> None:
        start = self.last_at if self.last_at is not None else self.joined
        span = max(0.0, s.at - start)

        def delta(name: str) -> float:
            # The core's totals are over the streams open now: one that closed takes its count with it,
            # so a total may drop. Such a window counts from zero rather than going negative.
            now = float(getattr(s, name))
            before = self.last.get(name, 0.0)
            return now - before if now >= before else now
        sent, lost = delta("packets_out"), delta("packets_lost")
        b_in, b_out = delta("bytes_in"), delta("bytes_out")
        self.packets_out += sent
        self.packets_lost += min(lost, sent)
        if sent > 0:
            self.worst_loss = max(self.worst_loss, min(1.0, lost / sent))
        self.bytes_in += b_in
        self.bytes_out += b_out
        if span > 0:
            self.max_sent_bps = max(self.max_sent_bps, b_in * 8 / span)
            self.max_received_bps = max(self.max_received_bps, b_out * 8 / span)
            self.subscribed_s += s.streams_received * span
            for rid, count in s.layers.items():
                self.layer_s[rid] = self.layer_s.get(rid, 0.0) + count * span
        self.sampled_s += span
        if s.streams_received:
            self.reports += 1
            self.jitter_sum += s.jitter_ms
            self.jitter_max = max(self.jitter_max, s.jitter_ms)
            self.rtt_sum += s.rtt_ms
            self.rtt_max = max(self.rtt_max, s.rtt_ms)
        self.keyframe_requests = max(self.keyframe_requests, s.keyframe_requests)
        self.freezes = max(self.freezes, s.freezes)
        self.samples += 1
        self.last_at = s.at
        self.last = {k: float(getattr(s, k)) for k in ("packets_out", "packets_lost", "bytes_in", "bytes_out",
                                                         "streams_received")}

    def close(self, at: float) -> None:
        """The leg ended at `at`: its open streams end there, and the streams it received last go on
        counting until then."""
        self.left = at
        for st in self.streams.values():
            if st[3] is None:
                st[3] = at
        if self.last_at is not None and at > self.last_at:
            self.subscribed_s += self.last.get("streams_received", 0.0) * (at - self.last_at)

    def saved(self) -> dict[str, Any]:
        """Its fields as they are now, for the store (which serializes them at once): a shallow copy, not
        dataclasses.asdict's deep one, which cost 40 µs a participant at every sampling tick."""
        return dict(vars(self))

    @classmethod
    def load(cls, data: dict[str, Any]) -> "Usage":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class CdrRecorder:
    """The CDR as a subscriber of the event bus (see the module's docstring)."""

    def __init__(self, store: Store, on_outbox: Callable[[], None] | None = None):
        self.sessions = store.sessions
        self.on_outbox = on_outbox
        self.usage: dict[str, dict[str, Usage]] = {}      # session -> participant -> leg aggregate
        self._dirty: dict[str, set[str]] = {}
        self._flush_scheduled = False

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionEnded):
            self._end(event)
            return
        if isinstance(event, ev.ParticipantJoined):
            self.usage.setdefault(event.session_id, {})[event.participant_id] = Usage(joined=event.at)
            self._mark(event.session_id, event.participant_id, now=True)
            return
        legs = self.usage.get(event.session_id, {})
        if isinstance(event, ev.StreamPublished):
            u = legs.get(event.participant_id)
            if u is not None:
                u.streams[event.stream_id] = [event.kind, event.source, event.at, None]
                self._mark(event.session_id, event.participant_id)
        elif isinstance(event, ev.StreamUnpublished):
            u = legs.get(event.participant_id)
            if u is not None and event.stream_id in u.streams and u.streams[event.stream_id][3] is None:
                u.streams[event.stream_id][3] = event.at
                self._mark(event.session_id, event.participant_id)
        elif isinstance(event, ev.QualitySample):
            u = legs.get(event.participant_id)
            if u is not None:
                u.add_sample(event)
                self._mark(event.session_id, event.participant_id)
        elif isinstance(event, ev.ParticipantLeft):
            u = legs.get(event.participant_id)
            if u is not None and u.left is None:
                u.close(event.at)
                self._mark(event.session_id, event.participant_id, now=True)

    def _end(self, event: ev.SessionEnded) -> None:
        """The last save of the session's legs, with cdr.ready."""
        legs = self.usage.pop(event.session_id, {})
        for u in legs.values():
            if u.left is None:
                u.close(event.at)
        self._dirty.pop(event.session_id, None)
        ready = ready_event(event.app_id, event.room_id, event.session_id, event.at)
        self.sessions.save_usage(event.session_id, {pid: u.saved() for pid, u in legs.items()}, event.at, [ready])
        if self.on_outbox is not None:
            self.on_outbox()

    def _mark(self, session_id: str, participant_id: str, now: bool = False) -> None:
        self._dirty.setdefault(session_id, set()).add(participant_id)
        if now:
            self.flush()
            return
        # A sampling tick publishes one sample per participant in one step of the loop: save them
        # together after it, one transaction per room rather than one per participant.
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:        # no loop (a synchronous caller): at once
                self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for session_id, pids in dirty.items():
            legs = self.usage.get(session_id, {})
            saved = [legs[pid] for pid in pids if pid in legs]
            if saved:
                at = max(max(u.joined, u.last_at or 0.0, u.left or 0.0) for u in saved)
                self.sessions.save_usage(session_id, {pid: legs[pid].saved() for pid in pids if pid in legs}, at)


# --- reading ---------------------------------------------------------------------------------------
def _minutes(seconds: float) -> float:
    return round(seconds / 60.0, 3)


def parse_date(text: str, name: str) -> dt.date:
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise E.ValidationFailed(f"{name} must be a date YYYY-MM-DD (UTC)") from None


def period(from_date: str, to_date: str) -> tuple[float, float]:
    """[start of from_date, end of to_date) in epoch seconds, UTC; both days included."""
    start, end = parse_date(from_date, "from_date"), parse_date(to_date, "to_date")
    if end < start:
        raise E.ValidationFailed("to_date is before from_date")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise E.ValidationFailed(f"a period spans at most {MAX_PERIOD_DAYS} days")
    utc = dt.timezone.utc
    return (dt.datetime.combine(start, dt.time(), utc).timestamp(),
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), utc).timestamp())


def entry(row: CdrRow) -> dict[str, Any]:
    """One leg in EnableX's CDR shape (room, user, published_track, usage) with our quality block."""
    s, p = row.session, row.participant
    u = Usage.load(row.usage) if row.usage else Usage(joined=p.joined)
    left = p.left if p.left is not None else u.left
    end = left if left is not None else (u.last_at or p.joined)
    connected = max(0.0, end - p.joined)
    kinds: dict[str, float] = {"audio": 0.0, "video": 0.0, "screen": 0.0}
    for kind, source, start, stop in u.streams.values():
        key = "screen" if source == "screen" else kind
        if key in kinds:
            kinds[key] += max(0.0, (stop if stop is not None else end) - start)
    layer_total = sum(u.layer_s.values())
    quality = {
        "samples": u.samples,
        "packet_loss": {"average": round(u.packets_lost / u.packets_out, 4) if u.packets_out else 0.0,
                        "worst_window": round(u.worst_loss, 4)},
        "jitter_ms": {"average": round(u.jitter_sum / u.reports, 2) if u.reports else None,
                      "max": round(u.jitter_max, 2) if u.reports else None},
        "rtt_ms": {"average": round(u.rtt_sum / u.reports, 1) if u.reports else None,
                   "max": round(u.rtt_max, 1) if u.reports else None},
        "bitrate_sent_bps": {"average": round(u.bytes_in * 8 / u.sampled_s) if u.sampled_s else 0,
                             "max": round(u.max_sent_bps)},
        "bitrate_received_bps": {"average": round(u.bytes_out * 8 / u.sampled_s) if u.sampled_s else 0,
                                 "max": round(u.max_received_bps)},
        "layers": ({rid: round(t / layer_total, 3) for rid, t in sorted(u.layer_s.items())} if layer_total else None),
        "keyframe_requests": u.keyframe_requests,
        "freezes": u.freezes,
    }
    return {
        "cdr_id": f"{s.session_id}.{p.participant_id}",
        "conf_num": s.session_id,
        "trans_date": iso(p.joined),
        "app_id": s.app_id,
        "room": {"room_id": s.room_id, "connect_dt": iso(p.joined), "disconnect_dt": iso(left),
                 "duration": _minutes(connected), "room_details": s.room_details or {},
                 "session_started": iso(s.started), "session_ended": iso(s.ended), "end_reason": s.end_reason},
        "user": {"name": p.name, "role": p.role, "ref": p.user_ref, "participant_id": p.participant_id,
                 "leg": row.leg, "leave_reason": p.leave_reason},
        "published_track": {"audio": any(k == "audio" for k, _, _, _ in u.streams.values()),
                            "video": any(k == "video" and src != "screen" for k, src, _, _ in u.streams.values()),
                            "screen": any(src == "screen" for _, src, _, _ in u.streams.values())},
        "usage": {"connect_minutes": _minutes(connected),
                  "published_minutes": _minutes(kinds["audio"] + kinds["video"]),
                  "screen_minutes": _minutes(kinds["screen"]),
                  "subscribed_minutes": _minutes(u.subscribed_s)},
        "quality": quality,
    }


CSV_COLUMNS = ("conf_num", "cdr_id", "room_id", "user_ref", "name", "role", "leg", "connect_dt", "disconnect_dt",
               "duration_minutes", "leave_reason", "audio", "video", "screen", "published_minutes", "screen_minutes",
               "subscribed_minutes", "loss_average", "loss_worst_window", "jitter_ms_average", "jitter_ms_max",
               "rtt_ms_average", "rtt_ms_max", "bitrate_sent_bps", "bitrate_received_bps", "layers",
               "keyframe_requests", "freezes")


def to_csv(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        r, usr, q, t, use = e["room"], e["user"], e["quality"], e["published_track"], e["usage"]
        w.writerow([e["conf_num"], e["cdr_id"], r["room_id"], usr["ref"], usr["name"], usr["role"], usr["leg"],
                    r["connect_dt"], r["disconnect_dt"] or "", r["duration"], usr["leave_reason"] or "",
                    int(t["audio"]), int(t["video"]), int(t["screen"]), use["published_minutes"],
                    use["screen_minutes"], use["subscribed_minutes"], q["packet_loss"]["average"],
                    q["packet_loss"]["worst_window"], _blank(q["jitter_ms"]["average"]), _blank(q["jitter_ms"]["max"]),
                    _blank(q["rtt_ms"]["average"]), _blank(q["rtt_ms"]["max"]), q["bitrate_sent_bps"]["average"],
                    q["bitrate_received_bps"]["average"],
                    ";".join(f"{k}:{v}" for k, v in (q["layers"] or {}).items()), q["keyframe_requests"],
                    q["freezes"]])
    return out.getvalue()


def _blank(v: Any) -> Any:
    return "" if v is None else v


class CdrService:
    def __init__(self, store: Store):
        self.store = store

    def query(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
              from_date: str | None = None, to_date: str | None = None, offset: int = 0,
              limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """(how many legs match, one page of CDR entries). NotFound for a conf_num or a room the app has
        no record of."""
        start = end = None
        if from_date is not None and to_date is not None:
            start, end = period(from_date, to_date)
        total, rows = self.store.sessions.cdr(app_id, room_id=room_id, session_id=session_id, joined_from=start,
                                              joined_to=end, offset=offset, limit=limit)
        if total == 0:
            if session_id is not None:
                s = self.store.sessions.get(session_id)
                if s is None or s.app_id != app_id:
                    raise E.NotFound("no such session (conf_num)", reason="session not found")
            elif room_id is not None and self.store.rooms.get(room_id, app_id) is None:
                if not self.store.sessions.cdr(app_id, room_id=room_id, limit=1)[0]:
                    raise E.NotFound("no such room, and no CDR of one", reason="room not found")
        return total, [entry(r) for r in rows]
