#!/usr/bin/env python3
"""Lecture fan-out: one moderator's VP8-like video (1.2 Mbit/s: ~110 packets/s of 1200 bytes) and
Opus-like audio (50 packets/s of 100 bytes) to N subscribers (default 2000), in real time.

Three processes on 127.0.0.1:
  source     this process: SRTP (AES-128-GCM) packets paced like a camera (30 frames/s) and Opus (20 ms);
  forwarder  a NativeWorker with one producer transport and N subscriber transports, each with its own
             GCM context and its own destination port, run by its own loop (NativeWorker.serve, the node's
             media thread); its CPU time is read with getrusage, its RSS growth per subscriber from /proc;
  sink       N sockets (RLIMIT_NOFILE raised), counted natively (poll() every 5 ms + recvmmsg); the last packet of
             every 100th subscriber is decrypted with pylibsrtp as an independent check.
Latency is measured inside the forwarder: CLOCK_MONOTONIC from the recvmmsg batch that brought a packet
to the return of the sendmmsg that sent the last copy of it, as a histogram in C (10 µs buckets).

    python bench/lecture_fanout.py --quick --json bench/lecture_fanout.json
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from enx_media._native import _core  # noqa: E402

PROFILE = "AEAD_AES_128_GCM"
VIDEO_SSRC, AUDIO_SSRC = 0x0A0A0A0A, 0x0B0B0B0B
VIDEO_PPS, AUDIO_PPS, FPS = 110, 50, 30
SAMPLE_EVERY = 100
# the sink polls every 5 ms instead of blocking, so the forwarder does not pay a loopback task wakeup
# per datagram (a remote subscriber would not cost it that); 2 packets per socket per poll at most
POLL_US = 5000


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def sink_main(n, down_keys, conn, max_seconds, gro=False):
    raise_nofile(n + 256)
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    counts, samples = _core.sink_count([s.fileno() for s in socks], max_seconds, 2.0, SAMPLE_EVERY, POLL_US,
                                      gro)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    import pylibsrtp
    ok = 0
    for i, data in samples.items():
        key, salt = down_keys[i]
        pol = pylibsrtp.Policy(key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                               srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
        plain = pylibsrtp.Session(policy=pol).unprotect(data)
        h = _core.parse_rtp(plain)
        if h["ssrc"] in (0x100000 + i, 0x200000 + i):
            ok += 1
    conn.send((counts, len(samples), ok, ru.ru_utime + ru.ru_stime))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def forwarder_main(n, up_key, down_keys, sink_ports, src_addr, conn, stop, gso=True, threads=1):
    raise_nofile(n + 256)
    w = _core.NativeWorker("127.0.0.1", 0, 16 * 1024 * 1024, gso, threads)
    rss0 = rss_bytes()
    t_in = w.create_transport(PROFILE, *up_key, *up_key)
    w.bind_transport(t_in, *src_addr)
    video = w.create_producer(t_in, VIDEO_SSRC, "vp8")
    audio = w.create_producer(t_in, AUDIO_SSRC, "opus")
    for i in range(n):
        key, salt = down_keys[i]
        t = w.create_transport(PROFILE, key, salt, key, salt)
        w.bind_transport(t, "127.0.0.1", sink_ports[i])
        w.create_consumer(t, video, 0x100000 + i, 96, 90000)
        w.create_consumer(t, audio, 0x200000 + i, 111, 48000)
    conn.send(w.local_address)
    # the node's media thread: the core's own loop (NativeWorker.serve, as Worker.start_thread(loop) runs it)
    notify, stop_fd = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    served = threading.Thread(target=w.serve, args=(notify, stop_fd, 20))
    served.start()
    stop.wait()
    os.eventfd_write(stop_fd, 1)
    served.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    # what the subscribers' transports and consumers hold once their packet histories have filled
    conn.send((cpu, w.latency_histogram(), w.stats, (rss_bytes() - rss0) / n))


def percentile(hist, q):
    total = sum(hist.values())
    acc = 0
    for upper in sorted(hist):
        acc += hist[upper]
        if acc >= q * total:
            return upper
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2000 subscribers for 10 s")
    ap.add_argument("--subscribers", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--gso", choices=("on", "off"), default="on",
                    help="UDP GSO in the forwarder (off: one datagram per sendmmsg entry, the old path)")
    ap.add_argument("--fanout-threads", type=int, default=1, metavar="N",
                    help="the forwarder fans each batch out on N threads (subscriber transports spread over them)")
    ap.add_argument("--sink-gro", action="store_true",
                    help="UDP_GRO on the sink sockets: GSO messages are queued whole, as with a NIC that segments "
                         "(USO); the sink still counts every datagram")
    args = ap.parse_args()
    n = args.subscribers
    seconds = 10.0 if args.quick else args.seconds
    mp_ctx = mp.get_context("fork")
    up_key = (os.urandom(16), os.urandom(12))
    down_keys = [(os.urandom(16), os.urandom(12)) for _ in range(n)]

    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.bind(("127.0.0.1", 0))
    sink_parent, sink_child = mp_ctx.Pipe()
    sink = mp_ctx.Process(target=sink_main, args=(n, down_keys, sink_child, seconds + 120, args.sink_gro))
    sink.start()
    ports = sink_parent.recv()
    fwd_parent, fwd_child = mp_ctx.Pipe()
    stop = mp_ctx.Event()
    fwd = mp_ctx.Process(target=forwarder_main,
                         args=(n, up_key, down_keys, ports, src.getsockname(), fwd_child, stop,
                               args.gso == "on", args.fanout_threads))
    fwd.start()
    worker_addr = fwd_parent.recv()

    tx = _core.SrtpContext(PROFILE, *up_key)
    vseq = aseq = sent = 0
    start = time.monotonic()
    next_v, next_a = start, start
    frame = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if now >= next_v:
            # ~3.67 packets per frame so that 30 frames/s carry 110 packets/s
            # an encoder hands the packetizer a whole frame: its packets leave back to back (a burst per
            # frame), so they are built first and then sent without Python work in between
            k = (frame + 1) * VIDEO_PPS // FPS - frame * VIDEO_PPS // FPS
            burst = []
            for j in range(k):
                desc = bytes([0x90 if j == 0 else 0x80, 0x80, frame & 0x7f])
                p = _core.write_rtp(payload_type=96, sequence_number=vseq & 0xffff, marker=int(j == k - 1),
                                    timestamp=(frame * 3000) & 0xffffffff, ssrc=VIDEO_SSRC,
                                    payload=desc + b"\x01" * (1200 - 12 - 16 - len(desc)))
                burst.append(tx.protect(p))
                vseq += 1
            for d in burst:
                src.sendto(d, worker_addr)
            sent += k
            frame += 1
            next_v = start + frame / FPS
        if now >= next_a:
            p = _core.write_rtp(payload_type=111, sequence_number=aseq & 0xffff, timestamp=(aseq * 960) & 0xffffffff,
                                ssrc=AUDIO_SSRC, payload=b"\xfc" + b"\x00" * (100 - 12 - 16 - 1))
            src.sendto(tx.protect(p), worker_addr)
            aseq += 1
            sent += 1
            next_a = start + aseq / AUDIO_PPS
        time.sleep(max(0.0, min(next_v, next_a) - time.monotonic()))
    media_seconds = time.monotonic() - start
    stop.set()
    cpu, hist, wstats, rss_per_sub = fwd_parent.recv()
    fwd.join()
    counts, sampled, sample_ok, sink_cpu = sink_parent.recv()
    sink.join()
    expected = sent * n
    received = sum(counts)
    out = {"subscribers": n, "seconds": round(media_seconds, 2), "sent": expected, "received": received,
           "lost": expected - received, "cpu_s_per_media_s": round(cpu / media_seconds, 3),
           "forwarder_rss_kib_per_subscriber": round(rss_per_sub / 1024, 1),
           "latency_p50_ms": percentile(hist, 0.5), "latency_p99_ms": percentile(hist, 0.99),
           "fanout_threads": args.fanout_threads, "sink_gro": args.sink_gro, "sink_cpu_s": round(sink_cpu, 2), "source_packets": sent, "forwarder_packets_out": wstats["packets_out"],
           "forwarder_drops": wstats["drops"], "forwarder_batches": wstats["batches"],
           "forwarder_send_calls": wstats["send_calls"], "gso": wstats["gso"],
           "gso_messages": wstats["gso_messages"], "gso_segments": wstats["gso_segments"],
           "gso_fallbacks": wstats["gso_fallbacks"], "samples_decrypted_ok": "%d/%d" % (sample_ok, sampled)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
