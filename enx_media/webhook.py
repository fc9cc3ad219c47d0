"""Webhook signatures: how the node signs what it POSTs, and `verify` for the app server that receives it
(as LiveKit's server SDKs ship a WebhookReceiver).

Each POST carries the headers ``X-Enx-Event-Id`` (unique per event: a retry carries the same one, so a
receiver that saw it already can acknowledge and ignore it), ``X-Enx-Timestamp`` (Unix seconds of this
attempt) and ``X-Enx-Signature: v1=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` with the webhook's
secret. In an app server::

    from enx_media.webhook import verify, WebhookError
    try:
        event = verify(request_body, request_headers, secret)     # the parsed JSON
    except WebhookError:
        return 401
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Mapping

EVENT_ID, TIMESTAMP, SIGNATURE = "X-Enx-Event-Id", "X-Enx-Timestamp", "X-Enx-Signature"
TOLERANCE_S = 300           # a signature older (or newer) than this is refused: a replayed request


class WebhookError(ValueError):
    """The request is not a valid webhook of this secret: missing headers, a bad or stale signature."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def headers(event_id: str, secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {"Content-Type": "application/json", EVENT_ID: event_id, TIMESTAMP: str(ts),
            SIGNATURE: sign(secret, ts, body)}


def verify(body: bytes, request_headers: Mapping[str, str], secret: str, *, tolerance_s: float = TOLERANCE_S,
           now: float | None = None) -> dict[str, Any]:
    """The event if the request's signature is this secret's and fresh; WebhookError otherwise."""
    lower = {k.lower(): v for k, v in request_headers.items()}
    ts_text, signature = lower.get(TIMESTAMP.lower()), lower.get(SIGNATURE.lower())
    if not ts_text or not signature:
        raise WebhookError(f"not a webhook request: {TIMESTAMP} and {SIGNATURE} are required")
    try:
        ts = int(ts_text)
    except ValueError:
        raise WebhookError(f"{TIMESTAMP} is not a Unix time") from None
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        raise WebhookError(f"the signature is stale ({TIMESTAMP} more than {tolerance_s:.0f} s from now)")
    if not hmac.compare_digest(sign(secret, ts, body), signature.strip()):
        raise WebhookError("the signature does not match (another secret, or the body was changed)")
    try:
        event: dict[str, Any] = json.loads(body)
    except ValueError:
        raise WebhookError("the body is not JSON") from None
    return event
