"""Imports go one way (web -> engine -> native), only config reads the environment, and library code
never prints."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "enx_media"


def _modules():
    for path in PKG.rglob("*.py"):
        yield path, ast.parse(path.read_text(), str(path))


def test_engine_does_not_import_web():
    for path, tree in _modules():
        if "web" in path.relative_to(PKG).parts:
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                if path.name == "cli.py":
                    continue  # the command line assembles the node, web included
                assert "web" not in name.split(".") and "starlette" not in name and "uvicorn" not in name, \
                    f"{path.name} imports {name}"


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
