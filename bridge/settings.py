"""The bridge's settings: the one definition of config.toml's ``[bridge]`` section (and
of the ``[captions]`` keys the bridge reads), used by both services.

:data:`KEYS` says, for every key, its default and how it is checked (bridge/schema.py's
parsers). From it come the bridge's :class:`BridgeSettings` (what ``python -m bridge``
and the embedded bridge run with) and the bot's ``[bridge]`` and ``[captions]`` sections
(bot/config.py), so the two read a key, its default and its errors alike.

``python -m bridge --config config.toml`` reads the very file the bot reads: the
``[bridge]`` section (keys only the bot uses, such as ``mode``, are passed over), the
engine, model and language of ``[captions]`` and ``[spaces] captions_by_default``; every
other section is the bot's and is not looked at. A misspelt ``[bridge]`` key is refused
with one line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .icecast import icecast_url
from .schema import (
    HTTP_URL,
    SERVER_NAME,
    Bad,
    Parser,
    Table,
    boolean,
    choice,
    describe,
    did_you_mean,
    expected,
    integer,
    language,
    listen_address,
    mask_url,
    number,
    one_line,
    string,
    url,
)


class SettingsError(ValueError):
    """A bad setting: one line naming the file (when read from one), the key and the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


MIN_SECRET_LENGTH = 32
SECRET_HINT = " (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
CAPTION_ENGINES = ("pocketsphinx", "vosk", "faster-whisper")


def shared_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise expected("a string", value, secret=True)
    if value and len(value) < MIN_SECRET_LENGTH:
        raise Bad(f'expected "" or at least {MIN_SECRET_LENGTH} characters, got {len(value)} '
                  f"characters{SECRET_HINT}")
    return value


def frame_ms(lo: int, hi: int) -> Parser:
    """A duration in ms that is a whole number of 20 ms frames."""
    in_range = integer(lo, hi)

    def parse(value: Any) -> int:
        value = in_range(value)
        if value % 20:
            raise Bad(f"expected a multiple of 20 (ms), got {value}")
        return value

    return parse


_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def redis_prefix(value: Any) -> str:
    """What the Redis feed's channels and keys start with: letters, digits, . _ -."""
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value):
        raise expected("1 to 64 letters, digits, dots, dashes or underscores", value)
    return value


def base_url(value: Any) -> str:
    """"" or an http(s) base URL with no login, query or fragment (homeserver_url)."""
    if value == "":
        return value
    try:
        return homeserver_url(value)
    except ValueError as exc:
        raise Bad(str(exc)) from None


def homeservers(value: Any) -> Table:
    if isinstance(value, Table):
        value = dict(value)
    try:
        return Table(homeserver_map(value))
    except HomeserverMapError as exc:
        raise Bad(str(exc), exc.where) from None


@dataclass(frozen=True)
class Key:
    """One key of config.toml: where it is, its default, how it is checked and what the
    bridge calls it (``field``; empty for a key only the bot reads)."""

    section: str
    name: str
    default: Any
    parse: Parser
    field: str = ""
    secret: bool = False
    url: bool = False

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _bridge(name: str, default: Any, parse: Parser, *, bot_only: bool = False, **flags: Any) -> Key:
    return Key("bridge", name, default, parse, "" if bot_only else name, **flags)


