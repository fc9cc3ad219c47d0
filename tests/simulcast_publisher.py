"""A simulcast publisher for tests, in Python: what a browser sends with three sendEncodings, with no browser.

aiortc has no simulcast, so its peer connection is used for what it does well (ICE, DTLS-SRTP, the
signaling offer) and this helper sends the media itself: one moving pattern, encoded three times with
aiortc's libvpx VP8 encoder at three sizes, each encoding on its own SSRC with the mid and rid header
extensions on every packet (the offer carries a=rid / a=simulcast:send and no a=ssrc lines, as Chromium's
does), protected by the connection's own SRTP. It answers the node as a browser would: a PLI or FIR makes a
key frame of that encoding, a NACK is resent from the encoding's history, a `layers` message (dynacast)
pauses or resumes encodings, and each encoding sends sender reports (their RTP timestamps start at random
offsets, so a switch at the node must use them). For bad input at switch points, `lose` and
`reorder_next_key_frame` spoil what goes out on one encoding.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpPsfbPacket, RtcpRtpfbPacket, RtcpSenderInfo, RtcpSrPacket

from enx_media._native import _core
from enx_media.client import RoomClient

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_ID = 10
SIZES = {"q": (160, 90), "h": (320, 180), "f": (640, 360)}
BITRATES = {"q": 100_000, "h": 250_000, "f": 600_000}
HISTORY = 600                 # packets per encoding kept for NACKs


class _Idle(MediaStreamTrack):
    """The peer connection's own sender gets a track that never yields a frame: the media is ours."""
    kind = "video"

    async def recv(self):  # type: ignore[override]
        await asyncio.Event().wait()


@dataclass
class Encoding:
    rid: str
    size: tuple[int, int]
    ssrc: int = field(default_factory=lambda: random.getrandbits(31) | 1)
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts_offset: int = field(default_factory=lambda: random.getrandbits(31))
    active: bool = True
    stopped: bool = False        # the test stopped it (an encoding that stops arriving)
    force_key: bool = True
    key_frames: int = 0
    packets: int = 0
    octets: int = 0
    last_ts: int = 0
    lose: int = 0                # the next `lose` packets are not sent (once; a NACK brings them)
    reorder_key: bool = False    # the next key frame's packets go out in reverse order
    history: dict[int, bytes] = field(default_factory=dict)
    encoder: Vp8Encoder = field(default_factory=Vp8Encoder)

    def __post_init__(self) -> None:
        self.encoder.target_bitrate = BITRATES.get(self.rid, 500_000)


class _RtcpSink:
    """Registered with the DTLS transport's RTCP router for one encoding's SSRC."""

    def __init__(self, publisher: "SimulcastPublisher", enc: Encoding) -> None:
        self.publisher, self.enc = publisher, enc

    async def _handle_rtcp_packet(self, packet) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (1, 4):      # PLI, FIR
            self.enc.force_key = True
            self.publisher.key_requests += 1
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == 1:        # NACK
            for seq in packet.lost:
                data = self.enc.history.get(seq & 0xFFFF)
                if data is not None:
                    self.publisher.retransmitted += 1
                    await self.publisher._send(data)


