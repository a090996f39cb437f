"""Tests for bot/config.py: loading, defaults, and one-line errors naming the key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import (
    ConfigError,
    Settings,
    all_keys,
    default_settings,
    load_settings,
    settings_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
DOCS = ROOT / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(data: dict, source: str = "config.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, source)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return info.value


# --- defaults and the example file ---------------------------------------------------


def test_example_file_loads_and_equals_defaults() -> None:
    assert load_settings(EXAMPLE) == default_settings()


def test_example_file_sets_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    written = [f"{section}.{key}" for section, table in data.items() for key in table]
    assert sorted(written) == sorted(all_keys())


def test_example_file_documents_every_key_with_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[index - 1].startswith("#"), f"no comment above {line!r}"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings == default_settings() == Settings()
    assert settings.source == str(tmp_path / "config.toml")


def test_defaults_match_the_spec() -> None:
    s = default_settings()
    assert s.matrix.homeserver == ""
    assert s.matrix.user_id == "@chorus:localhost"
    assert s.matrix.allowed_homeservers == ()
    assert s.matrix.sync_timeout_ms == 30000
    assert s.bot.command_prefix == "!"
    assert s.database.url == "sqlite:///var/chorus.db"
    assert s.bridge.mode == "embedded"
    assert (s.bridge.listen_host, s.bridge.listen_port) == ("127.0.0.1", 8089)
    assert s.bridge.token_ttl_seconds == 3600
    assert s.hosting.min_followers == 600
    assert (s.spaces.max_speakers, s.spaces.max_cohosts) == (11, 2)
    assert s.spaces.default_visibility == "everyone"
    assert s.spaces.record_by_default is False
    assert s.scheduling.max_days_ahead == 14
    assert s.scheduling.early_reminder_minutes == 15
    assert s.scheduling.misfire_grace_minutes == 30
    assert s.scheduling.default_timezone == "UTC"
    assert s.scheduling.notify_batch_size == 20
    assert s.scheduling.notify_interval_seconds == 1.0
    assert s.moderation.moderators == ()
    assert s.announcements.rooms == ()
    assert s.captions.engine == "pocketsphinx"
    assert s.captions.language == "en-US"
    assert (s.logging.level, s.logging.format, s.logging.file) == ("INFO", "text", "")
    assert s.local.port == 8008
    assert s.local.server_name == "localhost"
    assert s.local.demo_users == ("alice", "bob")
    assert s.local.demo_password == "chorus-demo"
    assert s.local.demo_moderators == () and s.local.moderators_of_demo == ("alice",)
    carol = settings_from_dict({"local": {"demo_users": ["carol", "dan"]}}).local
    assert carol.moderators_of_demo == ("carol",)
    assert settings_from_dict({"local": {"demo_users": []}}).local.moderators_of_demo == ()


def test_settings_are_frozen_and_hashable() -> None:
    s = default_settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.spaces.max_speakers = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.hosting = s.hosting  # type: ignore[misc]
    assert hash(s) == hash(default_settings())


def test_values_are_read_and_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [matrix]
        homeserver = "https://matrix.example.org/"
        user_id = "@spaces:example.org"
        access_token = "syt_abc"
        allowed_homeservers = ["example.org", "other.example:8448"]
        [spaces]
        max_speakers = 5
        default_visibility = "following"
        record_by_default = true
        [scheduling]
        notify_interval_seconds = 2
        default_timezone = "Europe/Berlin"
        [moderation]
        moderators = ["@admin:example.org", "@mod:other.example"]
        [announcements]
        rooms = ["!abc:example.org", "#spaces:example.org", "!v12roomidwithoutserver"]
        [logging]
        level = "debug"
        """,
    )
    s = load_settings(path)
    assert s.matrix.homeserver == "https://matrix.example.org"
    assert s.matrix.allowed_homeservers == ("example.org", "other.example:8448")
    assert s.matrix.server_name == "example.org"
    assert s.spaces.max_speakers == 5
    assert s.spaces.default_visibility == "following"
    assert s.spaces.record_by_default is True
    interval = s.scheduling.notify_interval_seconds
    assert interval == 2.0 and isinstance(interval, float)
    assert str(s.scheduling.tzinfo) == "Europe/Berlin"
    assert s.moderation.moderators == ("@admin:example.org", "@mod:other.example")
    assert s.announcements.rooms[1] == "#spaces:example.org"
    assert s.logging.level == "DEBUG"
    assert s != default_settings()


