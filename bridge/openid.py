"""Who is this Element user? A Matrix OpenID token, checked with the user's homeserver.

Inside Element the page runs as a widget and asks the widget API for an OpenID token; the
bridge sends it to the user's homeserver (``/_matrix/federation/v1/openid/userinfo``) and
learns the user id. The homeserver's address comes from :class:`Homeservers` (server name
-> base URL, set by the operator or the bot, trusted as given) if the name is there, else
from Matrix discovery: ``https://<name>:<port>`` for a name with an explicit port, else
``https://<name>/.well-known/matrix/server``'s ``m.server``, else ``https://<name>:8448``.

Anyone may call this, naming any server, so discovery is fenced in:

- the caller's server name must be a DNS host name (optionally with a port); IP literals
  are refused;
- every host the bridge connects to is resolved once, and all its addresses must be
  public (not loopback, private, link-local, shared or reserved) unless
  ``allow_private`` is set; the connection goes to those checked addresses
  (:class:`PublicOnlyResolver`); delegated IP literals are checked the same way;
- redirects are followed only for ``.well-known`` (at most 3, https only, same checks);
- answers are read up to 64 KiB and parsed with :mod:`bridge.jsonsafe`;
- the whole check has one deadline.

:class:`OpenIdError` carries the reason for the bridge's log; the caller only ever hears
:data:`GENERIC_ERROR`, so the answers cannot tell a closed port from a silent service.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from . import jsonsafe

#: what the caller hears for every verification failure
GENERIC_ERROR = "could not verify your Matrix identity"
#: largest answer read from a homeserver
MAX_ANSWER_BYTES = 64 * 1024
MAX_REDIRECTS = 3
DEFAULT_PORT = 8448

_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OpenIdError(Exception):
    """The token could not be verified; the message says why, for the bridge's log only."""


class ServerNameError(ValueError):
    """Not a Matrix server name at all (a malformed request, not a failed check)."""


def parse_server_name(name: str) -> tuple[str, int | None, IPAddress | None]:
    """(host, explicit port or None, the IP address if the host is an IP literal).

    Raises ServerNameError for anything that is not a Matrix server name."""
    if not name or len(name) > 255:
        raise ServerNameError("a Matrix server name has 1 to 255 characters")
    host, port_text = name, None
    if name.startswith("["):
        host, sep, rest = name[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ServerNameError("a bracketed IPv6 address needs its closing ]")
        port_text = rest[1:] if rest else None
        try:
            address: IPAddress | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise ServerNameError("not an IPv6 address inside the brackets") from None
    else:
        if ":" in name:
            host, _, port_text = name.rpartition(":")
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            address = None
            labels = host.split(".")
            if not all(_LABEL_RE.fullmatch(label) for label in labels):
                raise ServerNameError("not a DNS host name") from None
    port = None
    if port_text is not None:
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise ServerNameError("the port must be 1..65535")
        port = int(port_text)
    return host, port, address


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address (IPv4-mapped IPv6 judged as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and refuses a host if any of its
    addresses is not public (unless private networks are allowed).
    The connector connects to the addresses returned here, so the check cannot be
    undone by a second lookup."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self._inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return results
        for result in results:
            try:
                address = ipaddress.ip_address(result["host"])
            except ValueError:
                raise OSError(errno.EACCES, f"{host} resolves to {result['host']}, not a plain IP address") from None
            if not is_public(address):
                raise OSError(errno.EACCES, f"{host} resolves to {address}, which is not a public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


class Homeservers:
    """Server names whose homeserver URL is known, so their tokens are checked there
    first: the operator's map (``[bridge.openid_homeservers]``) and the bot's (its own
    homeserver, and its own table, pushed over the control API). The operator's entry
    wins where both name a server."""

    def __init__(self, configured: dict[str, str] | None = None) -> None:
        self.configured = dict(configured or {})
        self.from_bot: dict[str, str] = {}

    def set_from_bot(self, mapping: dict[str, str]) -> None:
        self.from_bot = dict(mapping)

    def get(self, server_name: str) -> str | None:
        return self.configured.get(server_name) or self.from_bot.get(server_name)

    def as_dict(self) -> dict[str, str]:
        return {**self.from_bot, **self.configured}


@dataclass
class Sessions:
    """The outgoing sessions of OpenID checks. ``public`` (discovery, and userinfo on a
    discovered server) reaches public addresses only, unless private networks are
    allowed. ``known`` is used for nothing but the userinfo URL of a known homeserver,
    which the operator or the bot gave and which may be on a private address: no
    caller-chosen name, port, path or redirect ever goes through it."""

    public: aiohttp.ClientSession
    known: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def open_sessions(*, allow_private: bool) -> AsyncIterator[Sessions]:
    resolver = PublicOnlyResolver(allow_private=allow_private)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=100),
                                     trust_env=False) as public, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), trust_env=False) as known:
        yield Sessions(public, known)


