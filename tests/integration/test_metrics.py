"""The bot's /metrics and /healthz ([bot] metrics_listen) against the real bot on a real
Synapse: commands counted by name and outcome, read by Prometheus' own text parser."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack

import pytest

from bot.runner import serve_status
from tests.integration.helpers import ask, room_with_bot
from tests.support.prometheus import healthz, scrape, value

pytestmark = pytest.mark.synapse


async def test_commands_are_counted_by_name_and_outcome(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(options={"command_burst": 4, "commands_per_minute": 1})
    alice = await make_user("alice")
    room = await room_with_bot(alice, chorus.user_id)
    async with AsyncExitStack() as stack:
        port = await serve_status(chorus.bot, "127.0.0.1:0", stack)
        assert await ask(alice, room, "!ping") == "pong"
        assert await ask(alice, room, "!ping") == "pong"
        assert "I don't know the command" in await ask(alice, room, "!nosuchthing")
        assert "Usage: !follow" in await ask(alice, room, "!follow")
        assert (await ask(alice, room, "!ping")).startswith("⏳ Slow down")  # the fifth, past the burst of 4
        samples = await scrape(port)
        assert value(samples, "chorus_bot_commands_total", command="ping", outcome="ok") == 2
        assert value(samples, "chorus_bot_commands_total", command="unknown", outcome="unknown") == 1
        assert value(samples, "chorus_bot_commands_total", command="follow", outcome="refused") == 1
        assert value(samples, "chorus_bot_commands_total", command="unknown", outcome="rate_limited") == 1
        # every command's series is there from the start, at 0 until it happens
        assert value(samples, "chorus_bot_commands_total", command="space start", outcome="error") == 0
        assert value(samples, "chorus_bot_command_seconds_count", command="ping") == 2
        assert value(samples, "chorus_bot_command_delay_seconds_count") == 5
        age = value(samples, "chorus_bot_sync_age_seconds")
        assert not math.isnan(age) and 0 <= age < 60
        assert samples[("chorus_bot_database_up", ())] == 1
        assert samples[("chorus_bot_scheduler_jobs_pending", ())] == chorus.store.scheduled_job_count()
        assert samples[("chorus_bot_bridge_up", ())] == 1
        assert samples[("chorus_bot_scheduler_jobs_misfired_total", ())] == 0
        assert value(samples, "process_resident_memory_bytes") > 0
        status, health = await healthz(port)
        assert status == 200, health
        assert health["ok"] and health["syncing"] and health["database"] == "up"
        assert health["user_id"] == chorus.user_id
