"""The call and what comes after it, with real aiortc peers, a real node and a real webhook receiver (all on
127.0.0.1): the events arrive in order with valid signatures; the CDR's legs and durations match the join
and leave times the clients measured; loss injected on one subscriber's link (tests/shaper.py) shows in
its quality figures and not in the others'; the EnableX routes, pagination and CSV."""
import asyncio
import csv
import datetime as dt
import io
import time

import pytest

from media_util import COLORS, Api, ColorTrack, ToneTrack, candidate_address, receive_audio, receive_video
from node_util import Node
from shaper import Shaper
from webhook_receiver import Receiver

QUALITY_INTERVAL_S = 2


@pytest.fixture(scope="module")
def cdr_node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("cdr"), ENX_WEBHOOK_ALLOW_LOOPBACK="on", ENX_WEBHOOK_RETRY_MS="100",
             ENX_QUALITY_INTERVAL_S=str(QUALITY_INTERVAL_S))
    n.main_creds = n.create_app("cdr")
    n.start()
    yield n
    n.stop()


def test_a_session_with_media_gives_ordered_events_and_a_cdr_that_matches_what_happened(cdr_node):
    api = Api(cdr_node, cdr_node.main_creds)
    receiver = Receiver()
    hook = api.http.post("/webhooks", json={"url": receiver.url}).json()["webhook"]
    room = api.room(settings={"mode": "group"})
    times: dict[str, list[list[float]]] = {}       # user -> legs of [before join, after join, before leave, after leave]

    async def join(user, role, media_address=None):
        c = api.client(room["room_id"], user, role)
        if media_address is not None:
            c.media_address = media_address
        t0 = time.time()
        await c.join()
        times.setdefault(user, []).append([t0, time.time()])
        return c

    async def leave(user, c):
        t0 = time.time()
        await c.leave()
        times[user][-1] += [t0, time.time()]

    async def scenario():
        pub = await join("pub", "moderator")
        await pub.publish([ColorTrack(COLORS[2]), ToneTrack(440)])
        node_addr = candidate_address(pub.publish_pcs[0].remoteDescription.sdp)
        with Shaper(node_addr, lose_down=0.15, seed=7) as link:
            clean = await join("clean", "participant")
            lossy = await join("lossy", "participant", link.address)
            for c in (clean, lossy):
                await c.subscribe()
            tracks = {}
            for name, c in (("clean", clean), ("lossy", lossy)):
                video = await c.wait_track(await c.wait_user_stream("pub", "video"))
                audio = await c.wait_track(await c.wait_user_stream("pub", "audio"))
                tracks[name] = (video, audio)
            # three quality windows of media (keep decoding, so the clients' buffers do not fill)
            await asyncio.gather(*(receive_video(v, COLORS[2], 3 * QUALITY_INTERVAL_S * 25, timeout=20)
                                   for v, _ in tracks.values()),
                                 *(receive_audio(a, 3 * QUALITY_INTERVAL_S * 40, timeout=20)
                                   for _, a in tracks.values()))
            assert link.lost_down > 20
            await leave("lossy", lossy)
        again = await join("lossy", "participant")           # a reconnect: a second leg of the same user
        await asyncio.sleep(0.5)
        await leave("lossy", again)
        await leave("clean", clean)
        await leave("pub", pub)

    try:
        asyncio.run(scenario())
        events = receiver.wait(13, hook["secret"], timeout=30)
    finally:
        receiver.close()
    kinds = [e["type"] for e in events]
    assert kinds == (["session.started"] + ["participant.joined"] * 3 + ["participant.left", "participant.joined"]
                     + ["participant.left"] * 3 + ["session.ended", "chat.ready", "roomdrop", "cdr.ready"]), kinds
    session_id = events[0]["data"]["session_id"]

    cdr = api.http.get(f"/cdr/conf/{session_id}").json()
    assert cdr["result"] == 0 and cdr["total"] == 4
    legs = {(e["user"]["ref"], e["user"]["leg"]): e for e in cdr["cdr"]}
    assert set(legs) == {("pub", 1), ("clean", 1), ("lossy", 1), ("lossy", 2)}
    for (user, leg), e in legs.items():
        joined0, joined1, left0, left1 = times[user][leg - 1]
        connect = dt.datetime.fromisoformat(e["room"]["connect_dt"].replace("Z", "+00:00")).timestamp()
        disconnect = dt.datetime.fromisoformat(e["room"]["disconnect_dt"].replace("Z", "+00:00")).timestamp()
        assert joined0 - 1 <= connect <= joined1 + 1 and left0 - 1 <= disconnect <= left1 + 1, (user, leg, e["room"])
        measured = (left0 + left1) / 2 - (joined0 + joined1) / 2
        assert abs(e["room"]["duration"] * 60 - measured) < 2.0, (user, leg, e["room"]["duration"], measured)
        assert e["conf_num"] == session_id and e["room"]["room_id"] == room["room_id"]
        assert e["room"]["room_details"]["name"] == room["name"]
    pub, clean, lossy = legs[("pub", 1)], legs[("clean", 1)], legs[("lossy", 1)]
    assert pub["published_track"] == {"audio": True, "video": True, "screen": False}
    assert lossy["published_track"] == {"audio": False, "video": False, "screen": False}
    # two streams published for about as long as pub was there
    assert 1.5 < pub["usage"]["published_minutes"] / pub["room"]["duration"] <= 2.05, pub["usage"]
    for sub in (clean, lossy):
        assert 1.0 < sub["usage"]["subscribed_minutes"] / sub["room"]["duration"] <= 2.05, sub["usage"]
        assert sub["quality"]["samples"] >= 2
        assert sub["quality"]["bitrate_received_bps"]["average"] > 50_000
        assert sub["quality"]["rtt_ms"]["average"] is not None
    assert pub["quality"]["bitrate_sent_bps"]["average"] > 50_000
    # the loss injected on lossy's link shows in its figures, not in clean's
    assert lossy["quality"]["packet_loss"]["worst_window"] > 0.05, lossy["quality"]
    assert lossy["quality"]["packet_loss"]["average"] > 0.02, lossy["quality"]
    assert clean["quality"]["packet_loss"]["worst_window"] < 0.02, clean["quality"]

    # the same legs by room, by period (today, UTC), one page at a time, and as CSV
    assert api.http.get(f"/cdr/room/{room['room_id']}").json()["total"] == 4
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert api.http.get(f"/cdr/room-period/{room['room_id']}/{today}/{today}").json()["total"] == 4
    assert api.http.get(f"/cdr/room-period/{room['room_id']}/2001-01-01/2001-01-02").json()["total"] == 0
    period = api.http.get(f"/cdr/period/{today}/{today}", params={"limit": 100}).json()
    assert {e["cdr_id"] for e in cdr["cdr"]} <= {e["cdr_id"] for e in period["cdr"]}
    pages = [api.http.get(f"/cdr/conf/{session_id}", params={"offset": i, "limit": 1}).json()["cdr"] for i in range(5)]
    assert [len(p) for p in pages] == [1, 1, 1, 1, 0]
    assert [p[0]["cdr_id"] for p in pages[:4]] == [e["cdr_id"] for e in cdr["cdr"]]
    r = api.http.get(f"/cdr/conf/{session_id}", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv") and r.headers["x-total-count"] == "4"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["user_ref"], row["leg"]) for row in rows] == [(e["user"]["ref"], str(e["user"]["leg"])) for e in cdr["cdr"]]
    assert float(next(row for row in rows if row["user_ref"] == "lossy")["loss_worst_window"]) > 0.05


@pytest.mark.parametrize("path, status", [
    ("/cdr/conf/nope", 404),
    ("/cdr/room/nope", 404),
    ("/cdr/period/2026-13-01/2026-12-02", 422),
    ("/cdr/period/2026-12-02/2026-12-01", 422),
    ("/cdr/period/20261201/2026-12-02", 422),
    ("/cdr/period/2020-01-01/2026-01-01", 422),
    ("/cdr/period/2026-12-01/2026-12-01?limit=0", 422),
    ("/cdr/period/2026-12-01/2026-12-01?offset=-1", 422),
    ("/cdr/period/2026-12-01/2026-12-01?format=xml", 422),
])
def test_bad_cdr_requests_are_refused_clearly(cdr_node, path, status):
    api = Api(cdr_node, cdr_node.main_creds)
    r = api.http.get(path)
    assert r.status_code == status, r.text
    assert r.json()["result"] != 0 and r.json()["desc"]