# --- file-level errors ----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert str(info.value) == f"config file not found: {missing} (copy config.example.toml to start)"


def test_missing_relative_path_is_shown_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "config.toml"))):
        load_settings("config.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[spaces]\nmax_speakers = 5\nmax_cohosts = = 2\n", "line 3, column"),
        ("[spaces\n", "line 1, column"),
        ("[spaces]\nmax_speakers = 5\nmax_speakers = 6\n", "line 3"),
        ("[hosting]\nmin_followers =", "line 2 (end of file)"),
    ],
)
def test_toml_syntax_error_names_the_line(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error at {where}")
    assert "\n" not in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[bot]\ndisplay_name = "\xff"\n')
    with pytest.raises(ConfigError, match=r"not valid UTF-8 at line 2"):
        load_settings(path)


def test_error_from_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosting]\nmin_followers = "six hundred"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f'{path}: hosting.min_followers: expected an integer ≥ 0, got "six hundred" (string)'
    assert info.value.key == "hosting.min_followers"
    assert info.value.source == str(path)


# --- unknown sections and keys --------------------------------------------------------


def test_unknown_key_suggests_the_right_one() -> None:
    err = error_for({"spaces": {"max_speakerz": 3}})
    assert str(err) == "config.toml: unknown key spaces.max_speakerz (did you mean spaces.max_speakers?)"
    assert err.key == "spaces.max_speakerz"


def test_unknown_key_from_another_section_is_pointed_there() -> None:
    err = error_for({"bot": {"homeserver": "https://x.org"}})
    assert "unknown key bot.homeserver (did you mean matrix.homeserver?)" in str(err)


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    err = error_for({"spaces": {"colour": "blue"}})
    assert str(err) == "config.toml: unknown key spaces.colour"


def test_unknown_section() -> None:
    err = error_for({"spacez": {"max_speakers": 3}})
    assert str(err) == "config.toml: unknown section [spacez] (did you mean [spaces]?)"
    assert str(error_for({"plugins": {}})) == "config.toml: unknown section [plugins]"


def test_key_outside_any_section() -> None:
    err = error_for({"homeserver": "https://x.org"})
    assert "unknown key homeserver (did you mean matrix.homeserver?" in str(err)


def test_section_that_is_not_a_table() -> None:
    err = error_for({"spaces": 11})
    assert str(err) == "config.toml: spaces: expected a table (a [spaces] section), got 11 (integer)"


def test_top_level_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="expected a table at the top level"):
        settings_from_dict([], "x")  # type: ignore[arg-type]


