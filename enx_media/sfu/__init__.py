"""The SFU: a Router per room with its Producer and Consumer handles, over the native Worker (the packet
path in enx_media._native, driven once per batch)."""
from .router import Consumer, Producer, Router
from .worker import MEDIA_EVENT_KINDS, MediaEvent, Worker

__all__ = ["Consumer", "MEDIA_EVENT_KINDS", "MediaEvent", "Producer", "Router", "Worker"]
