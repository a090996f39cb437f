"""The web page in headless Chromium (driven over the DevTools protocol)."""

import asyncio
import itertools
import json
import shutil
import subprocess

import aiohttp
import pytest

from bridge import tokens
from bridge.client import SpaceClient
from tests.support.icecast import IcecastServer

from .conftest import SECRET, make_settings, rms, run_bridge, sine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params):
        msg_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=30)).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression,
                                 awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    async def wait_js(self, expression: str, timeout: float = 15.0):
        async def poll():
            while True:
                value = await self.js(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)
        return await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def browser(tmp_path):
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"

    async def devtools_port():
        while not port_file.exists() or not port_file.read_text().strip():
            await asyncio.sleep(0.05)
        return int(port_file.read_text().split()[0])
    try:
        port = await asyncio.wait_for(devtools_port(), 30)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [p for p in await resp.json() if p["type"] == "page"]
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                          max_msg_size=0) as ws:
                yield Browser(ws)
    finally:
        proc.terminate()
        proc.wait(10)


async def _page_plays_what_is_said(browser: Browser, py: SpaceClient) -> None:
    """The page starts listening and plays (loud enough) a tone the Python client says."""
    await browser.js("startListening()")
    speaking = asyncio.create_task(py.speak(sine(440, 3.0, amp=12000)))
    try:
        await browser.wait_js("window.chorus.stats.maxRms > 0.1")
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)


async def test_space_page_listens_speaks_and_reacts(bridge, browser):
    await bridge.open("web", roles={"@web:x": "speaker", "@py:x": "host"})
    tok = bridge.token("web", "@web:x", "speaker")
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/web?token={tok}")
    await browser.wait_js("window.chorus && window.chorus.me === '@web:x'")
    assert await browser.js("document.getElementById('title').textContent") == "Test web"
    assert await browser.js("document.getElementById('mic').hidden") is False

    async with SpaceClient(bridge.url, "web", bridge.token("web", "@py:x", "host")) as py:
        await py.wait_type("hello")
        # listening: the page decodes what the Python speaker says, in single frames
        await _page_plays_what_is_said(browser, py)
        assert await browser.js("window.chorus.stats.bundlesIn") == 0
        # speaking: Chromium's fake microphone (a beep) reaches the Python client
        await browser.js("startMic()")
        await browser.wait_js("window.chorus.stats.framesSent > 25")

        async def heard_browser():
            while rms(py.heard()[-48000:]) < 300:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(heard_browser(), 15)
        assert await browser.js("window.chorus.stats.errors.length") == 0
        # reactions from the page reach everyone, counted in the next batch
        await browser.js("document.querySelector('#react button').click()")
        r = await py.wait_type("activity", where=lambda m: m["reactions"])
        assert r["reactions"] == {"👏": 1}
        await browser.wait_js("window.chorus.stats.reactions === 1")
        # the ring on the browser's user's face, as they speak
        await browser.wait_js(
            "document.querySelector('#stage li[data-user=\"@web:x\"]').classList.contains('speaking')")


async def test_listening_page_plays_audio_that_comes_in_bundles(bridge, browser):
    """An anonymous listener's page asks for bundles, gets them (100 ms, the default) and
    plays what is in them; a page that may speak gets single frames (the test above)."""
    await bridge.open("bun", roles={"@py:x": "host"})
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/bun")
    await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
    assert await browser.js("window.chorus.bundleMs") == 100
    (page,) = bridge.stage("bun").clients.values()
    assert page.wants_bundles
    async with SpaceClient(bridge.url, "bun", bridge.token("bun", "@py:x", "host")) as py:
        await py.wait_type("hello")
        await _page_plays_what_is_said(browser, py)
    bundles = await browser.js("window.chorus.stats.bundlesIn")
    frames = await browser.js("window.chorus.stats.framesIn")
    assert page.id in bridge.stage("bun").bundles and bundles > 0 and frames >= 5 * (bundles - 1)
    assert await browser.js("window.chorus.stats.errors.length") == 0


