"""Chorus configuration: ``config.toml`` read with :mod:`tomllib`, validated into frozen
dataclasses.

Every key is optional; an empty file gives :func:`default_settings`. Anything wrong (a
missing file, a TOML syntax error, an unknown key, a wrong type, a value out of range)
raises :class:`ConfigError` with a one-line message that names the file, the dotted key
and what is wrong::

    config.toml: hosting.min_followers: expected an integer ≥ 0, got "six hundred" (string)
    config.toml: unknown key spaces.max_speakerz (did you mean spaces.max_speakers?)

Each section dataclass validates (and normalises) its own fields in ``__post_init__``, so
``dataclasses.replace(settings.spaces, max_speakers=0)`` fails the same way a bad file
does. This module is pure: it reads one file and touches nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bridge.schema import HTTP_URL as _HTTP_URL
from bridge.schema import SERVER_NAME, Parser
from bridge.schema import Bad as _Bad
from bridge.schema import boolean as _bool
from bridge.schema import choice as _choice
from bridge.schema import describe as _describe
from bridge.schema import did_you_mean as _did_you_mean
from bridge.schema import expected as _expected
from bridge.schema import integer as _int
from bridge.schema import listen_address as _listen_address
from bridge.schema import mask_url as _mask_url
from bridge.schema import number as _number
from bridge.schema import one_line as _one_line
from bridge.schema import render as _render
from bridge.schema import string as _string
from bridge.settings import KEYS as BRIDGE_KEYS
from bridge.settings import MIN_SECRET_LENGTH, captions_problem, resolved_public_url
from bridge.settings import SECRET_HINT as _SECRET_HINT

__all__ = [
    "AnnouncementsSettings",
    "BotSettings",
    "BridgeSettings",
    "CaptionsSettings",
    "ConfigError",
    "DatabaseSettings",
    "HostingSettings",
    "LocalSettings",
    "LoggingSettings",
    "MatrixSettings",
    "ModerationSettings",
    "SchedulingSettings",
    "Settings",
    "SpacesSettings",
    "all_keys",
    "default_settings",
    "is_user_id",
    "load_settings",
    "settings_from_dict",
]


class ConfigError(Exception):
    """A configuration problem. ``str(error)`` is one line naming the file and the key.

    ``source`` is the file (or ``"<dict>"``), ``key`` the dotted key (``None`` for
    file-level problems) and ``detail`` what is wrong with it.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(_one_line(message))
        self.source = source
        self.key = key
        self.detail = detail if detail is not None else message


# --------------------------------------------------------------------------------------
# Field parsers: each takes the raw value and returns the normalised one or raises _Bad
# --------------------------------------------------------------------------------------


_HIST_LOCALPART = r"[\x21-\x39\x3b-\x7e]+"  # printable ASCII except ':'
SERVER_NAME_RE = re.compile(rf"^{SERVER_NAME}$")
USER_ID_RE = re.compile(rf"^@{_HIST_LOCALPART}:{SERVER_NAME}$")
# Room versions before 12 have "!opaque:server"; version 12 room ids have no server part.
ROOM_ID_RE = re.compile(rf"^!{_HIST_LOCALPART}(?::{SERVER_NAME})?$")
ROOM_ALIAS_RE = re.compile(rf"^#[^:\s\x00]+:{SERVER_NAME}$")
LOCALPART_RE = re.compile(r"^[a-z0-9._=/+-]+$")


def is_user_id(text: str) -> bool:
    """True when ``text`` looks like a Matrix user id, ``@localpart:server``."""
    return len(text) <= 255 and USER_ID_RE.match(text) is not None




def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not is_user_id(value):
        raise _expected('a Matrix user id like "@name:example.org"', value)
    return value


def _server_name(value: Any) -> str:
    if not isinstance(value, str) or not SERVER_NAME_RE.match(value) or len(value) > 255:
        raise _expected('a Matrix server name like "example.org"', value)
    return value


def _room(value: Any) -> str:
    if not isinstance(value, str) or not (ROOM_ID_RE.match(value) or ROOM_ALIAS_RE.match(value)):
        raise _expected('a room id like "!abc:example.org" or an alias like "#chat:example.org"', value)
    return value


