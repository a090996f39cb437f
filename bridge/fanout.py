"""Listener fan-out through Redis: an origin bridge publishes, edge bridges serve listeners.

Keys and channels (``P`` = ``redis_prefix``, default ``chorus:``; docs/scaling.md):

- ``P{space_id}:audio``: every tick's listener packet, exactly the bytes the origin
  sends its own listeners (wire header + Opus).
- ``P{space_id}:events``: the JSON messages the origin broadcasts to its clients (roles,
  participants, levels, reactions, captions...), and a last ``closing`` with ``code``.
- ``Pstages``: hash space_id -> JSON {title, public, roles, captions, recording,
  pre_skip}, set while the stage is open (refreshed every few seconds), removed on close.

The origin never waits for Redis: the tick appends to a bounded backlog that one task
drains; when Redis is down the backlog's audio is dropped and the failure is logged
once per space. An edge subscribes to a space's two channels only while it has at least
one listener there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from . import wire
from .settings import BridgeSettings
from .stage import CLOSE_SHUTDOWN, CLOSE_SPACE_ENDED, Client, OggListener, Stage

log = logging.getLogger(__name__)

#: queued publishes (audio and events) an origin keeps while Redis is slow; beyond this
#: new ones are dropped (the origin's own listeners are unaffected).
BACKLOG = 500
#: while Redis is failing, audio and events are dropped without trying for this long.
RETRY_SECONDS = 1.0
#: the origin rewrites its registry entries this often (a restarted Redis relearns them).
REFRESH_SECONDS = 5.0
CLOSE_FEED_LOST = 1011

EDGE_MESSAGE = ("this is an edge bridge: it serves listeners only and has no control "
                "API; send control calls to the origin bridge")


def _redis(settings: BridgeSettings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, socket_connect_timeout=2.0,
                             socket_timeout=5.0)


def audio_channel(prefix: str, space_id: str) -> str:
    return f"{prefix}{space_id}:audio"


def events_channel(prefix: str, space_id: str) -> str:
    return f"{prefix}{space_id}:events"


def registry_key(prefix: str) -> str:
    return f"{prefix}stages"


# -- origin ------------------------------------------------------------------------


class Publisher:
    """Fire-and-forget publishing for an origin bridge: one task, a bounded backlog."""

    def __init__(self, settings: BridgeSettings, backlog: int = BACKLOG) -> None:
        self.prefix = settings.redis_prefix
        self.redis = _redis(settings)
        self.backlog = backlog
        self.registry = registry_key(self.prefix)
        #: (space_id, op, key, value); op "pub" (droppable), "hset" or "hdel"
        self._ops: deque[tuple[str, str, str, Any]] = deque()
        self._wake = asyncio.Event()
        self._failing: set[str] = set()
        self._down_until = 0.0
        self.stages: dict[str, StageFanout] = {}
        self.published = 0
        self.dropped = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="fanout-publisher"),
                       asyncio.create_task(self._refresh(), name="fanout-refresh")]

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (closings, registry removals) for up to ``timeout``."""
        async def drained() -> None:
            while self._ops:
                await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained(), timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    def attach(self, stage: Stage) -> StageFanout:
        fan = StageFanout(self, stage)
        self.stages[stage.space_id] = fan
        stage.fanout = fan
        fan.state()
        return fan

    def _put(self, space_id: str, op: str, key: str, value: Any = None) -> None:
        if op == "pub" and len(self._ops) >= self.backlog:
            self.dropped += 1
            return
        self._ops.append((space_id, op, key, value))
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._ops:
                self._wake.clear()
                await self._wake.wait()
            space_id, op, key, value = self._ops.popleft()
            if op == "pub" and loop.time() < self._down_until:
                self.dropped += 1
                continue
            try:
                if op == "pub":
                    await self.redis.publish(key, value)
                    self.published += 1
                elif op == "hset":
                    await self.redis.hset(self.registry, key, value)
                else:
                    await self.redis.hdel(self.registry, key)
            except (RedisError, OSError) as exc:
                self._down_until = loop.time() + RETRY_SECONDS
                if space_id not in self._failing:
                    self._failing.add(space_id)
                    log.warning("fan-out for space %s: Redis unavailable (%s); its edge "
                                "listeners get nothing until it is back", space_id, exc)
            else:
                if space_id in self._failing:
                    self._failing.discard(space_id)
                    log.info("fan-out for space %s: Redis is back", space_id)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for fan in list(self.stages.values()):
                fan.state()


