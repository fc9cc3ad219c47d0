"""The Starlette application: routes in one list, errors mapped to the EnableX envelope in one place.

Endpoints stay thin: read and check the request, call the engine, shape the response.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, NoReturn, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool as off_loop
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import errors as E
from ..config import Settings
from ..control import cdr
from ..control.apps import App
from ..control.rooms import iso
from ..control.tokens import IssuedToken
from ..engine import Engine
from ..signaling import messages

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

log = logging.getLogger(__name__)

API_PREFIXES = ("/video/v2", "/video/v1", "/v1")
REALM = 'Basic realm="enx-media", charset="UTF-8"'

STATUS_BY_ERROR: list[tuple[type[E.EnxError], int]] = [
    (E.UnsupportedMediaType, 415),
    (E.RateLimited, 429),
    (E.InvalidRequest, 400),
    (E.ValidationFailed, 422),
    (E.PayloadTooLarge, 413),
    (E.Unauthenticated, 401),
    (E.Forbidden, 403),
    (E.RoomNotOpen, 403),
    (E.NotFound, 404),
    (E.Conflict, 409),
    (E.CapacityExceeded, 409),
    (E.TokenError, 401),
]


class AddressLimiter:
    """At most `count` calls per client address in any `window` seconds. Remembers a bounded number of
    addresses (the oldest are forgotten first), so a spray of source addresses cannot grow it."""

    MAX_ADDRESSES = 10000

    def __init__(self, count: int, window: float) -> None:
        self.count, self.window = count, window
        self.calls: dict[str, list[float]] = {}

    def take(self, address: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self.calls.pop(address, []) if now - t < self.window]
        allowed = len(recent) < self.count
        if allowed:
            recent.append(now)
        self.calls[address] = recent          # re-inserted: dict order is least recently used first
        while len(self.calls) > self.MAX_ADDRESSES:
            del self.calls[next(iter(self.calls))]
        return allowed


def status_for(exc: E.EnxError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def envelope_error(code: int, reason: str, desc: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"result": code, "error": reason, "desc": desc}, status_code=status, headers=headers)


def error_response(exc: E.EnxError) -> JSONResponse:
    """The one mapping from engine errors to HTTP: status by kind, the EnableX envelope, and the Basic
    challenge on a 401."""
    headers = {"WWW-Authenticate": REALM} if isinstance(exc, E.Unauthenticated) else None
    return envelope_error(exc.code, exc.reason, exc.desc, status_for(exc), headers)


_MetricFamily = GaugeMetricFamily | CounterMetricFamily   # what Metrics' engine collector yields


def _flatten(stats: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, int | float]]:
    """Numeric leaves of a nested stats dict as (dotted_name, value)."""
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, value


class Metrics:
    """Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("enx_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("enx_http_request_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry)
        self.tokens_issued = Counter("enx_tokens_issued_total", "Room tokens issued", ["role"],
                                     registry=self.registry)
        self.rooms_created = Counter("enx_rooms_created_total", "Rooms created", ["mode"], registry=self.registry)
        self.rooms_deleted = Counter("enx_rooms_deleted_total", "Rooms deleted", registry=self.registry)
        engine_ref = engine

        # values: a number, or (label value, number) pairs under `label` (stats payload values)
        def family(kind: type[_MetricFamily], name: str, doc: str, values: Any,
                   label: str | None = None) -> _MetricFamily:
            """A metric family: one value, or (label value, value) pairs under `label`."""
            f = kind(name, doc, labels=[label] if label else None)
            for key, value in (values if label else [(None, values)]):
                # cast: with a label, values are (label value, number) pairs, so key is that str
                f.add_metric([cast(str, key)] if label else [], value)
            return f

        class EngineCollector:
            def collect(self) -> Iterator[_MetricFamily]:
                stats = engine_ref.stats()
                G, C = GaugeMetricFamily, CounterMetricFamily
                yield family(G, "enx_rooms", "Rooms stored, all apps", stats["rooms"])
                yield family(G, "enx_tokens", "Tokens stored, all apps", stats["tokens"])
                yield family(C, "enx_event_subscriber_failures", "Event-bus subscribers that raised",
                             stats["event_failures"])
                media = stats.get("media")
                if media is not None:
                    yield family(C, "enx_media_handshake", "ICE/DTLS outcomes on the media port",
                                 media["handshake"].items(), "outcome")
                    yield family(C, "enx_media_worker", "Native worker counters (packets, bytes, drops)",
                                 _flatten(media["worker"]), "counter")
                    yield family(G, "enx_media_transports", "Open WebRTC transports", media["transports"])
                if "live_participants" in stats:
                    yield family(G, "enx_live_participants", "Participants connected, all rooms",
                                 stats["live_participants"])
                    yield family(G, "enx_live_rooms", "Rooms with a live session", stats["live_rooms"])
                    yield family(C, "enx_media_unknown_ssrc_events", "RTP of an SSRC no producer has",
                                 stats["unknown_ssrc_events"])
                    downlink = stats["downlink"]
                    now_keys = ("streams_paused_bandwidth", "subscribers_limited", "subscribers_probing")
                    yield family(C, "enx_media_downlink", "Bandwidth allocation: simulcast layer switches, "
                                 "probes (started, ok, failed), pauses for bandwidth",
                                 [(k, v) for k, v in sorted(downlink.items()) if k not in now_keys], "counter")
                    yield family(G, "enx_media_downlink_now", "Streams paused for bandwidth, subscribers whose "
                                 "estimate shows a limit, subscribers being probed",
                                 [(k, downlink.get(k, 0)) for k in now_keys], "gauge")
                    mcu = stats["mcu"]
                    yield family(G, "enx_mcu_running", "Lecture MCUs compositing now", mcu["running"])
                    # a gauge: the totals of the MCUs running now (one that stops takes its counts with it)
                    yield family(G, "enx_mcu_now", "The lecture MCUs running now, summed: frames made, late, key "
                                 "frames, input frames decoded, decode errors, key frame requests in and out, CPU "
                                 "seconds of their threads", [(k, v) for k, v in sorted(mcu.items()) if k != "running"],
                                 "stat")
                signaling = stats.get("signaling")
                if signaling is not None:
                    yield family(G, "enx_signaling_connections", "Signaling connections open",
                                 signaling["connections"])
                    yield family(C, "enx_signaling_dropped_from_peers",
                                 "Chats and relays dropped because their sender's share of a reader's outbox "
                                 "was full", signaling["dropped_from_peers"])

        self.registry.register(EngineCollector())


