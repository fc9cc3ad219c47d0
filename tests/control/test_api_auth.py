import base64
import dataclasses

import httpx
import pytest


@pytest.mark.parametrize("header", [
    None,
    "Bearer abc",
    "Basic",
    "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
])
def test_malformed_or_missing_credentials(node, header):
    headers = {"Authorization": header} if header else {}
    r = httpx.get(node.base + "/video/v2/rooms", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert r.json()["result"] == 1401


def test_wrong_key_and_unknown_app(node, creds):
    app_id, app_key = creds
    for auth in ((app_id, app_key + "x"), (app_id, ""), ("0" * 24, app_key), (app_key, app_id)):
        r = httpx.post(node.base + "/video/v2/rooms", auth=auth, json={"name": "x"})
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
        assert r.json() == {"result": 1401, "error": "unauthorized", "desc": "App ID or App Key is wrong"}


def test_every_api_route_requires_auth(node):
    for method, path in [("POST", "/rooms"), ("GET", "/rooms"), ("GET", "/rooms/x"), ("PATCH", "/rooms/x"),
                         ("DELETE", "/rooms/x"), ("GET", "/rooms/x/users"), ("POST", "/rooms/x/tokens"),
                         ("DELETE", "/rooms/x/tokens/y")]:
        r = httpx.request(method, node.base + "/video/v2" + path, json={})
        assert r.status_code == 401, (method, path)


def test_keys_are_stored_hashed(node, creds, engine):
    app_id, app_key = creds
    record = engine.store.apps.get(app_id)
    assert app_key.encode() not in b"".join(v if isinstance(v, bytes) else str(v).encode()
                                            for v in dataclasses.astuple(record))
    raw = (node.data_dir / "enx.sqlite3").read_bytes()
    assert app_key.encode() not in raw
