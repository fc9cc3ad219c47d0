"""enx_media/_native/_core.pyi matches the built packet core (mypy's stubtest).

stubtest imports the compiled module and compares every public name, signature (parameter names,
kinds, defaults), property and constant with the stub; without --ignore-missing-stub it also fails on
anything the module exposes that the stub leaves out, so a new def/property in ext/*.pxi needs its
line in the stub.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = "enx_media._native._core"


def _have_stubtest() -> bool:
    try:
        return importlib.util.find_spec("mypy.stubtest") is not None
    except ImportError:  # no "mypy" package at all
        return False


def test_stub_ships_beside_the_module():
    import enx_media._native._core as core

    assert (Path(core.__file__).parent / "_core.pyi").is_file()


@pytest.mark.skipif(not _have_stubtest(), reason="mypy is not installed (pip install mypy): stubtest unavailable")
def test_stub_matches_native_module(tmp_path):
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy_cache"))
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", MODULE], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, "stubtest found differences:\n" + r.stdout + r.stderr
