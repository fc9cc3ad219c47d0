"""Simulcast from a real browser: headless Chromium publishes its 720p fake camera through the demo page
as three layers (q, h, f); aiortc subscribers ask for different heights and decode the layer that fits,
and a subscriber that changes its mind is switched (at a key frame, on one SSRC) without a stall."""
import asyncio
import time

import pytest

from enx_media.client import SignalingError
from media_util import CHROMIUM, FRAMES_DECODED, INBOUND_HEIGHT, Api, Heights, chromium_page, demo_publisher, demo_video_stream

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup test installs it)")


def test_each_subscriber_decodes_the_layer_it_asks_for(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        small, best = await api.joined(room["room_id"], "small", "moderator"), await api.joined(
            room["room_id"], "best", "participant")
        watched = []
        try:
            async with chromium_page() as page:
                await small.subscribe()
                await best.subscribe()
                chrome_id = await demo_publisher(page, node.base, api.token(room['room_id'], 'chrome', 'participant'))
                stream_id = await small.wait_stream(chrome_id, "video")
                low, high = Heights(await small.wait_track(stream_id)), Heights(await best.wait_track(stream_id))
                watched += [low, high]
                assert await small.stream_settings(stream_id, 200) is not None   # a simulcast stream
                started = time.monotonic()

                # Chromium ramps its top layer up over some seconds: the best-asking subscriber gets it then.
                took_top = await high.settle_on(720, 45)
                took_small = await low.settle_on(180, 10)
                # the best one now asks for a 360-line tile, the small one for everything
                assert await best.stream_settings(stream_id, 400) == 1
                took_down = await high.settle_on(360, 10)
                # the top layer only once a probe shows the small one's downlink carries it too
                assert await small.stream_settings(stream_id) in (0, 1, 2)
                took_up = await low.settle_on(720, 10)
                for h in watched:     # no stall at any switch (a key-frame wait is a few frames)
                    assert h.longest_gap(started) < 1.5
                # what a subscriber cannot ask for
                audio_id = await small.wait_stream(chrome_id, "audio")
                for args, code in [((audio_id, 200), 1002), (("no-such-stream", 200), 1404), ((stream_id, 0), 1002)]:
                    with pytest.raises(SignalingError) as refused:
                        await small.stream_settings(*args)
                    assert refused.value.code == code, args
                print(f"simulcast: top layer after {took_top:.1f} s, 180p {took_small:.1f} s, "
                      f"down to 360p {took_down:.1f} s, up to 720p {took_up:.1f} s")
        finally:
            for h in watched:
                h.stop()
            await small.leave()
            await best.leave()

    asyncio.run(scenario())


LAYERS_ACTIVE = """() => { const pc = window.enxDemo.room.publishPc;
  const tr = pc.getTransceivers().find((t) => t.sender.track && t.sender.track.kind === "video");
  return tr.sender.getParameters().encodings.map((e) => e.active); }"""

FRAMES_ENCODED = """async () => { const out = {};
  (await window.enxDemo.room.publishPc.getStats()).forEach((r) => {
    if (r.type === "outbound-rtp" && r.kind === "video") out[r.rid] = r.framesEncoded; });
  return out; }"""


def test_dynacast_pauses_the_layers_nobody_receives_and_resumes_them(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        viewers = [await api.joined(room["room_id"], f"v{i}", "participant") for i in range(2)]
        watched = []
        try:
            async with chromium_page() as page:
                for v in viewers:
                    await v.subscribe()
                chrome_id = await demo_publisher(page, node.base, api.token(room['room_id'], 'chrome', 'moderator'))
                stream_id = await viewers[0].wait_stream(chrome_id, "video")
                watched = [Heights(await v.wait_track(stream_id)) for v in viewers]
                await watched[0].settle_on(720, 45)          # every layer runs (and its size is known)
                for v in viewers:
                    await v.stream_settings(stream_id, 200)  # both want the small one only
                deadline = time.monotonic() + 15
                while await page.evaluate(LAYERS_ACTIVE) != [True, False, False]:
                    assert time.monotonic() < deadline, await page.evaluate(LAYERS_ACTIVE)
                    await asyncio.sleep(0.2)
                before = await page.evaluate(FRAMES_ENCODED)
                await asyncio.sleep(2)
                after = await page.evaluate(FRAMES_ENCODED)
                assert after["q"] > before["q"] + 20                       # the small one is encoded,
                assert after["h"] == before["h"] and after["f"] == before["f"]   # the others not at all
                for w in watched:
                    assert [h for _, h in w.frames[-5:]] == [180] * 5
                # one viewer wants the best again: the publisher resumes, the viewer climbs back
                await viewers[1].stream_settings(stream_id)
                took = await watched[1].settle_on(720, 15)
                assert await page.evaluate(LAYERS_ACTIVE) == [True, True, True]
                print(f"dynacast: paused layers resumed and decoded at 720p after {took:.1f} s")
        finally:
            for w in watched:
                w.stop()
            for v in viewers:
                await v.leave()

    asyncio.run(scenario())


def test_a_browser_subscriber_gets_the_layer_that_fits_its_tile(node, creds):
    """Adaptive stream in the demo page: a tile's rendered height goes to the node as it changes; a
    Chromium subscriber decodes the small layer in a small tile, and a larger one once the tile is pinned;
    asked for 8 frames a second (the browser client's streamSettings) it gets fewer temporal layers."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def until_height(page, stream_id, wanted, timeout):
        deadline = time.monotonic() + timeout
        while (h := await page.evaluate(INBOUND_HEIGHT, stream_id)) != wanted:
            assert time.monotonic() < deadline, f"frames of {h} lines, not {wanted}"
            await asyncio.sleep(0.3)

    async def scenario():
        async with chromium_page() as publisher:
            viewer = await publisher.context.browser.new_page()
            pub_id = await demo_publisher(publisher, node.base, api.token(room['room_id'], 'pub', 'moderator'))
            await viewer.goto(f"{node.base}/demo?token={api.token(room['room_id'], 'view', 'participant')}")
            await viewer.wait_for_function("window.enxDemo && window.enxDemo.published", timeout=20000)
            stream_id = await demo_video_stream(viewer, pub_id)
            height = await viewer.evaluate("(id) => document.getElementById('tile-' + id).clientHeight", stream_id)
            assert 180 <= height < 360, height      # the page's grid: a small tile at this window size
            await until_height(viewer, stream_id, 180, 30)
            await viewer.click(f"#tile-{stream_id}")                  # pinned: twice as large
            height = await viewer.evaluate("(id) => document.getElementById('tile-' + id).clientHeight", stream_id)
            assert 360 <= height < 720, height
            await until_height(viewer, stream_id, 360, 30)

            # the browser client's max frame rate: fewer VP8 temporal layers, the size it renders kept
            async def fps():
                n0 = await viewer.evaluate(FRAMES_DECODED, stream_id)
                await asyncio.sleep(3)
                return (await viewer.evaluate(FRAMES_DECODED, stream_id) - n0) / 3
            full = await fps()
            await viewer.evaluate("([id, h]) => window.enxDemo.room.streamSettings(id, h, 8)", [stream_id, height])
            await asyncio.sleep(1)
            reduced = await fps()
            assert reduced < 0.6 * full and await viewer.evaluate(INBOUND_HEIGHT, stream_id) == 360, (full, reduced)

    asyncio.run(scenario())


def test_a_subscriber_that_wants_fewer_frames_gets_fewer_temporal_layers(node, creds):
    """Chromium's simulcast layers are VP8 with 3 temporal layers (a quarter, a half and all frames): a
    subscriber asking for 8 frames a second gets the base layer only, and every frame again after."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    def fps(h: Heights, seconds: float) -> float:
        since = time.monotonic() - seconds
        return sum(t >= since for t, _ in h.frames) / seconds

    async def scenario():
        viewer = await api.joined(room["room_id"], "viewer", "participant")
        watched = None
        try:
            async with chromium_page() as page:
                await viewer.subscribe()
                chrome_id = await demo_publisher(page, node.base, api.token(room['room_id'], 'chrome', 'moderator'))
                stream_id = await viewer.wait_stream(chrome_id, "video")
                watched = Heights(await viewer.wait_track(stream_id))
                await viewer.stream_settings(stream_id, 200)
                await watched.settle_on(180, 15)
                await asyncio.sleep(3)
                full = fps(watched, 3)
                await viewer.stream_settings(stream_id, 200, max_fps=8)
                await asyncio.sleep(4)
                reduced = fps(watched, 3)
                await viewer.stream_settings(stream_id, 200)
                await asyncio.sleep(4)
                again = fps(watched, 3)
                print(f"temporal layers: {full:.1f} fps, at max_fps 8: {reduced:.1f} fps, then {again:.1f} fps")
                # (Chromium sends its low layer at 20 fps here: temporal layers of 5, 10 and 20 fps)
                assert full > 12 and again > 0.8 * full, (full, again)
                assert full / 5 <= reduced <= 8 * 1.15, (full, reduced)
                assert watched.longest_gap(time.monotonic() - 10) < 0.5       # fewer frames, evenly spaced
        finally:
            if watched:
                watched.stop()
            await viewer.leave()

    asyncio.run(scenario())
