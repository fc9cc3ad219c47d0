"""Imports go one way: web -> signaling -> room -> sfu / webrtc / mcu -> native (mcu is also where the
active-speaker choice lives, which group rooms use too). The control plane (control,
store) never imports media code; only the SFU and MCU layers import the native core; nothing but the CLI
imports web. Also: only config reads the environment, and library code never prints."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "enx_media"

# layer of a module (first package under enx_media, or the module name) -> layers it may import
ALLOWED = {
    "cli": {"web", "engine", "config", "control", "store", "errors", "__init__"},  # assembles the node
    "web": {"engine", "config", "control", "signaling", "errors"},
    "engine": {"config", "control", "store", "events", "errors", "room", "signaling", "webrtc", "recording"},
    "signaling": {"room", "sfu", "webrtc", "errors", "limits"},
    "room": {"sfu", "webrtc", "mcu", "recording", "control", "events", "errors", "limits"},
    "sfu": {"_native"},
    "mcu": {"_native"},
    "recording": {"mcu", "control", "store", "events", "errors"},   # the recorder: taps (via room), jitter buffers, muxing
    "webrtc": {"sfu", "errors"},
    "control": {"store", "events", "errors", "webhook"},
    "store": set(),
    "events": set(),
    "config": {"errors", "limits"},
    "limits": set(),
    "errors": set(),
    "client": set(),
    "webhook": set(),          # the signature helper app servers import (it imports nothing of the node)
    "__init__": {"config", "engine", "errors"},
    "__main__": {"cli"},
}


def _modules():
    for path in PKG.rglob("*.py"):
        yield path, ast.parse(path.read_text(), str(path))


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_layers(path: Path, tree: ast.AST):
    """(layer, full name) of every enx_media module imported, relative or absolute."""
    here = list(path.relative_to(PKG).parent.parts)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                mod = (node.module or "").split(".") if node.module else []
                parts = base + mod
                if not parts:  # "from . import x" at the package top: a module, or the package's own
                    first = node.names[0].name
                    parts = [first if (PKG / f"{first}.py").exists() or (PKG / first).is_dir() else "__init__"]
                names = ["enx_media." + ".".join(parts)]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "enx_media" and len(parts) > 1:
                yield parts[1], name
            elif parts[0] in ("starlette", "uvicorn"):
                yield "web-framework", name


def test_imports_follow_the_layers():
    problems = []
    for path, tree in _modules():
        layer = _layer(path)
        for target, name in _imported_layers(path, tree):
            if target == layer:
                continue
            if target == "web-framework":
                if layer not in ("web", "cli"):
                    problems.append(f"{path.relative_to(PKG)} imports {name}")
                continue
            if target not in ALLOWED.get(layer, set()):
                problems.append(f"{path.relative_to(PKG)} ({layer}) imports {name} ({target})")
    assert not problems, "\n".join(problems)


def test_only_the_sfu_and_mcu_layers_import_the_native_core():
    """The SFU drives the packet core; the MCU calls its compositing and mixing kernels."""
    for path, tree in _modules():
        for target, name in _imported_layers(path, tree):
            if target == "_native":
                assert _layer(path) in ("sfu", "mcu"), f"{path} imports {name}"


def test_the_layer_table_covers_every_module():
    layers = {_layer(p) for p, _ in _modules()} - {"_native"}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_only_config_reads_environment():
    for path, tree in _modules():
        if path.name == "config.py":
            continue
        src = path.read_text()
        assert "os.environ" not in src and "getenv" not in src, path


def test_library_code_does_not_print():
    for path, tree in _modules():
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                raise AssertionError(f"print() in {path}:{node.lineno}")
