#!/usr/bin/env python3
"""Forwarding throughput: one producer of 1200-byte RTP packets fanned out to N consumers.

For each (N, SRTP profile) the worker's receive buffer is filled with a burst of producer packets,
then the worker drains it (recvmmsg -> unprotect -> rewrite -> protect -> sendmmsg). Only the
forwarding thread's CPU time (time.thread_time) around drain() is counted; preparing and sending the
input happens outside the measured window. The baseline is raw_sendmmsg_baseline: the same number of
same-size datagrams to the same destinations with sendmmsg and nothing else, timed the same way.

Destinations are real UDP sockets bound on 127.0.0.1 that nobody reads, with the smallest receive
buffer the kernel allows and filled before measuring: every measured datagram goes through the whole
send path (route, skb, copy, socket lookup) and is then dropped at the full destination queue. That
keeps engine and baseline on the same footing (with half-empty queues the first run pays for enqueueing
and the second does not); real delivery to a waiting reader costs more, see lecture_fanout.py.

With UDP GSO (the default) the worker sends each consumer's copies of one receive batch as one
message (UDP_SEGMENT), so it makes fewer system calls than the per-datagram baseline and the ratio can
pass 1. --gso off measures the per-datagram path; --frame K feeds K packets per drain (a video frame
per receive batch, e.g. 4 at 1.2 Mbit/s) instead of whole bursts, so GSO groups are K long.

--simulcast measures the layer selector instead: three encodings of one producer (SSRCs interleaved in
the input), the consumers spread over them (consumer i on layer i % 3), against plain forwarding of the
same input packets by three one-encoding producers with the same consumers each; the two alternate
over --repeats runs and the medians and their ratio are reported.

--bwe gives every consumer transport-cc, as a browser subscriber negotiates it: each copy then carries its
transport's transport-wide sequence number and is recorded for the downlink estimator (ext/bwe.pxi).

    python bench/forwarding.py --quick --json bench/forwarding.json
    python bench/forwarding.py --quick --consumers 1000 --srtp gcm --frame 4 --gso off
    python bench/forwarding.py --quick --simulcast --consumers 10,100,1000 --srtp gcm --repeats 5
    python bench/forwarding.py --quick --bwe --consumers 10,100,1000 --srtp gcm --frame 4
"""
import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from enx_media._native import _core  # noqa: E402

PROFILES = {"gcm": "AEAD_AES_128_GCM", "sha1_80": "AES_CM_128_HMAC_SHA1_80", "none": "none"}
KEYS = {"AEAD_AES_128_GCM": (16, 12), "AES_CM_128_HMAC_SHA1_80": (16, 14), "none": (0, 0)}
PAYLOAD = 1200 - 12


def keys(profile):
    kl, sl = KEYS[profile]
    return os.urandom(kl), os.urandom(sl)