class SimulcastPublisher:
    def __init__(self, client: RoomClient, rids: tuple[str, ...] = ("q", "h", "f"), fps: int = 15) -> None:
        self.client, self.fps = client, fps
        self.encodings = [Encoding(rid, SIZES[rid]) for rid in rids]
        self.pc: RTCPeerConnection | None = None
        self.stream_id: str | None = None
        self.key_requests = self.retransmitted = 0
        self.layer_messages: list[list[bool]] = []
        self._tasks: list[asyncio.Task] = []
        self._dtls = None
        self._mid = ""
        self._pt = 96
        self._frame = 0
        self._start = 0.0

    def encoding(self, rid: str) -> Encoding:
        return next(e for e in self.encodings if e.rid == rid)

    async def start(self) -> None:
        pc = self.pc = RTCPeerConnection(self.client._config())
        transceiver = pc.addTransceiver(_Idle(), direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType == "video/VP8"])
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.client.request("publish", sdp=self._simulcast_offer(pc.localDescription.sdp))
        await pc.setRemoteDescription(RTCSessionDescription(self.client._remote_sdp(reply["sdp"]), "answer"))
        self.client.publish_pcs.append(pc)
        self._mid = transceiver.mid or "0"
        self._dtls = transceiver.sender.transport
        deadline = time.monotonic() + 10
        while self._dtls.state != "connected":
            assert time.monotonic() < deadline, "publish transport did not connect"
            await asyncio.sleep(0.02)
        for enc in self.encodings:
            self._dtls._rtp_router.register_sender(_RtcpSink(self, enc), enc.ssrc)
        self._tasks = [asyncio.ensure_future(self._run()), asyncio.ensure_future(self._follow_layers()),
                       asyncio.ensure_future(self._sender_reports())]

    def _simulcast_offer(self, sdp: str) -> str:
        """aiortc's offer, made a browser's simulcast offer: no a=ssrc lines, the rid extension, a=rid and
        a=simulcast:send for our encodings (lowest first), VP8 only."""
        out = []
        for line in sdp.splitlines():
            if line.startswith(("a=ssrc:", "a=ssrc-group:")):
                continue
            if line.startswith("a=rtpmap:") and "VP8/90000" in line:
                self._pt = int(line.split(":")[1].split()[0])
            out.append(line)
            if line.startswith("a=extmap:") and MID_URI in line:
                out.append(f"a=extmap:{RID_ID} {RID_URI}")
        rids = [e.rid for e in self.encodings]
        out += [f"a=rid:{r} send" for r in rids] + [f"a=simulcast:send {';'.join(rids)}"]
        self._mid_id = next(int(x.split()[0].split(":")[1]) for x in out if x.startswith("a=extmap:") and MID_URI in x)
        return "\r\n".join(out) + "\r\n"

    async def _send(self, data: bytes) -> None:
        try:
            await self._dtls._send_rtp(data)
        except ConnectionError:
            pass

    def _picture(self, n: int) -> np.ndarray:
        """The moving pattern at full size: a bright bar sweeping across a gradient, in RGB."""
        w, h = SIZES["f"]
        img = np.empty((h, w, 3), np.uint8)
        img[:, :, 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        img[:, :, 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
        img[:, :, 2] = 96
        x = (n * 8) % w
        img[:, x:x + 24, :] = 255
        return img

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = self._start = time.monotonic()
        while True:
            n = self._frame
            self._frame += 1
            full = av.VideoFrame.from_ndarray(self._picture(n), format="rgb24")
            for enc in self.encodings:
                if not enc.active or enc.stopped:
                    continue
                frame = full.reformat(width=enc.size[0], height=enc.size[1], format="yuv420p")
                frame.pts, frame.time_base = n, Fraction(1, self.fps)
                key, enc.force_key = enc.force_key, False
                payloads, ts = await loop.run_in_executor(None, enc.encoder.encode, frame, key)
                await self._send_frame(enc, payloads, ts, key)
            await asyncio.sleep(max(0.0, start + self._frame / self.fps - time.monotonic()))

    async def _send_frame(self, enc: Encoding, payloads: list[bytes], ts: int, key: bool) -> None:
        ext_prof, ext_val = _core.pack_header_extensions([(self._mid_id, self._mid.encode()),
                                                          (RID_ID, enc.rid.encode())])
        packets = []
        for i, payload in enumerate(payloads):
            enc.last_ts = (ts + enc.ts_offset) & 0xFFFFFFFF
            data = _core.write_rtp(payload_type=self._pt, sequence_number=enc.seq, timestamp=enc.last_ts,
                                   ssrc=enc.ssrc, payload=payload, marker=int(i == len(payloads) - 1),
                                   extension_profile=ext_prof, extension_value=ext_val)
            enc.history[enc.seq] = data
            enc.history.pop((enc.seq - HISTORY) & 0xFFFF, None)
            enc.seq = (enc.seq + 1) & 0xFFFF
            enc.packets += 1
            enc.octets += len(payload)
            packets.append(data)
        if key:
            enc.key_frames += 1
            if enc.reorder_key:
                enc.reorder_key = False
                packets.reverse()
        for data in packets:
            if enc.lose > 0:
                enc.lose -= 1
                continue
            await self._send(data)

    async def send_unknown_rid(self, count: int, rid: str = "zz") -> None:
        """Packets of an encoding the offer never listed (its own SSRC, rid `rid`): bad input."""
        ssrc = random.getrandbits(31) | 1
        ext_prof, ext_val = _core.pack_header_extensions([(self._mid_id, self._mid.encode()),
                                                          (RID_ID, rid.encode())])
        for i in range(count):
            await self._send(_core.write_rtp(payload_type=self._pt, sequence_number=i, timestamp=i * 6000,
                                             ssrc=ssrc, payload=b"\x10\x00" + bytes(200), marker=1,
                                             extension_profile=ext_prof, extension_value=ext_val))

    async def _sender_reports(self) -> None:
        """An SR per encoding each second: NTP wall clock against that encoding's RTP clock now."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            ntp = (int(now + 2208988800) << 32) | int((now % 1) * (1 << 32))
            for enc in self.encodings:
                if enc.packets and enc.active and not enc.stopped:
                    rtp_now = (self._rtp_clock_now() + enc.ts_offset) & 0xFFFFFFFF
                    info = RtcpSenderInfo(ntp_timestamp=ntp, rtp_timestamp=rtp_now, packet_count=enc.packets,
                                          octet_count=enc.octets)
                    await self._send(bytes(RtcpSrPacket(ssrc=enc.ssrc, sender_info=info)))

    def _rtp_clock_now(self) -> int:
        """The 90 kHz timestamp a frame taken now would have (frame n goes at start + n / fps with pts n)."""
        return int((time.monotonic() - self._start) * 90000)

    async def _follow_layers(self) -> None:
        """Dynacast: the node's `layers` messages for this stream pause and resume encodings."""
        while True:
            msg = await self.client.next_event("layers", timeout=3600)
            if self.stream_id is not None and msg.get("stream_id") != self.stream_id:
                continue
            self.layer_messages.append(list(msg["active"]))
            for enc, on in zip(self.encodings, msg["active"]):
                if on and not enc.active:
                    enc.force_key = True
                enc.active = bool(on)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
