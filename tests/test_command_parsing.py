"""Command parsing, help and the generated reference: pure, no Matrix."""

from __future__ import annotations

import pytest

import bot.commands  # noqa: F401 - registers the commands
from bot.__main__ import main as cli_main
from bot.commands.registry import UsageError, help_text, markdown_reference, parse, registry, split_args


def run(text: str) -> tuple[str, dict]:
    spec, rest = registry.find(split_args(text))
    return spec.name, parse(spec, rest)


def test_two_word_commands_win_over_one_word() -> None:
    assert run("space start Friday music chat")[0] == "space start"
    assert run("tipjar set paypal JaneDoe") == ("tipjar set", {"provider": "paypal", "handle": "JaneDoe"})
    assert run("tipjar @a:b") == ("tipjar", {"user": "@a:b"})


def test_options_anywhere_and_text_keeps_the_rest() -> None:
    name, values = run("space start visibility=following Book club: chapter 3")
    assert values == {"title": "Book club: chapter 3", "visibility": "following"}
    name, values = run("SPACE START Late night VISIBILITY=Invited")
    assert name == "space start" and values["visibility"] == "invited"
    assert run("space start 1+1=2 maths")[1]["title"] == "1+1=2 maths"


def test_optional_space_id_is_taken_only_when_it_looks_like_one() -> None:
    assert run("space approve k3x9pq @bob:x.org")[1] == {"id": "k3x9pq", "user": "@bob:x.org"}
    assert run("space approve @bob:x.org")[1] == {"id": None, "user": "@bob:x.org"}
    assert run("space join k3x9pq")[1] == {"id": "k3x9pq"}


@pytest.mark.parametrize("text, words", [
    ("space start", "Missing title"),
    ("space start x visibility=friends", "visibility= takes one of everyone, following, invited"),
    ("space join", "Missing the space id"),
    ("follow", "Missing <@user>"),
    ("follow @a:b @c:d", "Too many words"),
    ("mod threshold many", "must be a whole number"),
    ("space captions maybe", "is not one of on, off"),
    ("space strat x", "Did you mean “!space start”"),
    ("spacee", "Did you mean “!spaces”"),
    ("space", "needs a subcommand"),
])
def test_bad_input_says_what_is_wrong_and_how(text: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        run(text)
    assert words in str(err.value)


def test_quotes_group_words() -> None:
    assert split_args('follow "Alice Smith"') == ["follow", "Alice Smith"]


def test_help_lists_every_command_and_hides_mod_commands_from_others() -> None:
    plain, rich = help_text(registry, "!")
    for spec in registry.commands.values():
        assert spec.usage("!") in plain
    member_plain, _ = help_text(registry, "!", is_moderator=False)
    assert "!mod ban" not in member_plain and "!space start" in member_plain
    space_only, _ = help_text(registry, "!", "space")
    assert "!space approve" in space_only and "!follow" not in space_only
    with pytest.raises(UsageError):
        help_text(registry, "!", "nonsense")


def _sections_in_docs() -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_help_answers_for_every_section_of_the_docs() -> None:
    sections = _sections_in_docs()
    assert "Scheduling" in sections and "Hosts and co-hosts" in sections
    for section in sections:
        in_section = [s for s in registry.commands.values() if s.group == section]
        for typed in (section, section.lower(), section.lower().split()[0]):
            plain, _ = help_text(registry, "!", typed)
            assert plain.splitlines()[0] == section, typed
            assert all(s.usage("!") in plain for s in in_section), typed
    plain, _ = help_text(registry, "!", "scheduling")
    assert "!space schedule" in plain and "!space start" not in plain


def test_help_for_one_command_shows_its_examples_and_every_time_form() -> None:
    from bot.core.when import WHEN_FORMS

    for typed in ("space schedule", "!space schedule", "schedule"):
        plain, rich = help_text(registry, "!", typed)
        assert plain.splitlines()[1].startswith("  !space schedule <when | title…>"), typed
        assert "e.g. !space schedule tomorrow 18:00 | Friday jam" in plain
        for form, examples in WHEN_FORMS:
            assert f"{form}: {', '.join(examples)}" in plain
        assert "today 18:00" in rich and "!space golive" not in plain


def test_a_command_named_as_its_section_shows_the_section_and_itself_in_full() -> None:
    plain, _ = help_text(registry, "!", "following")
    assert plain.splitlines()[0] == "Following" and "!unfollow" in plain
    plain, _ = help_text(registry, "!", "follow")
    assert plain.splitlines()[0] == "Following" and "    e.g. !follow @alice:example.org" in plain
    plain, _ = help_text(registry, "!", "spaces")
    assert plain.splitlines()[0] == "Spaces" and "    e.g. !space join k3x9pq" not in plain


def test_hints_carry_the_prefix() -> None:
    with pytest.raises(UsageError) as err:
        registry.find(["spce", "start"], "?")
    assert "Did you mean “?space start”" in str(err.value) and "“space start”" not in str(err.value)
    with pytest.raises(UsageError) as err:
        registry.find(["space", "strat"], "?")
    assert "Did you mean “?space start”" in str(err.value) and "Type ?help space" in str(err.value)
    with pytest.raises(UsageError) as err:
        help_text(registry, "?", "sched")
    assert "scheduling" in str(err.value) and "?help space start" in str(err.value)


def test_docs_commands_md_is_up_to_date() -> None:
    assert cli_main(["docs", "--check"]) == 0, "run: python -m bot docs"
    assert "## Spaces" in markdown_reference(registry)
