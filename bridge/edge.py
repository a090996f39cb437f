"""An edge bridge (``[bridge] role = "edge"``, or ``python -m bridge --edge``): it serves
WebSocket listeners and ``live.ogg`` for every space live on the origin, from the origin's
Redis feed (bridge/feed.py), and never takes audio: speakers connect to the origin.

Each frame from the origin is written, as received, to the edge's clients (the same
write-once fan-out as the origin's: bridge/stage.py), and each of its broadcasts (levels,
participants, reactions, captions) is passed on unchanged. Hands and reactions taken here
are checked and rate-limited as on the origin, then forwarded to it. The edge announces
itself with a heartbeat key that the origin reads to hand listeners the least-loaded
edge. A space the edge hears nothing of for feed.STALE_SECONDS (its origin, or Redis,
is gone) is closed with 1001, and the pages go to another edge or to the origin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any

from . import feed, jsonsafe, wsframe
from .connection import CLOSE_SHUTDOWN, CLOSE_SPACE_ENDED, Client, state_key
from .page_info import PageInfo, profiles_from_json
from .redis_link import OP_SECONDS, LinkHealth, Publisher, read_heartbeats, stop_if_cancelled, stop_tasks, subscribe
from .settings import BridgeSettings
from .stage import EXPIRY_EVERY_TICKS, Stage

log = logging.getLogger(__name__)

#: why an edge closes a space's connections when the origin (not the edge) is the cause;
#: the page reads "origin" in the reason and does not hold it against this edge
LOST_ORIGIN = "this edge lost the space's origin; reconnect"
ORIGIN_LEAVING = "the space's origin is restarting; reconnect"


class EdgeStage(Stage):
    """A space as an edge serves it: no mixer tick, no recording, no Icecast; audio,
    broadcasts and state come from the origin."""

    def __init__(self, space_id: str, state: feed.SpaceState, settings: BridgeSettings,
                 forward: Any, edges: Any) -> None:
        super().__init__(space_id, state.title, public=state.public, record=False, captions=False,
                         settings=settings, emit=self._forward_event)
        self._forward = forward
        self._edges = edges
        self.origin_url = state.origin_url
        self.recording = False
        self.last_heard = time.monotonic()
        #: the origin's latest participants message, for clients who join here
        self.participants_text: str | None = None
        self.apply(state)

    def start(self) -> None:
        """Nothing to start: the origin's frames drive this stage."""

    def apply(self, state: feed.SpaceState) -> None:
        """The origin's state; only what changed is acted on (it comes every second)."""
        self.last_heard = time.monotonic()
        self.origin_url = state.origin_url
        if state.title != self.title:
            self.retitle(state.title)
        self.public = state.public
        self.captions = state.captions
        self.recording = state.recording
        if state.roles != self.roles:
            self.set_roles(state.roles)  # says "you" to each client; the roles broadcast is the origin's
        if state.removed != self.removed:
            self.set_removed(state.removed)
        # for the hellos given here; the pages' updates are the origin's broadcasts
        self.info = PageInfo.from_json(state.info)
        self.profiles.update(profiles_from_json(state.people))

    def to_user(self, message: feed.ToUser) -> None:
        """A message from the origin for one person's pages (the answer to their hand:
        their hand is down on the origin, so here too)."""
        if message.message.get("type") == "answer":
            self.hands.discard(message.user_id)
        for client in self.clients.values():
            if client.user_id == message.user_id:
                client.send_json(message.message)

    def relay(self, audio: feed.Audio) -> None:
        """One frame from the origin, to every client and live.ogg listener here."""
        self.last_heard = time.monotonic()
        self.tick_count += 1
        self._keep_house(self.tick_count)
        if self.tick_count % EXPIRY_EVERY_TICKS == 0:
            self.activity.flush()  # the origin sends the batches; only the key bound is ours
        self._fan_out(audio.frame.seq, audio.data, {})
        self.ogg.push(audio.frame.payload)

    def relay_broadcast(self, text: str) -> None:
        self.last_heard = time.monotonic()
        try:
            obj = jsonsafe.loads_object(text, max_bytes=feed.MAX_BROADCAST_BYTES)
        except jsonsafe.JsonRefused:
            return
        if obj.get("type") == "participants":
            self.participants_text = text
        frame, key = wsframe.text(text), state_key(obj)
        for client in self.clients.values():
            client.send_control(frame, key)

    # -- what differs from the origin -------------------------------------------------

    def _broadcast_json(self, obj: dict[str, Any]) -> None:
        """The edge's clients get the origin's broadcasts (relay_broadcast), not its own."""

    def _broadcast_participants(self) -> None:
        """The origin counts and names the participants."""

    def publish_state(self) -> None:
        """An edge has no edges."""

    def stream_url(self) -> str | None:
        return None

    def where_to_listen(self, client: Client) -> dict[str, Any]:
        return {"edge": True, "edges": self._edges(), "origin_url": self.origin_url or None}

    def on_audio(self, client: Client, data: bytes) -> bool:
        client.frames_in += 1
        client.frames_refused += 1
        client.error("not_allowed", "this is an edge bridge: speakers connect to the origin"
                     + (f" ({self.origin_url})" if self.origin_url else ""))
        return False

    def is_recording(self) -> bool:
        return self.recording

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "edge": True}

    def _forward_event(self, event: dict[str, Any]) -> None:
        """Hands and reactions (already checked and rate-limited here) go to the origin;
        listener counts go out with the heartbeat."""
        kind = event.get("type")
        if kind in ("hand_raised", "hand_lowered"):
            self._forward(feed.Forwarded(self.space_id, "hand", event["user_id"],
                                         raised=kind == "hand_raised"))
        elif kind == "reaction":
            self._forward(feed.Forwarded(self.space_id, "reaction", event.get("user_id"),
                                         key=event["key"]))

    def add_client(self, client: Client) -> None:
        super().add_client(client)
        if self.participants_text is not None and client.id in self.clients:
            client.send_control(wsframe.text(self.participants_text), "participants")

    def _lower_on_origin(self, user_id: str) -> None:
        self._forward(feed.Forwarded(self.space_id, "hand", user_id, raised=False))

    async def close(self, code: int = CLOSE_SPACE_ENDED, reason: str = "space ended",
                    *, wait: bool = True) -> None:
        """Closed here: the hands raised here come down on the origin."""
        if self.open:
            for user_id in sorted(self.hands):
                self._lower_on_origin(user_id)
        await super().close(code, reason, wait=wait)

    def remove_client(self, client: Client) -> None:
        user_id = client.user_id
        last = client.id in self.clients and not any(
            c.user_id == user_id for c in self.clients.values() if c is not client)
        if user_id is not None and last and user_id in self.hands and self.open:
            self._lower_on_origin(user_id)
        super().remove_client(client)


