"""SDP of real clients: Chromium's simulcast publish offer, captured (tests/data/chromium_simulcast_offer.sdp,
see tests/data/README.md)."""
import pathlib

from enx_media.webrtc import negotiation, sdp

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


def test_chromium_simulcast_offer_is_answered_with_its_three_encodings():
    """The video section sends rids q, h, f (lowest first) and names no SSRC: the plan keeps three
    encodings bound later by the rid extension, and the answer receives them (a=rid recv, a=simulcast)."""
    text = simulcast_offer()
    offer = sdp.parse(text, "offer")
    assert offer.setup == "actpass" and offer.fingerprint[0] == "sha-256"
    video, audio = offer.media
    assert (video.kind, video.mid, video.direction, video.codec) == ("video", "0", "sendonly", "vp8")
    assert video.ssrc is None and video.rids == ["q", "h", "f"] and audio.rids == []
    assert {"mid", "rid", "repaired_rid", "transport_cc"} <= set(video.extensions)
    ids = {l.split()[1]: int(l.split()[0].split(":")[1]) for l in text.split("\r\n") if l.startswith("a=extmap:")}
    assert video.extensions["mid"] == ids["urn:ietf:params:rtp-hdrext:sdes:mid"]
    assert video.extensions["rid"] == ids["urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"]
    audio_ssrc = next(int(l.split()[0].split(":")[1]) for l in text.split("\r\n") if l.startswith("a=ssrc:"))
    assert (audio.kind, audio.mid, audio.codec, audio.ssrc) == ("audio", "1", "opus", audio_ssrc)

    plan = negotiation.plan_publish(offer)
    assert [(t.kind, t.encodings) for t in plan.tracks] == [("video", [("q", 0), ("h", 0), ("f", 0)]), ("audio", [])]
    answer = sdp.write_answer(offer, ice_ufrag="u", ice_pwd="p" * 22, fingerprint="AA", ip="127.0.0.1",
                              port=7882, accepted=plan.accepted, simulcast=plan.simulcast)
    video_answer = answer.split("m=audio")[0].split("m=video")[1]
    assert [l for l in video_answer.split("\r\n") if l.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"]
    assert "a=rid" not in answer.split("m=audio")[1]
    assert "a=extmap:%d urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" % video.extensions["rid"] in answer


def test_simulcast_lines_that_do_not_add_up_are_not_simulcast():
    """Paused (~) and alternative (a,b) rids, rids the simulcast line lists but never declares, a fourth
    encoding, and no simulcast line at all."""
    text = simulcast_offer()
    parse = lambda t: sdp.parse(t, "offer").media[0]
    assert parse(text.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,f;f")).rids == ["q", "h", "f"]
    assert parse(text.replace("a=simulcast:send q;h;f", "a=simulcast:send q;x;f")).rids == ["q", "f"]
    assert parse(text.replace("a=simulcast:send q;h;f\r\n", "")).rids == []
    four = text.replace("a=rid:f send", "a=rid:f send\r\na=rid:u send").replace(
        "a=simulcast:send q;h;f", "a=simulcast:send q;h;f;u")
    plan = negotiation.plan_publish(sdp.parse(four, "offer"))
    assert plan.simulcast["0"] == ["q", "h", "f"]
    no_rid_ext = "\r\n".join(l for l in text.split("\r\n") if "rtp-stream-id" not in l)
    assert negotiation.plan_publish(sdp.parse(no_rid_ext, "offer")).tracks[0].encodings == []
