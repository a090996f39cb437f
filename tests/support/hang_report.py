"""What a test that hangs was waiting on.

pytest-timeout, when a test runs past its limit, prints each thread's stack; for a test
on asyncio that says only "the event loop is idle in select()". :class:`HangReport`
goes off shortly before that limit, from a thread of its own, and prints the stack of
every asyncio task not yet done (found through the garbage collector, so it needs no
handle on the test's loop): the coroutine each one is parked in, which is what a
reader needs. A test that ends in time cancels it and costs nothing.
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import threading
from typing import TextIO

#: the report goes off this long before pytest-timeout's limit
MARGIN_SECONDS = 20.0


def pending_tasks() -> list[asyncio.Task]:
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]


def describe_tasks(tasks: list[asyncio.Task]) -> str:
    out = io.StringIO()
    out.write(f"{len(tasks)} asyncio task(s) not done:\n")
    for task in tasks:
        try:
            task.print_stack(file=out)
        except Exception as exc:  # noqa: BLE001 - a report must not fail the run
            out.write(f"{task!r}: stack not readable ({exc})\n")
    return out.getvalue()


class HangReport:
    """Prints the pending tasks' stacks to ``stream`` after ``seconds`` unless cancelled."""

    def __init__(self, seconds: float, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream
        self.fired = False
        self._timer = threading.Timer(seconds, self._report)
        self._timer.daemon = True
        self._timer.name = "hang-report"

    def start(self) -> HangReport:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def _report(self) -> None:
        self.fired = True
        stream = self.stream or sys.__stderr__
        stream.write(f"\n==== {self.what} is still running: what its asyncio tasks wait on ====\n")
        stream.write(describe_tasks(pending_tasks()))
        stream.flush()


def report_seconds(timeout: float | None) -> float | None:
    """When the report for a test with pytest-timeout's ``timeout`` goes off (None: never)."""
    if not timeout or timeout <= 0:
        return None
    return max(timeout - MARGIN_SECONDS, timeout * 0.8)
