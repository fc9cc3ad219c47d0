"""The `enx-media` command: run the node, and manage apps, rooms and tokens from the shell.

The helpers (apps, rooms, token) work directly on the node's data directory, so they are usable
whether the node is running or not (SQLite WAL lets both write).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import SETTINGS, Settings, load_settings
from .engine import Engine
from .errors import EnxError

if TYPE_CHECKING:
    import socket


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flag > environment variable > TOML file > default)")
    group.add_argument("--config", dest="config_file", metavar="PATH",
                       help="TOML file with settings (keys as below, or under an [enx_media] table); env ENX_CONFIG")
    for s in SETTINGS:
        extra: dict[str, Any] = {} if s.bare is None else {"nargs": "?", "const": s.bare}
        group.add_argument("--" + s.name.replace("_", "-"), dest=s.name, type=s.kind, default=None,
                           metavar=s.kind.__name__.upper(), **extra,
                           help=f"{s.help} (env {s.env}, default {s.default!r})")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enx-media", description="WebRTC media node and video control plane")
    parser.add_argument("--version", action="version", version=f"enx-media {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node (REST API, signaling, media)")
    _add_settings_flags(serve)

    apps = sub.add_parser("apps", help="app credentials").add_subparsers(dest="action", required=True)
    create = apps.add_parser("create", help="create an app and print its App ID and App Key")
    create.add_argument("--name", default="default")
    create.add_argument("--json", action="store_true", help="print one JSON line with app_id and app_key")
    _add_settings_flags(create)
    lst = apps.add_parser("list", help="list apps")
    lst.add_argument("--json", action="store_true")
    _add_settings_flags(lst)

    rooms = sub.add_parser("rooms", help="rooms of an app").add_subparsers(dest="action", required=True)
    rc = rooms.add_parser("create", help="create a room")
    rc.add_argument("--app-id", required=True)
    rc.add_argument("--name", required=True)
    rc.add_argument("--mode", default="group", choices=["group", "lecture", "p2p"])
    rc.add_argument("--body", help="full JSON request body instead of --name/--mode")
    _add_settings_flags(rc)
    rl = rooms.add_parser("list", help="list rooms")
    rl.add_argument("--app-id", required=True)
    _add_settings_flags(rl)
    rg = rooms.add_parser("get", help="show a room")
    rg.add_argument("--app-id", required=True)
    rg.add_argument("room_id")
    _add_settings_flags(rg)
    rd = rooms.add_parser("delete", help="delete a room")
    rd.add_argument("--app-id", required=True)
    rd.add_argument("room_id")
    _add_settings_flags(rd)

    tok = sub.add_parser("token", help="room tokens").add_subparsers(dest="action", required=True)
    tc = tok.add_parser("create", help="issue a token for a room")
    tc.add_argument("--app-id", required=True)
    tc.add_argument("--room-id", required=True)
    tc.add_argument("--user-id", required=True)
    tc.add_argument("--name")
    tc.add_argument("--role", default="participant", choices=["moderator", "participant", "viewer"])
    tc.add_argument("--ttl", type=int)
    _add_settings_flags(tc)
    tv = tok.add_parser("verify", help="verify a token and print its claims")
    tv.add_argument("token")
    tv.add_argument("--room-id")
    _add_settings_flags(tv)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    flags["config_file"] = getattr(args, "config_file", None)
    return load_settings(flags)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=None if not sys.stdout.isatty() else 2))


def _serve(settings: Settings) -> int:
    import uvicorn

    from .web import create_app

    class NodeServer(uvicorn.Server):
        """uvicorn closes WebSockets (1012) before the app's lifespan shutdown runs: the sessions end
        first here, so clients get session-ended and the node's own close."""

        def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
            super().__init__(config)
            self.engine = engine

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await self.engine.stop_media()
            await super().shutdown(sockets=sockets)

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = Engine(settings)
    first = engine.ensure_first_app()
    if first:
        print("First start: created an app. keep these, the key is shown only once:", flush=True)
        print(f"  App ID:  {first.app_id}", flush=True)
        print(f"  App Key: {first.app_key}", flush=True)
    app = create_app(settings, engine)
    try:
        import uvloop  # noqa: F401 - stdlib asyncio receives ~4x fewer datagrams/s (DESIGN.md)
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(f"enx-media {__version__} serving http://{settings.http_host}:{settings.http_port} "
          f"(data {settings.data_dir})", flush=True)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, loop=loop,
                            log_level=settings.log_level, access_log=False, lifespan="on",
                            # signaling messages are small (an SDP is a few KiB); pings find dead clients
                            ws_max_size=1024 * 1024, ws_ping_interval=15.0, ws_ping_timeout=15.0)
    NodeServer(config, engine).run()
    engine.close()
    return 0



def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if args.command == "serve":
        return _serve(settings)
    engine = Engine(settings)
    try:
        return _run_helper(args, engine)
    except EnxError as exc:
        print(f"error {exc.code} ({exc.reason}): {exc.desc}", file=sys.stderr)
        return 1
    finally:
        engine.close()


def _run_helper(args: argparse.Namespace, engine: Engine) -> int:
    if args.command == "apps" and args.action == "create":
        creds = engine.apps.create(args.name)
        if args.json:
            print(json.dumps({"app_id": creds.app_id, "app_key": creds.app_key, "name": creds.name}))
        else:
            print(f"App ID:  {creds.app_id}\nApp Key: {creds.app_key}")
        return 0
    if args.command == "apps" and args.action == "list":
        apps = [{"app_id": a.app_id, "name": a.name} for a in engine.apps.list()]
        if args.json:
            print(json.dumps(apps))
        else:
            for a in apps:
                print(f"{a['app_id']}  {a['name']}")
        return 0
    if args.command == "rooms":
        if engine.apps.get(args.app_id) is None:
            print(f"error: no app {args.app_id!r}", file=sys.stderr)
            return 1
        if args.action == "create":
            body = json.loads(args.body) if args.body else {"name": args.name, "mode": args.mode}
            _print(engine.rooms.create(args.app_id, body).to_json())
        elif args.action == "list":
            _, rooms = engine.rooms.list(args.app_id, 0, 10**6)
            _print([r.to_json() for r in rooms])
        elif args.action == "get":
            _print(engine.rooms.get(args.app_id, args.room_id).to_json())
        elif args.action == "delete":
            engine.rooms.delete(args.app_id, args.room_id)
            print(f"deleted {args.room_id}")
        return 0
    if args.command == "token" and args.action == "create":
        app = engine.apps.get(args.app_id)
        if app is None:
            print(f"error: no app {args.app_id!r}", file=sys.stderr)
            return 1
        room = engine.rooms.get(app.app_id, args.room_id)
        body = {"user_id": args.user_id, "role": args.role}
        if args.name:
            body["user_name"] = args.name
        if args.ttl:
            body["ttl"] = args.ttl
        print(engine.tokens.issue(app, room, body).token)
        return 0
    if args.command == "token" and args.action == "verify":
        claims = engine.tokens.verify(args.token, room_id=args.room_id)
        _print(claims.__dict__)
        return 0
    raise AssertionError(f"unhandled command {args.command} {args.action}")
