"""Negotiation choices: what the node accepts from a publisher's offer, and what it offers a subscriber
(mids, SSRCs, payload types, header extension IDs). `sdp.py` reads and writes the text; this module
decides what goes in it."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from . import sdp

# Header extensions offered to subscribers: name -> (the ID the node picks, URI, kinds). The answer
# echoes the IDs it keeps (RFC 8285 §5) and the core writes each forwarded packet's block with them.
# MID lets a receiver route an SSRC it has not seen signalled to its m-line (RFC 8843 §9.2: browsers
# do; aiortc 1.16 routes by the offer's a=ssrc lines and the payload type only). The core writes each
# consumer's own mid into every packet; audio level is copied.
# What the node offers subscribers: mid (routing), audio level, and for the downlink bandwidth estimator
# transport-cc (browsers: send-side estimation from their feedback) or abs-send-time (receivers that only
# send REMB, e.g. aiortc, whose own estimator reads it). One ID per extension across the BUNDLE.
SUBSCRIBER_EXTENSIONS = {
    "mid": (1, "urn:ietf:params:rtp-hdrext:sdes:mid", ("audio", "video")),
    "audio_level": (2, "urn:ietf:params:rtp-hdrext:ssrc-audio-level", ("audio",)),
    "transport_cc": (3, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                     ("audio", "video")),
    "abs_send_time": (4, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", ("video",)),
}


MAX_ENCODINGS = 3    # simulcast encodings per track the core keeps (and browsers send)


@dataclass
class PublishedTrack:
    mid: str
    kind: str
    codec: str
    ssrc: int | None    # None when the offer names none (simulcast): learned from the MID extension
    # simulcast: [(rid, ssrc)] lowest first; ssrc 0 until the core binds it from the rid extension
    encodings: list[tuple[str, int]] = field(default_factory=list)
    # RTX negotiated: (media payload type, RTX payload type), and the repair SSRC of each encoding (or of
    # the one stream) as the offer's FID groups name them (0: learned from repaired-rid)
    rtx: tuple[int, int] | None = None
    rtx_ssrcs: list[int] = field(default_factory=list)


@dataclass
class PublishPlan:
    accepted: dict[str, bool]           # mid -> the section is answered recvonly (else rejected)
    ext_ids: dict[str, int]             # header extension name -> the publisher's ID
    tracks: list[PublishedTrack] = field(default_factory=list)
    simulcast: dict[str, list[str]] = field(default_factory=dict)    # mid -> rids the answer receives


def plan_publish(offer: sdp.RemoteDescription) -> PublishPlan:
    """Accept every section that sends a codec the node forwards; raise ValueError if none does."""
    plan = PublishPlan({}, {})
    for m in offer.media:
        ok = m.codec is not None and m.direction in ("sendonly", "sendrecv") and m.port != 0
        plan.accepted[m.mid] = ok
        if ok and m.codec is not None:
            plan.ext_ids.update(m.extensions)
            track = PublishedTrack(m.mid, m.kind, m.codec, m.ssrc)
            if m.kind == "video" and m.rids and "rid" in m.extensions:
                rids = m.rids[:MAX_ENCODINGS]    # a fourth and later are left out of the answer
                track.encodings = [(rid, 0) for rid in rids]
                track.ssrc = None                # whichever SSRC the browser listed: bound by rid
                plan.simulcast[m.mid] = rids
            elif m.kind == "video" and len(m.sim_ssrcs) > 1:
                track.encodings = [("", ssrc) for ssrc in m.sim_ssrcs[:MAX_ENCODINGS]]
            if m.rtx_pt is not None and m.payload_type is not None:
                track.rtx = (m.payload_type, m.rtx_pt)
                media = [s for _, s in track.encodings] if track.encodings else [track.ssrc or 0]
                track.rtx_ssrcs = [m.rtx_ssrcs.get(s, 0) if s else 0 for s in media]
            plan.tracks.append(track)
    if not plan.tracks:
        raise ValueError("the offer has no audio (Opus) or video (VP8/H.264) section to publish")
    return plan


def check_offer_roles(offer: sdp.RemoteDescription) -> None:
    if offer.setup not in (None, "actpass", "active"):
        raise ValueError("the offer must let the node be the DTLS server (a=setup:actpass or active)")


def check_answer_roles(answer: sdp.RemoteDescription) -> None:
    if answer.setup not in (None, "active"):
        raise ValueError("the answer must take the DTLS client role (a=setup:active)")


def subscriber_section(mid: int, kind: str, codec: str, publisher_id: str, track_id: str) -> sdp.OutgoingMedia:
    """A sendonly section for one consumed track, with a fresh random SSRC (the core refuses one
    already used on the transport: SRTP nonces) and the header extensions for its kind."""
    extensions = [(ext_id, uri) for ext_id, uri, kinds in SUBSCRIBER_EXTENSIONS.values() if kind in kinds]
    ssrc = secrets.randbits(31) | 1
    rtx_ssrc = (secrets.randbits(31) & ~1) | 2 if codec in sdp.NODE_RTX else 0    # even: never the odd ssrc
    return sdp.OutgoingMedia(str(mid), kind, codec, ssrc, publisher_id, track_id, extensions=extensions,
                             rtx_ssrc=rtx_ssrc)


def consumer_rtp_parameters(codec: str) -> tuple[int, int]:
    """(payload type, clock rate) the node sends a codec with on subscribe transports."""
    _, pt, _, _ = sdp.NODE_CODECS[codec]
    return pt, sdp.CLOCK_RATES[codec]


def answered_rtx(answer: sdp.RemoteDescription) -> dict[str, int]:
    """mid -> the RTX payload type the answer kept for that section (only the one the node offered)."""
    return {m.mid: m.rtx_pt for m in answer.media
            if m.codec in sdp.NODE_RTX and m.rtx_pt == sdp.NODE_RTX[m.codec]}


def answered_extensions(answer: sdp.RemoteDescription) -> dict[str, dict[str, int]]:
    """mid -> the subscriber extensions the answer kept for that section (name -> ID). Only the IDs
    the node offered count: an answer that renumbers one loses it."""
    out = {}
    for m in answer.media:
        out[m.mid] = {name: m.extensions[name] for name, (ext_id, _, _) in SUBSCRIBER_EXTENSIONS.items()
                      if m.extensions.get(name) == ext_id}
    return out
