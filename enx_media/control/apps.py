"""App credentials (App ID + App Key), the unit of tenancy.

App Keys are 256-bit random strings, so a salted HMAC-SHA256 is enough to store them: a slow password
hash would only add CPU to every authenticated request without protecting a guessable secret.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from ..errors import NotFound, Unauthenticated, ValidationFailed
from ..store import AppRecord, Store


@dataclass(frozen=True)
class App:
    app_id: str
    name: str
    created: float
    token_secret: bytes


@dataclass(frozen=True)
class AppCredentials:
    app_id: str
    app_key: str
    name: str


def _app(r: AppRecord) -> App:
    return App(r.app_id, r.name, r.created, r.token_secret)


def _hash_key(salt: bytes, app_key: str) -> bytes:
    return hmac.new(salt, app_key.encode("utf-8"), hashlib.sha256).digest()


class AppRegistry:
    def __init__(self, store: Store):
        self.store = store
        # Salt for the HMAC computed when the App ID is unknown, so that case costs the same time.
        self._dummy_salt = secrets.token_bytes(16)

    def create(self, name: str = "default") -> AppCredentials:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ValidationFailed("app name must be 1..100 characters")
        app_id = secrets.token_hex(12)
        app_key = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        self.store.apps.add(AppRecord(app_id, name, time.time(), secrets.token_bytes(32), salt,
                                      _hash_key(salt, app_key)))
        return AppCredentials(app_id, app_key, name)

    def list(self) -> list[App]:
        return [_app(r) for r in self.store.apps.list()]

    def count(self) -> int:
        return self.store.apps.count()

    def get(self, app_id: str) -> App | None:
        r = self.store.apps.get(app_id)
        return _app(r) if r else None

    def require(self, app_id: str) -> App:
        """The app, or NotFound: for callers to whom a missing app is an error."""
        app = self.get(app_id)
        if app is None:
            raise NotFound(f"no app {app_id!r}", reason="app not found")
        return app

    def authenticate(self, app_id: str, app_key: str) -> App:
        """Return the app whose credentials these are, or raise Unauthenticated.

        The comparison runs in constant time, and an unknown App ID costs the same HMAC as a known one
        so timing does not tell which App IDs exist."""
        r = self.store.apps.get(app_id)
        salt = r.key_salt if r else self._dummy_salt
        expected = r.key_hash if r else b"\0" * 32
        ok = hmac.compare_digest(_hash_key(salt, app_key), expected)
        if not (r and ok):
            raise Unauthenticated("App ID or App Key is wrong")
        return _app(r)
