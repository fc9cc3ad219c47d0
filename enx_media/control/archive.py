"""The archive: recorded files as the REST API lists, serves and deletes them (EnableX's /archive routes),
and the recording.ready events that announce them. The recorder (recording/) writes the files and their
records; this reads them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import errors as E
from ..store import OutboxEvent, RecordingRecord, Store
from .cdr import period
from .rooms import iso
from .webhooks import enablex_event, outbox_event

SINGLE_FILE_SOURCES = ("composite", "mix")     # the room as one picture and one sound: EnableX's "transcoded"


def ready_events(app_id: str, room_id: str, session_id: str, recording_id: str, files: list[RecordingRecord],
                 at: float) -> list[OutboxEvent]:
    """recording.ready, and EnableX's `recording` notification, for a take whose files are all finished."""
    listed = [file_json(f) for f in files]
    playable = [f for f in listed if f["state"] in ("ready", "recovered")]
    out = [outbox_event("recording.ready", app_id, room_id,
                        {"session_id": session_id, "recording_id": recording_id, "files": listed}, at),
           enablex_event("recording", app_id, room_id, session_id, at,
                         {"recording": [{"url": f["url"], "file_id": f["file_id"]} for f in playable]})]
    # EnableX makes one file of the room after the session ("transcoded"); the node's composite and mix
    # are that file, made live by the compositor
    single = [{"url": f["url"], "file_id": f["file_id"]} for f in playable if f["source"] in SINGLE_FILE_SOURCES]
    if single:
        out.append(enablex_event("transcoded", app_id, room_id, session_id, at, {"transcoded": single}))
    return out


def file_json(f: RecordingRecord) -> dict[str, Any]:
    """A file as the API lists it (url: its download, under the API's base)."""
    return {"file_id": f.file_id, "recording_id": f.recording_id, "conf_num": f.session_id,
            "participant_id": f.participant_id, "user_ref": f.user_ref, "kind": f.kind, "source": f.source,
            "codec": f.codec, "format": Path(f.path).suffix.lstrip("."), "started": iso(f.started),
            "ended": iso(f.ended), "duration": None if f.duration is None else round(f.duration, 3),
            "bytes": f.bytes, "state": f.state, "error": f.error, "url": f"/archive/file/{f.file_id}"}


class ArchiveService:
    def __init__(self, store: Store, root: Path):
        self.store, self.root = store, root.resolve()

    def query(self, app_id: str, *, room_id: str | None = None, session_id: str | None = None,
              from_date: str | None = None, to_date: str | None = None) -> list[dict[str, Any]]:
        """One entry per session in EnableX's archive shape (trans_date, app_id, room_id, conf_num,
        recording: its files), oldest first. NotFound for a conf_num or room the app has no record of."""
        start = end = None
        if from_date is not None and to_date is not None:
            start, end = period(from_date, to_date)
        files = self.store.recordings.find(app_id, room_id=room_id, session_id=session_id, started_from=start,
                                           started_to=end)
        if not files:
            session = self.store.sessions.get(session_id) if session_id is not None else None
            if session_id is not None and (session is None or session.app_id != app_id):
                raise E.NotFound("no such session (conf_num)", reason="session not found")
            if room_id is not None and self.store.rooms.get(room_id, app_id) is None:
                raise E.NotFound("no such room, and no recording of one", reason="room not found")
        sessions: dict[str, dict[str, Any]] = {}
        for f in files:
            entry = sessions.setdefault(f.session_id, {"trans_date": iso(f.started), "app_id": f.app_id,
                                                       "room_id": f.room_id, "conf_num": f.session_id,
                                                       "recording": [], "transcoded": []})
            entry["recording"].append(file_json(f))
            if f.source in SINGLE_FILE_SOURCES:
                entry["transcoded"].append(file_json(f))
        return list(sessions.values())

    def file(self, app_id: str, file_id: str) -> tuple[RecordingRecord, Path]:
        """The app's file and where it is (NotFound if it is not the app's, not finished, or gone)."""
        f = self.store.recordings.get(file_id, app_id)
        if f is None:
            raise E.NotFound("no such recorded file", reason="file not found")
        path = Path(f.path).resolve()
        if f.state not in ("ready", "recovered") or not path.is_file() or self.root not in path.parents:
            raise E.NotFound(f"the file is {f.state}, not available", reason="file not found")
        return f, path

    def delete(self, app_id: str, file_id: str) -> None:
        f = self.store.recordings.delete(app_id, file_id)
        if f is None:
            raise E.NotFound("no such recorded file", reason="file not found")
        path = Path(f.path).resolve()
        if self.root in path.parents:
            path.unlink(missing_ok=True)
