"""Requests to the homeserver while it rate-limits the bot: in turn, fairest first.

As long as the homeserver answers, requests go out side by side and this gate does
nothing. Once it answers 429 (M_LIMIT_EXCEEDED), the gate closes for the
``retry_after_ms`` it gave, and until it has been calm for ``calm_seconds`` requests go out
one at a time. Who goes next is the request made for the person served least in this
spell, then the oldest: a flooder's answers queue behind everyone else's, never ahead of
them. The person a request is for is :data:`acting_for` (a context variable the bot
sets for each event it handles; "" is the bot's own work, such as announcements).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

log = logging.getLogger(__name__)

acting_for: ContextVar[str] = ContextVar("chorus_acting_for", default="")
#: ``acting_for`` of the sync loop's own requests (accepting invites, filling gaps): they
#: go first, since no one's next event is read until they are done
SYNC_LOOP = "\x00sync"

R = TypeVar("R")

#: a wait the homeserver asks for is taken up to this long (a longer one is cut to it)
MAX_WAIT_SECONDS = 60.0
#: a request answered 429 is tried this many times in all, then its 429 is returned
MAX_TRIES = 8


class SendGate:
    def __init__(self, calm_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.calm_seconds = calm_seconds
        self._clock = clock
        self._until = 0.0
        self._last_limited: float | None = None
        self._in_flight = 0
        self._queue: list[tuple[int, int, str, asyncio.Future[None]]] = []
        self._order = itertools.count()
        #: requests let through per person in this spell, and theirs waiting now
        self._served: Counter[str] = Counter()
        self._queued: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        #: while throttled, requests go out at least this far apart (the last wait asked for),
        #: so that each success is not followed by a 429
        self._spacing = 0.0
        #: 429 answers seen, and requests that had to wait their turn
        self.limited_count = 0
        self.queued_count = 0

    @property
    def throttled(self) -> bool:
        """True from a 429 until ``calm_seconds`` after the last one."""
        if self._last_limited is None:
            return False
        if self._clock() - self._last_limited < self.calm_seconds:
            return True
        if self._queue:  # calm again, but the queue drains first, in its order
            return True
        self._last_limited = None
        self._served.clear()
        self._spacing = 0.0
        return False

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._queue if not fut.done())

    async def run(self, call: Callable[[int], Awaitable[R]], retry_after: Callable[[R], float | None]) -> R:
        """``call(tries_before)`` in its turn; while ``retry_after(answer)`` says the
        homeserver is limiting (seconds to wait), wait and try again, up to MAX_TRIES."""
        for tries in range(MAX_TRIES):
            await self._acquire()
            try:
                answer = await call(tries)
                wait = retry_after(answer)
                if wait is not None:  # before the release: the next one waits as asked too
                    self._limited(wait)
            finally:
                self._release()
            if wait is None:
                return answer
        log.warning("the homeserver kept rate-limiting a request for %s; gave up after %d tries",
                    acting_for.get() or "the bot", MAX_TRIES)
        return answer

    def _limited(self, seconds: float) -> None:
        now = self._clock()
        if self._last_limited is None:
            log.warning("the homeserver is rate-limiting the bot (wait %.1f s); requests now go out one at a "
                        "time, least-served person first", seconds)
        self.limited_count += 1
        self._last_limited = now
        self._spacing = min(max(seconds, 0.0), MAX_WAIT_SECONDS)
        self._until = max(self._until, now + self._spacing)

    async def _acquire(self) -> None:
        if not self.throttled and not self._queue:
            self._in_flight += 1
            return
        user = acting_for.get()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # its place: after as many of everyone's as this person has had or has waiting (the
        # sync loop's own first)
        rank = -1 if user == SYNC_LOOP else self._served[user] + self._queued[user]
        heapq.heappush(self._queue, (rank, next(self._order), user, fut))
        self._queued[user] += 1
        self.queued_count += 1
        self._next()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # its turn came as it was cancelled
                self._release()
            raise

    def _release(self) -> None:
        self._in_flight -= 1
        self._next()

    def _next(self) -> None:
        """Let the next request go if none is out and the homeserver's wait is over."""
        if self._timer is not None or self._in_flight > 0:
            return
        while self._queue and self._queue[0][3].done():  # cancelled while waiting
            self._pop()
        if not self._queue:
            return
        delay = self._until - self._clock()
        if delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._wake)
            return
        user, fut = self._pop()
        self._in_flight += 1
        self._served[user] += 1
        self._until = max(self._until, self._clock() + self._spacing)
        fut.set_result(None)

    def _pop(self) -> tuple[str, asyncio.Future[None]]:
        _, _, user, fut = heapq.heappop(self._queue)
        self._queued[user] -= 1
        if self._queued[user] <= 0:
            del self._queued[user]
        return user, fut

    def _wake(self) -> None:
        self._timer = None
        self._next()
