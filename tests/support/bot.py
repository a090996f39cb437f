"""Pytest plugin: a real Chorus bot against the real Synapse fixture.

``chorus`` starts a bot with its own account and its own SQLite database; the test can
``await chorus.restart()`` (same database, same account) to check what survives a restart.
``chorus_factory`` takes settings overrides (moderators, thresholds, …).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.app import Chorus
from bot.bridge_api import BridgeControl, InMemoryBridge
from bot.config import settings_from_dict
from bot.db.engine import make_engine, upgrade
from bot.db.store import Store
from bot.local_homeserver import LocalHomeserver
from bot.runner import bot_options, schedule_settings, space_settings
from tests.support.matrix_user import unique_localpart


class BotHarness:
    def __init__(self, homeserver: LocalHomeserver, data_dir: Path, overrides: dict,
                 bridge: BridgeControl | None = None, use_token: bool = False) -> None:
        self.homeserver = homeserver
        self.data_dir = data_dir
        password = secrets.token_urlsafe(12)
        registered = homeserver.register(unique_localpart("chorus"), password)
        self.user_id = registered.user_id
        # log in with the password, or (use_token) with an access token and no password
        self.password = "" if use_token else password
        config = {"database": {"url": f"sqlite:///{data_dir}/chorus.db"},
                  "matrix": {"sync_timeout_ms": 1000,
                             "access_token": registered.access_token if use_token else ""}}
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        self.settings = settings_from_dict(config)
        self.engine = make_engine(self.settings.database.url)
        upgrade(self.engine)
        self.store = Store(self.engine)
        self.bridge = bridge or InMemoryBridge()
        self.bot: Chorus | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        opts = bot_options(self.settings, self.homeserver.base_url, self.user_id, self.password)
        opts.store_path = str(self.data_dir / "nio-store")
        self.bot = Chorus(opts, self.store, self.bridge, space_settings(self.settings),
                          schedule_settings(self.settings))
        self._task = asyncio.create_task(self.bot.run())
        ready = asyncio.create_task(self.bot.ready.wait())
        done, _ = await asyncio.wait({self._task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()
        if ready not in done:
            raise TimeoutError("the bot did not finish its first sync within 60 s")

    async def stop(self) -> None:
        if self.bot is None:
            return
        self.bot.stop()
        try:
            await asyncio.wait_for(self._task, 30)
        finally:
            await self.bot.close()
            self.bot = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


ChorusFactory = Callable[..., Awaitable[BotHarness]]


@pytest.fixture
async def chorus_factory(homeserver: LocalHomeserver, tmp_path: Path) -> AsyncIterator[ChorusFactory]:
    harnesses: list[BotHarness] = []

    async def make(bridge: BridgeControl | None = None, use_token: bool = False, **overrides: dict) -> BotHarness:
        h = BotHarness(homeserver, tmp_path / f"bot{len(harnesses)}", overrides, bridge, use_token)
        harnesses.append(h)
        await h.start()
        return h

    yield make
    for h in harnesses:
        await h.stop()
        h.engine.dispose()


@pytest.fixture
async def chorus(chorus_factory: ChorusFactory) -> BotHarness:
    return await chorus_factory()
