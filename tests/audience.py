"""A lecture's audience as a process of its own (so its decoding is not the test process's CPU): `python
tests/audience.py '<plan JSON>'` joins one aiortc RoomClient per token, subscribes, waits for the lecture's
composite, asks for it at plan["height"] lines, and decodes it until a frame of plan["size"] shows
plan["colours"] in their grid tiles (within plan["seconds"]); it also counts the mix's audio frames. Prints one
JSON line: per client {"ok", "audio_frames", "error", "protocol_errors"}. Everything goes to 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enx_media.client import RoomClient  # noqa: E402
from enx_media.room.lecture import MCU_ID  # noqa: E402
from media_util import composite_shows  # noqa: E402


async def watch(url: str, token: str, plan: dict) -> dict:
    client = RoomClient(url, token, timeout=plan["seconds"], validate=True)
    out = {"ok": False, "audio_frames": 0, "error": None, "protocol_errors": client.protocol_errors}
    try:
        await client.join()
        await client.subscribe()
        composite = await client.wait_stream(MCU_ID, "video", source="composite")
        await client.stream_settings(composite, max_height=plan["height"])
        track = await client.wait_track(composite)
        await composite_shows(track, [tuple(c) for c in plan["colours"]], size=tuple(plan["size"]),
                              timeout=plan["seconds"])
        mix = await client.wait_track(await client.wait_stream(MCU_ID, "audio", source="mix"))
        for _ in range(25):
            await asyncio.wait_for(mix.recv(), 5)
            out["audio_frames"] += 1
        out["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported to the test, which says what failed
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await client.leave()
    return out


async def run(plan: dict) -> list[dict]:
    return list(await asyncio.gather(*(watch(plan["url"], t, plan) for t in plan["tokens"])))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
