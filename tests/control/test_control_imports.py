"""The control plane and the store stand alone: no media code (sfu, webrtc, signaling, room, mcu, _native)
and no web layer, so an embedding server or the CLI can use them without either."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "enx_media"
FORBIDDEN = {"sfu", "webrtc", "signaling", "room", "mcu", "_native", "web", "engine", "starlette", "uvicorn",
             "aiortc"}


def test_control_and_store_import_no_media_and_no_web():
    for package in ("control", "store"):
        for path in sorted((PKG / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    parts = set(name.split("."))
                    assert not parts & FORBIDDEN, f"{package}/{path.name}:{node.lineno} imports {name}"
