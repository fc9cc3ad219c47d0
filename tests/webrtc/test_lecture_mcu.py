"""The lecture MCU with real aiortc peers through the node's signaling: one moderator is passed through;
when a second moderator publishes, everyone moves to the MCU's output on the same m-lines, without a gap in
the picture; with four, the composite shows each moderator's colour in its tile of the 2x2 grid and the full
mix has the four tones (FFT), while each moderator's mix-minus lacks its own; when two leave the grid has
two tiles, and when the last but one leaves the audience is back on the first one's own stream, again
without a gap. A headless Chromium in the audience, through the demo page, decodes the teacher's stream and
then, on the same tile, the composite at the size the tile asks for (simulcast out of the MCU: 1280x720 or
640x360)."""
import asyncio
import time

import numpy as np
import pytest

from enx_media.client import SignalingError
from enx_media.room.lecture import MCU_ID
from media_util import (CHROMIUM, FRAMES_DECODED, INBOUND_HEIGHT, COLORS, Api, ColorTrack, ToneTrack, chromium_page,
                        close_to, composite_shows, demo_video_stream, receive_video, thumbnail, tile_rgb)

AUDIENCE = 6
# the composite's sizes in the four-moderator test: smaller than the default 1280x720, as ten aiortc peers
# in the test's process decode it (at 720p they load its event loop enough to skew their REMB)
FULL, SMALL = (960, 540), (480, 270)
TONES = (300.0, 700.0, 1100.0, 1500.0)


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


async def tones_until(track, ok, attempts=6):
    """tones_in until `ok` holds for what it measured (a late publisher's voice reaches the mix a moment after
    its picture when the machine is loaded), at most `attempts` windows; the last measurement."""
    for _ in range(attempts):
        levels = await tones_in(track)
        if ok(levels):
            break
    return levels


class FrameLog:
    """Every frame one track decodes, as it comes: (arrival time, width, height)."""

    def __init__(self, track):
        self.frames: list[tuple[float, int, int]] = []
        self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track):
        while True:
            frame = await track.recv()
            self.frames.append((time.monotonic(), frame.width, frame.height))

    async def until(self, size, timeout=30.0):
        """Wait for a frame of that size; returns the longest wait between two frames up to the first such
        frame and one second after it (the switch's gap, as the viewer sees it)."""
        deadline = time.monotonic() + timeout
        while not any((w, h) == size for _, w, h in self.frames):
            assert time.monotonic() < deadline, f"no {size} frame; sizes seen {sorted({f[1:] for f in self.frames})}"
            await asyncio.sleep(0.05)
        first = next(t for t, w, h in self.frames if (w, h) == size)
        await asyncio.sleep(1.0)
        times = [t for t, _, _ in self.frames if t <= first + 1.0]
        start = next(i for i, t in enumerate(times) if t == first)
        window = times[max(0, start - 30):]
        return max(b - a for a, b in zip(window, window[1:]))

    def stop(self):
        self.task.cancel()


