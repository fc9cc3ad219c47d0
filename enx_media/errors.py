"""One error tree for the engine. Kinds are not tied to HTTP: the web layer maps them to a status and
the EnableX envelope, the signaling layer to an error message with a code."""


class EnxError(Exception):
    """Base error. ``code`` is the numeric EnableX-style result code, ``reason`` a short phrase,
    ``desc`` a sentence a developer can act on."""

    code = 1000
    reason = "error"
    MAX_DESC = 300      # descriptions quote what the client sent: never echo a client's megabyte back

    def __init__(self, desc: str = "", *, reason: str | None = None, code: int | None = None):
        desc = desc or self.reason
        if len(desc) > self.MAX_DESC:
            desc = desc[:self.MAX_DESC - 1] + "…"
        super().__init__(desc)
        self.desc = desc
        if reason is not None:
            self.reason = reason
        if code is not None:
            self.code = code


class InvalidRequest(EnxError):
    """The request could not be read at all (not JSON, not UTF-8, not an object)."""
    code = 1001
    reason = "invalid request"


class UnsupportedMediaType(InvalidRequest):
    """A request body that is not declared as JSON (a cross-site form can send text/plain with the
    browser's cached credentials; it must not pass for an API call)."""
    code = 1415
    reason = "unsupported media type"


class ValidationFailed(EnxError):
    """The request was read but a field is missing, unknown, of the wrong type or out of bounds."""
    code = 1002
    reason = "validation failed"


class PayloadTooLarge(EnxError):
    code = 1003
    reason = "payload too large"


class Unauthenticated(EnxError):
    code = 1401
    reason = "unauthorized"


class Forbidden(EnxError):
    code = 1403
    reason = "forbidden"


class NotFound(EnxError):
    code = 1404
    reason = "not found"


class Conflict(EnxError):
    code = 1409
    reason = "conflict"


class CapacityExceeded(EnxError):
    code = 1429
    reason = "capacity exceeded"


class RateLimited(CapacityExceeded):
    """A client sent more of one kind of message than its allowance: the sender is refused, nobody
    else is affected."""
    reason = "rate limited"


class TokenError(EnxError):
    """A token was refused. Each cause has its own code so a client can tell them apart."""
    code = 4000
    reason = "token refused"


class TokenMalformed(TokenError):
    code = 4001
    reason = "token malformed"


class TokenBadSignature(TokenError):
    code = 4002
    reason = "token signature invalid"


class TokenExpired(TokenError):
    code = 4003
    reason = "token expired"


class TokenNotYetValid(TokenError):
    code = 4004
    reason = "token not yet valid"


class TokenWrongRoom(TokenError):
    code = 4005
    reason = "token for another room"


class TokenBadAlgorithm(TokenError):
    code = 4006
    reason = "token algorithm not allowed"


class TokenRevoked(TokenError):
    code = 4007
    reason = "token revoked"


class TokenUnknownApp(TokenError):
    code = 4008
    reason = "token issuer unknown"


class TokenAlreadyUsed(TokenError):
    code = 4009
    reason = "token already used"


class TokenOutsideWindow(TokenError):
    code = 4010
    reason = "room not open"


class RoomNotOpen(EnxError):
    """A scheduled room outside the part of its window where this action is allowed."""
    code = 1410
    reason = "room not open"
