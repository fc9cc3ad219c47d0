"""Webhooks (issue 12, first part): configured per app over REST, written to the outbox with the session
changes they report, POSTed signed to real receivers (HTTP servers in the test on 127.0.0.1), retried until
acknowledged, in order, one slow receiver delaying no other app; bad URLs refused; the receiver helper."""
import asyncio
import json
import time
import urllib.parse

import pytest

from enx_media.control.webhooks import address_allowed, pinned
from enx_media.webhook import WebhookError, headers, sign, verify
from media_util import Api
from node_util import Node
from webhook_receiver import Receiver

# a session's events to a webhook that takes them all: ours, EnableX's roomdrop with the end, the CDR's
LIFECYCLE = ["session.started", "participant.joined", "participant.left", "session.ended", "chat.ready", "roomdrop",
             "cdr.ready"]


def room_of(event):
    """Our events carry their fields in data; EnableX's are flat."""
    return event.get("data", event)["room_id"]


@pytest.fixture(scope="module")
def hook_node(tmp_path_factory):
    """A node that may POST to loopback (the receivers here), retrying quickly."""
    n = Node(tmp_path_factory.mktemp("hooks"), ENX_WEBHOOK_ALLOW_LOOPBACK="on", ENX_WEBHOOK_RETRY_MS="100")
    n.main_creds = n.create_app("hooks")
    n.start()
    yield n
    n.stop()


def one_session(api, room_id):
    """A participant joins the room and leaves: the session starts and ends."""
    async def run():
        c = await api.joined(room_id, "alice", "moderator")
        await asyncio.sleep(0.2)
        await c.leave()
    asyncio.run(run())


def add_hook(api, url, **extra):
    r = api.http.post("/webhooks", json={"url": url, **extra})
    assert r.status_code == 201, r.text
    return r.json()["webhook"]


def test_a_session_is_told_in_order_with_valid_signatures(hook_node):
    api = Api(hook_node, hook_node.main_creds)
    receiver = Receiver()
    try:
        hook = add_hook(api, receiver.url)
        assert hook["secret"] and set(hook["events"]) == set(LIFECYCLE) | {"recording.started", "recording.ready", "recording",
                                                                                  "transcript.ready", "transcoded"}
        listed = api.http.get("/webhooks").json()["webhooks"]
        assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]] and "secret" not in listed[0]
        room = api.room(settings={"mode": "group"})
        one_session(api, room["room_id"])
        events = receiver.wait(7, hook["secret"])
        assert [e["type"] for e in events] == LIFECYCLE
        assert len({e["event_id"] for e in events}) == 7
        assert all(room_of(e) == room["room_id"] for e in events)
        assert events[1]["data"]["user_ref"] == "alice" and events[3]["data"]["reason"] == "last-left"
        session_id = events[0]["data"]["session_id"]
        assert events[4]["data"]["path"] == f"/sessions/{session_id}/chat"
        assert events[5]["conf_num"] == session_id and events[5]["reason"] == "last-left"     # EnableX's shape
        assert events[6]["data"]["path"] == f"/cdr/conf/{session_id}"
        assert api.http.get(events[6]["data"]["path"]).json()["total"] == 1
        for _, h, body, _ in receiver.requests:
            assert h["X-Enx-Event-Id"] == json.loads(body)["event_id"]
            with pytest.raises(WebhookError):
                verify(body, h, "another secret")
        deliveries = api.http.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
        assert [d["state"] for d in deliveries] == ["delivered"] * 7
        # a rotated secret signs what comes next
        secret = api.http.post(f"/webhooks/{hook['webhook_id']}/secret").json()["secret"]
        before = len(receiver.requests)
        one_session(api, room["room_id"])
        assert [e["type"] for e in receiver.wait(7, secret, since=before)] == LIFECYCLE
        assert api.http.delete(f"/webhooks/{hook['webhook_id']}").status_code == 200
    finally:
        receiver.close()


