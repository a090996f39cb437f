"""Element widget sign-in without federation: a user of the bot's own homeserver opens the
space room's widget and is signed in as themselves, their homeserver checked at the URL the
bot uses, not found by federation discovery (which cannot reach it: the test Synapse's
server name is "localhost", only federating with itself).

The widget host is matrix-widget-api's ``ClientWidgetApi``, the library Element Web embeds
widgets with (its own browser build, installed by ``make install`` from
tests/widget_host/package-lock.json), in a real headless Chromium; the widget's address is
made by ``Widget.getCompleteUrl`` from the state event the bot writes, plus ``widgetId`` and
``parentUrl`` as Element adds them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import cards
from bot.bridge_http import HttpBridge
from bot.config import settings_from_dict
from bot.runner import make_bridge, own_homeserver
from tests.bridge.conftest import SECRET
from tests.bridge.test_web_page import CHROMIUM, browser  # noqa: F401 - the Chromium fixture
from tests.support.bridge_process import BridgeProcess
from tests.support.matrix_user import unique_localpart
from tests.support.web import openid_token, serve_on_loopback

ROOT = Path(__file__).resolve().parents[2]
WIDGET_API_JS = ROOT / "tests" / "widget_host" / "node_modules" / "matrix-widget-api" / "dist" / "api.js"

HOST_PAGE = """<!doctype html><meta charset="utf-8"><title>widget host</title>
<iframe id="w" allow="microphone" style="width:600px;height:400px"></iframe>
<script src="/matrix-widget-api.js"></script>
<script>
const W = window.mxwidgets;
const setup = SETUP;
window.host = {asked: 0, ready: false, capabilities: null};
const widget = new W.Widget({...setup.content, creatorUserId: setup.bot});
const url = new URL(widget.getCompleteUrl({
  widgetRoomId: setup.room, currentUserId: setup.user, userDisplayName: "Ann",
  userHttpAvatarUrl: "", clientId: "io.element.web", clientTheme: "light",
  clientLanguage: "en", deviceId: "TESTDEVICE", baseUrl: setup.homeserver}));
url.searchParams.set("widgetId", widget.id);  // as Element adds them
url.searchParams.set("parentUrl", location.href.split("#", 2)[0]);
class Driver extends W.WidgetDriver {
  validateCapabilities(requested) { window.host.capabilities = [...requested]; return Promise.resolve(requested); }
  askOpenID(observer) {
    window.host.asked += 1;
    observer.update({state: W.OpenIDRequestState.Allowed, token: setup.credentials});
  }
}
const frame = document.getElementById("w");
const api = new W.ClientWidgetApi(widget, frame, new Driver());
api.on("ready", () => { window.host.ready = true; });
frame.src = url.toString();
</script>"""


def _widget_api_js() -> Path:
    assert WIDGET_API_JS.is_file(), (
        f"{WIDGET_API_JS} is missing: run `make install` (it runs npm ci in tests/widget_host)")
    return WIDGET_API_JS


async def _serve_host(setup: dict[str, Any]) -> tuple[web.AppRunner, str]:
    page = HOST_PAGE.replace("SETUP", json.dumps(setup))
    async def host(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def library(request: web.Request) -> web.FileResponse:
        return web.FileResponse(_widget_api_js())

    app = web.Application()
    app.router.add_get("/", host)
    app.router.add_get("/matrix-widget-api.js", library)
    runner, port = await serve_on_loopback(app)
    return runner, f"http://127.0.0.1:{port}/"


def _bot_settings(homeserver, tmp_path: Path, **bridge: Any):
    """The bot's config on its own homeserver, by URL: no local Synapse, no federation."""
    return settings_from_dict({
        "matrix": {"homeserver": homeserver.base_url, "user_id": f"@chorusbot:{homeserver.server_name}",
                   "password": "not-used-here"},
        "bridge": {"listen_port": 0, "recordings_dir": str(tmp_path / "recordings"), **bridge},
    })


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_element_widget_signs_in_a_user_of_the_bots_own_homeserver(
        homeserver, tmp_path, browser) -> None:  # noqa: F811
    _widget_api_js()  # installed, or a clear failure now rather than a timeout later
    settings = _bot_settings(homeserver, tmp_path)
    user = homeserver.register(unique_localpart("ann"), secrets.token_urlsafe(12))
    joined: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        if event.get("user_id") == user.user_id and event.get("type", "").endswith("joined"):
            joined.append(event)
            arrived.set()

    async with AsyncExitStack() as stack:
        bridge = await make_bridge(settings, stack)
        assert isinstance(bridge, HttpBridge)
        bridge.on_event(on_event)
        await bridge.start()
        stack.push_async_callback(bridge.close)
        # not public: only a user the bridge identified, holding a role, gets in
        await bridge.open_stage("own", "Own homeserver", public=False)
        await bridge.set_roles("own", {user.user_id: "speaker"})
        content = cards.widget_state(SimpleNamespace(id="own", title="Own homeserver"),
                                     bridge.page_url("own"))
        runner, host_url = await _serve_host({
            "content": content, "bot": settings.matrix.user_id, "room": "!room:" + homeserver.server_name,
            "user": user.user_id, "homeserver": homeserver.base_url,
            "credentials": await openid_token(homeserver, user)})
        stack.push_async_callback(runner.cleanup)
        await browser.call("Page.navigate", url=host_url)
        await asyncio.wait_for(arrived.wait(), 30)
        assert await browser.js("window.host.asked") == 1  # through the real widget driver
        assert await browser.js("window.host.ready") is True  # capabilities done, as in Element
        stats = await bridge.stats("own")
        assert stats.speakers_connected == 1  # connected as the Matrix user, with their role


