"""SDP of real clients: Chromium's simulcast publish offer, captured (tests/data/chromium_simulcast_offer.sdp,
see tests/data/README.md)."""
import pathlib

from enx_media.webrtc import sdp

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"


def simulcast_offer() -> str:
    return (DATA / "chromium_simulcast_offer.sdp").read_bytes().decode()


def test_chromium_simulcast_offer_text_has_rids_and_no_video_ssrc():
    lines = simulcast_offer().split("\r\n")
    start = next(i for i, l in enumerate(lines) if l.startswith("m=video"))
    end = next(i for i, l in enumerate(lines) if l.startswith("m=audio"))
    video = lines[start:end]
    assert [l for l in video if l.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]
    assert not [l for l in video if l.startswith(("a=ssrc:", "a=ssrc-group:"))]
    assert any(l.endswith(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") for l in video)


def test_chromium_simulcast_offer_parses_today_without_video_ssrc():
    """What the parser makes of it today: the video section has no SSRC (simulcast parsing, rid -> layer,
    is the next issue); the rid/mid extensions are negotiated so the core can learn the SSRCs."""
    text = simulcast_offer()
    offer = sdp.parse(text, "offer")
    assert offer.setup == "actpass" and offer.fingerprint[0] == "sha-256"
    video, audio = offer.media
    assert (video.kind, video.mid, video.direction, video.codec) == ("video", "0", "sendonly", "vp8")
    assert video.ssrc is None
    assert {"mid", "rid", "repaired_rid", "transport_cc"} <= set(video.extensions)
    ids = {l.split()[1]: int(l.split()[0].split(":")[1]) for l in text.split("\r\n") if l.startswith("a=extmap:")}
    assert video.extensions["mid"] == ids["urn:ietf:params:rtp-hdrext:sdes:mid"]
    assert video.extensions["rid"] == ids["urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"]
    audio_ssrc = next(int(l.split()[0].split(":")[1]) for l in text.split("\r\n") if l.startswith("a=ssrc:"))
    assert (audio.kind, audio.mid, audio.codec, audio.ssrc) == ("audio", "1", "opus", audio_ssrc)
    # the answer written today accepts both sections and names no simulcast (one layer, learned by MID)
    answer = sdp.write_answer(offer, ice_ufrag="u", ice_pwd="p" * 22, fingerprint="AA", ip="127.0.0.1",
                              port=7882, accepted={"0": True, "1": True})
    assert "a=simulcast" not in answer and "a=rid:" not in answer
    assert "a=extmap:%d urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" % video.extensions["rid"] in answer
