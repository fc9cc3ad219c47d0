import concurrent.futures as cf
import datetime as dt

import httpx
import pytest

from node_util import make_room
from enx_media.store import ParticipantRecord


def test_create_seed_shape(api):
    r = api.post("/rooms", json={"name": "Sales Demo", "mode": "group", "duration": 3600,
                                 "settings": {"auto_record": True}})
    assert r.status_code == 201
    body = r.json()
    assert body["result"] == 0
    room = body["room"]
    assert len(room["room_id"]) == 24 and room["created"].endswith("Z")
    assert room["mode"] == "group" and room["type"] == "permanent"
    assert room["duration"] == 3600 and room["settings"]["duration"] == 60
    assert room["settings"]["auto_recording"] is True


def test_create_enablex_shape_with_strings(api):
    room = make_room(api, name="Maths", owner_ref="teacher-7", data={"course": "m101"}, settings={
        "description": "Algebra", "mode": "lecture", "scheduled": "false", "adhoc": False, "duration": "45",
        "moderators": "2", "participants": "1500", "auto_recording": "true", "quality": "hd",
        "max_active_talkers": "4", "canvas": False, "billing_code": "b-1"})
    s = room["settings"]
    assert room["owner_ref"] == "teacher-7" and room["data"] == {"course": "m101"}
    assert (s["mode"], s["duration"], s["moderators"], s["participants"]) == ("lecture", 45, 2, 1500)
    assert s["auto_recording"] is True and s["quality"] == "HD" and s["max_active_talkers"] == 4
    assert s["billing_code"] == "b-1" and s["description"] == "Algebra"
    assert room["duration"] == 45 * 60
    assert (s["layout"], s["composite_codec"], s["composite_size"], s["composite_fps"]) == ("speaker", "vp8", "1280x720", 30)


@pytest.mark.parametrize("body, needle", [
    ({"mode": "group"}, "name is required"),
    ({"name": ""}, "name must not be empty"),
    ({"name": "x", "mode": "broadcast"}, "mode must be one of"),
    ({"name": "x", "settings": {"mode": "p2p", "participants": 5}}, "participants must be 0..2"),
    ({"name": "x", "settings": {"mode": "group", "moderators": 50, "participants": 51}}, "at most 100"),
    ({"name": "x", "settings": {"mode": "lecture", "participants": "2000"}}, "at most 2000"),
    ({"name": "x", "duration": 30}, "duration is in seconds"),
    ({"name": "x", "duration": 100000}, "duration is in seconds"),
    ({"name": "x", "settings": {"duration": 0}}, "settings.duration is in minutes"),
    ({"name": "x", "settings": {"duration": "1441"}}, "settings.duration is in minutes"),
    ({"name": "x", "settings": {"duration": "ten"}}, "must be an integer"),
    ({"name": "x", "settings": {"moderators": ""}}, "must be an integer"),
    ({"name": "x", "settings": {"moderators": "+"}}, "must be an integer"),
    ({"name": "x", "duration": 600, "settings": {"duration": 20}}, "disagree"),
    ({"name": "x", "colour": "red"}, "unknown field(s): colour"),
    ({"name": "x", "settings": {"auto_recordings": True}}, "unknown settings field(s): auto_recordings"),
    ({"name": "x", "settings": {"scheduled": True}}, "needs settings.scheduled_time"),
    ({"name": "x", "settings": {"scheduled": True, "scheduled_time": "2001-01-01 00:00:00"}}, "in the future"),
    ({"name": "x", "settings": {"scheduled": True, "scheduled_time": "tomorrow"}}, "scheduled_time must be"),
    ({"name": "x", "settings": {"scheduled": True, "adhoc": True}}, "both scheduled and adhoc"),
    ({"name": "x", "type": "adhoc", "settings": {"scheduled": True}}, "contradicts"),
    ({"name": "x", "settings": {"scheduled_time": "2099-01-01 00:00:00"}}, "only for scheduled rooms"),
    ({"name": "x", "settings": {"quality": "8K"}}, "quality must be one of"),
    ({"name": "x", "settings": {"auto_recording": "maybe"}}, "must be a boolean"),
    ({"name": "x", "settings": {"max_active_talkers": 13}}, "max_active_talkers must be"),
    ({"name": "x", "settings": {"layout": "mosaic"}}, "settings.layout must be one of"),
    ({"name": "x", "settings": {"composite_codec": "av1"}}, "settings.composite_codec must be one of"),
    ({"name": "x", "settings": {"composite_size": "4000x3000"}}, "settings.composite_size must be one of"),
    ({"name": "x", "settings": {"composite_fps": 60}}, "settings.composite_fps must be 1..30"),
    ({"name": 5}, "name must be a string"),
    ({"name": "x", "settings": []}, "settings must be an object"),
    ({"name": "x", "data": "str"}, "data must be an object"),
    (["name"], "must be a JSON object"),
])
def test_create_validation(api, body, needle):
    r = api.post("/rooms", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["result"] == 1002 and err["error"] == "validation failed"
    assert needle in err["desc"]


def test_types(api):
    adhoc = make_room(api, settings={"adhoc": True, "mode": "p2p"})
    assert adhoc["type"] == "adhoc" and adhoc["settings"]["participants"] == 1
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    sched = make_room(api, settings={"scheduled": True, "scheduled_time": start, "duration": 30})
    assert sched["type"] == "scheduled" and sched["settings"]["scheduled_time"] == start
    iso = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).isoformat()
    sched2 = make_room(api, type="scheduled", settings={"scheduled_time": iso})
    assert sched2["settings"]["duration"] == 60  # a scheduled window defaults to one hour


