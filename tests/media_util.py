"""Helpers for tests with real WebRTC peers: tracks whose frames carry a known colour, frame checks, aiortc
peer connections and offers, headless Chromium, and REST calls to a node."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import time

import av
import httpx
import numpy as np
from aiortc import (RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription,
                    VideoStreamTrack)
from aiortc.mediastreams import AudioStreamTrack

from enx_media.client import RoomClient, use_loopback_candidates
from enx_media.mcu.layout import tiles

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
    """20 ms frames of a tone (440 Hz unless told; not silence, so the Opus stream carries real payload)."""

    def __init__(self, freq=440.0):
        super().__init__()
        self.n = 0
        self.freq = freq

    async def recv(self):
        frame = await super().recv()
        t = (np.arange(frame.samples) + self.n * frame.samples) / frame.sample_rate
        self.n += 1
        samples = (np.sin(2 * np.pi * self.freq * t) * 8000).astype(np.int16)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


class LevelTrack(AudioStreamTrack):
    """20 ms frames of a tone whose amplitude the test sets (amplitude 0: silence): a talker who starts
    and stops. aiortc puts each frame's level in the audio-level header extension."""

    def __init__(self, freq: float = 440.0, amplitude: float = 0.0):
        super().__init__()
        self.freq, self.amplitude, self.n = freq, amplitude, 0

    async def recv(self):
        frame = await super().recv()
        t = (np.arange(frame.samples) + self.n * frame.samples) / frame.sample_rate
        self.n += 1
        samples = (np.sin(2 * np.pi * self.freq * t) * self.amplitude).astype(np.int16)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


def thumbnail(frame, width: int = 160):
    """The frame in RGB scaled down to about `width` pixels across, and the factor. A full-size conversion
    of a 720p frame holds the test's event loop ~5 ms; for every frame of several tracks that delays the
    peers' packets enough for aiortc's REMB to report over-use, and the node then paces them as a slow link."""
    f = max(1, frame.width // width)
    if f == 1:
        return frame.to_ndarray(format="rgb24"), 1
    return frame.reformat(width=frame.width // f, height=frame.height // f, format="rgb24").to_ndarray(), f


def colour_close(frame, rgb, tol=40) -> bool:
    mean = thumbnail(frame)[0].reshape(-1, 3).mean(axis=0)
    return all(abs(float(m) - c) <= tol for m, c in zip(mean, rgb))


async def receive_video(track, rgb, count: int, timeout: float = 20.0) -> int:
    """Decode `count` frames from track; returns how many matched the colour."""
    matched = 0
    deadline = time.monotonic() + timeout
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        matched += colour_close(frame, rgb)
    return matched


def tile_rgb(img, tile, scale: int = 1):
    """The mean RGB of the middle third of a tile (x, y, w, h) of an RGB picture (a thumbnail of it scaled
    down by `scale`)."""
    x, y, w, h = (v // scale for v in tile)
    return img[y + h // 3:y + 2 * h // 3, x + w // 3:x + 2 * w // 3].reshape(-1, 3).mean(axis=0)


def close_to(rgb, want, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(rgb, want))


async def composite_shows(track, colours, size=(1280, 720), timeout=30.0):
    """Frames of the composite until one of that size (the simulcast layer wanted: a subscriber starts on
    the small one; None: either) shows each colour in its grid tile."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        img, scale = thumbnail(frame)
        w, h = frame.width, frame.height
        last = (w, h), [tile_rgb(img, t, scale).round() for t in tiles("grid", len(colours), w, h)]
        if size in ((w, h), None) and all(close_to(rgb, c) for rgb, c in zip(last[1], colours)):
            return
    raise AssertionError(f"composite {last}, wanted {colours} at {size}")


async def shows_colours(track, colours, timeout: float = 30.0, share: float = 0.01) -> bool:
    """Decode frames until one has each colour on at least `share` of its pixels (a composite: where
    each tile is depends on the layout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        img = thumbnail(frame)[0].reshape(-1, 3).astype(np.int16)
        if all((np.abs(img - np.array(c)).max(axis=1) <= 40).mean() >= share for c in colours):
            return True
    return False


async def receive_audio(track, count: int, timeout: float = 20.0) -> int:
    got = 0
    deadline = time.monotonic() + timeout
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        got += frame.samples > 0
    return got


def peer_connection() -> RTCPeerConnection:
    """An aiortc peer connection that gathers 127.0.0.1 candidates only and asks no STUN server."""
    use_loopback_candidates()
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


async def sendonly_offer(*tracks, codec: str | None = None) -> RTCPeerConnection:
    """A peer connection sending each track on its own transceiver, its offer set as local description.
    codec ("video/H264", ...) restricts the video transceivers to that codec (H.264: packetization-mode 1)."""
    pc = peer_connection()
    for track in tracks:
        tr = pc.addTransceiver(track, direction="sendonly")
        if codec and track.kind == "video":
            tr.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == codec
                                    and (codec != "video/H264" or c.parameters.get("packetization-mode") == "1")])
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def publish_offer(client: RoomClient, pc: RTCPeerConnection, sdp: str | None = None) -> dict:
    """Publish pc's offer (or `sdp`, an edited one) over signaling and apply the node's answer; the reply."""
    reply = await client.request("publish", sdp=sdp or pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    return reply


def without_lines(sdp: str, *prefixes: str) -> str:
    """The SDP without the lines that start with any of prefixes."""
    return "\r\n".join(l for l in sdp.splitlines() if not l.startswith(prefixes)) + "\r\n"


# Debian's chromium, headless with a fake camera; ICE on loopback (see tests/webrtc/test_chromium.py).
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
]


@contextlib.asynccontextmanager
async def chromium_page(extra_flags=()):
    """A page in a fresh headless Chromium (Playwright driving /usr/bin/chromium; never a downloaded one)."""
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + list(extra_flags),
                                       headless=True)
    try:
        yield await browser.new_page()
    finally:
        await browser.close()
        await pw.stop()


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

    async def joined(self, room_id: str, user: str, role: str) -> RoomClient:
        """A client of a new token that has joined the room."""
        c = self.client(room_id, user, role)
        await c.join()
        return c

    async def moderator_and_participant(self, room_id: str, names=("pub", "sub")) -> tuple[RoomClient, RoomClient]:
        """Two joined clients: a moderator (names[0]) and a participant (names[1])."""
        return (await self.joined(room_id, names[0], "moderator"), await self.joined(room_id, names[1], "participant"))

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


@contextlib.asynccontextmanager
async def video_pair(url: str, pub_token: str, sub_token: str, rgb):
    """A publisher of one colour track and a subscriber of everything, joined through the signaling at
    url (users "pub" and "sub"): yields (publisher, subscriber, the subscriber's track of that video,
    found by the publisher's user id) once it decoded 9 of 10 frames of the colour; closes both."""
    pub, sub = RoomClient(url, pub_token), RoomClient(url, sub_token)
    try:
        await pub.join()
        await sub.join()
        await pub.publish([ColorTrack(rgb)])
        await sub.subscribe()
        track = await sub.wait_track(await sub.wait_user_stream("pub", "video"))
        assert await receive_video(track, rgb, 10) >= 9
        yield pub, sub, track
    finally:
        await pub.close()
        await sub.close()


class Heights:
    """Decodes a received track in the background (so no backlog builds up while the test waits on the
    other one) and keeps (arrival time, picture height) of each frame."""

    def __init__(self, track):
        self.frames: list[tuple[float, int]] = []
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track):
        while True:
            frame = await track.recv()
            self.frames.append((time.monotonic(), frame.height))

    async def settle_on(self, height: int, timeout: float) -> float:
        """Wait until 5 frames in a row are `height` lines high; returns how long it took."""
        started = time.monotonic()
        while [h for _, h in self.frames[-5:]] != [height] * 5:
            assert time.monotonic() - started < timeout, \
                f"no {height}-line frames within {timeout} s: {[h for _, h in self.frames[-30:]]}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def leave_height(self, height: int, timeout: float) -> float:
        """Wait until 5 frames in a row are not `height` lines high; returns how long it took until the
        first of them arrived."""
        started = time.monotonic()
        count = len(self.frames)
        while len(self.frames) - count < 5 or height in [h for _, h in self.frames[-5:]]:
            assert time.monotonic() - started < timeout, \
                f"still {height}-line frames after {timeout} s: {[h for _, h in self.frames[-30:]]}"
            await asyncio.sleep(0.05)
        return self.frames[-5][0] - started

    def longest_gap(self, since: float) -> float:
        times = [since] + [t for t, _ in self.frames if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:]))

    def stop(self):
        self._task.cancel()


