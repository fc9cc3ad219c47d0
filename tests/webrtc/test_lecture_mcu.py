"""The lecture MCU with real aiortc peers through the node's signaling: one moderator is passed through;
when a second moderator publishes, everyone moves to the MCU's output (composite video with each
moderator's colour in its tile, the full mix with both tones); each moderator hears the other but not
itself (mix-minus); when the second leaves, the audience is back on the first one's own stream. A headless
Chromium in the audience, through the demo page, decodes the composite too."""
import asyncio
import time

import numpy as np
import pytest

from enx_media.client import SignalingError
from enx_media.mcu.layout import tiles
from enx_media.room.lecture import MCU_ID
from media_util import (CHROMIUM, FRAMES_DECODED, INBOUND_HEIGHT, COLORS, Api, ColorTrack, ToneTrack, chromium_page,
                        demo_video_stream, receive_video)

AUDIENCE = 6
TONES = (300.0, 700.0)


def tile_rgb(img, tile):
    x, y, w, h = tile
    return img[y + h // 3:y + 2 * h // 3, x + w // 3:x + 2 * w // 3].reshape(-1, 3).mean(axis=0)


def close_to(rgb, want, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(rgb, want))


async def composite_shows(track, colours, timeout=30.0):
    """Frames of the composite until one shows each colour in its grid tile; returns its size."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        img = frame.to_ndarray(format="rgb24")
        h, w = img.shape[:2]
        last = [tile_rgb(img, t).round() for t in tiles("grid", len(colours), w, h)]
        if all(close_to(rgb, c) for rgb, c in zip(last, colours)):
            return w, h
    raise AssertionError(f"composite tiles {last}, wanted {colours}")


async def tones_in(track, seconds=1.5):
    """The relative level of each of TONES in what the track plays for that long."""
    pcm, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        frame = await asyncio.wait_for(track.recv(), 5)
        a = frame.to_ndarray().reshape(-1)
        pcm.append(a[::2] if frame.layout.name == "stereo" else a)
    x = np.concatenate(pcm)[-48000:].astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    hz = np.fft.rfftfreq(len(x), 1 / 48000)
    peak = spec.max() or 1.0
    return [float(spec[(hz > f - 15) & (hz < f + 15)].max() / peak) for f in TONES]


def test_two_moderators_are_composited_for_the_audience_and_one_is_passed_through(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 50, "layout": "grid"})

    async def scenario():
        teacher = api.client(room["room_id"], "teacher", "moderator")
        cohost = api.client(room["room_id"], "cohost", "moderator")
        audience = [api.client(room["room_id"], f"student{i}", "participant") for i in range(AUDIENCE)]
        try:
            await teacher.join()
            await teacher.publish([ColorTrack(COLORS[0]), ToneTrack(TONES[0])])
            for s in audience:
                await s.join()
                await s.subscribe()
            # one video publisher: its own stream, passed through
            sid = await audience[0].wait_stream(teacher.participant_id, "video")
            assert await receive_video(await audience[0].wait_track(sid), COLORS[0], 8, timeout=30) >= 7

            await cohost.join()
            await teacher.subscribe()
            await cohost.subscribe()
            await cohost.publish([ColorTrack(COLORS[1]), ToneTrack(TONES[1])])
            tracks = [await s.wait_track(await s.wait_stream(MCU_ID, "video", timeout=20, source="composite"))
                      for s in audience]
            sizes = await asyncio.gather(*(composite_shows(t, COLORS[:2]) for t in tracks))
            assert set(sizes) == {(1280, 720)}
            mix = await tones_in(await audience[1].wait_track(await audience[1].wait_stream(MCU_ID, "audio", source="mix")))
            assert min(mix) > 0.2, mix
            own = await tones_in(await teacher.wait_track(await teacher.wait_stream(MCU_ID, "audio", source="mix-minus")))
            assert own[0] < 0.05 and own[1] > 0.5, own       # the cohost, not itself

            metrics = api.metrics()
            assert "enx_mcu_running 1.0" in metrics and 'enx_mcu_now{stat="video_frames"}' in metrics

            # the layout is the moderators' to choose
            with pytest.raises(SignalingError) as refused:
                await audience[0].request("layout", layout="single")
            assert refused.value.code == 1403
            await teacher.request("layout", layout="single")
            single = await composite_shows(tracks[0], COLORS[:1])
            assert single == (1280, 720)

            # the cohost leaves: the MCU's outputs go, the teacher's own stream comes back on a new track
            viewer = audience[3]
            passed_through = viewer.received[sid]
            await cohost.leave()
            deadline = time.monotonic() + 20
            while viewer.received.get(sid) is passed_through or any(
                    info["participant_id"] == MCU_ID for info in viewer.stream_info.values()):
                assert time.monotonic() < deadline, ("the audience did not go back to the teacher's stream",
                                                     viewer.received.get(sid) is passed_through,
                                                     [i.get("source") for i in viewer.stream_info.values()
                                                      if i["participant_id"] == MCU_ID])
                await asyncio.sleep(0.1)
            assert await receive_video(viewer.received[sid], COLORS[0], 8, timeout=30) >= 7
        finally:
            for c in [teacher, cohost, *audience]:
                await c.leave()

    asyncio.run(scenario())


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup test installs it)")
def test_a_browser_in_the_audience_decodes_the_composite(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 10, "layout": "grid"})

    async def scenario():
        mods = [api.client(room["room_id"], f"teacher{i}", "moderator") for i in range(2)]
        try:
            for i, m in enumerate(mods):
                await m.join()
                await m.publish([ColorTrack(COLORS[i]), ToneTrack(TONES[i])])
            async with chromium_page() as page:
                await page.goto(f"{node.base}/demo?token={api.token(room['room_id'], 'student', 'participant')}")
                await page.wait_for_function(
                    """() => window.enxDemo && [...window.enxDemo.room.streams.values()].some(
                       (s) => s.participant_id === "mcu" && s.kind === "video")""", timeout=30000)
                stream_id = await demo_video_stream(page, MCU_ID)
                deadline = time.monotonic() + 30
                while True:
                    frames, height = (await page.evaluate(FRAMES_DECODED, stream_id),
                                      await page.evaluate(INBOUND_HEIGHT, stream_id))
                    if frames >= 60 and height == 720:
                        break
                    assert time.monotonic() < deadline, f"the browser decoded {frames} frames, {height} lines"
                    await asyncio.sleep(0.3)
        finally:
            for m in mods:
                await m.leave()

    asyncio.run(scenario())