# --- wrong types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "got"),
    [
        ({"hosting": {"min_followers": "six hundred"}}, "hosting.min_followers", '"six hundred" (string)'),
        ({"hosting": {"min_followers": True}}, "hosting.min_followers", "true (boolean)"),
        ({"spaces": {"max_speakers": False}}, "spaces.max_speakers", "false (boolean)"),
        ({"spaces": {"max_speakers": 5.0}}, "spaces.max_speakers", "5.0 (float)"),
        ({"bridge": {"listen_port": "8089"}}, "bridge.listen_port", '"8089" (string)'),
        ({"moderation": {"moderators": 5}}, "moderation.moderators", "5 (integer)"),
        ({"moderation": {"moderators": "@a:b.org"}}, "moderation.moderators", '"@a:b.org" (string)'),
        ({"announcements": {"rooms": 1}}, "announcements.rooms", "1 (integer)"),
        ({"local": {"demo_users": {"a": 1}}}, "local.demo_users", "{a = 1} (table)"),
        ({"spaces": {"record_by_default": 1}}, "spaces.record_by_default", "1 (integer)"),
        ({"spaces": {"record_by_default": "yes"}}, "spaces.record_by_default", '"yes" (string)'),
        ({"bot": {"display_name": 7}}, "bot.display_name", "7 (integer)"),
        ({"bot": {"command_burst": 2.5}}, "bot.command_burst", "2.5 (float)"),
        ({"bot": {"commands_per_minute": "30"}}, "bot.commands_per_minute", '"30" (string)'),
        ({"bot": {"metrics_listen": 9108}}, "bot.metrics_listen", "9108 (integer)"),
        ({"scheduling": {"notify_interval_seconds": True}}, "scheduling.notify_interval_seconds", "true (boolean)"),
        ({"scheduling": {"notify_interval_seconds": "1s"}}, "scheduling.notify_interval_seconds", '"1s" (string)'),
        ({"logging": {"file": ["a"]}}, "logging.file", '["a"] (array)'),
        ({"matrix": {"sync_timeout_ms": [30000]}}, "matrix.sync_timeout_ms", "[30000] (array)"),
    ],
)
def test_wrong_type(data: dict, key: str, got: str) -> None:
    err = error_for(data)
    assert err.key == key
    assert str(err).startswith(f"config.toml: {key}: expected ")
    assert str(err).endswith(f", got {got}")


def test_bool_is_not_an_integer_from_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[spaces]\nmax_speakers = true\n")
    with pytest.raises(
        ConfigError, match=r"spaces\.max_speakers: expected an integer from 1 to 100, got true \(boolean\)"
    ):
        load_settings(path)


def test_long_values_are_shortened_in_messages() -> None:
    err = error_for({"hosting": {"min_followers": "x" * 500}})
    assert len(str(err)) < 150
    assert "…" in str(err)


# --- out of range and bad values ------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("hosting", "min_followers", -1, "an integer ≥ 0"),
        ("spaces", "max_speakers", 0, "an integer from 1 to 100"),
        ("spaces", "max_speakers", 101, "an integer from 1 to 100"),
        ("spaces", "max_cohosts", -1, "an integer from 0 to 10"),
        ("spaces", "max_cohosts", 11, "an integer from 0 to 10"),
        ("scheduling", "max_days_ahead", 0, "an integer from 1 to 365"),
        ("scheduling", "max_days_ahead", 366, "an integer from 1 to 365"),
        ("scheduling", "early_reminder_minutes", -5, "an integer from 0 to 1440"),
        ("scheduling", "early_reminder_minutes", 1441, "an integer from 0 to 1440"),
        ("scheduling", "misfire_grace_minutes", 1441, "an integer from 0 to 1440"),
        ("scheduling", "notify_batch_size", 0, "an integer ≥ 1"),
        ("scheduling", "notify_interval_seconds", -0.5, "a number ≥ 0"),
        ("scheduling", "notify_interval_seconds", float("inf"), "a number ≥ 0"),
        ("scheduling", "notify_interval_seconds", float("nan"), "a number ≥ 0"),
        ("matrix", "sync_timeout_ms", 999, "an integer ≥ 1000"),
        ("bridge", "listen_port", 65536, "an integer from 0 to 65535"),
        ("bridge", "listen_port", -1, "an integer from 0 to 65535"),
        ("bridge", "token_ttl_seconds", 0, "an integer ≥ 1"),
        ("bridge", "listener_queue_frames", 1, "an integer from 2 to 3000"),
        ("bridge", "max_streams_per_address", -1, "an integer ≥ 0"),
        ("bridge", "ogg_page_ms", 0, "an integer from 20 to 1000"),
        ("bridge", "ogg_page_ms", 1020, "an integer from 20 to 1000"),
        ("bridge", "listener_bundle_ms", 0, "an integer from 20 to 500"),
        ("bridge", "listener_bundle_ms", 520, "an integer from 20 to 500"),
        ("bridge", "openid_timeout_seconds", 0.05, "a number from 0.1 to 300"),
        ("bridge", "openid_timeout_seconds", 301, "a number from 0.1 to 300"),
        ("local", "port", 70000, "an integer from 0 to 65535"),
    ],
)
def test_out_of_range(section: str, key: str, value: object, expected: str) -> None:
    err = error_for({section: {key: value}})
    assert err.key == f"{section}.{key}"
    assert str(err).startswith(f"config.toml: {section}.{key}: expected {expected}, got ")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("hosting", "min_followers", 0),
        ("spaces", "max_speakers", 1),
        ("spaces", "max_speakers", 100),
        ("scheduling", "early_reminder_minutes", 0),
        ("scheduling", "max_days_ahead", 365),
        ("scheduling", "notify_interval_seconds", 0),
        ("bridge", "listen_port", 0),
        ("bridge", "listen_port", 65535),
        ("bridge", "max_streams_per_address", 0),
        ("bridge", "openid_timeout_seconds", 300),
        ("bridge", "listener_bundle_ms", 20),
        ("bridge", "listener_bundle_ms", 500),
        ("matrix", "sync_timeout_ms", 1000),
    ],
)
def test_boundaries_are_accepted(section: str, key: str, value: object) -> None:
    data: dict = {"spaces": {"max_cohosts": 0}}
    data.setdefault(section, {})[key] = value
    settings = settings_from_dict(data)
    assert getattr(getattr(settings, section), key) == value


