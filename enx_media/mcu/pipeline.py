"""The MCU: the inputs (moderators and floor holders) composited into one video and mixed into one audio,
fed back into the core as Python-fed producers, so the output fans out like any stream.

All codec work runs on the MCU's own thread (`Mcu.start`): PyAV releases the GIL in its codec calls and the
kernels (`_core.composite`, `_core.mix`) release it too, so the event loop and the packet path never wait
on a codec. Each pass of the thread:

1. reads every input's packets from the core's tap (`Worker.tap_read`) into its jitter buffer
   (`FrameBuffer` for video, `AudioBuffer` for Opus) and decodes what is ready: a video input keeps its
   latest picture (I420), an audio input appends 48 kHz mono PCM to a short FIFO; a decode error or a gap
   the buffer gave up on asks the publisher for a key frame (`Worker.request_keyframe`, the core limits it);
2. every 20 ms takes one frame of PCM per input (silence where short), mixes it (`_core.mix`: the full mix,
   and a mix-minus per input that has its own output), encodes Opus and feeds the packets;
3. every 1/fps composites the pictures into the canvas by the layout (`layout.tiles`; the speaker layout's
   large tile follows `ActiveSpeaker` fed from the RFC 6464 levels the room reads in the core where an
   input's packets carry them, else from the decoded energy), an input without a new picture for
   STALE_S shown as a placeholder, encodes VP8 (libvpx realtime) or H.264 (libx264) and, for simulcast
   out of the MCU, the same picture at a second smaller size (a key frame on request, at most one per
   KEYFRAME_MIN_S, and every KEYFRAME_INTERVAL_S) and feeds the packets. The first composite waits until
   every video input has a picture (at most WARMUP_S): subscribers switched over to it at its first key
   frame (the core's switch_producer at_keyframe) keep the stream they had until then, so nobody sees a
   composite of placeholders.

The output's RTP timestamps come from one clock (the thread's monotonic time), so its audio and video
line up in the core's sender reports.
"""
from __future__ import annotations

import collections
import fractions
import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from enx_media._native import _core

from .jitter import AudioBuffer, FrameBuffer
from .layout import LAYOUTS, MAX_INPUTS, tiles
from .speaker import ActiveSpeaker

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960                 # 20 ms
AUDIO_FIFO_MAX = 10 * FRAME_SAMPLES  # 200 ms: more is latency, the oldest goes
STALE_S = 2.0                       # no new picture for this long: the tile shows a placeholder
WARMUP_S = 1.5                      # the first composite waits this long at most for every input's picture
KEYFRAME_MIN_S = 0.5
KEYFRAME_INTERVAL_S = 5.0
SPEAKER_EVERY_S = 0.1
EXT_LEVELS_FRESH_S = 1.5            # audio levels from the header extension older than this: decoded energy again
VIDEO_CLOCK = 90000
VIDEO_CODECS = ("vp8", "h264")
LATENCY_KEPT = 3000                 # latency samples kept (100 s of output frames)
# libvpx threads for the large size: measured (bench/mcu_pipeline.py, 4 inputs to 720p) 2 threads cost 15 %
# more CPU per frame for 10 % less wall time (~1 ms); the node's cores are the fan-out's too, so one
ENCODER_THREADS = 1
SMALL_BITRATE = 400_000             # the composite's second, smaller size (simulcast out of the MCU)
BACKGROUND_YUV = (16, 128, 128)     # black
PLACEHOLDER_YUV = (60, 128, 128)    # dark grey
TILE_COLOURS = [(81, 90, 240), (145, 54, 34), (41, 240, 110), (210, 16, 146), (170, 166, 16),
                (106, 202, 222), (82, 160, 200), (120, 100, 100), (180, 128, 60)]


@dataclass
class Output:
    """One output stream of the MCU: a Python-fed producer and its RTP numbering."""
    producer: Any
    ssrc: int
    payload_type: int
    seq: int = field(default_factory=lambda: random.randint(0, 0xFFFF))

    def packets(self, payloads: list[bytes], timestamp: int) -> list[bytes]:
        out = []
        for i, payload in enumerate(payloads):
            out.append(RtpPacket(payload_type=self.payload_type, sequence_number=self.seq,
                                 timestamp=timestamp & 0xFFFFFFFF, ssrc=self.ssrc,
                                 marker=int(i == len(payloads) - 1), payload=payload).serialize())
            self.seq = (self.seq + 1) & 0xFFFF
        return out


