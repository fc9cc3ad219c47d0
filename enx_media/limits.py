"""What one client may use of the node: per-connection message rates, outbox shares, chat storage and
media caps. Plain values (no I/O): config builds them from the settings, the room and signaling layers
enforce them."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Per signaling connection and message kind: (messages per second, burst). Sized for real use (a person
# typing, a client renegotiating, ICE candidates relayed in a p2p call); "other" covers moderator actions,
# floor and leave.
DEFAULT_RATE_LIMITS: dict[str, tuple[float, float]] = {
    "chat": (5, 20), "relay": (50, 200), "ping": (2, 10),
    "publish": (2, 10), "subscribe": (2, 10), "answer": (4, 20), "unpublish": (4, 20),
    "stream-settings": (10, 40), "other": (5, 20),
}


@dataclass(frozen=True)
class Limits:
    """What one client may use of the node: the settings' caps, in the form the room and signaling read."""
    rate_limits: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    outbox_limit: int = 2000
    outbox_per_sender: int = 100
    chat_bytes_per_session: int = 8 * 1024 * 1024
    publish_transports_per_participant: int = 4
    screens_per_participant: int = 1          # screen shares go first in allocation: one each
    streams_per_participant: int = 8
    mlines_per_offer: int = 16
    max_transports: int = 10000

    def rate(self, kind: str) -> tuple[float, float]:
        return self.rate_limits.get(kind) or self.rate_limits["other"]


def parse_rate_limits(text: str) -> dict[str, tuple[float, float]]:
    """The defaults with 'kind=per_second/burst,...' applied over them; ValueError names what is wrong."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        m = re.fullmatch(r"([a-z-]+)=([0-9.]+)/([0-9.]+)", item)
        if m is None or m.group(1) not in DEFAULT_RATE_LIMITS:
            raise ValueError(f"signaling_rate_limits: {item!r} is not kind=per_second/burst with a kind of "
                             + ", ".join(sorted(DEFAULT_RATE_LIMITS)))
        rate, burst = float(m.group(2)), float(m.group(3))
        if rate <= 0 or burst < 1:
            raise ValueError(f"signaling_rate_limits: {item!r} needs a rate above 0 and a burst of at least 1")
        limits[m.group(1)] = (rate, burst)
    return limits
