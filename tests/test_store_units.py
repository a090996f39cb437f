"""One unit of work per command, off the event loop (bot/db/store.py Store.unit,
bot/db/database.py): on SQLite and on PostgreSQL, a unit's calls share one transaction
(committed together, rolled back together), and the Database runs every call in its own
threads, never on the event loop's."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
from sqlalchemy import create_engine, event

from bot.core.model import Role, Space, State, Visibility
from bot.db.database import Database, threads_for
from bot.db.engine import SQLITE_BUSY_SECONDS, make_engine, upgrade
from bot.db.store import Store


class Commits:
    """Counts the transactions committed on an engine."""

    def __init__(self, engine) -> None:
        self.count = 0
        event.listen(engine, "commit", self._commit)

    def _commit(self, _conn) -> None:
        self.count += 1


def _space(space_id: str = "abc234") -> Space:
    return Space(id=space_id, host="@host:x", title="Units", visibility=Visibility.EVERYONE,
                 state=State.LIVE, people={"@host:x": Role.HOST})


def _join_and_decide(st: Store, space_id: str, user: str) -> None:
    """What a join does with the store: load the space and the person, save the space."""
    rec = st.load_space(space_id)
    st.actor(user, is_moderator=False, host=rec.space.host)
    st.get_state("hosting.min_followers")
    people = dict(rec.space.people) | {user: Role.LISTENER}
    st.save_space(dataclasses.replace(rec.space, people=people))


def test_a_units_calls_are_one_transaction(store: Store) -> None:
    store.save_space(_space())
    commits = Commits(store.engine)
    _join_and_decide(store, "abc234", "@a:x")  # each call its own transaction
    separate = commits.count
    commits.count = 0
    with store.unit():
        _join_and_decide(store, "abc234", "@b:x")
    assert commits.count == 1 < separate
    assert set(store.load_space("abc234").space.people) == {"@host:x", "@a:x", "@b:x"}


def test_a_unit_that_fails_changes_nothing(store: Store) -> None:
    store.save_space(_space())
    with pytest.raises(RuntimeError, match="halfway"), store.unit():
        store.update_space_row("abc234", title="Renamed")
        store.set_state("k", "v")
        raise RuntimeError("halfway")
    assert store.load_space("abc234").space.title == "Units"
    assert store.get_state("k") is None
    assert not store.in_unit()


def test_a_unit_inside_a_unit_is_part_of_it(store: Store) -> None:
    commits = Commits(store.engine)
    with store.unit():
        store.set_state("a", "1")
        with store.unit():
            store.set_state("b", "2")
        assert store.in_unit()
    assert commits.count == 1
    assert (store.get_state("a"), store.get_state("b")) == ("1", "2")


def test_what_needs_a_transaction_of_its_own_refuses_to_run_in_a_unit(store: Store) -> None:
    with pytest.raises(RuntimeError, match="claim_event needs a transaction of its own"), store.unit():
        store.claim_event("$e1")
    assert store.claim_event("$e1") is True and store.claim_event("$e1") is False


async def test_the_database_runs_every_call_off_the_event_loop(store: Store) -> None:
    db = Database(store)
    seen: list[str] = []
    try:
        await db.save_space(_space())
        rec = await db.load_space("abc234")
        assert rec is not None and rec.space.title == "Units"

        def where(st: Store) -> str:
            seen.append(threading.current_thread().name)
            _join_and_decide(st, "abc234", "@c:x")
            return "done"

        assert await db.unit(where) == "done"
        assert seen and seen[0].startswith("chorus-db") and seen[0] != threading.current_thread().name
        assert "@c:x" in (await db.load_space("abc234")).space.people
        with pytest.raises(RuntimeError, match="refused"):  # an error reaches the awaiting coroutine
            await db.unit(lambda st: (st.set_state("x", "1"), _raise("refused")))
        assert await db.get_state("x") is None  # and its unit was rolled back
        with pytest.raises(AttributeError):
            await db._tx()
    finally:
        db.close()


async def test_calls_run_side_by_side_on_postgres_and_one_at_a_time_on_sqlite(store: Store) -> None:
    db = Database(store)
    try:
        sqlite = store.engine.url.get_backend_name() == "sqlite"
        assert db.threads == threads_for(store) == (1 if sqlite else 4)
        counts = await asyncio.gather(*(db.follower_count(f"@u{i}:x") for i in range(8)))
        assert counts == [0] * 8
    finally:
        db.close()


def test_sqlite_waits_seconds_not_half_a_minute_for_a_lock(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/busy.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == SQLITE_BUSY_SECONDS * 1000
    finally:
        engine.dispose()
    assert SQLITE_BUSY_SECONDS < 30


async def test_an_in_memory_database_is_called_on_the_loop_it_has_nothing_to_wait_on() -> None:
    """sqlite:// is one connection's (another thread would open another, empty, database)."""
    engine = make_engine("sqlite://")
    try:
        upgrade(engine)
        db = Database(Store(engine))
        assert db.inline and db.threads == 0
        await db.set_state("k", "v")
        assert await db.unit(lambda st: (threading.current_thread().name, st.get_state("k"))) == \
            (threading.current_thread().name, "v")
        db.close()
    finally:
        engine.dispose()


