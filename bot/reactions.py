"""Reactions in a live space, posted to its room in batches.

A reaction is a tap; a room message per tap lets a crowd (or one script) flood the room.
The batcher counts reactions per space and emoji and posts at most one message per
interval per space ("👏 ×12 · ❤ ×3 — from 7 people"). One person counts at most
``per_user`` times per interval, so one loud member cannot fill the count alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Post = Callable[[str, str], Awaitable[None]]  # (space_id, text)


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    per_user: Counter = field(default_factory=Counter)

    def render(self) -> str:
        parts = [f"{key} ×{n}" if n > 1 else key for key, n in self.counts.most_common()]
        people = len(self.per_user)
        return f"{' · '.join(parts)} — from {people} {'person' if people == 1 else 'people'}"


@dataclass
class ReactionBatcher:
    post: Post
    interval: float = 10.0
    #: reactions one person adds to one space's count per interval
    per_user: int = 5
    _pending: dict[str, Tally] = field(default_factory=dict)
    _task: asyncio.Task | None = None

    def add(self, space_id: str, user_id: str, key: str) -> bool:
        """Count a reaction; False if this person has reached their share for now."""
        tally = self._pending.setdefault(space_id, Tally())
        if tally.per_user[user_id] >= self.per_user:
            return False
        tally.per_user[user_id] += 1
        tally.counts[key] += 1
        return True

    def pending(self, space_id: str) -> dict[str, int]:
        tally = self._pending.get(space_id)
        return dict(tally.counts) if tally else {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reaction-batcher")

    async def flush(self, space_id: str | None = None) -> None:
        for sid in [space_id] if space_id else list(self._pending):
            tally = self._pending.pop(sid, None)
            if tally is None or not tally.counts:
                continue
            try:
                await self.post(sid, tally.render())
            except Exception as exc:  # noqa: BLE001 - a failed post must not stop the batcher
                log.error("space %s: could not post %d reactions: %s", sid, sum(tally.counts.values()), exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
