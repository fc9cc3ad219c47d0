"""HTTP layer: the Starlette app over the engine."""
from .app import create_app, signaling_endpoint

__all__ = ["create_app", "signaling_endpoint"]