class ApiMiddleware:
    """Pure ASGI middleware: body size limit, metrics, and every engine error (and a last-resort 500) as
    the EnableX envelope."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                resp = error_response(E.InvalidRequest("bad Content-Length"))
                return await self._finish(resp, scope, receive, send, started)
            if declared > self.max_body:
                resp = error_response(E.PayloadTooLarge(f"request bodies are limited to {self.max_body} bytes"))
                return await self._finish(resp, scope, receive, send, started)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise E.PayloadTooLarge(f"request bodies are limited to {self.max_body} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the envelope must reach the client whatever broke
            if status_holder["sent"]:
                raise
            if isinstance(exc, E.EnxError):
                resp = error_response(exc)
            else:
                log.exception("unhandled error path=%s", scope.get("path"))
                resp = error_response(E.EnxError("the node failed to handle this request", reason="internal error",
                                                 code=1500))
            await resp(scope, receive, tracking_send)
        self._observe(scope, status_holder["status"], started)

    async def _finish(self, resp: Response, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        await resp(scope, receive, send)
        self._observe(scope, resp.status_code, started)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(scope.get("method", ""), label, str(status)).inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - started)


def signaling_endpoint(engine: Engine) -> Callable[[WebSocket], Awaitable[None]]:
    """A Starlette/FastAPI WebSocket endpoint carrying the signaling protocol for `engine`, with the
    node's safeguards (Connection.serve): mount it on any route, e.g.
    `WebSocketRoute("/rtc", signaling_endpoint(engine))` in Starlette, or FastAPI's
    `app.add_api_websocket_route("/rtc", signaling_endpoint(engine))`."""
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        if not engine.media_started:
            await websocket.send_json(messages.error(E.Conflict("this node runs without its media plane",
                                                                reason="media not started")))
            await websocket.close(1011)
            return

        async def close(code: int, reason: str) -> None:
            await websocket.close(code, reason)

        async def receive() -> str | bytes | None:
            try:
                message = await websocket.receive()
            except WebSocketDisconnect:
                return None
            if message["type"] == "websocket.disconnect":
                return None
            return message["text"] if message.get("text") is not None else (message.get("bytes") or b"")

        await engine.signaling.serve(websocket.send_json, close, receive)

    return endpoint


def create_app(settings: Settings | None = None, engine: Engine | None = None, *,
               start_media: bool = True) -> Starlette:
    """The node's ASGI app. Its lifespan starts the engine's media plane unless the embedding server
    already did (or start_media=False)."""
    settings = settings or (engine.settings if engine else Settings())
    engine = engine or Engine(settings)
    metrics = Metrics(engine)

    # -- request helpers ----------------------------------------------------------------------------
    def authenticate(request: Request) -> App:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            raise E.Unauthenticated("HTTP Basic authentication with App ID and App Key is required")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise E.Unauthenticated("Authorization header is not valid Basic credentials") from None
        app_id, sep, app_key = decoded.partition(":")
        if not sep:
            raise E.Unauthenticated("Basic credentials must be App ID:App Key")
        return engine.apps.authenticate(app_id, app_key)

    async def read_json(request: Request, *, optional: bool = False) -> Any:
        raw = await request.body()
        if not raw.strip():
            if optional:
                return {}
            raise E.InvalidRequest("request body is empty; a JSON object is expected")
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise E.UnsupportedMediaType(f"send the body as application/json (got {media_type[:60] or 'none'!r})")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise E.InvalidRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None

        def no_constants(name: str) -> NoReturn:
            raise ValueError(f"{name} is not valid JSON")

        try:
            return json.loads(text, parse_constant=no_constants)
        except (ValueError, RecursionError) as exc:
            raise E.InvalidRequest(f"request body is not valid JSON: {str(exc)[:120]}") from None

    def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise E.ValidationFailed(f"query parameter {name} must be an integer {lo}..{hi}")
        value = int(raw)
        if not lo <= value <= hi:
            raise E.ValidationFailed(f"query parameter {name} must be {lo}..{hi}")
        return value

    def ok(payload: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse({"result": 0, **payload}, status_code=status)

    def token_response(issued: IssuedToken) -> JSONResponse:
        metrics.tokens_issued.labels(issued.claims.role).inc()
        return ok({"token": issued.token, "token_id": issued.claims.token_id, "role": issued.claims.role,
                   "expires": iso(issued.claims.expires)})

    # -- endpoints ----------------------------------------------------------------------------------
    # The control services' SQLite work runs in the thread pool (off_loop), so a slow disk never holds
    # up the event loop that carries signaling and the handshakes.
    async def create_room(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room = await off_loop(engine.rooms.create, app.app_id, await read_json(request))
        metrics.rooms_created.labels(room.mode).inc()
        return ok({"room": room.to_json()}, 201)

    async def list_rooms(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        offset = query_int(request, "offset", 0, 0, 10**9)
        limit = query_int(request, "limit", 20, 1, 100)
        total, rooms = await off_loop(engine.rooms.list, app.app_id, offset, limit)
        return ok({"total": total, "offset": offset, "limit": limit, "rooms": [r.to_json() for r in rooms]})

    async def get_room(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room = await off_loop(engine.rooms.get, app.app_id, request.path_params["room_id"])
        return ok({"room": room.to_json()})

    async def update_room(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        body = await read_json(request)
        room = await off_loop(engine.rooms.update, app.app_id, request.path_params["room_id"], body)
        return ok({"room": room.to_json()})

    async def delete_room(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room_id = request.path_params["room_id"]
        await off_loop(engine.rooms.delete, app.app_id, room_id)
        metrics.rooms_deleted.inc()
        return ok({"room_id": room_id})

    async def room_users(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        users = await engine.live_users(app.app_id, request.path_params["room_id"])
        return ok({"total": len(users), "users": users})

    async def create_token(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room = await off_loop(engine.rooms.get, app.app_id, request.path_params["room_id"])
        body = await read_json(request)
        return token_response(await off_loop(engine.tokens.issue, app, room, body))

    async def revoke_token(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room_id, token_id = request.path_params["room_id"], request.path_params["token_id"]
        await engine.revoke_token(app.app_id, room_id, token_id)    # its holder is disconnected too
        return ok({"token_id": token_id, "revoked": True})

    async def remove_user(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room_id, user_ref = request.path_params["room_id"], request.path_params["user_id"]
        removed = await engine.remove_user(app.app_id, room_id, user_ref)
        return ok({"user_id": user_ref, "removed": removed})

    async def readmit_user(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        room_id, user_ref = request.path_params["room_id"], request.path_params["user_id"]
        await engine.readmit_user(app.app_id, room_id, user_ref)
        return ok({"user_id": user_ref, "readmitted": True})

    signaling_ws = signaling_endpoint(engine)

    async def create_webhook(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        hook = await off_loop(engine.webhooks.create, app.app_id, await read_json(request))
        return ok({"webhook": hook}, 201)

    async def list_webhooks(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        return ok({"webhooks": await off_loop(engine.webhooks.of_app, app.app_id)})

    async def delete_webhook(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        hook_id = request.path_params["webhook_id"]
        await off_loop(engine.webhooks.delete, app.app_id, hook_id)
        return ok({"webhook_id": hook_id})

    async def rotate_webhook_secret(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        hook_id = request.path_params["webhook_id"]
        return ok({"webhook_id": hook_id, "secret": await off_loop(engine.webhooks.rotate_secret, app.app_id, hook_id)})

    async def webhook_deliveries(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        limit = query_int(request, "limit", 50, 1, 500)
        deliveries = await off_loop(engine.webhooks.deliveries, app.app_id, request.path_params["webhook_id"], limit)
        return ok({"deliveries": deliveries})

    async def redeliver_webhook(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        hook_id, event_id = request.path_params["webhook_id"], request.path_params["event_id"]
        await off_loop(engine.webhooks.redeliver, app.app_id, hook_id, event_id)
        engine.wake_webhooks()
        return ok({"webhook_id": hook_id, "event_id": event_id, "state": "pending"})

    async def replay_webhook(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        hook_id = request.path_params["webhook_id"]
        count = await off_loop(engine.webhooks.replay, app.app_id, hook_id, await read_json(request))
        engine.wake_webhooks()
        return ok({"webhook_id": hook_id, "requeued": count})

    async def cdr_page(request: Request, **where: str) -> Response:
        app = await off_loop(authenticate, request)
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise E.ValidationFailed("format must be json or csv")
        offset = query_int(request, "offset", 0, 0, 10**9)
        limit = query_int(request, "limit", 100, 1, 1000)
        total, entries = await off_loop(lambda: engine.cdr.query(app.app_id, offset=offset, limit=limit, **where))
        if fmt == "csv":
            return Response(cdr.to_csv(entries), media_type="text/csv; charset=utf-8",
                            headers={"X-Total-Count": str(total)})
        return ok({"total": total, "offset": offset, "limit": limit, "cdr": entries})

    async def cdr_period(request: Request) -> Response:
        return await cdr_page(request, from_date=request.path_params["from_date"],
                              to_date=request.path_params["to_date"])

    async def cdr_room(request: Request) -> Response:
        return await cdr_page(request, room_id=request.path_params["room_id"])

    async def cdr_room_period(request: Request) -> Response:
        return await cdr_page(request, room_id=request.path_params["room_id"],
                              from_date=request.path_params["from_date"], to_date=request.path_params["to_date"])

    async def cdr_conf(request: Request) -> Response:
        return await cdr_page(request, session_id=request.path_params["conf_num"])

    async def recording_action(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        action = request.path_params["action"]
        if action not in ("start", "stop"):
            raise E.NotFound("the recording actions are start and stop", reason="action not found")
        room_id = request.path_params["room_id"]
        recording_id = await engine.record(app.app_id, room_id, action)
        return ok({"room_id": room_id, "recording_id": recording_id, "recording": action == "start"})

    async def archive_page(request: Request, **where: str) -> JSONResponse:
        app = await off_loop(authenticate, request)
        entries = await off_loop(lambda: engine.archive.query(app.app_id, **where))
        return ok({"total": len(entries), "archive": entries})

    async def archive_room(request: Request) -> JSONResponse:
        return await archive_page(request, room_id=request.path_params["room_id"])

    async def archive_room_period(request: Request) -> JSONResponse:
        return await archive_page(request, room_id=request.path_params["room_id"],
                                  from_date=request.path_params["from_date"], to_date=request.path_params["to_date"])

    async def archive_conf(request: Request) -> JSONResponse:
        return await archive_page(request, session_id=request.path_params["conf_num"])

    async def archive_file(request: Request) -> Response:
        app = await off_loop(authenticate, request)
        f, path = await off_loop(engine.archive.file, app.app_id, request.path_params["file_id"])
        media_type = ("video/mp4" if path.suffix == ".mp4" else
                      "audio/webm" if f.kind == "audio" else "video/webm")
        # Starlette's FileResponse answers Range requests (206, multipart for several ranges)
        return FileResponse(path, media_type=media_type, filename=path.name)

    async def delete_archive_file(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        await off_loop(engine.archive.delete, app.app_id, request.path_params["file_id"])
        return ok({"file_id": request.path_params["file_id"], "deleted": True})

    async def session_metadata(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        return ok({"session": await off_loop(engine.sessions.metadata, request.path_params["conf_num"], app.app_id)})

    async def session_chat(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        conf_num = request.path_params["conf_num"]
        messages = await off_loop(engine.sessions.chat_transcript, conf_num, app.app_id)
        return ok({"session_id": conf_num, "total": len(messages), "messages": messages})

    async def session_transcript(request: Request) -> JSONResponse:
        app = await off_loop(authenticate, request)
        return ok({"transcript": await off_loop(engine.sessions.speech_transcript, request.path_params["conf_num"],
                                                app.app_id)})

    async def demo_page(request: Request) -> Response:
        return Response((STATIC_DIR / "demo.html").read_bytes(), media_type="text/html; charset=utf-8")

    def demo_app() -> App:
        """The app whose rooms the demo page may join (settings.demo), or Forbidden."""
        if settings.demo == "off":
            raise E.Forbidden("the demo token endpoint is off on this node (start it with --demo)")
        apps = engine.apps.list() if settings.demo == "first" else [engine.apps.get(settings.demo)]
        if not apps or apps[0] is None:
            raise E.Forbidden(f"the demo is set to serve app {settings.demo!r}, which does not exist")
        return apps[0]

    demo_limiter = AddressLimiter(settings.demo_tokens_per_minute, 60.0)

    async def demo_token(request: Request) -> JSONResponse:
        """Tokens for the demo page: a person types a room ID and a name. Off unless --demo; only for
        rooms of the one app it serves; never a moderator token (moderators use a token from the REST
        API: /demo?token=...); a few a minute per client address, since anyone who reaches it can call."""
        app = await off_loop(demo_app)
        if not demo_limiter.take(request.client.host if request.client else ""):
            raise E.RateLimited(f"at most {settings.demo_tokens_per_minute} demo tokens a minute per address")
        body = await read_json(request)
        if not isinstance(body, dict) or set(body) - {"room_id", "name", "role"}:
            raise E.ValidationFailed("expected {room_id, name, role}")
        room_id, name, role = body.get("room_id"), body.get("name"), body.get("role", "participant")
        if not isinstance(room_id, str) or not room_id or len(room_id) > 64:
            raise E.ValidationFailed("room_id is required")
        if role not in ("participant", "viewer"):
            raise E.ValidationFailed("the demo issues participant or viewer tokens; moderators open "
                                     "/demo?token=<a moderator token from the REST API>")
        room = await off_loop(engine.rooms.find, room_id)
        if room is None or room.app_id != app.app_id:     # another app's room is not the demo's to open
            raise E.NotFound(f"no room {room_id!r}", reason="room not found")
        issued = await off_loop(engine.tokens.issue, app, room, {
            "user_id": f"demo-{secrets.token_hex(4)}", "user_name": name, "role": role, "ttl": 4 * 3600})
        return token_response(issued)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    metrics_auth = f"Bearer {settings.metrics_token}".encode() if settings.metrics_token else None

    async def metrics_endpoint(request: Request) -> Response:
        if metrics_auth is not None and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(), metrics_auth):
            return envelope_error(E.Unauthenticated.code, E.Unauthenticated.reason,
                                  "GET /metrics needs Authorization: Bearer <the node's metrics_token>", 401,
                                  {"WWW-Authenticate": 'Bearer realm="enx-media metrics"'})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    api_routes = [
        Route("/rooms", create_room, methods=["POST"]),
        Route("/rooms", list_rooms, methods=["GET"]),
        Route("/rooms/{room_id}", get_room, methods=["GET"]),
        Route("/rooms/{room_id}", update_room, methods=["PATCH"]),
        Route("/rooms/{room_id}", delete_room, methods=["DELETE"]),
        Route("/rooms/{room_id}/users", room_users, methods=["GET"]),
        Route("/rooms/{room_id}/users/{user_id}", remove_user, methods=["DELETE"]),
        Route("/rooms/{room_id}/users/{user_id}/readmit", readmit_user, methods=["POST"]),
        Route("/rooms/{room_id}/tokens", create_token, methods=["POST"]),
        Route("/rooms/{room_id}/tokens/{token_id}", revoke_token, methods=["DELETE"]),
        Route("/rooms/{room_id}/recording/{action}", recording_action, methods=["POST"]),
        Route("/archive/room/{room_id}", archive_room, methods=["GET"]),
        Route("/archive/room-period/{room_id}/{from_date}/{to_date}", archive_room_period, methods=["GET"]),
        Route("/archive/conf/{conf_num}", archive_conf, methods=["GET"]),
        Route("/archive/file/{file_id}", archive_file, methods=["GET"]),
        Route("/archive/file/{file_id}", delete_archive_file, methods=["DELETE"]),
        Route("/sessions/{conf_num}", session_metadata, methods=["GET"]),
        Route("/sessions/{conf_num}/chat", session_chat, methods=["GET"]),
        Route("/sessions/{conf_num}/transcript", session_transcript, methods=["GET"]),
        Route("/cdr/period/{from_date}/{to_date}", cdr_period, methods=["GET"]),
        Route("/cdr/room/{room_id}", cdr_room, methods=["GET"]),
        Route("/cdr/room-period/{room_id}/{from_date}/{to_date}", cdr_room_period, methods=["GET"]),
        Route("/cdr/conf/{conf_num}", cdr_conf, methods=["GET"]),
        Route("/webhooks", create_webhook, methods=["POST"]),
        Route("/webhooks", list_webhooks, methods=["GET"]),
        Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
        Route("/webhooks/{webhook_id}/secret", rotate_webhook_secret, methods=["POST"]),
        Route("/webhooks/{webhook_id}/deliveries", webhook_deliveries, methods=["GET"]),
        Route("/webhooks/{webhook_id}/deliveries/{event_id}/redeliver", redeliver_webhook, methods=["POST"]),
        Route("/webhooks/{webhook_id}/replay", replay_webhook, methods=["POST"]),
    ]
    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"]),
              WebSocketRoute("/signaling", signaling_ws), Route("/demo", demo_page, methods=["GET"]),
              Route("/demo/token", demo_token, methods=["POST"]),
              Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")]
    routes += [Mount(prefix, routes=api_routes) for prefix in API_PREFIXES]

    # Engine errors reach ApiMiddleware (error_response); Starlette's own 404/405 are mapped here.
    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):   # registered for HTTPException only
            raise exc
        reason = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "http error")
        desc = {404: f"no endpoint at {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return envelope_error(1000 + exc.status_code, reason, desc, exc.status_code, getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started_here = not engine.media_started and start_media
        if started_here:
            await engine.start_media()
        try:
            yield
        finally:
            if started_here:
                await engine.stop_media()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                    lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(ApiMiddleware, max_body=settings.max_body_bytes, metrics=metrics)
    return app
