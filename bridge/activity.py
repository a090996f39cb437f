"""Reactions and raised hands: rate limits, and the batch each flush sends to everyone.

Nobody's clicks are forwarded one by one: the stage adds what it accepts to an
:class:`ActivityBatch` (a count per reaction key, the latest hand state per user) and
sends the whole batch as one ``activity`` message every few ticks. So the number of
messages a listener gets is bounded by the clock, not by how many people click.

What is accepted is bounded by :class:`ActivityLimits`, token buckets (a burst, then a
steady rate) kept

- per connection, for everyone;
- per signed-in user, shared by all of that user's connections (opening more sockets
  buys no extra budget);
- per stage for anonymous reactions together (anonymous connections are free to open).

An action must fit in every bucket that applies; only then is a token taken from each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: reactions: a burst of 10, then one a second (per connection, and per user)
REACTION_BURST = 10
REACTION_RATE = 1.0
#: raising or lowering a hand: a burst of 4, then one every 2 s (per connection, and per user)
HAND_BURST = 4
HAND_RATE = 0.5
#: all anonymous reactions of one stage together: a burst of 20, then 10 a second
ANON_REACTION_BURST = 20
ANON_REACTION_RATE = 10.0
#: distinct reaction keys in one batch; more are refused until the next flush
MAX_KEYS_PER_BATCH = 16
#: people whose hand changed, in one batch (more than that waits for the next flush)
MAX_HANDS_PER_BATCH = 256


@dataclass
class TokenBucket:
    burst: float
    rate: float  # tokens per second
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def has_token(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


@dataclass
class Budget:
    """What one connection, or one user, may still do."""

    reactions: TokenBucket = field(default_factory=lambda: TokenBucket(REACTION_BURST, REACTION_RATE))
    hands: TokenBucket = field(default_factory=lambda: TokenBucket(HAND_BURST, HAND_RATE))

    def is_full(self, now: float) -> bool:
        return self.reactions.is_full(now) and self.hands.is_full(now)


def _take_all(buckets: list[TokenBucket], now: float) -> bool:
    if not all(b.has_token(now) for b in buckets):
        return False
    for b in buckets:
        b.take(now)
    return True


class ActivityLimits:
    """The buckets of one stage (per user and anonymous); connections hold their own."""

    def __init__(self) -> None:
        self._users: dict[str, Budget] = {}
        self.anonymous_reactions = TokenBucket(ANON_REACTION_BURST, ANON_REACTION_RATE)

    def user(self, user_id: str) -> Budget:
        budget = self._users.get(user_id)
        if budget is None:
            budget = self._users[user_id] = Budget()
        return budget

    def allow_reaction(self, connection: Budget, user_id: str | None, now: float) -> bool:
        shared = self.anonymous_reactions if user_id is None else self.user(user_id).reactions
        return _take_all([connection.reactions, shared], now)

    def allow_hand(self, connection: Budget, user_id: str, now: float) -> bool:
        return _take_all([connection.hands, self.user(user_id).hands], now)

    def forget_idle(self, now: float, connected: set[str]) -> None:
        """Drop the budgets of users who left and whose buckets have refilled (a full
        bucket is the same as a new one, so nothing is forgiven by dropping it)."""
        for user_id in [u for u, b in self._users.items() if u not in connected and b.is_full(now)]:
            del self._users[user_id]

    def __len__(self) -> int:
        return len(self._users)


class ActivityBatch:
    """Accepted reactions and hand changes since the last flush."""

    def __init__(self) -> None:
        self.reactions: dict[str, int] = {}
        self.hands: dict[str, bool] = {}
        #: who on the stage sent which reaction (the latest one each): the page floats it
        #: over their avatar. Only people on stage, so it is bounded by the stage's size.
        self.senders: dict[str, str] = {}

    def has_room_for(self, key: str) -> bool:
        return key in self.reactions or len(self.reactions) < MAX_KEYS_PER_BATCH

    def add_reaction(self, key: str, on_stage: str | None = None) -> None:
        """Count ``key``; ``on_stage`` names the sender if they are on the stage."""
        self.reactions[key] = self.reactions.get(key, 0) + 1
        if on_stage is not None:
            self.senders[on_stage] = key

    def set_hand(self, user_id: str, raised: bool) -> None:
        self.hands.pop(user_id, None)
        self.hands[user_id] = raised
        while len(self.hands) > MAX_HANDS_PER_BATCH:  # the participants list still has it
            self.hands.pop(next(iter(self.hands)))

    def flush(self) -> dict[str, Any] | None:
        """The ``activity`` message for what was gathered (None if nothing), and reset."""
        if not self.reactions and not self.hands:
            return None
        message: dict[str, Any] = {"type": "activity", "reactions": self.reactions,
                                   "hands": self.hands}
        if self.senders:
            message["from"] = self.senders
        self.reactions, self.hands, self.senders = {}, {}, {}
        return message
