"""The README's embedding examples, run as they are written there: each is taken out of README.md into
a file, served in its own process on 127.0.0.1 (FastAPI under uvicorn, aiohttp by itself), and two
aiortc clients exchange video through its signaling route."""
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enx_media import Engine, Settings
from media_util import COLORS, video_pair
from node_util import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example(name: str) -> str:
    """The ```python block of README.md whose first line is `# <name>...`."""
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        if block.startswith(f"# {name}"):
            return block
    raise AssertionError(f"README.md has no example {name}")


@pytest.mark.parametrize("example, command, rtc_path", [
    ("embed_fastapi.py", [sys.executable, "-m", "uvicorn", "embed_fastapi:app", "--host", "127.0.0.1", "--port"], "/rtc"),
    ("embed_aiohttp.py", [sys.executable, "embed_aiohttp.py"], "/rtc"),
])
def test_readme_example_serves_signaling_and_media(tmp_path, example, command, rtc_path):
    (tmp_path / example).write_text(readme_example(example))
    data = tmp_path / "data"
    engine = Engine(Settings(data_dir=str(data)))
    creds = engine.apps.create("readme")
    room = engine.rooms.create(creds.app_id, {"name": "readme", "mode": "group"})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENX_")}
    env.update(ENX_DATA_DIR=str(data), ENX_MEDIA_PORT="0", PORT=str(port))
    argv = command + [str(port)] if command[-1] == "--port" else command
    log = open(tmp_path / "host.log", "wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if example == "embed_aiohttp.py":   # its own token endpoint
            def token(user, role):
                return httpx.get(base + "/token", params={"app_id": creds.app_id, "room_id": room.room_id,
                                                          "user": user, "role": role}).json()["token"]
        else:                                # the node's REST API, mounted under /enx
            rest = httpx.Client(base_url=base + "/enx/video/v2", auth=(creds.app_id, creds.app_key))

            def token(user, role):
                return rest.post(f"/rooms/{room.room_id}/tokens", json={"user_id": user, "role": role}).json()["token"]

        async def scenario():
            url = base.replace("http://", "ws://") + rtc_path
            async with video_pair(url, token("pub", "moderator"), token("sub", "participant"),
                                  COLORS[3]) as (pub, sub, _):             # the track found by user id
                assert await pub.wait_participant("sub") == sub.participant_id

        asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        engine.close()
        print((tmp_path / "host.log").read_text()[-2000:])


def test_readme_examples_type_check(tmp_path):
    """The README's module-level examples pass mypy against the package (the engine's API as written)."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy)")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "await " not in b.split(
        "async def")[0]]                      # module code: no top-level await (that one is a REPL sketch)
    assert len(blocks) >= 3, "the engine, FastAPI and aiohttp examples"
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme_example_{i}.py"
        path.write_text(block)
        files.append(str(path))
    run = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *files],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
