"""The handshake path fed garbage: STUN and DTLS datagrams from anywhere never raise, are counted, and
leave other transports working."""
import asyncio
import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from enx_media.webrtc.server import WebRtcServer
from rtp_util import stun_binding

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
ADDR = ("127.0.0.1", 40000)


def make_server():
    loop = asyncio.new_event_loop()  # the server only needs a loop for its timers; none run here
    server = WebRtcServer("127.0.0.1", 0)
    return server, loop


SERVER, _LOOP = make_server()
TRANSPORT = SERVER.create_transport("publish")
TRANSPORT.set_remote("abcd", ("sha-256", ":".join(["00"] * 32)))


def stun_message(attrs: list[tuple[int, bytes]], msg_type: int = 0x0001, length_delta: int = 0) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes((4 - len(v) % 4) % 4) for t, v in attrs)
    return struct.pack("!HHI12s", msg_type, max(0, len(body) + length_delta), 0x2112A442, b"t" * 12) + body


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 63))
def test_random_control_datagrams(data, first):
    SERVER._on_control(bytes([first]) + data, ADDR)
    assert SERVER.counters["control_errors"] == 0


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([0x0006, 0x0008, 0x8028, 0x0024, 0x0025, 0x8029, 0x802A, 0x0020,
                                           0x0009, 0xC057, 0x1234]),
                          st.binary(max_size=40)), max_size=6),
       st.sampled_from([0x0001, 0x0101, 0x0111, 0x0011, 0x3fff]), st.integers(-8, 8), st.booleans())
def test_structured_stun(attrs, msg_type, length_delta, our_ufrag):
    if our_ufrag:
        attrs = [(0x0006, f"{TRANSPORT.ufrag}:abcd".encode())] + attrs
    SERVER._on_control(stun_message(attrs, msg_type, length_delta), ADDR)
    assert SERVER.counters["control_errors"] == 0


def test_dtls_garbage_is_discarded_and_a_stalled_handshake_times_out(monkeypatch):
    import enx_media.webrtc.server as server_mod

    monkeypatch.setattr(server_mod, "HANDSHAKE_TIMEOUT", 0.3)

    async def scenario():
        server = WebRtcServer("127.0.0.1", 0)
        server.start()
        t = server.create_transport("publish")
        t.set_remote("abcd", ("sha-256", ":".join(["00"] * 32)))
        reasons = []
        t.on_closed = lambda tr, reason: reasons.append(reason)
        server._on_control(stun_binding(f"{t.ufrag}:abcd", t.pwd), ADDR)
        assert t.addr == ADDR and server.counters["stun_ok"] == 1
        # Records that are not DTLS are discarded silently (RFC 6347 §4.1.2.7), not fatal.
        server._on_control(bytes([22, 0xfe, 0xfd]) + bytes(10) + b"\x00\x30" + b"\x01" * 48, ADDR)
        server._on_control(bytes([22, 0xfe, 0xfd]) + b"garbage" * 20, ADDR)
        assert server.counters["control_errors"] == 0 and t.state == "connecting"
        await asyncio.sleep(0.6)
        assert t.state == "closed" and reasons == ["ICE/DTLS did not complete in time"]
        assert ADDR not in server.by_addr and server.counters["handshake_timeout"] == 1
        await server.stop()

    asyncio.run(scenario())


CHROME_LIKE_OFFER = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:0123456789012345678901
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=ssrc:1001 cname:x
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:0123456789012345678901
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF
a=setup:actpass
a=mid:1
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendonly
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 goog-remb
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc-group:FID 2001 2002
a=ssrc:2001 cname:x
a=ssrc:2002 cname:x
""".replace("\n", "\r\n")


def test_chrome_like_offer_parses_and_answers():
    from enx_media.webrtc import sdp

    offer = sdp.parse(CHROME_LIKE_OFFER, "offer")
    # the media SSRC of an FID group is the first one (the node does not negotiate RTX)
    assert [(m.mid, m.codec, m.ssrc) for m in offer.media] == [("0", "opus", 1001), ("1", "vp8", 2001)]
    assert offer.media[1].extensions == {"mid": 4, "abs_send_time": 3}
    answer = sdp.write_answer(offer, ice_ufrag="u", ice_pwd="p" * 22, fingerprint="AA", ip="127.0.0.1",
                              port=7882, accepted={"0": True, "1": True})
    assert "a=ice-lite" in answer and "a=setup:passive" in answer
    assert "a=rtpmap:97 rtx/90000" in answer and "a=fmtp:97 apt=96" in answer, "RTX accepted for VP8"
    parsed = sdp.parse(answer.replace("a=recvonly", "a=sendonly"), "answer").media[1]
    assert parsed.codec == "vp8" and parsed.rtx_pt == 97
    assert offer.media[1].rtx_pt == 97 and offer.media[1].rtx_ssrcs == {2001: 2002}


@FUZZ
@given(st.data())
def test_sdp_parser_only_raises_sdp_error(data):
    from enx_media.webrtc import sdp

    lines = CHROME_LIKE_OFFER.split("\r\n")
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "garble", "dup", "cut"]))
        if op == "drop":
            lines.pop(i)
        elif op == "garble":
            lines[i] = data.draw(st.text(max_size=60))
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        if not lines:
            lines = [""]
    try:
        offer = sdp.parse("\r\n".join(lines), "offer")
    except sdp.SdpError:
        return
    sdp.write_answer(offer, ice_ufrag="u", ice_pwd="p" * 22, fingerprint="AA", ip="127.0.0.1", port=7882,
                     accepted={m.mid: m.codec is not None for m in offer.media})


def test_dtls_before_the_peers_sdp_is_held_until_it_arrives():
    server = WebRtcServer("127.0.0.1", 0)
    t = server.create_transport("subscribe")
    server._on_control(stun_binding(f"{t.ufrag}:zzzz", t.pwd), ADDR)
    hello = bytes([22, 0xfe, 0xff]) + bytes(10) + b"\x00\x10" + bytes(16)
    server._on_control(hello, ADDR)
    assert t.dtls is None and len(t.held_dtls) == 1   # no certificate check possible yet: wait
    t.set_remote("zzzz", ("sha-256", ":".join(["00"] * 32)))
    assert t.held_dtls == [] and t.dtls is not None    # handed to DTLS once the answer is read
