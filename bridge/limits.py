"""Rate limits and log throttles: token buckets, per key and overall, with bounded memory.

Everything takes the time from a ``clock`` (``time.monotonic`` unless given), so the
arithmetic can be tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` tokens per second; :meth:`take` spends one."""

    __slots__ = ("capacity", "rate", "_tokens", "_stamp", "_clock")

    def __init__(self, capacity: float, rate: float, clock: Clock = time.monotonic) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and rate > 0")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def take(self) -> bool:
        """Spend a token if there is one; False (and nothing spent) if the bucket is empty."""
        if self._refill() < 1:
            return False
        self._tokens -= 1
        return True

    def full(self) -> bool:
        return self._refill() >= self.capacity

    def retry_after(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1 - self._refill()) / self.rate)


class RateLimiter:
    """A bucket per key (e.g. a remote address) and one for all keys together.

    ``per_key`` and ``total`` are events per minute; each is also the burst size. At most
    ``max_keys`` buckets are kept: full ones (idle keys) are forgotten first, and when
    all are busy the oldest is dropped; the overall bucket still bounds the total then.
    """

    def __init__(self, per_key: int, total: int, *, max_keys: int = 10_000,
                 clock: Clock = time.monotonic) -> None:
        self.per_key = per_key
        self.total = total
        self.max_keys = max_keys
        self._clock = clock
        self._overall = TokenBucket(total, total / 60.0, clock)
        self._buckets: dict[Hashable, TokenBucket] = {}

    def allow(self, key: Hashable) -> bool:
        """True if one more event from ``key`` is within both limits (and counts it)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[key] = TokenBucket(self.per_key, self.per_key / 60.0, self._clock)
        if bucket.retry_after() > 0:
            return False
        if not self._overall.take():
            return False
        return bucket.take()

    def retry_after(self, key: Hashable) -> float:
        bucket = self._buckets.get(key)
        own = bucket.retry_after() if bucket is not None else 0.0
        return max(own, self._overall.retry_after())

    def _make_room(self) -> None:
        if len(self._buckets) < self.max_keys:
            return
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class Throttle:
    """Say whether to log now: at most once per ``interval`` seconds per key, counting
    what was held back so the next line can say how many."""

    def __init__(self, interval: float, *, max_keys: int = 1000, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def ready(self, key: Hashable = None) -> int | None:
        """None to stay quiet; else how many events were held back since the last line."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if key not in self._last and len(self._last) >= self.max_keys:
            self._forget(now)
        self._last[key] = now
        return self._held.pop(key, 0)

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self._last.items() if now - t >= self.interval]:
            del self._last[key]
            self._held.pop(key, None)
        while len(self._last) >= self.max_keys:
            key = next(iter(self._last))
            del self._last[key]
            self._held.pop(key, None)


class Slots:
    """At most ``size`` things at once; :meth:`try_take` never waits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0

    def try_take(self) -> bool:
        if self.used >= self.size:
            return False
        self.used += 1
        return True

    def give_back(self) -> None:
        self.used = max(0, self.used - 1)
