"""Fixtures of the native tests."""
import pytest

from enx_media.sfu import Worker


@pytest.fixture
def worker():
    w = Worker("127.0.0.1", 0)
    yield w
    w.stop()
