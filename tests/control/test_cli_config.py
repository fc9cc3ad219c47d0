import json
import subprocess
import sys

import pytest

from node_util import run_cli
from enx_media.config import SETTINGS, load_settings


def test_precedence_flags_env_toml_default(tmp_path):
    toml = tmp_path / "enx.toml"
    toml.write_text('http_port = 9000\nmedia_port = 9001\nannounced_ip = "10.0.0.1"\n')
    s = load_settings({}, environ={})
    assert (s.http_port, s.media_port, s.http_host, s.data_dir) == (8080, 7882, "127.0.0.1", "./enx-data")
    s = load_settings({}, environ={}, config_file=str(toml))
    assert (s.http_port, s.media_port, s.announced_ip) == (9000, 9001, "10.0.0.1")
    env = {"ENX_HTTP_PORT": "9100", "ENX_CONFIG": str(toml), "ENX_DATA_DIR": "/tmp/d"}
    s = load_settings({}, environ=env)
    assert (s.http_port, s.media_port, s.data_dir) == (9100, 9001, "/tmp/d")
    s = load_settings({"http_port": 9200}, environ=env)
    assert (s.http_port, s.media_port) == (9200, 9001)


def test_toml_table_and_errors(tmp_path):
    toml = tmp_path / "enx.toml"
    toml.write_text('[enx_media]\nhttp_host = "127.0.0.2"\n')
    assert load_settings({}, environ={}, config_file=str(toml)).http_host == "127.0.0.2"
    toml.write_text('bogus = 1\n')
    with pytest.raises(ValueError, match="unknown setting 'bogus'"):
        load_settings({}, environ={}, config_file=str(toml))
    with pytest.raises(ValueError, match="ENX_HTTP_PORT: http_port must be an integer"):
        load_settings({}, environ={"ENX_HTTP_PORT": "eighty"})
    with pytest.raises(ValueError, match="http_port must be 0..65535"):
        load_settings({"http_port": 70000}, environ={})


def test_help_names_every_setting():
    out = subprocess.run([sys.executable, "-m", "enx_media", "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for s in SETTINGS:
        assert s.env in out and "--" + s.name.replace("_", "-") in out
    for env in ("ENX_DATA_DIR", "ENX_HTTP_HOST", "ENX_HTTP_PORT", "ENX_MEDIA_PORT", "ENX_ANNOUNCED_IP"):
        assert env in out


def test_cli_helpers(tmp_path):
    creds = json.loads(run_cli("apps", "create", "--json", data_dir=tmp_path).stdout)
    assert set(creds) >= {"app_id", "app_key"}
    listed = json.loads(run_cli("apps", "list", "--json", data_dir=tmp_path).stdout)
    assert [a["app_id"] for a in listed] == [creds["app_id"]]
    room = json.loads(run_cli("rooms", "create", "--app-id", creds["app_id"], "--name", "cli", "--mode",
                              "lecture", data_dir=tmp_path).stdout)
    assert room["mode"] == "lecture"
    token = run_cli("token", "create", "--app-id", creds["app_id"], "--room-id", room["room_id"], "--user-id",
                    "u1", "--role", "moderator", data_dir=tmp_path).stdout.strip()
    claims = json.loads(run_cli("token", "verify", token, "--room-id", room["room_id"], data_dir=tmp_path).stdout)
    assert claims["role"] == "moderator" and claims["room_id"] == room["room_id"]
    bad = run_cli("token", "verify", token, "--room-id", "nope", data_dir=tmp_path, check=False)
    assert bad.returncode == 1 and "4005" in bad.stderr
    bad = run_cli("rooms", "get", "--app-id", creds["app_id"], "missing", data_dir=tmp_path, check=False)
    assert bad.returncode == 1 and "room not found" in bad.stderr


def test_limits_are_settings_and_a_bare_demo_flag_means_the_first_app():
    from enx_media.cli import _build_parser, _settings

    s = _settings(_build_parser().parse_args(["serve"]))
    assert s.demo == "off" and s.limits.rate("chat") == (5, 20) and s.limits.rate("mute") == (5, 20)
    s = _settings(_build_parser().parse_args(["serve", "--demo", "--signaling-rate-limits", "chat=1/3, other=2/4",
                                              "--outbox-limit", "50", "--outbox-per-sender", "10"]))
    assert s.demo == "first" and s.limits.rate("chat") == (1, 3) and s.limits.rate("floor-request") == (2, 4)
    assert (s.limits.outbox_limit, s.limits.outbox_per_sender) == (50, 10)
    assert _settings(_build_parser().parse_args(["serve", "--demo", "abc123"])).demo == "abc123"
    for bad, needle in [({"ENX_SIGNALING_RATE_LIMITS": "chatter=1/2"}, "kind of"),
                        ({"ENX_SIGNALING_RATE_LIMITS": "chat=0/2"}, "rate above 0"),
                        ({"ENX_OUTBOX_PER_SENDER": "5000"}, "must not exceed outbox_limit"),
                        ({"ENX_MAX_TRANSPORTS": "0"}, "at least 1")]:
        with pytest.raises(ValueError, match=needle):
            load_settings({}, environ=bad)