class AudioEncoder:
    def __init__(self, output: Output, bitrate: int = 48000) -> None:
        self.output = output
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate = SAMPLE_RATE
        self.codec.layout = "mono"
        self.codec.format = "s16"
        self.codec.bit_rate = bitrate
        self.codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.codec.options = {"application": "voip", "frame_duration": "20"}

    def encode(self, pcm: np.ndarray, pts: int) -> list[bytes]:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        out: list[bytes] = []
        for packet in self.codec.encode(frame):
            out += self.output.packets([bytes(packet)], pts)
        return out


class VideoEncoder:
    """One size of the composite: VP8 (libvpx, realtime) or H.264 (libx264, ultrafast/zerolatency,
    constrained baseline as the node offers it), packetized by aiortc's packetizers (pack())."""

    def __init__(self, output: Output, width: int, height: int, fps: int, bitrate: int, threads: int,
                 codec: str = "vp8") -> None:
        if codec not in VIDEO_CODECS:
            raise ValueError(f"the MCU encodes {' or '.join(VIDEO_CODECS)}")
        self.output = output
        self.width, self.height = width, height
        self.codec = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
        self.codec.width, self.codec.height = width, height
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.codec.framerate = fractions.Fraction(fps, 1)
        self.codec.bit_rate = bitrate
        self.codec.gop_size = int(KEYFRAME_INTERVAL_S * fps)
        self.codec.thread_count = threads
        self.packer: Vp8Encoder | H264Encoder
        if codec == "vp8":
            self.codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                                  "error-resilient": "1", "static-thresh": "100", "undershoot-pct": "95",
                                  "bufsize": str(bitrate), "maxrate": str(bitrate), "minrate": str(bitrate // 4)}
            self.packer = Vp8Encoder()       # aiortc's VP8 payload descriptor packetizer (RFC 7741)
        else:
            self.codec.profile = "Constrained Baseline"
            self.codec.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31",
                                  "bufsize": str(bitrate), "maxrate": str(bitrate)}
            self.packer = H264Encoder()      # aiortc's RFC 6184 packetizer (single NAL, STAP-A, FU-A)

    def encode(self, canvas: np.ndarray, pts: int, key: bool) -> tuple[list[bytes], bool]:
        frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        if key:
            frame.pict_type = av.video.frame.PictureType.I
        out: list[bytes] = []
        was_key = False
        for packet in self.codec.encode(frame):
            was_key = was_key or packet.is_keyframe
            payloads, _ = self.packer.pack(packet)
            out += self.output.packets(payloads, pts)
        return out, was_key


@dataclass(eq=False)
class Input:
    """One publisher in the MCU: its video and audio producers (either may be None), its own mix-minus
    output (None: it only gets what subscribers get), what was decoded last."""
    key: str
    name: str
    video: Any = None
    audio: Any = None
    minus: AudioEncoder | None = None
    video_codec: str = "vp8"
    frames: FrameBuffer | None = None
    decoder: Any = None
    picture: np.ndarray | None = None
    picture_at: float = -math.inf
    picture_arrival: float | None = None    # when the frame of the newest picture arrived whole, until composited
    sound: AudioBuffer | None = None
    audio_decoder: Any = None
    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    energy: list[float] = field(default_factory=list)    # mean square of the frames since the last look
    decode_errors: int = 0
    keyframe_requests: int = 0


