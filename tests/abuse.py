"""Abusive clients for the abuse tests, run as a process of their own (so their CPU is not the honest
peers' in the test process): `python tests/abuse.py '<plan JSON>'` runs every flood the plan names at
once for plan["seconds"], then prints one JSON line of what each did.

Plan keys (all optional but seconds and url):
  chat:    {"tokens": [...], "size": 4000}      joined sockets sending chats as fast as the node answers
  publish: {"tokens": [...]}                    joined sockets sending publish offers (one track, and 20 m-lines)
  joins:   {"tokens": [...]}                    join / leave in a loop with these tokens, plus forged ones
  junk_udp: {"port": N, "rate": packets per second}   malformed datagrams at the media port
Everything goes to 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time

import websockets


async def _joined(url: str, token: str):
    ws = await websockets.connect(url, max_size=None)
    await ws.send(json.dumps({"type": "join", "token": token}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "joined", reply
    return ws


async def _drain(ws, counts: dict[str, int], until: float) -> None:
    """Count what the node answers, by type (errors by reason); "closed by node" if it closed first."""
    try:
        async for frame in ws:
            msg = json.loads(frame)
            key = msg.get("error", msg["type"]) if msg["type"] == "error" else msg["type"]
            counts[key] = counts.get(key, 0) + 1
    except websockets.ConnectionClosed:
        pass
    if time.monotonic() < until:
        counts["closed by node"] = counts.get("closed by node", 0) + 1


async def chat_flood(url: str, token: str, size: int, until: float, counts: dict[str, int]) -> None:
    ws = await _joined(url, token)
    reader = asyncio.ensure_future(_drain(ws, counts, until))
    text = "x" * size
    n = 0
    while time.monotonic() < until and not reader.done():
        await ws.send(json.dumps({"type": "chat", "id": n, "text": text}))
        n += 1
        if n % 50 == 0:
            await asyncio.sleep(0)
    counts["sent"] = counts.get("sent", 0) + n
    await ws.close()
    await reader


def _offers() -> tuple[str, str]:
    """A one-track publish offer and a 20-m-line one, made by aiortc."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    async def make(tracks: int) -> str:
        pc = RTCPeerConnection()
        for _ in range(tracks):
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    async def both() -> tuple[str, str]:
        return await make(1), await make(20)
    return asyncio.run(both())


async def publish_flood(url: str, token: str, offers: tuple[str, str], until: float, counts: dict[str, int]) -> None:
    ws = await _joined(url, token)
    reader = asyncio.ensure_future(_drain(ws, counts, until))
    n = 0
    while time.monotonic() < until and not reader.done():
        await ws.send(json.dumps({"type": "publish", "id": n, "sdp": offers[n % 2]}))
        n += 1
        await asyncio.sleep(0.005)
    counts["sent"] = counts.get("sent", 0) + n
    await ws.close()
    await reader


async def join_flood(url: str, tokens: list[str], until: float, counts: dict[str, int]) -> None:
    n = 0
    while time.monotonic() < until:
        token = tokens[n % len(tokens)] if n % 3 else "eyJhbGciOiJub25lIn0.eyJyb29tIjoieCJ9."   # forged 1 in 3
        n += 1
        try:
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "join", "token": token}))
                reply = json.loads(await ws.recv())
                counts[reply["type"]] = counts.get(reply["type"], 0) + 1
                if reply["type"] == "joined":
                    await ws.send(json.dumps({"type": "leave"}))
        except (websockets.ConnectionClosed, OSError):
            counts["closed"] = counts.get("closed", 0) + 1
    counts["sent"] = n


async def junk_udp(port: int, rate: int, until: float, counts: dict[str, int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    kinds = [lambda: os.urandom(60),                                         # nothing at all
             lambda: b"\x80\x60" + os.urandom(10) + os.urandom(1100),       # RTP of an unknown SSRC
             lambda: b"\x00\x01\x00\x08\x21\x12\xa4\x42" + os.urandom(20),  # a STUN request, bad attributes
             lambda: b"\x16\xfe\xfd" + os.urandom(80),                      # a DTLS record from nowhere
             lambda: b"\x81\xc8\x00\x06" + os.urandom(24)]                  # RTCP SR, nobody's
    sent = 0
    start = time.monotonic()
    while time.monotonic() < until:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            try:
                sock.sendto(kinds[sent % len(kinds)](), ("127.0.0.1", port))
            except BlockingIOError:
                break
            sent += 1
        await asyncio.sleep(0.002)
    counts["sent"] = sent
    sock.close()


async def run(plan: dict) -> dict:
    until = time.monotonic() + plan["seconds"]
    url = plan["url"]
    report: dict[str, dict[str, int]] = {}
    jobs = []
    if "chat" in plan:
        report["chat"] = {}
        jobs += [chat_flood(url, t, plan["chat"].get("size", 4000), until, report["chat"]) for t in plan["chat"]["tokens"]]
    if "publish" in plan:
        report["publish"] = {}
        offers = await asyncio.to_thread(_offers)
        jobs += [publish_flood(url, t, offers, until, report["publish"]) for t in plan["publish"]["tokens"]]
    if "joins" in plan:
        report["joins"] = {}
        jobs.append(join_flood(url, plan["joins"]["tokens"], until, report["joins"]))
    if "junk_udp" in plan:
        report["junk_udp"] = {}
        jobs.append(junk_udp(plan["junk_udp"]["port"], plan["junk_udp"].get("rate", 5000), until, report["junk_udp"]))
    await asyncio.gather(*jobs)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
