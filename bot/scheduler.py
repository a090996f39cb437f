"""APScheduler (3.x) with its jobs in the bot's own database.

Jobs are stored as a reference to :func:`run_job` plus plain arguments (which instance,
what kind, which record), so they survive restarts and never pickle live objects. What a
job *does* is up to the handler the bot registers (``bot/scheduling.py``).

- A job that fell due while the bot was down runs once at start-up if it is less than
  ``misfire_grace`` late; the handler is told how late it is. Past that it is dropped and
  the ``on_missed`` handler is told, so the owner can be informed.
- APScheduler moves a job on (or removes a one-off job) in the store *before* running
  it, so a bot killed while a job runs does not run it again; handlers also claim each
  (job, run time) in the database before acting, so nothing fires twice.
- The job store is never used from the event loop (which, in embedded mode, also runs the
  bridge's tick): APScheduler looks for due jobs in a thread of its own
  (BackgroundScheduler), and hands each job's coroutine to the bot's loop
  (:class:`LoopExecutor`). :meth:`Scheduler.plan` and the other methods are thread-safe;
  the bot calls them from its database threads (bot/db/database.py). A database error
  while looking for due jobs is logged and tried again; it never stops the scheduler. An
  in-memory database (one connection's, nothing to wait on) is worked on the loop, as
  the store is then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.base import BaseExecutor, run_coroutine_job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine

from bot.db.engine import in_memory

log = logging.getLogger(__name__)

#: a job that runs this much after its time tells its audience it is late
LATE_AFTER = timedelta(seconds=60)
#: after a database error while looking for due jobs, the next look is this much later
RETRY_SECONDS = 5.0

#: live schedulers by key, so that stored jobs find theirs after a restart
_INSTANCES: dict[str, Scheduler] = {}


@dataclass(frozen=True)
class Firing:
    """What a handler learns when its job runs."""

    kind: str
    ref: str
    job_id: str
    due: datetime
    late: timedelta

    @property
    def is_late(self) -> bool:
        return self.late > LATE_AFTER


Handler = Callable[[Firing], Awaitable[None]]


async def run_job(instance: str, kind: str, ref: str) -> None:
    """The one function every stored job calls."""
    sched = _INSTANCES.get(instance)
    if sched is None:
        log.error("job %s:%s fired but scheduler %s is not running", kind, ref, instance)
        return
    await sched._fire(kind, ref)


class _ThreadScheduler(BackgroundScheduler):
    """APScheduler's thread, which a database error does not end: APScheduler itself lets
    an error from moving a job on (update_job, remove_job) end its thread for good."""

    def _process_jobs(self):
        try:
            return super()._process_jobs()
        except Exception:  # noqa: BLE001 - the scheduler must outlive a database blip
            log.exception("the scheduler could not work its job store; trying again in %.0f s",
                          RETRY_SECONDS)
            return RETRY_SECONDS


class LoopExecutor(BaseExecutor):
    """Runs each due job's coroutine on the bot's event loop, handed over from APScheduler's
    thread; the job's due time is noted first, so the coroutine always finds it."""

    def __init__(self, owner: Scheduler) -> None:
        super().__init__()
        self._owner = owner
        self._pending: set[concurrent.futures.Future] = set()

    def shutdown(self, wait: bool = True) -> None:
        for future in list(self._pending):
            future.cancel()
        self._pending.clear()

    def _do_submit_job(self, job, run_times) -> None:
        loop = self._owner.loop
        if loop is None or loop.is_closed():
            self._logger.error("job %s is due but the bot's event loop is gone", job.id)
            return
        self._owner._due[job.id] = run_times[-1]
        future = asyncio.run_coroutine_threadsafe(
            run_coroutine_job(job, job._jobstore_alias, run_times, self._logger.name), loop)

        def done(f: concurrent.futures.Future) -> None:
            self._pending.discard(f)
            if f.cancelled():  # the bot is stopping: the job's claim says whether it ran
                return
            try:
                events = f.result()
            except BaseException:  # noqa: BLE001 - reported as APScheduler reports a job's error
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        self._pending.add(future)
        future.add_done_callback(done)


