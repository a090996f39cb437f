"""What a hostile room member can type: bounded, linear, answered with a short error.

Pure tests (no Matrix): each parser over user text is fed adversarial input of a megabyte
or more. A quadratic or worse parser would not finish inside the per-test timeout (the
pytest-timeout marker), so these prove linear work without timing anything. The
hypothesis test is a standing fuzz of the command layer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bot.commands  # noqa: F401 - registers the commands
from bot.commands.announce import parse_spec
from bot.commands.registry import UsageError, parse, registry, split_args
from bot.core.bounds import INT_MAX, MAX_ID_LENGTH
from bot.core.followers_csv import ImportError_, parse_counts
from bot.core.when import WhenError, parse_recurrence, parse_when
from bot.matrix.messages import command_text, is_room_alias, is_user_id, markdown_to_html, pills_in
from bot.redact import HIDDEN, RedactingFilter, redact

MEGABYTE = 1 << 20
ANCHOR = '<a href="https://matrix.to/#/@mallory:example.org">'


def run(text: str) -> dict:
    spec, rest = registry.find(split_args(text))
    return parse(spec, rest)


# ---------------------------------------------------------------- linear work on a megabyte


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body", [
    ANCHOR * (MEGABYTE // len(ANCHOR)),                       # unclosed anchors (was quadratic)
    "<a " * (MEGABYTE // 3),                                  # tags that never close
    '<a href="' * (MEGABYTE // 9) + ">",                      # quotes that never close
    (ANCHOR + "x</a>") * (MEGABYTE // (len(ANCHOR) + 5)),     # a megabyte of real pills
])
def test_pills_scan_is_linear(body: str) -> None:
    found = pills_in(body[:60_000])  # what the bot scans (a body over the cap is skipped)
    assert all(uid == "@mallory:example.org" for uid, _ in found)
    assert pills_in(body) == []  # over the cap: not scanned at all


def test_pills_are_found_in_ordinary_bodies() -> None:
    body = ('<a href="https://matrix.to/#/@alice:example.org">Alice <b>L.</b></a> and '
            "<a href='https://matrix.to/#/%40bob%3Aexample.org?via=x'>Bob</a> <abbr>x</abbr> "
            '<a href="https://example.org/">not a pill</a>')
    assert pills_in(body) == [("@alice:example.org", "Alice L."), ("@bob:example.org", "Bob")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("filler", [" ", "x", "at ", "| ", "every "])
def test_announce_spec_is_linear(filler: str) -> None:
    spec = "#a:b at" + filler * (MEGABYTE // len(filler)) + "x"
    assert parse_spec(spec) is None or parse_spec(spec)["room"] == "#a:b"
    assert parse_spec("#a:b at friday 17:00 | Space tonight!") == {
        "room": "#a:b", "mode": "at", "when": "friday 17:00", "text": "Space tonight!"}
    assert parse_spec("#a:b every monday 09:00 Europe/Berlin | **Weekly** | sync")["text"] == "**Weekly** | sync"
    assert parse_spec("#a:b sometime | x") is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("filler", [" ", "1", "1:", "in ", "and ", "utc+", "12:00 ", "2026-", ",", "*/", "1-"])
def test_time_parsers_are_linear(filler: str) -> None:
    text = filler * (MEGABYTE // 4 // len(filler)) + "x"
    now, tz = datetime(2026, 11, 25, 12, tzinfo=UTC), ZoneInfo("UTC")
    for parse_it in (lambda: parse_when(text, now, tz), lambda: parse_recurrence("every " + text, tz),
                     lambda: parse_recurrence("cron " + text, tz)):
        with pytest.raises(WhenError):
            parse_it()


@pytest.mark.timeout(60)
def test_splitting_and_command_text_are_linear() -> None:
    text = '"' + "a b " * (MEGABYTE // 4)
    assert len(split_args(text)) == MEGABYTE // 4 * 2
    assert command_text({"body": "> x\n" * (MEGABYTE // 4) + "\n!ping", "m.relates_to": {
        "m.in_reply_to": {"event_id": "$e"}}}) == "!ping"


# ---------------------------------------------------------------- bounded values


def test_user_ids_and_aliases_have_the_spec_length_limit() -> None:
    local = "x" * (MAX_ID_LENGTH - len("@:example.org"))
    assert is_user_id(f"@{local}:example.org")
    assert not is_user_id(f"@{local}x:example.org")
    assert not is_user_id("@" + "x" * 17_000 + ":example.org")
    assert not is_room_alias("#" + "x" * 300 + ":example.org")


@pytest.mark.parametrize("number", ["99999999999999999999", str(INT_MAX + 1), "-1", "1e9", "０x"])
def test_whole_numbers_outside_the_column_range_are_refused(number: str) -> None:
    with pytest.raises(UsageError) as err:
        run(f"announce cancel {number}")
    assert f"from 0 to {INT_MAX}" in str(err.value) and len(str(err.value)) < 300
    assert run(f"announce cancel {INT_MAX}") == {"number": INT_MAX}


def test_follower_counts_outside_the_column_range_are_refused() -> None:
    with pytest.raises(ImportError_, match="not a whole number from 0 to 2147483647"):
        parse_counts("@a:example.org, 99999999999999999999")
    with pytest.raises(ImportError_, match="not between 0 and 2147483647"):
        parse_counts("@a:example.org, 2147483648")
    assert parse_counts("@a:example.org, 2147483647") == {"@a:example.org": 2147483647}


@pytest.mark.parametrize("text", [
    "x" * 32_000,                                   # an unknown command
    "space start x visibility=" + "y" * 32_000,     # a bad option value
    "space join k3x9pq " + "z" * 32_000,             # too many words
    "mod audit " + "9" * 32_000,                     # a number that is not one
    "space captions " + "w" * 32_000,                # not one of on/off
])
def test_errors_echo_only_a_little_of_what_was_typed(text: str) -> None:
    with pytest.raises(UsageError) as err:
        run(text)
    assert len(str(err.value)) < 600


# ---------------------------------------------------------------- announcements' HTML


@pytest.mark.parametrize("markdown, banned", [
    ("<script>alert(1)</script> hi", "<script"),
    ('<img src="x" onerror="alert(1)">', "onerror"),
    ("[click](javascript:alert(1))", "javascript:"),
    ('<a href="https://ok.example" onclick="steal()">ok</a>', "onclick"),
    ("![tracker](https://evil.example/pixel.png)", "evil.example"),
    ("<iframe src='https://evil.example'></iframe>", "iframe"),
    ("<style>body{display:none}</style>", "display:none"),
])
def test_announcement_html_is_the_matrix_subset(markdown: str, banned: str) -> None:
    assert banned not in markdown_to_html(markdown)


def test_announcement_markdown_still_renders() -> None:
    out = markdown_to_html("**Space tonight** at 8 — [details](https://example.org/e)\n\n- one\n- two")
    assert "<strong>Space tonight</strong>" in out and 'href="https://example.org/e"' in out
    assert "<li>one</li>" in out and "mxc://a/b" in markdown_to_html("![x](mxc://a/b)")


# ---------------------------------------------------------------- secrets in logs


def test_secrets_are_blanked_in_messages_and_tracebacks(caplog) -> None:
    secret = "s3cret-shared-value-123"
    assert HIDDEN in redact("headers {'Authorization': 'Bearer abc.def'}")
    assert "abc.def" not in redact("headers {'Authorization': 'Bearer abc.def'}")
    assert "tok123" not in redact("GET /spaces/x?token=tok123&y=1") and "y=1" in redact("GET /?token=t&y=1")
    logger = logging.getLogger("tests.redact")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter([secret]))
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %r", {"Authorization": f"Bearer {secret}"})
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 2 and all(secret not in line for line in seen)
    assert "RuntimeError: refused [redacted]" in seen[1]


# ---------------------------------------------------------------- fuzz of the command layer


words = st.sampled_from(["space", "start", "join", "approve", "announce", "cancel", "mod", "audit", "tipjar",
                         "set", "follow", "help", "at", "every", "|", "=", "visibility=", "as=", "k3x9pq",
                         "@a:b", "#r:s", "99999999999999999999", "-1", '"', "\u202e", "👏", "x" * 300])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), st.lists(words, max_size=12).map(" ".join)))
def test_any_text_gets_a_command_or_a_short_usage_error(text: str) -> None:
    tokens = split_args(text)
    if not tokens:
        return
    try:
        spec, rest = registry.find(tokens)
        values = parse(spec, rest)
    except UsageError as exc:
        assert 0 < len(str(exc)) < 1500
        return
    for p in spec.params:
        if p.kind == "int" and values.get(p.name) is not None:
            assert 0 <= values[p.name] <= INT_MAX


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<a href="https://matrix.to/#/@x:y">\'</a>b ')), max_size=600))
def test_any_formatted_body_gives_well_formed_pills(body: str) -> None:
    for user_id, label in pills_in(body):
        assert user_id.startswith("@") and isinstance(label, str)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_announcement_spec_parses_or_is_refused(spec: str) -> None:
    parsed = parse_spec(spec)
    if parsed is not None:
        assert parsed["mode"].lower() in ("at", "every", "cron") and parsed["text"] and "|" not in parsed["when"]
