"""No single message, user or fault takes the bot down: each finding of issue 13 that the bot
owns, replayed against the real bot on the real Synapse (and PostgreSQL through a proxy)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from bot.app import CRASH_REPLY, MAX_COMMAND_CHARS
from bot.commands import registry as default_registry
from bot.commands.registry import Registry
from bot.runner import serve_status
from tests.integration.helpers import ask, body, room_with_bot
from tests.support.prometheus import healthz
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.synapse


def _reply_predicate(room: str, event_id: str):
    def is_reply(r, e) -> bool:
        content = e.source.get("content") or {}
        return r == room and ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get(
            "event_id") == event_id
    return is_reply


def _hanging_registry() -> tuple[Registry, dict]:
    """The bot's commands plus ``!hang``: it waits until the test releases it."""
    registry = Registry(commands=dict(default_registry.commands))
    state = {"started": asyncio.Event(), "release": asyncio.Event(), "runs": 0}

    @registry.command("hang", group="Basics", help="(test) wait until released")
    async def hang(ctx) -> None:
        state["runs"] += 1
        state["started"].set()
        await state["release"].wait()
        await ctx.reply("released")

    return registry, state


async def test_a_huge_user_argument_is_refused_and_the_bot_keeps_answering(chorus, make_user) -> None:
    """Finding 1: `!follow ` + 17,000 x made matrix-nio retry a too-long request forever."""
    eve, alice = await make_user("eve"), await make_user("alice")
    room = await room_with_bot(eve, chorus.user_id, alice)
    reply = await ask(eve, room, "!follow " + "x" * 17_000)
    assert f"at most {MAX_COMMAND_CHARS}" in reply and len(reply) < 300
    for command in ("!follow @" + "x" * 5_000 + ":localhost", "!tipjar " + "y" * 4_000,
                    "!space share k3x9pq @" + "z" * 300 + ":localhost"):
        reply = await ask(eve, room, command)
        assert "too long to be a Matrix user" in reply or "no space" in reply.lower(), reply
        assert len(reply) < 400
    assert await ask(alice, room, "!ping") == "pong"


async def test_regex_bombs_and_huge_numbers_get_a_short_answer(chorus, make_user) -> None:
    """Findings 2 and 10: the cubic announce pattern, quadratic pills, OverflowError, 32 KB echoes."""
    eve, alice = await make_user("eve"), await make_user("alice")
    room = await room_with_bot(eve, chorus.user_id, alice)
    assert (await ask(eve, room, "!announce #a:b at" + " " * 4_000 + "x")).startswith("Usage: !announce")
    unclosed = '<a href="https://matrix.to/#/@m:x">' * 1_300
    sent = await eve.send(room, {"msgtype": "m.text", "body": "!ping", "format": "org.matrix.custom.html",
                                 "formatted_body": "!ping " + unclosed})
    assert body(await eve.wait_for_reply(room, sent)) == "pong"
    reply = await ask(eve, room, "!announce cancel 99999999999999999999")
    assert "from 0 to 2147483647" in reply
    reply = await ask(eve, room, "!space captions " + "w" * 15_000)
    assert "is not one of on, off" in reply and len(reply) < 600
    assert await ask(alice, room, "!ping") == "pong"


async def test_one_slow_command_does_not_hold_up_another_persons(chorus_factory, make_user) -> None:
    registry, state = _hanging_registry()
    chorus = await chorus_factory(registry=registry)
    eve, alice = await make_user("eve"), await make_user("alice")
    room = await room_with_bot(eve, chorus.user_id, alice)
    hung = await eve.send_text(room, "!hang")
    await asyncio.wait_for(state["started"].wait(), 30)
    assert await ask(alice, room, "!ping") == "pong"  # answered while eve's command still waits
    state["release"].set()
    assert body(await eve.wait_for_reply(room, hung)) == "released"


async def test_a_command_past_its_deadline_is_stopped_and_answered(chorus_factory, make_user) -> None:
    registry, state = _hanging_registry()
    chorus = await chorus_factory(registry=registry, options={"command_deadline_seconds": 2.0})
    eve = await make_user("eve")
    room = await room_with_bot(eve, chorus.user_id)
    reply = await ask(eve, room, "!hang")
    assert "took longer than 2 seconds and was stopped" in reply
    assert await ask(eve, room, "!ping") == "pong"


