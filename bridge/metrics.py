"""What the bridge shows Prometheus (``GET /metrics`` on ``[bridge] metrics_listen``).

Two kinds of figures:

- kept as they happen: each tick's duration, in a histogram the stages' ticks feed;
- read when scraped: the live stages, each one's listeners and speakers, and what the
  connections did (bytes written, audio frames refused, listeners dropped as too slow).
  A connection's figures are read off it while it is open and added to the totals when
  it ends (:class:`Traffic`), so nothing is counted on the tick's path and the counters
  never go down.

docs/metrics.md lists every metric, with alert rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .connection import BEHIND_REASON, CLOSE_TOO_SLOW, NOT_READING_REASON, Client
from .oggstream import OggListener
from .status_server import new_registry

#: a tick takes well under a millisecond for a few speakers; 20 ms is all it ever has
TICK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
#: how late a tick may start: a few ms is the loop's ordinary jitter; tens of ms is
#: something holding the event loop (the bot's work, in embedded mode), which listeners hear
LATE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TRANSPORTS = ("websocket", "ogg")
#: why a listener was dropped as too slow, as /metrics names it
DROP_REASONS = {BEHIND_REASON: "behind", NOT_READING_REASON: "not_reading"}


class Traffic:
    """The bridge's connections: those open now, and the totals of those that ended."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.streams: set[OggListener] = set()
        self._bytes_out: Counter[str] = Counter()
        self._frames_refused = 0
        #: (transport, reason) -> listeners dropped as too slow
        self.dropped: Counter[tuple[str, str]] = Counter()

    def client_opened(self, client: Client) -> None:
        self.clients.add(client)

    def client_closed(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self._bytes_out["websocket"] += client.backlog.written
            self._frames_refused += client.frames_refused
            self._count_drop("websocket", client.kicked)

    def stream_opened(self, listener: OggListener) -> None:
        self.streams.add(listener)

    def stream_closed(self, listener: OggListener) -> None:
        if listener in self.streams:
            self.streams.discard(listener)
            self._bytes_out["ogg"] += listener.sent
            self._count_drop("ogg", listener.kicked)

    def _count_drop(self, transport: str, kicked: tuple[int, str] | None) -> None:
        if kicked is not None and kicked[0] == CLOSE_TOO_SLOW and kicked[1] in DROP_REASONS:
            self.dropped[(transport, DROP_REASONS[kicked[1]])] += 1

    def bytes_out(self, transport: str) -> int:
        if transport == "websocket":
            return self._bytes_out[transport] + sum(c.backlog.written for c in self.clients)
        return self._bytes_out[transport] + sum(s.sent for s in self.streams)

    def frames_refused(self) -> int:
        return self._frames_refused + sum(c.frames_refused for c in self.clients)


class BridgeCollector(Collector):
    """The figures read at scrape time from the stages and the traffic."""

    def __init__(self, stages: Mapping[str, Any], traffic: Traffic, role: str, instance: str,
                 feed: Callable[[], Any]) -> None:
        self.stages = stages
        self.traffic = traffic
        self.role = role
        self.instance = instance
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        # not "instance": Prometheus gives that label to every target (the address it scrapes)
        info = GaugeMetricFamily("chorus_bridge_info", "This bridge: its role and this start's instance id",
                                 labels=["role", "instance_id"])
        info.add_metric([self.role, self.instance], 1)
        yield info
        stages = [s for s in list(self.stages.values()) if s.open]
        yield GaugeMetricFamily("chorus_bridge_stages", "Live spaces this bridge serves", value=len(stages))
        yield self._per_space("chorus_bridge_listeners",
                              "Connections listening on this bridge (WebSocket, speakers' included, and live.ogg)",
                              ((s.space_id, len(s.clients) + len(s.ogg_listeners)) for s in stages))
        yield self._per_space("chorus_bridge_speakers", "Speakers connected to this bridge",
                              ((s.space_id, s.speakers_connected()) for s in stages))
        if self.role == "origin":
            yield self._per_space("chorus_bridge_edge_listeners",
                                  "Listeners on edges, as their last heartbeats said",
                                  ((s.space_id, s.edge_listeners) for s in stages))
        traffic = self.traffic
        out = CounterMetricFamily("chorus_bridge_bytes_out", "Bytes written to listeners and speakers",
                                  labels=["transport"])
        for transport in TRANSPORTS:
            out.add_metric([transport], traffic.bytes_out(transport))
        yield out
        yield CounterMetricFamily("chorus_bridge_frames_refused",
                                  "Audio frames from clients refused (malformed, or sent without the right to speak)",
                                  value=traffic.frames_refused())
        dropped = CounterMetricFamily("chorus_bridge_listeners_dropped",
                                      "Connections closed as too slow: fell behind the live audio, or not reading",
                                      labels=["transport", "reason"])
        for transport in TRANSPORTS:
            for reason in DROP_REASONS.values():
                dropped.add_metric([transport, reason], traffic.dropped[(transport, reason)])
        yield dropped
        feed = self.feed()
        if feed is not None:
            yield GaugeMetricFamily("chorus_bridge_redis_up", "1 while the links to Redis are up",
                                    value=1 if redis_up(feed) else 0)
            yield GaugeMetricFamily("chorus_bridge_edges", "Edges heard from lately",
                                    value=len(feed.book.edges))

    @staticmethod
    def _per_space(name: str, doc: str, values: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["space_id"])
        for space_id, value in values:
            family.add_metric([space_id], value)
        return family


def redis_up(feed: Any) -> bool:
    """Whether a feed's links to Redis are up: what it publishes on and, on an edge, what it
    hears the origin on."""
    links = [feed.out.health, getattr(feed, "feed_health", None)]
    return all(link.state == "up" for link in links if link is not None)


class BridgeMetrics:
    """The bridge's registry (status_server.new_registry) and what it holds."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.traffic = Traffic()
        self.tick_seconds = Histogram("chorus_bridge_tick_seconds", "Time each 20 ms tick of a live space took",
                                      buckets=TICK_BUCKETS, registry=self.registry)
        self.tick_late_seconds = Histogram("chorus_bridge_tick_late_seconds",
                                           "How late each tick of a live space started against its 20 ms clock",
                                           buckets=LATE_BUCKETS, registry=self.registry)

    def observe_tick(self, took: float, late: float) -> None:
        """One tick: how long it took, and how late it started."""
        self.tick_seconds.observe(took)
        self.tick_late_seconds.observe(late)

    def watch(self, stages: Mapping[str, Any], role: str, instance: str, feed: Callable[[], Any]) -> None:
        self.registry.register(BridgeCollector(stages, self.traffic, role, instance, feed))