def _localpart(value: Any) -> str:
    if not isinstance(value, str) or not LOCALPART_RE.match(value):
        raise _expected("a user name of lowercase letters, digits and ._=-/+", value)
    return value


def _list(item: Parser, what: str) -> Parser:
    def parse(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _expected(f"an array of {what}", value)
        out: list[Any] = []
        for index, raw in enumerate(value):
            try:
                parsed = item(raw)
            except _Bad as exc:
                raise _Bad(exc.detail, f"[{index}]") from None
            if parsed in out:
                raise _Bad(f"{_render(parsed)} is listed twice", f"[{index}]")
            out.append(parsed)
        return tuple(out)

    return parse


def _command_prefix(value: Any) -> str:
    desc = "1 to 3 characters without spaces"
    if not isinstance(value, str) or not 1 <= len(value) <= 3 or any(c.isspace() for c in value):
        raise _expected(desc, value)
    return value


def _database_url(value: Any) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    desc = 'a SQLAlchemy database URL like "sqlite:///var/chorus.db"'
    if not isinstance(value, str):
        raise _expected(desc, value)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise _expected(desc, _mask_url(value)) from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        known = ["sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"]
        backend = url.drivername.split("+", 1)[0]
        raise _Bad(
            f"unknown database kind {json.dumps(url.drivername)} in "
            f"{json.dumps(url.render_as_string(hide_password=True))}"
            f"{_did_you_mean(backend, known)}"
        ) from None
    return value


def _timezone(value: Any) -> str:
    desc = 'an IANA time zone like "UTC" or "Europe/Berlin"'
    if not isinstance(value, str):
        raise _expected(desc, value)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        hint = _did_you_mean(value, sorted(zoneinfo.available_timezones()))
        raise _expected(desc, value, hint=hint) from None
    return value


def _setting(default: Any, parse: Parser, *, secret: bool = False, url: bool = False) -> Any:
    """A settings field; ``secret`` ones are left out of ``repr``, ``url`` ones masked."""
    return field(default=default, metadata={"parse": parse, "secret": secret, "url": url})


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


class _Section:
    """Base of the section dataclasses: validates and normalises fields on creation."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            parse = f.metadata.get("parse")
            if parse is None:
                continue
            try:
                value = parse(getattr(self, f.name))
            except _Bad as exc:
                key = f"{self.SECTION}.{f.name}{exc.suffix}"
                raise ConfigError(f"{key}: {exc.detail}", key=key, detail=exc.detail) from None
            object.__setattr__(self, f.name, value)
        self._check_together()

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.metadata.get("secret"):
                continue
            value = getattr(self, f.name)
            if f.metadata.get("url"):
                value = _mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _check_together(self) -> None:
        """Rules across fields of one section; raise with :meth:`_fail`."""

    def _fail(self, name: str, detail: str) -> None:
        key = f"{self.SECTION}.{name}"
        raise ConfigError(f"{key}: {detail}", key=key, detail=detail)


@dataclass(frozen=True, repr=False)
class MatrixSettings(_Section):
    SECTION: ClassVar[str] = "matrix"

    homeserver: str = _setting("", _HTTP_URL, url=True)
    user_id: str = _setting("@chorus:localhost", _user_id)
    password: str = _setting("", _string(secret=True), secret=True)
    access_token: str = _setting("", _string(secret=True), secret=True)
    device_id: str = _setting("", _string())
    device_name: str = _setting("Chorus bot", _string())
    allowed_homeservers: tuple[str, ...] = _setting((), _list(_server_name, 'Matrix server names like "example.org"'))
    store_path: str = _setting("var/nio-store", _string(nonempty=True))
    sync_timeout_ms: int = _setting(30000, _int(1000))

    @property
    def uses_local_homeserver(self) -> bool:
        """True when ``homeserver`` is empty: ``make run`` starts a local Synapse."""
        return self.homeserver == ""

    @property
    def server_name(self) -> str:
        """The server part of ``user_id``."""
        return self.user_id.split(":", 1)[1]

    def accepts_invites_from(self, user_id: str) -> bool:
        """Whether an invite from ``user_id`` is accepted under ``allowed_homeservers``."""
        if not self.allowed_homeservers:
            return True
        server = user_id.split(":", 1)[1] if ":" in user_id else ""
        return server in self.allowed_homeservers


@dataclass(frozen=True, repr=False)
class BotSettings(_Section):
    SECTION: ClassVar[str] = "bot"

    command_prefix: str = _setting("!", _command_prefix)
    display_name: str = _setting("Chorus", _string(nonempty=True))
    command_burst: int = _setting(10, _int(1, 1000))
    commands_per_minute: int = _setting(30, _int(1, 6000))
    metrics_listen: str = _setting("", _listen_address)


@dataclass(frozen=True, repr=False)
class DatabaseSettings(_Section):
    SECTION: ClassVar[str] = "database"

    url: str = _setting("sqlite:///var/chorus.db", _database_url, url=True)


class _BridgeRules(_Section):
    """[bridge]: its keys are bridge/settings.py's (KEYS), the one definition both services
    read; here are the rules only the bot applies."""

    SECTION: ClassVar[str] = "bridge"

    def _check_together(self) -> None:
        if self.mode != "remote":
            if self.role == "edge":
                self._fail("role", 'the embedded bridge is the origin; "edge" is for a bridge run '
                           "on its own (python -m bridge --edge)")
            return
        if not self.control_url:
            self._fail(
                "control_url",
                'required when bridge.mode = "remote" '
                '(the http(s) URL of the bridge\'s control API, e.g. "http://bridge:8089")',
            )
        if not self.shared_secret:
            self._fail(
                "shared_secret",
                f'required when bridge.mode = "remote": at least {MIN_SECRET_LENGTH} '
                f"characters, the same on the bot and the bridge{_SECRET_HINT}",
            )

    def resolved_public_url(self, port: int | None = None) -> str:
        """``public_url``, or ``http://{listen_host}:{port}`` when it is empty.

        Pass the port actually bound when ``listen_port`` is 0. A wildcard listen host
        (``0.0.0.0``, ``::``) becomes ``localhost``; an IPv6 address gets brackets.
        """
        return resolved_public_url(self.public_url, self.listen_host,
                                   self.listen_port if port is None else port)


class _CaptionsRules(_Section):
    """[captions]: engine, model_path and language are bridge/settings.py's keys."""

    SECTION: ClassVar[str] = "captions"

    def _check_together(self) -> None:
        problem = captions_problem(self.engine, self.model_path)
        if problem:
            self._fail("model_path", problem)


def _section_from_keys(name: str, base: type[_Section], section: str,
                       own: list[tuple[str, Any, Any]] = ()) -> type[_Section]:
    """A section dataclass whose fields are the keys of ``section`` in bridge/settings.py's
    KEYS (default and parser as defined there), then ``own``."""
    keys = [(k.name, Any, _setting(k.default, k.parse, secret=k.secret, url=k.url))
            for k in BRIDGE_KEYS if k.section == section]
    return dataclasses.make_dataclass(name, keys + list(own), bases=(base,), frozen=True, repr=False,
                                      namespace={"__module__": __name__})


BridgeSettings = _section_from_keys("BridgeSettings", _BridgeRules, "bridge")


@dataclass(frozen=True, repr=False)
class HostingSettings(_Section):
    SECTION: ClassVar[str] = "hosting"

    min_followers: int = _setting(600, _int(0))


@dataclass(frozen=True, repr=False)
class SpacesSettings(_Section):
    SECTION: ClassVar[str] = "spaces"

    max_speakers: int = _setting(11, _int(1, 100))
    max_cohosts: int = _setting(2, _int(0, 10))
    default_visibility: str = _setting("everyone", _choice("everyone", "following", "invited"))
    record_by_default: bool = _setting(False, _bool)
    captions_by_default: bool = _setting(False, _bool)

    def _check_together(self) -> None:
        if self.max_cohosts >= self.max_speakers:
            self._fail(
                "max_cohosts",
                f"expected fewer than spaces.max_speakers ({self.max_speakers}, host included), "
                f"got {self.max_cohosts} (integer)",
            )


@dataclass(frozen=True, repr=False)
class SchedulingSettings(_Section):
    SECTION: ClassVar[str] = "scheduling"

    max_days_ahead: int = _setting(14, _int(1, 365))
    early_reminder_minutes: int = _setting(15, _int(0, 1440))
    misfire_grace_minutes: int = _setting(30, _int(0, 1440))
    default_timezone: str = _setting("UTC", _timezone)
    notify_batch_size: int = _setting(20, _int(1))
    notify_interval_seconds: float = _setting(1.0, _number(0))

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        """``default_timezone`` as a :class:`zoneinfo.ZoneInfo`."""
        return zoneinfo.ZoneInfo(self.default_timezone)


@dataclass(frozen=True, repr=False)
class ModerationSettings(_Section):
    SECTION: ClassVar[str] = "moderation"

    moderators: tuple[str, ...] = _setting((), _list(_user_id, "Matrix user ids"))


@dataclass(frozen=True, repr=False)
class AnnouncementsSettings(_Section):
    SECTION: ClassVar[str] = "announcements"

    rooms: tuple[str, ...] = _setting((), _list(_room, "room ids or aliases"))


CaptionsSettings = _section_from_keys("CaptionsSettings", _CaptionsRules, "captions",
                                      [("post_to_room", bool, _setting(False, _bool))])


@dataclass(frozen=True, repr=False)
class LoggingSettings(_Section):
    SECTION: ClassVar[str] = "logging"

    level: str = _setting("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", fold_case=True))
    format: str = _setting("text", _choice("text", "json"))
    file: str = _setting("", _string())


