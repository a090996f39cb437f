"""The local demo's set-up (bot/demo.py) on a real homeserver, start after start: one demo
room, found again by its alias; hosting granted to demo moderators once, never again over a
moderator's later word. The whole `make run` path is tests/integration/test_run_command.py."""

from __future__ import annotations

from bot import demo
from bot.config import settings_from_dict
from bot.runner import space_settings
from tests.support.bot import BotHarness
from tests.support.matrix_user import unique_localpart


def test_demo_moderators_are_moderators_only_on_the_local_homeserver() -> None:
    settings = settings_from_dict({"local": {"demo_users": ["alice", "bob"], "demo_moderators": ["bob"],
                                             "server_name": "demo.test"},
                                   "moderation": {"moderators": ["@mod:example.org"]}})
    assert space_settings(settings, local=True).moderators == {"@mod:example.org", "@bob:demo.test"}
    assert space_settings(settings).moderators == {"@mod:example.org"}


async def test_the_demo_room_is_made_once_and_found_again(chorus: BotHarness, make_user) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    server = chorus.user_id.split(":", 1)[1]
    localpart = unique_localpart("chorus-demo")
    matrix = chorus.bot.matrix
    first = await demo.open_room(matrix, server, [alice.user_id, bob.user_id], "!", alias_localpart=localpart)
    assert first.alias == f"#{localpart}:{server}"
    assert await alice.accept_invite(timeout=30, inviter=chorus.user_id) == first.room_id
    assert await bob.wait_for_invite(timeout=30, inviter=chorus.user_id) == first.room_id

    # the next start: the same room, and no error for people already in it or invited
    again = await demo.open_room(matrix, server, [alice.user_id, bob.user_id], "!", alias_localpart=localpart)
    assert again == first

    # the bot had left it: it joins again, and someone who left is invited again
    resp = await chorus.bot.client.room_leave(first.room_id)
    assert not hasattr(resp, "status_code"), resp
    await bob.join(first.room_id)
    await bob.leave(first.room_id)
    third = await demo.open_room(matrix, server, [alice.user_id, bob.user_id], "!", alias_localpart=localpart)
    assert third == first
    assert await bob.accept_invite(timeout=30, inviter=chorus.user_id) == first.room_id
    sent = await bob.send_text(first.room_id, "!ping")
    assert (await bob.wait_for_reply(first.room_id, sent)).source["content"]["body"] == "pong"

    # everyone has left it, the bot too: a new room takes the alias
    for user in (alice, bob):
        await user.leave(first.room_id)
    await chorus.bot.client.room_leave(first.room_id)
    fresh = await demo.open_room(matrix, server, [alice.user_id], "!", alias_localpart=localpart)
    assert fresh.alias == first.alias and fresh.room_id != first.room_id
    assert await alice.accept_invite(timeout=30, inviter=chorus.user_id) == fresh.room_id


async def test_hosting_is_granted_to_demo_moderators_once(chorus: BotHarness) -> None:
    alice = f"@{unique_localpart('alice')}:localhost"
    db = chorus.bot.db
    assert await demo.let_host(db, chorus.user_id, [alice]) == [alice]
    assert (await db.user(alice)).host_override == "allow"
    assert [e.action for e in await db.audit_log(1)] == ["demo.allow-host"]
    # a moderator's !mod default-host (or deny-host) is not undone by the next start
    await db.update_user(alice, host_override=None)
    assert await demo.let_host(db, chorus.user_id, [alice]) == []
    assert (await db.user(alice)).host_override is None
