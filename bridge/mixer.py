"""The per-stage mixer: pure numpy, no I/O, no clock.

Audio is 48 kHz mono int16 in 20 ms frames (960 samples). Each speaker has a small
jitter buffer ordered by sequence number; each :meth:`Mixer.tick` takes at most one
frame per speaker (silence if it has none), sums in int32, clips to int16 and returns
the listeners' mix, a mix-minus-self per speaker, and per-speaker levels.

Buffers hold any payload (raw PCM, or Opus packets with a ``decode`` callable per
speaker), so the stage can decode in order at tick time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
SILENCE_DBFS = -100.0
_SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31
#: a sequence number further ahead than this restarts the buffer (new stream).
RESYNC_GAP = 250

SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
SILENCE.setflags(write=False)


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit sequence numbers (wrap-around safe)."""
    d = (a - b) % _SEQ_MOD
    return d - _SEQ_MOD if d >= _SEQ_HALF else d


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    late: int = 0
    duplicate: int = 0
    overflow: int = 0
    missing: int = 0
    shrunk: int = 0


class JitterBuffer:
    """Orders frames by 32-bit sequence number; bounded; drops late and duplicate.

    Play-out starts once ``prefill`` frames are buffered (and again after running
    dry). A frame that never arrived is skipped (silence) once a later one is waiting.
    When more than ``capacity`` frames are waiting, the oldest are dropped. If at least
    one frame was still waiting after every pop for ``shrink_after`` pops in a row, the
    buffer holds more delay than it needs, and one frame is dropped to catch up.
    """

    def __init__(self, capacity: int = 4, prefill: int = 1, shrink_after: int = 50) -> None:
        if capacity < 1 or not 1 <= prefill <= capacity:
            raise ValueError("need 1 <= prefill <= capacity")
        self.capacity = capacity
        self.prefill = prefill
        self._frames: dict[int, Any] = {}
        self._next: int | None = None
        self._playing = False
        self.shrink_after = shrink_after
        self._spare_pops = 0
        self.stats = JitterStats()

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, seq: int, payload: Any) -> bool:
        """Add a frame; False if it was dropped (late or duplicate)."""
        seq %= _SEQ_MOD
        self.stats.received += 1
        if self._next is None:
            self._next = seq
        else:
            ahead = seq_diff(seq, self._next)
            if ahead < 0:
                if ahead < -RESYNC_GAP:
                    self._reset(seq)
                else:
                    self.stats.late += 1
                    return False
            elif ahead > RESYNC_GAP:
                self._reset(seq)
        if seq in self._frames:
            self.stats.duplicate += 1
            return False
        self._frames[seq] = payload
        while len(self._frames) > self.capacity:
            self._drop_oldest()
        return True

    def _reset(self, seq: int) -> None:
        self._frames.clear()
        self._next = seq
        self._playing = False

    def _drop_oldest(self) -> None:
        assert self._next is not None
        while self._next not in self._frames:
            self._next = (self._next + 1) % _SEQ_MOD
        del self._frames[self._next]
        self._next = (self._next + 1) % _SEQ_MOD
        self.stats.overflow += 1

    def pop(self) -> Any | None:
        """The next frame in order, or None (play silence this tick)."""
        if not self._frames:
            self._playing = False
            return None
        if not self._playing:
            if len(self._frames) < self.prefill:
                return None
            self._playing = True
        assert self._next is not None
        seq = self._next
        self._next = (seq + 1) % _SEQ_MOD
        payload = self._frames.pop(seq, None)
        if payload is None:
            self.stats.missing += 1
        else:
            self.stats.played += 1
        if self._frames:
            self._spare_pops += 1
            if self._spare_pops >= self.shrink_after:
                self._drop_oldest()
                self.stats.overflow -= 1
                self.stats.shrunk += 1
                self._spare_pops = 0
        else:
            self._spare_pops = 0
        return payload


def dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (SILENCE_DBFS for digital silence)."""
    if frame.size == 0:
        return SILENCE_DBFS
    f = frame.astype(np.float64)
    rms = math.sqrt(float(np.dot(f, f)) / f.size)
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def clip16(acc: np.ndarray) -> np.ndarray:
    return np.clip(acc, -32768, 32767).astype(np.int16)


@dataclass
class TickResult:
    #: what every listener hears
    mix: np.ndarray
    #: per speaker: the mix without that speaker's own frame
    minus: dict[Hashable, np.ndarray] = field(default_factory=dict)
    #: per speaker: level of the frame it contributed this tick (dBFS)
    levels: dict[Hashable, float] = field(default_factory=dict)
    #: speakers that contributed a frame this tick
    active: frozenset = frozenset()
    #: per speaker: its own decoded frame this tick, before mixing (captions)
    frames: dict[Hashable, np.ndarray] = field(default_factory=dict)


class _Speaker:
    __slots__ = ("buffer", "decode")

    def __init__(self, buffer: JitterBuffer, decode: Callable[[Any], np.ndarray] | None):
        self.buffer = buffer
        self.decode = decode


class Mixer:
    def __init__(self, jitter_capacity: int = 4, jitter_prefill: int = 1) -> None:
        self.jitter_capacity = jitter_capacity
        self.jitter_prefill = jitter_prefill
        self._speakers: dict[Hashable, _Speaker] = {}
        self.ticks = 0

    @property
    def speakers(self) -> list[Hashable]:
        return list(self._speakers)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._speakers

    def add_speaker(
        self, key: Hashable, decode: Callable[[Any], np.ndarray] | None = None
    ) -> None:
        """Register a speaker; ``decode`` turns a buffered payload (or None) into PCM."""
        if key not in self._speakers:
            buf = JitterBuffer(self.jitter_capacity, self.jitter_prefill)
            self._speakers[key] = _Speaker(buf, decode)

    def remove_speaker(self, key: Hashable) -> None:
        """Forget a speaker and everything it had buffered: cut from the next tick."""
        self._speakers.pop(key, None)

    def buffer(self, key: Hashable) -> JitterBuffer:
        return self._speakers[key].buffer

    def push(self, key: Hashable, seq: int, payload: Any) -> bool:
        """Queue a frame from a registered speaker; False if unknown, late or duplicate."""
        speaker = self._speakers.get(key)
        if speaker is None:
            return False
        if speaker.decode is None and (
            not isinstance(payload, np.ndarray)
            or payload.dtype != np.int16
            or payload.shape != (FRAME_SAMPLES,)
        ):
            raise ValueError("PCM frames must be 960 int16 samples")
        return speaker.buffer.push(seq, payload)

    def tick(self) -> TickResult:
        self.ticks += 1
        frames: dict[Hashable, np.ndarray] = {}
        for key, speaker in self._speakers.items():
            payload = speaker.buffer.pop()
            if speaker.decode is not None:
                pcm = speaker.decode(payload) if payload is not None else None
            else:
                pcm = payload
            if pcm is not None and pcm.shape == (FRAME_SAMPLES,):
                frames[key] = pcm
        acc = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        wide: dict[Hashable, np.ndarray] = {}
        for key, pcm in frames.items():
            w = pcm.astype(np.int32)
            wide[key] = w
            acc += w
        mix = clip16(acc) if frames else SILENCE
        minus: dict[Hashable, np.ndarray] = {}
        levels: dict[Hashable, float] = {}
        for key in self._speakers:
            w = wide.get(key)
            if w is None:
                minus[key] = mix
                levels[key] = SILENCE_DBFS
            else:
                minus[key] = clip16(acc - w) if len(frames) > 1 else SILENCE
                levels[key] = dbfs(frames[key])
        return TickResult(mix, minus, levels, frozenset(frames), frames)
