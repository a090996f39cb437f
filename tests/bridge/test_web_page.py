"""The web page in headless Chromium (driven over the DevTools protocol)."""

import asyncio
import itertools
import json
import shutil
import subprocess

import aiohttp
import pytest

from bridge.client import SpaceClient

from .conftest import rms, sine

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


async def test_space_page_listens_speaks_and_reacts(bridge, browser):
    await bridge.open("web", roles={"@web:x": "speaker", "@py:x": "host"})
    tok = bridge.token("web", "@web:x", "speaker")
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/web?token={tok}")
    await browser.wait_js("window.chorus && window.chorus.me === '@web:x'")
    assert await browser.js("document.getElementById('title').textContent") == "Test web"
    assert await browser.js("document.getElementById('mic').hidden") is False

    async with SpaceClient(bridge.url, "web", bridge.token("web", "@py:x", "host")) as py:
        await py.wait_type("hello")
        # listening: the page decodes what the Python speaker says
        await browser.js("startListening()")
        speaking = asyncio.create_task(py.speak(sine(440, 3.0, amp=12000)))
        try:
            await browser.wait_js("window.chorus.stats.maxRms > 0.1")
        finally:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)
        # speaking: Chromium's fake microphone (a beep) reaches the Python client
        await browser.js("startMic()")
        await browser.wait_js("window.chorus.stats.framesSent > 25")

        async def heard_browser():
            while rms(py.heard()[-48000:]) < 300:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(heard_browser(), 15)
        assert await browser.js("window.chorus.stats.errors.length") == 0
        # reactions from the page reach everyone
        await browser.js("document.querySelector('#react button').click()")
        r = await py.wait_type("reaction")
        assert r["user_id"] == "@web:x" and r["key"] == "👏"
        # speaking indicator for the browser's user
        await browser.wait_js(
            "[...document.querySelectorAll('#people li.speaking')]"
            ".some(li => li.textContent.startsWith('@web:x'))")


async def test_index_lists_public_spaces(bridge, browser):
    await bridge.open("pub", public=True)
    await bridge.open("hidden", public=False)
    await browser.call("Page.navigate", url=f"{bridge.url}/")
    links = await browser.wait_js(
        "[...document.querySelectorAll('#spaces a')].map(a => a.textContent).join('|')")
    assert links == "Test pub"
