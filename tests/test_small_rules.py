"""Tip jar handles, follower CSV imports and Matrix message helpers: pure functions."""

from __future__ import annotations

import pytest

from bot.core.followers_csv import ImportError_, parse_counts
from bot.core.tipjar import TipJarError, normalise_handle
from bot.matrix import messages


@pytest.mark.parametrize("provider, typed, stored", [
    ("paypal", "JaneDoe", "JaneDoe"), ("paypal", "https://paypal.me/JaneDoe", "JaneDoe"),
    ("cashapp", "$JaneDoe", "JaneDoe"), ("venmo", "@Jane-Doe", "Jane-Doe"),
    ("patreon", "jane_doe", "jane_doe"), ("bandcamp", "janedoe.bandcamp.com", "janedoe"),
    ("bandcamp", "jane-doe", "jane-doe"), ("PayPal", "x1", "x1"),
])
def test_valid_handles(provider, typed, stored) -> None:
    assert normalise_handle(provider, typed) == stored


@pytest.mark.parametrize("provider, typed, words", [
    ("paypal", "jane doe", "not a valid PayPal.me handle"),
    ("cashapp", "$12345", "at least one letter"),
    ("venmo", "ab", "5–30"),
    ("bandcamp", "JaneDoe", "lowercase"),
    ("patreon", "x" * 65, "Patreon"),
    ("onlyfans", "x", "not a tip jar provider"),
])
def test_invalid_handles(provider, typed, words) -> None:
    with pytest.raises(TipJarError) as err:
        normalise_handle(provider, typed)
    assert words in str(err.value)


def test_csv_import_all_or_nothing() -> None:
    assert parse_counts("user_id,count\n@a:x.org, 700\n\n# comment\n@b:x.org,3\n") == {"@a:x.org": 700,
                                                                                      "@b:x.org": 3}
    with pytest.raises(ImportError_) as err:
        parse_counts("@a:x.org,700\nbob,3\n@c:x.org,-1\n@d:x.org,lots\n@e:x.org\n")
    text = str(err.value)
    assert text.startswith("Nothing was imported.")
    for part in ("line 2", "line 3", "line 4", "line 5"):
        assert part in text
    with pytest.raises(ImportError_):
        parse_counts("")


def test_notice_reply_and_edit() -> None:
    n = messages.notice("a < b", reply_to="$e")
    assert n["msgtype"] == "m.notice" and n["formatted_body"] == "a &lt; b"
    assert n["m.relates_to"]["m.in_reply_to"]["event_id"] == "$e"
    e = messages.edit("$orig", messages.notice("new"))
    assert e["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert e["m.new_content"]["body"] == "new" and e["body"] == "* new"


def test_reply_fallback_and_pills() -> None:
    content = {"body": "> <@a:x> old\n> more\n\n!ping", "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}
    assert messages.command_text(content) == "!ping"
    html = 'hi <a href="https://matrix.to/#/%40bob%3Ax.org">Bob B</a> and <a href="https://matrix.to/#/!r:x">r</a>'
    assert messages.pills_in(html) == [("@bob:x.org", "Bob B")]
    assert messages.is_user_id("@bob:x.org") and not messages.is_user_id("bob")
