"""Recapture tests/data/chromium_simulcast_offer.sdp (run by hand, not by the suite):

    .venv/bin/python tests/data/capture_simulcast_offer.py

Headless Debian Chromium (the flags of tests/media_util.CHROMIUM_FLAGS) with its fake camera at 1280x720
adds a sendonly video transceiver with three simulcast encodings (rid q, h, f) and a sendonly audio
transceiver, and the text of createOffer() is written out. No node is involved; nothing leaves 127.0.0.1.
"""
import asyncio
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from media_util import CHROMIUM, chromium_page  # noqa: E402

# The page side, shared with capture_chromium_media.py: an RTCPeerConnection with the simulcast offer set
# as its local description, left in window.pc.
OFFER_JS = """async () => {
    const media = await navigator.mediaDevices.getUserMedia({
        video: {width: {exact: 1280}, height: {exact: 720}}, audio: true});
    const settings = media.getVideoTracks()[0].getSettings();
    const pc = new RTCPeerConnection();
    pc.addTransceiver(media.getVideoTracks()[0], {direction: 'sendonly', sendEncodings: [
        {rid: 'q', scaleResolutionDownBy: 4}, {rid: 'h', scaleResolutionDownBy: 2}, {rid: 'f'}]});
    pc.addTransceiver(media.getAudioTracks()[0], {direction: 'sendonly'});
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    window.pc = pc;
    return {sdp: offer.sdp, width: settings.width, height: settings.height};
}"""


def chromium_version() -> str:
    return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()


async def offer_in(page) -> dict:
    # getUserMedia wants a secure context: an http://localhost page, served by Playwright itself.
    await page.route("http://localhost/", lambda route: route.fulfill(body="<html></html>", content_type="text/html"))
    await page.goto("http://localhost/")
    got = await page.evaluate(OFFER_JS)
    assert (got["width"], got["height"]) == (1280, 720), got
    return got


async def main() -> None:
    async with chromium_page() as page:
        got = await offer_in(page)
    sdp = got["sdp"]
    assert "a=simulcast:send q;h;f" in sdp, sdp
    (HERE / "chromium_simulcast_offer.sdp").write_bytes(sdp.encode())
    print(f"{chromium_version()}: wrote chromium_simulcast_offer.sdp ({len(sdp)} bytes)")


if __name__ == "__main__":
    asyncio.run(main())
