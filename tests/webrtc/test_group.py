"""Group room: three aiortc clients publish VP8 + Opus through the node; each decodes the others."""
import asyncio
import time

import pytest

from enx_media.client import SignalingError
from media_util import (COLORS, Api, ColorTrack, ToneTrack, publish_offer, receive_audio, receive_video,
                        sendonly_offer, video_pair, without_lines)


def test_three_publishers_see_and_hear_each_other(node, creds):
    """Each client's subscribe transport is renegotiated as the others publish. It once failed about one
    run in five: aiortc 1.16 never starts the receivers of m-lines a renegotiation adds while its first
    ICE/DTLS connect runs, so the node offers again only once the transport is connected. Every
    forwarded packet carries the subscriber's own mid (the answer keeps the MID extension offered)."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 10})
    gauges = ("transports", "producers", "consumers")
    before = {g: api.metric("enx_media_worker_total", f'counter="{g}"') for g in gauges}

    async def scenario():
        clients = [api.client(room["room_id"], f"user{i}", "moderator" if i == 0 else "participant")
                   for i in range(3)]
        for c in clients:
            await c.join()
        for i, c in enumerate(clients):
            await c.publish([ColorTrack(COLORS[i]), ToneTrack()])
            await c.subscribe()
        try:
            checks = []
            for i, c in enumerate(clients):
                for j, other in enumerate(clients):
                    if i == j:
                        continue
                    vid = await c.wait_track(await c.wait_stream(other.participant_id, "video"))
                    aud = await c.wait_track(await c.wait_stream(other.participant_id, "audio"))
                    checks.append((i, j, receive_video(vid, COLORS[j], 15), receive_audio(aud, 25)))
            results = await asyncio.gather(*(asyncio.gather(v, a) for _, _, v, a in checks))
            for c in clients:
                assert "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid" in c.subscribe_pc.localDescription.sdp
            for (i, j, _, _), (video_ok, audio_ok) in zip(checks, results):
                assert video_ok >= 13, f"client {i} saw {video_ok}/15 frames of client {j}'s colour"
                assert audio_ok == 25, f"client {i} got {audio_ok}/25 audio frames from client {j}"
            users = api.http.get(f"/rooms/{room['room_id']}/users").json()
            assert users["total"] == 3
        finally:
            for c in clients:
                await c.leave()

    asyncio.run(scenario())
    assert api.http.get(f"/rooms/{room['room_id']}/users").json()["total"] == 0
    # 3 publishers x 2 streams x 2 receivers went through the native worker...
    assert api.metric("enx_media_worker_total", 'counter="packets_out"') > 0
    # ...and leaving released every native transport, producer and consumer they had.
    for _ in range(20):
        after = {g: api.metric("enx_media_worker_total", f'counter="{g}"') for g in gauges}
        if after == before:
            break
        time.sleep(0.1)
    assert after == before


def test_h264_when_the_client_offers_only_h264(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        pub, sub = await api.moderator_and_participant(room["room_id"], ("h264-pub", "h264-sub"))
        pc = await sendonly_offer(ColorTrack(COLORS[3]), codec="video/H264")
        reply = await publish_offer(pub, pc)
        assert "H264/90000" in reply["sdp"] and "VP8" not in reply["sdp"]
        await sub.subscribe()
        sid = await sub.wait_stream(pub.participant_id, "video")
        assert sub.stream_info[sid]["codec"] == "h264"
        assert await receive_video(await sub.wait_track(sid), COLORS[3], 10) >= 9
        await pc.close()
        await pub.leave()
        await sub.leave()

    asyncio.run(scenario())


def test_publisher_without_ssrc_lines_is_learned_from_mid(node, creds):
    """Chromium's simulcast offers and Firefox name no a=ssrc: the node learns the SSRC from the MID
    header extension of the first packets (an unknown-SSRC event from the native core)."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})

    async def scenario():
        pub, sub = await api.moderator_and_participant(room["room_id"], ("nossrc", "watch"))
        pc = await sendonly_offer(ColorTrack(COLORS[5]))
        offer = without_lines(pc.localDescription.sdp, "a=ssrc:", "a=ssrc-group:")
        assert "urn:ietf:params:rtp-hdrext:sdes:mid" in offer
        await publish_offer(pub, pc, offer)
        await sub.subscribe()
        sid = await sub.wait_stream(pub.participant_id, "video")
        assert await receive_video(await sub.wait_track(sid), COLORS[5], 8) >= 7
        await pc.close()
        await pub.leave()
        await sub.leave()

    asyncio.run(scenario())


