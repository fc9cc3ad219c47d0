"""RTX (RFC 4588) with real aiortc peers through lossy links (tests/shaper.py's relay on 127.0.0.1, 3 % of RTP
and RTCP lost at random): towards a subscriber, the packets its NACKs ask for come back on the RTX SSRC the
node's offer named (aiortc unwraps them); from a publisher, the retransmissions its RTX stream carries
repair the producer. Both decode their colour throughout."""
import asyncio

from media_util import COLORS, Api, ColorTrack, candidate_address, receive_video
from shaper import Shaper


def test_losses_both_ways_are_repaired_by_rtx(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})
    before = {k: api.metric("enx_media_worker_total", f'counter="{k}"') for k in ("rtx_in", "rtx_out")}

    async def scenario():
        clean = await api.joined(room["room_id"], "clean", "moderator")
        links, clients = [], [clean]
        try:
            await clean.publish([ColorTrack(COLORS[0])])
            node_addr = candidate_address(clean.publish_pcs[0].remoteDescription.sdp)
            down = Shaper(node_addr, lose_down=0.03, seed=3).__enter__()
            up = Shaper(node_addr, lose_up=0.03, seed=4).__enter__()
            links += [down, up]
            sub = api.client_for(api.token(room["room_id"], "lossy-sub", "participant"))
            sub.media_address = down.address
            clients.append(sub)
            await sub.join()
            await sub.subscribe()
            pub = api.client_for(api.token(room["room_id"], "lossy-pub", "participant"))
            pub.media_address = up.address
            clients.append(pub)
            await pub.join()
            await pub.publish([ColorTrack(COLORS[1])])
            assert "rtx/90000" in pub.publish_pcs[0].remoteDescription.sdp, "the node's answer keeps RTX"
            first = await sub.wait_track(await sub.wait_stream(clean.participant_id, "video"))
            second = await sub.wait_track(await sub.wait_stream(pub.participant_id, "video"))
            offer = sub.subscribe_pc.remoteDescription.sdp
            assert "a=ssrc-group:FID" in offer and "rtx/90000" in sub.subscribe_pc.localDescription.sdp
            got = await asyncio.gather(receive_video(first, COLORS[0], 150, timeout=30),
                                       receive_video(second, COLORS[1], 150, timeout=30))
            assert got[0] >= 145 and got[1] >= 145, got
            assert down.lost_down > 5 and up.lost_up > 5, "the links did lose packets"
        finally:
            for link in links:
                link.close()
            for c in clients:
                await c.leave()

    asyncio.run(scenario())
    after = {k: api.metric("enx_media_worker_total", f'counter="{k}"') for k in before}
    assert after["rtx_out"] > before["rtx_out"], "the subscriber's NACKs were answered in RTX form"
    assert after["rtx_in"] > before["rtx_in"], "the publisher's RTX repaired its stream"