#: every key of [bridge], and the [captions] and [spaces] keys the bridge reads, in the
#: order config.example.toml and docs/configuration.md give them
KEYS: tuple[Key, ...] = (
    _bridge("mode", "embedded", choice("embedded", "remote"), bot_only=True),
    _bridge("listen_host", "127.0.0.1", string(nonempty=True)),
    _bridge("listen_port", 8089, integer(0, 65535)),
    _bridge("public_url", "", url("http", "https", what="an http:// or https:// URL"), url=True),
    _bridge("metrics_listen", "", listen_address),
    _bridge("control_url", "", HTTP_URL, bot_only=True, url=True),
    _bridge("shared_secret", "", shared_secret, secret=True),
    _bridge("token_ttl_seconds", 3600, integer(1)),
    _bridge("role", "origin", choice("origin", "edge")),
    _bridge("redis_url", "", url("redis", "rediss", "unix", what="a redis://, rediss:// or unix:// URL"), url=True),
    _bridge("redis_prefix", "chorus", redis_prefix),
    _bridge("recordings_dir", "var/recordings", string(nonempty=True)),
    _bridge("listener_queue_frames", 50, integer(2, 3000)),
    _bridge("client_sndbuf_bytes", 32768, integer(0, 64 * 1024 * 1024)),
    _bridge("ogg_page_ms", 200, frame_ms(20, 1000)),
    _bridge("listener_bundle_ms", 100, frame_ms(20, 500)),
    _bridge("icecast_url", "", icecast_url, url=True),
    _bridge("icecast_listen_url", "", base_url),
    _bridge("jitter_frames", 4, integer(1, 50)),
    _bridge("max_msg_size", 16 * 1024, integer(1024, 16 * 1024 * 1024)),
    _bridge("opus_bitrate", 48000, integer(6000, 510000)),
    _bridge("clip_seconds", 30, integer(1, 600)),
    _bridge("captions_workers", 1, integer(1, 64)),
    _bridge("header_timeout_seconds", 10.0, number(0.1, 86400)),
    _bridge("max_pending_connections_per_address", 64, integer(0)),
    _bridge("max_streams_per_address", 64, integer(0)),
    _bridge("openid_attempts_per_address_per_minute", 20, integer(1)),
    _bridge("openid_attempts_per_minute", 600, integer(1)),
    _bridge("openid_allow_private_networks", False, boolean),
    _bridge("openid_timeout_seconds", 10.0, number(0.1, 300)),
    _bridge("openid_homeservers", Table(), homeservers),
    Key("captions", "engine", "pocketsphinx", choice(*CAPTION_ENGINES), "captions_engine"),
    Key("captions", "model_path", "", string(), "captions_model_path"),
    Key("captions", "language", "en-US", language, "captions_language"),
    Key("spaces", "captions_by_default", False, boolean, "captions_by_default"),
)

BRIDGE_SECTION = {k.name: k for k in KEYS if k.section == "bridge"}
_BY_FIELD = {k.field: k for k in KEYS if k.field}


def captions_problem(engine: str, model_path: str) -> str | None:
    """What is wrong with this [captions] engine and model together, if anything."""
    if engine == "vosk" and not model_path:
        return 'required when captions.engine = "vosk" (the folder of an unpacked Vosk model)'
    return None