async def test_page_reconnects_after_the_bridge_drops_it_and_stops_when_the_space_ends(
        bridge, browser):
    await bridge.open("rc", roles={"@h:x": "host"})
    stage = bridge.stage("rc")
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/rc")
    await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
    assert await browser.js("document.getElementById('conn').hidden") is True
    (first,) = stage.clients.values()
    # the bridge drops the page's socket (as it would a client it found too slow)
    first.kick(4408, "too slow: fell behind the live audio")
    await browser.wait_js("window.chorus.closed && window.chorus.closed.code === 4408")
    await browser.wait_js("window.chorus.reconnects >= 1 && window.chorus.conn === 'connected'",
                          timeout=20)
    (second,) = stage.clients.values()
    assert second.id != first.id
    frames = await browser.js("window.chorus.stats.framesIn")
    await browser.wait_js(f"window.chorus.stats.framesIn > {frames + 10}")
    # the space ends: the page says so and does not try again
    status, _ = await bridge.control("DELETE", "/spaces/rc")
    assert status == 200
    await browser.wait_js("window.chorus.conn === 'ended'")
    assert "The space ended" in await browser.js("document.getElementById('conn-text').textContent")
    assert await browser.js("window.chorus.retryTimer") is None
    assert await browser.js("document.getElementById('conn').hidden") is False


async def test_page_comes_back_after_a_bridge_restart(tmp_path, browser):
    """A dead bridge (connection refused) means retrying with growing, jittered delays;
    when the bridge is back on the same address, and once the space is open on it again,
    the page is listening again."""
    running = await run_bridge(make_settings(tmp_path))
    port = int(running.url.rsplit(":", 1)[1])
    second = None
    try:
        await running.open("rs")
        await browser.call("Page.navigate", url=f"{running.url}/spaces/rs")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
        await running.session.close()
        await running.runner.cleanup()  # closes with 1001 "bridge shutting down"
        await browser.wait_js("window.chorus.conn === 'waiting' && window.chorus.reconnects >= 1")
        text = await browser.js("document.getElementById('conn-text').textContent")
        assert text.startswith("Connection lost") and "Reconnecting in" in text
        second = await run_bridge(make_settings(tmp_path, listen_port=port))
        # the new bridge does not know the space until the bot opens it there again: the
        # page hears "no such space" and keeps trying, saying why
        await browser.wait_js(
            "window.chorus.closed && window.chorus.closed.code === 4404"
            " && window.chorus.conn === 'waiting' && document.getElementById('conn-text')"
            ".textContent.includes('waiting for the space to come back')", timeout=60)
        await second.open("rs")
        await browser.wait_js("window.chorus.conn === 'connected'", timeout=60)
        assert len(second.stage("rs").clients) == 1
    finally:
        if second is not None:
            await second.session.close()
            await second.runner.cleanup()
        if not running.session.closed:
            await running.session.close()
            await running.runner.cleanup()


async def test_refused_link_is_explained_and_not_retried(bridge, browser):
    await bridge.open("priv", public=False)
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/priv?token=forged")
    await browser.wait_js("window.chorus && window.chorus.conn === 'refused'")
    text = await browser.js("document.getElementById('conn-text').textContent")
    assert "Your link was refused" in text and "malformed" in text
    assert await browser.js("window.chorus.retryTimer") is None


async def test_widget_listens_only_to_its_parent(bridge, browser):
    """The widget answers the window that embeds it, at the origin it was given
    (parentUrl); a sibling frame (same origin as the parent, or another origin) posting
    widget-API requests gets nothing."""
    from aiohttp import web

    await bridge.open("wid", public=True)

    async def parent(request: web.Request) -> web.Response:
        evil_same = f"http://127.0.0.1:{request.url.port}/evil"
        evil_other = f"http://127.0.0.1:{other_port}/evil"
        page = f"""<!doctype html>
          <iframe id="w" src="{bridge.url}/spaces/wid?widget=1&widgetId=w1&parentUrl={request.url}"></iframe>
          <script>
          window.fromWidget = [];
          window.evilSent = 0;
          window.addEventListener("message", (ev) => {{
            if (ev.data === "evil-sent") {{
              if (++window.evilSent === 2) {{  // both siblings have posted: now the real parent asks
                document.getElementById("w").contentWindow.postMessage(
                  {{api: "toWidget", widgetId: "w1", requestId: "after-evil", action: "probe", data: {{}}}}, "*");
              }}
              return;
            }}
            if (ev.data && ev.data.api) window.fromWidget.push(ev.data);
          }});
          document.getElementById("w").onload = () => {{
            for (const src of ["{evil_same}", "{evil_other}"]) {{
              const f = document.createElement("iframe");
              f.src = src;
              document.body.append(f);
            }}
          }};
          </script>"""
        return web.Response(text=page, content_type="text/html")

    async def evil(request: web.Request) -> web.Response:
        page = """<!doctype html><script>
          const widget = window.parent.frames[0];
          for (const action of ["capabilities", "openid_credentials"]) {
            widget.postMessage({api: "toWidget", widgetId: "w1", requestId: "evil-" + action + location.port,
                                action, data: {state: "allowed", access_token: "stolen",
                                               matrix_server_name: "evil.example"}}, "*");
          }
          window.parent.postMessage("evil-sent", "*");
          </script>"""
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", parent)
    app.router.add_get("/evil", evil)
    runner = web.AppRunner(app)
    await runner.setup()
    sites = [web.TCPSite(runner, "127.0.0.1", 0), web.TCPSite(runner, "127.0.0.1", 0)]
    for site in sites:
        await site.start()
    parent_port, other_port = (s._server.sockets[0].getsockname()[1] for s in sites)
    try:
        await browser.call("Page.navigate", url=f"http://127.0.0.1:{parent_port}/")
        answered = await browser.wait_js(
            "window.fromWidget && window.fromWidget.find(m => m.requestId === 'after-evil'"
            " && m.response !== undefined)")
        assert answered["response"] == {}
        # the siblings' requests came first and were never answered
        ids = await browser.js("window.fromWidget.map(m => m.requestId || m.action)")
        assert not [i for i in ids if i.startswith("evil-")], ids
        assert not bridge.stage("wid").clients  # and nobody signed in with the stolen token
    finally:
        await runner.cleanup()


