"""Element widget sign-in: an OpenID token from the user's real homeserver becomes a bridge
token for that user with the role the bot pushed; anything else is refused."""

from __future__ import annotations

import secrets
from urllib.parse import quote

import aiohttp
import pytest

from bridge import tokens
from tests.support.matrix_user import unique_localpart

from .conftest import SECRET, make_settings, run_bridge
from .test_web_page import CHROMIUM, browser  # noqa: F401 - the Chromium fixture


async def _openid_token(homeserver, user) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{homeserver.base_url}/_matrix/client/v3/user/{quote(user.user_id)}"
                             "/openid/request_token", json={},
                             headers={"Authorization": f"Bearer {user.access_token}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture
async def widget_bridge(homeserver, tmp_path):
    running = await run_bridge(make_settings(
        tmp_path, openid_homeservers=((homeserver.server_name, homeserver.base_url),)))
    yield running
    await running.session.close()
    await running.runner.cleanup()


async def _login(bridge, space_id: str, body) -> tuple[int, dict]:
    async with bridge.session.post(f"{bridge.url}/spaces/{space_id}/openid", json=body) as resp:
        return resp.status, await resp.json()


async def test_a_real_openid_token_signs_the_user_in_with_their_role(homeserver, widget_bridge) -> None:
    speaker = homeserver.register(unique_localpart("speaker"), secrets.token_urlsafe(12))
    listener = homeserver.register(unique_localpart("listener"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid", public=True, roles={speaker.user_id: "speaker"})
    for user, role in ((speaker, "speaker"), (listener, "listener")):
        oid = await _openid_token(homeserver, user)
        status, body = await _login(widget_bridge, "wid", {"access_token": oid["access_token"],
                                                         "matrix_server_name": oid["matrix_server_name"]})
        assert status == 200, body
        assert (body["user_id"], body["role"]) == (user.user_id, role)
        claims = tokens.verify(SECRET, body["token"], "wid")
        assert (claims.user, claims.role) == (user.user_id, role)


async def test_forged_mismatched_and_unknown_are_refused(homeserver, widget_bridge) -> None:
    user = homeserver.register(unique_localpart("user"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid2", public=True)
    oid = await _openid_token(homeserver, user)
    status, body = await _login(widget_bridge, "wid2", {"access_token": "forged",
                                                       "matrix_server_name": homeserver.server_name})
    assert status == 401 and "could not verify your Matrix identity" in body["error"]
    status, body = await _login(widget_bridge, "wid2", {"access_token": oid["access_token"],
                                                       "matrix_server_name": "example.org:1"})
    assert status == 401
    status, body = await _login(widget_bridge, "nope", {"access_token": oid["access_token"],
                                                       "matrix_server_name": homeserver.server_name})
    assert status == 404
    status, body = await _login(widget_bridge, "wid2", {"access_token": oid["access_token"]})
    assert status == 400 and body["field"] == "matrix_server_name"


async def test_a_private_space_needs_a_role(homeserver, widget_bridge) -> None:
    member = homeserver.register(unique_localpart("member"), secrets.token_urlsafe(12))
    outsider = homeserver.register(unique_localpart("outsider"), secrets.token_urlsafe(12))
    await widget_bridge.open("priv", public=False, roles={member.user_id: "listener"})
    oid = await _openid_token(homeserver, outsider)
    status, body = await _login(widget_bridge, "priv", {"access_token": oid["access_token"],
                                                       "matrix_server_name": oid["matrix_server_name"]})
    assert status == 403 and outsider.user_id in body["error"]
    oid = await _openid_token(homeserver, member)
    status, body = await _login(widget_bridge, "priv", {"access_token": oid["access_token"],
                                                       "matrix_server_name": oid["matrix_server_name"]})
    assert status == 200 and body["role"] == "listener"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_the_page_signs_in_inside_a_widget_host(homeserver, widget_bridge, browser) -> None:  # noqa: F811
    """A stand-in for Element: a parent page that embeds the space page as a widget and
    answers its widget-API requests with a real OpenID token from Synapse."""
    import asyncio
    import json

    from aiohttp import web

    user = homeserver.register(unique_localpart("widget"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid3", public=True, roles={user.user_id: "speaker"})
    creds = await _openid_token(homeserver, user)

    async def parent(request: web.Request) -> web.Response:
        page = f"""<!doctype html><iframe id="w" allow="microphone"
          src="{widget_bridge.url}/spaces/wid3?widget=1&widgetId=w1&parentUrl={request.url}"></iframe>
          <script>
          const creds = {json.dumps(creds)};
          window.addEventListener("message", (ev) => {{
            const m = ev.data || {{}};
            if (m.api === "fromWidget" && m.action === "get_openid") {{
              ev.source.postMessage({{...m, response: {{state: "allowed", ...creds}}}}, "*");
            }}
          }});
          document.getElementById("w").onload = () => document.getElementById("w").contentWindow
            .postMessage({{api: "toWidget", widgetId: "w1", requestId: "cap1", action: "capabilities",
                          data: {{}}}}, "*");
          </script>"""
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", parent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        await browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        stage = widget_bridge.stage("wid3")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(c.user_id == user.user_id for c in stage.clients.values()):
            assert loop.time() < deadline, "the widget page never connected as the Matrix user"
            await asyncio.sleep(0.1)
        client = next(c for c in stage.clients.values() if c.user_id == user.user_id)
        assert stage.role_of(client) == "speaker"
    finally:
        await runner.cleanup()
