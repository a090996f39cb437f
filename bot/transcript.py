"""The live transcript: final captions from the bridge, posted to the space's room in
batches so that the room is not flooded (one message per interval, per space)."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Post = Callable[[str, str, str], Awaitable[None]]  # (space_id, plain, html)


@dataclass
class CaptionLine:
    user_id: str
    text: str
    start: float = 0.0


def render(lines: list[CaptionLine], names: dict[str, str] | None = None) -> tuple[str, str]:
    """One transcript message: consecutive lines of the same speaker are joined."""
    names = names or {}
    merged: list[CaptionLine] = []
    for line in lines:
        if merged and merged[-1].user_id == line.user_id:
            merged[-1] = CaptionLine(line.user_id, f"{merged[-1].text} {line.text}", merged[-1].start)
        else:
            merged.append(CaptionLine(line.user_id, line.text, line.start))
    plain = "\n".join(f"{names.get(m.user_id, m.user_id)}: {m.text}" for m in merged)
    rich = "<br>".join(f"<b>{html.escape(names.get(m.user_id, m.user_id))}</b>: {html.escape(m.text)}"
                       for m in merged)
    return "🗒 " + plain, "🗒 " + rich


@dataclass
class TranscriptBatcher:
    post: Post
    interval: float = 10.0
    max_lines: int = 20
    _pending: dict[str, list[CaptionLine]] = field(default_factory=dict)
    _task: asyncio.Task | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, space_id: str, user_id: str, text: str, start: float = 0.0) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self._pending.setdefault(space_id, []).append(CaptionLine(user_id, text, start))
        if len(self._pending[space_id]) >= self.max_lines:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def flush(self, space_id: str | None = None) -> None:
        for sid in [space_id] if space_id else list(self._pending):
            lines = self._pending.pop(sid, [])
            if not lines:
                continue
            plain, rich = render(lines)
            try:
                await self.post(sid, plain, rich)
            except Exception as exc:  # noqa: BLE001 - a failed post must not stop the batcher
                log.error("space %s: could not post %d transcript lines: %s", sid, len(lines), exc)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
