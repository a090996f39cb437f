"""bot/core/words.py: counts agree with their nouns, and hints show the bot's own prefix."""

from __future__ import annotations

import pytest

from bot.core.words import plural, with_prefix

COMMANDS = ["space start", "space join", "spaces", "mod end", "help", "follow"]


@pytest.mark.parametrize(("n", "one", "text"), [
    (0, "follower", "0 followers"), (1, "follower", "1 follower"), (2, "follower", "2 followers"),
    (1, "person", "1 person"), (3, "person", "3 people"), (1, "reply", "1 reply"), (2, "reply", "2 replies"),
])
def test_plural(n: int, one: str, text: str) -> None:
    assert plural(n, one) == text


def test_hints_show_the_configured_prefix_and_leave_other_bangs_alone() -> None:
    text = ("Type !space join abc (or !spaces), then <code>!help</code>; end it with !mod end abc. "
            "Room !spaceroom:example.org, Wow!space, !spacey and !follow-up stay.")
    assert with_prefix(text, "?", COMMANDS) == (
        "Type ?space join abc (or ?spaces), then <code>?help</code>; end it with ?mod end abc. "
        "Room !spaceroom:example.org, Wow!space, !spacey and !follow-up stay.")
    assert with_prefix(text, "!", COMMANDS) is text
    assert with_prefix("!help", "\\1", COMMANDS) == "\\1help"  # a prefix is never a pattern


@pytest.mark.parametrize(("prefix", "written", "shown"), [
    ("?!", "Type ?!help or !help", "Type ?!help or ?!help"),
    ("!!", "Type !!help or !help", "Type !!help or !!help"),
    (".!", "Try .!space start, or !space start", "Try .!space start, or .!space start"),
    ("!un", "Type !unhelp, or !help", "Type !unhelp, or !unhelp"),
])
def test_a_prefix_with_a_bang_is_not_doubled(prefix: str, written: str, shown: str) -> None:
    assert with_prefix(written, prefix, COMMANDS) == shown