class _Checks:
    """The address checks and bounded reads of one verification."""

    def __init__(self, session: aiohttp.ClientSession, allow_private: bool, secret: str,
                 *, trusted: bool = False) -> None:
        self.session = session
        self.allow_private = allow_private
        self.secret = secret
        self.trusted = trusted  # a configured homeserver: its URL is used as given

    def check_url(self, url: URL) -> None:
        """Only https, and an IP-literal host must be public (host names are checked by
        the session's resolver when connecting)."""
        if self.trusted:
            return
        if url.scheme != "https" or not url.host:
            raise OpenIdError(f"refusing to follow {url.scheme or 'a relative'} URL")
        try:
            address = ipaddress.ip_address(url.host)
        except ValueError:
            return
        if not self.allow_private and not is_public(address):
            raise OpenIdError(f"{address} is not a public address")

    async def get_json(self, url: str, params: dict[str, str] | None = None, *,
                       follow: int = 0) -> tuple[int, Any]:
        """(status, parsed JSON or None) of a GET, following up to ``follow`` redirects."""
        target = URL(url)
        for _ in range(follow + 1):
            self.check_url(target)
            async with self.session.get(target, params=params, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers and follow:
                    target = URL(urljoin(str(target), resp.headers["Location"]))
                    continue
                data = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(data) > MAX_ANSWER_BYTES:
                    raise OpenIdError(f"{target.host} answered more than {MAX_ANSWER_BYTES} bytes")
                try:
                    return resp.status, jsonsafe.loads(data, max_bytes=MAX_ANSWER_BYTES)
                except jsonsafe.JsonRefused:
                    return resp.status, None
        raise OpenIdError(f"more than {follow} redirects")

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "<token>") if self.secret else text


def _base_url(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port or DEFAULT_PORT}"


async def _discover(checks: _Checks, host: str, port: int | None) -> str:
    """The federation base URL for a server name (a host name, not an IP literal)."""
    if port is not None:
        return _base_url(host, port)  # an explicit port: no delegation
    try:
        status, data = await checks.get_json(f"https://{host}/.well-known/matrix/server", follow=MAX_REDIRECTS)
    except (aiohttp.ClientError, OpenIdError, OSError, ValueError):
        status, data = 0, None
    delegated = data.get("m.server") if status == 200 and isinstance(data, dict) else None
    if isinstance(delegated, str):
        try:
            d_host, d_port, _ = parse_server_name(delegated)
        except ServerNameError:
            raise OpenIdError(f"{host}'s .well-known delegates to an invalid server name") from None
        return _base_url(d_host, d_port)
    return _base_url(host, None)


async def verify(sessions: Sessions, access_token: str, server_name: str,
                 homeservers: Homeservers, *, allow_private: bool = False,
                 timeout_s: float = 10.0) -> str:
    """The Matrix user id the OpenID ``access_token`` belongs to, on ``server_name``.

    A known homeserver is asked at its URL; if that cannot be reached or answers 404
    (say, a proxy that routes only the client API), discovery is tried as for any other
    name. Raises ServerNameError for a malformed name and OpenIdError (with the reason,
    for the log) for every failed check."""
    base = homeservers.get(server_name)
    public = _Checks(sessions.public, allow_private, access_token)
    first = ""
    try:
        async with asyncio.timeout(timeout_s):
            if base is not None:
                known = _Checks(sessions.known, allow_private, access_token, trusted=True)
                try:
                    status, data = await _ask_userinfo(known, base, access_token)
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    first = known.scrub(f"{base} could not be reached: {type(exc).__name__}: {exc}")
                else:
                    if status != 404:
                        return _user_id_from(base, status, data, server_name)
                    first = f"{base} answered 404"
            host, port, address = parse_server_name(server_name)
            if address is not None:
                raise OpenIdError("the server name is an IP literal; only DNS names are looked up")
            found = await _discover(public, host, port)
            status, data = await _ask_userinfo(public, found, access_token)
    except TimeoutError:
        raise OpenIdError(_after(first, f"no answer within {timeout_s:g}s")) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if isinstance(exc, ServerNameError):
            raise
        raise OpenIdError(_after(first, public.scrub(f"{server_name} could not be reached: "
                                                     f"{type(exc).__name__}: {exc}"))) from None
    except OpenIdError as exc:
        raise OpenIdError(_after(first, str(exc))) from None
    return _user_id_from(found, status, data, server_name)


def _after(first: str, then: str) -> str:
    return f"{first}; then by discovery: {then}" if first else then


async def _ask_userinfo(checks: _Checks, base: str, access_token: str) -> tuple[int, Any]:
    url = f"{base.rstrip('/')}/_matrix/federation/v1/openid/userinfo"
    return await checks.get_json(url, {"access_token": access_token})


def _user_id_from(base: str, status: int, data: Any, server_name: str) -> str:
    if status != 200:
        errcode = data.get("errcode") if isinstance(data, dict) else None
        raise OpenIdError(f"{base} answered {status}" + (f" ({errcode})" if isinstance(errcode, str) else ""))
    user_id = data.get("sub") if isinstance(data, dict) else None
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        raise OpenIdError(f"{base} gave no user id")
    if user_id.split(":", 1)[-1] != server_name:
        raise OpenIdError(f"{user_id[:300]} does not belong to {server_name}")
    return user_id