def test_a_failing_receiver_gets_every_event_once_it_recovers_in_order(hook_node):
    api = Api(hook_node, hook_node.main_creds)
    receiver = Receiver(fail=5)
    try:
        hook = add_hook(api, receiver.url, events=["participant.joined", "participant.left"])
        room = api.room(settings={"mode": "group"})
        one_session(api, room["room_id"])
        one_session(api, room["room_id"])
        events = receiver.wait(4, hook["secret"])
        time.sleep(0.5)                                    # nothing more comes: each event acknowledged once
        events = receiver.acknowledged(hook["secret"])
        assert [e["type"] for e in events] == ["participant.joined", "participant.left"] * 2
        assert len({e["event_id"] for e in events}) == 4
        assert sum(1 for r in receiver.requests if r[3] == 500) == 5
        deliveries = api.http.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
        assert deliveries[-1]["attempts"] == 6 and deliveries[-1]["last_error"] == "HTTP 500"
        # redeliver one, then replay the lot: the same event IDs again (a receiver de-duplicates by them)
        base = f"/webhooks/{hook['webhook_id']}"
        before = len(receiver.requests)
        assert api.http.post(f"{base}/deliveries/{events[1]['event_id']}/redeliver").status_code == 200
        assert [e["event_id"] for e in receiver.wait(1, hook["secret"], since=before)] == [events[1]["event_id"]]
        time.sleep(0.3)
        assert len(receiver.requests) == before + 1                     # that one, nothing else
        again = len(receiver.requests)
        replay = api.http.post(f"{base}/replay", json={"from": time.time() - 3600, "to": time.time() + 1})
        assert replay.status_code == 200 and replay.json()["requeued"] == 4
        assert [e["event_id"] for e in receiver.wait(4, hook["secret"], since=again)] == [e["event_id"] for e in events]
        assert api.http.post(f"{base}/deliveries/evt_nope/redeliver").status_code == 404
        assert api.http.post(f"{base}/replay", json={"from": "yesterday", "to": 5}).status_code == 422
        assert api.http.post(f"{base}/replay", json={"from": 10, "to": 5}).status_code == 422
        api.http.delete(f"/webhooks/{hook['webhook_id']}")
    finally:
        receiver.close()


def test_events_pending_when_the_node_is_killed_go_out_after_its_restart(hook_node):
    """SIGKILL mid-session while the receiver fails: after the restart the pending events are delivered,
    then the participant's leave and the session's end that the restart records (reason node-restart)."""
    api = Api(hook_node, hook_node.main_creds)
    receiver = Receiver(fail=10 ** 9)
    try:
        hook = add_hook(api, receiver.url)
        room = api.room(settings={"mode": "group"})

        async def run():
            c = await api.joined(room["room_id"], "bob", "moderator")
            end = time.monotonic() + 10
            while len(receiver.requests) < 2:            # the node has tried (and failed) already
                assert time.monotonic() < end
                await asyncio.sleep(0.05)
            hook_node.proc.kill()                          # SIGKILL: no shutdown of any kind
            hook_node.proc.wait()
            await c.close()
        asyncio.run(run())
        hook_node.log.close()
        receiver.fail = 0
        hook_node.start()
        events = receiver.wait(7, hook["secret"])
        assert [e["type"] for e in events] == LIFECYCLE
        assert events[2]["data"]["reason"] == "session-ended:node-restart"
        assert events[3]["data"]["reason"] == "node-restart" and events[5]["reason"] == "node-restart"
        time.sleep(0.5)
        assert len(receiver.acknowledged(hook["secret"])) == 7         # each once
        api.http.delete(f"/webhooks/{hook['webhook_id']}")
    finally:
        receiver.close()


def test_a_slow_receiver_delays_no_other_apps_events(hook_node):
    slow, fast = Receiver(delay=2.0), Receiver()
    try:
        apis = [Api(hook_node, hook_node.main_creds), Api(hook_node, hook_node.create_app("other"))]
        hooks = [add_hook(apis[0], slow.url), add_hook(apis[1], fast.url)]
        rooms = [a.room(settings={"mode": "group"}) for a in apis]
        for a, r in zip(apis, rooms):
            one_session(a, r["room_id"])
        fast.wait(4, hooks[1]["secret"], timeout=10)
        assert len(slow.acknowledged(hooks[0]["secret"])) <= 2      # still working through its first ones
        assert [e["type"] for e in slow.wait(7, hooks[0]["secret"], timeout=30)] == LIFECYCLE
        for a, h in zip(apis, hooks):
            a.http.delete(f"/webhooks/{h['webhook_id']}")
    finally:
        slow.close()
        fast.close()