@pytest.mark.parametrize(("key", "value"), [
    ("ogg_page_ms", 30), ("ogg_page_ms", 110), ("ogg_page_ms", 999),
    ("listener_bundle_ms", 30), ("listener_bundle_ms", 110), ("listener_bundle_ms", 490)])
def test_frame_durations_are_multiples_of_20(key: str, value: int) -> None:
    err = error_for({"bridge": {key: value}})
    assert err.key == f"bridge.{key}"
    assert f"expected a multiple of 20 (ms), got {value}" in str(err)


def test_openid_homeservers_are_a_table_of_server_names_to_urls(tmp_path: Path) -> None:
    path = write(tmp_path, '[bridge.openid_homeservers]\n"example.org" = "https://matrix.example.org/"\n'
                           '"chat.example.net:8448" = "http://10.0.0.5:8008"\n')
    assert load_settings(path).bridge.openid_homeservers == {
        "chat.example.net:8448": "http://10.0.0.5:8008", "example.org": "https://matrix.example.org"}
    assert default_settings().bridge.openid_homeservers == {}


@pytest.mark.parametrize(("value", "key", "expected"), [
    ({"not a name": "https://x.org"}, 'bridge.openid_homeservers."not a name"', "a Matrix server name"),
    ({"example.org": "ftp://x.org"}, 'bridge.openid_homeservers."example.org"', "an http:// or https:// URL"),
    ({"example.org": "https://x.org/?a=1"}, 'bridge.openid_homeservers."example.org"', "no user, query"),
    ({"example.org": 8008}, 'bridge.openid_homeservers."example.org"', "an http:// or https:// URL"),
    ("https://x.org", "bridge.openid_homeservers", "a table of server names to URLs"),
])
def test_bad_openid_homeservers_name_the_entry(value: object, key: str, expected: str) -> None:
    err = error_for({"bridge": {"openid_homeservers": value}})
    assert err.key == key
    assert str(err).startswith(f"config.toml: {key}: ") and expected in str(err)


def test_cohosts_must_be_fewer_than_speakers() -> None:
    err = error_for({"spaces": {"max_speakers": 2}})  # default max_cohosts = 2
    assert err.key == "spaces.max_cohosts"
    assert "fewer than spaces.max_speakers (2" in str(err)
    assert settings_from_dict({"spaces": {"max_speakers": 3}}).spaces.max_cohosts == 2


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"spaces": {"default_visibility": "public"}}, "spaces.default_visibility"),
        ({"spaces": {"default_visibility": ""}}, "spaces.default_visibility"),
        ({"bridge": {"mode": "cloud"}}, "bridge.mode"),
        ({"captions": {"engine": "whisper"}}, "captions.engine"),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"logging": {"level": "verbose"}}, "logging.level"),
    ],
)
def test_bad_choice_lists_the_choices(data: dict, key: str) -> None:
    err = error_for(data)
    assert err.key == key
    assert f"{key}: expected one of " in str(err)