async def test_a_cancelled_call_is_waited_out_before_the_cancellation_is_taken(store: Store) -> None:
    """A command cut off at its deadline keeps what it holds (its space's lock) until the
    database work under it is over: no other unit runs beside it."""
    db = Database(store)
    entered, leave = threading.Event(), threading.Event()

    def slow(st: Store) -> None:
        st.set_state("slow", "started")
        entered.set()
        leave.wait(10)
        st.set_state("slow", "finished")

    try:
        task = asyncio.create_task(db.unit(slow))
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        for _ in range(10):  # ample turns of the loop for a cancellation to be taken
            await asyncio.sleep(0)
        assert not task.done()  # still waiting on the thread, though cancelled
        leave.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert await db.get_state("slow") == "finished"  # the unit ended as a whole
    finally:
        leave.set()
        db.close()


def test_two_transactions_that_both_find_a_user_missing_both_get_it(store: Store) -> None:
    """Store.user() makes a missing row with ON CONFLICT DO NOTHING: the second of two
    transactions that both looked first gets the row, not an IntegrityError."""
    if store.engine.url.get_backend_name() == "sqlite":
        pytest.skip("SQLite takes one writer at a time: the two cannot overlap")
    first_looked, second_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            first_looked.wait(10)
            store.user("@both:x")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            second_done.set()

    worker = threading.Thread(target=second)
    worker.start()
    with store.unit():
        assert store.actor("@both:x", is_moderator=False).banned is False  # makes the row, uncommitted
        first_looked.set()
        _until_a_backend_waits_on_a_lock(store)  # the second's insert, on our uncommitted row
    worker.join(10)
    assert not errors and second_done.is_set()
    assert store.user("@both:x").user_id == "@both:x"


def _until_a_backend_waits_on_a_lock(store: Store, timeout: float = 10.0) -> None:
    watcher = create_engine(store.engine.url)
    deadline = time.monotonic() + timeout
    try:
        with watcher.connect() as conn:
            while conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'").scalar_one() == 0:
                assert time.monotonic() < deadline, "no transaction came to wait on the lock"
                conn.rollback()
                time.sleep(0.02)
    finally:
        watcher.dispose()


def _raise(message: str) -> None:
    raise RuntimeError(message)


@pytest.mark.postgres
def test_on_postgres_a_statement_waits_for_a_lock_only_so_long(postgres_url, monkeypatch) -> None:
    """A lock held elsewhere past the bound fails the bot's statement as the database being
    unavailable (the bot waits that out), instead of holding a command, and its space, for ever."""
    from bot.db import engine as engine_module
    from bot.db.store import database_unavailable

    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "30s"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "30s"
    upgrade(engine)  # a migration is not bound by it
    engine.dispose()
    monkeypatch.setattr(engine_module, "STATEMENT_TIMEOUT_SECONDS", 0.5)
    engine = make_engine(postgres_url)
    holder = create_engine(postgres_url)
    try:
        with holder.connect() as held:
            held.begin()
            held.exec_driver_sql("LOCK TABLE sync_state IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(Exception) as caught:
                Store(engine).get_state("k")
            held.rollback()
        assert database_unavailable(caught.value) and "timeout" in str(caught.value)
        assert Store(engine).get_state("k") is None  # and once the lock is gone, it answers
    finally:
        engine.dispose()
        holder.dispose()
