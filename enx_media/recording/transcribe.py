"""Speech to text for a session's recorded audio, offline: each participant's audio files are decoded (PyAV),
resampled to the engine's rate, transcribed into timed segments, and merged into one timeline.

The engine is behind `SpeechEngine`; the default is pocketsphinx with the English model its PyPI package
ships (nothing is downloaded at run time). A better engine plugs in as another entry of ENGINES.

pocketsphinx holds the GIL while it decodes, so this runs as a process of its own
(`python -m enx_media.recording.transcribe`, JSON in on stdin, JSON out on stdout): the node's event
loop and media thread never wait for it. recording/transcripts.py starts it.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import av
import numpy as np

SEGMENT_GAP_S = 0.6            # a pause this long between words starts a new segment
SEGMENT_MAX_S = 15.0


@dataclass(frozen=True)
class Segment:
    start: float               # seconds from the start of the audio given
    end: float
    text: str


class SpeechEngine(Protocol):
    name: str
    sample_rate: int

    def transcribe(self, pcm: np.ndarray) -> list[Segment]:
        """Mono int16 PCM at sample_rate to timed segments of text."""
        ...


class PocketSphinx:
    """CMU pocketsphinx 5, US English acoustic model and language model from its package."""
    name = "pocketsphinx-en-us"
    sample_rate = 16000
    FRAMES_PER_S = 100

    def __init__(self) -> None:
        from pocketsphinx import Decoder  # type: ignore[import-untyped]  # only the transcribing process needs it
        self.decoder = Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def transcribe(self, pcm: np.ndarray) -> list[Segment]:
        d = self.decoder
        d.start_utt()
        d.process_raw(np.ascontiguousarray(pcm, np.int16).tobytes(), full_utt=True)
        d.end_utt()
        words = []
        for seg in d.seg():
            word = re.sub(r"\(\d+\)$", "", seg.word)          # alternate pronunciations: word(2)
            if word.startswith(("<", "[")):                   # <s>, </s>, <sil>, [NOISE]: not speech
                continue
            words.append((seg.start_frame / self.FRAMES_PER_S, (seg.end_frame + 1) / self.FRAMES_PER_S, word))
        return group(words)


ENGINES: dict[str, Callable[[], SpeechEngine]] = {"pocketsphinx": PocketSphinx}


def group(words: list[tuple[float, float, str]]) -> list[Segment]:
    """Words (start, end, word) into segments, split at pauses and at SEGMENT_MAX_S."""
    out: list[Segment] = []
    current: list[tuple[float, float, str]] = []
    for w in words:
        if current and (w[0] - current[-1][1] > SEGMENT_GAP_S or w[1] - current[0][0] > SEGMENT_MAX_S):
            out.append(Segment(current[0][0], current[-1][1], " ".join(x[2] for x in current)))
            current = []
        current.append(w)
    if current:
        out.append(Segment(current[0][0], current[-1][1], " ".join(x[2] for x in current)))
    return out


def load_pcm(path: str, rate: int) -> np.ndarray:
    """A recorded audio file as mono int16 PCM at rate."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def transcribe_files(files: list[dict[str, Any]], engine: SpeechEngine) -> list[dict[str, Any]]:
    """files: [{path, offset (seconds from the session's start), participant_id, user_ref}] to one timeline
    of {start, end, participant_id, user_ref, text}, ordered by start."""
    timeline = []
    for f in files:
        pcm = load_pcm(f["path"], engine.sample_rate)
        for s in engine.transcribe(pcm):
            timeline.append({"start": round(f["offset"] + s.start, 2), "end": round(f["offset"] + s.end, 2),
                             "participant_id": f["participant_id"], "user_ref": f["user_ref"], "text": s.text})
    timeline.sort(key=lambda x: (x["start"], x["user_ref"]))
    return timeline


def main() -> int:
    request = json.load(sys.stdin)
    engine = ENGINES[request.get("engine", "pocketsphinx")]()
    json.dump({"engine": engine.name, "segments": transcribe_files(request["files"], engine)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
