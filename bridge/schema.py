"""The rule book for configuration values, shared by the bot's config (bot/config.py) and
the bridge's (bridge/settings.py), so a key is read, checked and explained the same way
by both: parsers that take a raw TOML value and return it normalised or raise
:class:`Bad` with what is wrong, in one line (``expected an integer from 0 to 65535, got
70000 (integer)``). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Parser = Callable[[Any], Any]

LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
#: a host: a DNS name (or IPv4 address) or a bracketed IPv6 literal
HOST = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
#: a Matrix server name: a host with an optional port
SERVER_NAME = rf"{HOST}(?::[0-9]{{1,5}})?"


def one_line(text: str) -> str:
    """``text`` with its line breaks written out, so a message stays on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def type_name(value: Any) -> str:
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


def render(value: Any) -> str:
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
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)


def describe(value: Any, *, secret: bool = False) -> str:
    if secret:
        if isinstance(value, str):
            return f"a {len(value)}-character string (value hidden)"
        return f"a value of type {type_name(value)} (value hidden)"
    text = render(value)
    if len(text) > 60:
        text = text[:57] + "…"
    return f"{text} ({type_name(value)})"


class Bad(Exception):
    """Raised by a field parser: ``detail`` is what is wrong, ``suffix`` e.g. ``[2]``."""

    def __init__(self, detail: str, suffix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.suffix = suffix


def expected(desc: str, value: Any, *, secret: bool = False, hint: str = "") -> Bad:
    return Bad(f"expected {desc}, got {describe(value, secret=secret)}{hint}")


def did_you_mean(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""

def integer(lo: int | None = None, hi: int | None = None) -> Parser:
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
            raise expected(desc, value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise expected(desc, value)
        return value

    return parse


def number(lo: float | None = None, hi: float | None = None) -> Parser:
    if lo is not None and hi is not None:
        desc = f"a number from {lo:g} to {hi:g}"
    else:
        desc = f"a number ≥ {lo:g}" if lo is not None else "a number"

    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise expected(desc, value)
        if (not math.isfinite(value) or (lo is not None and value < lo)
                or (hi is not None and value > hi)):
            raise expected(desc, value)
        return float(value)

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise expected("true or false", value)
    return value


def string(*, nonempty: bool = False, secret: bool = False) -> Parser:
    desc = "a non-empty string" if nonempty else "a string"

    def parse(value: Any) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            raise expected(desc, value, secret=secret)
        return value

    return parse


def choice(*choices: str, fold_case: bool = False) -> Parser:
    desc = "one of " + ", ".join(json.dumps(c) for c in choices)

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise expected(desc, value)
        candidate = value.upper() if fold_case else value
        if candidate not in choices:
            hint = did_you_mean(candidate, list(choices))
            if not hint and not fold_case and value.lower() in choices:
                hint = f" (did you mean {value.lower()}?)"
            raise expected(desc, value, hint=hint)
        return candidate

    return parse


#: "//user:" up to the last "@": what may be a password, even one holding "/", "?" or "#"
#: (which cut the authority part short, so urlsplit does not see it as a password)
_LOGIN_RE = re.compile(r"(//[^:/@]*:).*@")


def mask_url(text: str) -> str:
    """``text`` with any password in its authority part replaced by ``***``."""
    try:
        parts = urlsplit(text)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)
            userinfo = netloc[0].split(":", 1)[0] + ":***"
            return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))
    except ValueError:
        pass
    # unparseable, or a password urlsplit cut short: hide all from "//user:" to the last "@"
    return _LOGIN_RE.sub(r"\1***@", text)


def url(*schemes: str, what: str, allow_empty: bool = True) -> Parser:
    desc = what + (' or ""' if allow_empty else "")

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise expected(desc, value)
        if value == "" and allow_empty:
            return value
        shown = mask_url(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise expected(desc, shown) from None
        scheme = parts.scheme.lower()
        needs_host = scheme != "unix"
        if (
            scheme not in schemes
            or any(c.isspace() for c in value)
            or (needs_host and not parts.hostname)
            or (not needs_host and not parts.path)
        ):
            raise expected(desc, shown)
        return value.rstrip("/") if scheme in ("http", "https") else value

    return parse


HTTP_URL = url("http", "https", what="an http:// or https:// URL")

_LISTEN_RE = re.compile(rf"(?P<host>{HOST}):(?P<port>[0-9]{{1,5}})")
LISTEN_DESC = '"" (off) or "host:port", e.g. "127.0.0.1:9108" (port 0: any free port)'


def listen_address(value: Any) -> str:
    """"" (off), or where to listen: ``"host:port"`` (an IPv6 host in brackets)."""
    if not isinstance(value, str):
        raise expected(LISTEN_DESC, value)
    if value and split_listen(value) is None:
        raise expected(LISTEN_DESC, value)
    return value


def split_listen(value: str) -> tuple[str, int] | None:
    """(host, port) of a ``"host:port"`` listen address; None if it is not one."""
    match = _LISTEN_RE.fullmatch(value)
    if match is None or int(match["port"]) > 65535:
        return None
    host = match["host"]
    bracketed = host.startswith("[")
    if bracketed:
        host = host[1:-1]
    try:
        if bracketed:
            ipaddress.IPv6Address(host)
        elif re.fullmatch(r"[0-9.]+", host):  # digits and dots: an IPv4 address, or nothing
            ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return host, int(match["port"])


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

def language(value: Any) -> str:
    if not isinstance(value, str) or not LANGUAGE_RE.match(value):
        raise expected('a language tag like "en-US" or "de"', value)
    return value