def test_bad_visibility_message() -> None:
    err = error_for({"spaces": {"default_visibility": "public"}})
    assert str(err) == (
        "config.toml: spaces.default_visibility: expected one of "
        '"everyone", "following", "invited", got "public" (string)'
    )


def test_visibility_suggests_lower_case() -> None:
    assert "(did you mean everyone?)" in str(error_for({"spaces": {"default_visibility": "Everyone"}}))


@pytest.mark.parametrize("level", ["debug", "Warning", "CRITICAL", "error"])
def test_logging_level_is_case_insensitive(level: str) -> None:
    assert settings_from_dict({"logging": {"level": level}}).logging.level == level.upper()


def test_logging_level_suggestion() -> None:
    assert "(did you mean WARNING?)" in str(error_for({"logging": {"level": "warn"}}))


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Berln", "", "America", "../etc/passwd", "/UTC"])
def test_bad_timezone(zone: str) -> None:
    err = error_for({"scheduling": {"default_timezone": zone}})
    assert err.key == "scheduling.default_timezone"
    assert "expected an IANA time zone" in str(err)


def test_timezone_suggestion() -> None:
    err = error_for({"scheduling": {"default_timezone": "Europe/Berln"}})
    assert str(err).endswith("(did you mean Europe/Berlin?)")


@pytest.mark.parametrize("value", ["bob", "@bob", "bob:example.org", "@:example.org", "@bob:", "@bo b:example.org", 42])
def test_bad_user_id_in_moderators(value: object) -> None:
    err = error_for({"moderation": {"moderators": ["@ok:example.org", value]}})
    assert err.key == "moderation.moderators[1]"
    assert str(err).startswith("config.toml: moderation.moderators[1]: expected a Matrix user id")


def test_duplicate_moderator() -> None:
    err = error_for({"moderation": {"moderators": ["@a:example.org", "@a:example.org"]}})
    assert err.key == "moderation.moderators[1]"
    assert "listed twice" in str(err)


def test_bad_bot_user_id() -> None:
    err = error_for({"matrix": {"user_id": "chorus"}})
    assert err.key == "matrix.user_id"


@pytest.mark.parametrize(
    "value", ["general", "#general", "!abc:", "@alice:example.org", "https://matrix.to/#/#a:b", ""]
)
def test_bad_room_id(value: str) -> None:
    err = error_for({"announcements": {"rooms": [value]}})
    assert err.key == "announcements.rooms[0]"
    assert "expected a room id" in str(err)


@pytest.mark.parametrize("value", ["!abc:example.org", "#spaces:example.org", "!abc:[::1]:8448", "#café:example.org"])
def test_good_room_ids(value: str) -> None:
    assert settings_from_dict({"announcements": {"rooms": [value]}}).announcements.rooms == (value,)


@pytest.mark.parametrize("value", ["nonsense", "", "sqllite:///x.db", "://"])
def test_bad_database_url(value: str) -> None:
    err = error_for({"database": {"url": value}})
    assert err.key == "database.url"


def test_database_url_typo_suggests_dialect() -> None:
    err = error_for({"database": {"url": "sqllite:///var/chorus.db"}})
    assert "(did you mean sqlite?)" in str(err)


@pytest.mark.parametrize(
    "value",
    ["sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://chorus:pw@db/chorus", "postgresql://db/chorus"],
)
def test_good_database_urls(value: str) -> None:
    assert settings_from_dict({"database": {"url": value}}).database.url == value


