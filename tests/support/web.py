"""Small aiohttp services a test stands up on loopback (a widget host, a stand-in
homeserver), and the OpenID token Element's widget driver would hand a widget."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 at a free port: (its runner, to clean up in a finally; the port)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def openid_token(homeserver, user) -> dict[str, Any]:
    """A real OpenID token from the homeserver for ``user``, as the widget API passes it."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{homeserver.base_url}/_matrix/client/v3/user/{quote(user.user_id)}"
                             "/openid/request_token", json={},
                             headers={"Authorization": f"Bearer {user.access_token}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()