class Mcu:
    """The compositor and mixer of one room. worker: the sfu Worker; video_out / audio_out: Outputs over
    direct producers made by the caller (the room fans them out). Inputs come and go from any thread."""

    def __init__(self, worker: Any, video_out: Output, audio_out: Output, *, width: int = 1280, height: int = 720,
                 fps: int = 30, layout: str = "grid", bitrate: int = 1_500_000, threads: int = ENCODER_THREADS,
                 codec: str = "vp8", small_out: Output | None = None, small_size: tuple[int, int] = (640, 360),
                 on_speaker: Callable[[str], None] | None = None) -> None:
        """small_out: the composite again at small_size (simulcast out of the MCU: the node's layer
        selection serves slow subscribers that one); set_layers says which sizes are encoded."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        if not (16 <= width <= 3840 and 16 <= height <= 2160 and width % 2 == 0 and height % 2 == 0):
            raise ValueError("the MCU's size must be even, 16x16 to 3840x2160")
        if not 1 <= fps <= 60:
            raise ValueError("the MCU's frame rate must be 1-60")
        self.worker = worker
        self.width, self.height, self.fps = width, height, fps
        self.layout = layout
        self.video = VideoEncoder(video_out, width, height, fps, bitrate, threads, codec)
        self.small: VideoEncoder | None = None
        if small_out is not None:
            sw, sh = small_size
            if not (16 <= sw < width and 16 <= sh < height and sw % 2 == 0 and sh % 2 == 0):
                raise ValueError("the small size must be even and smaller than the MCU's")
            self.small = VideoEncoder(small_out, sw, sh, fps, SMALL_BITRATE, 1, codec)
            self.small_canvas = np.empty((sh * 3 // 2, sw), np.uint8)
        self.layers = [e for e in (self.small, self.video) if e is not None]   # lowest first
        self.active = [True] * len(self.layers)
        self.audio = AudioEncoder(audio_out)
        self.canvas = np.empty((height * 3 // 2, width), np.uint8)
        self.speaker = ActiveSpeaker()
        self.on_speaker = on_speaker
        self.inputs: list[Input] = []
        self.stats: dict[str, float] = {"video_frames": 0, "small_frames": 0, "video_late": 0, "audio_frames": 0,
                      "keyframes_out": 0,
                      "input_frames": 0, "decode_errors": 0, "keyframe_requests_in": 0,
                      "keyframe_requests_out": 0, "busy_s": 0.0}
        # seconds from an input frame's arrival (whole) to the last packet of the first composite showing it
        # fanned out (feed returns once every consumer's copy is sent), the most recent LATENCY_KEPT
        self.latency: collections.deque[float] = collections.deque(maxlen=LATENCY_KEPT)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._keys: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._want_key = True
        self._last_key = -math.inf
        self._ext_levels: tuple[float, dict[str, float]] = (-math.inf, {})
        self._t0 = 0.0
        self._composing = False             # past the warm-up: video frames go out

    # -- control (any thread; never waits for the MCU's thread, which applies each change before its next pass) --

    def add_input(self, key: str, name: str = "", *, video: Any = None, video_codec: str = "vp8",
                  audio: Any = None, minus: Output | None = None) -> None:
        """Add (or replace) publisher `key`'s inputs: producers the MCU taps."""
        if key not in self._keys and len(self._keys) >= MAX_INPUTS:
            raise ValueError(f"the MCU composites at most {MAX_INPUTS} inputs")
        self._keys.add(key)
        self._commands.put(lambda: self._add(key, name, video, video_codec, audio, minus))

    def remove_input(self, key: str) -> None:
        self._keys.discard(key)
        self._commands.put(lambda: self._remove(key))

    def set_layout(self, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        self.layout = layout

    def set_levels(self, levels: dict[str, float]) -> None:
        """The inputs' RFC 6464 audio levels (dBov, 0 loudest) as their packets' header extension carried
        them (the room reads them in the core): the speaker follows these where an input has them, its
        decoded energy where not."""
        self._ext_levels = (time.monotonic(), dict(levels))

    def set_layers(self, active: list[bool]) -> None:
        """Which sizes are encoded, lowest first (dynacast for the MCU: a size nobody receives costs
        nothing); a size that resumes starts with a key frame."""
        if len(active) != len(self.layers):
            raise ValueError(f"the MCU has {len(self.layers)} size(s)")
        if any(a and not was for a, was in zip(active, self.active)):
            self._want_key = True
        self.active = list(active)

    def request_keyframe(self) -> None:
        """A subscriber asked (PLI on the output): the next frame is a key frame, at most one per KEYFRAME_MIN_S."""
        self.stats["keyframe_requests_in"] += 1
        self._want_key = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="enx-mcu", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop the thread (it lets go of its taps on the way out); wait=False returns at once (the event
        loop's call: a pass in progress finishes its encode on the thread)."""
        self._stop.set()
        if self._thread is None:
            self._apply_commands()
            self._close_inputs()
        elif wait:
            self._thread.join(5)

    def _add(self, key: str, name: str, video: Any, video_codec: str, audio: Any, minus: Output | None) -> None:
        self._remove(key)
        i = Input(key, name, video=video, audio=audio, video_codec=video_codec,
                  minus=AudioEncoder(minus) if minus is not None else None)
        try:
            if video is not None:
                i.frames = FrameBuffer(video_codec)
                i.decoder = av.CodecContext.create("libvpx" if video_codec == "vp8" else "h264", "r")
                self.worker.tap(video)
                self.worker.request_keyframe(video)
            if audio is not None:
                i.sound = AudioBuffer()
                i.audio_decoder = av.CodecContext.create("libopus", "r")
                i.audio_decoder.sample_rate = SAMPLE_RATE
                i.audio_decoder.layout = "mono"
                i.audio_decoder.format = "s16"
                self.worker.tap(audio)
        except ValueError:
            return                          # a producer closed before the thread got to it
        self.inputs.append(i)

    def _remove(self, key: str) -> None:
        for i in [i for i in self.inputs if i.key == key]:
            self.inputs.remove(i)
            self.speaker.forget(key)
            for p in (i.video, i.audio):
                if p is not None:
                    try:
                        self.worker.tap(p, False)
                    except ValueError:
                        pass                # the producer closed already
            self._want_key = True           # the picture changes everywhere: decoders may start here

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _close_inputs(self) -> None:
        for i in list(self.inputs):
            self._remove(i.key)

    def _feed(self, output: Output, packets: list[bytes]) -> None:
        try:
            self.worker.feed(output.producer, packets)
        except ValueError:
            pass                            # the room closed the output: the thread is stopping

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        self._t0 = time.monotonic()
        next_audio = next_video = self._t0
        next_speaker = self._t0 + SPEAKER_EVERY_S
        audio_pts = 0
        while not self._stop.is_set():
            now = time.monotonic()
            busy = time.thread_time()
            try:
                self._apply_commands()
                self._read_inputs(now)
                if now >= next_audio:
                    self._mix(audio_pts)
                    audio_pts += FRAME_SAMPLES
                    next_audio += FRAME_SAMPLES / SAMPLE_RATE
                    if now - next_audio > 0.2:          # far behind (a stall): start again from now
                        next_audio = now
                if now >= next_speaker:
                    self._follow_speaker(now)
                    next_speaker = now + SPEAKER_EVERY_S
                if now >= next_video and not self._warmed_up(now):
                    next_video = now + 1 / self.fps
                elif now >= next_video:
                    self._composite_and_encode(now)
                    next_video += 1 / self.fps
                    if now - next_video > 1 / self.fps:   # behind: drop frames rather than queue them
                        self.stats["video_late"] += 1
                        next_video = now + 1 / self.fps
            except Exception:  # noqa: BLE001 - one bad pass must not end the room's MCU
                log.exception("mcu pass failed")
            self.stats["busy_s"] += time.thread_time() - busy   # this thread's CPU (codecs on helper threads not in it)
            wait = min(next_audio, next_video) - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 0.005))
        self._apply_commands()
        self._close_inputs()

    def _warmed_up(self, now: float) -> bool:
        if not self._composing:
            shown = [i for i in self.inputs if i.video is not None]
            self._composing = (bool(shown) and all(i.picture is not None for i in shown)) or now - self._t0 >= WARMUP_S
        return self._composing

    def _read_inputs(self, now: float) -> None:
        for i in self.inputs:
            if i.video is not None and i.frames is not None:
                self._read_video(i, now)
            if i.audio is not None and i.sound is not None:
                self._read_audio(i, now)

    def _read_video(self, i: Input, now: float) -> None:
        assert i.frames is not None
        try:
            packets = self.worker.tap_read(i.video)
        except ValueError:
            return                                   # closed under us: the room removes the input
        mono_offset = now - time.monotonic_ns() / 1e9
        for arrival_ns, pkt in packets:
            i.frames.push(pkt, arrival_ns / 1e9 + mono_offset)
        for f in i.frames.pop(now):
            try:
                pictures = i.decoder.decode(av.Packet(f.data))
            except (av.error.FFmpegError, ValueError):
                i.decode_errors += 1
                self.stats["decode_errors"] += 1
                self._ask_keyframe(i)
                continue
            for pic in pictures:
                if pic.width % 2 or pic.height % 2:      # I420 in the kernel: even sizes
                    pic = pic.reformat(width=pic.width & ~1, height=pic.height & ~1)
                i.picture = pic.to_ndarray(format="yuv420p")
                i.picture_at = now
                i.picture_arrival = f.arrival
                self.stats["input_frames"] += 1
        if i.frames.keyframe_needed:
            self._ask_keyframe(i)
            i.frames.keyframe_needed = False

    def _ask_keyframe(self, i: Input) -> None:
        i.keyframe_requests += 1
        self.stats["keyframe_requests_out"] += 1
        try:
            self.worker.request_keyframe(i.video)
        except ValueError:
            pass

    def _read_audio(self, i: Input, now: float) -> None:
        assert i.sound is not None
        try:
            packets = self.worker.tap_read(i.audio)
        except ValueError:
            return
        mono_offset = now - time.monotonic_ns() / 1e9
        for arrival_ns, pkt in packets:
            i.sound.push(pkt, arrival_ns / 1e9 + mono_offset)
        chunks = [i.pcm]
        for payload in i.sound.pop(now):
            try:
                for frame in i.audio_decoder.decode(av.Packet(payload)):
                    chunks.append(frame.to_ndarray().reshape(-1).astype(np.int16, copy=False))
            except (av.error.FFmpegError, ValueError):
                i.decode_errors += 1
                self.stats["decode_errors"] += 1
        if len(chunks) > 1:
            pcm = np.concatenate(chunks)
            i.pcm = pcm[-AUDIO_FIFO_MAX:] if len(pcm) > AUDIO_FIFO_MAX else pcm

    def _mix(self, pts: int) -> None:
        voiced = [i for i in self.inputs if i.audio is not None]
        frames = np.zeros((max(1, len(voiced)), FRAME_SAMPLES), np.int16)
        for k, i in enumerate(voiced):
            n = min(FRAME_SAMPLES, len(i.pcm))
            frames[k, :n] = i.pcm[:n]
            i.pcm = i.pcm[n:]
            i.energy.append(float(np.mean(frames[k].astype(np.float32) ** 2)))
        full = np.empty(FRAME_SAMPLES, np.int16)
        minus = np.empty_like(frames) if any(i.minus is not None for i in voiced) else None
        _core.mix(frames, full, minus)
        self._feed(self.audio.output, self.audio.encode(full, pts))
        if minus is not None:
            for k, i in enumerate(voiced):
                if i.minus is not None:
                    self._feed(i.minus.output, i.minus.encode(minus[k], pts))
        self.stats["audio_frames"] += 1

    def _follow_speaker(self, now: float) -> None:
        levels = {}
        at, ext = self._ext_levels
        fresh = now - at < EXT_LEVELS_FRESH_S
        for i in self.inputs:
            if fresh and i.key in ext:
                levels[i.key] = ext[i.key]
                i.energy.clear()
            elif i.energy:
                ms = sum(i.energy) / len(i.energy)
                i.energy.clear()
                # dBov of the mean square against a full-scale sine's (RFC 6464's reference)
                levels[i.key] = min(127.0, -10 * math.log10(max(ms, 1e-9) / (32767 ** 2 / 2)))
        changed = self.speaker.update(levels, now)
        if changed is not None and self.on_speaker is not None:
            self.on_speaker(changed)

    def _composite_and_encode(self, now: float) -> None:
        c = self.canvas
        w, h = self.width, self.height
        c[:h].fill(BACKGROUND_YUV[0])
        c[h:].fill(128)
        shown = [i for i in self.inputs if i.video is not None]
        speaker = next((k for k, i in enumerate(shown) if i.key == self.speaker.current), 0)
        for k, (i, (x, y, tw, th)) in enumerate(zip(shown, tiles(self.layout, len(shown), w, h, speaker))):
            if tw == 0:
                continue
            colour = TILE_COLOURS[k % len(TILE_COLOURS)]
            border = 2 if len(shown) > 1 else 0
            if i.picture is not None and now - i.picture_at < STALE_S:
                _core.composite(c, i.picture, x, y, tw, th, border=border, marker=6 if len(shown) > 1 else 0,
                                marker_yuv=colour, name=i.name)
            else:
                _core.composite(c, self._placeholder(), x, y, tw, th, border=border, marker=6,
                                marker_yuv=colour, name=i.name)
        pts = int((now - self._t0) * VIDEO_CLOCK)
        key = self._want_key and now - self._last_key >= KEYFRAME_MIN_S
        if key:
            self._want_key = False
            self._last_key = now
        for enc, active in zip(self.layers, self.active):
            if not active:
                continue
            if enc is self.small:
                # the same picture scaled by the compositing kernel (area average), same timestamp
                _core.composite(self.small_canvas, c, 0, 0, enc.width, enc.height)
                self.stats["small_frames"] += 1
            packets, was_key = enc.encode(self.small_canvas if enc is self.small else c, pts, key)
            self.stats["keyframes_out"] += was_key
            self._feed(enc.output, packets)
        # latency: the newest input frame in this composite, from its arrival to its last packet sent
        arrivals = [i.picture_arrival for i in shown if i.picture_arrival is not None]
        if arrivals:
            self.latency.append(time.monotonic() - max(arrivals))
            for i in shown:
                i.picture_arrival = None
        self.stats["video_frames"] += 1

    _grey: np.ndarray | None = None

    def _placeholder(self) -> np.ndarray:
        if self._grey is None:
            g = np.empty((36 * 3 // 2, 64), np.uint8)
            g[:36].fill(PLACEHOLDER_YUV[0])
            g[36:].fill(128)
            self._grey = g
        return self._grey
