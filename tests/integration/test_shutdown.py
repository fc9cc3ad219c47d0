"""Stopping a node (SIGTERM to `enx-media serve`) ends its sessions first: a joined client gets
session-ended (reason node-stopped) and the node's own close (4000), not uvicorn's 1012, and the
session record says so."""
import asyncio

import pytest

from enx_media import Engine, Settings
from enx_media.client import SignalingClosed
from media_util import Api
from node_util import Node


def test_sigterm_ends_sessions_before_the_sockets_go(tmp_path):
    node = Node(tmp_path)
    node.start()
    creds = node.create_app("stop")
    api = Api(node, creds)
    room = api.room(settings={"mode": "group"})

    async def scenario():
        client = api.client(room["room_id"], "u1", "moderator")
        joined = await client.join()
        node.proc.terminate()
        ended = await client.next_event("session-ended", timeout=10)
        assert ended["reason"] == "node-stopped"
        with pytest.raises(SignalingClosed) as closed:
            await client.next_event("chat", timeout=10)
        assert closed.value.code == 4000
        await client.close()
        return joined["session_id"]

    session_id = asyncio.run(scenario())
    node.stop()
    engine = Engine(Settings(data_dir=str(tmp_path)))
    assert engine.sessions.get(session_id)["end_reason"] == "node-stopped"
    engine.close()
