"""Words people read, in chat on a real Synapse: rooms named as people know them, help for
every section and for the time forms, hints with the bot's prefix, counts that agree."""

from __future__ import annotations

from bot.core.when import WHEN_FORMS
from tests.integration.helpers import ask, room_with_bot
from tests.support.matrix_user import unique_localpart


async def test_rooms_are_named_by_their_alias_or_name_never_a_raw_id(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(moderation={"moderators": []})
    mod, member = await make_user("roommod"), await make_user("member")
    alias_part = unique_localpart("general")
    general = await mod.create_room(name="General", invite=[chorus.user_id], preset="public_chat",
                                    alias=alias_part)
    alias = f"#{alias_part}:{chorus.user_id.split(':', 1)[1]}"
    await mod.wait_for_event(lambda r, e: r == general and getattr(e, "membership", None) == "join"
                             and e.state_key == chorus.user_id)
    await member.join(general)
    named = await mod.create_room(name="Book club", invite=[chorus.user_id])
    await mod.wait_for_event(lambda r, e: r == named and getattr(e, "membership", None) == "join"
                             and e.state_key == chorus.user_id)

    refused = await ask(member, general, f"!announce {alias} at tomorrow 10:00 | hi")
    assert f"power level 50 or more in {alias}" in refused and general not in refused

    assert "Announcement #" in await ask(mod, general, f"!announce {general} at tomorrow 10:00 | hello")
    assert "Announcement #" in await ask(mod, general, f"!announce {named} every day 09:00 | read")
    listing = await ask(mod, general, "!announce list")
    assert alias in listing and "“Book club”" in listing, listing
    assert general not in listing and named not in listing, listing
    # after a restart the bot has only part of these rooms' state (what came since): the same
    await chorus.restart()
    await mod.send_text(named, "news")
    assert await ask(mod, general, "!announce list") == listing


async def test_help_sections_time_forms_prefixed_hints_and_plurals(chorus_factory, make_user) -> None:
    chorus = await chorus_factory()
    alice, bob = await make_user("alice"), await make_user("bob")
    room = await room_with_bot(alice, chorus.user_id, bob)

    scheduling = await ask(alice, room, "!help scheduling")
    assert scheduling.startswith("Scheduling\n") and "!space golive" in scheduling and "!ping" not in scheduling
    for section in ("basics", "following", "spaces", "hosts", "tip jar", "announcements"):
        assert "There is no help" not in await ask(alice, room, f"!help {section}"), section

    forms = await ask(alice, room, "!help space schedule")
    for form, examples in WHEN_FORMS:
        assert f"{form}: {', '.join(examples)}" in forms
    assert "today 18:00" in forms
    assert forms == await ask(alice, room, "!help schedule")

    assert "Did you mean “!space start”?" in await ask(alice, room, "!space strat Jam")
    assert "Did you mean “!ping”?" in await ask(alice, room, "!pign")

    assert "(1 follower)" in await ask(bob, room, f"!follow {alice.user_id}")
    assert "You follow 1 person:" in await ask(bob, room, "!following")
    assert "You have 1 follower;" in await ask(alice, room, "!followers")


async def test_a_bot_with_another_prefix_shows_it_in_every_hint(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(bot={"command_prefix": "?"}, hosting={"min_followers": 5})
    alice = await make_user("alice")
    room = await room_with_bot(alice, chorus.user_id)
    refused = await ask(alice, room, "?space start Jam")  # the rules write "!follow", "!mod allow-host"
    assert f"they type ?follow {alice.user_id}" in refused and "?mod allow-host" in refused, refused
    assert "!" not in refused.replace(alice.user_id, ""), refused
    assert "Did you mean “?space start”?" in await ask(alice, room, "?space strat Jam")
