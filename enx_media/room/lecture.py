"""A lecture room's MCU: while two or more publishers (moderators and floor holders) send video, their
streams go into `mcu.pipeline.Mcu` and everyone receives its output instead of one stream per publisher:
the composite video and the full audio mix, or for a publisher its own mix without its voice (mix-minus).
With one video publisher there is nothing to composite: its streams pass through as in any room.

The outputs are Python-fed producers of the room's router, owned by the pseudo-participant MCU_ID and
announced like any stream (source "composite", "mix", "mix-minus"); a subscriber's PLI on the composite
reaches the encoder through the producer's key frame hook.

Moving between pass-through and the composite renegotiates nothing where it can be helped: an m-line
that carried a publisher's stream is switched to the output of the same kind and codec (and back), its
consumer changing over at the new stream's next key frame while the old one keeps feeding it
(RoomMedia.switch_subscription), so the audience sees no gap. A stopping MCU keeps running until the
consumers it fed have changed over (at most SWITCH_WAIT_S)."""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING, Callable

from ..mcu.pipeline import Mcu, Output
from ..sfu.router import Consumer, Producer

if TYPE_CHECKING:
    from .live import Participant
    from .media import RoomMedia

log = logging.getLogger(__name__)

MCU_ID = "mcu"
AUDIO_PT = 111                        # what the outputs' packets carry; consumers rewrite to the subscriber's
SWITCH_WAIT_S = 3.0                   # a stopping MCU feeds the consumers moving off it this long at most
SMALL_SIZE = (640, 360)               # the composite's second size, for subscribers on slow links (default)
VIDEO_PTS = {"vp8": 96, "h264": 102}


Inputs = dict[str, tuple[Producer | None, Producer | None, str]]


def mcu_inputs(media: "RoomMedia", admit: Callable[["Participant", Producer], bool]) -> Inputs:
    """participant -> (its first live VP8 / H.264 video, its first live Opus audio, its name), over the
    streams `admit` lets into a compositor (the lecture's MCU, a group room's recording mix)."""
    found: Inputs = {}
    for s in media.live_producers():
        owner = media.room.participants.get(s.participant_id)
        if owner is None or not admit(owner, s):
            continue
        v, a, _ = found.get(owner.participant_id, (None, None, owner.name))
        if s.kind == "video" and v is None and s.codec in ("vp8", "h264"):
            v = s
        elif s.kind == "audio" and a is None and s.codec == "opus":
            a = s
        found[owner.participant_id] = (v, a, owner.name)
    return found


