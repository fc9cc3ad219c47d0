"""Node settings: one typed object. The only module that reads the environment.

Precedence, highest first: command-line flags, environment variables, the TOML file, defaults.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .limits import DEFAULT_RATE_LIMITS, Limits, parse_rate_limits

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    kind: type
    default: Any
    help: str
    bare: str | None = None


def _setting(default: Any, env: str, help: str, bare: str | None = None) -> Any:
    """bare: the value of the flag given without one (``--demo`` alone)."""
    return field(default=default, metadata={"env": env, "help": help, "bare": bare})


@dataclass
class Settings:
    """The single list of settings: flags, env vars, TOML keys, defaults and --help text all come from
    these fields (``SETTINGS`` below is derived from them)."""

    data_dir: str = _setting("./enx-data", "ENX_DATA_DIR",
                             "directory holding the SQLite database and post-session files")
    http_host: str = _setting("127.0.0.1", "ENX_HTTP_HOST", "address the REST/WebSocket server binds")
    http_port: int = _setting(8080, "ENX_HTTP_PORT", "TCP port of the REST/WebSocket server")
    media_port: int = _setting(7882, "ENX_MEDIA_PORT", "UDP port of the media worker (ICE-lite, DTLS, SRTP)")
    media_host: str = _setting("127.0.0.1", "ENX_MEDIA_HOST", "address the media UDP socket binds")
    announced_ip: str = _setting("127.0.0.1", "ENX_ANNOUNCED_IP",
                                 "IP announced in ICE candidates (the address clients send media to)")
    media_thread: str = _setting("on", "ENX_MEDIA_THREAD",
                                 "forward media on a thread of its own (on: media keeps flowing while the asyncio "
                                 "loop is busy) or on the asyncio loop (off)")
    consent_timeout: int = _setting(30, "ENX_CONSENT_TIMEOUT",
                                    "seconds without a valid STUN check before a WebRTC transport is closed "
                                    "(RFC 7675: 30)")
    token_ttl: int = _setting(86400, "ENX_TOKEN_TTL", "default token lifetime in seconds")
    token_max_ttl: int = _setting(7 * 86400, "ENX_TOKEN_MAX_TTL", "longest token lifetime a request may ask for")
    scheduled_token_lead: int = _setting(900, "ENX_SCHEDULED_TOKEN_LEAD",
                                         "seconds before a scheduled room's window when tokens start being issued")
    max_body_bytes: int = _setting(64 * 1024, "ENX_MAX_BODY_BYTES", "largest accepted request body (413 above)")
    log_level: str = _setting("info", "ENX_LOG_LEVEL", "logging level: debug, info, warning, error")
    demo: str = _setting("off", "ENX_DEMO",
                         "token endpoint of the /demo page, which lets anyone who knows a room ID join it: off, "
                         "an App ID (rooms of that app only), or first (the node's first app; what a bare --demo "
                         "means)", bare="first")
    demo_tokens_per_minute: int = _setting(10, "ENX_DEMO_TOKENS_PER_MINUTE",
                                           "demo tokens one client address may get a minute")
    metrics_token: str = _setting("", "ENX_METRICS_TOKEN",
                                  "when set, GET /metrics requires the header Authorization: Bearer <this>")
    signaling_rate_limits: str = _setting(
        "", "ENX_SIGNALING_RATE_LIMITS",
        "per-connection message limits over the defaults, as kind=per_second/burst pairs, e.g. "
        "'chat=5/20,publish=2/10' (kinds: " + ", ".join(sorted(DEFAULT_RATE_LIMITS)) + ", other)")
    outbox_limit: int = _setting(2000, "ENX_OUTBOX_LIMIT",
                                 "messages queued for a client that does not read before it is dropped as too slow")
    outbox_per_sender: int = _setting(100, "ENX_OUTBOX_PER_SENDER",
                                      "messages from one other participant queued for a client; past it, that "
                                      "sender's chats and relays to it are dropped (and counted), not the reader")
    chat_bytes_per_session: int = _setting(8 * 1024 * 1024, "ENX_CHAT_BYTES_PER_SESSION",
                                           "chat text one session may store (the transcript's share of the disk)")
    publish_transports_per_participant: int = _setting(
        4, "ENX_PUBLISH_TRANSPORTS_PER_PARTICIPANT", "publish transports one participant may hold open")
    streams_per_participant: int = _setting(8, "ENX_STREAMS_PER_PARTICIPANT",
                                            "tracks one participant may publish, all its transports together")
    mlines_per_offer: int = _setting(16, "ENX_MLINES_PER_OFFER", "m-lines a publish offer may carry")
    max_transports: int = _setting(10000, "ENX_MAX_TRANSPORTS", "WebRTC transports the node holds open at once")
    webhook_allow_loopback: str = _setting("off", "ENX_WEBHOOK_ALLOW_LOOPBACK",
                                           "webhook URLs may point at loopback addresses (on: local development "
                                           "and tests); private and link-local ones are refused either way")
    webhook_retry_ms: int = _setting(1000, "ENX_WEBHOOK_RETRY_MS",
                                     "first retry of a failed webhook delivery after about this long; each next "
                                     "one waits twice as long (with jitter), at most 10 minutes")
    webhook_give_up_s: int = _setting(86400, "ENX_WEBHOOK_GIVE_UP_S",
                                      "a webhook event not acknowledged this long after it happened is kept as "
                                      "failed")
    quality_interval_s: int = _setting(10, "ENX_QUALITY_INTERVAL_S",
                                       "seconds between the quality samples of each participant's media (the "
                                       "CDR's quality windows)")
    # Where the values came from; set by load_settings, not a setting itself.
    config_file: str | None = field(default=None)

    @property
    def limits(self) -> "Limits":
        return Limits(rate_limits=parse_rate_limits(self.signaling_rate_limits), outbox_limit=self.outbox_limit,
                      outbox_per_sender=self.outbox_per_sender, chat_bytes_per_session=self.chat_bytes_per_session,
                      publish_transports_per_participant=self.publish_transports_per_participant,
                      streams_per_participant=self.streams_per_participant, mlines_per_offer=self.mlines_per_offer,
                      max_transports=self.max_transports)

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "enx.sqlite3"

    def validate(self) -> "Settings":
        for port_name in ("http_port", "media_port"):
            port = getattr(self, port_name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{port_name} must be 0..65535, got {port}")
        if not 60 <= self.token_ttl <= self.token_max_ttl:
            raise ValueError("token_ttl must be between 60 and token_max_ttl")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if not 2 <= self.consent_timeout <= 300:
            raise ValueError("consent_timeout must be 2..300 seconds")
        if not self.demo:
            raise ValueError("demo must be off, first or an App ID")
        if self.demo_tokens_per_minute < 1:
            raise ValueError("demo_tokens_per_minute must be at least 1")
        parse_rate_limits(self.signaling_rate_limits)
        for name in ("outbox_limit", "outbox_per_sender", "chat_bytes_per_session", "publish_transports_per_participant",
                     "streams_per_participant", "mlines_per_offer", "max_transports"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.outbox_per_sender > self.outbox_limit:
            raise ValueError("outbox_per_sender must not exceed outbox_limit")
        if self.media_thread not in ("on", "off"):
            raise ValueError("media_thread must be on or off")
        if self.webhook_allow_loopback not in ("on", "off"):
            raise ValueError("webhook_allow_loopback must be on or off")
        if not 10 <= self.webhook_retry_ms <= 600_000:
            raise ValueError("webhook_retry_ms must be 10..600000")
        if self.webhook_give_up_s < 1:
            raise ValueError("webhook_give_up_s must be at least 1")
        if not 1 <= self.quality_interval_s <= 300:
            raise ValueError("quality_interval_s must be 1..300")
        return self


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.metadata["env"], type(f.default), f.default, f.metadata["help"], f.metadata["bare"])
    for f in dataclasses.fields(Settings) if "env" in f.metadata)


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    if setting.kind is int:
        if isinstance(value, bool):
            raise ValueError(f"{source}: {setting.name} must be an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: {setting.name} must be an integer, got {value!r}") from None
    if not isinstance(value, str):
        raise ValueError(f"{source}: {setting.name} must be a string")
    return value


def load_settings(flags: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None,
                  config_file: str | None = None) -> Settings:
    """Build Settings from flags > environment > TOML file > defaults."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config_file or flags.pop("config_file", None) or environ.get("ENX_CONFIG")
    values: dict[str, Any] = {}
    if config_file:
        with open(config_file, "rb") as f:
            doc = tomllib.load(f)
        doc = doc.get("enx_media", doc)  # allow a [enx_media] table or top-level keys
        known = {s.name: s for s in SETTINGS}
        for key, value in doc.items():
            if key not in known:
                raise ValueError(f"{config_file}: unknown setting {key!r}")
            values[key] = _coerce(known[key], value, config_file)
    for s in SETTINGS:
        if s.env in environ:
            values[s.name] = _coerce(s, environ[s.env], s.env)
        if s.name in flags:
            values[s.name] = _coerce(s, flags[s.name], "--" + s.name.replace("_", "-"))
    settings = Settings(**values, config_file=config_file)
    return settings.validate()
