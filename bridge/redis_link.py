"""A bridge's links to Redis, which it never waits on.

:class:`Publisher` owns one connection and a bounded queue of commands: callers only
append (never await), its own task writes them out in pipelines, each within
:data:`OP_SECONDS`. While Redis is down or slow, what is queued is dropped (live audio
that is late is useless, and the state goes out again each second); the link is tried
again after 0.5 s, doubling to :data:`RETRY_MAX_SECONDS`, and each new reason is logged
once. :func:`subscribe` is the same discipline for reading a pub/sub pattern or channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import feed
from .schema import mask_url

log = logging.getLogger(__name__)

#: one Redis call (connect, a pipeline, a read) may take this long before the link counts as down
OP_SECONDS = 2.0
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
#: commands waiting to be written; beyond this the oldest are dropped
QUEUE_LIMIT = 2000
#: written in one pipeline at most
BATCH = 256
#: what a link's trouble may be: anything else is a fault in our own code (logged with
#: its traceback, then retried all the same)
LINK_ERRORS = (RedisError, OSError, TimeoutError, EOFError)
#: a link's task, once cancelled, has this long to stop before shutdown goes on without it
STOP_SECONDS = 5.0


def connect(url: str) -> aioredis.Redis:
    """A client that does not retry on its own (the loops here do) and times out."""
    return aioredis.Redis.from_url(url, socket_timeout=OP_SECONDS, socket_connect_timeout=OP_SECONDS,
                                   retry=Retry(NoBackoff(), 0), health_check_interval=0)


async def stop_tasks(tasks: list[asyncio.Task[Any]], what: str, seconds: float | None = None) -> None:
    """Cancel ``tasks`` and wait for them, at most ``seconds`` (STOP_SECONDS): a shutdown
    never hangs on a link. One that has not stopped by then is logged with where it
    waits, and left behind."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    seconds = STOP_SECONDS if seconds is None else seconds
    _done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        where = "; ".join(f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in task.get_stack())
        log.error("%s: task %s did not stop within %.0f s of being cancelled (waiting at %s); "
                  "shutting down without it", what, task.get_name(), seconds, where or "unknown")


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task has been asked to stop. A loop calls it each
    round, so that a cancellation a library swallowed (turned into a timeout, say) still
    ends the loop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, LINK_ERRORS) else f"{type(exc).__name__}: {text}"


class LinkHealth:
    """Whether a link is up, and why not; logs each change (and each new reason) once."""

    def __init__(self, what: str, url: str) -> None:
        self.what = what
        self.where = mask_url(url)
        self.state = "connecting"
        self.last_error: str | None = None
        self.downs = 0

    def up(self) -> None:
        if self.state != "up":
            if self.downs:
                log.warning("%s: Redis at %s is back", self.what, self.where)
            else:
                log.info("%s: connected to Redis at %s", self.what, self.where)
        self.state = "up"

    def down(self, exc: BaseException) -> None:
        reason = describe(exc)
        if not isinstance(exc, LINK_ERRORS):
            log.error("%s: fault in the Redis link (retried): %s", self.what, reason, exc_info=exc)
        elif self.state != "down" or reason != self.last_error:
            log.warning("%s: Redis at %s is out of reach (%s); going on without it, retrying",
                        self.what, self.where, reason)
        if self.state != "down":
            self.downs += 1
        self.state, self.last_error = "down", reason

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "last_error": self.last_error, "downs": self.downs}


