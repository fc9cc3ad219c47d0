"""A real node process under test (uvicorn on 127.0.0.1 with its own data directory), the CLI run as a
subprocess, and REST helpers: what the fixtures in conftest.py and the API tests share."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENX_")}
    return subprocess.run([sys.executable, "-m", "enx_media", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, check=check, timeout=60)


class Node:
    """A node process under test. `restart()` stops and starts it on the same data directory."""

    def __init__(self, data_dir: Path, **env: str):
        self.extra_env = env
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.main_creds: tuple[str, str] | None = None   # an app made before the start (conftest)
        self.log_path = data_dir / "node.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENX_")}
        env.update(ENX_DATA_DIR=str(self.data_dir), ENX_HTTP_PORT=str(self.port), ENX_LOG_LEVEL=os.environ.get("ENX_TEST_NODE_LOG", "warning"),
                   ENX_MEDIA_PORT="0")  # the kernel picks a free UDP port; clients learn it from SDP
        env.update(self.extra_env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "enx_media", "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node exited:\n" + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("node did not answer /healthz:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_app(self, name: str = "test") -> tuple[str, str]:
        out = run_cli("apps", "create", "--json", "--name", name, data_dir=self.data_dir).stdout
        creds = json.loads(out.strip().splitlines()[-1])
        return creds["app_id"], creds["app_key"]

    def client(self, creds: tuple[str, str] | None, prefix: str = "/video/v2") -> httpx.Client:
        return httpx.Client(base_url=self.base + prefix, auth=creds, timeout=30)


def make_room(api: httpx.Client, **body) -> dict:
    body.setdefault("name", "room")
    r = api.post("/rooms", json=body)
    assert r.status_code == 201, r.text
    return r.json()["room"]
