"""Bridge settings: a small frozen dataclass, and a reader for config.toml's [bridge].

The bot builds :class:`BridgeSettings` from its own config; ``python -m bridge`` reads
the same ``[bridge]`` section with :func:`load_settings`.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A bad [bridge] setting; the message names the key and the reason."""


@dataclass(frozen=True)
class BridgeSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8089
    public_url: str = "http://127.0.0.1:8089"
    shared_secret: str = ""
    token_ttl_seconds: int = 3600
    recordings_dir: str = "var/recordings"
    control_url: str = ""
    redis_url: str = ""
    #: server name -> homeserver base URL for verifying widget OpenID tokens (else discovery),
    #: config.toml's [bridge.openid_homeservers] table; the bot adds its own homeserver
    #: (embedded: here; a separate bridge: over the control API)
    openid_homeservers: tuple[tuple[str, str], ...] = ()
    #: how much unsent audio a listener may have, in 20 ms frames (at least two bundles
    #: for a bundled client); a listener further behind than this is disconnected.
    listener_queue_frames: int = 50
    #: kernel send buffer per client socket (bytes): bounds memory and hidden latency per
    #: listener, and lets a stalled listener be noticed within seconds; 0 = OS default.
    client_sndbuf_bytes: int = 32768
    #: live.ogg page duration, in ms (20..1000, a multiple of 20): each page is built once
    #: per space and written to every listener; longer pages cost fewer writes per
    #: listener and less framing, and add up to this much latency before a player hears it.
    ogg_page_ms: int = 200
    #: listen-only WebSocket clients that ask for bundles (``?bundles=1``; the page does)
    #: get this many ms of audio in one message (20..500, a multiple of 20; 20 = one frame
    #: per message): fewer writes per listener, and up to this much more latency.
    listener_bundle_ms: int = 100
    #: per-speaker jitter buffer depth, in frames.
    jitter_frames: int = 4
    #: largest WebSocket message accepted from a client, in bytes.
    max_msg_size: int = 16 * 1024
    #: Opus bitrate for the listeners' mix.
    opus_bitrate: int = 48000
    #: seconds kept for the ``clip`` control call.
    clip_seconds: int = 30
    #: live captions (config.toml's [captions] section): engine, model, language;
    #: recogniser processes; and whether spaces open with captions on by default (then
    #: the engine is loaded, and checked, at start-up).
    captions_engine: str = "pocketsphinx"
    captions_model_path: str = ""
    captions_language: str = "en-US"
    captions_workers: int = 1
    captions_by_default: bool = False
    #: a connection must send complete request headers within this many seconds (at
    #: first, and between requests while it is neither a WebSocket/stream nor the bot).
    header_timeout_seconds: float = 10.0
    #: connections from one address that have not yet sent a request, upgraded or
    #: signed in; beyond this, new ones from that address are closed at once. 0 = no cap.
    max_pending_connections_per_address: int = 64
    #: listener connections (WebSockets and live.ogg streams; speakers and hosts are not
    #: counted) one address may hold open at once; beyond this a new one is refused
    #: (WebSocket close 4429, HTTP 429). 0 = no cap.
    max_streams_per_address: int = 64
    #: Element widget sign-ins (POST /spaces/{id}/openid) per minute, per remote address
    #: and over all addresses (each is also the burst allowed).
    openid_attempts_per_address_per_minute: int = 20
    openid_attempts_per_minute: int = 600
    #: let /openid reach homeservers on loopback, private or link-local addresses (only
    #: for a private federation; the bot's own local Synapse is allowed through
    #: openid_homeservers regardless).
    openid_allow_private_networks: bool = False
    #: one deadline for the whole homeserver check of a widget sign-in (discovery and
    #: userinfo); past it the sign-in gets the generic refusal.
    openid_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.shared_secret or len(self.shared_secret) < 16:
            raise SettingsError("bridge.shared_secret: must be at least 16 characters")
        if not 0 <= self.listen_port <= 65535:
            raise SettingsError("bridge.listen_port: must be 0..65535")
        if self.token_ttl_seconds <= 0:
            raise SettingsError("bridge.token_ttl_seconds: must be positive")
        if self.listener_queue_frames < 2:
            raise SettingsError("bridge.listener_queue_frames: must be at least 2")
        if not self.public_url.startswith(("http://", "https://")):
            raise SettingsError("bridge.public_url: must start with http:// or https://")
        if self.captions_engine not in ("pocketsphinx", "vosk", "faster-whisper"):
            raise SettingsError("captions.engine: must be one of pocketsphinx, vosk, "
                                f"faster-whisper, got {self.captions_engine!r}")
        if self.captions_engine == "vosk" and not self.captions_model_path:
            raise SettingsError('captions.model_path: required when captions.engine = "vosk"')
        if not 1 <= self.captions_workers <= 64:
            raise SettingsError("bridge.captions_workers: must be 1..64")
        if not (isinstance(self.header_timeout_seconds, int | float)
                and 0.1 <= self.header_timeout_seconds <= 86400):
            raise SettingsError("bridge.header_timeout_seconds: must be a number of seconds "
                                f"from 0.1 to 86400, got {self.header_timeout_seconds!r}")
        if not (20 <= self.ogg_page_ms <= 1000 and self.ogg_page_ms % 20 == 0):
            raise SettingsError("bridge.ogg_page_ms: must be a multiple of 20 from 20 to 1000, "
                                f"got {self.ogg_page_ms!r}")
        if not (20 <= self.listener_bundle_ms <= 500 and self.listener_bundle_ms % 20 == 0):
            raise SettingsError("bridge.listener_bundle_ms: must be a multiple of 20 from 20 "
                                f"to 500, got {self.listener_bundle_ms!r}")
        if self.max_pending_connections_per_address < 0:
            raise SettingsError("bridge.max_pending_connections_per_address: must be 0 (no cap) or more")
        if self.max_streams_per_address < 0:
            raise SettingsError("bridge.max_streams_per_address: must be 0 (no cap) or more")
        if not (isinstance(self.openid_timeout_seconds, int | float)
                and 0.1 <= self.openid_timeout_seconds <= 300):
            raise SettingsError("bridge.openid_timeout_seconds: must be a number of seconds "
                                f"from 0.1 to 300, got {self.openid_timeout_seconds!r}")
        for key in ("openid_attempts_per_address_per_minute", "openid_attempts_per_minute"):
            if getattr(self, key) < 1:
                raise SettingsError(f"bridge.{key}: must be at least 1")
        try:
            pairs = self.openid_homeservers
            object.__setattr__(self, "openid_homeservers",
                               homeserver_map(dict(pairs) if isinstance(pairs, tuple) else pairs))
        except HomeserverMapError as exc:
            raise SettingsError(f"bridge.openid_homeservers{exc.where}: {exc}") from None


