"""Bridge → bot events: fan-out to the bot's control WebSocket(s).

While no bot is connected, events are kept (bounded) and delivered on the next
connection, so a ``recording_ready`` is not lost across a bot restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)


DROP_LOG_SECONDS = 10.0


class EventBus:
    def __init__(self, backlog: int = 1000, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._backlog: deque[dict[str, Any]] = deque(maxlen=backlog)
        self._queue_size = queue_size
        self.dropped = 0
        #: drops are logged at most once per DROP_LOG_SECONDS, with the count since the last line
        self._dropped_unlogged = 0
        self._last_drop_log = float("-inf")

    def emit(self, event: dict[str, Any]) -> None:
        if not self._subscribers:
            self._backlog.append(event)
            return
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                self._dropped_unlogged += 1
                now = time.monotonic()
                if now - self._last_drop_log >= DROP_LOG_SECONDS:
                    log.warning("control event subscriber is behind; dropped %d event(s), the latest %s (space %s)",
                                self._dropped_unlogged, event.get("type"), event.get("space_id"))
                    self._last_drop_log, self._dropped_unlogged = now, 0

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        while self._backlog and not queue.full():
            queue.put_nowait(self._backlog.popleft())
        self._subscribers.add(queue)
        return queue

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every subscriber has sent what it was given."""
        queues = list(self._subscribers)
        if queues:
            try:
                await asyncio.wait_for(asyncio.gather(*(q.join() for q in queues)), timeout)
            except TimeoutError:
                log.warning("control events not flushed within %.1fs", timeout)

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)
