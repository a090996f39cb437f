"""Who is this Element user? A Matrix OpenID token, checked with the user's homeserver.

Inside Element the page runs as a widget and asks the widget API for an OpenID token; the
bridge sends it to the user's homeserver (``/_matrix/federation/v1/openid/userinfo``) and
learns the user id. The homeserver's address comes from ``openid_homeservers`` (server name
-> base URL) if set there, else from ``https://<server>/.well-known/matrix/server``, else
``https://<server>:8448``.
"""

from __future__ import annotations

import re

import aiohttp

SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class OpenIdError(Exception):
    """The token could not be verified; the message says why (for the person)."""


async def _discover(session: aiohttp.ClientSession, server_name: str, timeout: aiohttp.ClientTimeout) -> str:
    if ":" in server_name.rsplit("]", 1)[-1]:
        return f"https://{server_name}"  # an explicit port: no delegation
    try:
        async with session.get(f"https://{server_name}/.well-known/matrix/server", timeout=timeout) as resp:
            if resp.status == 200:
                delegated = (await resp.json(content_type=None)).get("m.server", "")
                if isinstance(delegated, str) and SERVER_NAME_RE.match(delegated):
                    host = delegated if ":" in delegated.rsplit("]", 1)[-1] else f"{delegated}:8448"
                    return f"https://{host}"
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass
    return f"https://{server_name}:8448"


async def verify(session: aiohttp.ClientSession, access_token: str, server_name: str,
                 homeservers: dict[str, str], timeout_s: float = 10.0) -> str:
    """The Matrix user id the OpenID ``access_token`` belongs to, on ``server_name``."""
    if not SERVER_NAME_RE.match(server_name):
        raise OpenIdError(f"“{server_name}” is not a Matrix server name")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    base = homeservers.get(server_name) or await _discover(session, server_name, timeout)
    url = f"{base.rstrip('/')}/_matrix/federation/v1/openid/userinfo"
    try:
        async with session.get(url, params={"access_token": access_token}, timeout=timeout) as resp:
            data = await resp.json(content_type=None) if resp.content_type.endswith("json") else {}
            if resp.status != 200:
                raise OpenIdError(f"{server_name} says: {data.get('error') or resp.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OpenIdError(f"{server_name} could not be reached ({type(exc).__name__})") from None
    user_id = data.get("sub")
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        raise OpenIdError(f"{server_name} gave no user id")
    if user_id.split(":", 1)[-1] != server_name:
        raise OpenIdError(f"{user_id} does not belong to {server_name}")
    return user_id
