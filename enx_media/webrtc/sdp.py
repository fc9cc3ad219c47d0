"""SDP for the node: read the client's offer or answer (aiortc's parser), write the node's answer or
offer (here, because the node's SDP is narrow and fixed: ICE-lite, passive DTLS, BUNDLE, rtcp-mux,
one codec per m-line, host candidate on the worker's single UDP port)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiortc import sdp as aiortc_sdp

# Header extensions the node reads on the publish side (URI -> name used by the native core).
HEADER_EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": "mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": "rid",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": "repaired_rid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": "abs_send_time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": "transport_cc",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": "audio_level",
}
# All of them are negotiated on the publish side. transport-cc matters most: the native core answers it
# with transport-wide feedback, from which the sender estimates its bandwidth (send-side BWE); without any
# feedback a browser stays at its 300 kbit/s start rate.
NEGOTIATED_EXTENSIONS = set(HEADER_EXTENSIONS)

# The payload types the node uses in the offers it writes (subscribe transport).
NODE_CODECS = {
    "vp8": ("video", 96, "VP8/90000", None),
    "h264": ("video", 102, "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    "opus": ("audio", 111, "opus/48000/2", "minptime=10;useinbandfec=1"),
}
CLOCK_RATES = {"vp8": 90000, "h264": 90000, "opus": 48000}
# RTX (RFC 4588) the node offers subscribers with each video codec: codec -> its RTX payload type
NODE_RTX = {"vp8": 97, "h264": 103}


class SdpError(Exception):
    pass


@dataclass
class OfferedMedia:
    mid: str
    kind: str
    direction: str
    codec: str | None            # chosen codec name (vp8, h264, opus) or None when nothing usable
    payload_type: int | None
    codec_line: str | None       # rtpmap text of the chosen codec
    fmtp: str | None
    feedback: list[str]
    extensions: dict[str, int]   # name -> id, among what the node negotiates
    extmap_lines: list[tuple[int, str]]
    ssrc: int | None             # media SSRC (first of an FID group), None for simulcast without a=ssrc
    port: int
    # Simulcast (RFC 8853): the rids it sends, in its a=simulcast order (lowest first, as browsers list
    # sendEncodings), or the SSRCs of an a=ssrc-group:SIM when it names no rids.
    rids: list[str] = field(default_factory=list)
    sim_ssrcs: list[int] = field(default_factory=list)
    # RTX (RFC 4588) for the chosen codec: its payload type (apt = payload_type), and each media SSRC's
    # repair SSRC from a=ssrc-group:FID
    rtx_pt: int | None = None
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)


@dataclass
class RemoteDescription:
    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]
    setup: str | None
    media: list[OfferedMedia] = field(default_factory=list)


def _setup_of(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("a=setup:"):
            return line.split(":", 1)[1].strip()
    return None


def parse(text: str, kind: str) -> RemoteDescription:
    """Parse a client's offer or answer; raises SdpError with what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise SdpError("SDP is empty")
    if not text.lstrip().startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser asserts; any failure is a bad SDP
        raise SdpError(f"malformed SDP ({type(exc).__name__}: {exc})") from None
    if not desc.media:
        raise SdpError("SDP has no media sections")
    first = desc.media[0]
    if first.ice is None or not first.ice.usernameFragment or not first.ice.password:
        raise SdpError("SDP lacks a=ice-ufrag / a=ice-pwd")
    fps = first.dtls.fingerprints if first.dtls else []
    fp = next((f for f in fps if f.algorithm.lower() == "sha-256"), fps[0] if fps else None)
    if fp is None:
        raise SdpError("SDP lacks a=fingerprint")
    out = RemoteDescription(first.ice.usernameFragment, first.ice.password, (fp.algorithm, fp.value),
                            _setup_of(text))
    sections = _media_sections(text)
    for index, m in enumerate(desc.media):
        if m.kind not in ("audio", "video"):
            continue  # data channels are not offered by the node
        mid = m.rtp.muxId
        if mid is None:
            raise SdpError(f"{m.kind} section without a=mid (BUNDLE needs it)")
        chosen = _choose_codec(m)
        exts = {}
        lines = []
        for e in m.rtp.headerExtensions:
            if e.uri in NEGOTIATED_EXTENSIONS:
                exts[HEADER_EXTENSIONS[e.uri]] = e.id
                lines.append((e.id, e.uri))
        fid = {int(g.items[0]): int(g.items[1]) for g in m.ssrc_group if g.semantic == "FID" and len(g.items) >= 2}
        media_ssrc = next(iter(fid), None)
        if media_ssrc is None and m.ssrc:
            media_ssrc = m.ssrc[0].ssrc
        codec, pt, rtpmap, fmtp, fb = chosen if chosen else (None, None, None, None, [])
        sim = next((g.items for g in m.ssrc_group if g.semantic == "SIM"), [])
        out.media.append(OfferedMedia(mid, m.kind, m.direction or "sendrecv", codec, pt, rtpmap, fmtp, fb,
                                      exts, lines, media_ssrc, m.port, _send_rids(sections[index]),
                                      [int(x) for x in sim], _rtx_for(m, pt), fid))
    if not out.media:
        raise SdpError("SDP has no audio or video section")
    return out