async def _close(client: aioredis.Redis | Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(OP_SECONDS):
            await client.aclose()


async def _drop_connections(client: aioredis.Redis) -> None:
    """After a failure: the next try opens a fresh connection, with the same client (one
    client per link, so a rediss:// link builds its TLS context once, not per retry)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(OP_SECONDS):
            await client.connection_pool.disconnect()


class Publisher:
    """Commands to Redis, written by this object's own task; :meth:`send` never waits."""

    def __init__(self, url: str, what: str,
                 on_up: Callable[[], None] | None = None) -> None:
        self.url = url
        self.health = LinkHealth(what, url)
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: set while the link is up, for reads made by others (each within OP_SECONDS)
        self.client: aioredis.Redis | None = None
        self.on_up = on_up
        self.sent = 0
        self.dropped = 0
        self._refusal = ""
        #: commands taken from the queue whose pipeline has not answered yet
        self._inflight = 0

    @property
    def up(self) -> bool:
        return self.health.state == "up"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"redis:{self.health.what}")

    def send(self, *command: Any) -> None:
        """Queue one command (``"PUBLISH", channel, data``); dropped while the link is down."""
        if not self.up:
            self.dropped += 1
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(command)
        self._wake.set()

    async def flush(self, seconds: float) -> None:
        """Wait (at most ``seconds``) until what is queued is written or dropped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while (self._queue or self._inflight) and self.up:
                    await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task], self.health.what)
            self._task = None
        self.health.state = "closed"
        self._queue.clear()

    async def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        client = connect(self.url)
        try:
            while True:
                stop_if_cancelled()
                if await self._spell(client):
                    delay = RETRY_FIRST_SECONDS  # it was up: the backoff starts over
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        finally:
            await _close(client)

    async def _spell(self, client: aioredis.Redis) -> bool:
        """Connect, then write until something fails; whether it got connected."""
        connected = False
        try:
            async with asyncio.timeout(OP_SECONDS):
                await client.ping()
            connected = True
            self._queue.clear()
            self.health.up()
            self.client = client
            if self.on_up is not None:
                self.on_up()
            await self._write(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the link's trouble must not end the bridge
            self.health.down(exc)
            self.dropped += len(self._queue)
            self._queue.clear()
        finally:
            self.client = None
            await _drop_connections(client)
        return connected

    async def _write(self, client: aioredis.Redis) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
                pipe = client.pipeline(transaction=False)
                for command in batch:
                    pipe.execute_command(*command)
                self._inflight = len(batch)
                try:
                    async with asyncio.timeout(OP_SECONDS):
                        results = await pipe.execute(raise_on_error=False)
                finally:
                    self._inflight = 0
                refused = [r for r in results if isinstance(r, Exception)]
                self.sent += len(batch) - len(refused)
                if refused:  # Redis answered, but said no (out of memory, read-only...)
                    self.dropped += len(refused)
                    reason = describe(refused[0])
                    if reason != self._refusal:
                        self._refusal = reason
                        log.warning("%s: Redis refused %d of %d commands: %s", self.health.what,
                                    len(refused), len(batch), reason)


#: a subscription pings Redis this often; no answer (nor anything else) for twice
#: OP_SECONDS after a ping and the connection is taken for dead (a half-open TCP link
#: would otherwise look like a quiet channel for ever)
PING_SECONDS = 2.0


async def subscribe(url: str, health: LinkHealth, *, pattern: str = "", channel: str = "",
                    on_message: Callable[[str, bytes], None],
                    on_up: Callable[[], None] | None = None) -> None:
    """Read a pattern (PSUBSCRIBE) or a channel (SUBSCRIBE) for ever, handing each message
    to ``on_message(channel, data)``; reconnects with backoff. Run it as a task; cancel it
    to stop."""
    delay = RETRY_FIRST_SECONDS
    client = connect(url)
    try:
        while True:
            stop_if_cancelled()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(OP_SECONDS):
                    if pattern:
                        await pubsub.psubscribe(pattern)
                    else:
                        await pubsub.subscribe(channel)
                health.up()
                delay = RETRY_FIRST_SECONDS
                if on_up is not None:
                    on_up()
                await _read(pubsub, on_message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect, whatever went wrong
                health.down(exc)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(OP_SECONDS):
                        await pubsub.aclose()
                await _drop_connections(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
    finally:
        await _close(client)


async def _read(pubsub: Any, on_message: Callable[[str, bytes], None]) -> None:
    loop = asyncio.get_running_loop()
    heard = pinged = loop.time()
    while True:
        stop_if_cancelled()
        now = loop.time()
        if now - pinged >= PING_SECONDS:
            async with asyncio.timeout(OP_SECONDS):
                await pubsub.ping()
            pinged = now
        if pinged - heard > 2 * OP_SECONDS:
            raise TimeoutError("Redis stopped answering (no pong)")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        heard = loop.time()
        if message.get("type") not in ("message", "pmessage"):
            continue
        name = message["channel"]
        on_message(name.decode(errors="replace") if isinstance(name, bytes) else str(name),
                   message["data"])


async def read_members(client: aioredis.Redis, set_name: str, key_of: Callable[[str], str],
                       limit: int) -> list[tuple[str, bytes]]:
    """The members of ``set_name`` (at most ``limit``) with the value of each one's key,
    within OP_SECONDS; members whose key has expired are taken out of the set."""
    async with asyncio.timeout(OP_SECONDS):
        raw = await client.srandmember(set_name, limit)
        names = sorted(m.decode(errors="replace") if isinstance(m, bytes) else str(m) for m in raw or [])
        values = await client.mget([key_of(n) for n in names]) if names else []
        gone = [n for n, v in zip(names, values, strict=True) if v is None]
        if gone:
            await client.srem(set_name, *gone)
    return [(n, v) for n, v in zip(names, values, strict=True) if v is not None]


async def read_heartbeats(client: aioredis.Redis, prefix: str
                          ) -> tuple[list[feed.Heartbeat], list[tuple[str, feed.FeedError]]]:
    """The live edges' heartbeats (bridge/feed.py), and those that did not parse (by edge id)."""
    beats, bad = [], []
    for edge_id, value in await read_members(client, feed.edges_set(prefix),
                                             lambda e: feed.edge_key(prefix, e), feed.MAX_EDGES):
        try:
            beats.append(feed.parse_heartbeat(value))
        except feed.FeedError as exc:
            bad.append((edge_id, exc))
    return beats, bad
