"""HTTP layer: the Starlette app over the engine."""
from .app import create_app

__all__ = ["create_app"]