_TYPES = {f.name: f.type for f in fields(BridgeSettings)}


def settings_from_mapping(section: dict[str, Any]) -> BridgeSettings:
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _TYPES:
            raise SettingsError(f"bridge.{key}: unknown setting")
        if key == "openid_homeservers":
            try:
                kwargs[key] = homeserver_map(value)
            except HomeserverMapError as exc:
                raise SettingsError(f"bridge.openid_homeservers{exc.where}: {exc}") from None
            continue
        want = {"int": int, "bool": bool, "float": float}.get(str(_TYPES[key]), str)
        if want is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise SettingsError(f"bridge.{key}: must be an integer, got {value!r}")
        if want is float:
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise SettingsError(f"bridge.{key}: must be a number, got {value!r}")
            value = float(value)
        if want is bool and not isinstance(value, bool):
            raise SettingsError(f"bridge.{key}: must be true or false, got {value!r}")
        if want is str and not isinstance(value, str):
            raise SettingsError(f"bridge.{key}: must be a string, got {value!r}")
        kwargs[key] = value
    return BridgeSettings(**kwargs)


class HomeserverMapError(ValueError):
    """A bad server name -> URL map; ``where`` is the entry (``."name"``) or empty."""

    def __init__(self, detail: str, where: str = "") -> None:
        super().__init__(detail)
        self.where = where


_SERVER_NAME_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")
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
    for name, url in value.items():
        where = f".{json.dumps(str(name)[:100])}"
        if not (isinstance(name, str) and len(name) <= 255 and _SERVER_NAME_RE.fullmatch(name)):
            raise HomeserverMapError('expected a Matrix server name like "example.org" as the key', where)
        try:
            pairs.append((name, homeserver_url(url)))
        except ValueError as exc:
            raise HomeserverMapError(str(exc), where) from None
    return tuple(sorted(pairs))


def load_settings(path: str | Path) -> BridgeSettings:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    section = data.get("bridge")
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: missing [bridge] section")
    return settings_from_mapping({**section, **_captions_keys(data)})


def _captions_keys(data: dict[str, Any]) -> dict[str, Any]:
    """[captions] engine/model_path/language and [spaces] captions_by_default, shared
    with the bot's config, as BridgeSettings fields."""
    found: dict[str, Any] = {}
    captions = data.get("captions", {})
    if isinstance(captions, dict):
        for key in ("engine", "model_path", "language"):
            if key in captions:
                value = captions[key]
                if not isinstance(value, str):
                    raise SettingsError(f"captions.{key}: must be a string, got {value!r}")
                found[f"captions_{key}"] = value
    spaces = data.get("spaces", {})
    if isinstance(spaces, dict) and "captions_by_default" in spaces:
        found["captions_by_default"] = spaces["captions_by_default"]
    return found
