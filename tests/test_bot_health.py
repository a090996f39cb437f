"""The bot's database check for /metrics and /healthz, without a homeserver: it counts the
scheduled jobs off the event loop, in-memory SQLite included, and says "down" when the
database does not answer."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import Chorus
from bot.bridge_api import InMemoryBridge
from bot.config import settings_from_dict
from bot.db.engine import make_engine, upgrade
from bot.db.store import Store
from bot.runner import bot_options, schedule_settings, space_settings


def _bot(url: str, tmp_path) -> Chorus:
    settings = settings_from_dict({"database": {"url": url}})
    engine = make_engine(url)
    upgrade(engine)
    options = bot_options(settings, "http://127.0.0.1:9", "@chorus:localhost", "pw")
    options.store_path = str(tmp_path / "nio")
    return Chorus(options, Store(engine), InMemoryBridge(), space_settings(settings), schedule_settings(settings))


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///{tmp}/chorus.db"])
async def test_the_database_check_counts_the_scheduled_jobs(url: str, tmp_path) -> None:
    bot = _bot(url.format(tmp=tmp_path), tmp_path)
    try:
        bot.scheduler.start()
        bot.scheduler.plan("remind", "abc", datetime.now(UTC) + timedelta(hours=1))
        assert await bot.check_database() == 1
        assert bot.metrics.registry.get_sample_value("chorus_bot_database_up") == 1
        ok, report = await bot.health()
        assert not ok and report["database"] == "up" and report["scheduled_jobs"] == 1
        assert report["syncing"] is False  # no /sync answered yet
    finally:
        bot.scheduler.shutdown()
        await bot.client.close()


async def test_a_database_that_does_not_answer_is_down(tmp_path) -> None:
    bot = _bot(f"sqlite:///{tmp_path}/chorus.db", tmp_path)
    try:
        bot.store.engine.dispose()
        (tmp_path / "chorus.db").unlink()
        (tmp_path / "chorus.db").mkdir()  # not a database any more: every connection fails
        assert await bot.check_database() is None
        assert bot.metrics.registry.get_sample_value("chorus_bot_database_up") == 0
        assert math.isnan(bot.metrics.registry.get_sample_value("chorus_bot_scheduler_jobs_pending"))
        ok, report = await bot.health()
        assert not ok and report["database"] == "down"
    finally:
        await bot.client.close()