def test_get_patch_delete(api):
    room = make_room(api, name="before", settings={"mode": "group", "quality": "SD"}, data={"a": 1})
    rid = room["room_id"]
    got = api.get(f"/rooms/{rid}").json()["room"]
    assert got == room
    r = api.patch(f"/rooms/{rid}", json={"name": "after", "settings": {"quality": "HD", "duration": "15"}})
    assert r.status_code == 200, r.text
    upd = r.json()["room"]
    assert upd["name"] == "after" and upd["settings"]["quality"] == "HD" and upd["duration"] == 900
    assert upd["data"] == {"a": 1} and upd["created"] == room["created"]
    r = api.patch(f"/rooms/{rid}", json={"mode": "p2p", "settings": {"participants": 5}})
    assert r.status_code == 422 and "participants must be 0..2" in r.json()["desc"]
    r = api.patch(f"/rooms/{rid}", json={"mode": "p2p"})  # seats sized anew for the new mode
    assert r.status_code == 200 and r.json()["room"]["mode"] == "p2p"
    assert (r.json()["room"]["settings"]["participants"], r.json()["room"]["settings"]["max_active_talkers"]) == (1, 2)
    assert api.patch(f"/rooms/{rid}", json={}).status_code == 422
    assert api.patch(f"/rooms/{rid}", json={"bogus": 1}).status_code == 422
    # a failed patch changed nothing
    assert api.get(f"/rooms/{rid}").json()["room"]["mode"] == "p2p"
    r = api.delete(f"/rooms/{rid}")
    assert r.status_code == 200 and r.json() == {"result": 0, "room_id": rid}
    r = api.get(f"/rooms/{rid}")
    assert r.status_code == 404 and r.json()["result"] == 1404
    assert api.delete(f"/rooms/{rid}").status_code == 404


def test_patch_scheduled_to_permanent(api):
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    room = make_room(api, settings={"scheduled": True, "scheduled_time": start})
    r = api.patch(f"/rooms/{room['room_id']}", json={"settings": {"scheduled": False}})
    assert r.status_code == 200, r.text
    assert r.json()["room"]["type"] == "permanent" and "scheduled_time" not in r.json()["room"]["settings"]
    r = api.patch(f"/rooms/{room['room_id']}", json={"type": "scheduled"})
    assert r.status_code == 422 and "needs settings.scheduled_time" in r.json()["desc"]