class LectureMix:
    def __init__(self, media: "RoomMedia", *, width: int = 1280, height: int = 720, fps: int = 30,
                 layout: str = "speaker", codec: str = "vp8", small: tuple[int, int] | None = SMALL_SIZE) -> None:
        """codec: the composite's (vp8 or h264); small: its second, smaller size (simulcast), None: one size."""
        self.media = media
        self.width, self.height, self.fps, self.layout = width, height, fps, layout
        self.codec, self.small = codec, small
        self.mcu: Mcu | None = None
        self.video: Producer | None = None
        self.audio: Producer | None = None
        self.minus: dict[str, Producer] = {}          # publisher -> its mix-minus output
        self._owner: dict[str, str] = {}             # mix-minus output id -> its publisher, until removed
        self._fed: dict[str, tuple[str | None, str | None]] = {}   # input -> its (video, audio) producer ids
        self._stopping: set[Mcu] = set()             # stopped MCUs still feeding consumers that move off them

    @property
    def running(self) -> bool:
        return self.mcu is not None

    def outputs(self) -> list[Producer]:
        return [p for p in (self.video, self.audio, *self.minus.values()) if p is not None]

    def is_output(self, s: Producer) -> bool:
        return s.participant_id == MCU_ID

    def announce_to(self, s: Producer) -> list["Participant"]:
        """Who hears of an output: everyone, but a mix-minus only its publisher."""
        people = self.media.room.everyone()
        owner = self._owner.get(s.producer_id)
        return people if owner is None else [p for p in people if p.participant_id == owner]

    def visible_to(self, p: "Participant", s: Producer) -> bool:
        """Whether p may know of stream s: any publisher's; of the MCU's current outputs, those announced to
        p (a mix-minus only to its publisher); a stopped MCU's outputs, going, to nobody."""
        if not self.is_output(s):
            return True
        if s not in self.outputs():
            return False
        owner = self._owner.get(s.producer_id)
        return owner is None or owner == p.participant_id

    def wants(self, p: "Participant", s: Producer) -> bool | None:
        """Whether p follows stream s while the MCU runs (None: the room's usual rule applies)."""
        if not self.running:
            return None if not self.is_output(s) else False
        if s is self.video:
            return True
        if s is self.audio:
            return p.participant_id not in self.minus
        if self.is_output(s):
            return self.minus.get(p.participant_id) is s
        # a publisher's own streams are in the composite; asked for by id they are still sent
        return s.producer_id in p.media.wanted

    def _inputs(self) -> Inputs:
        """publisher -> (camera video, audio, name) of the live producers of moderators and floor holders."""
        return mcu_inputs(self.media, lambda owner, s: not self.is_output(s) and (owner.role == "moderator"
                                                                                  or owner.floor))

    async def update(self) -> None:
        """Bring the MCU in line with who publishes now: start it at the second video publisher, follow
        inputs coming and going, stop it when one is left; subscriptions follow."""
        inputs = self._inputs()
        videos = sum(1 for v, _, _ in inputs.values() if v is not None)
        changed: list[Producer] = []
        if videos >= 2 and self.mcu is None:
            changed += self._start()
        if self.mcu is not None and videos < 2:
            mcu, outputs = self._stop()
            moving = await self._resubscribe()
            asyncio.ensure_future(self._retire(mcu, outputs, moving))
            return
        if self.mcu is None:
            return
        for key in set(self._fed) - set(inputs):
            self.mcu.remove_input(key)
            del self._fed[key]
        for key, (v, a, name) in inputs.items():
            minus = self.minus.get(key)
            if a is not None and minus is None:
                minus = self._output("audio", "opus", "mix-minus")
                self.minus[key] = minus
                self._owner[minus.producer_id] = key
                changed.append(minus)
            fed = (v.producer_id if v is not None else None, a.producer_id if a is not None else None)
            if self._fed.get(key) == fed:
                continue                                # unchanged: its decoders keep their state
            self._fed[key] = fed
            self.mcu.add_input(key, name, video=v.native if v is not None else None,
                               video_codec=v.codec if v is not None else "vp8",
                               audio=a.native if a is not None else None,
                               minus=self._native_output(minus) if a is not None and minus is not None else None)
        for key in [k for k in self.minus if k not in inputs or inputs[k][1] is None]:
            await self._remove_output(self.minus.pop(key), "mix-minus ended")
        for s in changed:       # announced first; who receives them follows from wants() just below
            await self.media.room.notifier.stream_added(self.announce_to(s), s)
        await self._resubscribe()

    def _output(self, kind: str, codec: str, source: str, layers: int = 1) -> Producer:
        ssrcs = [random.randint(1, 0xFFFFFFF0) for _ in range(layers)]
        encodings = [(rid, ssrc) for rid, ssrc in zip(("q", "f"), ssrcs)] if layers > 1 else []
        producer = Producer(f"{MCU_ID}-{secrets.token_hex(4)}", MCU_ID, kind, codec, "", ssrcs[-1], None,
                            encodings=encodings, source=source)
        self.media.router.create_direct_producer(producer)
        if kind == "video":
            producer.on_keyframe_request = self._keyframe_request
        return producer

    def _native_output(self, p: Producer, layer: int = -1) -> Output:
        ssrc = p.encodings[layer][1] if p.encodings else p.ssrc or 0
        return Output(p.native, ssrc, VIDEO_PTS[p.codec] if p.kind == "video" else AUDIO_PT)

    def _keyframe_request(self) -> None:
        if self.mcu is not None:
            self.mcu.request_keyframe()

    def _start(self) -> list[Producer]:
        self.video = self._output("video", self.codec, "composite", layers=2 if self.small else 1)
        self.audio = self._output("audio", "opus", "mix")
        self.mcu = Mcu(self.media.router.worker, self._native_output(self.video), self._native_output(self.audio),
                       width=self.width, height=self.height, fps=self.fps, layout=self.layout, codec=self.codec,
                       small_out=self._native_output(self.video, 0) if self.small else None,
                       small_size=self.small or SMALL_SIZE)
        self.mcu.start()
        log.info("lecture mcu started room=%s", self.media.room.room.room_id)
        self.media.room.record_streams([self.video, self.audio])     # a recording takes the composite too
        return [self.video, self.audio]

    def _stop(self) -> tuple[Mcu | None, list[Producer]]:
        """No MCU from now on (wants() says so); the stopped one and its outputs, for _retire."""
        mcu, self.mcu = self.mcu, None
        outputs = self.outputs()
        if mcu is not None:
            self._stopping.add(mcu)
        self.video = self.audio = None
        self.minus.clear()
        self._fed.clear()
        return mcu, outputs

    async def _retire(self, mcu: Mcu | None, outputs: list[Producer], moving: list[Consumer]) -> None:
        """Once the consumers moving off a stopped MCU have changed over (or SWITCH_WAIT_S passed), the
        MCU stops and its outputs go."""
        end = time.monotonic() + SWITCH_WAIT_S
        while time.monotonic() < end and any(c.native is not None and c.native.switching for c in moving):
            await asyncio.sleep(0.05)
        if mcu is not None:
            self._stopping.discard(mcu)
            mcu.stop(wait=False)
        for s in outputs:
            await self._remove_output(s, "mcu stopped")

    async def _remove_output(self, s: Producer, reason: str) -> None:
        await self.media.remove_producer(s, reason)
        self._owner.pop(s.producer_id, None)

    async def _resubscribe(self) -> list[Consumer]:
        """Everyone's subscriptions again, by the room's wants(): an m-line whose stream the MCU now carries
        (or no longer does) is switched to a newly wanted stream of its kind and codec where there is one,
        else dropped; what is left is added by a renegotiation. Returns the consumers switched."""
        switched: list[Consumer] = []
        for p in list(self.media.room.participants.values()):
            active = [sm for sm in p.media.subscriptions if sm.section.active]
            have = {sm.producer.producer_id for sm in active}
            new = [s for s in self.media.live_producers() if s.producer_id not in have and self.media.wants(p, s)]
            dropped = False
            for sm in active:
                if self.media.wants(p, sm.producer):
                    continue
                match = next((s for s in new if s.kind == sm.producer.kind and s.codec == sm.section.codec), None)
                if match is not None:
                    new.remove(match)
                    c = self.media.switch_subscription(p, sm, match)
                    if c is not None:
                        switched.append(c)
                    continue
                if sm.consumer is not None:
                    self.media.router.close_consumer(sm.consumer)
                    sm.consumer = None
                sm.section.active = False
                dropped = True
            if dropped or new:
                await self.media.update_subscription(p)
        return switched

    def set_levels(self, levels: dict[str, float]) -> None:
        """The publishers' RFC 6464 levels (RoomMedia's speaker detection): the composite's speaker follows them."""
        if self.mcu is not None:
            self.mcu.set_levels(levels)

    def set_layers(self, s: Producer, active: list[bool]) -> None:
        """Dynacast for the composite (RoomMedia.select_layers): only the sizes someone receives are encoded."""
        if self.mcu is not None and s is self.video:
            self.mcu.set_layers(active)

    def set_layout(self, layout: str) -> None:
        """From now on (and for a composite started later)."""
        self.layout = layout
        if self.mcu is not None:
            self.mcu.set_layout(layout)

    def stats(self) -> dict[str, float]:
        return dict(self.mcu.stats) if self.mcu is not None else {}

    def close(self) -> None:
        for mcu in [self.mcu, *self._stopping]:
            if mcu is not None:
                mcu.stop(wait=False)
        self.mcu = None
        self._stopping.clear()
