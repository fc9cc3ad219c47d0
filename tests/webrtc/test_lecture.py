"""Lecture room: one moderator publishes to 20 subscribers (passed through); floor control lets a participant
publish, and the two are composited by the MCU for everyone."""
import asyncio

import pytest

from enx_media.client import SignalingError
from enx_media.room.lecture import MCU_ID
from media_util import COLORS, Api, ColorTrack, ToneTrack, receive_audio, receive_video, shows_colours

SUBSCRIBERS = 20


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
