"""p2p room: the node relays SDP between the two; media flows peer to peer; a third join is refused."""
import asyncio

import pytest
from aiortc import RTCSessionDescription

from enx_media.client import SignalingError
from media_util import COLORS, Api, ColorTrack, peer_connection, receive_video


def test_p2p_media_bypasses_the_node(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "p2p"})
    before_in = api.metric("enx_media_worker_total", 'counter="packets_in"')

    async def scenario():
        alice = await api.joined(room["room_id"], "alice", "moderator")
        bob = await api.joined(room["room_id"], "bob", "participant")
        carol = api.client(room["room_id"], "carol", "participant")
        with pytest.raises(SignalingError) as full:
            await carol.join()
        assert full.value.code == 1429
        await carol.close()
        with pytest.raises(SignalingError) as no_sfu:
            await alice.publish([ColorTrack(COLORS[0])])
        assert no_sfu.value.code == 1403

        pc_a, pc_b = peer_connection(), peer_connection()
        pc_a.addTrack(ColorTrack(COLORS[3]))
        got = asyncio.get_running_loop().create_future()
        pc_b.on("track", lambda track: got.set_result(track))
        await pc_a.setLocalDescription(await pc_a.createOffer())
        await alice.request("relay", to=bob.participant_id,
                            payload={"type": "offer", "sdp": pc_a.localDescription.sdp})
        offer = (await bob.next_event("relay"))["payload"]
        assert offer["type"] == "offer"
        await pc_b.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc_b.setLocalDescription(await pc_b.createAnswer())
        await bob.request("relay", to=alice.participant_id,
                          payload={"type": "answer", "sdp": pc_b.localDescription.sdp})
        answer = (await alice.next_event("relay"))["payload"]
        await pc_a.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        track = await asyncio.wait_for(got, 20)
        assert await receive_video(track, COLORS[3], 10) >= 9
        await pc_a.close()
        await pc_b.close()
        await alice.leave()
        await bob.leave()

    asyncio.run(scenario())
    # Not one media packet reached the worker's socket for this room.
    assert api.metric("enx_media_worker_total", 'counter="packets_in"') == before_in
