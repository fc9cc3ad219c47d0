#!/usr/bin/env python3
"""A batch of real aiortc subscribers in a process of its own, for bench/real_fanout.py (the load generator
must not be the limit): `python bench/fanout_subscribers.py '<plan JSON>'` joins one RoomClient per token
through the node's signaling (ICE, DTLS, SRTP: real peers), subscribes, and counts what arrives.

Each subscriber's receivers keep aiortc's SRTP, RTP parsing, RTCP statistics (its receiver reports) and NACK
generation, and skip depayloading, jitter buffering and decoding: 300 decoders would measure this machine's
VP8 decoder, not the node. Per SSRC, packets and sequence gaps are counted (RTX repairs are not holes).

Lines on stdin drive it: "mark" snapshots the counters (the window's start and end), "stop" prints one JSON
line {"subscribers": [{ssrc: {"packets", "lost"}} between the two marks], "cpu_s": this process's CPU in
the window, "errors": [...]} and leaves. "joined" is printed once every client has its streams.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtpPacket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from enx_media.client import RoomClient  # noqa: E402
from enx_media.mcu.jitter import extend_seq  # noqa: E402


class Counter:
    """Packets and sequence gaps of one SSRC at one subscriber."""
    __slots__ = ("packets", "high", "seen_gaps")

    def __init__(self) -> None:
        self.packets = 0
        self.high: int | None = None
        self.seen_gaps = 0

    def add(self, seq16: int) -> None:
        seq = extend_seq(self.high, seq16)
        if self.high is not None and seq > self.high + 1:
            self.seen_gaps += seq - self.high - 1
        elif self.high is not None and seq <= self.high:
            self.seen_gaps = max(0, self.seen_gaps - 1)    # a late or retransmitted one fills a hole
        if self.high is None or seq > self.high:
            self.high = seq
        self.packets += 1


COUNTS: dict[int, dict[int, Counter]] = {}        # id(receiver's client) -> ssrc -> counter


def light_receiver() -> None:
    """aiortc's receive path up to the RTCP statistics and NACKs, without the decoder."""
    async def handle(self: Any, packet: RtpPacket, arrival_time_ms: int) -> None:
        counters = COUNTS.setdefault(getattr(self, "_bench_owner", 0), {})
        c = counters.get(packet.ssrc)
        if c is None:
            c = counters[packet.ssrc] = Counter()
        c.add(packet.sequence_number)
        codecs = self._RTCRtpReceiver__codecs
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        streams = self._RTCRtpReceiver__remote_streams
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        nack = self._RTCRtpReceiver__nack_generator
        if nack is not None and nack.add(packet):
            await self._send_rtcp_nack(packet.ssrc, sorted(nack.missing))

    RTCRtpReceiver._handle_rtp_packet = handle   # type: ignore[method-assign]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def main(plan: dict[str, Any]) -> None:
    light_receiver()
    clients = [RoomClient(plan["url"], token, timeout=60) for token in plan["tokens"]]
    errors: list[str] = []

    async def start(c: RoomClient) -> None:
        try:
            await c.join()
            await c.subscribe()
            for kind in ("video", "audio"):
                sid = await c.wait_stream(plan["publisher"], kind, timeout=60)
                await c.wait_track(sid)
            for t in c.subscribe_pc.getTransceivers():
                t.receiver._bench_owner = id(c)
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which says what failed
            errors.append(f"{type(exc).__name__}: {exc}")

    # a few at a time: the node's signaling and this process's handshakes both stay responsive
    for i in range(0, len(clients), 10):
        await asyncio.gather(*(start(c) for c in clients[i:i + 10]))
    print("joined", flush=True)
    loop = asyncio.get_running_loop()
    marks: list[tuple[float, dict[int, dict[int, tuple[int, int]]]]] = []
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "mark":
            marks.append((cpu_s(), {o: {s: (c.packets, c.seen_gaps) for s, c in per.items()}
                                    for o, per in COUNTS.items()}))
            print("marked", flush=True)
        elif line in ("stop", ""):
            break
    out: dict[str, Any] = {"errors": errors, "subscribers": [], "cpu_s": None}
    if len(marks) >= 2:
        (c0, a), (c1, b) = marks[0], marks[-1]
        out["cpu_s"] = round(c1 - c0, 3)
        for c in clients:
            per_b, per_a = b.get(id(c), {}), a.get(id(c), {})
            out["subscribers"].append({str(s): {"packets": pb - per_a.get(s, (0, 0))[0],
                                                "lost": max(0, gb - per_a.get(s, (0, 0))[1])}
                                       for s, (pb, gb) in per_b.items()})
    print(json.dumps(out), flush=True)
    for c in clients:
        try:
            await asyncio.wait_for(c.close(), 5)
        except Exception:  # noqa: BLE001 - leaving is best effort at the end of a run
            pass


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
