"""The servers the suite starts for itself when none is running (tests/support/services.py):
a throwaway PostgreSQL takes the migrations, a throwaway Redis takes commands, and both
are gone once stopped."""

from __future__ import annotations

import contextlib

import pytest

from bot.db.engine import make_engine, upgrade
from tests.support import services


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
