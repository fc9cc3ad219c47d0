"""A subscriber behind a slow link (a token-bucket UDP shaper on 127.0.0.1, tests/shaper.py): headless
Chromium publishes 720p simulcast. Two aiortc subscribers ask for the best there is, one of them through
the shaper: when the shaper's rate falls below the top layer, that one moves down (its REMB falls, the
node's estimate follows, allocation picks a layer that fits) and climbs back once the rate returns (a
probe shows the link carries it); the unshaped one stays on the top layer throughout. And a Chromium
subscriber through the shaper, whose transport-cc feedback drives the node's own estimator."""
import asyncio
import time

import pytest

from media_util import (CHROMIUM, INBOUND_HEIGHT, Api, Heights, chromium_page, demo_publisher, demo_video_stream,
                        node_media_address, page_media_address)
from node_util import Node
from shaper import Shaper

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup test installs it)")


FULL_360P_BPS = 330_000     # what Chromium's 360-line simulcast layer and its audio reach once ramped up
SHAPED_SHARE = 0.7          # the browser test's link, as a share of the 360-line layer's rate


@pytest.fixture()
def node(tmp_path):
    """A node of its own: timings here are the subject, so no other test's rooms, peers or estimators."""
    n = Node(tmp_path)
    n.main_creds = n.create_app("main")
    n.start()
    yield n
    n.stop()


@pytest.fixture()
def creds(node):
    return node.main_creds


