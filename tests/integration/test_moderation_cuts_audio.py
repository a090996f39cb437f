"""A moderator's word reaches the audio at once: ``!mod remove`` closes the removed
user's connection to the space, ``!mod ban`` closes a banned user's connections to every
live space (one they listen to through the widget without having joined included), and
neither can come back. Real Synapse, the bot, the real bridge over its control API."""

from __future__ import annotations

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient
from tests.bridge.conftest import SECRET, make_settings, run_bridge
from tests.integration.helpers import ask, personal_token, room_with_bot, space_id_in


async def test_remove_and_ban_close_the_users_connections_at_once(chorus_factory, make_user, tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    clients: list[SpaceClient] = []
    try:
        mod = await make_user("mod")
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0},
                                      moderation={"moderators": [mod.user_id]})
        host, troll, lurker = await make_user("host"), await make_user("troll"), await make_user("lurker")
        room = await room_with_bot(mod, chorus.user_id, host, troll, lurker)
        sid = space_id_in(await ask(host, room, "!space start Open mic"))
        await ask(troll, room, f"!space join {sid}")
        troll_token = await personal_token(troll, chorus.user_id, sid)
        # the lurker never joined: it listens with a token such as the widget's sign-in gives
        lurker_token = bridge.mint_token(sid, lurker.user_id, "listener")
        audience = SpaceClient(running.url, sid)
        troll_ear = SpaceClient(running.url, sid, troll_token)
        lurker_ear = SpaceClient(running.url, sid, lurker_token)
        clients += [audience, troll_ear, lurker_ear]
        for c in clients:
            await c.connect()
            await c.wait_type("hello")

        assert "Removed" in await ask(mod, room, f"!mod remove {sid} {troll.user_id}")
        assert await troll_ear.wait_closed(10) == 4403
        assert troll_ear.close_reason == "removed from this space by a moderator"
        async with SpaceClient(running.url, sid, troll_token) as back:
            assert await back.wait_closed(10) == 4403

        assert "is banned" in await ask(mod, room, f"!mod ban {lurker.user_id}")
        assert await lurker_ear.wait_closed(10) == 4403
        frames = audience.frames_received
        await audience.wait_frames(frames + 10)  # everyone else hears on
        assert not audience.closed.is_set()
    finally:
        for c in clients:
            await c.close()
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()
