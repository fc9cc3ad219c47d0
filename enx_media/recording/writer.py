"""One recorded track: RTP packets as the core tapped them become a media file, remuxed without
transcoding (PyAV's muxers; FFmpeg does the container work well, nothing here re-implements it).

VP8 and Opus go to WebM, H.264 to fragmented MP4. Video goes through the MCU's frame buffer (reordering,
whole frames only, nothing before the first key frame, a key frame asked for after a loss); audio
through its packet buffer. Timestamps are the RTP clock's, unwrapped, from the track's first frame.
The container is opened at the first key frame (its size is in it) and flushed packet by packet with
clusters / fragments of a second: a process killed mid-recording leaves a file that plays up to about
a second before the kill; `repair` rewrites such a file whole (an index, a duration) at the next start.
"""
from __future__ import annotations

import fractions
import os
import struct
from pathlib import Path
from typing import Any

import av

from ..mcu.jitter import AudioBuffer, FrameBuffer

SUFFIX = {"vp8": ".webm", "opus": ".webm", "h264": ".mp4"}
CLOCK = {"vp8": 90000, "h264": 90000, "opus": 48000}


def container_options(codec: str) -> tuple[str, dict[str, str]]:
    if codec == "h264":
        # fragmented: each key frame starts a fragment, the moov is written first and empty
        return "mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000"}
    return "webm", {"cluster_time_limit": "1000"}


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """A VP8 key frame's width and height (RFC 6386 §9.1), None if it is not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    w, h = struct.unpack_from("<HH", frame, 6)
    return w & 0x3FFF, h & 0x3FFF


def h264_size(frame: bytes) -> tuple[int, int] | None:
    """The size a decoder reads off an H.264 key frame (its SPS), None if it cannot."""
    try:
        ctx = av.CodecContext.create("h264", "r")
        for pic in ctx.decode(av.Packet(frame)):
            return pic.width, pic.height
        for pic in ctx.decode(None):
            return pic.width, pic.height
    except (av.error.FFmpegError, ValueError):
        pass
    return None


class Unwrap:
    """32-bit RTP timestamps as a count from the first one, across wraps (and small steps back)."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.last = 0
        self.high = 0

    def __call__(self, ts: int) -> int:
        if self.first is None:
            self.first = self.last = ts
            return 0
        delta = (ts - self.last + (1 << 31)) % (1 << 32) - (1 << 31)
        self.last = ts
        self.high += delta
        return self.high


class TrackWriter:
    def __init__(self, path: Path, kind: str, codec: str) -> None:
        if codec not in SUFFIX:
            raise ValueError(f"no recording of {codec}")
        self.path, self.kind, self.codec = path, kind, codec
        self.clock = CLOCK[codec]
        self.frames = FrameBuffer(codec) if kind == "video" else None
        self.sound = AudioBuffer() if kind == "audio" else None
        self.unwrap = Unwrap()
        self.container: Any = None
        self.stream: Any = None
        self.packets = 0
        self.last_pts = 0
        self.error: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def keyframe_needed(self) -> bool:
        """A key frame is wanted: none came yet, or a frame was lost (the buffer says so once)."""
        if self.frames is None:
            return False
        if self.frames.keyframe_needed:
            self.frames.keyframe_needed = False
            return True
        return self.container is None

    def push(self, packets: list[tuple[int, bytes]], now: float, mono_offset: float, ssrc: int = 0) -> None:
        """Tapped packets ((arrival monotonic ns, RTP)); what is whole by `now` goes into the file. ssrc:
        only that stream's (a simulcast producer's tap carries all of its encodings); 0: all."""
        if self.error is not None:
            return
        if ssrc:
            want = ssrc.to_bytes(4, "big")
            packets = [(t, pkt) for t, pkt in packets if pkt[8:12] == want]
        try:
            if self.frames is not None:
                for arrival_ns, pkt in packets:
                    self.frames.push(pkt, arrival_ns / 1e9 + mono_offset)
                for f in self.frames.pop(now):
                    self._write(f.data, f.timestamp, f.keyframe)
            elif self.sound is not None:
                for arrival_ns, pkt in packets:
                    self.sound.push(pkt, arrival_ns / 1e9 + mono_offset)
                for ts, payload in self.sound.pop_timed(now):
                    self._write(payload, ts, True)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]

    def _write(self, data: bytes, ts: int, key: bool) -> None:
        if self.container is None:
            if not key or not self._open(data):
                return
        pts = self.unwrap(ts)
        if pts <= self.last_pts and self.packets:
            pts = self.last_pts + 1             # a muxer wants increasing timestamps
        packet = av.Packet(data)
        packet.stream = self.stream
        packet.pts = packet.dts = pts
        packet.time_base = fractions.Fraction(1, self.clock)
        packet.is_keyframe = key
        self.container.mux(packet)
        self.packets += 1
        self.last_pts = pts

    def _open(self, first: bytes) -> bool:
        fmt, options = container_options(self.codec)
        size = (0, 0)
        if self.kind == "video":
            found = vp8_size(first) if self.codec == "vp8" else h264_size(first)
            if found is None:
                return False
            size = found
        self.container = av.open(str(self.path), "w", format=fmt, options=options,
                                 container_options={"flush_packets": "1"})
        if self.kind == "video":
            self.stream = self.container.add_stream("libvpx" if self.codec == "vp8" else "h264", rate=30)
            self.stream.width, self.stream.height = size
            self.stream.pix_fmt = "yuv420p"
            if self.codec == "h264":
                self.stream.codec_context.extradata = _parameter_sets(first)
        else:
            self.stream = self.container.add_stream("libopus", rate=48000)
            self.stream.layout = "stereo"
        self.stream.time_base = fractions.Fraction(1, self.clock)
        return True

    @property
    def duration(self) -> float:
        return self.last_pts / self.clock if self.packets else 0.0

    def close(self) -> tuple[int, float]:
        """Finish the file (its index and duration); (bytes, seconds of media). No file without media."""
        if self.container is not None:
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError) as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"[:200]
            self.container = None
        size = self.path.stat().st_size if self.path.exists() else 0
        return size, self.duration


def _parameter_sets(frame: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex B key frame (the MP4 muxer's avcC comes from them)."""
    out = b""
    for nal in frame.split(b"\x00\x00\x01"):
        nal = nal.rstrip(b"\x00")
        if nal and nal[0] & 0x1F in (7, 8):
            out += b"\x00\x00\x00\x01" + nal
    return out


def repair(path: Path) -> tuple[int, float]:
    """Rewrite a file a crash cut (no index, no duration, maybe a torn last cluster) from what is readable
    in it: (bytes, seconds). Raises av.error.FFmpegError / OSError when nothing is."""
    fixed = path.with_name(path.stem + ".repaired" + path.suffix)
    codec = "h264" if path.suffix == ".mp4" else "vp8"
    fmt, options = container_options(codec)
    last = 0.0
    with av.open(str(path)) as src, av.open(str(fixed), "w", format=fmt, options=options) as dst:
        s_in = src.streams[0]
        s_out = dst.add_stream_from_template(s_in)
        try:
            for packet in src.demux(s_in):
                if packet.dts is None:
                    continue
                last = max(last, float((packet.pts or 0) * packet.time_base))
                packet.stream = s_out
                dst.mux(packet)
        except (av.error.FFmpegError, EOFError):
            pass                                # the torn end: keep what came before it
    os.replace(fixed, path)
    return path.stat().st_size, last
