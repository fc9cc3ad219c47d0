"""The README's embedding recipe end to end: a host app (host_app.py) served by uvicorn in its own
process, the node's REST API mounted in it, two aiortc clients joining through the host's WebSocket
route, media decoded, the signaling safeguards (error budget before join) in force on that route."""
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from media_util import COLORS, video_pair
from node_util import free_port, run_cli

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def host(tmp_path, **env_extra):
    """host_app.py under uvicorn in its own process: (base URL, REST client, token maker for one room)."""
    creds = json.loads(run_cli("apps", "create", "--json", "--name", "host", data_dir=tmp_path).stdout.splitlines()[-1])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENX_")}
    env.update(HOST_DATA_DIR=str(tmp_path), **env_extra)
    log = open(tmp_path / "host.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "host_app:app", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(base + "/", timeout=1).text == "host app":
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        api = httpx.Client(base_url=base + "/enx/video/v2", auth=(creds["app_id"], creds["app_key"]), timeout=30)
        room = api.post("/rooms", json={"name": "embedded", "mode": "group"}).json()["room"]

        def token(user, role):
            return api.post(f"/rooms/{room['room_id']}/tokens", json={"user_id": user, "role": role}).json()["token"]

        yield base, api, room, token
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_host_app_serves_rest_signaling_and_media(tmp_path):
    with host(tmp_path) as (base, api, room, token):
        port = base.rsplit(":", 1)[1]

        async def scenario():
            ws_url = f"ws://127.0.0.1:{port}/rtc"
            async with video_pair(ws_url, token("pub", "moderator"), token("sub", "participant"), COLORS[1]):
                users = api.get(f"/rooms/{room['room_id']}/users").json()
                assert users["total"] == 2
            # the host's route has the node's safeguards: binary frames refused, errors before join counted
            async with websockets.connect(ws_url) as ws:
                await ws.send(b"\x00binary")
                assert json.loads(await ws.recv())["code"] == 1001
                for _ in range(25):
                    await ws.send("not json")
                with_close = None
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                except websockets.ConnectionClosed as exc:
                    with_close = exc.rcvd.code if exc.rcvd else None
                assert with_close == 4008

        asyncio.run(scenario())


def test_media_flows_while_the_host_loop_is_blocked(tmp_path):
    """The host's own route blocks its event loop for a second; the worker forwards on its own thread,
    so the subscriber's frames keep coming (with media on the loop the longest gap was the full 1 s)."""
    with host(tmp_path) as (base, api, room, token):
        ws_url = base.replace("http://", "ws://") + "/rtc"

        async def scenario():
            async with video_pair(ws_url, token("pub", "moderator"), token("sub", "participant"),
                                  COLORS[2]) as (_, _, track):
                loop = asyncio.get_running_loop()
                blocked = loop.run_in_executor(None, lambda: httpx.get(base + "/busy?s=1.5", timeout=10).text)
                arrivals = []
                while not blocked.done():
                    await asyncio.wait_for(track.recv(), 5)
                    arrivals.append(time.monotonic())
                assert await blocked == "done"
                gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
                assert len(arrivals) > 20 and max(gaps) < 0.5, (len(arrivals), max(gaps, default=None))

        asyncio.run(scenario())


async def consent_check(pc) -> float:
    """One RFC 7675 consent check as aioice's own consent task sends it, over the peer connection's
    nominated pair: seconds to the answer (aioice checks its integrity; TransactionError if none came)."""
    from aioice import stun

    conn = pc.getTransceivers()[0].receiver.transport.transport._connection
    pair = conn._nominated[1]
    start = time.monotonic()
    await pair.protocol.request(conn.build_request(pair, nominate=False), pair.remote_addr,
                                integrity_key=conn.remote_password.encode(), retransmissions=0)
    return time.monotonic() - start


def test_consent_checks_are_answered_while_the_host_loop_is_blocked(tmp_path):
    """The core answers a connected transport's consent checks itself: with the host's loop blocked for
    3 s a real aioice check is answered at once, so a long stall does not cost a peer its consent."""
    with host(tmp_path) as (base, api, room, token):
        ws_url = base.replace("http://", "ws://") + "/rtc"

        async def scenario():
            async with video_pair(ws_url, token("pub", "moderator"), token("sub", "participant"),
                                  COLORS[3]) as (_, sub, _track):
                loop = asyncio.get_running_loop()
                blocked = loop.run_in_executor(None, lambda: httpx.get(base + "/busy?s=3", timeout=10).text)
                await asyncio.sleep(0.5)                        # the host's loop is inside time.sleep now
                answers = [await consent_check(sub.subscribe_pc) for _ in range(3)]
                assert not blocked.done() and max(answers) < 0.5, answers
                assert await blocked == "done"

        asyncio.run(scenario())
