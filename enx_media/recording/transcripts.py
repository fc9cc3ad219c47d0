"""Speech transcripts of sessions, on the event loop's side: a session that ends with `transcription` on
is recorded pending; once its recorded files are finished, its participants' audio goes to a
transcribing process (recording/transcribe.py; pocketsphinx holds the GIL, so never a thread of the
node) and the merged timeline is written with transcript.ready. One session at a time; a stop leaves
the rest pending, and the next start takes them up again."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Callable

from ..control.webhooks import outbox_event
from ..store import Store, TranscriptRecord

log = logging.getLogger(__name__)

FILES_WAIT_S = 60.0            # for the session's recorded files to be finished
PROCESS_TIMEOUT_S = 1800.0


class Transcriber:
    def __init__(self, store: Store, on_outbox: Callable[[], None], engine: str = "pocketsphinx") -> None:
        self.store, self.on_outbox, self.engine = store, on_outbox, engine
        self.counts = {"done": 0, "failed": 0}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        for t in self.store.transcripts.pending():
            self._queue.put_nowait(t.session_id)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    def request(self, app_id: str, room_id: str, session_id: str) -> None:
        now = time.time()
        self.store.transcripts.begin(TranscriptRecord(session_id, app_id, room_id, "pending", self.engine, None,
                                                      None, now, now))
        self._queue.put_nowait(session_id)

    async def _run(self) -> None:
        while True:
            session_id = await self._queue.get()
            try:
                await self._transcribe(session_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one session's failure is its own, the next goes on
                log.exception("transcript failed session=%s", session_id)
                self._finish(session_id, "failed", None, "internal error")

    async def _transcribe(self, session_id: str) -> None:
        t, s = self.store.transcripts.get(session_id), self.store.sessions.get(session_id)
        if t is None or s is None or t.state != "pending":
            return
        end = time.monotonic() + FILES_WAIT_S
        while True:
            files = self.store.recordings.find(t.app_id, session_id=session_id)
            if all(f.state != "recording" for f in files) or time.monotonic() > end:
                break
            await asyncio.sleep(0.2)
        audio = [{"path": f.path, "offset": f.started - s.started, "participant_id": f.participant_id,
                  "user_ref": f.user_ref} for f in files
                 if f.kind == "audio" and f.source == "camera" and f.state in ("ready", "recovered")]
        if not audio:
            self._finish(session_id, "failed", None, "no recorded audio")
            return
        started = time.monotonic()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "enx_media.recording.transcribe", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        request = json.dumps({"engine": self.engine, "files": audio}).encode()
        try:
            out, err = await asyncio.wait_for(self._proc.communicate(request), PROCESS_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._proc.kill()
            await self._proc.wait()
            self._finish(session_id, "failed", None, "the engine took too long")
            return
        finally:
            code, self._proc = self._proc.returncode, None
        if code != 0:
            self._finish(session_id, "failed", None, f"the engine failed: {err.decode(errors='replace')[-200:]}")
            return
        segments = json.loads(out)["segments"]
        log.info("transcript session=%s files=%d segments=%d in %.1f s", session_id, len(audio), len(segments),
                 time.monotonic() - started)
        self._finish(session_id, "ready", segments, None)

    def _finish(self, session_id: str, state: str, segments: list[dict[str, object]] | None,
                error: str | None) -> None:
        t = self.store.transcripts.get(session_id)
        if t is None:
            return
        now = time.time()
        ready = outbox_event("transcript.ready", t.app_id, t.room_id,
                             {"session_id": session_id, "state": state, "error": error,
                              "path": f"/sessions/{session_id}/transcript"}, now)
        self.store.transcripts.finish(session_id, state, segments, error, now, [ready])
        self.counts["done" if state == "ready" else "failed"] += 1
        self.on_outbox()
