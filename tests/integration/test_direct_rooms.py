"""Direct messages in one room, on a real Synapse: the bot writes to someone in the DM they
already have with it (the bot's m.direct), makes one only when there is none, keeps using it
after a restart, and never sends a personal link into a room someone else has joined."""

from __future__ import annotations

from nio import RoomPreset

from tests.integration.helpers import ask, room_with_bot, space_id_in, wait_for_dm_in, wait_until
from tests.support.bot import BotHarness


async def _bot_direct_rooms(chorus: BotHarness) -> dict[str, list[str]]:
    resp = await chorus.bot.client.list_direct_rooms()
    return getattr(resp, "rooms", {})


async def _link_in(user, room: str | None, bot_id: str, space_id: str, text: str = "/spaces/{}?token=") -> str:
    """The room where the bot's message with ``text`` (by default the space's personal link)
    reaches ``user`` (in ``room``, or any: the invites that come meanwhile are accepted)."""
    found, _event = await wait_for_dm_in(user, bot_id, lambda body: text.format(space_id) in body, room)
    return found


async def test_links_go_to_the_dm_people_already_have(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    bot = chorus.user_id
    host, alice, carol = await make_user("host"), await make_user("alice"), await make_user("carol")
    room = await room_with_bot(host, bot, alice, carol)
    sid = space_id_in(await ask(host, room, "!space start Morning show"))

    # alice opened a DM with the bot earlier, as Element does (is_direct, trusted private chat)
    dm = await alice.create_room(invite=[bot], is_direct=True, preset=RoomPreset.trusted_private_chat)
    await alice.wait_for_event(lambda r, e: r == dm and getattr(e, "state_key", None) == bot
                               and e.membership == "join")
    await _wait_for_listed(chorus, alice.user_id, dm)

    space_room = chorus.store.room_of(sid)
    assert "personal listening link is in a direct message" in await ask(alice, room, f"!space join {sid}")
    await _link_in(alice, dm, bot, sid)
    # the only invite is the space's room: no second DM room for alice
    assert await alice.accept_invites() == [space_room]
    assert (await _bot_direct_rooms(chorus))[alice.user_id] == [dm]

    # carol has none: one is made, listed in m.direct, and used again, also after a restart
    await ask(carol, room, f"!space join {sid}")
    carol_dm = await _link_in(carol, None, bot, sid)
    assert carol_dm not in (room, space_room)
    await _wait_for_listed(chorus, carol.user_id, carol_dm)
    await chorus.restart()
    for _ in range(2):  # the second after the bot has seen its own first message come back
        await ask(host, room, f"!space share {sid} {carol.user_id}")
        assert await _link_in(carol, None, bot, sid, text="shares the space") == carol_dm
    assert (await _bot_direct_rooms(chorus))[carol.user_id] == [carol_dm]

    # carol leaves it: the bot leaves it too, forgets it, and writes to her in a new one
    await carol.leave(carol_dm)
    await ask(host, room, f"!space share {sid} {carol.user_id}")
    again = await _link_in(carol, None, bot, sid, text="shares the space")
    assert again != carol_dm
    assert (await _bot_direct_rooms(chorus))[carol.user_id] == [again]
    left = await chorus.bot.client.joined_rooms()
    assert carol_dm not in left.rooms and again in left.rooms


async def test_a_dm_someone_else_joined_gets_no_personal_link(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    bot = chorus.user_id
    host, alice, eve = await make_user("host"), await make_user("alice"), await make_user("eve")
    room = await room_with_bot(host, bot, alice)
    sid = space_id_in(await ask(host, room, "!space start Evening show"))
    dm = await alice.create_room(invite=[bot], is_direct=True, preset=RoomPreset.trusted_private_chat)
    await alice.wait_for_event(lambda r, e: r == dm and getattr(e, "state_key", None) == bot
                               and e.membership == "join")
    await _wait_for_listed(chorus, alice.user_id, dm)
    # alice lets eve into it: it is no longer private to alice and the bot
    await alice.invite(dm, eve.user_id)
    await eve.join(dm)
    await wait_until(lambda: eve.user_id in getattr(chorus.bot.client.rooms.get(dm), 'users', {}), timeout=30,
                     what="the bot sees eve in alice's DM")

    await ask(alice, room, f"!space join {sid}")
    fresh = await _link_in(alice, None, bot, sid)
    assert fresh not in (dm, room, chorus.store.room_of(sid))
    assert (await _bot_direct_rooms(chorus))[alice.user_id] == [dm, fresh]
    await eve.expect_no_event(lambda r, e: r == dm and f"/spaces/{sid}?token=" in
                              e.source.get("content", {}).get("body", ""), within=2)


async def _wait_for_listed(chorus: BotHarness, user: str, room: str) -> None:
    async def listed() -> bool:
        return room in (await _bot_direct_rooms(chorus)).get(user, [])

    await wait_until(listed, timeout=30, what=f"{room} listed for {user} in the bot's m.direct")
