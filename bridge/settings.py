"""Bridge settings: a small frozen dataclass, and a reader for config.toml's [bridge].

The bot builds :class:`BridgeSettings` from its own config; ``python -m bridge`` reads
the same ``[bridge]`` section with :func:`load_settings`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


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
    #: per-listener send queue, in messages (20 ms frames); a listener further behind
    #: than this is disconnected.
    listener_queue_frames: int = 50
    #: kernel send buffer per client socket (bytes): bounds memory and hidden latency per
    #: listener, and lets a stalled listener be noticed within seconds; 0 = OS default.
    client_sndbuf_bytes: int = 32768
    #: per-speaker jitter buffer depth, in frames.
    jitter_frames: int = 4
    #: largest WebSocket message accepted from a client, in bytes.
    max_msg_size: int = 16 * 1024
    #: Opus bitrate for the listeners' mix.
    opus_bitrate: int = 48000
    #: seconds kept for the ``clip`` control call.
    clip_seconds: int = 30

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


_TYPES = {f.name: f.type for f in fields(BridgeSettings)}


def settings_from_mapping(section: dict[str, Any]) -> BridgeSettings:
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _TYPES:
            raise SettingsError(f"bridge.{key}: unknown setting")
        want = int if _TYPES[key] in ("int", int) else str
        if want is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise SettingsError(f"bridge.{key}: must be an integer, got {value!r}")
        if want is str and not isinstance(value, str):
            raise SettingsError(f"bridge.{key}: must be a string, got {value!r}")
        kwargs[key] = value
    return BridgeSettings(**kwargs)


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
    return settings_from_mapping(section)
