"""A group room's composite for its recording (settings.single_file_recording): while the room records,
every participant's camera and voice go into the lecture's compositor and mixer (`mcu.pipeline.Mcu`, grid
layout, one size) and its two outputs are Python-fed producers that nobody subscribes to: they belong to
RECORDING_MIX_ID, which is not a participant, so `RoomMedia.wants` offers them to no one. The recording
takes them like any other stream (source "composite" and "mix")."""
from __future__ import annotations

import logging
import random
import secrets
from typing import TYPE_CHECKING

from ..mcu.layout import MAX_INPUTS
from ..mcu.pipeline import Mcu, Output
from ..sfu.router import Producer
from .lecture import mcu_inputs

if TYPE_CHECKING:
    from .media import RoomMedia

log = logging.getLogger(__name__)

RECORDING_MIX_ID = "recording"
PAYLOAD_TYPES = {"vp8": 96, "h264": 102, "opus": 111}


class RecordingMix:
    def __init__(self, media: "RoomMedia", *, width: int, height: int, fps: int, codec: str) -> None:
        self.media = media
        self.video = self._output("video", codec, "composite")
        self.audio = self._output("audio", "opus", "mix")
        self.mcu = Mcu(media.router.worker, Output(self.video.native, self.video.ssrc or 0, PAYLOAD_TYPES[codec]),
                       Output(self.audio.native, self.audio.ssrc or 0, PAYLOAD_TYPES["opus"]), width=width,
                       height=height, fps=fps, layout="grid", codec=codec)
        self.video.on_keyframe_request = self.mcu.request_keyframe
        self._fed: dict[str, tuple[str | None, str | None]] = {}
        self.mcu.start()
        self.update()

    @property
    def outputs(self) -> list[Producer]:
        return [self.video, self.audio]

    def _output(self, kind: str, codec: str, source: str) -> Producer:
        producer = Producer(f"{RECORDING_MIX_ID}-{secrets.token_hex(4)}", RECORDING_MIX_ID, kind, codec, "",
                            random.randint(1, 0xFFFFFFF0), None, source=source)
        return self.media.router.create_direct_producer(producer)

    def update(self) -> None:
        """Inputs follow who publishes now: each participant's first live camera (VP8 / H.264) and Opus voice."""
        found = mcu_inputs(self.media, lambda owner, s: s.source == "camera")
        for key in set(self._fed) - set(found):
            self.mcu.remove_input(key)
            del self._fed[key]
        for key, (v, a, name) in list(found.items())[:MAX_INPUTS]:      # the first to publish, if more
            fed = (v.producer_id if v else None, a.producer_id if a else None)
            if self._fed.get(key) != fed:
                self._fed[key] = fed
                self.mcu.add_input(key, name, video=v.native if v else None, video_codec=v.codec if v else "vp8",
                                   audio=a.native if a else None)

    def stop(self) -> None:
        self.mcu.stop(wait=False)
        for p in self.outputs:
            self.media.router.close_producer(p)
