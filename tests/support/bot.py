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
from bot.commands.registry import Registry
from bot.config import settings_from_dict
from bot.db.engine import make_engine, upgrade
from bot.db.store import Store
from bot.local_homeserver import LocalHomeserver
from bot.runner import bot_options, schedule_settings, space_settings
from tests.support.matrix_user import unique_localpart


class BotHarness:
    def __init__(self, homeserver: LocalHomeserver, data_dir: Path, overrides: dict,
                 bridge: BridgeControl | None = None, use_token: bool = False,
                 registry: Registry | None = None, options: dict | None = None) -> None:
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
        #: a command registry of the test's own (default: the bot's), and BotOptions fields to set
        self.registry = registry
        self.options = options or {}
        self.bot: Chorus | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        opts = bot_options(self.settings, self.homeserver.base_url, self.user_id, self.password)
        opts.store_path = str(self.data_dir / "nio-store")
        # tests send commands faster than people do: the per-person limit is out of their
        # way unless a test sets it (tests/integration/test_floods.py does)
        opts.command_burst, opts.commands_per_minute = 1000, 6000
        for key, value in self.options.items():
            setattr(opts, key, value)
        extra = {"registry": self.registry} if self.registry is not None else {}
        self.bot = Chorus(opts, self.store, self.bridge, space_settings(self.settings),
                          schedule_settings(self.settings), **extra)
        self._task = asyncio.create_task(self.bot.run())
        ready = asyncio.create_task(self.bot.ready.wait())
        done, _ = await asyncio.wait({self._task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()
        if ready not in done:
            raise TimeoutError("the bot did not finish its first sync within 60 s")

    async def kill(self) -> None:
        """Stop the bot the hard way, as a crash would: its task is cancelled mid-work and
        nothing is flushed or marked done."""
        if self.bot is None:
            return
        assert self._task is not None
        lanes = list(self.bot._lane_tasks)
        self._task.cancel()
        for task in lanes:
            task.cancel()
        await asyncio.gather(self._task, *lanes, return_exceptions=True)
        for batcher in (self.bot.transcript, self.bot.reactions):
            if batcher._task is not None:
                batcher._task.cancel()
        await self.bot.client.close()
        self.bot.scheduler.shutdown()
        self.bot = None

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

    async def make(bridge: BridgeControl | None = None, use_token: bool = False, registry: Registry | None = None,
                   options: dict | None = None, **overrides: dict) -> BotHarness:
        h = BotHarness(homeserver, tmp_path / f"bot{len(harnesses)}", overrides, bridge, use_token,
                       registry, options)
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
