"""Which listen-only clients get this tick's bundle, and what goes in it.

A client that gets bundles of ``size`` frames gets one every ``size`` ticks, holding the
last ``size`` frames. Clients are spread over ``size`` phases by the tick they joined at,
so each tick writes to about 1/size of the bundled clients (not all of them every
size-th tick, which would make that tick as long as an unbundled one and hold up the
next). The clients of one phase share one bundle, built once.

Nothing here does I/O: the stage writes what this says (bridge/stage.py).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from . import wire

C = TypeVar("C")


class BundleGroups(Generic[C]):
    def __init__(self, size: int) -> None:
        if not 2 <= size <= wire.MAX_BUNDLE:
            raise ValueError(f"a bundle is 2 to {wire.MAX_BUNDLE} frames, not {size}")
        self.size = size
        #: the last ``size`` packed frames (wire.pack), oldest first
        self.ring: deque[bytes] = deque(maxlen=size)
        self.groups: list[dict[int, C]] = [{} for _ in range(size)]
        #: client id -> its phase (the tick number modulo size at which it gets a bundle)
        self.phase: dict[int, int] = {}
        #: clients that get frames one by one until the end of the current tick
        self.joining: dict[int, C] = {}
        self.seq = 0

    def __contains__(self, client_id: int) -> bool:
        return client_id in self.phase

    def join(self, client_id: int, client: C) -> None:
        """From the end of this tick on (it gets this tick's frame on its own), bundles."""
        if client_id not in self.phase:
            self.joining[client_id] = client

    def leave(self, client_id: int) -> list[bytes]:
        """No more bundles; returns the frames it has not had yet (since its last bundle),
        oldest first, for the caller to send one by one right away."""
        self.joining.pop(client_id, None)
        phase = self.phase.pop(client_id, None)
        if phase is None:
            return []
        del self.groups[phase][client_id]
        missed = (self.seq - phase) % self.size
        return list(self.ring)[len(self.ring) - missed:] if missed else []

    def push(self, seq: int, frame: bytes) -> tuple[dict[int, C], bytes | None]:
        """This tick's packed frame; returns the clients whose bundle is due and the
        bundle (None if nobody's is due)."""
        self.seq = seq
        self.ring.append(frame)
        due = self.groups[seq % self.size]
        if not due:
            return due, None
        return due, wire.pack_bundle(list(self.ring))

    def settle(self) -> list[int]:
        """End of the tick: the clients joining have had every frame up to this one; they
        get their first bundle ``size`` ticks from now. Returns their ids."""
        if not self.joining:
            return []
        phase = self.seq % self.size
        group = self.groups[phase]
        for client_id, client in self.joining.items():
            group[client_id] = client
            self.phase[client_id] = phase
        joined = list(self.joining)
        self.joining.clear()
        return joined
