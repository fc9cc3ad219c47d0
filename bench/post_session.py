#!/usr/bin/env python3
"""Time from a session's end to every post-session item ready (issue 12's measure), against a real node process
on 127.0.0.1 with a real webhook receiver: N aiortc participants in a room with transcription on (so it is
recorded) publish a 640x480 colour video and looped espeak-ng speech for S seconds, chat, and leave. Measured
from the last leave to the arrival of session.ended, chat.ready, cdr.ready, recording.ready and
transcript.ready (the last one is the speech engine working through N x S seconds of audio in its process).
Medians over repeats.

    .venv/bin/python bench/post_session.py --participants 2 --seconds 10,30 --repeats 3 --json bench/post_session.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiortc.contrib.media import MediaPlayer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench.mcu_kernels import cpu  # noqa: E402
from media_util import COLORS, Api, ColorTrack  # noqa: E402  (the tests' real-node harness)
from node_util import Node  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

ITEMS = ("session.ended", "chat.ready", "cdr.ready", "recording.ready", "transcript.ready")
SPEECH = "hello. this is a test of the recording. the weather today is sunny and warm."


async def session(api: Api, receiver: Receiver, secret: str, wav: Path, n: int, seconds: int) -> dict:
    room = api.room(settings={"mode": "group", "moderators": n, "transcription": True})
    clients = [await api.joined(room["room_id"], f"user{i}", "moderator") for i in range(n)]
    for i, c in enumerate(clients):
        await c.publish([ColorTrack(COLORS[i % len(COLORS)], (640, 480)), MediaPlayer(str(wav), loop=True).audio])
        await c.chat(f"hello from {i}")
    await asyncio.sleep(seconds)
    mark = len(receiver.requests)
    for c in clients[:-1]:
        await c.leave()
    ended = time.monotonic()              # the last leave ends the session
    await clients[-1].leave()
    got: dict[str, float] = {}
    deadline = ended + 600
    while len(got) < len(ITEMS) and time.monotonic() < deadline:
        for (at, _, body, status) in receiver.requests[mark:]:
            e = json.loads(body)
            if e.get("data", e).get("room_id") == room["room_id"] and e["type"] in ITEMS and e["type"] not in got:
                got[e["type"]] = at - ended
        await asyncio.sleep(0.05)
    return {k: round(got[k], 3) if k in got else None for k in ITEMS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=2)
    ap.add_argument("--seconds", default="10,30")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us+klatt3", "-s", "140", "-w", str(wav), SPEECH], check=True)
        node = Node(Path(tmp) / "node", ENX_WEBHOOK_ALLOW_LOOPBACK="on", ENX_WEBHOOK_RETRY_MS="100")
        node.data_dir.mkdir()
        creds = node.create_app("bench")
        node.start()
        receiver = Receiver()
        try:
            api = Api(node, creds)
            secret = api.http.post("/webhooks", json={"url": receiver.url}).json()["webhook"]["secret"]
            cases = []
            for seconds in (int(s) for s in args.seconds.split(",")):
                runs = []
                for r in range(args.repeats):
                    res = asyncio.run(session(api, receiver, secret, wav, args.participants, seconds))
                    runs.append(res)
                    print(f"{seconds} s session, repeat {r + 1}: seconds after the end {res}", flush=True)
                med = {k: statistics.median(x[k] for x in runs if x[k] is not None) for k in ITEMS}
                print(f"{seconds} s, medians of {args.repeats}: {med}", flush=True)
                cases.append({"seconds": seconds, "participants": args.participants, "medians_s": med, "runs": runs})
        finally:
            receiver.close()
            node.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu(), "command": " ".join(sys.argv), "cases": cases},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