def test_a_shaped_subscriber_moves_down_and_back_while_another_stays_on_top(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        free = await api.joined(room["room_id"], "free", "participant")
        watched, shaper = [], None
        try:
            async with chromium_page() as page:
                await free.subscribe()
                chrome_id = await demo_publisher(page, node.base, api.token(room['room_id'], 'chrome', 'moderator'))
                stream_id = await free.wait_stream(chrome_id, "video")
                top = Heights(await free.wait_track(stream_id))
                watched.append(top)
                shaper = Shaper(node_media_address(free)).__enter__()
                slow = api.client_for(api.token(room["room_id"], "slow", "participant"))
                slow.media_address = shaper.address
                await slow.join()
                await slow.subscribe()
                shaped = Heights(await slow.wait_track(await slow.wait_stream(chrome_id, "video")))
                watched.append(shaped)
                await top.settle_on(720, 45)
                await shaped.settle_on(720, 30)
                await asyncio.sleep(3)
                t = time.monotonic()
                top_rate = shaper.rate_between(t - 3, t)
                top_since = time.monotonic()

                # the link drops to 60 % of what the top layer needs
                shaper.rate_bps = 0.6 * top_rate
                dropped = time.monotonic()
                took_down = await shaped.leave_height(720, 10)
                await asyncio.sleep(4)
                lower = {h for _, h in shaped.frames[-20:]}
                assert max(lower) < 720, f"still top frames on a link below the top layer: {lower}"
                during = shaper.rate_between(dropped + took_down + 1, time.monotonic())

                # the link recovers
                shaper.rate_bps = None
                took_up = await shaped.settle_on(720, 20)

                left = [(round(at - top_since, 1), h) for at, h in top.frames if at >= top_since and h != 720]
                assert not left, f"the unshaped one left the top: {left[:10]} " + str(
                    [x for x in api.metrics().splitlines() if x.startswith("enx_media_downlink")])
                assert top.longest_gap(top_since) < 1.5
                assert shaped.longest_gap(dropped) < 2.5, "a switch froze the shaped one"
                print([x for x in api.metrics().splitlines() if x.startswith("enx_media_downlink")])
                print(f"shaper: top layer {top_rate / 1e3:.0f} kbit/s, shaped to {0.6 * top_rate / 1e3:.0f}: "
                      f"down after {took_down:.1f} s (then {during / 1e3:.0f} kbit/s through, {shaper.dropped} "
                      f"datagrams tail-dropped), back up {took_up:.1f} s after the rate returned")
                assert took_down < 2.0 and took_up < 10.0
        finally:
            for h in watched:
                h.stop()
            if shaper is not None:
                shaper.close()
            await free.leave()

    asyncio.run(scenario())


def test_a_shaped_browser_subscriber_follows_its_link_by_transport_cc(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def height_settles(page, stream_id, ok, timeout):
        """Seconds until 3 looks in a row (0.1 s apart) see a decoded height for which ok() holds."""
        started, run = time.monotonic(), 0
        while run < 3:
            h = await page.evaluate(INBOUND_HEIGHT, stream_id)
            run = run + 1 if ok(h) else 0
            assert time.monotonic() - started < timeout, f"decoded height {h} after {timeout} s"
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def scenario():
        async with chromium_page() as publisher:
            pub_id = await demo_publisher(publisher, node.base, api.token(room['room_id'], 'pub', 'moderator'))
            with Shaper(await page_media_address(publisher)) as shaper:
                viewer = await publisher.context.browser.new_page()
                media = "%s:%d" % shaper.address
                # a viewer: it only watches (one Chromium encoding 720p simulcast is load enough on 2 cores)
                await viewer.goto(f"{node.base}/demo?token={api.token(room['room_id'], 'view', 'viewer')}"
                                  f"&media={media}")
                await viewer.wait_for_function(
                    """(pid) => window.enxDemo && [...window.enxDemo.room.streams.values()].some(
                       (s) => s.participant_id === pid && s.kind === "video")""", arg=pub_id, timeout=20000)
                stream_id = await demo_video_stream(viewer, pub_id)
                await viewer.click(f"#tile-{stream_id}")                  # pinned: a 360-line tile
                await height_settles(viewer, stream_id, lambda h: h == 360, 30)
                # Chromium ramps its layers up over many seconds: shaped to a share of a layer still ramping,
                # the link would not carry even the lowest layer and the audio (the node pauses the stream
                # then, rightly); so wait for the 360-line layer's full rate first
                ramp_until = time.monotonic() + 25
                while True:
                    await asyncio.sleep(3)
                    t = time.monotonic()
                    wanted_rate = shaper.rate_between(t - 3, t)
                    if wanted_rate >= FULL_360P_BPS or t > ramp_until:
                        break
                # 70 % of it: at 60 % (~210 kbit/s) the estimate after the first over-use could fall under
                # the 180-line layer plus audio, and the node then rightly paused the stream instead of moving
                # it down (a CI failure); 70 % is still well under the layer, and over the one below
                shaper.rate_bps = SHAPED_SHARE * wanted_rate
                downlink = lambda: [x for x in api.metrics().splitlines() if x.startswith("enx_media_downlink")]  # noqa: E731
                try:
                    took_down = await height_settles(viewer, stream_id, lambda h: 0 < h < 360, 10)
                except AssertionError as e:
                    raise AssertionError(f"{e} (shaped to {SHAPED_SHARE * wanted_rate / 1e3:.0f} kbit/s, "
                                         f"{shaper.dropped} tail-dropped); {downlink()}") from None
                await asyncio.sleep(4)
                assert 0 < await viewer.evaluate(INBOUND_HEIGHT, stream_id) < 360
                shaper.rate_bps = None
                try:
                    took_up = await height_settles(viewer, stream_id, lambda h: h == 360, 15)
                except AssertionError as e:
                    raise AssertionError(f"{e}; {downlink()}") from None
                downlink = downlink()
                print(f"browser behind the shaper: 360p at {wanted_rate / 1e3:.0f} kbit/s, shaped to "
                      f"{SHAPED_SHARE * wanted_rate / 1e3:.0f}: down after {took_down:.1f} s, back up {took_up:.1f} s after "
                      f"the rate returned; {shaper.dropped} datagrams tail-dropped; {downlink}")
                assert took_down < 3.0 and took_up < 10.0

    asyncio.run(scenario())
