"""The servers the suite starts for itself when none is running (tests/support/services.py):
a throwaway PostgreSQL takes the migrations, a throwaway Redis takes commands, and both
are gone once stopped."""

from __future__ import annotations

import pytest

from bot.db.engine import make_engine, upgrade
from tests.support import services

pytestmark = pytest.mark.postgres


def test_a_throwaway_postgres_takes_the_migrations_and_is_gone_when_stopped() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    server = services.ThrowawayPostgres()
    try:
        url = server.start()
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
    assert not server.folder.exists()


def test_a_throwaway_redis_answers_and_is_gone_when_stopped(tmp_path) -> None:
    redis = pytest.importorskip("redis")
    server = services.ThrowawayRedis(tmp_path / "redis")
    try:
        url = server.start()
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.set("chorus:test", "1")
            assert client.get("chorus:test") == b"1"
    finally:
        server.stop()
    assert not services.redis_answers(url)