@dataclass(frozen=True, repr=False)
class LocalSettings(_Section):
    SECTION: ClassVar[str] = "local"

    data_dir: str = _setting("var/homeserver", _string(nonempty=True))
    port: int = _setting(8008, _int(0, 65535))
    server_name: str = _setting("localhost", _server_name)
    demo_users: tuple[str, ...] = _setting(("alice", "bob"), _list(_localpart, "user names (localparts)"))
    demo_password: str = _setting("chorus-demo", _string(nonempty=True, secret=True), secret=True)
    demo_moderators: tuple[str, ...] = _setting((), _list(_localpart, "user names (localparts)"))

    @property
    def moderators_of_demo(self) -> tuple[str, ...]:
        """The demo moderators: those listed, or (none listed) the first demo user."""
        return self.demo_moderators or self.demo_users[:1]

    def _check_together(self) -> None:
        strangers = [name for name in self.demo_moderators if name not in self.demo_users]
        if strangers:
            self._fail("demo_moderators", f"{strangers[0]!r} is not one of local.demo_users "
                                          f"({', '.join(self.demo_users) or 'none'}); add it there, or "
                                          f"list only demo users in local.demo_moderators")


@dataclass(frozen=True)
class Settings:
    """All of Chorus's settings. Build with :func:`load_settings` or
    :func:`settings_from_dict`; ``source`` (not compared) names where they came from."""

    matrix: MatrixSettings = field(default_factory=MatrixSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    hosting: HostingSettings = field(default_factory=HostingSettings)
    spaces: SpacesSettings = field(default_factory=SpacesSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    announcements: AnnouncementsSettings = field(default_factory=AnnouncementsSettings)
    captions: CaptionsSettings = field(default_factory=CaptionsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    source: str = field(default="<defaults>", compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name in SECTIONS and not isinstance(getattr(self, f.name), SECTIONS[f.name]):
                raise TypeError(f"Settings.{f.name} must be a {SECTIONS[f.name].__name__}")

    @property
    def bridge_public_url(self) -> str:
        """The URL browsers use for the bridge (``bridge.public_url`` or the listen address)."""
        return self.bridge.resolved_public_url()

    def is_moderator(self, user_id: str) -> bool:
        """Whether ``user_id`` is listed in ``moderation.moderators`` (exact match)."""
        return user_id in self.moderation.moderators

    def check_for_remote_homeserver(self) -> None:
        """Raise :class:`ConfigError` if ``matrix.homeserver`` is set but the bot has no way
        to log in (neither ``matrix.password`` nor ``matrix.access_token``).

        A no-op in local mode (empty ``homeserver``), where the bot registers itself."""
        m = self.matrix
        if m.homeserver and not (m.password or m.access_token):
            key = "matrix.password"
            detail = f"set matrix.password or matrix.access_token to log in as {m.user_id} on {m.homeserver}"
            raise ConfigError(f"{self.source}: {key}: {detail}", source=self.source, key=key, detail=detail)


SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (
        MatrixSettings,
        BotSettings,
        DatabaseSettings,
        BridgeSettings,
        HostingSettings,
        SpacesSettings,
        SchedulingSettings,
        ModerationSettings,
        AnnouncementsSettings,
        CaptionsSettings,
        LoggingSettings,
        LocalSettings,
    )
}


def all_keys() -> list[str]:
    """Every dotted key, in schema order (``matrix.homeserver``, …)."""
    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _unknown_key_hint(section: str, key: str) -> str:
    own = [f.name for f in dataclasses.fields(SECTIONS[section])]
    match = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
    if match:
        return f" (did you mean {section}.{match[0]}?)"
    elsewhere = {f.name: f"{name}.{f.name}" for name in SECTIONS for f in dataclasses.fields(SECTIONS[name])}
    match = difflib.get_close_matches(key, list(elsewhere), n=1, cutoff=0.8)
    if match:
        return f" (did you mean {elsewhere[match[0]]}?)"
    return ""


def _top_level_hint(key: str, is_table: bool) -> str:
    match = difflib.get_close_matches(key, list(SECTIONS), n=1, cutoff=0.6)
    if match:
        return f" (did you mean [{match[0]}]?)"
    if not is_table:
        owners = [f"{name}.{key}" for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if owners:
            return f" (did you mean {owners[0]}? keys go under a [section])"
    return ""


def settings_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Settings:
    """Validate ``data`` (as parsed from TOML) into :class:`Settings`.

    Raises :class:`ConfigError` naming ``source`` and the dotted key on the first problem.
    """
    source = _one_line(str(source))

    def fail(key: str | None, detail: str, *, prefix_key: bool = True) -> ConfigError:
        where = f"{key}: " if key and prefix_key else ""
        return ConfigError(f"{source}: {where}{detail}", source=source, key=key, detail=detail)

    if not isinstance(data, Mapping):
        raise fail(None, f"expected a table at the top level, got {_describe(data)}")
    sections: dict[str, _Section] = {}
    for name, raw in data.items():
        name = str(name)
        if name not in SECTIONS:
            is_table = isinstance(raw, Mapping)
            kind = f"section [{name}]" if is_table else f"key {name}"
            raise fail(name, f"unknown {kind}{_top_level_hint(name, is_table)}", prefix_key=False)
        if not isinstance(raw, Mapping):
            raise fail(name, f"expected a table (a [{name}] section), got {_describe(raw)}")
        cls = SECTIONS[name]
        known = {f.name for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in known:
                hint = _unknown_key_hint(name, str(key))
                raise fail(f"{name}.{key}", f"unknown key {name}.{key}{hint}", prefix_key=False)
        try:
            sections[name] = cls(**raw)
        except ConfigError as exc:
            raise fail(exc.key, exc.detail) from None
    return Settings(**sections, source=source)


def load_settings(path: str | Path) -> Settings:
    """Read and validate the TOML file at ``path``."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        shown = _one_line(os.path.abspath(name))
        raise ConfigError(
            f"config file not found: {shown} (copy config.example.toml to start)",
            source=name,
        ) from None
    except OSError as exc:
        detail = f"cannot read the config file: {exc.strerror or exc}"
        raise ConfigError(f"{_one_line(name)}: {detail}", source=name, detail=detail) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        detail = f"not valid UTF-8 at line {line} (byte {exc.start})"
        raise ConfigError(f"{_one_line(name)}: {detail}", source=name, detail=detail) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        detail = _syntax_error_detail(str(exc), text)
        raise ConfigError(f"{_one_line(name)}: {detail}", source=name, detail=detail) from None
    return settings_from_dict(data, source=name)


_AT_RE = re.compile(r"^(?P<what>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$")


def _syntax_error_detail(message: str, text: str) -> str:
    match = _AT_RE.match(message)
    if not match:
        return f"TOML syntax error: {message}"
    where = match["where"]
    if where == "end of document":
        where = f"line {len(text.splitlines()) or 1} (end of file)"
    return f"TOML syntax error at {where}: {match['what']}"


def default_settings() -> Settings:
    """The settings an empty config file gives."""
    return Settings()