def test_four_moderators_are_composited_for_the_audience_and_one_is_passed_through(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 4, "participants": 50, "layout": "grid",
                              "composite_size": "x".join(map(str, FULL))})

    async def scenario():
        teacher = api.client(room["room_id"], "teacher", "moderator")
        cohosts = [api.client(room["room_id"], f"cohost{k}", "moderator") for k in range(1, 4)]
        audience = [api.client(room["room_id"], f"student{i}", "participant") for i in range(AUDIENCE)]
        try:
            await teacher.join()
            await teacher.publish([ColorTrack(COLORS[0]), ToneTrack(TONES[0])])
            for s in audience:
                await s.join()
                await s.subscribe()
            # one video publisher: its own stream, passed through
            sid = await audience[0].wait_stream(teacher.participant_id, "video")
            passed_through = await audience[0].wait_track(sid)
            assert await receive_video(passed_through, COLORS[0], 8, timeout=30) >= 7
            mlines = len(audience[0].subscribe_pc.getTransceivers())
            await teacher.subscribe()

            # a second video publisher: the audience's m-lines switch to the MCU's outputs at the composite's
            # first key frame, the teacher's stream showing until then (no renegotiation, no gap)
            seen = FrameLog(passed_through)
            for k, c in enumerate(cohosts, start=1):
                await c.join()
                await c.subscribe()
                await c.publish([ColorTrack(COLORS[k]), ToneTrack(TONES[k])])
                if k == 1:
                    gap_in = await seen.until(FULL)
                    seen.stop()
            composite = await audience[0].wait_stream(MCU_ID, "video", timeout=20, source="composite")
            assert audience[0].received[composite] is passed_through and sid not in audience[0].received
            assert len(audience[0].subscribe_pc.getTransceivers()) == mlines
            tracks = [await s.wait_track(await s.wait_stream(MCU_ID, "video", timeout=20, source="composite"))
                      for s in audience]
            # four colours in their tiles of the 2x2 grid, for everyone
            await asyncio.gather(*(composite_shows(t, COLORS[:4], size=FULL) for t in tracks))
            # simulcast out of the MCU: a subscriber that asks for fewer lines gets the composite's small size
            assert await audience[5].stream_settings(composite, max_height=SMALL[1]) == 0
            await composite_shows(tracks[5], COLORS[:4], size=SMALL)
            assert gap_in < 0.4, f"the switch to the composite left {gap_in:.3f} s without a frame"
            # the four tones in the mix; each moderator's mix-minus without its own
            mix = await tones_until(await audience[1].wait_track(await audience[1].wait_stream(MCU_ID, "audio", source="mix")),
                                    lambda m: min(m) > 0.2)
            assert min(mix) > 0.2, mix
            minus = await teacher.wait_stream(MCU_ID, "audio", source="mix-minus")
            own = await tones_until(await teacher.wait_track(minus), lambda o: o[0] < 0.05 and min(o[1:]) > 0.2)
            assert own[0] < 0.05 and min(own[1:]) > 0.2, own
            last = await tones_until(await cohosts[2].wait_track(await cohosts[2].wait_stream(MCU_ID, "audio", source="mix-minus")),
                                     lambda x: x[3] < 0.05 and min(x[:3]) > 0.2)
            assert last[3] < 0.05 and min(last[:3]) > 0.2, last
            # it joined while the MCU ran: its join reply named no one else's mix-minus either
            assert [i["source"] for i in cohosts[2].stream_info.values()].count("mix-minus") == 1
            # a mix-minus is its publisher's alone: asked for by id, nobody else gets it
            await audience[2].subscribe([minus])
            await asyncio.sleep(1.0)
            assert minus not in audience[2].received and minus not in audience[2].stream_info

            metrics = api.metrics()
            assert "enx_mcu_running 1.0" in metrics and 'enx_mcu_now{stat="video_frames"}' in metrics

            # the layout is the moderators' to choose
            with pytest.raises(SignalingError) as refused:
                await audience[0].request("layout", layout="single")
            assert refused.value.code == 1403
            await teacher.request("layout", layout="single")
            assert await shows_one_of(tracks[0], COLORS[:4])
            await teacher.request("layout", layout="grid")

            # two leave: a grid of two
            for c in cohosts[1:]:
                await c.leave()
            await composite_shows(tracks[0], COLORS[:2], size=None)

            # the last cohost leaves: the same m-line carries the teacher's own stream again from its next key
            # frame, the composite showing until then; then the MCU's outputs go
            seen = FrameLog(passed_through)
            await cohosts[0].leave()
            gap_out = await seen.until(ColorTrack(COLORS[0]).img.shape[1::-1])
            seen.stop()
            deadline = time.monotonic() + 20
            while any(info["participant_id"] == MCU_ID for info in audience[0].stream_info.values()):
                assert time.monotonic() < deadline, "the MCU's outputs stayed"
                await asyncio.sleep(0.1)
            assert audience[0].received[sid] is passed_through
            assert len(audience[0].subscribe_pc.getTransceivers()) == mlines
            assert await receive_video(passed_through, COLORS[0], 8, timeout=30) >= 7
            assert all(s.received.get(sid) is t for s, t in zip(audience, tracks))   # each on its one track
            assert gap_out < 0.4, f"the switch back left {gap_out:.3f} s without a frame"
            print(f"switch gaps: to the composite {gap_in * 1000:.0f} ms, back {gap_out * 1000:.0f} ms")
        finally:
            for c in [teacher, *cohosts, *audience]:
                await c.leave()

    asyncio.run(scenario())