def test_database_password_is_not_echoed() -> None:
    err = error_for({"database": {"url": "sqllite://chorus:hunter2@db/chorus"}})
    assert "hunter2" not in str(err)
    settings = settings_from_dict({"database": {"url": "postgresql://chorus:hunter2@db/chorus"}})
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("matrix", "homeserver", "matrix.example.org"),
        ("matrix", "homeserver", "ftp://matrix.example.org"),
        ("matrix", "homeserver", "https://"),
        ("matrix", "homeserver", "https://example.org:99999"),
        ("bridge", "public_url", "example.org/listen"),
        ("bridge", "control_url", "ws://bridge:8089"),
        ("bridge", "redis_url", "http://redis:6379"),
        ("bridge", "icecast_url", "http://source:pw@ice:8000/x"),
        ("bridge", "icecast_listen_url", "radio.example.org/chorus"),
    ],
)
def test_bad_urls(section: str, key: str, value: str) -> None:
    err = error_for({section: {key: value}})
    assert err.key == f"{section}.{key}"
    assert "URL" in str(err)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", 'expected 1 to 3 characters without spaces, got "" (string)'),
        ("!!!!", "expected 1 to 3 characters"),
        ("! ", "expected 1 to 3 characters"),
        (1, "expected 1 to 3 characters"),
    ],
)
def test_bad_command_prefix(value: object, message: str) -> None:
    err = error_for({"bot": {"command_prefix": value}})
    assert str(err).startswith(f"config.toml: bot.command_prefix: {message}")


@pytest.mark.parametrize("prefix", ["!", "?", "!c", "cb!"])
def test_good_command_prefix(prefix: str) -> None:
    assert settings_from_dict({"bot": {"command_prefix": prefix}}).bot.command_prefix == prefix


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"matrix": {"allowed_homeservers": ["exa mple.org"]}}, "matrix.allowed_homeservers[0]"),
        ({"matrix": {"allowed_homeservers": ["https://example.org"]}}, "matrix.allowed_homeservers[0]"),
        ({"local": {"server_name": ""}}, "local.server_name"),
        ({"local": {"demo_users": ["alice", "Bob"]}}, "local.demo_users[1]"),
        ({"local": {"demo_users": ["@alice:localhost"]}}, "local.demo_users[0]"),
        ({"local": {"demo_users": ["alice", "alice"]}}, "local.demo_users[1]"),
        ({"local": {"demo_password": ""}}, "local.demo_password"),
        ({"local": {"demo_moderators": ["Alice"]}}, "local.demo_moderators[0]"),
        ({"local": {"demo_moderators": ["carol"]}}, "local.demo_moderators"),
        ({"local": {"demo_users": ["bob"], "demo_moderators": ["alice"]}}, "local.demo_moderators"),
        ({"local": {"data_dir": ""}}, "local.data_dir"),
        ({"bot": {"display_name": ""}}, "bot.display_name"),
        ({"bot": {"command_burst": 0}}, "bot.command_burst"),
        ({"bot": {"commands_per_minute": 0}}, "bot.commands_per_minute"),
        ({"bot": {"metrics_listen": "9108"}}, "bot.metrics_listen"),
        ({"bot": {"metrics_listen": "127.0.0.1:70000"}}, "bot.metrics_listen"),
        ({"bot": {"metrics_listen": "http://127.0.0.1:9108"}}, "bot.metrics_listen"),
        ({"bridge": {"metrics_listen": "localhost"}}, "bridge.metrics_listen"),
        ({"captions": {"language": "english please"}}, "captions.language"),
        ({"captions": {"engine": "vosk"}}, "captions.model_path"),
        ({"bridge": {"recordings_dir": ""}}, "bridge.recordings_dir"),
    ],
)
def test_other_bad_values(data: dict, key: str) -> None:
    assert error_for(data).key == key


# --- the bridge -----------------------------------------------------------------------

SECRET = "s" * 32


def test_remote_bridge_needs_control_url() -> None:
    err = error_for({"bridge": {"mode": "remote", "shared_secret": SECRET}})
    assert err.key == "bridge.control_url"
    assert 'required when bridge.mode = "remote"' in str(err)


