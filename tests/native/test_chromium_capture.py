"""Chromium's own first packets of a simulcast publish (captured, SRTP removed: tests/data/README.md) fed
to a worker over a plain transport with the offer's extension IDs: the unknown-SSRC event of each stream
names the mid and rid that the packets' header extensions carry."""
import json
import pathlib

from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from rtp_util import PLAIN, Peer, unknown_ssrc

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
URIS = {"mid": "urn:ietf:params:rtp-hdrext:sdes:mid", "rid": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "repaired_rid": "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"}


def capture() -> dict:
    return json.loads((DATA / "chromium_simulcast_rtp.json").read_text())


def offer_rids(offer: str) -> list[str]:
    return [l.split(":", 1)[1].split()[0] for l in offer.split("\r\n") if l.startswith("a=rid:")]


def names_by_aiortc(doc, packet: bytes) -> tuple[str, str, str]:
    """(mid, rid, repaired rid) of a packet as aiortc's parser reads them (independent of the core)."""
    ext = HeaderExtensionsMap()
    ext.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=doc["ext_ids"][k], uri=u)
                                                     for k, u in URIS.items() if k in doc["ext_ids"]]))
    h = RtpPacket.parse(packet, ext).extensions
    return h.mid or "", h.rtp_stream_id or "", h.repaired_rtp_stream_id or ""


def test_capture_holds_every_layer_and_the_audio():
    doc = capture()
    assert offer_rids(doc["offer"]) == ["q", "h", "f"]
    first = {names_by_aiortc(doc, bytes.fromhex(s["packets"][0])) for s in doc["streams"]}
    assert {(doc["video_mid"], r, "") for r in ("q", "h", "f")} <= first
    assert any(mid != doc["video_mid"] and mid for mid, _, _ in first)           # Opus names its mid only


def test_unknown_ssrc_events_name_mid_and_rid_of_each_stream(worker):
    doc = capture()
    peer = Peer(worker, PLAIN, ext_ids=doc["ext_ids"])
    events = []
    worker.on_event = events.append
    for s in doc["streams"]:
        for p in s["packets"]:
            peer.send_rtp(bytes.fromhex(p))
        for _ in range(3):
            worker.poll_once(5)
    for _ in range(10):
        worker.poll_once(5)
    named = {}
    for e in events:
        u = unknown_ssrc(e)
        if u and u[0] == peer.transport.id:
            named.setdefault(u[1], u[2:])          # the first event of each SSRC (from its first packet)
    assert set(named) == {s["ssrc"] for s in doc["streams"]}
    for s in doc["streams"]:
        assert named[s["ssrc"]] == names_by_aiortc(doc, bytes.fromhex(s["packets"][0])), s["ssrc"]
    video = {named[s["ssrc"]][1] for s in doc["streams"] if named[s["ssrc"]][0] == doc["video_mid"]}
    assert set(offer_rids(doc["offer"])) <= video
    assert worker.stats["drops"]["unknown_ssrc"] == sum(len(s["packets"]) for s in doc["streams"])
    peer.close()


def test_chromium_layers_bind_by_rid_and_tell_their_picture_size(worker):
    """A producer of the offer's three encodings (q, h, f: rid -> SSRC learned from the packets): each
    video stream binds to its rid's encoding, and an encoding whose packets hold a key frame reports the
    picture size the key frame's header states (RFC 6386 §9.1), as aiortc's own VP8 depacketizer reads it."""
    from enx_media._native._core import parse_vp8_descriptor

    doc = capture()
    peer = Peer(worker, PLAIN, ext_ids=doc["ext_ids"])
    producer = worker.create_producer(peer.transport, 0, "vp8", mid=doc["video_mid"],
                                      encodings=[(r, 0) for r in offer_rids(doc["offer"])])
    expected = {}
    for s in doc["streams"]:
        for p in s["packets"]:
            packet = bytes.fromhex(p)
            peer.send_rtp(packet)
            if s["mid"] == doc["video_mid"]:
                payload = RtpPacket.parse(packet).payload
                if payload:
                    d = parse_vp8_descriptor(payload)
                    if d["keyframe"] and d["width"]:
                        expected[s["rid"]] = (d["width"], d["height"])
        for _ in range(3):
            worker.poll_once(5)
    for _ in range(10):
        worker.poll_once(5)
    by_rid = {e["rid"]: e for e in producer.encodings}
    assert {r: by_rid[r]["ssrc"] for r in by_rid} == {s["rid"]: s["ssrc"] for s in doc["streams"] if s["rid"]}
    assert expected, "the capture holds no key frame"
    for rid, size in expected.items():
        assert (by_rid[rid]["stats"]["width"], by_rid[rid]["stats"]["height"]) == size
    widths = [size[0] for rid, size in sorted(expected.items(), key=lambda kv: "qhf".index(kv[0]))]
    assert widths == sorted(widths)                       # lowest first, as the offer lists them
    peer.close()
