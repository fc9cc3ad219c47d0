#!/usr/bin/env python3
"""The lecture MCU end to end (issue 11's end-to-end benchmark): two moderators' real VP8 (640x360, 30 fps)
and Opus go into the MCU, its output (the 1280x720 composite and its 640x360 second size, the full mix)
fans out to N subscribers (the lecture fan-out benchmark's sink), in real time.

Three processes on 127.0.0.1, as in bench/lecture_fanout.py:
  source     this process: the two moderators' packets over SRTP (AES-128-GCM), paced like cameras and
             microphones (pre-encoded with libvpx and libopus, so the source costs little);
  node       an sfu Worker draining on its own thread, the real `mcu.pipeline.Mcu` on its thread (tap,
             jitter buffer, PyAV decode, compositing kernel, VP8 encode of both sizes, mix + Opus) and N
             subscriber transports, each with a consumer of the composite (3 in 4 on the 720p size, 1 in 4
             on the 360p one) and of the mix, its own GCM context and destination port;
  sink       N sockets counted natively (bench/lecture_fanout.py's sink).

Reported per N, medians over --repeats runs made in one sitting: the node process's CPU per second of media
(every thread: drain, fan-out, the MCU and its codec threads), the MCU thread's own CPU, loss (packets the
MCU fed for each subscriber's size and the mix, against what the sink counted), and latency from an input
frame's arrival (its last packet, in the core) to the last packet sent of the first composite showing it
(`Mcu.latency`: jitter buffer, decode, the wait for the next output tick, composite, encode, fan-out to
every subscriber), p50 / p95 / p99. N = 0 in the same sitting is the MCU alone: the difference is the fan-out.

    .venv/bin/python bench/mcu_fanout.py --subscribers 0,2000 --repeats 3 --json bench/mcu_fanout.json
"""
from __future__ import annotations

import argparse
import fractions
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aiortc.codecs.vpx import Vp8Encoder  # noqa: E402
from aiortc.rtp import RtpPacket  # noqa: E402

from bench.lecture_fanout import PROFILE, raise_nofile, sink_main  # noqa: E402
from bench.mcu_kernels import cpu  # noqa: E402
from enx_media._native import _core  # noqa: E402
from enx_media.mcu.pipeline import Mcu, Output  # noqa: E402
from enx_media.sfu import Worker  # noqa: E402

IW, IH, FPS = 640, 360, 30
LOOP_FRAMES = 90                       # 3 s of video, looped: a key frame every 3 s
VIDEO_SSRCS, AUDIO_SSRCS = (0x1001, 0x1002), (0x2001, 0x2002)
SMALL_SSRC, FULL_SSRC, MIX_SSRC = 0x3001, 0x3002, 0x3003
WARM_S = 3.0


