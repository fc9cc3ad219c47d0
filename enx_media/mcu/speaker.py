"""The active speaker: who talks, from each publisher's audio level, steadily.

Levels are RFC 6464's (dBov below full scale: 0 loudest, 127 silence), the mean over the last interval of
what a publisher's packets carried (the core sums them, `Router.audio_levels`). A publisher speaks while
its level is within SPEECH_DBOV of full scale. Hysteresis, so a cough or a word from someone else does not
move the large tile: another publisher takes over once it has been speaking and louder than the current
speaker by MARGIN_DB for TAKEOVER_S, or at once (after SILENT_S) when the current speaker has stopped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SPEECH_DBOV = 50.0      # quieter than -50 dBov is silence (room noise, a muted mic's comfort noise)
MARGIN_DB = 6.0
TAKEOVER_S = 0.8
SILENT_S = 1.0


@dataclass
class ActiveSpeaker:
    current: str | None = None
    _louder_since: dict[str, float] = field(default_factory=dict)
    _silent_since: float | None = None

    def update(self, levels: dict[str, float], now: float) -> str | None:
        """Feed the levels (publisher -> mean dBov over the last interval; absent: no audio). Returns the
        new active speaker when it changes, else None."""
        speaking = {k: v for k, v in levels.items() if v <= SPEECH_DBOV}
        cur = speaking.get(self.current) if self.current is not None else None
        if cur is None:
            self._silent_since = now if self._silent_since is None else self._silent_since
        else:
            self._silent_since = None
        for k in list(self._louder_since):
            if k not in speaking or (cur is not None and speaking[k] > cur - MARGIN_DB):
                del self._louder_since[k]
        for k, v in speaking.items():
            if k != self.current and (cur is None or v <= cur - MARGIN_DB):
                self._louder_since.setdefault(k, now)
        if not self._louder_since:
            return None
        loudest = min(self._louder_since, key=lambda k: speaking[k])
        held = now - self._louder_since[loudest]
        current_gone = self.current is None or (self._silent_since is not None and now - self._silent_since >= SILENT_S)
        if held >= TAKEOVER_S or current_gone:
            self.current = loudest
            self._louder_since.clear()
            self._silent_since = None
            return loudest
        return None

    def forget(self, publisher: str) -> None:
        """A publisher left: it is no longer a candidate (and, if current, the next one takes over)."""
        self._louder_since.pop(publisher, None)
        if self.current == publisher:
            self.current = None