def _media_sections(text: str) -> list[list[str]]:
    """The a= lines of each m= section, in order (aiortc's parser keeps no rid or simulcast lines)."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            sections.append([])
        elif sections and line.startswith("a="):
            sections[-1].append(line[2:])
    return sections


def _send_rids(attributes: list[str]) -> list[str]:
    """The rids a section sends, in a=simulcast:send order; a paused (~) one is still an encoding, and
    of alternatives (a,b) the first is taken. Rids without a simulcast line, or not declared by
    a=rid:... send, are not simulcast."""
    declared = {a[4:].split()[0] for a in attributes if a.startswith("rid:") and a[4:].split()[1:2] == ["send"]}
    for a in attributes:
        parts = a.split()
        if a.startswith("simulcast:") and len(parts) >= 2 and parts[0] == "simulcast:send":
            order = [alt.split(",")[0].lstrip("~") for alt in parts[1].split(";")]
            return [r for r in dict.fromkeys(order) if r in declared]
    return []


def _choose_codec(m: aiortc_sdp.MediaDescription) -> tuple[str, int | None, str, str | None, list[str]] | None:
    wanted = ["opus"] if m.kind == "audio" else ["vp8", "h264"]
    for name in wanted:
        for c in m.rtp.codecs:
            if c.mimeType.split("/")[1].lower() != name:
                continue
            params = c.parameters or {}
            if name == "h264" and str(params.get("packetization-mode", "0")) != "1":
                continue  # the node's H.264 key-frame detection expects FU-A/STAP-A (mode 1)
            fmtp = ";".join(f"{k}={v}" if v is not None else k for k, v in params.items()) or None
            rtpmap = f"{c.mimeType.split('/')[1]}/{c.clockRate}" + (f"/{c.channels}" if c.channels else "")
            fb = []
            for f in c.rtcpFeedback:
                text = f.type + (f" {f.parameter}" if f.parameter else "")
                if text in ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"):
                    fb.append(text)
            return name, c.payloadType, rtpmap, fmtp, fb
    return None


def _rtx_for(m: aiortc_sdp.MediaDescription, pt: int | None) -> int | None:
    """The payload type of the section's RTX for payload type pt (a=fmtp:<rtx> apt=<pt>), if any."""
    if pt is None or m.kind != "video":
        return None
    for c in m.rtp.codecs:
        if c.mimeType.lower().endswith("/rtx") and str((c.parameters or {}).get("apt")) == str(pt):
            return c.payloadType
    return None


def _session_head(ice_ufrag: str, ice_pwd: str, fingerprint: str, mids: list[str], session_id: int) -> list[str]:
    return [
        "v=0",
        f"o=enx-media {session_id} 2 IN IP4 127.0.0.1",
        "s=enx-media",
        "t=0 0",
        "a=ice-lite",
        f"a=group:BUNDLE {' '.join(mids)}" if mids else "a=group:BUNDLE",
        "a=msid-semantic: WMS *",
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
    ]


