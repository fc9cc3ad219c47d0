"""ICE-lite (RFC 8445 §2.5): the node never sends checks, it answers them.

A binding request is accepted when its USERNAME is `<our ufrag>:<their ufrag>`, its
MESSAGE-INTEGRITY verifies with our password and its FINGERPRINT is right (aioice's STUN codec checks
the fingerprint while parsing). A success binds the 5-tuple to the transport; requests keep coming as
consent freshness (RFC 7675), and a transport that hears none for `CONSENT_TIMEOUT` is dead.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from aioice import stun

CONSENT_TIMEOUT = 30.0  # RFC 7675 §5.1: consent expires 30 s after the last successful check


def new_credentials() -> tuple[str, str]:
    # ufrag >= 4 and pwd >= 22 characters of ice-char (RFC 8839 §5.4); hex is a subset.
    return secrets.token_hex(4), secrets.token_hex(12)


@dataclass
class StunOutcome:
    response: bytes | None      # what to send back, if anything
    ufrag: str | None           # our ufrag named in USERNAME (which transport), when the request was valid
    nominated: bool = False     # USE-CANDIDATE present
    error: str | None = None    # why it was refused


def local_ufrag_of(data: bytes) -> tuple[stun.Message | None, str | None, str | None]:
    """Parse a STUN datagram and pull out our ufrag from USERNAME. (message, ufrag, error)."""
    try:
        msg = stun.parse_message(data)
    except Exception as exc:  # noqa: BLE001 - ValueError mostly, but also UnicodeDecodeError, struct.error
        return None, None, f"malformed STUN: {type(exc).__name__}"
    if msg.message_method != stun.Method.BINDING:
        return msg, None, "not a binding message"
    username = msg.attributes.get("USERNAME")
    if msg.message_class != stun.Class.REQUEST:
        return msg, None, "not a request"
    if not isinstance(username, str) or ":" not in username:
        return msg, None, "no USERNAME"
    return msg, username.split(":", 1)[0], None


def answer_binding(msg: stun.Message, local_ufrag: str, local_pwd: str, remote_ufrag: str | None,
                   addr: tuple[str, int]) -> StunOutcome:
    username = msg.attributes.get("USERNAME", "")
    ours, _, theirs = username.partition(":")
    if ours != local_ufrag or (remote_ufrag is not None and theirs != remote_ufrag):
        return StunOutcome(_error(msg, 401, "Unauthorized", None), None, error="USERNAME does not match")
    if "FINGERPRINT" not in msg.attributes:
        return StunOutcome(None, None, error="no FINGERPRINT")
    if not msg.check_message_integrity(local_pwd.encode()):
        # RFC 8489 §9.1.3: a bad integrity gets 401, without integrity of our own.
        return StunOutcome(_error(msg, 401, "Unauthorized", None), None, error="bad MESSAGE-INTEGRITY")
    resp = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=msg.transaction_id)
    resp.attributes["XOR-MAPPED-ADDRESS"] = addr
    resp.add_message_integrity(local_pwd.encode())
    return StunOutcome(bytes(resp), ours, nominated="USE-CANDIDATE" in msg.attributes)


def _error(msg: stun.Message, code: int, reason: str, pwd: str | None) -> bytes:
    resp = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=msg.transaction_id)
    resp.attributes["ERROR-CODE"] = (code, reason)
    if pwd:
        resp.add_message_integrity(pwd.encode())
    else:
        resp.add_fingerprint()
    return bytes(resp)
