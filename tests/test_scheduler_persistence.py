"""The scheduler's jobs live in the bot's database (SQLite and PostgreSQL): they survive a
restart, run once if a little late, and are dropped (with a note) when far too late."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bot import scheduler as scheduler_module
from bot.db.database import Database
from bot.db.engine import make_engine, upgrade
from bot.db.store import Store
from bot.scheduler import Firing, Scheduler


async def _wait_until(instant: datetime) -> None:
    while datetime.now(UTC) < instant:
        await asyncio.sleep(0.05)


async def _wait_for(cond, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _scheduler(engine, grace_s: float, fired: list, missed: list) -> Scheduler:
    s = Scheduler(engine, misfire_grace=timedelta(seconds=grace_s), key="test")

    async def on_fire(f: Firing) -> None:
        fired.append(f)

    async def on_missed(f: Firing) -> None:
        missed.append(f)

    s.on("remind", on_fire)
    s.on_missed(on_missed)
    return s


async def test_a_job_due_while_stopped_runs_once_after_restart_and_says_late(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    fired: list[Firing] = []
    missed: list[Firing] = []
    first = _scheduler(engine, 60, fired, missed)
    first.start()
    due = datetime.now(UTC) + timedelta(seconds=1)
    first.plan("remind", "space1", due)
    first.shutdown()
    await _wait_until(due + timedelta(seconds=1))
    assert fired == []

    second = _scheduler(engine, 60, fired, missed)
    second.start()
    await _wait_for(lambda: len(fired) == 1)
    f = fired[0]
    assert (f.kind, f.ref, f.job_id) == ("remind", "space1", "remind:space1")
    assert abs((f.due - due).total_seconds()) < 0.01
    assert f.late >= timedelta(seconds=1)
    assert second.next_run("remind", "space1") is None  # a one-off job is gone once run
    second.shutdown()

    third = _scheduler(engine, 60, fired, missed)
    third.start()
    assert third.job_ids() == []
    third.shutdown()
    assert len(fired) == 1 and missed == []
    engine.dispose()


async def test_a_job_past_the_grace_is_dropped_and_reported(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    fired: list[Firing] = []
    missed: list[Firing] = []
    first = _scheduler(engine, 1, fired, missed)
    first.start()
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    first.plan("remind", "space2", due)
    assert Store(engine).scheduled_job_count() == 1  # pending, as /metrics shows it
    first.shutdown()
    await _wait_until(due + timedelta(seconds=2.5))
    second = _scheduler(engine, 1, fired, missed)
    second.start()
    await _wait_for(lambda: len(missed) == 1)
    assert missed[0].ref == "space2" and missed[0].late > timedelta(seconds=1)
    assert fired == []
    assert (second.missed_count, second.failed_count, Store(engine).scheduled_job_count()) == (1, 0, 0)
    second.shutdown()
    engine.dispose()


async def test_a_recurring_job_keeps_firing_across_a_restart(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    fired: list[Firing] = []
    missed: list[Firing] = []
    first = _scheduler(engine, 60, fired, missed)
    first.start()
    first.plan("remind", "weekly", IntervalTrigger(seconds=1, timezone=UTC))
    await _wait_for(lambda: len(fired) >= 1)
    first.shutdown()
    count = len(fired)
    second = _scheduler(engine, 60, fired, missed)
    second.start()
    await _wait_for(lambda: len(fired) >= count + 2)
    assert second.drop("remind", "weekly")
    settled = len(fired)
    assert second.job_ids() == []
    second.shutdown()
    assert len(fired) == settled
    engine.dispose()


async def test_due_jobs_are_found_and_moved_on_away_from_the_event_loop(db_url: str) -> None:
    """The job store is read and written in APScheduler's thread (and the bot's database
    threads), never on the event loop, which in embedded mode runs the bridge's tick; the
    job's coroutine itself runs on the loop."""
    engine = make_engine(db_url)
    upgrade(engine)
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    ran_on: list[int] = []

    def seen(_conn, _cursor, statement, *_rest) -> None:
        if "apscheduler_jobs" in statement and threading.get_ident() == loop_thread:
            on_loop.append(statement)

    fired: list[Firing] = []
    sched = _scheduler(engine, 60, fired, [])

    async def on_fire(f: Firing) -> None:
        ran_on.append(threading.get_ident())
        fired.append(f)

    sched.on("remind", on_fire)
    db = Database(Store(engine))
    sched.start()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        due = datetime.now(UTC) + timedelta(seconds=0.5)
        await db.run(sched.plan, "remind", "off-loop", due)
        await _wait_for(lambda: len(fired) == 1)
        assert await db.run(sched.next_run, "remind", "off-loop") is None  # a one-off job is gone once run
        assert ran_on == [loop_thread] and fired[0].late < timedelta(seconds=60)
        assert abs((fired[0].due - due).total_seconds()) < 0.01
        assert on_loop == []
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        sched.shutdown()
        db.close()
        engine.dispose()


async def test_a_job_store_error_does_not_stop_the_scheduler(db_url: str, monkeypatch) -> None:
    """APScheduler lets an error while moving a job on end its thread for good; ours logs
    it and looks again: the job goes on firing."""
    monkeypatch.setattr(scheduler_module, "RETRY_SECONDS", 0.2)
    engine = make_engine(db_url)
    upgrade(engine)
    fired: list[Firing] = []
    sched = _scheduler(engine, 60, fired, [])
    store = sched._aps._lookup_jobstore("default")
    real_update = store.update_job
    failures: list[str] = []

    def update_once_failing(job) -> None:
        if not failures:
            failures.append(job.id)
            raise OperationalError("UPDATE apscheduler_jobs", {}, Exception("database is locked"))
        real_update(job)

    monkeypatch.setattr(store, "update_job", update_once_failing)
    sched.start()
    try:
        await asyncio.to_thread(sched.plan, "remind", "every", IntervalTrigger(seconds=0.3, timezone=UTC))
        await _wait_for(lambda: len(fired) >= 3)
        assert failures == ["remind:every"]
        assert sched._aps._thread.is_alive()
    finally:
        await asyncio.to_thread(sched.shutdown)
        engine.dispose()
