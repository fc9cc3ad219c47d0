"""The engine: what an embedding server drives directly, without the HTTP layer.

    from enx_media import Engine, Settings
    engine = Engine(Settings(data_dir="/var/lib/enx"))
    creds = engine.apps.create("my-app")
    room = engine.rooms.create(creds.app_id, {"name": "standup", "mode": "group"})
    token = engine.tokens.issue(engine.apps.get(creds.app_id), room, {"user_id": "u1", "role": "moderator"})
    claims = engine.tokens.verify(token.token, room_id=room.room_id)
"""
from __future__ import annotations

import logging

from .apps import AppCredentials, AppRegistry
from .config import Settings
from .rooms import RoomService
from .store import Store
from .tokens import TokenService

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None):
        self.settings = settings or Settings()
        self.store = store or Store(self.settings.db_path)
        self.apps = AppRegistry(self.store)
        self.rooms = RoomService(self.store)
        self.tokens = TokenService(self.store, self.apps, self.rooms, default_ttl=self.settings.token_ttl,
                                   max_ttl=self.settings.token_max_ttl,
                                   scheduled_lead=self.settings.scheduled_token_lead)

    # -- media plane ----------------------------------------------------------------------------------
    webrtc = None
    signaling = None

    async def start_media(self) -> None:
        """Open the media UDP port and the signaling hub (needs a running asyncio loop)."""
        from .signaling import SignalingHub
        from .webrtc.server import WebRtcServer

        if self.signaling is not None:
            return
        s = self.settings
        self.webrtc = WebRtcServer(s.media_host, s.media_port, s.announced_ip, consent_timeout=s.consent_timeout)
        self.webrtc.start()
        self.signaling = SignalingHub(self, self.webrtc)
        closed = self.signaling.sessions.close_dangling()
        if closed:
            log.info("ended %d session(s) left open by a previous run", closed)
        log.info("media worker on udp %s:%d announced as %s", s.media_host, self.webrtc.port, s.announced_ip)

    async def stop_media(self) -> None:
        if self.signaling is not None:
            for runtime in list(self.signaling.rooms.values()):
                await self.signaling.end_session(runtime, "node-stopped")
            self.signaling = None
        if self.webrtc is not None:
            await self.webrtc.stop()
            self.webrtc = None

    def ensure_first_app(self) -> AppCredentials | None:
        """Create an app on first start so a fresh node is usable at once; None if apps exist."""
        if self.apps.count():
            return None
        creds = self.apps.create("default")
        log.info("created first app app_id=%s", creds.app_id)
        return creds

    def close(self) -> None:
        self.store.close()