def test_remote_bridge_needs_secret() -> None:
    err = error_for({"bridge": {"mode": "remote", "control_url": "http://bridge:8089"}})
    assert err.key == "bridge.shared_secret"
    assert 'required when bridge.mode = "remote"' in str(err)


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_short_secret(mode: str) -> None:
    data = {"mode": mode, "control_url": "http://bridge:8089", "shared_secret": "tooshort-hunter2"}
    err = error_for({"bridge": data})
    assert err.key == "bridge.shared_secret"
    assert "at least 32 characters, got 16 characters" in str(err)
    assert "hunter2" not in str(err)


def test_remote_bridge_ok() -> None:
    s = settings_from_dict(
        {"bridge": {"mode": "remote", "control_url": "http://bridge:8089/", "shared_secret": SECRET}}
    )
    assert s.bridge.control_url == "http://bridge:8089"
    assert SECRET not in repr(s)


def test_embedded_bridge_allows_empty_secret() -> None:
    assert settings_from_dict({"bridge": {"mode": "embedded"}}).bridge.shared_secret == ""


@pytest.mark.parametrize(
    ("bridge", "url"),
    [
        ({}, "http://127.0.0.1:8089"),
        ({"listen_host": "0.0.0.0", "listen_port": 9000}, "http://localhost:9000"),
        ({"listen_host": "::1"}, "http://[::1]:8089"),
        ({"public_url": "https://spaces.example.org/"}, "https://spaces.example.org"),
    ],
)
def test_bridge_public_url(bridge: dict, url: str) -> None:
    assert settings_from_dict({"bridge": bridge}).bridge_public_url == url


def test_bridge_public_url_with_bound_port() -> None:
    s = settings_from_dict({"bridge": {"listen_port": 0}})
    assert s.bridge.resolved_public_url(43210) == "http://127.0.0.1:43210"


# --- secrets, homeserver checks, helpers ----------------------------------------------


def test_secrets_are_not_echoed_or_shown() -> None:
    err = error_for({"matrix": {"password": 123456}})
    assert err.key == "matrix.password"
    assert "123456" not in str(err)
    s = settings_from_dict({"matrix": {"password": "hunter2", "access_token": "syt_secret"}})
    assert "hunter2" not in repr(s) and "syt_secret" not in repr(s)
    assert s.matrix.password == "hunter2"


def test_remote_homeserver_needs_password_or_token() -> None:
    s = settings_from_dict({"matrix": {"homeserver": "https://matrix.example.org"}}, "config.toml")
    with pytest.raises(ConfigError) as info:
        s.check_for_remote_homeserver()
    message = str(info.value)
    assert message.startswith("config.toml: matrix.password: ")
    assert "matrix.access_token" in message
    assert "\n" not in message


@pytest.mark.parametrize("login", [{"password": "pw"}, {"access_token": "syt_x"}])
def test_remote_homeserver_with_login_is_fine(login: dict) -> None:
    s = settings_from_dict({"matrix": {"homeserver": "https://matrix.example.org", **login}})
    s.check_for_remote_homeserver()


def test_local_mode_needs_no_login() -> None:
    default_settings().check_for_remote_homeserver()


def test_is_moderator() -> None:
    s = settings_from_dict({"moderation": {"moderators": ["@admin:example.org"]}})
    assert s.is_moderator("@admin:example.org")
    assert not s.is_moderator("@Admin:example.org")
    assert not s.is_moderator("@alice:example.org")
    assert not default_settings().is_moderator("@admin:example.org")


def test_accepts_invites_from() -> None:
    s = settings_from_dict({"matrix": {"allowed_homeservers": ["example.org"]}})
    assert s.matrix.accepts_invites_from("@a:example.org")
    assert not s.matrix.accepts_invites_from("@a:evil.org")
    assert default_settings().matrix.accepts_invites_from("@a:anywhere.org")


def test_replace_validates_too() -> None:
    s = default_settings()
    with pytest.raises(ConfigError, match=r"^spaces\.max_speakers: expected an integer"):
        dataclasses.replace(s.spaces, max_speakers=0)
    assert dataclasses.replace(s.spaces, max_speakers=20).max_speakers == 20


