"""Voice messages played into a live space's mix.

The bot hands the bridge an audio file (an ``m.audio`` a current speaker posted in the
space's room). :func:`decode` turns it into 48 kHz mono int16 with pydub/ffmpeg; it
blocks, so the app runs it in a worker thread. :class:`VoiceQueue` then plays the
queued messages one after another into the stage's mixer as a virtual source
(``voice:<user_id>``), one 960-sample frame per tick, paced by the stage's own clock.

The virtual source is an ordinary mixer input: listeners hear it in the mix, every
speaker hears it in their mix-minus (it is nobody's "self"), and it leaves the mixer
when the message ends, when the poster loses their audio role, or when the stage
closes.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .mixer import FRAME_SAMPLES, SAMPLE_RATE, Mixer

#: largest accepted file (bytes) and message (seconds)
MAX_BYTES = 20 * 1024 * 1024
MAX_SECONDS = 300.0
#: audio waiting to be played in one stage, in seconds, the playing message included
MAX_QUEUED_SECONDS = 600.0
KEY_PREFIX = "voice:"

#: decoding runs ffmpeg; at most two at once so a burst cannot take every core.
EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="voice-decode")


class VoiceError(ValueError):
    """The audio was refused; the message says why, for people."""


def _ffmpeg_reason(stderr: str, path: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else "ffmpeg failed"
    return reason.replace(path, "input")[:200]


def decode(data: bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Any audio ffmpeg can read → 48 kHz mono int16 samples (blocking: use a thread).

    Raises :class:`VoiceError` for bytes that are not audio, audio with no sound, or
    audio longer than ``max_seconds`` (ffmpeg stops decoding just past the limit, so a
    tiny file that claims hours of audio costs no more than the limit).
    """
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    if not data:
        raise VoiceError("could not decode audio: the file is empty")
    fd, path = tempfile.mkstemp(prefix="chorus-voice-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            segment = AudioSegment.from_file(path, duration=max_seconds + 1.0)
        except CouldntDecodeError as exc:
            raise VoiceError(
                f"could not decode audio: {_ffmpeg_reason(str(exc), path)}") from None
        except (IndexError, KeyError, ValueError) as exc:
            # pydub's probe found no usable audio stream
            raise VoiceError(f"could not decode audio: no audio stream ({exc!r})") from None
    finally:
        os.unlink(path)
    if len(segment) > max_seconds * 1000:
        raise VoiceError(f"voice message is longer than {max_seconds:g} seconds")
    segment = segment.set_channels(1).set_frame_rate(SAMPLE_RATE).set_sample_width(2)
    pcm = np.frombuffer(segment.raw_data, dtype="<i2").astype(np.int16)
    if pcm.size == 0:
        raise VoiceError("could not decode audio: it holds no sound")
    return pcm


@dataclass
class VoiceClip:
    user_id: str
    pcm: np.ndarray
    pos: int = 0

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.user_id

    @property
    def seconds_left(self) -> float:
        return max(0, self.pcm.size - self.pos) / SAMPLE_RATE


class VoiceQueue:
    """Voice messages waiting for one stage's mix; plays them in order, one at a time.

    :meth:`feed` is called by the stage once per tick, just before ``mixer.tick()``:
    it pushes the playing message's next frame (the mixer's jitter buffer plays a lone
    frame at once), and takes a finished message out of the mixer.
    """

    def __init__(self, mixer: Mixer, max_queued_seconds: float = MAX_QUEUED_SECONDS) -> None:
        self.mixer = mixer
        self.max_queued_seconds = max_queued_seconds
        self.waiting: deque[VoiceClip] = deque()
        self.playing: VoiceClip | None = None
        self.played = 0
        self._seq = 0

    @property
    def queued_seconds(self) -> float:
        clips = [*([self.playing] if self.playing else []), *self.waiting]
        return sum(c.seconds_left for c in clips)

    def users(self) -> list[str]:
        """Posters of the playing and waiting messages, in play order."""
        return [c.user_id for c in ([self.playing] if self.playing else []) + [*self.waiting]]

    @property
    def idle(self) -> bool:
        return self.playing is None and not self.waiting

    def add(self, user_id: str, pcm: np.ndarray) -> float:
        """Queue a message; returns the seconds until it starts. VoiceError if full."""
        ahead = self.queued_seconds
        if ahead + pcm.size / SAMPLE_RATE > self.max_queued_seconds:
            raise VoiceError(f"too much audio waiting to be played ({ahead:.0f} s); "
                             "try again when the current voice messages have played")
        self.waiting.append(VoiceClip(user_id, pcm))
        return ahead

    def feed(self) -> None:
        clip = self.playing
        if clip is not None and clip.pos >= clip.pcm.size:
            self._stop()
            self.played += 1
            clip = None
        if clip is None:
            if not self.waiting:
                return
            clip = self.playing = self.waiting.popleft()
            self._seq = 0
            self.mixer.add_speaker(clip.key)
        frame = clip.pcm[clip.pos:clip.pos + FRAME_SAMPLES]
        if frame.size < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - frame.size, np.int16)])
        clip.pos += FRAME_SAMPLES
        self.mixer.push(clip.key, self._seq, frame)
        self._seq += 1

    def drop_unless(self, may_speak: Callable[[str], bool]) -> None:
        """Forget the messages of users who may no longer speak (cut from the next tick)."""
        self.waiting = deque(c for c in self.waiting if may_speak(c.user_id))
        if self.playing is not None and not may_speak(self.playing.user_id):
            self._stop()

    def clear(self) -> None:
        self.waiting.clear()
        if self.playing is not None:
            self._stop()

    def user_of(self, key: object) -> str | None:
        """The poster of the message behind mixer key ``key`` (None if not a voice key)."""
        clip = self.playing
        return clip.user_id if clip is not None and key == clip.key else None

    def _stop(self) -> None:
        assert self.playing is not None
        self.mixer.remove_speaker(self.playing.key)
        self.playing = None
