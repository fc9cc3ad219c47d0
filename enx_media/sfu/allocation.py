"""Bandwidth allocation for one subscriber transport: its downlink estimate (the core's, ext/bwe.pxi) shared
across its consumers, in the manner of LiveKit's stream allocator. Audio first, then video by priority
(screen shares, then the larger rendered size); each video gets the highest layer up to the one it asked
for whose measured bitrate fits what is left; a video whose lowest layer does not fit is paused for
bandwidth, but only once the estimate is evidence (a decrease happened), never on the start default.
When a stream gets less than it asked for, the allocator names the rate a probe should try so that the
next layer up can follow. Pure functions: the router feeds them what it measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field

AUDIO_BPS = 64_000           # an audio consumer before its own rate is measured (Opus at its usual rates)
UNKNOWN_LAYER_BPS = 1_500_000  # a layer never seen arriving (paused by dynacast since it started)
LAYER_STEP = 3.0             # a simulcast layer of twice the height costs about this much more
HEADROOM = 1.15              # a probe aims this far above what the step up needs
# The layer a consumer has keeps it while its rate is within this much over what is left: a decrease cuts
# the estimate to 0.85x what got through, and layer rates swing with the picture, so without a margin a
# single spurious over-use (a receiver's busy moment) would switch it down. Not while the link shows it is
# congested (allocate's `congested`: decreases in a row, or loss): a full bottleneck queue keeps the delay
# flat, the estimate creeps back up to 1.5x what gets through, and a margin would then hold a layer the
# link cannot carry for good.
STAY_MARGIN = 1.25


@dataclass
class Want:
    """One consumer as the allocator sees it."""
    key: object                     # the caller's handle (returned in the choice)
    kind: str                       # "audio" / "video"
    desired: int | None             # the encoding it asked for (pick_encoding), None: nothing arrives
    layer_bps: list[float] = field(default_factory=list)   # per encoding, lowest first; 0: unknown
    active: list[bool] = field(default_factory=list)       # per encoding: arriving now
    current: int | None = None      # the encoding it forwards now (kept with a margin: STAY_MARGIN)
    screen: bool = False
    height: int = 0                 # its wanted picture height (0: the best there is), the priority
    bps: float = 0.0                # a one-encoding stream's (or audio's) measured rate


@dataclass
class Choice:
    key: object
    encoding: int | None            # the encoding to forward (None: keep as it is)
    paused: bool = False            # paused for bandwidth
    short: bool = False             # gets less than it asked for


def layer_rates(want: Want) -> list[float]:
    """Per encoding, the rate to count for it: measured, or guessed from the nearest measured one."""
    rates = list(want.layer_bps)
    known = [(i, r) for i, r in enumerate(rates) if r > 0]
    for i, r in enumerate(rates):
        if r <= 0:
            if known:
                j, rj = min(known, key=lambda k: abs(k[0] - i))
                rates[i] = rj * LAYER_STEP ** (i - j)
            else:
                rates[i] = UNKNOWN_LAYER_BPS / LAYER_STEP ** (len(rates) - 1 - i)
    return rates


def priority(w: Want) -> tuple[int, int]:
    return (1 if w.screen else 0, w.height or 1 << 30)


def allocate(estimate_bps: float, wants: list[Want], *, evidence: bool,
             congested: bool = False) -> tuple[list[Choice], float | None]:
    """Share estimate_bps across a transport's consumers. Returns the choices and, when a video got less
    than it asked for, the total rate a probe should try: what is allocated plus the first (highest
    priority) short stream's step up (None: nothing to probe for). congested: the link is losing or its
    estimate keeps falling, so the layer a consumer has gets no margin (STAY_MARGIN)."""
    left = estimate_bps
    stay = 1.0 if congested else STAY_MARGIN
    choices: list[Choice] = []
    step: float | None = None
    for w in wants:
        if w.kind == "audio":
            left -= w.bps or AUDIO_BPS
    for w in sorted((w for w in wants if w.kind != "audio"), key=priority, reverse=True):
        if not w.layer_bps:
            # one encoding: it flows or, on evidence that it cannot fit, pauses
            if evidence and w.bps > left:
                choices.append(Choice(w.key, None, paused=True, short=True))
                step = w.bps if step is None else step
            else:
                choices.append(Choice(w.key, None))
                left -= w.bps
            continue
        if w.desired is None:
            choices.append(Choice(w.key, None))
            continue
        rates = layer_rates(w)
        live = [i for i in range(w.desired + 1) if i < len(w.active) and w.active[i]] or [w.desired]
        fitting = [i for i in live if rates[i] <= left * (stay if i == w.current else 1.0)]
        if fitting:
            pick = max(fitting)
        elif evidence:
            choices.append(Choice(w.key, None, paused=True, short=True))
            step = rates[live[0]] if step is None else step
            continue
        else:
            pick = min(live)
        short = pick < w.desired
        if short and step is None:
            up = next((i for i in live if i > pick), w.desired)
            step = rates[up] - rates[pick]
        choices.append(Choice(w.key, pick, short=short))
        left -= rates[pick]
    if step is None:
        return choices, None
    return choices, (estimate_bps - left + step) * HEADROOM