def candidate_address(sdp: str) -> tuple[str, int]:
    """The (host, port) of the first candidate in an SDP of the node's: its media address."""
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            f = line.split(" ")
            return f[4], int(f[5])
    raise AssertionError("no candidate in the node's SDP")


def node_media_address(client: RoomClient) -> tuple[str, int]:
    """The node's media address as its last offer to client's subscribe transport announced it."""
    return candidate_address(client.subscribe_pc.remoteDescription.sdp)


async def demo_publisher(page, base: str, token: str) -> str:
    """Open the demo page with token and wait until it publishes; returns its participant id."""
    await page.goto(f"{base}/demo?token={token}")
    await page.wait_for_function("window.enxDemo && window.enxDemo.published", timeout=20000)
    return await page.evaluate("window.enxDemo.room.joined.participant_id")


async def page_media_address(page) -> tuple[str, int]:
    """The node's media address as its answer to a demo page's publish transport announced it."""
    return candidate_address(await page.evaluate("window.enxDemo.room.publishPc.remoteDescription.sdp"))


async def demo_video_stream(page, participant_id: str) -> str:
    """The stream_id of participant_id's video as a demo page knows it."""
    return await page.evaluate("""(pid) => [...window.enxDemo.room.streams.values()].find((s) =>
        s.participant_id === pid && s.kind === "video").stream_id""", participant_id)


# In a demo page: the picture height of the frames its subscribe transport decodes of a stream (0: none yet)
# frames the demo page has decoded of a stream (its inbound-rtp stats)
FRAMES_DECODED = """async (streamId) => { const room = window.enxDemo.room;
  const track = room.remoteTracks.get(streamId); let n = 0;
  (await room.subscribePc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video" && r.trackIdentifier === track.id) n = r.framesDecoded || 0; });
  return n; }"""

INBOUND_HEIGHT = """async (streamId) => { const room = window.enxDemo.room;
  const track = room.remoteTracks.get(streamId); let h = 0;
  (await room.subscribePc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video" && r.trackIdentifier === track.id) h = r.frameHeight || 0; });
  return h; }"""
