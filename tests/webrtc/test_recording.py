"""Recordings with real aiortc publishers against a real node: a moderator starts recording over signaling, the
app stops it over REST; each track's file (VP8 / Opus remuxed into WebM) decodes with PyAV to the right length,
colour and tone; the archive routes list it, serve it with HTTP Range, delete it; recording.started and
recording.ready reach a real webhook receiver. A node killed mid-recording leaves files that the next start
repairs, marked recovered, playable up to the kill."""
import asyncio
import io
import time

import av
import numpy as np
import pytest

from enx_media.mcu.layout import tiles
from media_util import COLORS, Api, ColorTrack, ToneTrack, close_to, publish_offer, sendonly_offer, tile_rgb
from node_util import Node
from webhook_receiver import Receiver


@pytest.fixture(scope="module")
def rec_node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("rec"), ENX_WEBHOOK_ALLOW_LOOPBACK="on", ENX_WEBHOOK_RETRY_MS="100",
             ENX_QUALITY_INTERVAL_S="1")
    n.main_creds = n.create_app("rec")
    n.start()
    yield n
    n.stop()


def decode(data: bytes):
    """(video frames as RGB arrays, seconds of video, mono audio samples at 48 kHz) of a recorded file."""
    frames, audio, last = [], [], 0.0
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams[0]
        for f in c.decode(stream):
            if stream.type == "video":
                frames.append(f.to_ndarray(format="rgb24"))
                last = float(f.pts * f.time_base)
            else:
                audio.append(f.to_ndarray().reshape(f.samples, -1)[:, 0] if f.format.is_packed
                             else f.to_ndarray()[0])
    return frames, last, (np.concatenate(audio) if audio else np.zeros(0))


def finished_files(api, room_id, n, timeout):
    """The room's first archived session and its files, once it has n files and none is still being written."""
    end = time.monotonic() + timeout
    while True:
        archive = api.http.get(f"/archive/room/{room_id}").json()["archive"]
        files = archive[0]["recording"] if archive else []
        if len(files) >= n and all(f["state"] != "recording" for f in files):
            return archive, files
        assert time.monotonic() < end, files
        time.sleep(0.2)


