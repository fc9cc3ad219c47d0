"""A restart of the node process keeps apps, rooms and tokens."""
from node_util import Node, make_room


def test_restart_keeps_state(tmp_path):
    node = Node(tmp_path)
    node.start()
    try:
        creds = node.create_app("persist")
        with node.client(creds) as api:
            room = make_room(api, name="kept", settings={"mode": "lecture", "participants": 500}, data={"x": 1})
            tok = api.post(f"/rooms/{room['room_id']}/tokens", json={"user_id": "u", "role": "moderator"}).json()
            revoked = api.post(f"/rooms/{room['room_id']}/tokens", json={"user_id": "v", "role": "viewer"}).json()
            api.delete(f"/rooms/{room['room_id']}/tokens/{revoked['token_id']}")
        node.restart()
        with node.client(creds) as api:
            assert api.get(f"/rooms/{room['room_id']}").json()["room"] == room
            assert api.get("/rooms").json()["total"] == 1
        from enx_media import Engine, Settings
        from enx_media import errors as E
        engine = Engine(Settings(data_dir=str(tmp_path)))
        try:
            assert engine.tokens.verify(tok["token"], room_id=room["room_id"]).user_ref == "u"
            try:
                engine.tokens.verify(revoked["token"])
                raise AssertionError("revoked token accepted after restart")
            except E.TokenRevoked:
                pass
            assert engine.store.schema_version >= 1
        finally:
            engine.close()
    finally:
        node.stop()


def test_first_start_creates_app_once(tmp_path):
    node = Node(tmp_path)
    node.start()
    node.stop()
    log = node.log_path.read_text()
    assert log.count("App ID:") == 1 and "App Key:" in log
    node.start()
    node.stop()
    assert node.log_path.read_text().count("App ID:") == 1


def test_tokens_outlive_a_crash(tmp_path):
    """A node killed mid-session (SIGKILL) leaves its session open; the next start ends it as a restart,
    and the tokens used in it may join the room's next session (finding 9: they were 'already used')."""
    import asyncio

    from media_util import Api

    node = Node(tmp_path)
    node.start()
    try:
        api = Api(node, node.create_app("crash"))
        room = api.room(settings={"mode": "group"})
        token = api.token(room["room_id"], "survivor", "participant")

        async def join_once():
            client = api.client_for(token)
            joined = await client.join()
            await client.close()
            return joined["session_id"]

        async def join_and_crash():
            client = api.client_for(token)
            joined = await client.join()
            node.proc.kill()
            node.proc.wait(10)
            await client.close()
            return joined["session_id"]

        first = asyncio.run(join_and_crash())
        node.stop()
        node.start()
        second = asyncio.run(join_once())
        assert second != first
    finally:
        node.stop()
