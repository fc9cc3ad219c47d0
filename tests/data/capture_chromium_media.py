"""Recapture tests/data/chromium_simulcast_rtp.json and tests/data/chromium_dtls_client_hello.json (run by
hand, not by the suite):

    .venv/bin/python tests/data/capture_chromium_media.py [--seconds 40] [--packets 30]

An ICE-lite/DTLS node runs in this process (enx_media.webrtc.server.WebRtcServer on 127.0.0.1) behind a
userspace UDP relay on 127.0.0.1 that records every datagram. Headless Chromium (fake camera 1280x720, the
simulcast publish of capture_simulcast_offer.py) gets the node's answer with the candidate port changed to
the relay's and with the offer's rids accepted (a=rid:q/h/f recv, a=simulcast:recv q;h;f), so that it
sends all three layers. Once DTLS completes, the SRTP keys of the node's transport decrypt what Chromium
sent: the first --packets RTP packets of each SSRC are saved (plaintext, hex), with the extmap IDs of the
offer; the DTLS datagrams Chromium sent before the node's first answer (its ClientHello) are saved as they
came. A producer is made for each SSRC the core names in an unknown-SSRC event (so that the core sends
transport-cc feedback and Chromium's bandwidth estimate grows enough for layers h and f); nothing consumes
them, so the node forwards nothing; nothing leaves 127.0.0.1.
"""
import argparse
import asyncio
import datetime as dt
import json
import pathlib
import selectors
import socket
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import rtp_util  # noqa: E402
from capture_simulcast_offer import chromium_version, offer_in  # noqa: E402
from enx_media._native import _core  # noqa: E402
from enx_media.webrtc import sdp  # noqa: E402
from enx_media.webrtc.server import WebRtcServer  # noqa: E402
from media_util import chromium_page  # noqa: E402

RIDS = ("q", "h", "f")
LIBSRTP = {spec[0]: spec[1] for spec in (rtp_util.GCM, rtp_util.CM, rtp_util.GCM256)}


