"""The MCU's video input buffer: RTP packets of one stream, as they arrive (late, reordered, repeated, some
lost), become whole encoded frames in order, ready for the decoder.

A frame is whole when every seq from the packet after the previous frame's last (marker) packet up to its
own marker packet is there. Frames wait until whole, at most the buffer's depth, which follows the
measured interarrival jitter (RFC 3550 §6.4.1's estimate, three times it, within MIN_DEPTH_S..MAX_DEPTH_S);
a frame still incomplete after that is given up, and the frames after it are held back until a key frame
(the decoder has lost a reference), with `keyframe_needed` set so that the pipeline asks the publisher.
Depayloading is aiortc's (VP8 RFC 7741, H.264 RFC 6184), the packet parse the core's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from enx_media._native import _core

MIN_DEPTH_S = 0.02
MAX_DEPTH_S = 0.25
WINDOW = 512                  # packets remembered; older ones are late beyond use


def extend_seq(high: int | None, seq16: int) -> int:
    """A 16-bit RTP seq as the extended one nearest the highest seen (None: the first)."""
    if high is None:
        return (1 << 16) + seq16
    base = high & ~0xFFFF
    return min((base - 0x10000 + seq16, base + seq16, base + 0x10000 + seq16), key=lambda s: abs(s - high))


@dataclass
class Frame:
    timestamp: int            # RTP
    data: bytes               # the encoded frame, depayloaded
    keyframe: bool
    first_arrival: float
    arrival: float            # of its last packet: when it was whole


@dataclass
class _Pending:
    timestamp: int
    packets: dict[int, bytes] = field(default_factory=dict)     # extended seq -> payload
    marker_seq: int | None = None
    first_arrival: float = 0.0
    last_arrival: float = 0.0
    keyframe: bool = False


class FrameBuffer:
    def __init__(self, codec: str, clock_rate: int = 90000) -> None:
        if codec not in ("vp8", "h264"):
            raise ValueError("a video buffer is for vp8 or h264")
        self.codec, self.clock_rate = codec, clock_rate
        self.jitter = 0.0                  # seconds
        self.keyframe_needed = False
        self.frames_out = self.frames_dropped = self.duplicates = self.late = self.malformed = 0
        self._pending: dict[int, _Pending] = {}      # RTP timestamp -> frame being gathered
        self._next_seq: int | None = None            # extended seq the next frame starts at
        self._high: int | None = None                # highest extended seq seen
        self._seen: set[int] = set()
        self._transit: float | None = None
        self._waiting_key = True                     # nothing decodable before the first key frame
        self._started = False                        # a frame went out or was given up

    @property
    def depth(self) -> float:
        return min(MAX_DEPTH_S, max(MIN_DEPTH_S, 3 * self.jitter))

    def push(self, packet: bytes, arrival: float) -> None:
        """One RTP packet (plain, as the core hands it over) and when it arrived (seconds)."""
        try:
            rtp = _core.parse_rtp(packet)
        except ValueError:
            self.malformed += 1
            return
        seq = extend_seq(self._high, rtp["sequence_number"])
        if seq in self._seen:
            self.duplicates += 1
            return
        if self._next_seq is not None and seq < self._next_seq:
            if self._started:
                self.late += 1                       # its frame went out or was given up
                return
            self._next_seq = seq                     # nothing out yet: the stream starts earlier

        self._seen.add(seq)
        if len(self._seen) > WINDOW:
            self._seen = {s for s in self._seen if s > seq - WINDOW}
        if self._high is None or seq > self._high:
            self._high = seq
        ts = rtp["timestamp"]
        # interarrival jitter (RFC 3550 §6.4.1), in seconds
        transit = arrival - ts / self.clock_rate
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 1.0:                              # a timestamp jump (new source) is not jitter
                self.jitter += (d - self.jitter) / 16
        self._transit = transit
        f = self._pending.get(ts)
        if f is None:
            f = self._pending[ts] = _Pending(ts, first_arrival=arrival)
        f.packets[seq] = rtp["payload"]
        f.last_arrival = max(f.last_arrival, arrival)
        if rtp["marker"]:
            f.marker_seq = seq
        if min(f.packets) == seq:
            f.keyframe = _starts_key_frame(self.codec, rtp["payload"])
        if self._next_seq is None:
            self._next_seq = seq

    def pop(self, now: float) -> list[Frame]:
        """The frames that are whole now, in order; incomplete ones older than the depth are given up."""
        out: list[Frame] = []
        while self._pending:
            ts = min(self._pending, key=lambda t: min(self._pending[t].packets))
            f = self._pending[ts]
            first = min(f.packets)
            start = self._next_seq if self._next_seq is not None else first
            whole = (f.marker_seq is not None and first <= start
                     and all(s in f.packets for s in range(start, f.marker_seq + 1)))
            if not whole and (f.keyframe and first > start and f.marker_seq is not None
                              and all(s in f.packets for s in range(first, f.marker_seq + 1))):
                whole, start = True, first           # a whole key frame after a gap: start again from it
            if whole and self._waiting_key and not f.keyframe and now - f.first_arrival < self.depth:
                break                                # the key frame may still come, reordered, before it
            if not whole:
                if now - f.first_arrival < self.depth and len(self._pending) < 64:
                    break
                del self._pending[ts]                # given up: the decoder loses a reference
                self.frames_dropped += 1
                self._started = True
                self._waiting_key = True
                self.keyframe_needed = True
                if f.marker_seq is not None:
                    self._next_seq = f.marker_seq + 1
                else:
                    self._next_seq = max(f.packets) + 1
                continue
            del self._pending[ts]
            last = f.marker_seq
            assert last is not None                  # whole: it has its marker packet
            self._next_seq = last + 1
            self._started = True
            if self._waiting_key and not f.keyframe:
                self.frames_dropped += 1
                self.keyframe_needed = True
                continue
            if f.keyframe:
                self._waiting_key = False
                self.keyframe_needed = False
            data = self._depayload([f.packets[s] for s in range(start, last + 1)])
            if data is None:
                self.malformed += 1
                self._waiting_key = self.keyframe_needed = True
                continue
            self.frames_out += 1
            out.append(Frame(ts, data, f.keyframe, f.first_arrival, f.last_arrival))
        return out

    def _depayload(self, payloads: list[bytes]) -> bytes | None:
        try:
            if self.codec == "vp8":
                return b"".join(vp8_depayload(p) for p in payloads)
            return b"".join(h264_depayload(p) for p in payloads)
        except Exception:  # noqa: BLE001 - aiortc's depayloaders raise on any malformed payload
            return None


def _starts_key_frame(codec: str, payload: bytes) -> bool:
    try:
        return _core.is_keyframe(codec, payload)
    except ValueError:
        return False


class AudioBuffer:
    """One audio input's RTP packets (Opus: one packet, one frame) in sequence order. A packet waits for
    the ones before it at most `depth` (MIN_DEPTH_S..MAX_DEPTH_S from the jitter, as for video); a missing
    one is then skipped, and the decoder's next frame covers it (the mix pads what is short with silence)."""

    def __init__(self, clock_rate: int = 48000) -> None:
        self.clock_rate = clock_rate
        self.jitter = 0.0
        self.packets_out = self.lost = self.duplicates = self.late = self.malformed = 0
        self._waiting: dict[int, tuple[float, int, bytes]] = {}     # extended seq -> (arrival, RTP ts, payload)
        self._next: int | None = None
        self._high: int | None = None
        self._transit: float | None = None

    @property
    def depth(self) -> float:
        return min(MAX_DEPTH_S, max(MIN_DEPTH_S, 3 * self.jitter))

    def push(self, packet: bytes, arrival: float) -> None:
        try:
            rtp = _core.parse_rtp(packet)
        except ValueError:
            self.malformed += 1
            return
        high = self._high
        seq = extend_seq(high, rtp["sequence_number"])
        if self._next is not None and seq < self._next:
            self.late += 1
            return
        if seq in self._waiting:
            self.duplicates += 1
            return
        if not rtp["payload"]:
            return                                   # padding only: a probe, no audio
        transit = arrival - rtp["timestamp"] / self.clock_rate
        if self._transit is not None and abs(transit - self._transit) < 1.0:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit
        self._high = seq if high is None else max(high, seq)
        if self._next is None:
            self._next = seq
        self._waiting[seq] = (arrival, rtp["timestamp"], rtp["payload"])
        if len(self._waiting) > WINDOW:              # a reader far behind: the oldest go
            for s in sorted(self._waiting)[:len(self._waiting) - WINDOW]:
                del self._waiting[s]
                self.lost += 1

    def pop(self, now: float) -> list[bytes]:
        """The payloads ready now, in order."""
        return [payload for _, payload in self.pop_timed(now)]

    def pop_timed(self, now: float) -> list[tuple[int, bytes]]:
        """The same with their RTP timestamps: (timestamp, payload)."""
        out: list[tuple[int, bytes]] = []
        while self._waiting and self._next is not None:
            got = self._waiting.pop(self._next, None)
            if got is not None:
                out.append((got[1], got[2]))
                self.packets_out += 1
                self._next += 1
                continue
            first = min(self._waiting)
            if now - self._waiting[first][0] < self.depth:
                break                                # the missing one may still come
            self.lost += first - self._next
            self._next = first
        return out