class StageFanout:
    """What a Stage calls (never awaited): every tick's packet, broadcasts, its end."""

    def __init__(self, publisher: Publisher, stage: Stage) -> None:
        self.publisher = publisher
        self.stage = stage
        self.space_id = stage.space_id
        self.audio_channel = audio_channel(publisher.prefix, stage.space_id)
        self.events_channel = events_channel(publisher.prefix, stage.space_id)

    def audio(self, packet: bytes) -> None:
        self.publisher._put(self.space_id, "pub", self.audio_channel, packet)

    def event(self, text: str) -> None:
        self.publisher._put(self.space_id, "pub", self.events_channel, text)

    def state(self) -> None:
        s = self.stage
        if not s.open:
            return
        info = {"title": s.title, "public": s.public, "roles": s.roles,
                "captions": s.captions, "recording": s.recorder is not None,
                "pre_skip": s.pre_skip}
        self.publisher._put(self.space_id, "hset", self.space_id, json.dumps(info))

    def closed(self, code: int, reason: str) -> None:
        # registry first: an edge that subscribes after the closing was published
        # then finds the space gone when it re-checks.
        self.publisher.stages.pop(self.space_id, None)
        self.publisher._put(self.space_id, "hdel", self.space_id)
        self.publisher._ops.append((self.space_id, "pub", self.events_channel, json.dumps(
            {"type": "closing", "reason": reason, "code": code})))
        self.publisher._wake.set()


# -- edge --------------------------------------------------------------------------


