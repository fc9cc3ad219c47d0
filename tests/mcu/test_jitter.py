"""The MCU's input buffers (enx_media.mcu.jitter). Video on real encoded video: aiortc's VP8 and H.264
encoders and packetizers make the packets; the frames that come out decode with PyAV. Reordering within
and across frames, duplicates, late packets, a loss that is never repaired (given up after the depth, the
decoder waits for a key frame and one is asked for), a repair that comes in time, and garbage."""
import fractions
import os
import random

import av
import numpy as np
import pytest
from aiortc.codecs import H264Encoder, Vp8Encoder

from enx_media._native import _core
from enx_media.mcu.jitter import MAX_DEPTH_S, MIN_DEPTH_S, FrameBuffer


def stream(codec, n=30, size=(320, 180), key_at=()):
    """[(packet, frame index)] of n frames of a moving picture, as a sender packetizes them."""
    enc = Vp8Encoder() if codec == "vp8" else H264Encoder()
    out, seq = [], 65500                 # across the 16-bit wrap
    w, h = size
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, (i * 7) % w:(i * 7) % w + 20] = 255
        img[:, :, 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, ts = enc.encode(f, force_keyframe=i in key_at)
        for k, p in enumerate(payloads):
            out.append((_core.write_rtp(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts, ssrc=1,
                                        payload=p, marker=int(k == len(payloads) - 1)), i))
            seq += 1
    return out


def decode(codec, frames):
    ctx = av.CodecContext.create("vp8" if codec == "vp8" else "h264", "r")
    pictures = []
    for f in frames:
        pictures += ctx.decode(av.Packet(f.data))
    return pictures


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_reordered_and_repeated_packets_give_every_frame_in_order_and_they_decode(codec):
    packets = stream(codec)
    rng = random.Random(1)
    shuffled = []
    for i in range(0, len(packets), 4):                 # reorder within groups of 4 (across frames too)
        group = packets[i:i + 4]
        rng.shuffle(group)
        shuffled += group + ([group[0]] if i % 12 == 0 else [])      # and some duplicates
    buf, frames, t = FrameBuffer(codec), [], 0.0
    for p, _ in shuffled:
        buf.push(p, t)
        frames += buf.pop(t)
        t += 0.004
    frames += buf.pop(t + 1)
    assert len(frames) == 30 and [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)
    assert frames[0].keyframe and buf.duplicates > 0 and buf.frames_dropped == 0
    assert len(decode(codec, frames)) >= 29


def test_a_loss_never_repaired_is_given_up_after_the_depth_and_a_key_frame_is_asked_for():
    packets = stream("vp8", key_at=(20,))
    lost = next(i for i, (_, idx) in enumerate(packets) if idx == 10)
    buf, frames, t = FrameBuffer("vp8"), [], 0.0
    waited = None
    for i, (p, idx) in enumerate(packets):
        if i != lost:
            buf.push(p, t)
        got = buf.pop(t)
        frames += got
        if buf.keyframe_needed and waited is None:
            waited = t
        t += 1 / 30 / 2
    frames += buf.pop(t + 1)
    indexes = sorted({idx for _, idx in packets if idx < 10}) + list(range(20, 30))
    assert len(frames) == len(indexes), "frames 10-19 are held back: 10 lost a packet, 11-19 need it"
    assert buf.frames_dropped >= 9 and not buf.keyframe_needed, "the key frame at 20 ended the wait"
    assert waited is not None
    assert len(decode("vp8", frames)) >= len(frames) - 1


def test_a_repair_in_time_is_used_and_late_packets_are_counted():
    packets = stream("vp8", n=10)
    buf, frames = FrameBuffer("vp8"), []
    held = packets[5]
    for i, (p, _) in enumerate(packets):
        if i != 5:
            buf.push(p, i * 0.01)
        frames += buf.pop(i * 0.01)
    buf.push(held[0], 0.1 + MIN_DEPTH_S / 4)            # the retransmission, within the depth
    frames += buf.pop(0.2)
    assert len(frames) == 10 and buf.frames_dropped == 0
    buf.push(packets[2][0], 0.3)                          # a retransmission nobody needed
    assert buf.duplicates == 1, "a repeat of a packet it had"


def test_the_depth_follows_the_jitter_within_bounds_and_garbage_is_counted():
    packets = stream("vp8", n=40)
    calm, rough = FrameBuffer("vp8"), FrameBuffer("vp8")
    rng = random.Random(2)
    for i, (p, idx) in enumerate(packets):
        calm.push(p, idx / 30)
        rough.push(p, idx / 30 + rng.uniform(0, 0.06))
    assert calm.depth == MIN_DEPTH_S and MIN_DEPTH_S < rough.depth <= MAX_DEPTH_S
    for _ in range(200):
        rough.push(os.urandom(random.randrange(0, 40)), 2.0)
    assert rough.malformed > 0
    with pytest.raises(ValueError):
        FrameBuffer("opus")


def test_the_audio_buffer_reorders_skips_a_loss_after_its_depth_and_drops_repeats():
    from enx_media.mcu.jitter import AudioBuffer
    from rtp_util import rtp
    buf = AudioBuffer()
    pkts = [rtp((65534 + i) & 0xFFFF, 960 * i, 0x77, payload=b"opus%d" % i, pt=111) for i in range(6)]
    t = 10.0
    for i in (0, 2, 1, 1, 4, 5):                       # 1 late within the depth, then repeated; 3 never comes
        buf.push(pkts[i], t + 0.02 * i)
    assert buf.pop(t + 0.085) == [b"opus0", b"opus1", b"opus2"]   # 4 waits: 3 may still come
    assert buf.pop(t + 0.08 + MIN_DEPTH_S + 0.001) == [b"opus4", b"opus5"]
    assert buf.duplicates == 1 and buf.lost == 1
    buf.push(pkts[3], t + 0.5)                         # too late now
    buf.push(b"\x80garbage", t + 0.5)
    assert buf.pop(t + 1) == [] and buf.late == 1 and buf.malformed == 1
