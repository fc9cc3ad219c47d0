"""The engine's lifecycle in one process: start, stop and start again on the same fixed UDP port, two
engines side by side, `async with engine.running()`, a clear error before media starts and on a taken
port."""
import asyncio
import socket

import pytest

from enx_media import Engine, Settings
from enx_media import errors as E


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_stop_start_on_one_port_and_two_engines(tmp_path):
    port = free_udp_port()
    engine = Engine(Settings(data_dir=str(tmp_path / "a"), media_port=port))
    other = Engine(Settings(data_dir=str(tmp_path / "b"), media_port=0))

    async def scenario():
        with pytest.raises(E.Conflict, match="not started"):
            engine.signaling
        for _ in range(3):
            async with engine.running():
                assert engine.media_started and engine.webrtc.port == port
                assert engine.stats()["media"]["worker"]["transports"] == 0
            assert not engine.media_started and engine.webrtc is None
        await engine.start_media()
        await other.start_media()
        try:
            assert other.webrtc.port not in (0, port)
            clash = Engine(Settings(data_dir=str(tmp_path / "c"), media_port=port))
            with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
                await clash.start_media()
            assert not clash.media_started
            clash.close()
        finally:
            await other.stop_media()
            await engine.stop_media()

    asyncio.run(scenario())
    engine.close()
    other.close()


def test_tokens_by_ids(tmp_path):
    engine = Engine(Settings(data_dir=str(tmp_path)))
    creds = engine.apps.create("ids")
    room = engine.rooms.create(creds.app_id, {"name": "r", "mode": "group"})
    issued = engine.issue_token(creds.app_id, room.room_id, user_id="u1", role="moderator", name="Una", ttl=600)
    claims = engine.tokens.verify(issued.token, room_id=room.room_id)
    assert (claims.user_ref, claims.name, claims.role) == ("u1", "Una", "moderator")
    with pytest.raises(E.NotFound):
        engine.issue_token("no-such-app", room.room_id, user_id="u", role="participant")
    other = engine.apps.create("other")
    with pytest.raises(E.NotFound):                      # another app's room is not found, as over REST
        engine.issue_token(other.app_id, room.room_id, user_id="u", role="participant")
    with pytest.raises(E.ValidationFailed):
        engine.issue_token(creds.app_id, room.room_id, user_id="u", role="king")
    with pytest.raises(E.NotFound):
        engine.apps.require("no-such-app")
    engine.close()