def run_case(n, srtp, sinks, target_out, gso=True, frame=0, layers=None, bwe=False):
    """layers None: one producer of one encoding. "simulcast": one producer of 3 encodings, consumer i on
    encoding i % 3. "plain": 3 producers of one encoding each, consumer i on producer i % 3. The last two
    get the same input packets (SSRCs 0x1000..0x1002 in turn) and send the same output."""
    profile = PROFILES[srtp]
    w = _core.NativeWorker("127.0.0.1", 0, 16 * 1024 * 1024, gso)
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.bind(("127.0.0.1", 0))
    src.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    up = keys(profile)
    t_in = w.create_transport(profile, *up, *keys(profile))
    w.bind_transport(t_in, *src.getsockname())
    ssrcs = [0x1000] if layers is None else [0x1000, 0x1001, 0x1002]
    if layers == "simulcast":
        one = w.create_producer(t_in, 0, "vp8", mid="v", encodings=[(r, x) for r, x in zip("qhf", ssrcs)])
        producers = [one] * 3
    else:
        producers = [w.create_producer(t_in, x, "vp8") for x in ssrcs]
    for i in range(n):
        t = w.create_transport(profile, *keys(profile), *keys(profile))
        w.bind_transport(t, *sinks[i].getsockname())
        c = w.create_consumer(t, producers[i % len(producers)], 0x20000 + i, 96,
                              ext_ids={"transport_cc": 3} if bwe else None)
        if layers == "simulcast":
            w.set_target_encoding(c, i % 3)      # before anything is sent: at once
    sender = _core.SrtpContext(profile, *up)
    burst = frame or max(1, min(1500, 20000 * len(ssrcs) // n))
    seq = 0
    cpu = 0.0
    expected_in = 0
    payload = b"\x10\x00" + b"\x42" * (PAYLOAD - 2)
    while w.stats["packets_out"] < target_out:
        pkts = []
        for _ in range(burst):
            k = len(ssrcs)
            p = _core.write_rtp(payload_type=96, sequence_number=(seq // k) & 0xffff,
                                timestamp=(seq // k) * 3000 & 0xffffffff, ssrc=ssrcs[seq % k], payload=payload)
            pkts.append(sender.protect(p))
            seq += 1
        for p in pkts:
            src.sendto(p, w.local_address)
        expected_in += burst
        t0 = time.thread_time()
        while w.wait(0):
            w.drain(1024)
        cpu += time.thread_time() - t0
    st = w.stats
    out_pkts = st["packets_out"]
    out_size = 1200 + (16 if profile.startswith("AEAD") else 10 if profile != "none" else 0)
    base_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    base_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    dests = [s.getsockname() for s in sinks[:n]]
    t0 = time.thread_time()
    sent = _core.raw_sendmmsg_baseline(base_sock.fileno(), dests, b"\x80" * out_size, out_pkts)
    base_cpu = time.thread_time() - t0
    base_sock.close()
    src.close()
    engine = out_pkts / cpu
    baseline = sent / base_cpu
    return {"consumers": n, "srtp": srtp, "gso": st["gso"], "frame": frame or None, "layers": layers,
            "gso_messages": st["gso_messages"], "send_calls": st["send_calls"],
            "engine_pps_per_cpu_s": round(engine),
            "baseline_pps_per_cpu_s": round(baseline), "ratio": round(engine / baseline, 3),
            "packets_in": st["packets_in"], "input_sent": expected_in, "packets_out": out_pkts,
            "drops": st["drops"]}


def plot(cases, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for srtp in PROFILES:
        cs = [c for c in cases if c["srtp"] == srtp]
        if cs:
            ax.plot([c["consumers"] for c in cs], [c["engine_pps_per_cpu_s"] for c in cs], "o-", label="engine, " + srtp)
    base = {}
    for c in cases:
        base.setdefault(c["consumers"], []).append(c["baseline_pps_per_cpu_s"])
    xs = sorted(base)
    ax.plot(xs, [sum(base[x]) / len(base[x]) for x in xs], "k--", label="raw sendmmsg baseline")
    ax.set_xscale("log")
    ax.set_xlabel("consumers")
    ax.set_ylabel("packets sent per CPU-second")
    ax.set_title("enx-media forwarding, 1200-byte packets, loopback")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer packets per case")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--png", metavar="PATH", help="plot (default: beside --json, or bench/forwarding.png)")
    ap.add_argument("--consumers", default="1,10,100,1000")
    ap.add_argument("--srtp", default="gcm,sha1_80,none")
    ap.add_argument("--gso", choices=("on", "off"), default="on", help="UDP GSO in the worker (default on)")
    ap.add_argument("--frame", type=int, default=0, metavar="K",
                    help="K packets per drain (one video frame per receive batch); default: large bursts")
    ap.add_argument("--simulcast", action="store_true",
                    help="the layer selector (3 encodings) against plain forwarding of the same packets")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side with --simulcast (medians)")
    ap.add_argument("--bwe", action="store_true",
                    help="consumers negotiate transport-cc: each copy carries its transport's transport-wide seq "
                         "and is kept for the downlink estimator (what a browser subscriber costs)")
    args = ap.parse_args()
    ns = [int(x) for x in args.consumers.split(",")]
    target = 60000 if args.quick else 400000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, max(ns) + 256)), hard))
    sinks = []
    for _ in range(max(ns)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        s.bind(("127.0.0.1", 0))
        sinks.append(s)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fill:
        for s in sinks:
            for _ in range(4):
                fill.sendto(b"\x00" * 1200, s.getsockname())
    if args.simulcast:
        return simulcast_cases(args, ns, sinks, target)
    cases = []
    for srtp in args.srtp.split(","):
        for n in ns:
            c = run_case(n, srtp, sinks, target, args.gso == "on", args.frame, bwe=args.bwe)
            cases.append(c)
            print("%5d consumers  srtp=%-7s gso=%-3s engine %9d pkt/cpu-s  baseline %9d  ratio %.2f" % (
                n, srtp, args.gso, c["engine_pps_per_cpu_s"], c["baseline_pps_per_cpu_s"], c["ratio"]), flush=True)
    out = {"cases": cases, "packet_bytes": 1200, "quick": args.quick, "gso": args.gso == "on",
           "frame": args.frame or None, "bwe": args.bwe}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "forwarding.png"))
    try:
        plot(cases, png)
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)


def simulcast_cases(args, ns, sinks, target):
    out = []
    for srtp in args.srtp.split(","):
        for n in ns:
            runs = {"plain": [], "simulcast": []}
            for _ in range(args.repeats):           # alternating: drift on a shared machine hits both
                for layers in ("plain", "simulcast"):
                    runs[layers].append(run_case(n, srtp, sinks, target, args.gso == "on", args.frame, layers))
            med = {k: statistics.median(c["engine_pps_per_cpu_s"] for c in v) for k, v in runs.items()}
            case = {"consumers": n, "srtp": srtp, "plain_pps_per_cpu_s": round(med["plain"]),
                    "simulcast_pps_per_cpu_s": round(med["simulcast"]),
                    "ratio": round(med["simulcast"] / med["plain"], 3), "repeats": args.repeats,
                    "drops": runs["simulcast"][-1]["drops"]}
            out.append(case)
            print("%5d consumers  srtp=%-7s plain %9d pkt/cpu-s  simulcast %9d  ratio %.3f  (medians of %d)" % (
                n, srtp, case["plain_pps_per_cpu_s"], case["simulcast_pps_per_cpu_s"], case["ratio"],
                args.repeats), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"simulcast": out, "quick": args.quick, "gso": args.gso == "on"}, f, indent=1)


if __name__ == "__main__":
    main()