async def test_a_signed_in_page_renews_its_token_before_it_ends(bridge, browser):
    """A page whose token lasts 3 s asks for a fresh one in time, keeps listening past the
    first one's end, and keeps the new one for the tab (a reload works), not in its address."""
    await bridge.open("tok", public=False, roles={"@web:x": "listener"})
    first = bridge.token("tok", "@web:x", ttl=3)
    ends = tokens.verify(SECRET, first, "tok").exp
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/tok?token={first}")
    await browser.wait_js("window.chorus && window.chorus.renewals >= 1", timeout=15)
    assert await browser.js("window.chorus.expiresAt") > ends + 60
    # past the first token's end it is still the same connection, still playing
    await browser.wait_js(f"Date.now() / 1000 > {ends} + 1.5", timeout=15)
    frames = await browser.js("window.chorus.stats.framesIn")
    await browser.wait_js(f"window.chorus.stats.framesIn > {frames + 10}")
    assert await browser.js("window.chorus.conn") == "connected"
    assert await browser.js("window.chorus.reconnects") == 0
    assert "token=" not in await browser.js("location.href")
    kept = await browser.js("sessionStorage.getItem('chorus.token.tok')")
    assert kept != first and tokens.verify(SECRET, kept, "tok").exp > ends + 60


async def test_a_page_whose_token_ends_unrenewed_says_why(bridge, browser):
    await bridge.open("old", public=False)
    # as a page that cannot renew: its renew messages never leave it
    await browser.call("Page.addScriptToEvaluateOnNewDocument", source=(
        "const send = WebSocket.prototype.send; WebSocket.prototype.send = function (data) {"
        " if (typeof data === 'string' && data.includes('renew')) return;"
        " return send.call(this, data); };"))
    await browser.call("Page.navigate",
                       url=f"{bridge.url}/spaces/old?token={bridge.token('old', '@web:x', ttl=2)}")
    await browser.wait_js("window.chorus && window.chorus.conn === 'refused'", timeout=15)
    text = await browser.js("document.getElementById('conn-text').textContent")
    assert "Your link was refused" in text and "token expired" in text


async def test_the_any_player_link_of_a_public_space_fed_to_icecast_is_the_relay(tmp_path, browser):
    """With an Icecast tier, a public space's page sends players to the relay (no token
    needed there); a private space's page keeps the bridge's own live.ogg."""
    ice = IcecastServer()
    running = None
    try:
        await ice.start()
        relay = f"http://127.0.0.1:{ice.port}/c"
        running = await run_bridge(make_settings(tmp_path, icecast_url=ice.url("/c"),
                                                 icecast_listen_url=relay))
        await running.open("loud")
        await running.open("quiet", public=False, roles={"@me:x": "listener"})
        await ice.wait_sources(lambda s: "/c/loud.ogg" in s)
        async with asyncio.timeout(10):  # and the bridge has had Icecast's answer
            while running.stage("loud").stats()["icecast"]["state"] != "live":
                await asyncio.sleep(0.02)
        await browser.call("Page.navigate", url=f"{running.url}/spaces/loud")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
        assert await browser.js("document.getElementById('ogg').href") == f"{relay}/loud.ogg"
        token = running.token("quiet", "@me:x")
        await browser.call("Page.navigate", url=f"{running.url}/spaces/quiet?token={token}")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
        assert await browser.js("document.getElementById('ogg').getAttribute('href')") == \
            f"/spaces/quiet/live.ogg?token={token}"
    finally:
        if running is not None:
            await running.session.close()
            await running.runner.cleanup()
        ice.close()
