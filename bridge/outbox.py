"""What a stage sends one connection: audio frames and control messages, each bounded.

The two kinds are kept apart so that chatter can never make a listener look slow:

- **audio** is a FIFO of at most ``audio_limit`` frames. The tick appends one frame per
  20 ms; if the connection has not taken them, the FIFO fills and the caller decides the
  connection is too slow. Only audio decides that.
- **control** holds at most ``control_limit`` JSON texts. A message with a ``key`` is a
  *state* (levels, participants, roles, a caption's current text...): a newer one with the
  same key replaces the unsent older one in place, so a burst of states costs one slot. A
  message without a key is an *event* (pong, error, a batch of reactions). When control is
  full, the oldest message is dropped (and counted): control never blocks, never grows and
  never closes the connection.

The writer (bridge/app.py) takes everything pending in one go: control first, then audio.
The texts and frames are shared objects: the stage encodes each once for every connection.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Hashable

#: control messages kept per connection; a reader drains them every tick
CONTROL_LIMIT = 32


class Outbox:
    def __init__(self, audio_limit: int, control_limit: int = CONTROL_LIMIT) -> None:
        self.audio_limit = audio_limit
        self.control_limit = control_limit
        self.audio: deque[bytes] = deque()
        self.control: OrderedDict[Hashable, str] = OrderedDict()
        self.control_dropped = 0
        self._ready = asyncio.Event()
        self._unique = itertools.count()

    def put_audio(self, frame: bytes) -> bool:
        """Queue one frame; False (and nothing queued) if ``audio_limit`` are waiting."""
        if len(self.audio) >= self.audio_limit:
            return False
        self.audio.append(frame)
        self._ready.set()
        return True

    def put_control(self, text: str, key: Hashable | None = None) -> None:
        """Queue a control message; with ``key``, replace an unsent one of the same key."""
        if key is None:
            key = ("event", next(self._unique))
        elif key in self.control:
            self.control[key] = text  # newest state wins, in the older one's place
            return
        self.control[key] = text
        while len(self.control) > self.control_limit:
            self.control.popitem(last=False)
            self.control_dropped += 1
        self._ready.set()

    def pending(self) -> int:
        return len(self.audio) + len(self.control)

    def take_nowait(self) -> tuple[list[str], list[bytes]]:
        """Everything pending, control first; empties the outbox."""
        control = list(self.control.values())
        self.control.clear()
        audio = list(self.audio)
        self.audio.clear()
        self._ready.clear()
        return control, audio

    async def take(self) -> tuple[list[str], list[bytes]]:
        """Wait until something is pending, then take it all."""
        while not self.control and not self.audio:
            self._ready.clear()
            await self._ready.wait()
        return self.take_nowait()
