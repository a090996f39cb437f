"""The pure parts of bot/matrix/direct.py: when a room counts as private to someone and the
bot, and how the bot's m.direct grows."""

from __future__ import annotations

from bot.matrix.direct import private_to, with_room, without_room

BOT, ALICE, EVE = "@chorus:example.org", "@alice:example.org", "@eve:example.org"


def test_a_room_is_private_only_to_the_bot_and_the_person() -> None:
    assert private_to([BOT, ALICE], BOT, ALICE)
    assert private_to([ALICE, BOT, BOT], BOT, ALICE)
    assert not private_to([BOT, ALICE, EVE], BOT, ALICE)  # someone else joined or is invited
    assert not private_to([BOT], BOT, ALICE)  # alice left
    assert not private_to([ALICE], BOT, ALICE)  # the bot left
    assert not private_to([], BOT, ALICE)  # the bot cannot see it
    # anyone could join a public room and read what was said before
    assert not private_to([BOT, ALICE], BOT, ALICE, "public")
    assert private_to([BOT, ALICE], BOT, ALICE, "knock")


def test_m_direct_lists_a_room_once_and_keeps_the_rest() -> None:
    assert with_room({}, ALICE, "!a") == {ALICE: ["!a"]}
    assert with_room({ALICE: ["!a"], EVE: ["!e"]}, ALICE, "!b") == {ALICE: ["!a", "!b"], EVE: ["!e"]}
    assert with_room({ALICE: ["!a", "!b"]}, ALICE, "!a") is None
    # another client's mistakes are not copied, nor do they stop the bot
    assert with_room({ALICE: "!a", EVE: 3}, ALICE, "!b") == {ALICE: ["!b"], EVE: 3}
    assert with_room({ALICE: ["!a", 7]}, ALICE, "!b") == {ALICE: ["!a", "!b"]}


def test_a_room_taken_out_of_m_direct() -> None:
    assert without_room({ALICE: ["!a", "!b"], EVE: ["!e"]}, ALICE, "!a") == {ALICE: ["!b"], EVE: ["!e"]}
    assert without_room({ALICE: ["!a"], EVE: ["!e"]}, ALICE, "!a") == {EVE: ["!e"]}
    assert without_room({ALICE: ["!a"]}, ALICE, "!z") is None
    assert without_room({ALICE: "!a"}, ALICE, "!a") is None