def resolved_public_url(public_url: str, listen_host: str, port: int) -> str:
    """``public_url``, or ``http://{listen_host}:{port}`` when it is empty. A wildcard
    listen host (``0.0.0.0``, ``::``) becomes ``localhost``; an IPv6 address gets brackets."""
    if public_url:
        return public_url
    host = listen_host
    if host in ("0.0.0.0", "::", "[::]"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _check(self: Any) -> None:
    """BridgeSettings.__post_init__: every field through its key's parser, then the rules
    across keys. Raises SettingsError naming the key."""
    if isinstance(self.openid_homeservers, tuple):  # pairs, from code rather than a file
        object.__setattr__(self, "openid_homeservers", dict(self.openid_homeservers))
    for name, key in _BY_FIELD.items():
        try:
            object.__setattr__(self, name, key.parse(getattr(self, name)))
        except Bad as exc:
            raise SettingsError(f"{key.dotted}{exc.suffix}: {exc.detail}") from None
    if not self.shared_secret:
        raise SettingsError(f"bridge.shared_secret: required: at least {MIN_SECRET_LENGTH} characters, "
                            f"the same on the bot and the bridge{SECRET_HINT}")
    if self.role == "edge" and not self.redis_url:
        raise SettingsError('bridge.role: "edge" needs bridge.redis_url (an edge serves the spaces '
                            "its origin publishes on Redis)")
    problem = captions_problem(self.captions_engine, self.captions_model_path)
    if problem:
        raise SettingsError(f"captions.model_path: {problem}")


def _repr(self: Any) -> str:
    """Every field but the secret; passwords inside URLs masked."""
    shown = []
    for key in KEYS:
        if key.field and not key.secret:
            value = getattr(self, key.field)
            shown.append(f"{key.field}={(mask_url(value) if key.url else value)!r}")
    return f"BridgeSettings({', '.join(shown)})"


#: What the bridge runs with: a frozen dataclass with a field per bridge key of
#: :data:`KEYS` (``captions_engine`` for ``[captions] engine``, and so on), each checked
#: on creation. An empty ``public_url`` means the listen address (resolved_public_url).
BridgeSettings = dataclasses.make_dataclass(
    "BridgeSettings",
    [(k.field, Any, dataclasses.field(default=k.default)) for k in KEYS if k.field],
    frozen=True, repr=False,
    namespace={"__post_init__": _check, "__repr__": _repr, "__module__": __name__,
               "__doc__": "The bridge's settings, checked on creation (see KEYS)."})

#: keys the bridge once read from [bridge] that live in the shared sections now
_MOVED = {"captions_engine": "captions.engine", "captions_model_path": "captions.model_path",
          "captions_language": "captions.language", "captions_by_default": "spaces.captions_by_default"}


def settings_from_mapping(data: Mapping[str, Any]) -> Any:
    """BridgeSettings from a parsed config.toml (all of it: the bot's sections are passed
    over). Raises SettingsError naming the key."""
    if "bridge" not in data:
        raise SettingsError("missing [bridge] section")
    for name in ("bridge", "captions", "spaces"):
        if name in data and not isinstance(data[name], Mapping):
            raise SettingsError(f"{name}: expected a table (a [{name}] section), got {describe(data[name])}")
    kwargs: dict[str, Any] = {}
    for name, value in data["bridge"].items():
        key = BRIDGE_SECTION.get(name)
        if key is None:
            if name in _MOVED:
                raise SettingsError(f"unknown key bridge.{name} (it is {_MOVED[name]} now)")
            hint = did_you_mean(str(name), list(BRIDGE_SECTION))
            raise SettingsError(f"unknown key bridge.{json.dumps(name)[1:-1]}"
                                f"{hint.replace('(did you mean ', '(did you mean bridge.')}")
        if key.field:
            kwargs[key.field] = value
        else:  # the bot's own key: checked alike, then left to the bot
            try:
                key.parse(value)
            except Bad as exc:
                raise SettingsError(f"{key.dotted}{exc.suffix}: {exc.detail}") from None
    for key in KEYS:
        table = data.get(key.section, {})
        if key.section != "bridge" and key.name in table:
            kwargs[key.field] = table[key.name]
    return BridgeSettings(**kwargs)


def load_settings(path: str | Path) -> Any:
    """BridgeSettings from the config file at ``path`` (the bot's own config.toml will do)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    try:
        return settings_from_mapping(data)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None


class HomeserverMapError(ValueError):
    """A bad server name -> URL map; ``where`` is the entry (``."name"``) or empty."""

    def __init__(self, detail: str, where: str = "") -> None:
        super().__init__(detail)
        self.where = where


_SERVER_NAME_RE = re.compile(SERVER_NAME)
#: most entries in one map (a config table, or one push from the bot)
MAX_HOMESERVERS = 1000


def homeserver_url(value: Any) -> str:
    """An http(s) base URL (no query or fragment), without its trailing slash; raises
    ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {type(value).__name__}")
    if "@" in value:
        shown = "a URL with a user or password in it"
    else:  # a query or fragment may hold a credential: not shown either
        bare = value.split("?", 1)[0].split("#", 1)[0][:200]
        shown = repr(bare) + (" with a query or fragment" if "?" in value or "#" in value else "")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"expected an http:// or https:// URL, got {shown}") from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or "@" in parts.netloc or any(c.isspace() or ord(c) < 32 for c in value)
            or len(value) > 2000):
        raise ValueError("expected an http:// or https:// URL with a host and no user, query "
                         f"or fragment, got {shown}")
    return value.rstrip("/")


def homeserver_map(value: Any) -> tuple[tuple[str, str], ...]:
    """A table of Matrix server name -> homeserver base URL, checked; sorted pairs.

    Raises HomeserverMapError naming the entry at fault."""
    if not isinstance(value, dict):
        raise HomeserverMapError('expected a table of server names to URLs, like '
                                 '{ "example.org" = "https://matrix.example.org" }, '
                                 f"got {type(value).__name__}")
    if len(value) > MAX_HOMESERVERS:
        raise HomeserverMapError(f"at most {MAX_HOMESERVERS} entries, got {len(value)}")
    pairs = []
    for name, address in value.items():
        where = f".{json.dumps(str(name)[:100])}"
        if not (isinstance(name, str) and len(name) <= 255 and _SERVER_NAME_RE.fullmatch(name)):
            raise HomeserverMapError('expected a Matrix server name like "example.org" as the key', where)
        try:
            pairs.append((name, homeserver_url(address)))
        except ValueError as exc:
            raise HomeserverMapError(str(exc), where) from None
    return tuple(sorted(pairs))
