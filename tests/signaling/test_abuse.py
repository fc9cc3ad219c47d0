"""One abusive client cannot hurt another (issue 9): floods from a process of their own (tests/abuse.py)
against a real node while honest aiortc peers measure what they receive, all on 127.0.0.1."""
import asyncio
import json
import re
import sys
import time
from pathlib import Path

import httpx

from media_util import COLORS, Api, video_pair

ABUSE = Path(__file__).resolve().parent.parent / "abuse.py"


class FrameCounter:
    """Decodes a received video track in the background and remembers when each frame arrived."""

    def __init__(self, track):
        self.times: list[float] = []
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track):
        while True:
            await track.recv()
            self.times.append(time.monotonic())

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.times) / (end - start)

    def longest_gap(self, start: float, end: float) -> float:
        inside = [start] + [t for t in self.times if start <= t < end] + [end]
        return max(b - a for a, b in zip(inside, inside[1:]))

    def stop(self):
        self._task.cancel()


def media_port(pc) -> int:
    """The node's media UDP port, from the answer's candidate."""
    return int(re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", pc.remoteDescription.sdp).group(1))


async def abuse(plan: dict) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, str(ABUSE), json.dumps(plan),
                                                stdout=asyncio.subprocess.PIPE)


async def report(proc: asyncio.subprocess.Process) -> dict:
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return json.loads(out.decode().strip().splitlines()[-1])


def test_a_chat_flood_in_one_room_leaves_another_rooms_media_alone(node, creds):
    """Finding 7: 7 viewers send 4,000-character chats as fast as the node answers for 10 s; another
    room's call keeps its frame rate (within 10 % of its rate before), and the flood stores no more
    than the session's chat cap."""
    api = Api(node, creds)
    flooded = api.room(name="flooded", settings={"mode": "lecture", "participants": 20})
    calm = api.room(name="calm", settings={"mode": "group"})
    flooders = [api.token(flooded["room_id"], f"viewer{i}", "viewer") for i in range(7)]
    db = node.data_dir / "enx.sqlite3"

    async def scenario():
        async with video_pair(api.ws_url, api.token(calm["room_id"], "pub", "moderator"),
                              api.token(calm["room_id"], "sub", "participant"), COLORS[2]) as (_, _, track):
            frames = FrameCounter(track)
            try:
                await asyncio.sleep(1)
                t0 = time.monotonic()
                await asyncio.sleep(5)
                size_before = db.stat().st_size + Path(str(db) + "-wal").stat().st_size
                proc = await abuse({"url": api.ws_url, "seconds": 10, "chat": {"tokens": flooders, "size": 4000}})
                t1 = time.monotonic()
                done = await report(proc)
                t2 = time.monotonic()
            finally:
                frames.stop()
            before, during = frames.rate(t0, t0 + 5), frames.rate(t1 + 1, t2 - 1)
            assert before > 20, before
            assert during >= 0.9 * before, (before, during, done)
            chat = done["chat"]
            answered = chat.get("ok", 0) + chat.get("rate limited", 0)    # the rest was in flight at the end
            assert chat["sent"] > 2000 and chat.get("rate limited", 0) > 0.9 * answered, chat
            grown = db.stat().st_size + Path(str(db) + "-wal").stat().st_size - size_before
            assert grown < 9 * 1024 * 1024, grown          # at most the 8 MiB chat cap, whatever was sent

    asyncio.run(scenario())


def test_mixed_abuse_soak(node, creds):
    """Chats, publishes, joins and junk datagrams at once for 15 s, in the room of an honest call and
    beside another: both calls keep their media throughout, and the node is healthy afterwards."""
    api = Api(node, creds)
    room = api.room(name="soaked", settings={"mode": "group", "participants": 40})
    other = api.room(name="beside", settings={"mode": "group"})
    chatters = [api.token(room["room_id"], f"chatter{i}", "participant") for i in range(4)]
    publishers = [api.token(room["room_id"], f"publisher{i}", "participant") for i in range(3)]
    joiners = [api.token(room["room_id"], f"joiner{i}", "participant") for i in range(5)]

    async def scenario():
        async with video_pair(api.ws_url, api.token(room["room_id"], "pub", "moderator"),
                              api.token(room["room_id"], "sub", "participant"), COLORS[0]) as (pub, _, inside), \
                video_pair(api.ws_url, api.token(other["room_id"], "pub", "moderator"),
                           api.token(other["room_id"], "sub", "participant"), COLORS[3]) as (_, _, beside):
            counters = [FrameCounter(inside), FrameCounter(beside)]
            try:
                proc = await abuse({"url": api.ws_url, "seconds": 15,
                                    "chat": {"tokens": chatters, "size": 4000}, "publish": {"tokens": publishers},
                                    "joins": {"tokens": joiners},
                                    "junk_udp": {"port": media_port(pub.publish_pcs[0]), "rate": 5000}})
                t1 = time.monotonic()
                done = await report(proc)
                t2 = time.monotonic()
                await asyncio.sleep(1)
            finally:
                for c in counters:
                    c.stop()
            for c in counters:     # media all the way through: no stall of a second, a steady rate
                assert c.longest_gap(t1, t2) < 1.0 and c.rate(t1, t2) > 15, (c.rate(t1, t2), done)
            assert done["junk_udp"]["sent"] > 30000
            assert done["publish"].get("too many transports", 0) + done["publish"].get("rate limited", 0) > 0
            assert done["publish"].get("validation failed", 0) > 0            # the 20-m-line offers
            assert done["joins"].get("joined", 0) > 0 and done["joins"].get("error", 0) > 0
            assert "closed by node" not in done["chat"]                       # refused, never disconnected
        assert httpx.get(node.base + "/healthz").json() == {"status": "ok"}
        users = api.http.get(f"/rooms/{room['room_id']}/users").json()["users"]
        assert not [u for u in users if u["user_ref"].startswith(("chatter", "publisher", "joiner"))]
        # and a new call still starts
        after = api.room(name="after", settings={"mode": "group"})
        async with video_pair(api.ws_url, api.token(after["room_id"], "pub", "moderator"),
                              api.token(after["room_id"], "sub", "participant"), COLORS[1]):
            pass

    asyncio.run(scenario())
