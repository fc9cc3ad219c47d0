"""Lecture room: one moderator publishes to 20 subscribers (passed through); floor control lets a participant
publish, and the two are composited by the MCU for everyone; a moderator and a floor holder composited for
50 aiortc subscribers in processes of their own (tests/audience.py)."""
import asyncio
import json
import sys
from pathlib import Path

import pytest

from enx_media.client import SignalingError
from enx_media.room.lecture import MCU_ID
from media_util import COLORS, Api, ColorTrack, ToneTrack, receive_audio, receive_video, shows_colours

SUBSCRIBERS = 20
AUDIENCE = Path(__file__).resolve().parent.parent / "audience.py"


def test_lecture_fanout_and_floor(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 1, "participants": 100})

    async def scenario():
        teacher = api.client(room["room_id"], "teacher", "moderator")
        await teacher.join()
        await teacher.publish([ColorTrack(COLORS[2]), ToneTrack()])
        students = [api.client(room["room_id"], f"student{i}", "participant") for i in range(SUBSCRIBERS)]
        try:
            for s in students:
                await s.join()
                await s.subscribe()
            # The audience is announced to moderators only; a student sees the teacher and itself.
            assert {p["name"] for p in students[-1].joined["participants"]} == {"teacher", f"student{SUBSCRIBERS - 1}"}
            joined_events = [await teacher.next_event("participant-joined") for _ in range(SUBSCRIBERS)]
            assert len({e["participant"]["participant_id"] for e in joined_events}) == SUBSCRIBERS
            with pytest.raises(asyncio.TimeoutError):
                await students[0].next_event("participant-joined", timeout=0.3)
            tracks = [await s.wait_track(await s.wait_stream(teacher.participant_id, "video")) for s in students]
            matched = await asyncio.gather(*(receive_video(t, COLORS[2], 10, timeout=40) for t in tracks))
            assert all(m >= 9 for m in matched), matched

            # A participant may not publish without the floor.
            asker = students[0]
            with pytest.raises(SignalingError) as refused:
                await asker.publish([ColorTrack(COLORS[0])])
            assert refused.value.code == 1403 and "request the floor" in refused.value.message["desc"]
            with pytest.raises(SignalingError) as not_mod:
                await students[1].request("floor-grant", participant_id=asker.participant_id)
            assert not_mod.value.code == 1403

            # request -> the moderator hears of it -> grant -> its media reaches the others
            await teacher.subscribe()
            await asker.request("floor-request")
            req = await teacher.next_event("floor-requested")
            assert req["participant"]["participant_id"] == asker.participant_id
            await teacher.request("floor-grant", participant_id=asker.participant_id)
            granted = await asker.next_event("floor-granted")
            assert granted["participant_id"] == asker.participant_id
            asker.publish_pcs.clear()
            await asker.publish([ColorTrack(COLORS[0])])
            # two video publishers now: everyone receives the MCU's composite of both (test_lecture_mcu.py)
            for viewer in (teacher, students[5], students[6]):
                sid = await viewer.wait_stream(MCU_ID, "video", source="composite")
                assert await shows_colours(await viewer.wait_track(sid), [COLORS[2], COLORS[0]])

            # revoke stops it: the stream is removed for everyone and publishing is refused again
            sid = await students[5].wait_stream(asker.participant_id, "video")
            await teacher.request("floor-revoke", participant_id=asker.participant_id)
            removed = set()
            while sid not in removed:
                removed.add((await students[5].next_event("stream-removed"))["stream_id"])
            with pytest.raises(SignalingError):
                await asker.publish([ColorTrack(COLORS[0])])
        finally:
            for c in [teacher, *students]:
                await c.leave()

    asyncio.run(scenario())


def test_viewer_never_publishes(node, creds):
    api = Api(node, creds)
    room = api.room(settings={"mode": "group"})

    async def scenario():
        viewer = api.client(room["room_id"], "watcher", "viewer")
        await viewer.join()
        with pytest.raises(SignalingError) as refused:
            await viewer.publish([ColorTrack(COLORS[1])])
        assert refused.value.code == 1403
        await viewer.leave()

    asyncio.run(scenario())


@pytest.mark.parametrize("subscribed_first", [False, True], ids=["publish_then_subscribe", "subscribe_then_publish"])
def test_participant_hears_and_sees_two_moderators(node, creds, subscribed_first):
    """Two moderators each publish video and audio (aiortc on both ends): a participant decodes the MCU's
    composite of both and its mix, whether its subscription starts before they publish (its offers are
    renegotiated as they do: the first one's own streams, then the composite) or after."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 2, "participants": 10})

    async def scenario():
        mods = [api.client(room["room_id"], f"teacher{i}", "moderator") for i in range(2)]
        student = api.client(room["room_id"], "student", "participant")
        try:
            if subscribed_first:
                await student.join()
                await student.subscribe()
            for i, m in enumerate(mods):
                await m.join()
                await m.publish([ColorTrack(COLORS[i]), ToneTrack()])
            if not subscribed_first:
                await student.join()
                await student.subscribe()
            vid = await student.wait_track(await student.wait_stream(MCU_ID, "video", source="composite"))
            aud = await student.wait_track(await student.wait_stream(MCU_ID, "audio", source="mix"))
            both, audio = await asyncio.gather(shows_colours(vid, COLORS[:2]), receive_audio(aud, 25, timeout=30))
            assert both and audio == 25, (both, audio)
        finally:
            for c in [student, *mods]:
                await c.close()

    asyncio.run(scenario())


def test_a_moderator_and_a_floor_holder_composited_for_fifty_subscribers(node, creds):
    """The lecture end to end: 50 aiortc subscribers (two processes of 25, so their decoding has both cores)
    receive the teacher passed through, then, once a student holds the floor and publishes, the composite
    of both; each asks for it at 360 lines (the composite's small size: 50 decoders of 720p would not keep
    up on this machine) and decodes a frame with both colours in their tiles, and hears the mix."""
    api = Api(node, creds)
    room = api.room(settings={"mode": "lecture", "moderators": 1, "participants": 60, "layout": "grid"})

    async def scenario():
        teacher = await api.joined(room["room_id"], "teacher", "moderator")
        await teacher.publish([ColorTrack(COLORS[2]), ToneTrack()])
        holder = await api.joined(room["room_id"], "holder", "participant")
        plan = {"url": api.ws_url, "seconds": 120, "height": 360, "size": [640, 360], "colours": [COLORS[2], COLORS[0]]}
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, str(AUDIENCE),
            json.dumps({**plan, "tokens": [api.token(room["room_id"], f"s{k}-{i}", "participant") for i in range(25)]}),
            stdout=asyncio.subprocess.PIPE) for k in range(2)]
        try:
            await asyncio.sleep(5)             # the audience joins while the teacher alone is passed through
            await holder.request("floor-request")
            await teacher.next_event("floor-requested")
            await teacher.request("floor-grant", participant_id=holder.participant_id)
            await holder.next_event("floor-granted")
            await holder.publish([ColorTrack(COLORS[0]), ToneTrack(700.0)])
            outs = [await asyncio.wait_for(p.communicate(), 180) for p in procs]
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
            await holder.leave()
            await teacher.leave()
        results = [r for out, _ in outs for r in json.loads(out.decode().strip().splitlines()[-1])]
        failed = [r for r in results if not r["ok"] or r["protocol_errors"]]
        assert len(results) == 50 and not failed, failed[:3]
        assert all(r["audio_frames"] == 25 for r in results)

    asyncio.run(scenario())
