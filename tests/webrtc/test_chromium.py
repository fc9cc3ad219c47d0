"""Headless Chromium (Debian's package, fake camera) joins through the demo page.

ICE stays on loopback because the node announces only 127.0.0.1 and Chromium is started with
--allow-loopback-in-peer-connection (without it Chromium gathers no loopback candidate and never
reaches the node); WebRtcHideLocalIpsWithMdns is disabled so its host candidates are plain addresses.
"""
import asyncio
import time

import pytest

from media_util import CHROMIUM, COLORS, Api, ColorTrack, ToneTrack, chromium_page, demo_publisher

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup test installs it)")


def test_chromium_publishes_and_subscribes(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        async with chromium_page() as page:
            watcher = await api.joined(room["room_id"], "watcher", "moderator")
            try:
                await in_page(page, watcher)
            finally:
                await watcher.leave()

    async def in_page(page, watcher):
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        unknown_before = api.metric("enx_media_worker_total", 'counter="drops.unknown_source"')
        await watcher.subscribe()
        token = api.token(room["room_id"], "chrome", "participant")
        started = time.monotonic()
        await page.goto(f"{node.base}/demo?token={token}")
        await page.wait_for_function("window.enxDemo && window.enxDemo.published", timeout=20000)
        chrome_id = await page.evaluate("window.enxDemo.room.joined.participant_id")
        # Chromium publishes: the aiortc subscriber decodes its fake camera's frames.
        track = await watcher.wait_track(await watcher.wait_stream(chrome_id, "video"))
        first = await asyncio.wait_for(track.recv(), 20)
        first_frame_s = time.monotonic() - started
        frames = [first] + [await asyncio.wait_for(track.recv(), 10) for _ in range(14)]
        assert all(f.width >= 320 and f.height >= 180 for f in frames)   # simulcast: from the lowest layer up
        by_size: dict = {}       # simulcast: the subscriber moves up a layer, so compare frames of one size
        for f in frames:
            by_size.setdefault((f.width, f.height), []).append(f)
        same_size = max(by_size.values(), key=len)
        pixels = [f.to_ndarray(format="gray") for f in (same_size[0], same_size[-1])]
        assert (pixels[0] != pixels[1]).any(), "the fake camera's picture moves; decoded frames must differ"
        audio = await watcher.wait_track(await watcher.wait_stream(chrome_id, "audio"))
        assert (await asyncio.wait_for(audio.recv(), 10)).samples > 0

        # The node's transport-cc feedback lets Chromium's bandwidth estimate leave its 300 kbit/s start.
        estimate = 0
        for _ in range(30):
            estimate = await page.evaluate("window.enxDemo.room.outgoingBitrate()")
            if estimate > 1_000_000:
                break
            await asyncio.sleep(0.5)
        assert estimate > 1_000_000, f"publisher bandwidth estimate stuck at {estimate} bit/s"
        # Chromium subscribes: an aiortc publisher's frames are decoded in the page (getStats).
        await watcher.publish([ColorTrack(COLORS[1]), ToneTrack()])
        await page.wait_for_function("window.enxDemo.framesDecoded > 10", timeout=20000)
        tiles = await page.evaluate("document.querySelectorAll('#videos video').length")
        assert tiles >= 2  # own preview + the watcher's video
        assert not errors, errors
        # Chromium checks more than one candidate pair; media from any checked pair is accepted.
        assert api.metric("enx_media_worker_total", 'counter="drops.unknown_source"') == unknown_before
        print(f"chromium join->first frame at an aiortc subscriber: {first_frame_s:.2f} s")

    asyncio.run(scenario())


def test_demo_page_join_form(node, creds):
    """A person types a room ID and a name: the page fetches a demo token and joins."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        async with chromium_page() as page:
            await page.goto(f"{node.base}/demo")
            await page.fill("#roomId", room["room_id"])
            await page.fill("#userName", "Dana")
            await page.click("button[type=submit]")
            await page.wait_for_function("window.enxDemo.joined && window.enxDemo.published", timeout=20000)
            users = api.http.get(f"/rooms/{room['room_id']}/users").json()["users"]
            assert [u["name"] for u in users] == ["Dana"]
            await page.fill("#chatText", "hi from the page")
            await page.click("#chatForm button")
            await page.wait_for_function("document.querySelector('#chat').textContent.includes('hi from the page')")
            await page.click("#leaveBtn")
            for _ in range(50):
                if not api.http.get(f"/rooms/{room['room_id']}/users").json()["users"]:
                    break
                await asyncio.sleep(0.1)
            assert api.http.get(f"/rooms/{room['room_id']}/users").json()["users"] == []
            bad = await page.evaluate("""fetch('/demo/token', {method: 'POST', headers: {'content-type': 'application/json'},
                                                                body: JSON.stringify({room_id: 'nope', name: 'x'})})
                                          .then(r => r.json())""")
            assert bad["result"] == 1404
            # a body the browser sends as text/plain (what a cross-site form can do) is refused
            plain = await page.evaluate("""fetch('/demo/token', {method: 'POST', body: JSON.stringify({room_id: 'nope'})})
                                            .then(r => r.json())""")
            assert plain["result"] == 1415

    asyncio.run(scenario())


def test_the_demo_page_shares_a_screen(node, creds):
    """The Share screen button: headless Chromium captures its own tab (auto-accepted) with getDisplayMedia
    and publishes it as source "screen" next to its camera; an aiortc subscriber decodes frames of it."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        viewer = await api.joined(room["room_id"], "viewer", "participant")
        try:
            async with chromium_page(["--auto-accept-this-tab-capture"]) as page:
                await viewer.subscribe()
                sharer = await demo_publisher(page, node.base, api.token(room['room_id'], 'sharer', 'moderator'))
                await page.click("#shareBtn")
                screen = await viewer.wait_stream(sharer, "video", source="screen")
                camera = await viewer.wait_stream(sharer, "video", source="camera")
                assert screen != camera
                track = await viewer.wait_track(screen)
                frames = [await asyncio.wait_for(track.recv(), 20) for _ in range(5)]
                assert all(f.width > 0 and f.height > 0 for f in frames)
        finally:
            await viewer.leave()

    asyncio.run(scenario())