def input_packets(k: int) -> tuple[list[list[bytes]], list[bytes]]:
    """Moderator k's media, RTP payloads: per video frame its VP8 payloads (a moving pattern of its own),
    per 20 ms an Opus payload (a tone of its own)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = IW, IH, "yuv420p"
    enc.time_base = fractions.Fraction(1, 90000)
    enc.bit_rate = 800_000
    enc.gop_size = LOOP_FRAMES
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packer = Vp8Encoder()
    yy, xx = np.mgrid[0:IH, 0:IW]
    video = []
    for i in range(LOOP_FRAMES):
        pic = np.empty((IH * 3 // 2, IW), np.uint8)
        pic[:IH] = ((xx + (4 + k) * i) ^ (yy + 2 * i)) & 0xFF
        pic[IH:] = 100 + 40 * k
        f = av.VideoFrame.from_ndarray(pic, format="yuv420p")
        f.pts = i * 3000
        if i == 0:
            f.pict_type = av.video.frame.PictureType.I
        for p in enc.encode(f):
            video.append(packer.pack(p)[0])
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48000, "mono", "s16"
    opus.bit_rate = 32000
    t = np.arange(48000) / 48000
    tone = (6000 * np.sin(2 * np.pi * (300 + 400 * k) * t)).astype(np.int16)
    audio = []
    for i in range(50):
        f = av.AudioFrame.from_ndarray(tone[i * 960:(i + 1) * 960].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        audio += [bytes(p) for p in opus.encode(f)]
    return video, audio


def node_main(n, up_key, down_keys, sink_ports, src_addr, conn, fanout_threads):
    raise_nofile(n + 256)
    w = Worker("127.0.0.1", 0, 16 * 1024 * 1024, fanout_threads=fanout_threads)
    t_in = w.create_transport(PROFILE, *up_key, *up_key)
    w.bind_transport(t_in, *src_addr)
    videos = [w.create_producer(t_in, s, "vp8") for s in VIDEO_SSRCS]
    audios = [w.create_producer(t_in, s, "opus") for s in AUDIO_SSRCS]
    composite = w.create_direct_producer("vp8", encodings=[("q", SMALL_SSRC), ("f", FULL_SSRC)])
    mix = w.create_direct_producer("opus", ssrc=MIX_SSRC)
    layers = []
    for i in range(n):
        key, salt = down_keys[i]
        t = w.create_transport(PROFILE, key, salt, key, salt)
        w.bind_transport(t, "127.0.0.1", sink_ports[i])
        c = w.create_consumer(t, composite, 0x100000 + i, 96, 90000, wait_keyframe=True)
        layer = 0 if i % 4 == 3 else 1
        w.set_target_encoding(c, layer)          # before its first packet: at once
        layers.append(layer)
        w.create_consumer(t, mix, 0x200000 + i, 111, 48000)
    # numbering from 0 (not the random start the room uses): the sink decrypts its samples with a fresh SRTP
    # session, which cannot know of a wrap (ROC) during the run
    mcu = Mcu(w, Output(composite, FULL_SSRC, 96, seq=0), Output(mix, MIX_SSRC, 111, seq=0), layout="grid",
              small_out=Output(composite, SMALL_SSRC, 96, seq=0))
    for k in range(2):
        mcu.add_input(f"m{k}", f"moderator {k}", video=videos[k], audio=audios[k])
    w.start_thread()
    mcu.start()
    conn.send(w.address)
    assert conn.recv() == "measure"
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0 = mcu.stats["busy_s"]
    mcu.latency.clear()
    assert conn.recv() == "stop"
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = mcu.stats["busy_s"] - busy0
    latency = sorted(mcu.latency)
    conn.send("stopped")
    assert conn.recv() == "report"           # the source has stopped: what was fed is final
    mcu.stop()
    fed = [e["stats"]["packets_in"] for e in composite.encodings]
    expected = sum(fed[layer] for layer in layers) + n * mix.stats["packets_in"]
    stats = dict(mcu.stats)
    w.stop()
    cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    conn.send((cpu_s, busy, latency, expected, fed, stats))


def q(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] if sorted_values else None


def run(n, seconds, inputs, fanout_threads):
    mp_ctx = mp.get_context("fork")
    up_key = (os.urandom(16), os.urandom(12))
    down_keys = [(os.urandom(16), os.urandom(12)) for _ in range(n)]
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.bind(("127.0.0.1", 0))
    sink = sink_parent = None
    ports = []
    if n:
        sink_parent, sink_child = mp_ctx.Pipe()
        sink = mp_ctx.Process(target=sink_main, args=(n, down_keys, sink_child, seconds + WARM_S + 120))
        sink.start()
        ports = sink_parent.recv()
    node_parent, node_child = mp_ctx.Pipe()
    node = mp_ctx.Process(target=node_main, args=(n, up_key, down_keys, ports, src.getsockname(), node_child,
                                                  fanout_threads))
    node.start()
    addr = node_parent.recv()
    tx = _core.SrtpContext(PROFILE, *up_key)
    seqs = [0, 0, 0, 0]
    start = time.monotonic()
    frame = audio = 0
    phase = "warm"
    measured_from = start
    while True:
        now = time.monotonic()
        if phase == "warm" and now - start >= WARM_S:
            node_parent.send("measure")
            measured_from, phase = now, "measure"
        elif phase == "measure" and now - measured_from >= seconds:
            node_parent.send("stop")
            media_s = now - measured_from
            break
        if now >= start + frame / FPS:
            for k, (video, _) in enumerate(inputs):
                payloads = video[frame % LOOP_FRAMES]
                burst = []
                for j, pl in enumerate(payloads):
                    pkt = RtpPacket(payload_type=96, sequence_number=seqs[k] & 0xFFFF, timestamp=(frame * 3000) & 0xFFFFFFFF,
                                    ssrc=VIDEO_SSRCS[k], marker=int(j == len(payloads) - 1), payload=pl)
                    burst.append(tx.protect(pkt.serialize()))
                    seqs[k] += 1
                for d in burst:
                    src.sendto(d, addr)
            frame += 1
        if now >= start + audio * 0.02:
            for k, (_, opus) in enumerate(inputs):
                pkt = RtpPacket(payload_type=111, sequence_number=seqs[2 + k] & 0xFFFF,
                                timestamp=(audio * 960) & 0xFFFFFFFF, ssrc=AUDIO_SSRCS[k], payload=opus[audio % len(opus)])
                src.sendto(tx.protect(pkt.serialize()), addr)
                seqs[2 + k] += 1
            audio += 1
        time.sleep(max(0.0, min(start + frame / FPS, start + audio * 0.02) - time.monotonic()))
    assert node_parent.recv() == "stopped"
    node_parent.send("report")
    cpu_s, busy, latency, expected, fed, stats = node_parent.recv()
    node.join()
    received, sink_cpu = 0, 0.0
    if n:
        counts, sampled, sample_ok, sink_cpu = sink_parent.recv()
        sink.join()
        received = sum(counts)
        assert sample_ok == sampled, "a sampled packet did not decrypt"
    return {"subscribers": n, "media_s": round(media_s, 2), "node_cpu_s_per_media_s": round(cpu_s / media_s, 3),
            "mcu_thread_cpu_s_per_media_s": round(busy / media_s, 3), "expected": expected, "received": received,
            "lost": expected - received if n else 0, "latency_p50_ms": round(q(latency, 0.5) * 1e3, 1),
            "latency_p95_ms": round(q(latency, 0.95) * 1e3, 1), "latency_p99_ms": round(q(latency, 0.99) * 1e3, 1),
            "composite_frames": len(latency), "packets_fed": {"360p": fed[0], "720p": fed[1]},
            "mcu": {k: stats[k] for k in ("video_frames", "video_late", "decode_errors", "keyframes_out")},
            "sink_cpu_s": round(sink_cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="0,2000", help="comma-separated N, run in this order each repeat")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window per run (after a warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fanout-threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    ns = [int(x) for x in args.subscribers.split(",")]
    inputs = [input_packets(k) for k in range(2)]
    runs: dict[int, list[dict]] = {n: [] for n in ns}
    for r in range(args.repeats):
        for n in ns:
            res = run(n, args.seconds, inputs, args.fanout_threads)
            runs[n].append(res)
            print(f"repeat {r + 1}, N={n}: node {res['node_cpu_s_per_media_s']} CPU-s per media-s "
                  f"(MCU thread {res['mcu_thread_cpu_s_per_media_s']}), lost {res['lost']} of {res['expected']}, "
                  f"latency p50/p95/p99 {res['latency_p50_ms']}/{res['latency_p95_ms']}/{res['latency_p99_ms']} ms",
                  flush=True)
    keys = ("node_cpu_s_per_media_s", "mcu_thread_cpu_s_per_media_s", "latency_p50_ms", "latency_p95_ms",
            "latency_p99_ms", "lost")
    summary = {n: {k: statistics.median(x[k] for x in runs[n]) for k in keys} for n in ns}
    out = {"cpu": cpu(), "command": " ".join(sys.argv), "inputs": f"2 x {IW}x{IH} VP8 + Opus",
           "output": "1280x720 + 640x360 VP8 (3 in 4 subscribers on 720p), Opus mix",
           "fanout_threads": args.fanout_threads, "medians": summary, "runs": runs}
    for n in ns:
        s = summary[n]
        print(f"N={n} (medians of {args.repeats}): node {s['node_cpu_s_per_media_s']} CPU-s per media-s, MCU thread "
              f"{s['mcu_thread_cpu_s_per_media_s']}, lost {s['lost']}, latency p50 {s['latency_p50_ms']} / "
              f"p95 {s['latency_p95_ms']} / p99 {s['latency_p99_ms']} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
