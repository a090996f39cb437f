"""How many commands one person may send: a token bucket per sender.

Each sender has ``burst`` commands to spend; spent ones come back at ``per_minute``. A
command that finds the bucket empty is refused, and the first refused one gets a notice
(:attr:`Verdict.WARN`); after that the sender is silenced, every command dropped without a
word, until the bucket is full again. So a flood costs the bot one notice and ``burst``
answers per refill, whatever its rate, and never a database write.

Pure: the time is passed in (seconds; the bot passes when each command was sent).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: buckets kept at most; full ones are forgotten first (they are the same as no bucket)
MAX_SENDERS = 10_000


class Verdict(enum.Enum):
    RUN = "run"
    #: refused, and the sender is told once that they are silenced
    WARN = "warn"
    #: refused without a word
    DROP = "drop"


@dataclass
class _Bucket:
    tokens: float
    at: float
    silenced: bool = False


class CommandLimiter:
    def __init__(self, burst: int, per_minute: float) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("burst must be at least 1 and per_minute more than 0")
        self.burst = burst
        self.rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}

    def take(self, sender: str, now: float) -> Verdict:
        """Spend one command of ``sender``'s at ``now``."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) >= MAX_SENDERS:
                self._forget_full(now)
            bucket = self._buckets[sender] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        if bucket.silenced:
            if bucket.tokens < self.burst:
                return Verdict.DROP
            bucket.silenced = False
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.RUN
        bucket.silenced = True
        return Verdict.WARN

    def silenced_for(self, sender: str, now: float) -> float:
        """Seconds until ``sender``'s commands run again (0 if they run now)."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            return 0.0
        self._refill(bucket, now)
        need = self.burst if bucket.silenced else 1.0
        return max(0.0, (need - bucket.tokens) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        if now > bucket.at:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = max(bucket.at, now)

    def _forget_full(self, now: float) -> None:
        for sender, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst:
                del self._buckets[sender]
        if len(self._buckets) >= MAX_SENDERS:  # all busy: forget the oldest (a new one starts full)
            oldest = sorted(self._buckets, key=lambda s: self._buckets[s].at)[: len(self._buckets) // 10 + 1]
            for sender in oldest:
                del self._buckets[sender]