def test_a_name_is_posted_to_the_address_it_was_checked_at_and_a_huge_answer_is_not_read(hook_node):
    """localhost (loopback is allowed on this node): resolved, checked, and the POST goes to that address
    with the name in Host; a receiver answering 256 MiB costs the node nothing: the event is delivered."""
    api = Api(hook_node, hook_node.main_creds)
    receiver = Receiver(answer_bytes=256 << 20)
    try:
        port = receiver.server.server_address[1]
        hook = add_hook(api, f"http://localhost:{port}/hooks", events=["session.started"])
        room = api.room(settings={"mode": "group"})
        started = time.monotonic()
        one_session(api, room["room_id"])
        (event,) = receiver.wait(1, hook["secret"])
        assert event["type"] == "session.started" and time.monotonic() - started < 10
        assert receiver.requests[0][1]["Host"] == f"localhost:{port}"
        deliveries = api.http.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()["deliveries"]
        assert [d["state"] for d in deliveries] == ["delivered"]
        api.http.delete(f"/webhooks/{hook['webhook_id']}")
    finally:
        receiver.close()


@pytest.mark.parametrize("url, needle", [
    ("ftp://example.com/x", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("http://10.1.2.3/hook", "private, link-local or loopback"),
    ("http://169.254.169.254/latest/meta-data", "private, link-local or loopback"),
    ("http://[fd00::1]/hook", "private, link-local or loopback"),
    ("http://127.0.0.1:9/hook", "private, link-local or loopback"),   # loopback is off on this node
    ("http://localhost:9/hook", "resolves to a private, link-local or loopback"),
    ("http://user:pw@example.com/", "credentials"),
])
def test_urls_the_node_must_not_post_to_are_refused(api, url, needle):
    r = api.post("/webhooks", json={"url": url})
    assert r.status_code == 422, r.text
    assert needle in r.json()["desc"]


def test_bad_webhook_requests(api):
    assert api.post("/webhooks", json={"url": "https://example.invalid/", "events": ["room.exploded"]}).status_code == 422
    assert api.post("/webhooks", json={"url": "https://example.invalid/", "colour": "red"}).status_code == 422
    assert api.post("/webhooks", json=["x"]).status_code == 422
    assert api.delete("/webhooks/wh_nope").status_code == 404
    assert api.get("/webhooks/wh_nope/deliveries").status_code == 404
    assert api.post("/webhooks/wh_nope/secret").status_code == 404


def test_the_receiver_helper_refuses_what_it_must():
    body = b'{"event_id": "evt_1", "type": "session.started"}'
    h = headers("evt_1", "s3cret", body, now=1_000_000)
    assert verify(body, h, "s3cret", now=1_000_010)["type"] == "session.started"
    with pytest.raises(WebhookError, match="does not match"):
        verify(body + b" ", h, "s3cret", now=1_000_010)
    with pytest.raises(WebhookError, match="stale"):
        verify(body, h, "s3cret", now=1_000_000 + 301)
    with pytest.raises(WebhookError, match="required"):
        verify(body, {}, "s3cret")
    with pytest.raises(WebhookError, match="Unix time"):
        verify(body, {**h, "X-Enx-Timestamp": "soon"}, "s3cret")
    assert sign("k", 1, b"x") == sign("k", 1, b"x") != sign("k", 2, b"x")


@pytest.mark.parametrize("address, loopback_ok, allowed", [
    ("93.184.216.34", False, True), ("127.0.0.1", False, False), ("127.0.0.1", True, True),
    ("10.0.0.1", True, False), ("192.168.1.1", True, False), ("172.16.0.1", True, False),
    ("169.254.169.254", True, False), ("::1", True, True), ("::ffff:10.0.0.1", True, False),
    ("fe80::1", True, False), ("0.0.0.0", True, False), ("224.0.0.1", True, False),
])
def test_address_rules(address, loopback_ok, allowed):
    assert address_allowed(address, loopback_ok) is allowed


def test_a_pinned_request_names_the_host_it_was_resolved_from():
    parts = urllib.parse.urlsplit("https://hooks.example.com:8443/in?x=1")
    assert pinned(parts, "2001:db8::7") == ("https://[2001:db8::7]:8443/in?x=1", {"Host": "hooks.example.com:8443"},
                                            {"sni_hostname": "hooks.example.com"})
    assert pinned(urllib.parse.urlsplit("http://h.example/"), "192.0.2.1") == (
        "http://192.0.2.1/", {"Host": "h.example"}, {})