class EdgeFeed:
    """The edge's side of the feed: it makes and ends the EdgeStages in ``stages`` from
    the origin's messages, forwards hands and reactions, and keeps its heartbeat."""

    def __init__(self, settings: BridgeSettings, stages: dict[str, Any]) -> None:
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.url = settings.redis_url
        self.stages = stages
        self.edge_id = uuid.uuid4().hex[:12]
        self.public_url = ""
        self.out = Publisher(self.url, "edge heartbeat and forwarding", on_up=self._beat)
        self.feed_health = LinkHealth("edge feed", self.url)
        self.book = feed.EdgeBook()
        self.refused = 0
        self.frames = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing: set[asyncio.Task[Any]] = set()
        #: set (and replaced) whenever a space is opened here: what wait_for waits on
        self._opened = asyncio.Event()
        self.stopping = False

    def start(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")
        self.out.start()
        self._tasks = [
            asyncio.create_task(subscribe(self.url, self.feed_health,
                                          pattern=feed.space_pattern(self.prefix),
                                          on_message=self._on_message),
                                name="edge-feed:spaces"),
            asyncio.create_task(self._every_beat(), name="edge-feed:heartbeat"),
        ]
        log.info("edge %s (%s) takes its spaces from Redis at %s", self.edge_id, self.public_url,
                 self.out.health.where)

    def stop_taking_spaces(self) -> None:
        """From now on the origin's messages are passed over (the bridge is shutting down)."""
        self.stopping = True

    async def close(self) -> None:
        """Take this edge out of the origin's choice at once, then stop. The stages are
        closed before (their raised hands go to the origin through the link)."""
        self.stopping = True
        await stop_tasks(self._tasks, f"edge {self.edge_id}")
        self._tasks = []
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.out.send("DEL", feed.edge_key(self.prefix, self.edge_id))
        self.out.send("SREM", feed.edges_set(self.prefix), self.edge_id)
        await self.out.flush(OP_SECONDS)
        await self.out.close()

    def status(self) -> dict[str, Any]:
        return {"edge_id": self.edge_id, **self.feed_health.status(), "frames": self.frames,
                "refused": self.refused, "heartbeat": self.out.health.status(),
                "edges": sorted(b.url for b in self.book.edges.values())}

    async def wait_for(self, space_id: str, seconds: float) -> Any:
        """The stage of ``space_id`` once the origin's feed has named it (an edge that has
        just started learns its spaces within a second); None after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while space_id not in self.stages:
                    await self._opened.wait()
        except TimeoutError:
            return None
        return self.stages.get(space_id)

    def other_edges(self) -> list[str]:
        return self.book.urls(exclude=self.edge_id)

    def forward(self, message: feed.Forwarded) -> None:
        message = dataclasses.replace(message, edge_id=self.edge_id)
        self.out.send("PUBLISH", feed.to_origin_channel(self.prefix), message.encode())

    # -- from the origin ----------------------------------------------------------------

    def _on_message(self, channel: str, data: bytes) -> None:
        if self.stopping:
            return
        try:
            space_id = feed.space_of(self.prefix, channel)
            message = feed.parse_space_message(data)
        except feed.FeedError as exc:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("edge feed: a message on %s was refused (%d so far): %s",
                            channel[:200], self.refused, exc)
            return
        try:
            self._dispatch(space_id, message)
        except Exception:  # a fault with one space must not cut the feed of every space
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.exception("space %s: a message from the origin failed on this edge (%d "
                              "refused so far)", space_id, self.refused)

    def _dispatch(self, space_id: str, message: Any) -> None:
        stage = self.stages.get(space_id)
        if isinstance(message, feed.Audio):
            if stage is not None:
                self.frames += 1
                stage.relay(message)
        elif isinstance(message, feed.Broadcast):
            if stage is not None:
                stage.relay_broadcast(message.text)
        elif isinstance(message, feed.ToUser):
            if stage is not None:
                stage.to_user(message)
        elif isinstance(message, feed.SpaceState):
            if stage is None:
                self._open(space_id, message)
            else:
                stage.apply(message)
        elif stage is not None:  # ended (4410), or its origin is going away (1001)
            self._end(stage, message.code,
                      ORIGIN_LEAVING if message.code == CLOSE_SHUTDOWN else message.reason)

    def _open(self, space_id: str, state: feed.SpaceState) -> None:
        stage = EdgeStage(space_id, state, self.settings, self.forward, self.other_edges)
        self.stages[space_id] = stage
        log.info("space %s (%r): now served on this edge", space_id, state.title)
        opened, self._opened = self._opened, asyncio.Event()
        opened.set()

    def _end(self, stage: EdgeStage, code: int, reason: str) -> None:
        if self.stages.get(stage.space_id) is stage:
            del self.stages[stage.space_id]
        log.info("space %s: no longer served on this edge (%s)", stage.space_id, reason)
        task = asyncio.get_running_loop().create_task(stage.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- the heartbeat, and spaces gone quiet -------------------------------------------

    async def _every_beat(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(feed.HEARTBEAT_SECONDS)
            self._beat()
            now = time.monotonic()
            for stage in list(self.stages.values()):
                if now - stage.last_heard > feed.STALE_SECONDS:
                    log.warning("space %s: nothing from its origin for %.0f s; closed on this "
                                "edge (its listeners reconnect elsewhere)", stage.space_id,
                                now - stage.last_heard)
                    self._end(stage, CLOSE_SHUTDOWN, LOST_ORIGIN)
            client = self.out.client
            if client is not None:
                try:
                    self.book.update((await read_heartbeats(client, self.prefix))[0])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the writer notices a dead link
                    log.debug("edge feed: heartbeats not read: %s", exc)

    def _beat(self) -> None:
        spaces = {s.space_id: s.listeners for s in self.stages.values()}
        beat = feed.Heartbeat(self.edge_id, self.public_url, sum(spaces.values()), spaces)
        self.out.send("SET", feed.edge_key(self.prefix, self.edge_id), beat.encode(),
                      "EX", feed.EDGE_TTL_SECONDS)
        self.out.send("SADD", feed.edges_set(self.prefix), self.edge_id)
