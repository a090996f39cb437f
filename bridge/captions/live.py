"""Captions of one stage: VAD per speaker in the tick, utterances to the worker pool,
caption events back to the clients and the bot, the final captions kept for the
WebVTT transcript.

Times (``start``, ``end``) are seconds since the stage opened, on the stage's tick
clock: tick ``n``'s frame covers ``[(n-1) * 0.02, n * 0.02)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..mixer import FRAME_SECONDS
from . import webvtt
from .vad import Continue, End, SpeakerVad, Start, VadConfig
from .worker import CaptionPool

log = logging.getLogger(__name__)

#: frames sent to the worker at a time while someone speaks (100 ms)
CHUNK_FRAMES = 5


@dataclass(frozen=True)
class Caption:
    user_id: str
    text: str
    start: float
    end: float


@dataclass
class _Utterance:
    id: int
    key: Hashable
    user_id: str
    start_tick: int
    end_tick: int
    buffer: list[np.ndarray] = field(default_factory=list)
    ended: bool = False


def tick_start(tick: int) -> float:
    return round(max(0, tick - 1) * FRAME_SECONDS, 3)


def tick_end(tick: int) -> float:
    return round(tick * FRAME_SECONDS, 3)


class StageCaptions:
    def __init__(self, pool: CaptionPool, space_id: str, *,
                 broadcast: Callable[[dict[str, Any]], None],
                 emit: Callable[[dict[str, Any]], None],
                 vad: VadConfig | None = None) -> None:
        self.pool = pool
        self.space_id = space_id
        self._broadcast = broadcast
        self._emit = emit
        self._vad_config = vad or VadConfig()
        self.enabled = False
        self._vads: dict[Hashable, SpeakerVad] = {}
        self._open: dict[Hashable, _Utterance] = {}
        self._live: dict[int, _Utterance] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        #: every final caption with text, in the order they were said
        self.finals: list[Caption] = []
        #: per user: 100 ms chunks handed to the recogniser (0 for a silent speaker)
        self.chunks_sent: Counter[str] = Counter()

    @property
    def busy(self) -> bool:
        """Someone is speaking, or a final caption is still being worked out."""
        return bool(self._open or self._live)

    # -- on / off ------------------------------------------------------------------

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        """Stop at once: open utterances are cancelled, pending results dropped."""
        self.enabled = False
        for utt in list(self._live.values()):
            self.pool.cancel(utt.id)
        self._live.clear()
        self._open.clear()
        self._vads.clear()
        self._idle.set()

    # -- in the tick ---------------------------------------------------------------

    def feed(self, tick: int, frames: dict[Hashable, np.ndarray],
             levels: dict[Hashable, float], user_of: Callable[[Hashable], str | None]) -> None:
        """One tick: each speaker's own decoded frame (before mixing) and its level."""
        if not self.enabled:
            return
        for key, level in levels.items():
            vad = self._vads.get(key)
            if vad is None:
                vad = self._vads[key] = SpeakerVad(self._vad_config)
            action = vad.step(tick, frames.get(key), level)
            if action is None:
                continue
            if isinstance(action, Start):
                user_id = user_of(key)
                if user_id is None or not self.pool.ready:
                    vad.reset()
                    continue
                utt = _Utterance(0, key, user_id, vad.started_tick, tick)
                utt.id = self.pool.begin(self._result_handler(utt))
                self._open[key] = utt
                self._live[utt.id] = utt
                self._idle.clear()
                utt.buffer.extend(action.frames)
                continue
            utt = self._open.get(key)
            if utt is None:
                continue
            assert isinstance(action, Continue | End)
            utt.buffer.append(action.frame)
            utt.end_tick = vad.last_voiced_tick
            if isinstance(action, End):
                self._finish(utt)
            elif len(utt.buffer) >= CHUNK_FRAMES:
                self._send(utt)
        for key in [k for k in self._vads if k not in levels]:  # speaker left or revoked
            del self._vads[key]
            utt = self._open.get(key)
            if utt is not None:
                self._finish(utt)

    def _send(self, utt: _Utterance) -> None:
        if utt.buffer:
            pcm = np.concatenate(utt.buffer)
            utt.buffer.clear()
            self.pool.audio(utt.id, pcm)
            self.chunks_sent[utt.user_id] += 1

    def _finish(self, utt: _Utterance) -> None:
        self._send(utt)
        self._open.pop(utt.key, None)
        utt.ended = True
        self.pool.end(utt.id)

    # -- results (on the event loop) -------------------------------------------------

    def _result_handler(self, utt: _Utterance) -> Callable[[str, str, dict[str, Any]], None]:
        def handle(kind: str, text: str, info: dict[str, Any]) -> None:
            if self._live.get(utt.id) is not utt:
                return  # cancelled (captions turned off)
            if kind == "partial":
                if self.enabled:
                    self._broadcast(self._event(utt, text, final=False))
                return
            del self._live[utt.id]
            if not self._live:
                self._idle.set()
            if kind == "failed":
                self._broadcast(self._event(utt, "", final=True))
                return
            event = self._event(utt, " ".join(text.split()), final=True)
            self._broadcast(event)  # an empty final tells pages to drop the partial
            if event["text"]:
                self.finals.append(Caption(utt.user_id, event["text"], event["start"],
                                           event["end"]))
                self._emit(event)
        return handle

    def _event(self, utt: _Utterance, text: str, *, final: bool) -> dict[str, Any]:
        return {"type": "caption", "space_id": self.space_id, "user_id": utt.user_id,
                "utterance": utt.id, "text": text, "final": final,
                "start": tick_start(utt.start_tick),
                "end": max(tick_end(utt.end_tick), tick_start(utt.start_tick))}

    # -- end of stage / recording ------------------------------------------------------

    async def flush(self, *, end_open: bool, timeout: float = 15.0) -> None:
        """Wait (bounded) for pending final captions; with ``end_open`` first end every
        utterance still being spoken (the stage is closing)."""
        if end_open:
            for utt in list(self._open.values()):
                self._finish(utt)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("captions for %s: %d final(s) still pending after %.0f s",
                        self.space_id, len(self._live), timeout)

    def close(self) -> None:
        self.disable()

    def transcript(self, since: float = 0.0, until: float | None = None) -> list[webvtt.Cue]:
        """Final captions said in ``[since, until]``, times relative to ``since``."""
        cues = []
        for c in self.finals:
            if c.end < since or (until is not None and c.start > until):
                continue
            cues.append(webvtt.Cue(max(0.0, c.start - since), c.end - since, c.user_id, c.text))
        return cues

    async def finish_transcript(self, path: Path, title: str, *, since: float = 0.0,
                                until: float | None = None, closing: bool
                                ) -> tuple[str, int]:
        """Wait for pending finals, write the WebVTT file; (absolute path, cue count).
        With ``closing`` (the stage ended) open utterances are ended first and the
        captions are stopped afterwards."""
        await self.flush(end_open=closing)
        cues = self.transcript(since, until)
        written = await asyncio.to_thread(webvtt.write, path, cues, title)
        if closing:
            self.close()
        return str(written.resolve()), len(cues)
