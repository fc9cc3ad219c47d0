"""The MCU end to end inside one worker: four publishers (Python-fed producers carrying real VP8 and Opus
from aiortc's encoders: a solid colour and a tone each) into the MCU, its output read back from a tap on its
own output producers and decoded with PyAV. Each colour is in its tile, each tone in the mix, a publisher's
own tone is not in its mix-minus; the layout follows inputs that leave and the louder speaker; a flash and a
beep at one input come out within 80 ms of each other; corrupt input freezes one tile, not the MCU."""
import time

import numpy as np
import pytest

from enx_media._native import _core
from enx_media.mcu.layout import tiles
from enx_media.mcu.pipeline import Mcu, Output
from enx_media.sfu import Worker
from mcu_util import TONES, Source, Sources, Watcher, colour_at, near, tone_levels
from rtp_util import PLAIN, Peer

W, H = 640, 360


@pytest.fixture()
def worker():
    w = Worker("127.0.0.1", 0)
    yield w
    w.stop()


def make_mcu(worker, layout="grid", codec="vp8", small_out=None):
    video = worker.create_direct_producer(codec, ssrc=0x9001)
    audio = worker.create_direct_producer("opus", ssrc=0x9002)
    mcu = Mcu(worker, Output(video, 0x9001, 96), Output(audio, 0x9002, 111), width=W, height=H, fps=15,
              layout=layout, bitrate=800_000, threads=1, codec=codec, small_out=small_out, small_size=(W // 2, H // 2))
    return mcu, video, audio


def add(mcu, worker, sources, minus_for=()):
    minus = {}
    for k, s in enumerate(sources):
        out = None
        if k in minus_for:
            out = Output(worker.create_direct_producer("opus", ssrc=0x9100 + k), 0x9100 + k, 111)
            minus[k] = out.producer
        mcu.add_input(f"p{k}", f"pub {k}", video=s.video, audio=s.audio, minus=out)
    return minus


def wait_for(watcher, ok, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        watcher.watch(0.2)
        if watcher.picture is not None and ok(watcher.picture):
            return True
    return False


def tiles_show(picture, sources, layout="grid"):
    return all(near(colour_at(picture, W, H, *t), s.colour)
               for s, t in zip(sources, tiles(layout, len(sources), W, H)))


def test_four_colours_in_their_tiles_four_tones_in_the_mix_and_mix_minus(worker):
    mcu, video, audio = make_mcu(worker)
    sources = [Source(worker, k) for k in range(4)]
    minus = add(mcu, worker, sources, minus_for=(0,))
    seen, heard, own = Watcher(worker, video, "video"), Watcher(worker, audio, "audio"), Watcher(worker, minus[0], "audio")
    mcu.start()
    try:
        with Sources(sources):
            assert wait_for(seen, lambda p: tiles_show(p, sources), 8), \
                [colour_at(seen.picture, W, H, *t) for t in tiles("grid", 4, W, H)] if seen.picture is not None else "nothing decoded"
            heard.watch(1.0)
            own.watch(0.1)
    finally:
        mcu.stop()
    assert seen.sizes == {(W, H)}
    full = tone_levels(heard.recent_pcm(1.0), TONES)
    assert all(v > 0.3 for v in full.values()), full
    mine = tone_levels(own.recent_pcm(1.0), TONES)
    assert mine[TONES[0]] < 0.05 and all(mine[f] > 0.3 for f in TONES[1:]), mine
    assert mcu.stats["decode_errors"] == 0 and mcu.stats["video_frames"] >= 15
    assert len(mcu.latency) >= 10 and min(mcu.latency) > 0      # input arrival -> composite sent (bench: figures)


def test_the_layout_follows_a_publisher_who_leaves_and_the_louder_speaker(worker):
    mcu, video, _ = make_mcu(worker)
    sources = [Source(worker, k, amplitude=1500) for k in range(4)]
    add(mcu, worker, sources)
    seen = Watcher(worker, video, "video")
    speakers = []
    mcu.on_speaker = speakers.append
    mcu.start()
    try:
        with Sources(sources) as feeding:
            assert wait_for(seen, lambda p: tiles_show(p, sources), 8)
            mcu.remove_input("p3")
            feeding.sources.remove(sources[3])
            assert wait_for(seen, lambda p: tiles_show(p, sources[:3]), 4), "the grid of three"
            # speaker layout: publisher 1 talks louder (by more than the hysteresis margin) and takes the large tile
            mcu.set_layout("speaker")
            sources[1].amplitude = 16000
            big = tiles("speaker", 3, W, H, speaker=1)[1]
            assert wait_for(seen, lambda p: near(colour_at(p, W, H, *big), sources[1].colour), 5), speakers
            # where the publishers' packets carry RFC 6464 levels (the room reads them), those decide:
            # publisher 2 is the loud one there, whatever its decoded energy says
            big = tiles("speaker", 3, W, H, speaker=2)[2]
            end = time.monotonic() + 5
            while not near(colour_at(seen.picture, W, H, *big), sources[2].colour):
                assert time.monotonic() < end, speakers
                mcu.set_levels({"p0": 90.0, "p1": 90.0, "p2": 10.0})
                seen.watch(0.2)
    finally:
        mcu.stop()
    assert speakers[-2:] == ["p1", "p2"]


def test_corrupt_input_freezes_one_tile_and_a_silent_input_becomes_a_placeholder(worker):
    mcu, video, audio = make_mcu(worker)
    sources = [Source(worker, k) for k in range(4)]
    add(mcu, worker, sources)
    seen, heard = Watcher(worker, video, "video"), Watcher(worker, audio, "audio")
    mcu.start()
    try:
        with Sources(sources) as feeding:
            assert wait_for(seen, lambda p: tiles_show(p, sources), 8)
            sources[0].corrupt_video = True
            sources[1].frame = sources[1].frame.copy()
            sources[1].frame[:180] = 200                   # publisher 1's picture changes: others still move
            t1 = tiles("grid", 4, W, H)[1]
            assert wait_for(seen, lambda p: colour_at(p, W, H, *t1)[0] > 180, 4)
            assert mcu.stats["decode_errors"] > 0 or mcu.stats["keyframe_requests_out"] > 0
            sources[3].corrupt_audio = True               # garbage Opus: the others are still heard
            frames = mcu.stats["audio_frames"]
            heard.watch(1.5)
            levels = tone_levels(heard.recent_pcm(1.0), TONES)
            assert all(levels[f] > 0.2 for f in TONES[:3]), levels
            assert mcu.stats["audio_frames"] >= frames + 60
            feeding.sources.remove(sources[2])            # publisher 2 stops sending: last frame, then grey
            t2 = tiles("grid", 4, W, H)[2]
            assert wait_for(seen, lambda p: near(colour_at(p, W, H, *t2), (60, 128, 128)), 6)
        frames = mcu.stats["video_frames"]
        time.sleep(0.5)
        assert mcu.stats["video_frames"] > frames               # still running with no input at all
    finally:
        mcu.stop()
    assert not np.isnan(mcu.stats["busy_s"])


def test_audio_and_video_of_the_output_stay_in_sync(worker):
    """A flash and a beep at the same instant at one input (white from video pts 2.0 s, a loud tone from
    sample 96000, silence before): in the output, the first composite showing the white tile and the first
    loud mix sample are at RTP times (both on the MCU's one clock) within 80 ms of each other; and a
    subscriber that lines its streams up by their sender reports (RFC 3550 §6.4.1: RTP time to NTP per
    stream) finds them within 80 ms of each other too."""
    mcu, video, audio = make_mcu(worker)
    sources = [Source(worker, 0), Source(worker, 1)]
    sources[0].event_s = 2.0
    add(mcu, worker, sources)
    seen, heard = Watcher(worker, video, "video"), Watcher(worker, audio, "audio")
    sub = Peer(worker, PLAIN)
    worker.create_consumer(sub.transport, video, 0x9501, 96, 90000)     # numbering from its first packet:
    worker.create_consumer(sub.transport, audio, 0x9502, 111, 48000)    # timestamps as the producer's
    tile = tiles("grid", 2, W, H)[0]
    mcu.start()
    try:
        with Sources(sources):
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                seen.read()
                heard.read()
                time.sleep(0.01)
    finally:
        mcu.stop()
    flash = next(ts for ts, pic in seen.timeline if colour_at(pic, W, H, *tile)[0] > 200) / 90000
    loud = [(ts, np.flatnonzero(np.abs(pcm.astype(np.int32)) > 8000)) for ts, pcm in heard.timeline]
    ts, where = next((ts, w) for ts, w in loud if len(w))
    beep = (ts + where[0]) / 48000
    print(f"output A/V offset at the event: video {flash:.3f} s, audio {beep:.3f} s, {1e3 * (flash - beep):+.0f} ms")
    assert abs(flash - beep) < 0.08
    worker.native.send_sender_reports()
    time.sleep(0.05)
    reports = {r["ssrc"]: r for d in sub.take() if d[1] == 200 for r in _core.parse_rtcp(d) if r["type"] == "sr"}

    def wall(ssrc, ts, clock):       # the NTP time (seconds) a receiver gives RTP time ts of that stream
        sr = reports[ssrc]
        return sr["ntp"] / 2 ** 32 + ((ts - sr["rtp_timestamp"] + 2 ** 31) % 2 ** 32 - 2 ** 31) / clock

    flash_ts = next(ts for ts, pic in seen.timeline if colour_at(pic, W, H, *tile)[0] > 200)
    by_reports = wall(0x9501, flash_ts, 90000) - wall(0x9502, ts + int(where[0]), 48000)
    print(f"... as a subscriber lines them up by the sender reports: {1e3 * by_reports:+.0f} ms")
    assert abs(by_reports) < 0.08
    sub.close()


def test_h264_at_two_sizes_and_the_small_one_only_while_wanted(worker):
    small = worker.create_direct_producer("h264", ssrc=0x9003)
    mcu, video, _ = make_mcu(worker, codec="h264", small_out=Output(small, 0x9003, 102))
    sources = [Source(worker, k) for k in range(2)]
    add(mcu, worker, sources)
    big, little = Watcher(worker, video, "video", "h264"), Watcher(worker, small, "video", "h264")
    mcu.start()
    try:
        with Sources(sources):
            assert wait_for(big, lambda p: tiles_show(p, sources), 8)
            little.watch(1.0)
            mcu.set_layers([False, True])    # nobody receives it: no longer encoded
            time.sleep(0.5)
            frames = mcu.stats["small_frames"]
            time.sleep(1.0)
            assert mcu.stats["small_frames"] == frames
            mcu.set_layers([True, True])
            time.sleep(1.0)
            assert mcu.stats["small_frames"] > frames
    finally:
        mcu.stop()
    assert big.sizes == {(W, H)} and little.sizes == {(W // 2, H // 2)}
    x, y, w, h = tiles("grid", 2, W // 2, H // 2)[1]
    assert near(colour_at(little.picture, W // 2, H // 2, x, y, w, h), sources[1].colour)
    assert mcu.stats["decode_errors"] == 0
