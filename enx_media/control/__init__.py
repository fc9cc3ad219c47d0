"""The control plane's services: apps, rooms (validation), tokens, sessions. They keep their state
through the repository interfaces of ``enx_media.store`` and never import media code or the web layer."""
from .apps import App, AppCredentials, AppRegistry
from .rooms import Room, RoomService
from .sessions import SessionService
from .tokens import IssuedToken, TokenClaims, TokenService

__all__ = ["App", "AppCredentials", "AppRegistry", "IssuedToken", "Room", "RoomService", "SessionService",
           "TokenClaims", "TokenService"]
