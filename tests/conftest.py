"""Shared fixtures: a real node process (node_util.Node) on 127.0.0.1, an app on it, a REST client."""
from __future__ import annotations

import pytest

from node_util import Node


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("node"))
    n.main_creds = n.create_app("main")       # before the start: the node serves demos for this app's rooms
    n.extra_env["ENX_DEMO"] = n.main_creds[0]
    n.start()
    yield n
    n.stop()


@pytest.fixture(scope="session")
def creds(node):
    return node.main_creds


@pytest.fixture()
def api(node, creds):
    with node.client(creds) as c:
        yield c


@pytest.fixture()
def engine(node):
    """An in-process engine on the node's own SQLite file: how an embedding server verifies tokens."""
    from enx_media import Engine, Settings

    e = Engine(Settings(data_dir=str(node.data_dir)))
    yield e
    e.close()


@pytest.fixture(autouse=True)
def _signaling_messages_follow_the_schema():
    import media_util

    media_util.CLIENTS.clear()
    yield
    problems = [p for c in media_util.CLIENTS for p in c.protocol_errors]
    media_util.CLIENTS.clear()
    assert not problems, problems