def test_the_bots_homeserver_is_derived_from_its_config(caplog) -> None:
    settings = settings_from_dict({"matrix": {"homeserver": "https://matrix.example.org/",
                                              "user_id": "@chorus:example.org", "password": "x"}})
    assert own_homeserver(settings) == {"example.org": "https://matrix.example.org"}
    local = settings_from_dict({"local": {"server_name": "chorus.test"}})
    assert own_homeserver(local, "http://127.0.0.1:8008") == {"chorus.test": "http://127.0.0.1:8008"}
    assert own_homeserver(local) == {}  # local mode, before its Synapse is up
    # a URL the bridge would refuse (a secret in its query) starts nothing wrong: discovery
    odd = settings_from_dict({"matrix": {"homeserver": "https://hs.example.org/?key=s3cret",
                                         "user_id": "@chorus:example.org", "password": "x"}})
    assert own_homeserver(odd) == {}
    assert "federation discovery" in caplog.text and "s3cret" not in caplog.text


async def test_a_separate_bridge_on_another_machine_is_not_told_a_loopback_url(tmp_path, caplog) -> None:
    settings = settings_from_dict({
        "matrix": {"homeserver": "http://127.0.0.1:8008", "user_id": "@chorus:example.org", "password": "x"},
        "bridge": {"mode": "remote", "control_url": "http://bridge.internal:8089", "shared_secret": SECRET * 2,
                   "openid_homeservers": {"other.org": "https://matrix.other.org"}}})
    async with AsyncExitStack() as stack:
        remote = await make_bridge(settings, stack)
        assert isinstance(remote, HttpBridge)
        assert remote.homeservers == {"other.org": "https://matrix.other.org"}
        assert "not telling the bridge at http://bridge.internal:8089" in caplog.text
        near = await make_bridge(settings_from_dict({
            "matrix": {"homeserver": "http://127.0.0.1:8008", "user_id": "@chorus:example.org", "password": "x"},
            "bridge": {"mode": "remote", "control_url": "http://127.0.0.1:8089", "shared_secret": SECRET * 2}}),
            stack)
        assert isinstance(near, HttpBridge)
        assert near.homeservers == {"example.org": "http://127.0.0.1:8008"}


async def _sign_in(url: str, space_id: str, credentials: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/spaces/{space_id}/openid", json={
                "access_token": credentials["access_token"],
                "matrix_server_name": credentials["matrix_server_name"]}) as resp:
            return resp.status, await resp.json()


async def test_a_separate_bridge_learns_the_bots_homeserver_and_again_after_a_restart(
        homeserver, tmp_path) -> None:
    """``python -m bridge`` knows nothing of the bot's homeserver until the bot says it,
    and hears it again from the bot when it comes back from a kill -9."""
    user = homeserver.register(unique_localpart("bea"), secrets.token_urlsafe(12))
    proc = BridgeProcess(tmp_path / "bridge", SECRET)
    untold = HttpBridge(proc.url, proc.url, SECRET)
    told = HttpBridge(proc.url, proc.url, SECRET,
                      homeservers={homeserver.server_name: homeserver.base_url})
    try:
        await proc.start()
        await untold.start()
        await untold.open_stage("sep", "Separate", public=True)
        status, body = await _sign_in(proc.url, "sep", await openid_token(homeserver, user))
        assert (status, body) == (401, {"error": "could not verify your Matrix identity"})

        await told.start()
        assert told.available  # the push went through before start() returned
        status, body = await _sign_in(proc.url, "sep", await openid_token(homeserver, user))
        assert status == 200 and body["user_id"] == user.user_id, body

        before = told.resyncs
        await proc.kill()
        await proc.start()

        async def pushed_again() -> None:
            while not (told.resyncs > before and told.available):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(pushed_again(), 30)
        await told.open_stage("sep", "Separate", public=True)
        status, body = await _sign_in(proc.url, "sep", await openid_token(homeserver, user))
        assert status == 200 and body["user_id"] == user.user_id, body
    finally:
        await untold.close()
        await told.close()
        await proc.stop()


async def test_a_separate_bridge_reads_more_homeservers_from_its_config(homeserver, tmp_path) -> None:
    user = homeserver.register(unique_localpart("cy"), secrets.token_urlsafe(12))
    proc = BridgeProcess(tmp_path / "bridge", SECRET, extra_config=(
        f'[bridge.openid_homeservers]\n"{homeserver.server_name}" = "{homeserver.base_url}/"\n'))
    bot_side = HttpBridge(proc.url, proc.url, SECRET)
    try:
        await proc.start()
        await bot_side.start()
        await bot_side.open_stage("conf", "Configured", public=True)
        status, body = await _sign_in(proc.url, "conf", await openid_token(homeserver, user))
        assert status == 200 and body["user_id"] == user.user_id, body
    finally:
        await bot_side.close()
        await proc.stop()
