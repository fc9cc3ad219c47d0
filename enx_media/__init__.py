"""enx-media: a WebRTC media engine and EnableX-style video control plane in one package."""
from .config import Settings, load_settings
from .engine import Engine
from .errors import EnxError, TokenError

__version__ = "0.1.0"
__all__ = ["Engine", "EnxError", "Settings", "TokenError", "load_settings", "__version__"]