async def test_a_command_cut_off_by_a_crash_is_answered_after_the_restart(chorus_factory, make_user) -> None:
    """Finding 7: a command in flight at a crash is answered as failed, and not run again."""
    registry, state = _hanging_registry()
    chorus = await chorus_factory(registry=registry)
    eve = await make_user("eve")
    room = await room_with_bot(eve, chorus.user_id)
    hung = await eve.send_text(room, "!hang")
    await asyncio.wait_for(state["started"].wait(), 30)
    await chorus.kill()
    state["release"].set()  # a new run would answer "released" at once: it must not run again
    await chorus.start()
    assert body(await eve.wait_for_reply(room, hung)) == CRASH_REPLY
    assert await ask(eve, room, "!ping") == "pong"
    assert state["runs"] == 1
    assert chorus.store.unfinished_commands() == []
    await eve.expect_no_event(_reply_predicate(room, hung), within=2)


@pytest.mark.postgres
async def test_the_bot_outlives_a_database_outage(postgres_url, chorus_factory, make_user) -> None:
    """Finding 4: PostgreSQL unreachable for a while (through a proxy the test cuts): the bot
    stays up, says it will run the command when the database is back, then runs it once."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    chorus = None
    stack = AsyncExitStack()
    try:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        chorus = await chorus_factory(database={"url": via_proxy})
        status_port = await serve_status(chorus.bot, "127.0.0.1:0", stack)
        alice = await make_user("alice")
        room = await room_with_bot(alice, chorus.user_id)
        assert await ask(alice, room, "!ping") == "pong"
        assert (await healthz(status_port))[0] == 200
        proxy.cut()
        during = await alice.send_text(room, "!ping")
        waiting = body(await alice.wait_for_reply(room, during, timeout=60))
        assert "database is unreachable" in waiting
        assert not chorus._task.done(), "the bot stopped when its database went away"
        status, health = await healthz(status_port)  # an operator's check sees it
        assert status == 503 and health["database"] == "down" and not health["ok"], health
        proxy.restore()
        assert body(await alice.wait_for_reply(room, during, timeout=90)) == "pong"
        assert await ask(alice, room, "!ping") == "pong"
        status, health = await healthz(status_port)
        assert status == 200 and health["database"] == "up", health
        await alice.expect_no_event(_reply_predicate(room, during), within=3)
        assert not chorus._task.done()
        assert chorus.store.unfinished_commands() == []
    finally:
        await stack.aclose()
        if chorus is not None:
            await chorus.stop()
        proxy.close()


async def test_the_bot_refuses_to_run_when_the_bridge_refuses_its_secret(homeserver, tmp_path) -> None:
    """Finding 5: `python -m bot run` against a bridge with another secret stops with one line
    naming the problem (exit 2), and the secret it holds is in no line it printed."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.bridge.conftest import make_settings, run_bridge
    from tests.support.matrix_user import unique_localpart

    bridge = await run_bridge(make_settings(tmp_path))  # the bridge's secret is tests.bridge.conftest.SECRET
    bots_secret = "the-bots-own-secret-which-the-bridge-does-not-know"
    bot_user = homeserver.register(unique_localpart("chorus"), "pw-" + bots_secret[:12])
    config = tmp_path / "config.toml"
    config.write_text(
        f'[matrix]\nhomeserver = "{homeserver.base_url}"\nuser_id = "{bot_user.user_id}"\n'
        f'access_token = "{bot_user.access_token}"\nstore_path = "{tmp_path / "store"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/chorus.db"\n'
        f'[bridge]\nmode = "remote"\ncontrol_url = "{bridge.url}"\npublic_url = "{bridge.url}"\n'
        f'shared_secret = "{bots_secret}"\n')
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "run"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await bridge.session.close()
        await bridge.runner.cleanup()
    assert proc.returncode == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("chorus: the bridge at") and "refused the bot's shared secret" in last
    assert "Traceback" not in err
    assert bots_secret not in out + err