def _log_failure(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("telling of a missed job failed", exc_info=future.exception())


class Scheduler:
    def __init__(self, engine: Engine, *, misfire_grace: timedelta, key: str | None = None) -> None:
        self.key = key or engine.url.render_as_string(hide_password=True)
        grace = max(1, int(misfire_grace.total_seconds()))
        #: how late a job may still run (at least a second, as APScheduler is told)
        self.misfire_grace = timedelta(seconds=grace)
        #: the bot's event loop, where jobs run (set by start)
        self.loop: asyncio.AbstractEventLoop | None = None
        on_loop = in_memory(engine.url)
        self._aps = (AsyncIOScheduler if on_loop else _ThreadScheduler)(
            jobstores={"default": SQLAlchemyJobStore(engine=engine)},
            executors={"default": LoopExecutor(self)},
            job_defaults={"misfire_grace_time": grace, "coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._aps.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        self._handlers: dict[str, Handler] = {}
        self._missed: Handler | None = None
        self._due: dict[str, datetime] = {}
        #: jobs dropped as too late, and jobs that raised (for /metrics)
        self.missed_count = 0
        self.failed_count = 0

    # ------------------------------------------------------------------ set-up

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def on_missed(self, handler: Handler) -> None:
        self._missed = handler

    def start(self, paused: bool = False) -> None:
        """Start looking for due jobs (in APScheduler's thread); call it from the bot's loop,
        where the jobs will run. ``paused``: not until :meth:`resume` (the bot repairs its
        jobs first, so that none runs while they are being repaired)."""
        self.loop = asyncio.get_running_loop()
        _INSTANCES[self.key] = self
        self._aps.start(paused=paused)
        log.info("scheduler started%s", " (paused)" if paused else "")

    def resume(self) -> None:
        self._aps.resume()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)
        if _INSTANCES.get(self.key) is self:
            del _INSTANCES[self.key]

    # ------------------------------------------------------------------ jobs

    @staticmethod
    def job_id(kind: str, ref: str) -> str:
        return f"{kind}:{ref}"

    def plan(self, kind: str, ref: str, trigger: BaseTrigger | datetime) -> datetime | None:
        """Add or replace the job (kind, ref); returns its next run time."""
        job_id = self.job_id(kind, ref)
        if isinstance(trigger, datetime):
            trigger = DateTrigger(run_date=trigger, timezone=UTC)
        job = self._aps.add_job(run_job, trigger, args=[self.key, kind, ref], id=job_id,
                                replace_existing=True, name=f"{kind}:{ref}")
        return getattr(job, "next_run_time", None)

    def drop(self, kind: str, ref: str) -> bool:
        job_id = self.job_id(kind, ref)
        try:  # one lookup and one removal: the job may run (and go) in between
            self._aps.remove_job(job_id)
        except JobLookupError:
            return False
        return True

    def next_run(self, kind: str, ref: str) -> datetime | None:
        job = self._aps.get_job(self.job_id(kind, ref))
        return job.next_run_time if job else None

    def job_ids(self, prefix: str = "") -> list[str]:
        return sorted(j.id for j in self._aps.get_jobs() if j.id.startswith(prefix))

    def jobs(self, prefix: str = "") -> dict[str, datetime | None]:
        """Stored jobs (id -> next run time; None while paused), once the scheduler runs."""
        return {j.id: j.next_run_time for j in self._aps.get_jobs() if j.id.startswith(prefix)}

    # ------------------------------------------------------------------ firing

    def _on_event(self, event: JobEvent) -> None:
        """APScheduler's events (from its thread, or the loop's)."""
        if event.code == EVENT_JOB_ERROR:
            self.failed_count += 1
            log.error("scheduled job %s failed: %s", event.job_id, getattr(event, "exception", None))
        elif event.code == EVENT_JOB_MISSED:
            self.missed_count += 1
            due = getattr(event, "scheduled_run_time", None) or datetime.now(UTC)
            kind, _, ref = event.job_id.partition(":")
            log.warning("job %s was due at %s, past the misfire grace; dropped", event.job_id, due)
            if self._missed is not None:
                firing = Firing(kind, ref, event.job_id, due, datetime.now(UTC) - due)
                if self.loop is not None and not self.loop.is_closed():
                    told = asyncio.run_coroutine_threadsafe(self._missed(firing), self.loop)
                    told.add_done_callback(_log_failure)

    async def _fire(self, kind: str, ref: str) -> None:
        job_id = self.job_id(kind, ref)
        handler = self._handlers.get(kind)
        now = datetime.now(UTC)
        due = self._due.pop(job_id, now)
        if handler is None:
            log.error("no handler for scheduled job kind %s (%s)", kind, ref)
            return
        await handler(Firing(kind, ref, job_id, due, max(timedelta(0), now - due)))
