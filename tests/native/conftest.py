"""Fixtures of the native tests."""
import pytest

from enx_media.sfu import Worker


@pytest.fixture
def worker(request):
    """A Worker on 127.0.0.1; indirect parametrization (rtp_util.FANOUT) sets its fan-out threads."""
    w = Worker("127.0.0.1", 0, fanout_threads=getattr(request, "param", 1))
    yield w
    w.stop()
