"""Recordings: the node's recording thread and the takes (one start .. stop of a room's recording).

A take writes one file per participant track (recording/writer.py) under
<data_dir>/recordings/<app>/<room>/<session>/<recording_id>/. Each track reads its producer's tap (the
core copies the packets; the forwarding path does not wait for the recorder) on the recorder's thread,
which muxes them off the event loop; the loop only starts and finishes tracks and writes the record.
The record (store.recordings) and the webhook events go together: recording.started with the take's
first files, recording.ready (and EnableX's `recording`) with the finish of its last file. A file still
`recording` at the next start was cut by a crash: `recover` repairs it and marks it `recovered`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..control.archive import ready_events
from ..control.webhooks import outbox_event
from ..store import OutboxEvent, RecordingRecord, Store
from .writer import SUFFIX, TrackWriter, repair

log = logging.getLogger(__name__)

POLL_S = 0.05                  # how often the thread empties the taps (they hold ~5 s)
KEYFRAME_EVERY_S = 1.0         # a track waiting for a key frame asks this often


@dataclass(frozen=True)
class StreamInfo:
    """What a take needs of a live producer."""
    producer: Any              # the native producer (its tap)
    handle: Any                # the router's Producer: top_ssrc (a simulcast one's best encoding), recorded
    producer_id: str
    participant_id: str
    user_ref: str
    kind: str
    source: str
    codec: str


@dataclass
class Take:
    recording_id: str
    app_id: str
    room_id: str
    session_id: str
    started: float
    by: str
    files: dict[str, str] = field(default_factory=dict)      # producer_id -> file_id
    open: set[str] = field(default_factory=set)              # file_ids not finished
    stopping: bool = False


@dataclass(eq=False)
class _Track:
    record: RecordingRecord
    producer: Any
    handle: Any
    writer: TrackWriter
    take: Take
    asked_key_at: float = 0.0


class Recorder:
    def __init__(self, worker: Any, store: Store, root: Path, on_outbox: Callable[[], None]) -> None:
        self.worker, self.store, self.root, self.on_outbox = worker, store, root, on_outbox
        self.counts = {"tracks": 0, "failed": 0, "keyframe_requests": 0}
        self._tracks: list[_Track] = []                     # the thread's
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the event loop's side ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="enx-recorder", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish every file (the rooms stopped their takes already; this is the backstop) and the thread."""
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        self._thread = None

    def begin(self, app_id: str, room_id: str, session_id: str, by: str, streams: list[StreamInfo]) -> Take:
        take = Take("rec_" + secrets.token_hex(8), app_id, room_id, session_id, time.time(), by)
        started = outbox_event("recording.started", app_id, room_id,
                               {"session_id": session_id, "recording_id": take.recording_id, "by": by}, take.started)
        self._add(take, streams, [started])
        return take

    def add_stream(self, take: Take, stream: StreamInfo) -> None:
        if not take.stopping and stream.producer_id not in take.files:
            self._add(take, [stream], [])

    def end_stream(self, take: Take, producer_id: str) -> None:
        file_id = take.files.get(producer_id)
        if file_id is not None and file_id in take.open:
            self._commands.put(functools.partial(self._finish_on_thread, file_id))

    def end(self, take: Take) -> None:
        """Stop the take: its files are finished, then recording.ready goes out."""
        take.stopping = True
        if not take.open:
            self._ready(take)
        for file_id in list(take.open):
            self._commands.put(functools.partial(self._finish_on_thread, file_id))

    def _add(self, take: Take, streams: list[StreamInfo], outbox: list[OutboxEvent]) -> None:
        records, tracks = [], []
        folder = self.root / take.app_id / take.room_id / take.session_id / take.recording_id
        for s in streams:
            if s.codec not in SUFFIX:
                log.warning("not recording %s (%s)", s.producer_id, s.codec)
                continue
            file_id = "f_" + secrets.token_hex(8)
            path = folder / f"{s.user_ref[:40]}-{s.source}-{s.kind}-{file_id}{SUFFIX[s.codec]}"
            rec = RecordingRecord(file_id, take.recording_id, take.app_id, take.room_id, take.session_id,
                                  s.participant_id, s.user_ref, s.kind, s.source, s.codec, str(path), time.time())
            try:
                self.worker.tap(s.producer, reader="rec:" + file_id)
            except ValueError:
                continue                                      # closed meanwhile
            s.handle.recorded = True
            if s.kind == "video":
                self.worker.request_keyframe(s.producer)      # the file starts at a key frame: ask now
            records.append(rec)
            tracks.append(_Track(rec, s.producer, s.handle, TrackWriter(path, s.kind, s.codec), take))
            take.files[s.producer_id] = file_id
            take.open.add(file_id)
        self.store.recordings.add(records, outbox)
        if outbox:
            self.on_outbox()
        for t in tracks:
            self._commands.put(functools.partial(self._tracks.append, t))

    def _finished(self, track: _Track, size: int, duration: float) -> None:
        """On the loop: the file is closed; record it, and the take's end with its last file."""
        w, take = track.writer, track.take
        state, error = "ready", w.error
        if error is None and not w.packets:
            state, error = "failed", "no media arrived while recording"
        elif error is not None:
            state = "failed"
        if state == "failed":
            self.counts["failed"] += 1
        take.open.discard(track.record.file_id)
        now = time.time()
        done = replace(track.record, state=state, ended=now, bytes=size, duration=duration, error=error)
        outbox = self._ready_events(take, done) if take.stopping and not take.open else []
        self.store.recordings.finish(done.file_id, state, now, size, duration, error, outbox)
        if outbox:
            self.on_outbox()

    def _ready(self, take: Take) -> None:
        self.store.recordings.add([], self._ready_events(take))
        self.on_outbox()

    def _ready_events(self, take: Take, last: RecordingRecord | None = None) -> list[OutboxEvent]:
        """The take's events with its files as they are once `last` (being finished now) is written."""
        files = [last if last is not None and f.file_id == last.file_id else f
                 for f in self.store.recordings.find(take.app_id, recording_id=take.recording_id)]
        return ready_events(take.app_id, take.room_id, take.session_id, take.recording_id, files, time.time())

    # -- the thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._apply_commands()
            stopping = self._stop.is_set()
            now = time.monotonic()
            mono_offset = now - time.monotonic_ns() / 1e9
            for t in list(self._tracks):
                try:
                    packets = self.worker.tap_read(t.producer, "rec:" + t.record.file_id)
                except ValueError:
                    self._finish_on_thread(t.record.file_id)     # its producer closed: the stream ended
                    continue
                ssrc = t.handle.top_ssrc
                if ssrc is None:
                    continue              # simulcast, its best encoding not bound yet: nothing to take
                t.writer.push(packets, now, mono_offset, ssrc)
                if t.writer.keyframe_needed and now - t.asked_key_at >= KEYFRAME_EVERY_S:
                    t.asked_key_at = now
                    self.counts["keyframe_requests"] += 1
                    try:
                        self.worker.request_keyframe(t.producer)
                    except ValueError:
                        pass
            if stopping:
                for t in list(self._tracks):
                    self._finish_on_thread(t.record.file_id)
                return
            self._stop.wait(POLL_S)

    def _apply_commands(self) -> None:
        while True:
            try:
                self._commands.get_nowait()()
            except queue.Empty:
                return

    def _finish_on_thread(self, file_id: str) -> None:
        for t in [t for t in self._tracks if t.record.file_id == file_id]:
            self._tracks.remove(t)
            t.handle.recorded = False
            try:
                self.worker.tap(t.producer, False, reader="rec:" + file_id)
            except ValueError:
                pass
            size, duration = t.writer.close()
            self.counts["tracks"] += 1
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._finished, t, size, duration)


def recover(store: Store) -> int:
    """At start: the files a crash left `recording` are repaired (playable to about a second before the
    crash, with an index and a duration) and marked `recovered`; their takes report recording.ready.
    Returns how many files. Blocking (PyAV): run it off the loop."""
    cut = store.recordings.unfinished()
    takes: dict[str, RecordingRecord] = {}
    for f in cut:
        path = Path(f.path)
        state, error, size, duration = "recovered", "cut by a node restart; repaired", 0, 0.0
        try:
            size, duration = repair(path) if path.exists() and path.stat().st_size else (0, 0.0)
            if not size:
                state, error = "failed", "cut by a node restart before any media"
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported as failed, never a crash
            state, error = "failed", f"cut by a node restart; not repairable: {exc}"[:200]
        store.recordings.finish(f.file_id, state, f.started + duration, size, duration, error)
        takes[f.recording_id] = replace(f, state=state)
    for recording_id, f in takes.items():
        files = store.recordings.find(f.app_id, recording_id=recording_id)
        store.recordings.add([], ready_events(f.app_id, f.room_id, f.session_id, recording_id, files, time.time()))
    return len(cut)