async def shows_one_of(track, colours, timeout=20.0):
    """A frame (of either size: a loaded link may have moved it to the small one) whose middle shows one of
    the colours: the single layout's one tile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = await asyncio.wait_for(track.recv(), max(deadline - time.monotonic(), 0.01))
        img, scale = thumbnail(frame)
        w, h = frame.width, frame.height
        if (w, h) in (FULL, SMALL) and any(close_to(tile_rgb(img, (0, 0, w, h), scale), c) for c in colours):
            return True
    return False


def test_the_composite_in_h264_at_the_size_and_rate_the_room_asks_for(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 5, "layout": "grid",
                              "composite_codec": "h264", "composite_size": "960x540", "composite_fps": 15})

    async def scenario():
        mods = [api.client(room["room_id"], f"teacher{i}", "moderator") for i in range(2)]
        viewer = api.client(room["room_id"], "student", "participant")
        try:
            for i, m in enumerate(mods):
                await m.join()
                await m.publish([ColorTrack(COLORS[i]), ToneTrack(TONES[i])])
            await viewer.join()
            await viewer.subscribe()
            composite = await viewer.wait_stream(MCU_ID, "video", timeout=20, source="composite")
            assert viewer.stream_info[composite]["codec"] == "h264"
            await composite_shows(await viewer.wait_track(composite), COLORS[:2], size=(960, 540))
        finally:
            for c in [*mods, viewer]:
                await c.leave()

    asyncio.run(scenario())


async def decoded(page, stream_id, frames, height, timeout=30.0):
    """Wait until the demo page has decoded that many frames of the stream, the last ones that high."""
    deadline = time.monotonic() + timeout
    while True:
        got, lines = await page.evaluate(FRAMES_DECODED, stream_id), await page.evaluate(INBOUND_HEIGHT, stream_id)
        if got >= frames and lines == height:
            return
        assert time.monotonic() < deadline, f"the browser decoded {got} frames, {lines} lines"
        await asyncio.sleep(0.3)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup test installs it)")
def test_a_browser_in_the_audience_decodes_the_composite(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 10, "layout": "grid"})

    async def scenario():
        mods = [api.client(room["room_id"], f"teacher{i}", "moderator") for i in range(2)]
        try:
            await mods[0].join()
            await mods[0].publish([ColorTrack(COLORS[0]), ToneTrack(TONES[0])])
            async with chromium_page() as page:
                await page.goto(f"{node.base}/demo?token={api.token(room['room_id'], 'student', 'participant')}")
                await page.wait_for_function("() => window.enxDemo && window.enxDemo.room.remoteTracks.size >= 2",
                                             timeout=30000)
                teacher = await demo_video_stream(page, mods[0].participant_id)
                await decoded(page, teacher, 30, 120)      # the teacher's own 160x120, passed through
                # a second moderator publishes: the browser's tile and track go on showing the composite
                await mods[1].join()
                await mods[1].publish([ColorTrack(COLORS[1]), ToneTrack(TONES[1])])
                await page.wait_for_function(
                    """() => [...window.enxDemo.room.streams.values()].some(
                       (s) => s.participant_id === "mcu" && s.kind === "video")""", timeout=30000)
                stream_id = await demo_video_stream(page, MCU_ID)
                # the tile reports its rendered height (adaptive stream, kept across the switch): the node
                # sends the composite's size that fits it, 720 lines or its small 360
                rendered = await page.evaluate(f"""() => Math.round(document.getElementById("tile-{stream_id}")
                    .clientHeight * (window.devicePixelRatio || 1))""")
                await decoded(page, stream_id, 60, 720 if rendered >= 720 else 360)
                tiles = await page.evaluate("""() => [...document.querySelectorAll("#videos .tile")].map((t) => t.id)""")
                assert tiles == ["tile-" + stream_id], tiles
        finally:
            for m in mods:
                await m.leave()

    asyncio.run(scenario())
