"""Room tokens: JWTs bound to app, room, user, role and expiry; issue, revoke, and the verification a join
runs (RoomManager.join), once per session per token.

HS256 with a per-app secret that only the node holds (the App Key never signs anything, so rotating
or leaking a token secret does not expose the key). The algorithm is pinned: a token whose header
names anything else, "none" included, is refused before its signature is looked at.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from .. import errors as E
from ..store import ClaimOutcome, Store, TokenRecord
from .apps import App, AppRegistry
from .rooms import ROLES, Room, RoomService, _int, _json_chars, _str, iso

ALGORITHM = "HS256"
AUDIENCE = "enx-media"
MAX_TOKEN_CHARS = 8192
TOKEN_KEYS = {"user_id", "user_ref", "user_name", "name", "role", "ttl", "data"}


@dataclass(frozen=True)
class TokenClaims:
    token_id: str
    app_id: str
    room_id: str
    user_ref: str
    name: str
    role: str
    issued: float
    expires: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class TokenService:
    def __init__(self, store: Store, apps: AppRegistry, rooms: RoomService, *, default_ttl: int = 86400,
                 max_ttl: int = 7 * 86400, scheduled_lead: int = 900):
        self.store = store
        self.apps = apps
        self.rooms = rooms
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.scheduled_lead = scheduled_lead

    # -- issuing ------------------------------------------------------------------------------------
    def issue(self, app: App, room: Room, body: Any) -> IssuedToken:
        if not isinstance(body, dict):
            raise E.ValidationFailed("request body must be a JSON object")
        unknown = set(body) - TOKEN_KEYS
        if unknown:
            raise E.ValidationFailed(f"unknown field(s): {', '.join(sorted(unknown))}")
        user_ref = body.get("user_ref", body.get("user_id"))
        if "user_ref" in body and "user_id" in body and body["user_ref"] != body["user_id"]:
            raise E.ValidationFailed("user_ref and user_id disagree")
        name = body.get("name", body.get("user_name"))
        if "name" in body and "user_name" in body and body["name"] != body["user_name"]:
            raise E.ValidationFailed("name and user_name disagree")
        if user_ref is None and name is None:
            raise E.ValidationFailed("user_id (or user_ref) or user_name (or name) is required")
        if isinstance(user_ref, int) and not isinstance(user_ref, bool):
            user_ref = str(user_ref)
        user_ref = _str(user_ref if user_ref is not None else name, "user_id", 255, allow_empty=False)
        name = _str(name if name is not None else user_ref, "user_name", 255, allow_empty=False)
        if "role" not in body:
            raise E.ValidationFailed(f"role is required: one of {', '.join(ROLES)}")
        role = body["role"]
        if not isinstance(role, str) or role.strip().lower() not in ROLES:
            raise E.ValidationFailed(f"role must be one of {', '.join(ROLES)}")
        role = role.strip().lower()
        if room.mode == "p2p" and role == "viewer":
            raise E.ValidationFailed("p2p rooms have no viewers")
        ttl = self.default_ttl if body.get("ttl") is None else _int(body["ttl"], "ttl")
        if not 60 <= ttl <= self.max_ttl:
            raise E.ValidationFailed(f"ttl must be 60..{self.max_ttl} seconds")
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise E.ValidationFailed("data must be an object")
        if _json_chars(data) > 2048:
            raise E.ValidationFailed("data must serialise to at most 2048 bytes")

        t = time.time()
        expires = t + ttl
        window = room.window
        if window is not None:
            start, end = window
            if t < start - self.scheduled_lead:
                raise E.RoomNotOpen(f"tokens for this scheduled room are issued from {iso(start - self.scheduled_lead)}"
                                    f" ({self.scheduled_lead} s before its window)")
            if t >= end:
                raise E.RoomNotOpen("this scheduled room's window has ended")
            expires = min(expires, end)  # a token never outlives its room's window
        token_id = secrets.token_hex(16)
        issued_at = int(t)
        claims = {"iss": app.app_id, "aud": AUDIENCE, "sub": user_ref, "name": name, "room": room.room_id,
                  "role": role, "jti": token_id, "iat": issued_at, "nbf": issued_at, "exp": int(expires)}
        if data:
            claims["data"] = data
        token = jwt.encode(claims, app.token_secret, algorithm=ALGORITHM, headers={"kid": app.app_id})
        self.store.tokens.add(TokenRecord(token_id, app.app_id, room.room_id, user_ref, role, issued_at,
                                          int(expires)))
        return IssuedToken(token, TokenClaims(token_id, app.app_id, room.room_id, user_ref, name, role,
                                              issued_at, int(expires), data))

    def revoke(self, app_id: str, room_id: str, token_id: str) -> None:
        if not self.store.tokens.revoke(app_id, room_id, token_id, time.time()):
            raise E.NotFound(f"no token {token_id!r} in this room", reason="token not found")

    def count(self) -> int:
        return self.store.tokens.count()

    # -- verifying ----------------------------------------------------------------------------------
    def verify(self, token: Any, *, room_id: str | None = None, at: float | None = None) -> TokenClaims:
        """Check a token and return its claims, or raise the TokenError subclass that says why not.

        ``at`` lets a caller verify at another instant (tests, replays of logs); default now."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise E.TokenMalformed("token must be a non-empty string of at most 8192 characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise E.TokenMalformed(f"not a JWT: {exc}") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise E.TokenBadAlgorithm(f"algorithm {alg!r} is not accepted; tokens are {ALGORITHM}")
        app_id = unverified.get("iss")
        if not isinstance(app_id, str):
            raise E.TokenMalformed("token has no issuer")
        app = self.apps.get(app_id)
        if app is None:
            raise E.TokenUnknownApp("token issued by an unknown app")
        t = time.time() if at is None else at
        try:
            claims = jwt.decode(
                token, app.token_secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=app_id,
                options={"require": ["exp", "iat", "nbf", "jti", "sub", "room", "role"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidSignatureError:
            raise E.TokenBadSignature("token signature does not match") from None
        except jwt.InvalidAlgorithmError:
            raise E.TokenBadAlgorithm("token algorithm is not accepted") from None
        except jwt.PyJWTError as exc:
            raise E.TokenMalformed(f"token claims invalid: {exc}") from None
        try:
            exp, nbf, iat = (float(claims["exp"]), float(claims["nbf"]), float(claims["iat"]))
        except (TypeError, ValueError):
            raise E.TokenMalformed("token time claims are not numbers") from None
        if t >= exp:
            raise E.TokenExpired(f"token expired at {iso(exp)}")
        if t < nbf:
            raise E.TokenNotYetValid(f"token valid from {iso(nbf)}")
        if room_id is not None and claims["room"] != room_id:
            raise E.TokenWrongRoom("token is for another room")
        if claims["role"] not in ROLES:
            raise E.TokenMalformed("token role unknown")
        row = self.store.tokens.get(claims["jti"])
        if row is None or row.room_id != claims["room"] or row.app_id != app_id:
            raise E.TokenRevoked("token is not known to this node")
        if row.revoked is not None:
            raise E.TokenRevoked("token was revoked")
        if self.rooms.find(claims["room"]) is None:
            raise E.TokenRevoked("the token's room no longer exists")
        raw = claims.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return TokenClaims(claims["jti"], app_id, claims["room"], str(claims["sub"]), str(claims.get("name", "")),
                           claims["role"], iat, exp, data)

    def claim_for_session(self, claims: TokenClaims, session_id: str) -> None:
        """Bind a token to the session it first joined: it stays valid for rejoins of that session and
        is refused for any later one (the seed's 'single use')."""
        outcome = self.store.tokens.claim_for_session(claims.token_id, session_id)
        if outcome is ClaimOutcome.UNKNOWN:
            raise E.TokenRevoked("token is not known to this node")
        if outcome is ClaimOutcome.USED_ELSEWHERE:
            raise E.TokenAlreadyUsed("token was already used in an earlier session")
