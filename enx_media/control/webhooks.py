"""Webhooks: an app's URLs and the events each receives (WebhookService, the REST API's), the events as
they are written to the outbox with the state change they report (`outbox_events`, called by the session
recorder), and their delivery (WebhookDispatcher): signed POSTs (enx_media.webhook), retried with
exponential backoff and jitter until acknowledged (2xx) or given up, in order per webhook, each webhook
on its own task so a slow receiver delays nobody else's events.

URLs must be http(s) and must not point at private, link-local or (unless allowed) loopback addresses:
checked when configured and again, on the resolved addresses, before every attempt (a name may be
re-pointed later); redirects are never followed."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
import time
import urllib.parse
from typing import Any

import httpx

from .. import errors as E
from .. import events as ev
from .. import webhook
from ..store import DeliveryRecord, OutboxEvent, Store, WebhookRecord
from .rooms import iso, parse_time

log = logging.getLogger(__name__)

EVENT_TYPES = ("session.started", "session.ended", "participant.joined", "participant.left", "cdr.ready",
               "chat.ready", "recording.started", "recording.ready", "transcript.ready", "roomdrop", "recording", "transcoded")
MAX_HOOKS_PER_APP = 10
ATTEMPT_TIMEOUT_S = 5.0
RETRY_CAP_S = 600.0
ERROR_CHARS = 200
PENDING_BATCH = 100


def outbox_events(event: ev.Event) -> list[OutboxEvent]:
    """The webhook events a domain event is reported by (none for the kinds no webhook carries)."""
    data: dict[str, Any] = {"session_id": event.session_id, "room_id": event.room_id}
    if isinstance(event, ev.SessionStarted):
        kind, data["started"] = "session.started", iso(event.at)
    elif isinstance(event, ev.SessionEnded):
        kind = "session.ended"
        data.update(ended=iso(event.at), reason=event.reason)
    elif isinstance(event, ev.ParticipantJoined):
        kind = "participant.joined"
        data.update(participant_id=event.participant_id, user_ref=event.user_ref, name=event.name, role=event.role,
                    joined=iso(event.at))
    elif isinstance(event, ev.ParticipantLeft):
        kind = "participant.left"
        data.update(participant_id=event.participant_id, reason=event.reason, left=iso(event.at))
    else:
        return []
    out = [outbox_event(kind, event.app_id, event.room_id, data, event.at)]
    if isinstance(event, ev.SessionEnded):
        out.append(outbox_event("chat.ready", event.app_id, event.room_id,
                                {"session_id": event.session_id, "path": f"/sessions/{event.session_id}/chat"},
                                event.at))
        # EnableX's notification of the same (apps written against EnableX read its `type` key)
        out.append(enablex_event("roomdrop", event.app_id, event.room_id, event.session_id, event.at,
                                 {"reason": event.reason}))
    return out


def outbox_event(kind: str, app_id: str, room_id: str, data: dict[str, Any], at: float) -> OutboxEvent:
    """One of our events: {event_id, type, created, app_id, data (room_id and the event's own fields)}."""
    event_id = "evt_" + secrets.token_hex(12)
    body = {"event_id": event_id, "type": kind, "created": iso(at), "app_id": app_id,
            "data": {"room_id": room_id, **data}}
    return OutboxEvent(event_id, app_id, room_id, kind, body, at)


def enablex_event(kind: str, app_id: str, room_id: str, conf_num: str, at: float,
                  extra: dict[str, Any]) -> OutboxEvent:
    """One of EnableX's notifications, in its flat shape: {type, app_id, room_id, conf_num, trans_date, ...}."""
    event_id = "evt_" + secrets.token_hex(12)
    body = {"type": kind, "event_id": event_id, "app_id": app_id, "room_id": room_id, "conf_num": conf_num,
            "trans_date": iso(at), **extra}
    return OutboxEvent(event_id, app_id, room_id, kind, body, at)


def address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return not (ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved)


def check_url(url: object, allow_loopback: bool) -> urllib.parse.SplitResult:
    """The URL's parts, if it is one the node may POST to (ValidationFailed otherwise); the host is checked
    as written (a name is checked on its resolved addresses by resolve_allowed)."""
    if not isinstance(url, str) or len(url) > 2000:
        raise E.ValidationFailed("url must be a string of at most 2000 characters")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise E.ValidationFailed("url must be an http or https URL with a host")
    if parts.username or parts.password:
        raise E.ValidationFailed("url must not carry credentials")
    if not is_literal(parts.hostname):
        return parts
    if not address_allowed(str(parts.hostname), allow_loopback):
        raise E.ValidationFailed("url points at a private, link-local or loopback address")
    return parts


def is_literal(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
        return True
    except ValueError:
        return False


def resolve_allowed(parts: urllib.parse.SplitResult, allow_loopback: bool) -> str:
    """The address to connect to: the host's first, once every address it resolves to is allowed
    (ValidationFailed otherwise); an address literal (checked by check_url already) is its own."""
    assert parts.hostname is not None
    if is_literal(parts.hostname):
        return parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise E.ValidationFailed(f"url's host {parts.hostname!r} does not resolve") from None
    for info in infos:
        if not address_allowed(str(info[4][0]), allow_loopback):
            raise E.ValidationFailed("url's host resolves to a private, link-local or loopback address")
    return str(infos[0][4][0])


def pinned(parts: urllib.parse.SplitResult, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request to `address` itself (URL, Host header, TLS server name): the connection goes where the
    check looked, not wherever a second lookup of the name would point (DNS rebinding)."""
    host = f"[{address}]" if ":" in address else address
    url = urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return url, {"Host": parts.netloc}, extensions


class WebhookService:
    def __init__(self, store: Store, allow_loopback: bool = False):
        self.store = store
        self.allow_loopback = allow_loopback

    def create(self, app_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise E.ValidationFailed("the body must be a JSON object with url (and events)")
        unknown = set(body) - {"url", "events"}
        if unknown:
            raise E.ValidationFailed(f"unknown field(s): {', '.join(sorted(unknown))}")
        parts = check_url(body.get("url"), self.allow_loopback)
        events = body.get("events")
        if events is not None:
            if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
                raise E.ValidationFailed("events must be a non-empty list of event types")
            bad = sorted(set(events) - set(EVENT_TYPES))
            if bad:
                raise E.ValidationFailed(f"unknown event type(s): {', '.join(bad)}; known: {', '.join(EVENT_TYPES)}")
            events = sorted(set(events))
        resolve_allowed(parts, self.allow_loopback)
        if len(self.store.webhooks.of_app(app_id)) >= MAX_HOOKS_PER_APP:
            raise E.CapacityExceeded(f"at most {MAX_HOOKS_PER_APP} webhooks per app", reason="too many webhooks")
        hook = WebhookRecord("wh_" + secrets.token_hex(8), app_id, urllib.parse.urlunsplit(parts), events,
                             secrets.token_urlsafe(32), time.time())
        self.store.webhooks.add(hook)
        return {**self.to_json(hook), "secret": hook.secret}

    def of_app(self, app_id: str) -> list[dict[str, Any]]:
        return [self.to_json(h) for h in self.store.webhooks.of_app(app_id)]

    def delete(self, app_id: str, hook_id: str) -> None:
        if not self.store.webhooks.delete(app_id, hook_id):
            raise E.NotFound(f"no webhook {hook_id}", reason="webhook not found")

    def rotate_secret(self, app_id: str, hook_id: str) -> str:
        secret = secrets.token_urlsafe(32)
        if not self.store.webhooks.set_secret(app_id, hook_id, secret):
            raise E.NotFound(f"no webhook {hook_id}", reason="webhook not found")
        return secret

    def deliveries(self, app_id: str, hook_id: str, limit: int) -> list[dict[str, Any]]:
        if self.store.webhooks.get(app_id, hook_id) is None:
            raise E.NotFound(f"no webhook {hook_id}", reason="webhook not found")
        return [{"event_id": d.event_id, "type": d.type, "created": iso(d.created), "state": d.state,
                 "attempts": d.attempts, "last_error": d.last_error, "updated": iso(d.updated)}
                for d in self.store.webhooks.deliveries(app_id, hook_id, limit)]

    def redeliver(self, app_id: str, hook_id: str, event_id: str) -> None:
        """Send one event again (whatever its state); the receiver sees the same event ID."""
        if self.store.webhooks.requeue(app_id, hook_id, event_id, 0.0, 0.0, time.time()) == 0:
            raise E.NotFound(f"webhook {hook_id} has no delivery of {event_id}", reason="webhook not found")

    def replay(self, app_id: str, hook_id: str, body: Any) -> int:
        """Send again every event of the hook created in [from, to); returns how many."""
        if not isinstance(body, dict) or "from" not in body or "to" not in body or set(body) - {"from", "to"}:
            raise E.ValidationFailed("the body must be {\"from\": ..., \"to\": ...} (times: ISO 8601 or epoch seconds)")
        start, end = parse_time(body["from"], "from"), parse_time(body["to"], "to")
        if end <= start:
            raise E.ValidationFailed("to must be after from")
        if self.store.webhooks.get(app_id, hook_id) is None:
            raise E.NotFound(f"no webhook {hook_id}", reason="webhook not found")
        return self.store.webhooks.requeue(app_id, hook_id, None, start, end, time.time())

    @staticmethod
    def to_json(h: WebhookRecord) -> dict[str, Any]:
        return {"webhook_id": h.hook_id, "url": h.url, "events": h.events or list(EVENT_TYPES),
                "created": iso(h.created)}


class WebhookDispatcher:
    """Delivers the outbox: one task per webhook with pending deliveries, oldest first. `wake()` after
    events were written (the session recorder); a poll every POLL_S finds retries that came due and what a
    previous run left pending. SQLite work runs in the thread pool."""

    POLL_S = 1.0

    def __init__(self, store: Store, *, allow_loopback: bool, retry_s: float, give_up_s: float):
        self.store = store
        self.allow_loopback, self.retry_s, self.give_up_s = allow_loopback, retry_s, give_up_s
        self.counts = {"delivered": 0, "attempts_failed": 0, "given_up": 0}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False, timeout=ATTEMPT_TIMEOUT_S, trust_env=False)
        self._main = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for t in [self._main, *self._tasks.values()]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in [self._main, *self._tasks.values()] if t is not None),
                             return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                for hook_id in await asyncio.to_thread(self.store.webhooks.hooks_with_pending):
                    task = self._tasks.get(hook_id)
                    if task is None or task.done():
                        self._tasks[hook_id] = asyncio.ensure_future(self._drain(hook_id))
            except Exception:  # noqa: BLE001 - a bad pass must not end delivery
                log.exception("webhook dispatch pass failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.POLL_S)
            except asyncio.TimeoutError:
                pass

    async def _drain(self, hook_id: str) -> None:
        """This webhook's pending deliveries in order; a retry that is not due yet waits (head of line:
        the receiver gets its events in the order they happened)."""
        batch: list[DeliveryRecord] = []
        while True:
            if not batch:
                # read ahead: one query per PENDING_BATCH deliveries, not per delivery
                batch = await asyncio.to_thread(self.store.webhooks.pending, hook_id, PENDING_BATCH)
                if not batch:
                    return
            d = batch[0]
            wait = d.next_at - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait, self.POLL_S))
                batch = []                  # read again: the hook may have been deleted meanwhile
                continue
            batch.pop(0)
            error = await self._attempt(d)
            now = time.time()
            attempts = d.attempts + 1
            if error is None:
                self.counts["delivered"] += 1
                await asyncio.to_thread(self.store.webhooks.settle, d.event_id, hook_id, "delivered", attempts, now,
                                        d.last_error, now)      # what went wrong before, kept for the record
                continue
            self.counts["attempts_failed"] += 1
            if now - d.created >= self.give_up_s:
                self.counts["given_up"] += 1
                log.warning("webhook given up hook=%s event=%s after %d attempts: %s", hook_id, d.event_id,
                            attempts, error)
                await asyncio.to_thread(self.store.webhooks.settle, d.event_id, hook_id, "failed", attempts, now,
                                        error, now)
                continue
            delay = min(RETRY_CAP_S, self.retry_s * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
            await asyncio.to_thread(self.store.webhooks.settle, d.event_id, hook_id, "pending", attempts,
                                    now + delay, error, now)
            batch = []                      # it stays at the head of the line: read it again with its retry time

    async def _attempt(self, d: DeliveryRecord) -> str | None:
        """One signed POST; None when acknowledged (2xx), else what went wrong."""
        assert self._client is not None
        body = d.body.encode()
        try:
            parts = check_url(d.url, self.allow_loopback)
            address = parts.hostname or ""
            if not is_literal(address):                 # a name: resolved off the loop, every attempt
                address = await asyncio.to_thread(resolve_allowed, parts, self.allow_loopback)
            url, host, extensions = pinned(parts, address)
            async with self._client.stream("POST", url, content=body, extensions=extensions,
                                           headers={**webhook.headers(d.event_id, d.secret, body), **host}) as r:
                # the answer's body is not read: a receiver sending a huge one costs nothing
                if 200 <= r.status_code < 300:
                    return None
                return f"HTTP {r.status_code}"
        except E.EnxError as exc:
            return exc.desc[:ERROR_CHARS]
        except (httpx.HTTPError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
