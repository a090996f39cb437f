"""The Redis links' discipline when stopping: a shutdown never hangs on one of their
tasks, and a loop asked to stop stops even if a library swallowed the cancellation.
Pure asyncio; no Redis needed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge import redis_link
from bridge.origin_feed import OriginFeed

from .conftest import make_settings


class Stubborn:
    """A task that will not stop: it eats each cancellation (as a buggy library might),
    until the test lets it go."""

    def __init__(self, name: str) -> None:
        self.started = asyncio.Event()
        self.released = False
        self.task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        self.started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.released:
                    raise
                asyncio.current_task().uncancel()

    async def release(self) -> None:
        self.released = True
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_task_that_will_not_stop_is_named_and_left_behind(caplog) -> None:
    stubborn = Stubborn("stubborn-link")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite-link")
    await stubborn.started.wait()
    try:
        with caplog.at_level(logging.ERROR, logger="bridge.redis_link"):
            await asyncio.wait_for(redis_link.stop_tasks([stubborn.task, polite], "test feed", seconds=0.2), 10)
        assert polite.cancelled()
        assert not stubborn.task.done()
        [record] = caplog.records
        assert "test feed: task stubborn-link did not stop" in record.getMessage()
        assert "in _run" in record.getMessage()  # where it waits
    finally:
        await stubborn.release()


async def test_an_origin_feed_closes_even_when_one_of_its_tasks_will_not_stop(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(redis_link, "STOP_SECONDS", 0.2)
    feed = OriginFeed(make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0"), {})
    stubborn = Stubborn("origin-feed:stuck")
    await stubborn.started.wait()
    feed._tasks = [stubborn.task]
    try:
        with caplog.at_level(logging.ERROR, logger="bridge.redis_link"):
            await asyncio.wait_for(feed.close(), 10)
        assert feed._tasks == []
        assert any("origin feed: task origin-feed:stuck did not stop" in r.getMessage() for r in caplog.records)
    finally:
        await stubborn.release()


async def test_a_loop_asked_to_stop_stops_even_if_the_cancellation_was_swallowed() -> None:
    rounds = 0

    async def loop_swallowing_once() -> None:
        nonlocal rounds
        swallowed = False
        while True:
            redis_link.stop_if_cancelled()
            rounds += 1
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed = True  # a library turned it into "no message yet"

    task = asyncio.create_task(loop_swallowing_once())
    while rounds < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()


def test_a_task_not_asked_to_stop_goes_on() -> None:
    async def main() -> bool:
        redis_link.stop_if_cancelled()
        return True
    assert asyncio.run(main())
