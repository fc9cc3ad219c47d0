"""Helpers for tests with real WebRTC peers: tracks whose frames carry a known colour, and frame checks."""
from __future__ import annotations

import asyncio
import fractions
import time

import av
import httpx
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from enx_media.client import RoomClient

# Every client a test makes through Api checks each message from the node against
# api/signaling.schema.json; conftest fails the test if any broke it.
CLIENTS: list[RoomClient] = []

COLORS = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (220, 200, 20), (200, 40, 200), (20, 200, 200)]


class ColorTrack(VideoStreamTrack):
    """Video frames of one solid colour (what a receiver checks after decoding)."""

    def __init__(self, rgb, size=(160, 120)):
        super().__init__()
        self.rgb = rgb
        self.img = np.zeros((size[1], size[0], 3), np.uint8)
        self.img[:] = rgb
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.frames += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """20 ms frames of a 440 Hz tone (not silence, so the Opus stream carries real payload)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        frame = await super().recv()
        t = (np.arange(frame.samples) + self.n * frame.samples) / frame.sample_rate
        self.n += 1
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


def colour_close(frame, rgb, tol=40) -> bool:
    mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    return all(abs(float(m) - c) <= tol for m, c in zip(mean, rgb))


async def receive_video(track, rgb, count: int, timeout: float = 20.0) -> int:
    """Decode `count` frames from track; returns how many matched the colour."""
    matched = 0
    deadline = time.monotonic() + timeout
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        matched += colour_close(frame, rgb)
    return matched


async def receive_audio(track, count: int, timeout: float = 20.0) -> int:
    got = 0
    deadline = time.monotonic() + timeout
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        got += frame.samples > 0
    return got


class Api:
    """REST helpers for a node under test."""

    def __init__(self, node, creds):
        self.node = node
        self.http = httpx.Client(base_url=node.base + "/video/v2", auth=creds, timeout=30)
        self.ws_url = node.base.replace("http://", "ws://") + "/signaling"

    def room(self, **body) -> dict:
        body.setdefault("name", "media-test")
        r = self.http.post("/rooms", json=body)
        assert r.status_code == 201, r.text
        return r.json()["room"]

    def token(self, room_id: str, user: str, role: str, **extra) -> str:
        r = self.http.post(f"/rooms/{room_id}/tokens", json={"user_id": user, "user_name": user, "role": role,
                                                            **extra})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def client(self, room_id: str, user: str, role: str) -> RoomClient:
        return self.client_for(self.token(room_id, user, role))

    def client_for(self, token: str) -> RoomClient:
        c = RoomClient(self.ws_url, token, validate=True)
        CLIENTS.append(c)
        return c

    def metrics(self) -> str:
        return httpx.get(self.node.base + "/metrics").text

    def metric(self, name: str, labels: str = "") -> float:
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0
