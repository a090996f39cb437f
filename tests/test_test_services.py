"""The servers the suite starts for itself when none is running (tests/support/services.py):
a throwaway PostgreSQL takes the migrations, a throwaway Redis takes commands, and both
are gone once stopped. And the report a hanging test leaves (tests/support/hang_report.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest

from bot.db.engine import make_engine, upgrade
from tests.support import services
from tests.support.hang_report import HangReport, report_seconds


def _started(server) -> str:
    try:
        return server.start()
    except services.MissingServer as exc:  # e.g. CI that points CHORUS_TEST_* at servers elsewhere
        pytest.skip(str(exc))


@pytest.mark.postgres
def test_a_throwaway_postgres_takes_the_migrations_and_is_gone_when_stopped() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    server = services.ThrowawayPostgres()
    try:
        url = _started(server)
        folder = server.folder
        assert url.startswith("postgresql://postgres@127.0.0.1:") and services.postgres_answers(url)
        admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql('CREATE DATABASE "chorus_throwaway"')
        admin.dispose()
        engine = make_engine(sqlalchemy.engine.make_url(url).set(database="chorus_throwaway")
                             .render_as_string(hide_password=False))
        upgrade(engine)
        assert "handled_events" in sqlalchemy.inspect(engine).get_table_names()
        engine.dispose()
    finally:
        server.stop()
    assert not services.postgres_answers(url)
    assert not folder.exists()


def test_a_throwaway_redis_answers_and_is_gone_when_stopped() -> None:
    redis = pytest.importorskip("redis")
    server = services.ThrowawayRedis()
    try:
        url = _started(server)
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.set("chorus:test", "1")
            assert client.get("chorus:test") == b"1"
    finally:
        server.stop()
    assert not services.redis_answers(url)


def test_a_server_left_by_a_killed_run_is_stopped_and_removed_by_the_next() -> None:
    """A run killed outright (SIGKILL) cannot stop its servers; the next run's start does."""
    redis = pytest.importorskip("redis")
    left = services.ThrowawayRedis()
    url = _started(left)
    folder = left.folder
    (folder / services.OWNER_FILE).write_text("999999999")  # an owner that is gone
    left._proc = None  # as if this process had been killed: nothing stops it
    try:
        assert services.redis_answers(url)
        fresh = services.ThrowawayRedis()
        try:
            _started(fresh)
            assert not folder.exists()
            assert not services.redis_answers(url)
        finally:
            fresh.stop()
    finally:
        with redis.Redis.from_url(url, socket_timeout=2) as client, contextlib.suppress(Exception):
            client.shutdown(nosave=True)


# -- the report of a hanging test (tests/support/hang_report.py) --------------------------


async def test_a_hang_report_names_the_coroutine_each_pending_task_waits_in() -> None:
    parked = asyncio.Event()

    async def waiting_on_something_that_never_comes() -> None:
        await parked.wait()

    task = asyncio.create_task(waiting_on_something_that_never_comes(), name="never-comes")
    await asyncio.sleep(0)
    out = io.StringIO()
    report = HangReport(0.0, "tests/x.py::test_y", stream=out).start()
    try:
        await asyncio.wait_for(asyncio.to_thread(report._timer.join, 10), 15)
        assert report.fired
        text = out.getvalue()
        assert "tests/x.py::test_y is still running" in text
        assert "never-comes" in text and "waiting_on_something_that_never_comes" in text
    finally:
        parked.set()
        await asyncio.wait_for(task, 5)


def test_a_hang_report_cancelled_in_time_says_nothing() -> None:
    out = io.StringIO()
    report = HangReport(30.0, "t", stream=out).start()
    report.cancel()
    report._timer.join(5)
    assert not report.fired and out.getvalue() == ""


def test_the_hang_report_goes_off_before_pytest_timeout_and_not_without_one() -> None:
    assert report_seconds(300) == 280
    assert report_seconds(10) == 8  # a short limit keeps most of its time
    assert report_seconds(None) is None and report_seconds(0) is None
