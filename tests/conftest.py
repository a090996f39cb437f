"""Shared fixtures: a real Synapse (tests/support/synapse.py), PostgreSQL and Redis
(configured, running, or started for the session: tests/support/services.py), and a
running bot."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.hang_report import HangReport, report_seconds

pytest_plugins = ["tests.support.synapse", "tests.support.bot"]


def _server(variable: str, default: str, answers, throwaway) -> Iterator[str]:
    """The server named by ``variable``, else the one answering at ``default``, else
    ``throwaway()`` started for the session and stopped at its end."""
    configured = os.environ.get(variable)
    if configured or answers(default):
        yield configured or default
        return
    server = throwaway()
    try:
        url = server.start()
    except services.ServiceError as exc:
        server.stop()
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        server.stop()


def _timeout_of(request) -> float | None:
    """pytest-timeout's limit for this test: its marker, else --timeout, else the ini's."""
    marker = request.node.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = request.config.getoption("timeout", None) or request.config.getini("timeout")
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


@pytest.fixture(autouse=True)
def _hang_report(request) -> Iterator[None]:
    """Shortly before pytest-timeout stops a test, print what its asyncio tasks wait on."""
    seconds = report_seconds(_timeout_of(request))
    report = HangReport(seconds, request.node.nodeid).start() if seconds else None
    try:
        yield
    finally:
        if report is not None:
            report.cancel()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server the tests may create databases on (services.py says which)."""
    yield from _server("CHORUS_TEST_POSTGRES", services.DEFAULT_POSTGRES, services.postgres_answers,
                       services.ThrowawayPostgres)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server (services.py says which); tests share it, each under a prefix of its own."""
    yield from _server("CHORUS_TEST_REDIS", services.DEFAULT_REDIS, services.redis_answers,
                       services.ThrowawayRedis)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the test server; dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    name = f"chorus_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL at {postgres_admin_url} is not reachable: {exc}")
    url = sqlalchemy.engine.make_url(postgres_admin_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/chorus.db"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str):
    """A migrated, empty store of the bot's, on SQLite and on PostgreSQL (db_url)."""
    from bot.db.engine import make_engine, upgrade
    from bot.db.store import Store

    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield Store(engine)
    finally:
        engine.dispose()
