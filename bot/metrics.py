"""What the bot shows Prometheus (``GET /metrics`` on ``[bot] metrics_listen``).

Commands are counted as they finish (by command and outcome) and timed; the rest is read
when scraped from a :class:`BotSnapshot` the bot gives (its sync, the bridge link, the
scheduler's misfires, the homeserver's 429s), and from the database (scheduled jobs, and
whether it answers), which the bot reads off the event loop before each scrape
(``Chorus.check_database``).

docs/metrics.md lists every metric, with alert rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.status_server import new_registry

#: the label of a command that was not read as one (unknown, too long, or dropped unread)
UNKNOWN = "unknown"
#: how a command ended, as the ``outcome`` label says it: one that was found and run ...
RUN_OUTCOMES = ("ok", "refused", "matrix_error", "timeout", "homeserver_unreachable", "database_down", "error",
                "cut_off")
#: ... and one that was not read as a command (its command label is UNKNOWN)
UNREAD_OUTCOMES = ("unknown", "too_long", "rate_limited", "error", "cut_off")
OUTCOMES = tuple(dict.fromkeys(RUN_OUTCOMES + UNREAD_OUTCOMES))
COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class BotSnapshot:
    """The bot's state as /metrics shows it."""

    #: unix time of the last /sync the homeserver answered (before the first: of the bot's start)
    last_sync_at: float
    #: whether the events link to the bridge is open
    bridge_connected: bool
    #: how long the database has been failing the sync loop (0: it is not)
    database_failing_seconds: float
    #: scheduled jobs that fell due past their misfire grace, and that failed
    jobs_missed: int
    jobs_failed: int
    #: 429 answers from the homeserver, and requests that had to wait their turn for it
    homeserver_429s: int
    requests_queued: int
    #: events read and waiting in people's lanes, or being handled
    events_waiting: int


class BotCollector(Collector):
    def __init__(self, snapshot: Callable[[], BotSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        yield GaugeMetricFamily("chorus_bot_sync_age_seconds",
                                "Seconds since the homeserver last answered a /sync (before the first: since "
                                "the bot started)", value=time.time() - s.last_sync_at)
        yield GaugeMetricFamily("chorus_bot_bridge_up", "1 while the bot's events link to the bridge is open",
                                value=1 if s.bridge_connected else 0)
        yield GaugeMetricFamily("chorus_bot_database_failing_seconds",
                                "Seconds the sync loop has been waiting for the database (0: it is not)",
                                value=s.database_failing_seconds)
        yield CounterMetricFamily("chorus_bot_scheduler_jobs_misfired",
                                  "Scheduled jobs dropped: due while the bot was down, past the misfire grace",
                                  value=s.jobs_missed)
        yield CounterMetricFamily("chorus_bot_scheduler_jobs_failed", "Scheduled jobs that raised an error",
                                  value=s.jobs_failed)
        yield CounterMetricFamily("chorus_bot_homeserver_rate_limited",
                                  "429 (M_LIMIT_EXCEEDED) answers from the homeserver", value=s.homeserver_429s)
        yield CounterMetricFamily("chorus_bot_homeserver_requests_queued",
                                  "Requests that waited their turn while the homeserver rate-limited the bot",
                                  value=s.requests_queued)
        yield GaugeMetricFamily("chorus_bot_events_waiting", "Events read and waiting to be handled, or being handled",
                                value=s.events_waiting)


class BotMetrics:
    """The bot's registry (bridge/status_server.py's new_registry) and what it holds."""

    def __init__(self) -> None:
        self.registry = r = new_registry()
        self.commands = Counter("chorus_bot_commands", "Commands, by command and how they ended",
                                ["command", "outcome"], registry=r)
        self.command_seconds = Histogram("chorus_bot_command_seconds",
                                         "Time from starting a command to its last answer", ["command"],
                                         buckets=COMMAND_BUCKETS, registry=r)
        self.command_delay = Histogram("chorus_bot_command_delay_seconds",
                                       "From a command's sending (the homeserver's timestamp) to the bot "
                                       "reading it in a sync", buckets=DELAY_BUCKETS, registry=r)
        self.scheduler_jobs = Gauge("chorus_bot_scheduler_jobs_pending",
                                    "Jobs in the scheduler's store, due or not (read at each scrape)", registry=r)
        self.database_up = Gauge("chorus_bot_database_up",
                                 "1 if the database answered the last scrape's query", registry=r)

    def watch(self, snapshot: Callable[[], BotSnapshot]) -> None:
        self.registry.register(BotCollector(snapshot))

    def expect_commands(self, names: Iterable[str]) -> None:
        """Start every (command, outcome) series at 0: a rate over a series that appears
        only with its first count misses that count, so a first failure would go unseen."""
        for name in names:
            for outcome in RUN_OUTCOMES:
                self.commands.labels(name, outcome)
        for outcome in UNREAD_OUTCOMES:
            self.commands.labels(UNKNOWN, outcome)

    def command_done(self, command: str, outcome: str, seconds: float | None = None) -> None:
        self.commands.labels(command, outcome).inc()
        if seconds is not None:
            self.command_seconds.labels(command).observe(seconds)

    def command_read(self, delay_seconds: float) -> None:
        self.command_delay.observe(max(0.0, delay_seconds))
