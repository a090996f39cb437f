"""Voice activity detection per speaker, from the level the mixer already measures.

Runs on the event loop inside the 20 ms tick, so it does O(1) work per speaker per
frame: it compares the frame's dBFS (computed by the mixer anyway) with a threshold and
keeps references to the last few frames as pre-roll. Nothing is copied, resampled or
recognised while a speaker is silent.

Each :meth:`SpeakerVad.step` returns what to do with this frame:

- ``None``: silent, nothing to do;
- ``Start(frames)``: speech began; ``frames`` is the pre-roll ending with this frame;
- ``Continue(frame)``: inside an utterance (includes short pauses);
- ``End(frame)``: the utterance ended (silence for ``hangover`` frames, or it grew to
  ``max_frames``); ``frame`` is this tick's frame, the last one of the utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..mixer import SILENCE


@dataclass(frozen=True)
class VadConfig:
    #: a frame at least this loud (dBFS) counts as voice
    threshold_dbfs: float = -45.0
    #: voiced frames in a row that start an utterance
    start_frames: int = 3
    #: silent frames in a row that end it (0.7 s)
    hangover_frames: int = 35
    #: frames kept from before the start, so the first syllable is not cut (0.3 s)
    preroll_frames: int = 15
    #: an utterance is cut (and a final caption sent) after this many frames (15 s)
    max_frames: int = 750


@dataclass
class Start:
    frames: list[np.ndarray]


@dataclass
class Continue:
    frame: np.ndarray


@dataclass
class End:
    frame: np.ndarray


class SpeakerVad:
    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self._preroll: deque[np.ndarray] = deque(maxlen=self.config.preroll_frames)
        self._voiced_run = 0
        self._silent_run = 0
        self._length = 0
        self.speaking = False
        #: tick of the first voiced frame of the current (or last) utterance
        self.started_tick = 0
        #: tick of its latest voiced frame
        self.last_voiced_tick = 0

    def step(self, tick: int, frame: np.ndarray | None, level_dbfs: float
             ) -> Start | Continue | End | None:
        cfg = self.config
        voiced = frame is not None and level_dbfs >= cfg.threshold_dbfs
        pcm = frame if frame is not None else SILENCE
        if not self.speaking:
            self._preroll.append(pcm)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run < cfg.start_frames:
                return None
            self.speaking = True
            self._silent_run = 0
            frames = list(self._preroll)
            self._preroll.clear()
            self._length = len(frames)
            self.started_tick = tick - cfg.start_frames + 1
            self.last_voiced_tick = tick
            return Start(frames)
        self._length += 1
        if voiced:
            self.last_voiced_tick = tick
        self._silent_run = 0 if voiced else self._silent_run + 1
        if self._silent_run >= cfg.hangover_frames or self._length >= cfg.max_frames:
            self.reset()
            return End(pcm)
        return Continue(pcm)

    def reset(self) -> None:
        self.speaking = False
        self._voiced_run = 0
        self._silent_run = 0
        self._length = 0
        self._preroll.clear()
