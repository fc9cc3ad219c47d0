"""SFU engine: the native worker (packet path) behind a thin Python face."""
from enx_media._native._core import (  # noqa: F401
    Consumer,
    Producer,
    SrtpContext,
    Transport,
    split_keying_material,
)
from enx_media.sfu.worker import Worker  # noqa: F401

__all__ = ["Worker", "Transport", "Producer", "Consumer", "SrtpContext", "split_keying_material"]
