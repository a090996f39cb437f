"""The space's room and card as people use them: buttons, sharing, leaving, listing."""

from __future__ import annotations

from bot.core.model import Role
from tests.integration.helpers import ask, body, room_with_bot, space_id_in, wait_until


async def test_card_buttons_join_and_raise_a_hand(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space start Buttons"))
    card = await fan.wait_for_message(room, lambda b: "LIVE: Buttons" in b, sender=chorus.user_id)
    await fan.react(room, card.event_id, "🎧")
    space_room = await fan.accept_invite(inviter=chorus.user_id)
    assert chorus.store.load_space(sid).space.people.get(fan.user_id) is Role.LISTENER
    # the card is edited to show the listener
    edited = await fan.wait_for_event(
        lambda r, e: r == room and e.source.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"
        and "1 listening" in e.source["content"]["m.new_content"]["body"])
    assert edited.source["content"]["m.relates_to"]["event_id"] == card.event_id
    await fan.react(room, card.event_id, "✋")
    await fan.wait_for_message(space_room, lambda b: "asks to speak" in b and fan.user_id in b)
    assert chorus.store.load_space(sid).space.requests == (fan.user_id,)
    # inside the space's room the id may be left out
    assert "Your hand is lowered" in await ask(fan, space_room, "!space lower")
    assert chorus.store.load_space(sid).space.requests == ()


async def test_leaving_the_room_leaves_the_space(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space start Doors"))
    space_room = chorus.store.load_space(sid).row.room_id
    await fan.join(space_room)  # a public space's room can be joined directly
    await wait_until(lambda: chorus.store.load_space(sid).space.people.get(fan.user_id) is Role.LISTENER)
    await fan.leave(space_room)
    await wait_until(lambda: fan.user_id not in chorus.store.load_space(sid).space.people)
    assert "not in space" in await ask(fan, room, f"!space leave {sid}")
    assert "end it with" in await ask(host, room, f"!space leave {sid}")


async def test_share_sends_a_direct_message_with_both_links(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, friend = await make_user("host"), await make_user("friend")
    room = await room_with_bot(host, chorus.user_id)
    sid = space_id_in(await ask(host, room, "!space start Shared"))
    assert f"Sent {friend.user_id}" in await ask(host, room, f"!space share {sid} {friend.user_id}")
    dm_room = await friend.accept_invite(inviter=chorus.user_id)
    dm = await friend.wait_for_message(dm_room, lambda b: "shares the space" in b, sender=chorus.user_id)
    text = body(dm)
    space_room = chorus.store.load_space(sid).row.room_id
    assert f"https://matrix.to/#/{space_room}" in text and f"/spaces/{sid}" in text
    assert f"!space join {sid}" in text


async def test_spaces_lists_only_what_the_sender_may_see(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, friend, other = await make_user("host"), await make_user("friend"), await make_user("other")
    room = await room_with_bot(host, chorus.user_id, friend, other)
    await ask(host, room, f"!follow {friend.user_id}")
    open_id = space_id_in(await ask(host, room, "!space start Open one"))
    assert "has ended" in await ask(host, room, "!space end")
    friends_id = space_id_in(await ask(host, room, "!space start Friends one visibility=following"))
    listing_friend = await ask(friend, room, "!spaces")
    listing_other = await ask(other, room, "!spaces")
    assert friends_id in listing_friend and "Friends one" in listing_friend
    assert friends_id not in listing_other
    assert open_id not in listing_other  # ended
    assert "no space with id" in (await ask(other, room, f"!space info {friends_id}")).lower()


async def test_only_host_or_cohost_turn_captions_on(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space start Captioned"))
    await ask(fan, room, f"!space join {sid}")
    assert "Only the host or a co-host" in await ask(fan, room, f"!space captions {sid} on")
    assert chorus.bridge.stages[sid].captions is False
    assert "Captions are on" in await ask(host, room, f"!space captions {sid} on")
    assert chorus.bridge.stages[sid].captions is True
    assert "already on" in await ask(host, room, f"!space captions {sid} on")
    assert "Captions are off" in await ask(host, room, f"!space captions {sid} off")
    assert chorus.bridge.stages[sid].captions is False
