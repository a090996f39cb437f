"""The store, off the event loop.

The bot's event loop also runs, in embedded mode, the bridge's 20 ms audio tick: it must
never wait on a database (a SQLite file lock, a PostgreSQL round trip, a slow query). So
every call the bot makes to its store runs in a thread of a small pool of its own, as
Synapse's ``runInteraction`` does, and the loop awaits the answer:

    rec = await db.load_space(space_id)                  # any Store method, awaited
    outcome = await db.unit(decide_and_save)             # several, in one transaction

:meth:`Database.unit` runs a function of the store in one transaction (Store.unit): a
command's load, its decision (pure: bot/core/rules.py) and its save, together. The
pool has one thread for SQLite (one writer at a time is all SQLite allows; more threads
would only wait on its lock) and a few for PostgreSQL. A store call that fails raises in
the awaiting coroutine as it would have on the loop.

A call whose awaiting task is cancelled (a command past its deadline, a shutdown) cannot
stop a thread mid-transaction: the task waits for the call to end, then takes its
cancellation. So whatever the task holds (a space's lock) is held until the database work
under it is over, and no one else's unit runs beside it. PostgreSQL's statement and lock
timeouts (bot/db/engine.py) bound that wait. An in-memory SQLite database, which has
nothing to wait on and is one connection's, is called on the loop itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .engine import in_memory
from .store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

#: threads for a PostgreSQL store (the engine's pool holds 5 connections, and 10 more on demand)
POSTGRES_THREADS = 4


def threads_for(store: Store) -> int:
    return 1 if store.engine.url.get_backend_name() == "sqlite" else POSTGRES_THREADS


class Database:
    """Every method of :class:`Store`, as a coroutine run in the pool; and :meth:`unit`."""

    def __init__(self, store: Store, threads: int | None = None) -> None:
        self.store = store
        #: an in-memory SQLite database: called on the loop (see the module's docstring)
        self.inline = in_memory(store.engine.url)
        self.threads = 0 if self.inline else threads or threads_for(store)
        self._pool = None if self.inline else ThreadPoolExecutor(self.threads, thread_name_prefix="chorus-db")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the pool; if the awaiting task is cancelled meanwhile,
        it still waits for the call to end before it takes the cancellation."""
        if self._pool is None:
            return fn(*args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                try:
                    await asyncio.wait([future])
                except asyncio.CancelledError:
                    continue  # asked again: the answer is the same
            if not future.cancelled():
                future.exception()  # retrieved: a failure after the cancellation is not logged as lost
            raise

    async def run_apart(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` in a thread outside the pool, so that it does not queue behind the
        pool's work (a health check); on the loop for an in-memory database."""
        if self._pool is None:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def unit(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)`` in the pool, every store call it makes in one transaction."""
        return await self.run(self._in_unit, fn)

    def _in_unit(self, fn: Callable[[Store], T]) -> T:
        with self.store.unit():
            return fn(self.store)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        if not callable(method) or name.startswith("_"):
            raise AttributeError(f"Database has no method {name!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.run(method, *args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        return call

    def close(self) -> None:
        """Let the calls under way finish; no new ones are taken."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