class Relay(threading.Thread):
    """127.0.0.1: Chromium talks to `port`; each Chromium address gets its own socket towards the node (so
    the node sees one 5-tuple per candidate pair). Every datagram is recorded: (seconds, direction, bytes)
    with direction "c2n" (Chromium -> node) or "n2c"."""

    def __init__(self, node_port: int):
        super().__init__(daemon=True)
        self.node = ("127.0.0.1", node_port)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.front, selectors.EVENT_READ, None)
        self.back: dict[tuple, socket.socket] = {}
        self.log: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.is_set():
            for key, _ in self.sel.select(0.1):
                sock = key.fileobj
                data, addr = sock.recvfrom(65536)
                if key.data is None:                      # from Chromium
                    back = self.back.get(addr)
                    if back is None:
                        back = self.back[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.bind(("127.0.0.1", 0))
                        self.sel.register(back, selectors.EVENT_READ, addr)
                    self._record("c2n", data)
                    back.sendto(data, self.node)
                else:                                     # from the node, for the Chromium address key.data
                    self._record("n2c", data)
                    self.front.sendto(data, key.data)

    def _record(self, direction: str, data: bytes) -> None:
        with self.lock:
            self.log.append((time.monotonic() - self.t0, direction, data))

    def snapshot(self) -> list[tuple[float, str, bytes]]:
        with self.lock:
            return list(self.log)


def accept_simulcast(answer: str, mid: str) -> str:
    """The node's answer with the video section `mid` accepting the offer's three rids."""
    out = []
    for line in answer.split("\r\n"):
        out.append(line)
        if line == f"a=mid:{mid}":
            out += [f"a=rid:{r} recv" for r in RIDS] + ["a=simulcast:recv " + ";".join(RIDS)]
    return "\r\n".join(out)


def is_rtp(d: bytes) -> bool:
    return len(d) >= 12 and 128 <= d[0] <= 191 and not 192 <= d[1] <= 223     # RFC 5761 §4


def client_hello(log) -> list[bytes]:
    """Chromium's DTLS datagrams before the node's first DTLS datagram."""
    out = []
    for _, direction, d in log:
        if 20 <= d[0] <= 63:
            if direction == "n2c":
                break
            out.append(d)
    return out


def decrypt(log, keys, ext_ids) -> dict[int, list[tuple[bytes, dict]]]:
    """Chromium's RTP packets per SSRC in arrival order, decrypted: [(plaintext, parse_rtp(plaintext))]."""
    (_lk, _ls), (rk, rs) = _core.split_keying_material(keys.material, keys.profile, True)
    rx = rtp_util.session(LIBSRTP[keys.profile], rk, rs, False)
    streams: dict[int, list] = {}
    for _, direction, d in log:
        if direction != "c2n" or not is_rtp(d):
            continue
        try:
            plain = rx.unprotect(d)
        except Exception:  # noqa: BLE001 - a replayed datagram (an ICE pair switch resend) is skipped
            continue
        h = _core.parse_rtp(plain, ext_ids)
        streams.setdefault(h["ssrc"], []).append((plain, h))
    return streams


async def capture(seconds: float, packets: int) -> dict:
    server = WebRtcServer("127.0.0.1", 0)
    server.start()
    relay = Relay(server.port)
    relay.start()
    try:
        async with chromium_page() as page:
            offer_sdp = (await offer_in(page))["sdp"]
            offer = sdp.parse(offer_sdp, "offer")
            video = next(m for m in offer.media if m.kind == "video")
            ext_ids = {}
            for m in offer.media:
                ext_ids.update(m.extensions)
            t = server.create_transport("publish", ext_ids)
            t.set_remote(offer.ice_ufrag, offer.fingerprint)
            # Producers for the SSRCs the core learns (as the router does): with them the core sends
            # transport-cc feedback, Chromium's bandwidth estimate leaves its start, and layers h and f start.
            learned = {}

            def on_event(event):
                u = rtp_util.unknown_ssrc(event)
                if u and u[1] not in learned and u[2] and not u[4] and t.native is not None:
                    codec = "vp8" if u[2] == video.mid else "opus"
                    learned[u[1]] = server.worker.create_producer(t.native, u[1], codec)
            server.event_handlers.append(on_event)
            answer = sdp.write_answer(offer, ice_ufrag=t.ufrag, ice_pwd=t.pwd, fingerprint=server.fingerprint,
                                      ip="127.0.0.1", port=relay.port, accepted={m.mid: True for m in offer.media})
            answer = accept_simulcast(answer, video.mid)
            await page.evaluate("sdp => window.pc.setRemoteDescription({type: 'answer', sdp})", answer)
            end = time.monotonic() + 20
            while t.state != "connected" and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if t.state != "connected":
                raise RuntimeError(f"DTLS did not complete: state {t.state}, {server.counters}")
            keys = t.dtls.keys
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                streams = decrypt(relay.snapshot(), keys, ext_ids)
                rids = {h.get("rid") for pkts in streams.values() for _, h in pkts[:1]}
                if set(RIDS) <= rids and all(len(p) >= packets for p in streams.values()):
                    break
            log = relay.snapshot()
    finally:
        relay.stopped.set()
        await server.stop()
    streams = decrypt(log, keys, ext_ids)
    return dict(offer=offer_sdp, answer=answer, keys=keys, ext_ids=ext_ids, streams=streams,
                hello=client_hello(log), video_mid=video.mid, log=log)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0, help="longest wait for every layer (default 40)")
    ap.add_argument("--packets", type=int, default=30, help="packets kept per SSRC (default 30)")
    args = ap.parse_args()
    got = asyncio.run(capture(args.seconds, args.packets))
    version = chromium_version()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    streams = []
    for ssrc, pkts in got["streams"].items():
        first = next((h for _, h in pkts if h.get("mid") is not None), pkts[0][1])
        streams.append({
            "ssrc": ssrc, "payload_type": pkts[0][1]["payload_type"],
            "mid": first.get("mid"), "rid": first.get("rid"), "repaired_rid": first.get("repaired_rid"),
            "packets_seen": len(pkts), "packets": [p.hex() for p, _ in pkts[:args.packets]]})
    rtp_doc = {
        "what": "Chromium's first RTP packets per SSRC of a simulcast publish (VP8 q/h/f + Opus), SRTP "
                "removed; header extension IDs as in the offer (ext_ids: name -> id)",
        "chromium": version, "captured": when, "script": "tests/data/capture_chromium_media.py",
        "srtp_profile": got["keys"].profile, "video_mid": got["video_mid"], "ext_ids": got["ext_ids"],
        "offer": got["offer"], "answer": got["answer"], "streams": streams,
    }
    (HERE / "chromium_simulcast_rtp.json").write_text(json.dumps(rtp_doc, indent=1) + "\n")
    hello_doc = {
        "what": "Chromium's DTLS ClientHello as it reached the node: each UDP datagram in hex, in order",
        "chromium": version, "captured": when, "script": "tests/data/capture_chromium_media.py",
        "datagrams": [d.hex() for d in got["hello"]],
    }
    (HERE / "chromium_dtls_client_hello.json").write_text(json.dumps(hello_doc, indent=1) + "\n")
    print(f"{version}: profile {got['keys'].profile}, ClientHello in {len(got['hello'])} datagram(s) of "
          f"{[len(d) for d in got['hello']]} bytes")
    for s in streams:
        print(f"  ssrc {s['ssrc']:#010x} pt {s['payload_type']} mid {s['mid']!r} rid {s['rid']!r} "
              f"rrid {s['repaired_rid']!r}: {s['packets_seen']} packets, {len(s['packets'])} kept")


if __name__ == "__main__":
    main()
