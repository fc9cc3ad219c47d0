import httpx
import pytest

from node_util import make_room


@pytest.mark.parametrize("raw, needle", [
    (b"{", "not valid JSON"),
    (b"{'name': 'x'}", "not valid JSON"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b'{"name": NaN}', "not valid JSON"),
    (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
    (b"[" * 30000 + b"]" * 30000, "not valid JSON"),
])
def test_unreadable_bodies(api, raw, needle):
    r = api.post("/rooms", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413), r.text
    err = r.json()
    assert err["result"] in (1001, 1003)
    if needle:
        assert needle in err["desc"]


def test_huge_body_with_length(node, creds):
    body = b'{"name": "' + b"x" * (200 * 1024) + b'"}'
    r = httpx.post(node.base + "/video/v2/rooms", auth=creds, content=body)
    assert r.status_code == 413 and r.json()["result"] == 1003


def test_huge_body_chunked(node, creds):
    def chunks():
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'
    r = httpx.post(node.base + "/video/v2/rooms", auth=creds, content=chunks())
    assert r.status_code == 413 and r.json()["result"] == 1003


def test_bad_content_length(node, creds):
    import socket
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"POST /video/v2/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        assert s.recv(100).split(b" ")[1] == b"400"


@pytest.mark.parametrize("body", [
    {"name": None}, {"name": {"a": 1}}, {"name": True}, {"name": "x", "duration": True},
    {"name": "x", "duration": [60]}, {"name": "x", "duration": 1.5}, {"name": "x", "settings": {"moderators": -1}},
    {"name": "x", "settings": {"moderators": "1e3"}}, {"name": "x" * 300}, {"name": "a\x00b"},
    {"name": "x", "data": {"k": "v" * 9000}}, {"name": "x", "owner_ref": 7},
])
def test_wrong_types(api, body):
    r = api.post("/rooms", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["result"] == 1002


def test_bad_input_leaves_state_intact(api):
    room = make_room(api, name="stable")
    for raw in (b"{", b"\xff", b'{"name": 1}', b'{"settings": {"mode": "x"}}'):
        api.patch(f"/rooms/{room['room_id']}", content=raw)
    assert api.get(f"/rooms/{room['room_id']}").json()["room"] == room


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_body_not_declared_as_json_is_refused(node, creds, content_type):
    """A cross-site form can POST text/plain with a browser's cached Basic credentials: it must not pass
    for an API call (finding 9). application/json and +json types are accepted."""
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(node.base + "/video/v2/rooms", auth=creds, content=b'{"name": "csrf"}', headers=headers)
    assert r.status_code == 415 and r.json()["result"] == 1415, r.text
    ok = httpx.post(node.base + "/video/v2/rooms", auth=creds, content=b'{"name": "fine"}',
                    headers={"content-type": "application/vnd.api+json; charset=utf-8"})
    assert ok.status_code == 201


def test_errors_do_not_echo_long_client_values(api):
    r = api.get("/rooms/" + "r" * 10_000)
    assert r.status_code in (404, 414) and len(r.text) < 1000, len(r.text)
    r = api.post("/rooms/" + "q" * 5000 + "/tokens", json={"user_id": "u", "role": "participant"})
    assert r.status_code == 404 and len(r.json()["desc"]) <= 300
