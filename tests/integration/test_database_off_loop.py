"""The database off the event loop (issue 15, item 2): the bot on a real PostgreSQL, the
bridge on the same event loop as the bot (as the embedded bridge is), a real Synapse. A
command stuck on a lock in PostgreSQL holds up that command only: the bridge's stage ticks
on and its listener hears the space meanwhile; once the lock goes, the command is answered."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient
from tests.bridge.conftest import SECRET, make_settings, run_bridge
from tests.integration.helpers import ask, body, room_with_bot, space_id_in

pytestmark = [pytest.mark.synapse, pytest.mark.postgres]

#: the lock is let go by itself after this long, whatever happens to the test: a bot that
#: still waited on its database on the event loop would otherwise hold the test's loop for ever
LOCK_SAFETY_SECONDS = 30.0
#: 2 s of audio (20 ms frames)
FRAMES = 100


def _waiting_on_a_lock(url: str) -> int:
    """Backends of this database waiting for a lock (the bot's command, when it is stuck)."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").scalar_one()
    finally:
        engine.dispose()


class TableLock:
    """LOCK TABLE … IN ACCESS EXCLUSIVE MODE from a connection of its own, in a thread (the
    test's loop never waits on it), let go by :meth:`release` or after LOCK_SAFETY_SECONDS."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = sqlalchemy.create_engine(url)
        self.table = table
        self.conn = None
        self._timer = threading.Timer(LOCK_SAFETY_SECONDS, self.release)
        self._lock = threading.Lock()

    def take(self) -> None:
        self.conn = self.engine.connect()
        self.conn.begin()
        self.conn.exec_driver_sql(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        self._timer.start()

    def release(self) -> None:
        with self._lock:
            self._timer.cancel()
            if self.conn is not None:
                self.conn.rollback()
                self.conn.close()
                self.conn = None
            self.engine.dispose()


async def _until(condition, what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def test_a_command_stuck_on_a_postgres_lock_holds_up_neither_the_tick_nor_the_listeners(
        postgres_url, chorus_factory, make_user, tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    lock = TableLock(postgres_url, "spaces")
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0},
                                      database={"url": postgres_url})
        host, guest = await make_user("host"), await make_user("guest")
        room = await room_with_bot(host, chorus.user_id, guest)
        sid = space_id_in(await ask(host, room, "!space start Held up"))
        stage = running.stage(sid)
        async with SpaceClient(running.url, sid, keep_audio=False) as ear:
            await ear.wait_frames(10)
            await asyncio.to_thread(lock.take)
            asked = await guest.send_text(room, f"!space join {sid}")
            # the bot's query for the space waits in PostgreSQL, behind the lock
            await _until(lambda: asyncio.to_thread(_waiting_on_a_lock, postgres_url),
                         "the command to wait on the lock")
            ticks, frames = stage.tick_count, ear.frames_received
            await ear.wait_frames(frames + FRAMES, timeout=LOCK_SAFETY_SECONDS / 2)
            assert stage.tick_count >= ticks + FRAMES
            # ... and all that while, the command was still waiting (the lock is still held)
            assert await asyncio.to_thread(_waiting_on_a_lock, postgres_url) >= 1
            assert lock.conn is not None
            await asyncio.to_thread(lock.release)
            reply = body(await guest.wait_for_reply(room, asked, timeout=60))
        assert f"You joined “Held up” ({sid})" in reply
        assert guest.user_id in chorus.store.load_space(sid).space.people
    finally:
        await asyncio.to_thread(lock.release)
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()
