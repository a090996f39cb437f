"""Engines, sessions and migrations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from bot.files import private_file, tighten_file

log = logging.getLogger(__name__)

#: how long a PostgreSQL connection attempt may take
CONNECT_TIMEOUT_SECONDS = 5
#: how long a SQLite statement waits for another connection's lock before failing with
#: "database is locked" (an outage the bot waits out, bot/app.py). The bot's own work is
#: one thread's (bot/db/database.py), so a wait is another process's (a CLI command) or
#: the scheduler's job store: transactions of milliseconds. It was 30 s.
SQLITE_BUSY_SECONDS = 5
#: PostgreSQL: the longest a statement of the bot's may run or wait for a lock (below the
#: 60 s a command has)
STATEMENT_TIMEOUT_SECONDS = 30

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: files SQLite keeps next to a database
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_engine(url: str) -> Engine:
    """An engine for the configured URL; SQLite gets its folder, WAL and foreign keys.

    A SQLite database holds the bot's access token: its file is made 0600 (SQLite gives
    its -wal and -shm files the same mode) and a folder created for it 0700."""
    parsed = make_url(url)
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            private_file(parsed.database)
            for suffix in SQLITE_SIDE_FILES:
                tighten_file(parsed.database + suffix)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
    elif parsed.get_backend_name() == "postgresql":
        connect_args: dict = {}
        if "connect_timeout" not in parsed.query:
            # a server that went silent must not hold the bot for the OS's TCP timeout (minutes):
            # fail within seconds, and the bot waits the outage out (bot/app.py)
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if "options" not in parsed.query:
            # no statement of the bot's, nor a wait for another's lock, outlasts a command's
            # deadline: the command holding its space waits for its database work to end
            # (bot/db/database.py). Migrations lift this for their own transaction.
            ms = int(STATEMENT_TIMEOUT_SECONDS * 1000)
            connect_args["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms}"
        kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def in_memory(url) -> bool:
    """An in-memory SQLite database: one connection's (another thread's connection would
    be another, empty, database), so the bot works it on its event loop, where there is
    nothing to wait on."""
    url = make_url(url)
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (start-up and ``make run`` call this)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        _no_statement_timeout(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("database schema at %s (%s)", revision, engine.url.render_as_string())


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        _no_statement_timeout(conn)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _no_statement_timeout(conn) -> None:
    """A migration may take its time on a big table (this transaction only)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        conn.exec_driver_sql("SET LOCAL lock_timeout = 0")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
