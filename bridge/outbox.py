"""The control messages (JSON) waiting for one WebSocket connection, bounded.

Audio never waits here: the stage writes each tick's frame (or bundle) straight to the
connection's transport, and only audio decides that a connection is too slow
(bridge/stage.py). Control messages wait in this outbox until the connection's next audio
write, and go out with it in the same write, so that chatter can never make a listener
look slow and never costs a write of its own:

- A message with a ``key`` is a *state* (levels, participants, roles, a caption's current
  text...): a newer one with the same key replaces the unsent older one in place, so a
  burst of states costs one slot.
- A message without a key is an *event* (pong, error, a batch of reactions).
- At most ``limit`` messages wait; past that the oldest is dropped (and counted). The
  outbox never blocks, never grows and never closes the connection.

Messages are kept as complete WebSocket frames (bridge/wsframe.py): a broadcast is framed
once and the same bytes object sits in every connection's outbox.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable

#: control messages kept per connection
CONTROL_LIMIT = 32


class Outbox:
    def __init__(self, limit: int = CONTROL_LIMIT) -> None:
        self.limit = limit
        self.control: OrderedDict[Hashable, bytes] = OrderedDict()
        self.dropped = 0
        self._unique = itertools.count()

    def __len__(self) -> int:
        return len(self.control)

    def put(self, frame: bytes, key: Hashable | None = None) -> None:
        """Queue a framed message; with ``key``, replace an unsent one of the same key."""
        if key is None:
            key = ("event", next(self._unique))
        elif key in self.control:
            self.control[key] = frame  # newest state wins, in the older one's place
            return
        self.control[key] = frame
        while len(self.control) > self.limit:
            self.control.popitem(last=False)
            self.dropped += 1

    def take(self) -> list[bytes]:
        """Everything pending, oldest first; empties the outbox."""
        frames = list(self.control.values())
        self.control.clear()
        return frames