def peak_hz(samples: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def wait_ready(api, receiver, secret, n=1, timeout=30.0, kind="recording.ready"):
    """The first n events of that kind the receiver acknowledged, once it has them."""
    end = time.monotonic() + timeout
    while True:
        ready = [e for e in receiver.acknowledged(secret) if e["type"] == kind]
        if len(ready) >= n:
            return ready
        assert time.monotonic() < end, [e["type"] for e in receiver.acknowledged(secret)]
        time.sleep(0.1)


def test_a_recording_plays_back_what_was_published(rec_node):
    api = Api(rec_node, rec_node.main_creds)
    receiver = Receiver()
    hook = api.http.post("/webhooks", json={"url": receiver.url}).json()["webhook"]
    room = api.room(settings={"mode": "group"})
    span = {}

    async def scenario():
        pub = await api.joined(room["room_id"], "pub", "moderator")
        other = await api.joined(room["room_id"], "other", "participant")
        try:
            await pub.publish([ColorTrack(COLORS[0], size=(320, 240)), ToneTrack(440)])
            await asyncio.sleep(1.0)
            with pytest.raises(Exception, match="moderator"):
                await other.request("record", action="start")           # a participant may not
            reply = await pub.request("record", action="start")
            assert reply["type"] == "ok" and reply["recording_id"].startswith("rec_")
            span["start"] = time.monotonic()
            again = api.http.post(f"/rooms/{room['room_id']}/recording/start")
            assert again.status_code == 409, again.text                  # already recording
            await asyncio.sleep(4.0)
            r = api.http.post(f"/rooms/{room['room_id']}/recording/stop")
            span["stop"] = time.monotonic()
            assert r.status_code == 200 and r.json()["recording_id"] == reply["recording_id"], r.text
            assert api.http.post(f"/rooms/{room['room_id']}/recording/stop").status_code == 409
        finally:
            await pub.leave()
            await other.leave()

    try:
        asyncio.run(scenario())
        ready = wait_ready(api, receiver, hook["secret"])[0]["data"]
        wait_ready(api, receiver, hook["secret"], kind="recording")       # EnableX's, written with it
        wait_ready(api, receiver, hook["secret"], kind="cdr.ready")       # the session's last
        events = receiver.acknowledged(hook["secret"])
    finally:
        receiver.close()
    kinds = [e["type"] for e in events]
    assert kinds.index("recording.started") < kinds.index("recording.ready") < kinds.index("recording")
    assert "transcoded" not in kinds                          # no composite in a plain group room
    enablex = next(e for e in events if e["type"] == "recording")
    assert {r["file_id"] for r in enablex["recording"]} == {f["file_id"] for f in ready["files"]}

    archive = api.http.get(f"/archive/conf/{ready['session_id']}").json()
    assert archive["total"] == 1
    files = {f["kind"]: f for f in archive["archive"][0]["recording"]}
    assert set(files) == {"audio", "video"} and all(f["state"] == "ready" for f in files.values()), files
    assert {f["file_id"] for f in files.values()} == {f["file_id"] for f in ready["files"]}
    assert api.http.get(f"/archive/room/{room['room_id']}").json()["total"] == 1
    recorded = span["stop"] - span["start"]

    video = files["video"]
    assert video["format"] == "webm" and video["codec"] == "vp8" and video["user_ref"] == "pub"
    body = api.http.get(video["url"])
    assert body.status_code == 200 and body.headers["content-type"] == "video/webm"
    assert int(body.headers["content-length"]) == video["bytes"] == len(body.content)
    part = api.http.get(video["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body.content[100:200]
    frames, seconds, _ = decode(body.content)
    assert abs(seconds - recorded) < 1.0 and abs(video["duration"] - recorded) < 1.0, (seconds, video, recorded)
    assert len(frames) > 20 * (recorded - 1)
    assert frames[0].shape[:2] == (240, 320)
    assert sum(colour_close_rgb(f, COLORS[0]) for f in frames) >= 0.9 * len(frames)

    audio = files["audio"]
    assert audio["codec"] == "opus"
    _, _, samples = decode(api.http.get(audio["url"]).content)
    assert abs(len(samples) / 48000 - recorded) < 1.0, (len(samples), recorded)
    assert abs(peak_hz(samples[48000:96000]) - 440) < 10

    assert api.http.delete(video["url"]).status_code == 200
    assert api.http.get(video["url"]).status_code == 404
    assert api.http.delete(video["url"]).status_code == 404
    other_app = Api(rec_node, rec_node.create_app("nosy"))
    assert other_app.http.get(audio["url"]).status_code == 404          # another app's file is not there


def colour_close_rgb(img, rgb, tol=40) -> bool:
    h, w = img.shape[:2]
    return bool(np.all(np.abs(img[h // 2, w // 2].astype(int) - np.array(rgb)) <= tol))


def test_h264_is_recorded_to_fragmented_mp4(rec_node):
    api = Api(rec_node, rec_node.main_creds)
    room = api.room(settings={"mode": "group", "auto_recording": "true"})

    async def scenario():
        pub = await api.joined(room["room_id"], "h264", "moderator")
        pc = await sendonly_offer(ColorTrack(COLORS[4], size=(320, 240)), codec="video/H264")
        await publish_offer(pub, pc)
        await asyncio.sleep(3.0)
        await pc.close()
        await pub.leave()

    asyncio.run(scenario())
    archive, files = finished_files(api, room["room_id"], 1, 20)
    (f,) = files
    assert (f["codec"], f["format"], f["state"]) == ("h264", "mp4", "ready"), f
    body = api.http.get(f["url"])
    assert body.headers["content-type"] == "video/mp4"
    assert b"moof" in body.content[:4096] or b"moof" in body.content        # fragmented
    frames, seconds, _ = decode(body.content)
    assert seconds > 1.5 and frames[0].shape[:2] == (240, 320), (seconds, f)
    assert sum(colour_close_rgb(x, COLORS[4]) for x in frames) >= 0.9 * len(frames)


def test_a_lecture_records_the_mcu_composite_and_mix_besides_each_track(rec_node):
    """The composite is recorded from the MCU's output (its top simulcast layer, 960x540: the half-size
    layer's packets on the same tap are left out), the mix beside it; not the mix-minus."""
    api = Api(rec_node, rec_node.main_creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 5, "layout": "grid",
                              "composite_size": "960x540", "composite_fps": 15, "auto_recording": True})

    async def scenario():
        mods = [api.client(room["room_id"], f"teacher{i}", "moderator") for i in range(2)]
        try:
            for i, m in enumerate(mods):
                await m.join()
                await m.publish([ColorTrack(COLORS[i]), ToneTrack(440 + 220 * i)])
            await asyncio.sleep(5.0)
        finally:
            for m in mods:
                await m.leave()

    asyncio.run(scenario())
    archive, files = finished_files(api, room["room_id"], 6, 30)
    by = sorted((f["user_ref"], f["source"], f["kind"]) for f in files)
    assert by == [("mcu", "composite", "video"), ("mcu", "mix", "audio"),
                  ("teacher0", "camera", "audio"), ("teacher0", "camera", "video"),
                  ("teacher1", "camera", "audio"), ("teacher1", "camera", "video")], by
    assert all(f["state"] == "ready" for f in files), files
    composite = next(f for f in files if f["source"] == "composite")
    assert sorted(f["source"] for f in archive[0]["transcoded"]) == ["composite", "mix"]     # EnableX's one file
    frames, seconds, _ = decode(api.http.get(composite["url"]).content)
    assert seconds > 2 and {f.shape[:2] for f in frames} == {(540, 960)}, (seconds, composite)
    tiles_ = tiles("grid", 2, 960, 540)
    assert any(all(close_to(tile_rgb(f, t), c) for t, c in zip(tiles_, COLORS[:2])) for f in frames[-10:])
    mix = next(f for f in files if f["source"] == "mix")
    _, _, samples = decode(api.http.get(mix["url"]).content)
    assert len(samples) / 48000 > 2


def test_a_group_room_that_asks_for_one_records_a_composite_too(rec_node):
    """single_file_recording: the compositor makes a grid of everyone for the recording, offered to nobody."""
    api = Api(rec_node, rec_node.main_creds)
    room = api.room(settings={"mode": "group", "moderators": 2, "single_file_recording": True,
                              "composite_size": "640x360", "composite_fps": 15})

    async def scenario():
        pubs = [await api.joined(room["room_id"], f"p{i}", "moderator") for i in range(2)]
        try:
            for i, p in enumerate(pubs):
                await p.publish([ColorTrack(COLORS[i + 2]), ToneTrack(440 + 220 * i)])
            await pubs[0].subscribe()
            await pubs[0].wait_user_stream("p1", "video")
            assert api.http.post(f"/rooms/{room['room_id']}/recording/start").status_code == 200
            await asyncio.sleep(5.0)
            announced = {info["participant_id"] for info in pubs[0].stream_info.values()}
            assert announced <= {p.participant_id for p in pubs}, pubs[0].stream_info   # the composite is not
            assert api.http.post(f"/rooms/{room['room_id']}/recording/stop").status_code == 200
        finally:
            for p in pubs:
                await p.leave()

    asyncio.run(scenario())
    archive, files = finished_files(api, room["room_id"], 6, 30)
    composite = next(f for f in files if f["source"] == "composite")
    assert composite["user_ref"] == "recording" and composite["state"] == "ready", composite
    frames, seconds, _ = decode(api.http.get(composite["url"]).content)
    assert seconds > 2 and frames[0].shape[:2] == (360, 640)
    assert any(all(close_to(tile_rgb(f, t), c) for t, c in zip(tiles("grid", 2, 640, 360), COLORS[2:4]))
               for f in frames[-10:])


def test_a_node_killed_mid_recording_leaves_files_the_restart_repairs(rec_node):
    api = Api(rec_node, rec_node.main_creds)
    receiver = Receiver()
    hook = api.http.post("/webhooks", json={"url": receiver.url}).json()["webhook"]
    room = api.room(settings={"mode": "group", "auto_recording": True})

    times = {}

    async def scenario():
        times["join"] = time.time()
        pub = await api.joined(room["room_id"], "pub", "moderator")
        await pub.publish([ColorTrack(COLORS[3], size=(320, 240)), ToneTrack(660)])
        await asyncio.sleep(4.0)
        times["kill"] = time.time()
        rec_node.proc.kill()                     # SIGKILL mid-recording
        rec_node.proc.wait()
        await pub.close()

    try:
        asyncio.run(scenario())
        rec_node.log.close()
        rec_node.start()
        ready = wait_ready(api, receiver, hook["secret"])[0]["data"]
    finally:
        receiver.close()
    assert ready["files"] and all(f["state"] == "recovered" for f in ready["files"]), ready
    files = {f["kind"]: f for f in api.http.get(f"/archive/conf/{ready['session_id']}").json()["archive"][0]["recording"]}
    frames, seconds, _ = decode(api.http.get(files["video"]["url"]).content)
    assert seconds > 1.5 and files["video"]["duration"] > 1.5, (seconds, files["video"])
    assert sum(colour_close_rgb(f, COLORS[3]) for f in frames) >= 0.9 * len(frames)
    _, _, samples = decode(api.http.get(files["audio"]["url"]).content)
    assert len(samples) / 48000 > 1.5 and abs(peak_hz(samples[:48000]) - 660) < 10
    assert "restart" in files["video"]["error"]
    # the session is closed with its reason, its CDR complete up to the crash (one quality interval)
    (cdr,) = api.http.get(f"/cdr/conf/{ready['session_id']}").json()["cdr"]
    assert cdr["room"]["end_reason"] == "node-restart" and cdr["user"]["leave_reason"] == "session-ended"
    assert abs(cdr["room"]["duration"] * 60 - (times["kill"] - times["join"])) < 1.5, (cdr["room"], times)
    assert cdr["published_track"] == {"audio": True, "video": True, "screen": False}
    assert cdr["quality"]["samples"] >= 2 and cdr["quality"]["bitrate_sent_bps"]["average"] > 20_000


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/archive/conf/nope", 404),
    ("GET", "/archive/room/nope", 404),
    ("GET", "/archive/room-period/nope/2026-01-01/2025-01-01", 422),
    ("GET", "/archive/file/f_nope", 404),
    ("DELETE", "/archive/file/f_nope", 404),
    ("POST", "/rooms/nope/recording/start", 404),
])
def test_bad_archive_requests(rec_node, method, path, status):
    r = Api(rec_node, rec_node.main_creds).http.request(method, path)
    assert r.status_code == status, r.text


def test_recording_a_room_with_no_live_session_is_refused(rec_node):
    api = Api(rec_node, rec_node.main_creds)
    room = api.room(settings={"mode": "group"})
    r = api.http.post(f"/rooms/{room['room_id']}/recording/start")
    assert r.status_code == 409 and "no live session" in r.text
    assert api.http.post(f"/rooms/{room['room_id']}/recording/pause").status_code == 404
