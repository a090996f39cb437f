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
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

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


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


# --------------------------------------------------------------------------------------
# Describing values in error messages
# --------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime):
        return "date-time"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    return type(value).__name__


def _render(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)


def _describe(value: Any, *, secret: bool = False) -> str:
    if secret:
        if isinstance(value, str):
            return f"a {len(value)}-character string (value hidden)"
        return f"a value of type {_type_name(value)} (value hidden)"
    text = _render(value)
    if len(text) > 60:
        text = text[:57] + "…"
    return f"{text} ({_type_name(value)})"


class _Bad(Exception):
    """Raised by a field parser: ``detail`` is what is wrong, ``suffix`` e.g. ``[2]``."""

    def __init__(self, detail: str, suffix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.suffix = suffix


def _expected(desc: str, value: Any, *, secret: bool = False, hint: str = "") -> _Bad:
    return _Bad(f"expected {desc}, got {_describe(value, secret=secret)}{hint}")


def _did_you_mean(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


# --------------------------------------------------------------------------------------
# Field parsers: each takes the raw value and returns the normalised one or raises _Bad
# --------------------------------------------------------------------------------------

Parser = Callable[[Any], Any]

_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?"
_HIST_LOCALPART = r"[\x21-\x39\x3b-\x7e]+"  # printable ASCII except ':'
SERVER_NAME_RE = re.compile(rf"^{_SERVER_NAME}$")
USER_ID_RE = re.compile(rf"^@{_HIST_LOCALPART}:{_SERVER_NAME}$")
# Room versions before 12 have "!opaque:server"; version 12 room ids have no server part.
ROOM_ID_RE = re.compile(rf"^!{_HIST_LOCALPART}(?::{_SERVER_NAME})?$")
ROOM_ALIAS_RE = re.compile(rf"^#[^:\s\x00]+:{_SERVER_NAME}$")
LOCALPART_RE = re.compile(r"^[a-z0-9._=/+-]+$")
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")


def is_user_id(text: str) -> bool:
    """True when ``text`` looks like a Matrix user id, ``@localpart:server``."""
    return len(text) <= 255 and USER_ID_RE.match(text) is not None


def _int(lo: int | None = None, hi: int | None = None) -> Parser:
    if lo is not None and hi is not None:
        desc = f"an integer from {lo} to {hi}"
    elif lo is not None:
        desc = f"an integer ≥ {lo}"
    elif hi is not None:
        desc = f"an integer ≤ {hi}"
    else:
        desc = "an integer"

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected(desc, value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _expected(desc, value)
        return value

    return parse


def _number(lo: float | None = None, hi: float | None = None) -> Parser:
    if lo is not None and hi is not None:
        desc = f"a number from {lo:g} to {hi:g}"
    else:
        desc = f"a number ≥ {lo:g}" if lo is not None else "a number"

    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _expected(desc, value)
        if (not math.isfinite(value) or (lo is not None and value < lo)
                or (hi is not None and value > hi)):
            raise _expected(desc, value)
        return float(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _string(*, nonempty: bool = False, secret: bool = False) -> Parser:
    desc = "a non-empty string" if nonempty else "a string"

    def parse(value: Any) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            raise _expected(desc, value, secret=secret)
        return value

    return parse


def _choice(*choices: str, fold_case: bool = False) -> Parser:
    desc = "one of " + ", ".join(json.dumps(c) for c in choices)

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _expected(desc, value)
        candidate = value.upper() if fold_case else value
        if candidate not in choices:
            hint = _did_you_mean(candidate, list(choices))
            if not hint and not fold_case and value.lower() in choices:
                hint = f" (did you mean {value.lower()}?)"
            raise _expected(desc, value, hint=hint)
        return candidate

    return parse


def _mask_url(text: str) -> str:
    """``text`` with any password in its authority part replaced by ``***``."""
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0] + ":***"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))
    except ValueError:
        return text


def _url(*schemes: str, what: str, allow_empty: bool = True) -> Parser:
    desc = what + (' or ""' if allow_empty else "")

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _expected(desc, value)
        if value == "" and allow_empty:
            return value
        shown = _mask_url(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise _expected(desc, shown) from None
        scheme = parts.scheme.lower()
        needs_host = scheme != "unix"
        if (
            scheme not in schemes
            or any(c.isspace() for c in value)
            or (needs_host and not parts.hostname)
            or (not needs_host and not parts.path)
        ):
            raise _expected(desc, shown)
        return value.rstrip("/") if scheme in ("http", "https") else value

    return parse


_HTTP_URL = _url("http", "https", what="an http:// or https:// URL")


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


class Table(Mapping[str, str]):
    """A setting whose value is a TOML table: read-only and hashable, as settings are."""

    def __init__(self, pairs: Any = ()) -> None:
        self._items = dict(pairs)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Table({self._items!r})"


def _homeservers(value: Any) -> Table:
    """[bridge.openid_homeservers]: the bridge's own rule, so both read a table alike."""
    from bridge.settings import HomeserverMapError, homeserver_map

    try:
        return Table(homeserver_map(dict(value) if isinstance(value, Table) else value))
    except HomeserverMapError as exc:
        raise _Bad(str(exc), exc.where) from None


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


def _language(value: Any) -> str:
    if not isinstance(value, str) or not LANGUAGE_RE.match(value):
        raise _expected('a language tag like "en-US" or "de"', value)
    return value


def _shared_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value, secret=True)
    if value and len(value) < MIN_SECRET_LENGTH:
        raise _Bad(f'expected "" or at least {MIN_SECRET_LENGTH} characters, got {len(value)} characters{_SECRET_HINT}')
    return value


MIN_SECRET_LENGTH = 32
_SECRET_HINT = " (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"


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


@dataclass(frozen=True, repr=False)
class DatabaseSettings(_Section):
    SECTION: ClassVar[str] = "database"

    url: str = _setting("sqlite:///var/chorus.db", _database_url, url=True)


@dataclass(frozen=True, repr=False)
class BridgeSettings(_Section):
    SECTION: ClassVar[str] = "bridge"

    mode: str = _setting("embedded", _choice("embedded", "remote"))
    listen_host: str = _setting("127.0.0.1", _string(nonempty=True))
    listen_port: int = _setting(8089, _int(0, 65535))
    public_url: str = _setting("", _HTTP_URL, url=True)
    control_url: str = _setting("", _HTTP_URL, url=True)
    shared_secret: str = _setting("", _shared_secret, secret=True)
    token_ttl_seconds: int = _setting(3600, _int(1))
    redis_url: str = _setting(
        "",
        _url("redis", "rediss", "unix", what="a redis://, rediss:// or unix:// URL"),
        url=True,
    )
    recordings_dir: str = _setting("var/recordings", _string(nonempty=True))
    # Tuning knobs that bridge/settings.py also reads from the same [bridge] section.
    listener_queue_frames: int = _setting(50, _int(2, 3000))
    jitter_frames: int = _setting(4, _int(1, 50))
    ogg_page_ms: int = _setting(200, _int(20, 1000))
    listener_bundle_ms: int = _setting(100, _int(20, 500))
    max_msg_size: int = _setting(16 * 1024, _int(1024, 16 * 1024 * 1024))
    opus_bitrate: int = _setting(48000, _int(6000, 510000))
    clip_seconds: int = _setting(30, _int(1, 600))
    header_timeout_seconds: float = _setting(10.0, _number(0.1))
    max_pending_connections_per_address: int = _setting(64, _int(0))
    max_streams_per_address: int = _setting(64, _int(0))
    openid_attempts_per_address_per_minute: int = _setting(20, _int(1))
    openid_attempts_per_minute: int = _setting(600, _int(1))
    openid_allow_private_networks: bool = _setting(False, _bool)
    openid_timeout_seconds: float = _setting(10.0, _number(0.1, 300))
    openid_homeservers: Table = _setting(Table(), _homeservers)

    def _check_together(self) -> None:
        if self.ogg_page_ms % 20:
            self._fail("ogg_page_ms", f"expected a multiple of 20 (ms), got {self.ogg_page_ms}")
        if self.listener_bundle_ms % 20:
            self._fail("listener_bundle_ms",
                       f"expected a multiple of 20 (ms), got {self.listener_bundle_ms}")
        if self.mode != "remote":
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
        if self.public_url:
            return self.public_url
        host = self.listen_host
        if host in ("0.0.0.0", "::", "[::]"):
            host = "localhost"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.listen_port if port is None else port}"


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


@dataclass(frozen=True, repr=False)
class CaptionsSettings(_Section):
    SECTION: ClassVar[str] = "captions"

    engine: str = _setting("pocketsphinx", _choice("pocketsphinx", "vosk", "faster-whisper"))
    model_path: str = _setting("", _string())
    post_to_room: bool = _setting(False, _bool)
    language: str = _setting("en-US", _language)

    def _check_together(self) -> None:
        if self.engine == "vosk" and not self.model_path:
            self._fail(
                "model_path",
                'required when captions.engine = "vosk" (the folder of an unpacked Vosk model)',
            )


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
