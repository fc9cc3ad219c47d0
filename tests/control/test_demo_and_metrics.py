"""The node's two unauthenticated HTTP surfaces against a real node (finding 8 and 9): the demo token
endpoint is off unless asked for, serves one app's rooms, and limits each client address on its own;
/metrics can require a bearer token."""
import httpx

from node_util import Node


def demo_token(node, room_id, role="participant", source="127.0.0.1"):
    # A second loopback source address stands for a second client machine.
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as c:
        return c.post(node.base + "/demo/token", json={"room_id": room_id, "name": "n", "role": role})


def test_demo_tokens_are_off_by_default(tmp_path):
    plain = Node(tmp_path)
    plain.start()
    try:
        app = plain.create_app()
        room = httpx.post(plain.base + "/video/v2/rooms", auth=app, json={"name": "r"}).json()["room"]
        r = demo_token(plain, room["room_id"])
        assert r.status_code == 403 and "--demo" in r.json()["desc"]
    finally:
        plain.stop()


def test_demo_serves_one_app_per_address_and_metrics_need_the_bearer(tmp_path):
    node = Node(tmp_path, ENX_DEMO_TOKENS_PER_MINUTE="5", ENX_METRICS_TOKEN="s3cret-metrics")
    served = node.create_app("served")          # made before the start, which is told to serve its demos
    node.extra_env["ENX_DEMO"] = served[0]
    node.start()
    try:
        other = node.create_app("other")
        room = httpx.post(node.base + "/video/v2/rooms", auth=served, json={"name": "r"}).json()["room"]
        foreign = httpx.post(node.base + "/video/v2/rooms", auth=other, json={"name": "f"}).json()["room"]
        assert demo_token(node, foreign["room_id"]).status_code == 404       # another app's room: unknown here
        assert demo_token(node, room["room_id"], role="moderator").status_code == 422
        codes = [demo_token(node, room["room_id"]).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]             # 5 a minute from this address, the 404 and 422 counted
        limited = demo_token(node, room["room_id"])
        assert limited.json()["error"] == "rate limited"
        assert demo_token(node, room["room_id"], source="127.0.0.2").status_code == 200   # others are not held up

        assert httpx.get(node.base + "/metrics").status_code == 401
        wrong = httpx.get(node.base + "/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        ok = httpx.get(node.base + "/metrics", headers={"authorization": "Bearer s3cret-metrics"})
        assert ok.status_code == 200 and "enx_rooms " in ok.text
    finally:
        node.stop()

