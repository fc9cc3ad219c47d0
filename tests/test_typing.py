"""The package type-checks: mypy over enx_media (the native module through its stub, _core.pyi)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors(tmp_path):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy)")
    run = subprocess.run([sys.executable, "-m", "mypy", "-p", "enx_media", "--cache-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