def test_first_error_in_file_order_wins() -> None:
    err = error_for({"spaces": {"max_speakers": 0}, "hosting": {"min_followers": -1}})
    assert err.key == "spaces.max_speakers"


# --- properties -----------------------------------------------------------------------


@given(st.integers())
def test_integer_range_is_enforced_exactly(n: int) -> None:
    try:
        settings = settings_from_dict({"spaces": {"max_speakers": n, "max_cohosts": 0}})
    except ConfigError as err:
        assert not 1 <= n <= 100
        assert err.key == "spaces.max_speakers"
    else:
        assert 1 <= n <= 100 and settings.spaces.max_speakers == n


@given(st.text(max_size=30))
def test_any_string_for_an_integer_is_one_clean_line(text: str) -> None:
    err = error_for({"hosting": {"min_followers": text}})
    assert err.key == "hosting.min_followers"
    assert "\n" not in str(err) and "\r" not in str(err)


# --- the documentation ----------------------------------------------------------------


def test_docs_table_lists_every_key_with_its_default() -> None:
    from bot.config import _render

    documented: dict[str, str] = {}
    section = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## \[(\w+)\]$", line)
        if heading:
            section = heading[1]
        row = re.match(r"^\| `(\w+)` \| [^|]+ \| `([^`]*)` \|", line)
        if row and section:
            documented[f"{section}.{row[1]}"] = row[2]
    assert sorted(documented) == sorted(all_keys())
    defaults = default_settings()
    for dotted, shown in documented.items():
        section_name, key = dotted.split(".")
        assert shown == _render(getattr(getattr(defaults, section_name), key)), dotted


def test_the_bot_and_the_bridge_read_one_file_alike(tmp_path: Path) -> None:
    """Every key the bridge reads, set to something other than its default in one file:
    bot/config.py and bridge/settings.py (python -m bridge) come out with the same values,
    because both take the key from bridge/settings.py's KEYS."""
    from bridge.settings import KEYS
    from bridge.settings import load_settings as load_bridge_settings

    text = f"""
[bridge]
mode = "remote"
control_url = "http://bridge.internal:8089"
listen_host = "0.0.0.0"
listen_port = 9100
public_url = "https://audio.example.org"
metrics_listen = "127.0.0.1:9109"
shared_secret = "{SECRET}"
token_ttl_seconds = 600
role = "edge"
redis_url = "redis://127.0.0.1:6379/0"
redis_prefix = "community-a"
recordings_dir = "/srv/recordings"
listener_queue_frames = 80
client_sndbuf_bytes = 65536
ogg_page_ms = 400
listener_bundle_ms = 60
icecast_url = "icecast://source:ice-pass@icecast.internal:8000/chorus"
icecast_listen_url = "https://radio.example.org/chorus"
jitter_frames = 6
max_msg_size = 32768
opus_bitrate = 64000
clip_seconds = 45
captions_workers = 3
header_timeout_seconds = 5.5
max_pending_connections_per_address = 10
max_streams_per_address = 0
openid_attempts_per_address_per_minute = 7
openid_attempts_per_minute = 70
openid_allow_private_networks = true
openid_timeout_seconds = 4.0
openid_homeservers = {{ "example.org" = "https://matrix.example.org" }}

[captions]
engine = "faster-whisper"
model_path = "/models/base"
language = "de-DE"
post_to_room = true

[spaces]
captions_by_default = true
"""
    path = write(tmp_path, text)
    bot = load_settings(path)
    bridge = load_bridge_settings(path)
    compared = 0
    for key in KEYS:
        if not key.field:
            continue
        ours = getattr(getattr(bot, key.section), key.name)
        assert getattr(bridge, key.field) == ours, key.dotted
        assert ours != key.default, f"{key.dotted} is not set away from its default here"
        compared += 1
    assert compared == len([k for k in KEYS if k.field])

