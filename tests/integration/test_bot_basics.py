"""The bot on a real homeserver: it answers, and never answers twice across restarts."""

from __future__ import annotations

from tests.support.bot import BotHarness


def _body(event) -> str:
    return event.source["content"]["body"]


async def test_help_and_ping_are_answered_as_notice_replies(chorus: BotHarness, make_user) -> None:
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    ping = await alice.send_text(room, "!ping")
    reply = await alice.wait_for_reply(room, ping)
    assert reply.source["content"]["msgtype"] == "m.notice"
    assert _body(reply) == "pong"
    helped = await alice.send_text(room, "!help")
    reply = await alice.wait_for_reply(room, helped)
    assert "!space start" in _body(reply)
    assert "<code>" in reply.source["content"]["formatted_body"]


async def test_unknown_command_suggests_the_nearest(chorus: BotHarness, make_user) -> None:
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    sent = await alice.send_text(room, "!pign")
    reply = await alice.wait_for_reply(room, sent)
    assert "Did you mean “!ping”" in _body(reply)


async def test_no_second_answer_after_restart(chorus: BotHarness, make_user) -> None:
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    sent = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, sent)
    await chorus.restart()
    # after the restart a new command is answered …
    again = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, again)
    # … but the old one is not answered a second time
    await alice.expect_no_event(
        lambda r, e: r == room and (e.source.get("content", {}).get("m.relates_to", {})
                                    .get("m.in_reply_to", {}).get("event_id") == sent), within=3)


async def test_events_from_before_the_join_are_ignored(chorus: BotHarness, make_user) -> None:
    alice = await make_user("alice")
    room = await alice.create_room(name="chat")
    old = await alice.send_text(room, "!ping")
    await alice.invite(room, chorus.user_id)
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    new = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, new)
    await alice.expect_no_event(
        lambda r, e: r == room and (e.source.get("content", {}).get("m.relates_to", {})
                                    .get("m.in_reply_to", {}).get("event_id") == old), within=2)


async def test_a_burst_while_the_bot_is_down_is_answered_once_each(chorus: BotHarness, make_user) -> None:
    """More events than one sync returns arrive while the bot is stopped: the gap is
    fetched, every command is answered exactly once, and nothing older is."""
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    await chorus.stop()
    sent = [await alice.send_text(room, f"!ping {i}") for i in range(130)]
    await chorus.start()
    replies: dict[str, int] = {}
    for event_id in sent:
        await alice.wait_for_reply(room, event_id, timeout=120)
        replies[event_id] = replies.get(event_id, 0) + 1
    await alice.expect_no_event(
        lambda r, e: r == room and e.source.get("content", {}).get("msgtype") == "m.notice", within=2)
    assert len(replies) == 130


async def test_invites_from_other_homeservers_are_refused_when_restricted(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(matrix={"allowed_homeservers": ["example.org"]})
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    left = await alice.wait_for_event(lambda r, e: r == room and getattr(e, "state_key", None) == chorus.user_id
                                      and e.membership == "leave")
    assert left.sender == chorus.user_id  # the bot declined the invite itself
    assert room not in chorus.bot.client.rooms


async def test_login_with_an_access_token(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(use_token=True)
    assert chorus.password == "" and chorus.settings.matrix.access_token
    alice = await make_user("alice")
    room = await alice.create_room(name="chat", invite=[chorus.user_id])
    await alice.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == chorus.user_id)
    sent = await alice.send_text(room, "!ping")
    assert _body(await alice.wait_for_reply(room, sent)) == "pong"
    await chorus.restart()  # the same token again, the same device
    again = await alice.send_text(room, "!ping")
    assert _body(await alice.wait_for_reply(room, again)) == "pong"


async def test_a_refused_access_token_stops_start_up_with_a_clear_error(homeserver, tmp_path) -> None:
    import pytest

    from bot.matrix.client import MatrixError
    from tests.support.bot import BotHarness

    h = BotHarness(homeserver, tmp_path, {"matrix": {"access_token": "syt_forged"}})
    h.password = ""
    with pytest.raises(MatrixError, match="access token .* was refused"):
        await h.start()
    h.engine.dispose()