def _transport_lines(ip: str, port: int, setup: str, with_candidate: bool) -> list[str]:
    # Every bundled section repeats the candidate: harmless, and a client that ignores BUNDLE still connects.
    lines = [f"c=IN IP4 {ip}", "a=rtcp-mux", f"a=setup:{setup}"]
    if with_candidate:
        lines += [f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host generation 0", "a=end-of-candidates"]
    return lines


def write_answer(offer: RemoteDescription, *, ice_ufrag: str, ice_pwd: str, fingerprint: str, ip: str,
                 port: int, accepted: dict[str, bool], simulcast: dict[str, list[str]] | None = None) -> str:
    """The node's answer to a publish offer. `accepted[mid]` False rejects that section (port 0);
    `simulcast[mid]` lists the rids the node receives for it."""
    simulcast = simulcast or {}
    session_id = secrets.randbits(62)
    mids = [m.mid for m in offer.media if accepted.get(m.mid)]
    lines = _session_head(ice_ufrag, ice_pwd, fingerprint, mids, session_id)
    for m in offer.media:
        if not accepted.get(m.mid) or m.codec is None:
            pts = m.payload_type if m.payload_type is not None else 0
            lines += [f"m={m.kind} 0 UDP/TLS/RTP/SAVPF {pts}", f"c=IN IP4 {ip}", "a=rtcp-mux", "a=setup:passive",
                      f"a=mid:{m.mid}", "a=inactive"]
            continue
        formats = f"{m.payload_type} {m.rtx_pt}" if m.rtx_pt is not None else f"{m.payload_type}"
        lines.append(f"m={m.kind} {port} UDP/TLS/RTP/SAVPF {formats}")
        lines += _transport_lines(ip, port, "passive", True)
        lines.append(f"a=mid:{m.mid}")
        for ext_id, uri in m.extmap_lines:
            lines.append(f"a=extmap:{ext_id} {uri}")
        lines.append("a=recvonly" if m.direction in ("sendonly", "sendrecv") else "a=inactive")
        rids = simulcast.get(m.mid, [])
        if rids:
            lines += [f"a=rid:{rid} recv" for rid in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
        lines.append(f"a=rtpmap:{m.payload_type} {m.codec_line}")
        if m.fmtp:
            lines.append(f"a=fmtp:{m.payload_type} {m.fmtp}")
        for fb in m.feedback:
            lines.append(f"a=rtcp-fb:{m.payload_type} {fb}")
        if m.rtx_pt is not None:
            lines += [f"a=rtpmap:{m.rtx_pt} rtx/90000", f"a=fmtp:{m.rtx_pt} apt={m.payload_type}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class OutgoingMedia:
    mid: str
    kind: str
    codec: str | None      # None: a section that is no longer used (port 0)
    ssrc: int
    stream_id: str         # msid stream: the publisher
    track_id: str          # msid track: the stream
    active: bool = True
    extensions: list[tuple[int, str]] = field(default_factory=list)   # (id, URI) offered
    rtx_ssrc: int = 0      # video: the SSRC its retransmissions use if the answer keeps RTX


def write_offer(media: list[OutgoingMedia], *, ice_ufrag: str, ice_pwd: str, fingerprint: str, ip: str,
                port: int, version: int) -> str:
    """The node's offer on a subscribe transport: one sendonly section per consumed stream."""
    live = [m for m in media if m.active]
    lines = _session_head(ice_ufrag, ice_pwd, fingerprint, [m.mid for m in live], 0x454E58 + version)
    for m in media:
        kind, pt, rtpmap, fmtp = NODE_CODECS[m.codec or ("opus" if m.kind == "audio" else "vp8")]
        if not m.active:
            # aiortc refuses any section without rtcp-mux and setup, even a disabled one.
            lines += [f"m={m.kind} 0 UDP/TLS/RTP/SAVPF {pt}", f"c=IN IP4 {ip}", "a=rtcp-mux", "a=setup:actpass",
                      f"a=mid:{m.mid}", "a=inactive", f"a=rtpmap:{pt} {rtpmap}"]
            continue
        rtx = NODE_RTX.get(m.codec or "") if m.rtx_ssrc else None
        lines.append(f"m={m.kind} {port} UDP/TLS/RTP/SAVPF {pt}" + (f" {rtx}" if rtx else ""))
        # actpass as the offerer (RFC 5763 §5); the answer must say active, the node is always the server.
        lines += _transport_lines(ip, port, "actpass", True)
        lines += [f"a=mid:{m.mid}", "a=sendonly", f"a=msid:{m.stream_id} {m.track_id}"]
        lines += [f"a=extmap:{ext_id} {uri}" for ext_id, uri in m.extensions]
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        if kind == "video":
            lines += [f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli", f"a=rtcp-fb:{pt} ccm fir",
                      f"a=rtcp-fb:{pt} goog-remb"]
        lines.append(f"a=rtcp-fb:{pt} transport-cc")
        if rtx:
            lines += [f"a=rtpmap:{rtx} rtx/90000", f"a=fmtp:{rtx} apt={pt}", f"a=ssrc-group:FID {m.ssrc} {m.rtx_ssrc}"]
        lines += [f"a=ssrc:{m.ssrc} cname:enx-{m.stream_id}", f"a=ssrc:{m.ssrc} msid:{m.stream_id} {m.track_id}"]
        if rtx:
            lines += [f"a=ssrc:{m.rtx_ssrc} cname:enx-{m.stream_id}",
                      f"a=ssrc:{m.rtx_ssrc} msid:{m.stream_id} {m.track_id}"]
    return "\r\n".join(lines) + "\r\n"
