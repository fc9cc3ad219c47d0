"""Group room: three aiortc clients publish VP8 + Opus through the node; each decodes the others."""
import asyncio

from media_util import COLORS, Api, ColorTrack, ToneTrack, receive_audio, receive_video


def test_three_publishers_see_and_hear_each_other(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 10})

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
    # 3 publishers x 2 streams x 2 receivers went through the native worker.
    assert api.metric("enx_media_worker_total", 'counter="packets_out"') > 0