class EdgeSpace:
    """A space as an edge bridge sees it: its listeners, fed from Redis.

    Offers what bridge/app.py's listener handlers use of a Stage (space_id, public,
    title, pre_skip, open, add/remove_client, add/remove_ogg, on_audio, on_json).
    """

    def __init__(self, edge: Edge, space_id: str, info: dict[str, Any]) -> None:
        self.edge = edge
        self.space_id = space_id
        self.open = True
        self.clients: dict[int, Client] = {}
        self.ogg_listeners: set[OggListener] = set()
        self.audio_channel = audio_channel(edge.prefix, space_id)
        self.events_channel = events_channel(edge.prefix, space_id)
        #: set once subscribed (and the space re-checked as still open)
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.update(info)

    def update(self, info: dict[str, Any]) -> None:
        self.title = str(info.get("title", ""))
        self.public = bool(info.get("public", False))
        roles = info.get("roles")
        self.roles: dict[str, str] = roles if isinstance(roles, dict) else {}
        self.captions = bool(info.get("captions", False))
        self.recording = bool(info.get("recording", False))
        self.pre_skip = int(info.get("pre_skip", 312))

    @property
    def listeners(self) -> int:
        return len(self.clients) + len(self.ogg_listeners)

    def role_of(self, client: Client) -> str:
        return "listener" if client.user_id is None else self.roles.get(client.user_id,
                                                                         "listener")

    # -- connections ---------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        self.clients[client.id] = client
        client.send_json({
            "type": "hello", "protocol": 1, "space_id": self.space_id, "title": self.title,
            "user_id": client.user_id, "role": self.role_of(client), "may_speak": False,
            "captions": self.captions, "recording": self.recording, "roles": self.roles,
            "frame_samples": 960, "sample_rate": 48000, "listen_only": True,
        })
        self._follow_if_needed()

    def remove_client(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self._unfollow_if_idle()

    def add_ogg(self, listener: OggListener) -> None:
        self.ogg_listeners.add(listener)
        self._follow_if_needed()

    def remove_ogg(self, listener: OggListener) -> None:
        self.ogg_listeners.discard(listener)
        self._unfollow_if_idle()

    def on_audio(self, client: Client, data: bytes) -> bool:
        client.frames_in += 1
        client.frames_refused += 1
        client.error("not_allowed", "this is a listen-only edge bridge: speakers connect "
                                    "to the origin bridge")
        return False

    def on_json(self, client: Client, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            client.error("bad_message", "not JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            client.error("bad_message", "expected an object with a string 'type'")
        elif msg["type"] == "ping":
            client.send_json({"type": "pong", "id": msg.get("id")})
        elif msg["type"] in ("raise_hand", "lower_hand", "reaction"):
            client.error("not_allowed", f"{msg['type']} is not available on a listen-only "
                                        "edge bridge")
        else:
            client.error("bad_message", f"unknown message type {msg['type']!r}")

    def end(self, code: int, reason: str) -> None:
        """The space ended on the origin (or the feed was lost): disconnect everyone."""
        if not self.open:
            return
        self.open = False
        self.edge.spaces.pop(self.space_id, None)
        for client in list(self.clients.values()):
            client.send_json({"type": "closing", "reason": reason})
            client.kick(code, reason)
        for listener in list(self.ogg_listeners):
            listener.kick(code, reason)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    # -- the feed ------------------------------------------------------------------

    def _follow_if_needed(self) -> None:
        if self._task is None and self.open and self.listeners:
            self.subscribed.clear()
            self._task = asyncio.create_task(self._follow(),
                                             name=f"edge-follow:{self.space_id}")
            self.edge.tasks.add(self._task)
            self._task.add_done_callback(self.edge.tasks.discard)

    def _unfollow_if_idle(self) -> None:
        if self.listeners == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self.subscribed.clear()

    async def _follow(self) -> None:
        pubsub = self.edge.redis.pubsub()
        try:
            await pubsub.subscribe(self.audio_channel, self.events_channel)
            confirmed = 0
            async for msg in pubsub.listen():
                kind = msg.get("type")
                if kind == "subscribe":
                    confirmed += 1
                    if confirmed == 2:
                        # subscribed now: a closing published before this point would be
                        # missed, but then the registry entry is already gone.
                        if await self.edge.lookup(self.space_id) is None:
                            self.end(CLOSE_SPACE_ENDED, "space ended")
                            return
                        self.subscribed.set()
                elif kind == "message":
                    channel = msg["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if channel == self.audio_channel:
                        self._audio(msg["data"])
                    elif channel == self.events_channel:
                        self._event(msg["data"])
                        if not self.open:
                            return
        except (RedisError, OSError) as exc:
            log.warning("edge lost the feed of space %s: %s", self.space_id, exc)
            self.end(CLOSE_FEED_LOST, "edge bridge lost its audio feed; reconnect")
        finally:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(pubsub.aclose())

    def _audio(self, data: bytes) -> None:
        try:
            payload = wire.unpack(data).payload if self.ogg_listeners else b""
        except wire.FrameError:
            log.warning("edge: bad audio packet in %s", self.space_id)
            return
        for client in list(self.clients.values()):
            client.send(data)
        for listener in list(self.ogg_listeners):
            listener.send(payload)

    def _event(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "closing":
            code = msg.get("code", CLOSE_SPACE_ENDED)
            self.end(code if isinstance(code, int) else CLOSE_SPACE_ENDED,
                     str(msg.get("reason", "space ended")))
            return
        for client in list(self.clients.values()):
            client.send(text)
        if kind == "roles" and isinstance(msg.get("roles"), dict):
            self.roles = msg["roles"]
            for client in list(self.clients.values()):
                client.send_json({"type": "you", "role": self.role_of(client),
                                  "may_speak": False})
        elif kind == "captions":
            self.captions = bool(msg.get("enabled"))


class Edge:
    """An edge bridge's view of Redis: which spaces are open, and their listeners."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.prefix = settings.redis_prefix
        self.redis = _redis(settings)
        self.registry = registry_key(self.prefix)
        self.spaces: dict[str, EdgeSpace] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def lookup(self, space_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.registry, space_id)
        if raw is None:
            return None
        try:
            info = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return info if isinstance(info, dict) else None

    async def space(self, space_id: str) -> EdgeSpace | None:
        try:
            info = await self.lookup(space_id)
        except (RedisError, OSError) as exc:
            log.warning("edge cannot reach Redis to look up %s: %s", space_id, exc)
            return None
        if info is None:
            return None
        space = self.spaces.get(space_id)
        if space is None or not space.open:
            space = self.spaces[space_id] = EdgeSpace(self, space_id, info)
        else:
            space.update(info)
        return space

    async def close(self, code: int, reason: str) -> None:
        for space in list(self.spaces.values()):
            space.end(code, reason)
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()


# -- wiring into the app -------------------------------------------------------------

PUBLISHER: web.AppKey[Publisher] = web.AppKey("fanout_publisher", Publisher)
EDGE: web.AppKey[Edge] = web.AppKey("fanout_edge", Edge)


@web.middleware
async def _edge_has_no_control_api(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/control/"):
        return web.json_response({"error": EDGE_MESSAGE}, status=403)
    return await handler(request)


def install(app: web.Application, settings: BridgeSettings) -> None:
    """Make ``app`` an edge (role "edge") or a publishing origin (redis_url set)."""
    if settings.role == "edge":
        app.middlewares.append(_edge_has_no_control_api)
        app[EDGE] = Edge(settings)

        async def stop_edge(app: web.Application) -> None:
            await app[EDGE].close(CLOSE_SHUTDOWN, "bridge shutting down")

        app.on_shutdown.append(stop_edge)
    elif settings.redis_url:
        app[PUBLISHER] = Publisher(settings)

        async def start_publisher(app: web.Application) -> None:
            app[PUBLISHER].start()

        async def stop_publisher(app: web.Application) -> None:
            await app[PUBLISHER].close()

        app.on_startup.append(start_publisher)
        app.on_cleanup.append(stop_publisher)


def attach(app: web.Application, stage: Stage) -> None:
    """A stage just opened on an origin: publish it (no-op without redis_url)."""
    publisher = app.get(PUBLISHER)
    if publisher is not None:
        publisher.attach(stage)


async def find_space(app: web.Application, stages: dict[str, Stage],
                     space_id: str) -> Stage | EdgeSpace | None:
    """The open stage (origin) or the Redis-fed space (edge) listeners join."""
    edge = app.get(EDGE)
    if edge is None:
        return stages.get(space_id)
    return await edge.space(space_id)
