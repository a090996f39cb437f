"""The origin's side of the Redis feed (bridge/feed.py): each live space's frames, the
messages it broadcasts and its state go out to the edges; the edges' heartbeats come in
(who serves how many, for the choice of an edge and the listener counts), and so do the
hands and reactions taken on them.

The origin never waits on Redis: a stage only queues bytes (bridge/redis_link.py), and
while Redis is out of reach it serves its own listeners as if there were no edges.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import feed
from .redis_link import LinkHealth, Publisher, read_heartbeats, stop_if_cancelled, stop_tasks, subscribe
from .settings import BridgeSettings

log = logging.getLogger(__name__)


class OriginFeed:
    def __init__(self, settings: BridgeSettings, stages: dict[str, Any]) -> None:
        self.prefix = settings.redis_prefix
        self.url = settings.redis_url
        self.stages = stages
        #: this origin's public address: where a listener given the mic goes to speak
        self.origin_url = ""
        self.out = Publisher(self.url, "origin feed", on_up=self._send_all_states)
        self.from_edges = LinkHealth("hands and reactions from edges", self.url)
        self.book = feed.EdgeBook()
        self.refused = 0
        #: heartbeat reads that failed in a row (after a few, no edge is counted on)
        self._failed_reads = 0
        self._bad_logged: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, origin_url: str) -> None:
        self.origin_url = origin_url.rstrip("/")
        self.out.start()
        self._tasks = [
            asyncio.create_task(self._every_second(), name="origin-feed:tick"),
            asyncio.create_task(subscribe(self.url, self.from_edges,
                                          channel=feed.to_origin_channel(self.prefix),
                                          on_message=self._on_forwarded),
                                name="origin-feed:from-edges"),
        ]

    async def close(self) -> None:
        """What is queued (the spaces' last words) gets a second to go out, then stop."""
        await self.out.flush(1.0)
        await stop_tasks(self._tasks, "origin feed")
        self._tasks = []
        await self.out.close()

    # -- what a stage calls (it never waits) ----------------------------------------

    def publish(self, space_id: str, data: bytes) -> None:
        self.out.send("PUBLISH", feed.space_channel(self.prefix, space_id), data)

    def urls(self) -> list[str]:
        return self.book.urls()

    def hand_out(self) -> str | None:
        return self.book.hand_out()

    def status(self) -> dict[str, Any]:
        return {**self.out.health.status(), "sent": self.out.sent, "dropped": self.out.dropped,
                "edges": sorted(b.url for b in self.book.edges.values()),
                "from_edges": self.from_edges.status(), "refused": self.refused}

    # -- the feed's own work --------------------------------------------------------

    def _send_all_states(self) -> None:
        for stage in list(self.stages.values()):
            if stage.open:
                stage.publish_state()

    async def _every_second(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(feed.STATE_EVERY_SECONDS)
            self._send_all_states()
            client = self.out.client
            if client is None:
                self._set_edges([], known=False)  # Redis out of reach: no edge to count on
                continue
            try:
                self._set_edges(await self._read_heartbeats(client))
                self._failed_reads = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the writer notices a dead link
                self._failed_reads += 1
                log.debug("origin feed: heartbeats not read: %s", exc)
                if self._failed_reads >= 3:
                    self._set_edges([], known=False)

    async def _read_heartbeats(self, client: Any) -> list[feed.Heartbeat]:
        beats, bad = await read_heartbeats(client, self.prefix)
        for edge_id, exc in bad:  # the edges pass these over in silence: logged here, once
            if edge_id not in self._bad_logged:
                self._bad_logged.add(edge_id)
                log.warning("origin feed: heartbeat of edge %s passed over: %s", edge_id, exc)
        return beats

    def _set_edges(self, beats: list[feed.Heartbeat], known: bool = True) -> None:
        """The edges now; with ``known`` (their heartbeats were read), hands raised on an
        edge that is gone are lowered (not when Redis is only out of reach for us)."""
        before = {b.url for b in self.book.edges.values()}
        self.book.update(beats)
        after = {b.url for b in beats}
        for url in sorted(after - before):
            log.info("edge %s is serving listeners", url)
        for url in sorted(before - after):
            log.warning("edge %s stopped answering (or Redis is out of reach); it is "
                        "handed no more listeners", url)
        for stage in list(self.stages.values()):
            stage.set_edge_listeners(self.book.listeners_of(stage.space_id))
            if known:
                stage.edges_alive({b.edge_id for b in beats})

    def _on_forwarded(self, channel: str, data: bytes) -> None:
        try:
            message = feed.parse_forwarded(data)
        except feed.FeedError as exc:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("origin feed: a message from an edge was refused (%d so far): %s",
                            self.refused, exc)
            return
        stage = self.stages.get(message.space_id)
        if stage is None or not stage.open:
            return  # another origin's space, or one that just ended
        try:
            if message.kind == "hand":
                stage.remote_hand(message.user_id, message.raised, message.edge_id)
            else:
                stage.remote_reaction(message.user_id, message.key)
        except Exception:  # one bad message must not end the feed
            log.exception("space %s: %s of %s from an edge failed", stage.space_id, message.kind,
                          message.user_id)
