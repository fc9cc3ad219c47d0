"""Helpers for the MCU's tests: publishers that send a solid colour and a tone as real VP8 and Opus RTP
(aiortc's encoders) into Python-fed producers of a real worker, and a reader that decodes what the MCU
outputs (from a tap on its output producers) with PyAV."""
from __future__ import annotations

import fractions
import os
import threading
import time

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder

from enx_media._native import _core
from enx_media.mcu.jitter import FrameBuffer
from enx_media.mcu.pipeline import Output

# distinct colours (Y, U, V) and tones (Hz)
COLOURS = [(81, 90, 240), (145, 54, 34), (41, 240, 110), (210, 16, 146)]
TONES = [300.0, 500.0, 700.0, 900.0]


def solid(width, height, yuv):
    a = np.empty((height * 3 // 2, width), np.uint8)
    a[:height] = yuv[0]
    a[height:height + height // 4] = yuv[1]
    a[height + height // 4:] = yuv[2]
    return a


class Source:
    """One publisher: a solid colour at 320x180 and a sine tone, 30 fps / 20 ms, fed into its producers
    (video and audio) of the worker. corrupt_video / corrupt_audio: its VP8 / Opus payloads are garbage from
    then on."""

    def __init__(self, worker, index, amplitude=6000, ssrc_base=0x7000):
        self.worker = worker
        self.colour, self.tone, self.amplitude = COLOURS[index], TONES[index], amplitude
        self.video = worker.create_direct_producer("vp8", ssrc=ssrc_base + 2 * index)
        self.audio = worker.create_direct_producer("opus", ssrc=ssrc_base + 2 * index + 1)
        self.vout = Output(self.video, ssrc_base + 2 * index, 96)
        self.aout = Output(self.audio, ssrc_base + 2 * index + 1, 111)
        self.venc, self.aenc = Vp8Encoder(), OpusEncoder()
        self.frame = solid(320, 180, self.colour)
        self.vpts = self.apts = 0
        self.corrupt_video = self.corrupt_audio = False
        self.keyframe = True
        self.event_s = None      # from this media time on (video pts / audio samples): white, and a loud beep

    def send_video(self):
        after = self.event_s is not None and self.vpts >= self.event_s * 90000
        f = av.VideoFrame.from_ndarray(solid(320, 180, (235, 128, 128)) if after else self.frame, format="yuv420p")
        f.pts, f.time_base = self.vpts, fractions.Fraction(1, 90000)
        payloads, ts = self.venc.encode(f, force_keyframe=self.keyframe)
        self.keyframe = False
        if self.corrupt_video:
            payloads = [p[:4] + bytes(len(p) - 4) for p in payloads]
        self.worker.feed(self.video, self.vout.packets(payloads, ts))
        self.vpts += 3000

    def send_audio(self):
        n = self.apts + np.arange(960)
        amplitude = np.full(960, float(self.amplitude))
        if self.event_s is not None:
            amplitude = np.where(n >= self.event_s * 48000, 16000.0, 0.0)   # silence, then the beep
        pcm = (amplitude * np.sin(2 * np.pi * self.tone * n / 48000)).astype(np.int16)
        f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, self.apts, fractions.Fraction(1, 48000)
        payloads, ts = self.aenc.encode(f)
        if self.corrupt_audio:
            payloads = [os.urandom(len(p) * (self.apts // 960 % 3)) for p in payloads]   # garbage, some empty
        self.worker.feed(self.audio, self.aout.packets(payloads, ts))
        self.apts += 960


class Sources:
    """Feeds its sources in real time on a thread of its own (audio every 20 ms, video every 33 ms)."""

    def __init__(self, sources):
        self.sources = list(sources)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        t0 = time.monotonic()
        na = nv = t0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= na:
                for s in list(self.sources):
                    s.send_audio()
                na += 0.02
            if now >= nv:
                for s in list(self.sources):
                    s.send_video()
                nv += 1 / 30
            self._stop.wait(max(0.0, min(na, nv) - time.monotonic()))


class Watcher:
    """Decodes an MCU output producer from a tap: the latest picture (video) or the PCM (audio)."""

    def __init__(self, worker, producer, kind, codec="vp8"):
        self.worker, self.producer, self.kind = worker, producer, kind
        worker.tap(producer)
        self.buffer = FrameBuffer(codec)
        if kind == "video":
            self.codec = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
        else:
            self.codec = av.CodecContext.create("libopus", "r")
            self.codec.sample_rate, self.codec.layout, self.codec.format = 48000, "mono", "s16"
        self.picture = None
        self.pictures = 0
        self.sizes = set()
        self.pcm = []
        self.timeline = []       # (RTP timestamp, picture) of each decoded video frame / audio frame

    def read(self):
        now = time.monotonic()
        packets = self.worker.tap_read(self.producer)
        if self.kind == "audio":
            # a tap on the same worker loses nothing: in order as fed, each with its RTP timestamp
            for _, pkt in packets:
                rtp = _core.parse_rtp(pkt)
                for frame in self.codec.decode(av.Packet(rtp["payload"])):
                    pcm = frame.to_ndarray().reshape(-1)
                    self.pcm.append(pcm)
                    self.timeline.append((rtp["timestamp"], pcm))
            return
        for arrival, pkt in packets:
            self.buffer.push(pkt, arrival / 1e9)
        for item in self.buffer.pop(now):
            for frame in self.codec.decode(av.Packet(item.data)):
                self.picture = frame.to_ndarray(format="yuv420p")
                self.sizes.add((frame.width, frame.height))
                self.pictures += 1
                self.timeline.append((item.timestamp, self.picture))

    def watch(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read()
            time.sleep(0.01)

    def recent_pcm(self, seconds):
        pcm = np.concatenate(self.pcm) if self.pcm else np.zeros(0, np.int16)
        return pcm[-int(seconds * 48000):]


def colour_at(picture, width, height, x, y, w, h):
    """The mean (Y, U, V) of the middle half of a tile of an I420 picture."""
    Y = picture[:height]
    U = picture[height:height + height // 4].reshape(height // 2, width // 2)
    V = picture[height + height // 4:].reshape(height // 2, width // 2)
    x0, x1, y0, y1 = x + w // 4, x + 3 * w // 4, y + h // 4, y + 3 * h // 4
    return (float(Y[y0:y1, x0:x1].mean()), float(U[y0 // 2:y1 // 2, x0 // 2:x1 // 2].mean()),
            float(V[y0 // 2:y1 // 2, x0 // 2:x1 // 2].mean()))


def near(a, b, tol=12):
    return all(abs(p - q) <= tol for p, q in zip(a, b))


def tone_levels(pcm, freqs):
    """Each frequency's magnitude in the spectrum of pcm, relative to the strongest bin."""
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    hz = np.fft.rfftfreq(len(pcm), 1 / 48000)
    peak = spec.max() or 1.0
    return {f: float(spec[(hz > f - 15) & (hz < f + 15)].max() / peak) for f in freqs}