def test_a_screen_share_is_a_second_video_announced_as_such(node, creds):
    """A participant shares its screen on a second publish transport (source "screen"): subscribers see a
    camera and a screen stream from it and decode both; a source the protocol does not know is refused."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 10})

    async def scenario():
        pub, sub = await api.moderator_and_participant(room["room_id"])
        try:
            await pub.publish([ColorTrack(COLORS[0]), ToneTrack()])
            await pub.publish([ColorTrack(COLORS[1])], source="screen")
            await sub.subscribe()
            camera = await sub.wait_stream(pub.participant_id, "video", source="camera")
            screen = await sub.wait_stream(pub.participant_id, "video", source="screen")
            assert camera != screen and sub.stream_info[screen]["source"] == "screen"
            got = await asyncio.gather(receive_video(await sub.wait_track(camera), COLORS[0], 10),
                                       receive_video(await sub.wait_track(screen), COLORS[1], 10))
            assert got[0] >= 9 and got[1] >= 9
            with pytest.raises(SignalingError) as refused:
                await pub.request("publish", sdp="v=0", source="window")
            assert refused.value.code == 1002
        finally:
            await pub.leave()
            await sub.leave()

    asyncio.run(scenario())


def test_the_active_speaker_is_announced_and_follows_the_louder_talker(node, creds):
    """Two aiortc publishers talk in turn (their packets carry RFC 6464 levels); everyone in the room is
    told who speaks, once per change, and a short burst from the other does not move it."""
    from media_util import LevelTrack

    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 10})

    async def speakers(client, want, timeout, strict=True):
        """The next `want` active-speaker announcements to client (fewer if strict is False and time runs out)."""
        got = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < want:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                assert not strict, f"active-speaker events so far: {got}"
                break
            try:
                got.append((await client.next_event("active-speaker", timeout=left))["participant_id"])
            except asyncio.TimeoutError:
                continue
        return got

    async def scenario():
        a, b = await api.moderator_and_participant(room["room_id"], names=("alice", "bob"))
        listener = await api.joined(room["room_id"], "carol", "participant")
        voice_a, voice_b = LevelTrack(300, 3000), LevelTrack(500, 0)
        try:
            await a.publish([voice_a])
            await b.publish([voice_b])
            assert await speakers(listener, 1, 10) == [a.participant_id]
            voice_b.amplitude = 24000                  # a loud half-second word from bob while alice talks
            await asyncio.sleep(0.5)
            voice_b.amplitude = 0
            await asyncio.sleep(2.0)
            assert await speakers(listener, 1, 0.3, strict=False) == [], "a word from bob did not take over"
            voice_a.amplitude, voice_b.amplitude = 0, 12000    # now bob talks, alice is silent
            assert await speakers(listener, 1, 6) == [b.participant_id]
            assert b.participant_id in await speakers(a, 2, 2)  # the talkers are told too
        finally:
            for c in (a, b, listener):
                await c.leave()

    asyncio.run(scenario())


def test_the_rest_api_shows_each_participants_media_quality_while_it_flows(node, creds):
    """GET /rooms/{id}/users: each participant's current bitrates (what it sends to the node, what it
    receives), stream counts and receiver-report figures, from the core's counters."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "group"})

    async def scenario():
        async with video_pair(api.ws_url, api.token(room["room_id"], "pub", "moderator"),
                              api.token(room["room_id"], "sub", "participant"), COLORS[1]) as (_, _, track):
            deadline = time.monotonic() + 20
            while True:
                users = {u["user_ref"]: u["quality"] for u in api.http.get(f"/rooms/{room['room_id']}/users")
                         .json()["users"]}
                pub, sub = users["pub"], users["sub"]
                if pub and sub and pub["bitrate_sent_bps"] > 0 and sub["bitrate_received_bps"] > 0:
                    break
                assert time.monotonic() < deadline, users
                for _ in range(15):                                          # keep decoding meanwhile
                    await track.recv()
            assert (pub["streams_sent"], sub["streams_received"]) == (1, 1), (pub, sub)
            assert pub["bitrate_received_bps"] == 0 and sub["bitrate_sent_bps"] == 0
            # what reaches the subscriber is what the publisher sends (SRTP and header rewrite aside)
            assert 0.5 < sub["bitrate_received_bps"] / pub["bitrate_sent_bps"] < 2, (pub, sub)
            assert 0.0 <= sub["fraction_lost"] <= 1.0 and sub["rtt_ms"] >= 0

    asyncio.run(scenario())