def test_list_pagination(node):
    creds = node.create_app("pager")
    with node.client(creds) as api:
        ids = [make_room(api, name=f"r{i}")["room_id"] for i in range(7)]
        seen = []
        for offset in range(0, 7, 3):
            page = api.get("/rooms", params={"offset": offset, "limit": 3}).json()
            assert page["total"] == 7 and page["offset"] == offset and page["limit"] == 3
            seen += [r["room_id"] for r in page["rooms"]]
        assert seen == ids
        for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
            r = api.get("/rooms", params=bad)
            assert r.status_code == 422, bad


def test_users_of_room_without_session(api):
    room = make_room(api)
    r = api.get(f"/rooms/{room['room_id']}/users")
    assert r.status_code == 200 and r.json() == {"result": 0, "total": 0, "users": []}
    assert api.get("/rooms/nope/users").status_code == 404


def test_live_session_blocks_delete_and_lists_users(api, engine):
    room = make_room(api)
    rid = room["room_id"]
    # A live session as the signaling layer records it (through the same store).
    sid = engine.store.sessions.start("x", rid, "s1-" + rid, 1.0)
    engine.store.sessions.add_participant(ParticipantRecord(sid, "p1", "u1", "Alice", "moderator", None, 2.0))
    users = api.get(f"/rooms/{rid}/users").json()
    assert users["total"] == 1 and users["users"][0]["name"] == "Alice"
    r = api.delete(f"/rooms/{rid}")
    assert r.status_code == 409 and r.json()["error"] == "session live"
    r = api.patch(f"/rooms/{rid}", json={"mode": "lecture"})
    assert r.status_code == 409
    engine.store.sessions.end(sid, "test", 3.0)
    assert api.get(f"/rooms/{rid}/users").json()["total"] == 0
    assert api.delete(f"/rooms/{rid}").status_code == 200


@pytest.mark.parametrize("prefix", ["/video/v1", "/v1", "/video/v2"])
def test_aliases(node, creds, prefix):
    with node.client(creds, prefix) as c:
        room = make_room(c, name="alias")
        assert c.get(f"/rooms/{room['room_id']}").json()["room"]["name"] == "alias"


def test_cross_app_isolation(node, creds):
    other = node.create_app("other")
    with node.client(creds) as mine, node.client(other) as theirs:
        room = make_room(mine, name="private")
        rid = room["room_id"]
        assert theirs.get(f"/rooms/{rid}").status_code == 404
        assert theirs.patch(f"/rooms/{rid}", json={"name": "x"}).status_code == 404
        assert theirs.delete(f"/rooms/{rid}").status_code == 404
        assert theirs.post(f"/rooms/{rid}/tokens", json={"user_id": "u", "role": "moderator"}).status_code == 404
        assert theirs.get(f"/rooms/{rid}/users").status_code == 404
        assert rid not in [r["room_id"] for r in theirs.get("/rooms", params={"limit": 100}).json()["rooms"]]
        assert mine.get(f"/rooms/{rid}").json()["room"]["name"] == "private"


def test_concurrent_creation_loses_nothing(node):
    creds = node.create_app("burst")
    with node.client(creds) as api:
        def create(i):
            with httpx.Client(base_url=api.base_url, auth=creds, timeout=60) as c:
                r = c.post("/rooms", json={"name": f"burst-{i}"})
                assert r.status_code == 201, r.text
                return r.json()["room"]["room_id"]

        with cf.ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(create, range(200)))
        assert len(set(ids)) == 200
        listed = []
        for offset in (0, 100):
            listed += [r["room_id"] for r in api.get("/rooms", params={"offset": offset, "limit": 100}).json()["rooms"]]
        assert sorted(listed) == sorted(ids)


def test_unknown_route_and_method(api):
    r = api.get("/nothing-here")
    assert r.status_code == 404 and r.json()["result"] == 1404
    r = api.put("/rooms")
    assert r.status_code == 405 and r.json()["error"] == "method not allowed"
