"""The engine: what an embedding server drives directly, without the HTTP layer.

    from enx_media import Engine, Settings
    engine = Engine(Settings(data_dir="/var/lib/enx"))
    creds = engine.apps.create("my-app")
    room = engine.rooms.create(creds.app_id, {"name": "standup", "mode": "group"})
    issued = engine.issue_token(creds.app_id, room.room_id, user_id="u1", role="moderator")
    claims = engine.tokens.verify(issued.token, room_id=room.room_id)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from . import errors as E
from .config import Settings
from .control.apps import AppCredentials, AppRegistry
from .control.archive import ArchiveService
from .control.cdr import CdrRecorder, CdrService
from .control.rooms import RoomService
from .control.sessions import SessionRecorder, SessionService
from .control.tokens import IssuedToken, TokenService
from .control.webhooks import WebhookDispatcher, WebhookService
from .events import EventBus
from .store import SqliteStore, Store

if TYPE_CHECKING:
    from .recording.recorder import Recorder
    from .recording.transcripts import Transcriber
    from .room import RoomManager
    from .signaling import SignalingHub
    from .webrtc.server import WebRtcServer

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None):
        self.settings = settings or Settings()
        self.store = store or SqliteStore(self.settings.db_path)
        self.apps = AppRegistry(self.store)
        self.rooms = RoomService(self.store)
        self.tokens = TokenService(self.store, self.apps, self.rooms, default_ttl=self.settings.token_ttl,
                                   max_ttl=self.settings.token_max_ttl,
                                   scheduled_lead=self.settings.scheduled_token_lead)
        self.sessions = SessionService(self.store)
        self.cdr = CdrService(self.store)
        self.archive = ArchiveService(self.store, self.recordings_dir)
        self.webhooks = WebhookService(self.store, allow_loopback=self.settings.webhook_allow_loopback == "on")
        self.dispatcher: WebhookDispatcher | None = None     # delivers the webhook outbox while media runs
        # What happens in live rooms; the session record is its first subscriber (it writes the webhook
        # events with the changes they report), the CDR the next (its cdr.ready follows session.ended).
        self.events = EventBus()
        self.events.subscribe(SessionRecorder(self.store, on_outbox=self.wake_webhooks))
        self.events.subscribe(CdrRecorder(self.store, on_outbox=self.wake_webhooks))

    @property
    def recordings_dir(self) -> Path:
        return Path(self.settings.data_dir) / "recordings"

    def wake_webhooks(self) -> None:
        """Deliveries were queued (events written, a redelivery or replay asked for): deliver now."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    # -- media plane ----------------------------------------------------------------------------------
    webrtc: "WebRtcServer | None" = None     # the media UDP port (ICE-lite, DTLS) and its native worker
    recorder: "Recorder | None" = None       # the recording thread (recording/recorder.py)
    transcriber: "Transcriber | None" = None  # speech transcripts after sessions (recording/transcripts.py)
    live: "RoomManager | None" = None        # the rooms with a live session on this node
    _signaling: "SignalingHub | None" = None

    @property
    def media_started(self) -> bool:
        return self._signaling is not None

    @property
    def signaling(self) -> "SignalingHub":
        """connect() / serve() a client socket; only while media runs."""
        if self._signaling is None:
            raise E.Conflict("the media plane is not started: await engine.start_media() first, or run the "
                             "node inside `async with engine.running():`", reason="media not started")
        return self._signaling

    async def start_media(self) -> None:
        """Open the media UDP port and the signaling hub (needs a running asyncio loop). Media is forwarded
        on a thread of its own unless settings.media_thread is off."""
        from .recording.recorder import Recorder, recover
        from .recording.transcripts import Transcriber
        from .room import RoomManager
        from .signaling import MessageNotifier, SignalingHub
        from .webrtc.server import WebRtcServer

        if self._signaling is not None:
            return
        s = self.settings
        closed = self.sessions.close_dangling()
        if closed:
            log.info("ended %d session(s) left open by a previous run", closed)
        repaired = await asyncio.to_thread(recover, self.store)
        if repaired:
            log.info("repaired %d recorded file(s) a previous run left unfinished", repaired)
        limits = s.limits
        self.webrtc = WebRtcServer(s.media_host, s.media_port, s.announced_ip, consent_timeout=s.consent_timeout,
                                   threaded=s.media_thread == "on", max_transports=limits.max_transports)
        self.webrtc.start()
        self.recorder = Recorder(self.webrtc.worker, self.store, self.recordings_dir, self.wake_webhooks)
        self.recorder.start()
        self.transcriber = Transcriber(self.store, self.wake_webhooks)
        self.transcriber.start()        # what a previous run left pending is made now
        self.live = RoomManager(self.rooms, self.tokens, self.webrtc, self.events, MessageNotifier(), limits,
                                quality_interval=s.quality_interval_s, recorder=self.recorder,
                                transcriber=self.transcriber)
        self._signaling = SignalingHub(self.live, limits)
        self.dispatcher = WebhookDispatcher(self.store, allow_loopback=s.webhook_allow_loopback == "on",
                                            retry_s=s.webhook_retry_ms / 1000, give_up_s=s.webhook_give_up_s)
        self.dispatcher.start()         # what a previous run left pending goes out too
        log.info("media worker on udp %s:%d announced as %s (%s)", s.media_host, self.webrtc.port, s.announced_ip,
                 "own thread" if s.media_thread == "on" else "asyncio loop")

    async def stop_media(self) -> None:
        """End every live session (clients get session-ended), then close the media port; start_media()
        may be called again."""
        if self.live is not None:
            await self.live.end_all("node-stopped")
        if self._signaling is not None:
            await self._signaling.flushed()
        self.live = self._signaling = None
        if self.recorder is not None:
            await self.recorder.stop()      # after the rooms: their takes are finished; this closes the files
            self.recorder = None
        if self.transcriber is not None:
            await self.transcriber.stop()   # an unfinished transcript stays pending for the next start
            self.transcriber = None
        if self.dispatcher is not None:
            await self.dispatcher.stop()    # what is pending stays in the outbox for the next start
            self.dispatcher = None
        if self.webrtc is not None:
            await self.webrtc.stop()
            self.webrtc = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Engine"]:
        """`async with engine.running():` media runs inside the block and is stopped after it."""
        await self.start_media()
        try:
            yield self
        finally:
            await self.stop_media()

    def stats(self) -> dict[str, Any]:
        """What the node counts, for metrics: stored rooms and tokens, the live rooms, the media port."""
        out: dict[str, Any] = {"rooms": self.rooms.count(), "tokens": self.tokens.count(), "event_failures": self.events.failures}
        if self.live is not None:
            out.update(self.live.stats())
        if self._signaling is not None:
            out["signaling"] = self._signaling.stats()
        if self.webrtc is not None:
            out["media"] = self.webrtc.stats()
        if self.dispatcher is not None:
            out["webhooks"] = dict(self.dispatcher.counts)
        if self.recorder is not None:
            out["recording"] = dict(self.recorder.counts)
        if self.transcriber is not None:
            out["transcripts"] = dict(self.transcriber.counts)
        return out

    def issue_token(self, app_id: str, room_id: str, *, user_id: str, role: str, name: str | None = None,
                    ttl: int | None = None) -> IssuedToken:
        """A room token by ids (what an embedding server has at hand); NotFound for another app's room
        or an unknown app, ValidationFailed for a bad role or ttl."""
        body: dict[str, object] = {"user_id": user_id, "role": role}
        if name is not None:
            body["user_name"] = name
        if ttl is not None:
            body["ttl"] = ttl
        return self.tokens.issue(self.apps.require(app_id), self.rooms.get(app_id, room_id), body)

    async def revoke_token(self, app_id: str, room_id: str, token_id: str) -> None:
        """Revoke a token; its holder, if connected, is removed from the session at once."""
        await asyncio.to_thread(self._revoke, app_id, room_id, token_id)
        if self.live is not None:
            await self.live.remove_by_app(room_id, token_id=token_id, reason="token revoked")

    def _revoke(self, app_id: str, room_id: str, token_id: str) -> None:
        self.rooms.get(app_id, room_id)          # NotFound for another app's room
        self.tokens.revoke(app_id, room_id, token_id)

    async def live_users(self, app_id: str, room_id: str) -> list[dict[str, Any]]:
        """Who is in the room's live session, each with its current media quality while this node runs
        the room (`LiveRoom.current_quality`; null before its media counts anything)."""
        users = await asyncio.to_thread(self.rooms.live_users, app_id, room_id)
        room = self.live.live.get(room_id) if self.live is not None else None
        quality = room.current_quality() if room is not None else {}
        return [{**u, "quality": quality.get(u["participant_id"])} for u in users]

    async def record(self, app_id: str, room_id: str, action: str) -> str:
        """Start or stop recording the room's live session (REST); the recording id."""
        await asyncio.to_thread(self.rooms.get, app_id, room_id)
        live = self.live.live.get(room_id) if self.live is not None else None
        if live is None:
            raise E.Conflict("the room has no live session on this node", reason="no live session")
        return live.start_recording("app") if action == "start" else live.stop_recording("app")

    async def remove_user(self, app_id: str, room_id: str, user_ref: str, reason: str = "") -> list[str]:
        """Remove every participant of a user from the room's live session (they are told and
        disconnected; the user cannot rejoin that session). Returns the participant ids removed."""
        await asyncio.to_thread(self.rooms.get, app_id, room_id)
        if self.live is None:
            return []
        return await self.live.remove_by_app(room_id, user_ref=user_ref, reason=reason or "removed by the application")

    async def readmit_user(self, app_id: str, room_id: str, user_ref: str) -> None:
        """Let a user removed from the room's live session join it again (NotFound if they were not)."""
        await asyncio.to_thread(self.rooms.get, app_id, room_id)
        if self.live is None:
            raise E.NotFound("the room has no live session", reason="not found")
        self.live.readmit_by_app(room_id, user_ref)

    def ensure_first_app(self) -> AppCredentials | None:
        """Create an app on first start so a fresh node is usable at once; None if apps exist."""
        if self.apps.count():
            return None
        creds = self.apps.create("default")
        log.info("created first app app_id=%s", creds.app_id)
        return creds

    def close(self) -> None:
        self.store.close()
