"""Token hygiene and the headers of every answer (issue 15, item 4): the page takes its
token out of the address bar at once, a link followed from it sends no Referer, and a
script injected into it does not run (headless Chromium)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from bridge.page_headers import content_security_policy, security_headers, sources_for
from tests.support.web import serve_on_loopback

from .test_web_page import CHROMIUM, browser  # noqa: F401 - the Chromium fixture

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# -- the headers, in pure logic ------------------------------------------------------------


def test_other_bridges_are_allowed_over_http_and_websocket_and_nothing_else() -> None:
    assert sources_for("https://edge1.example.org") == ["https://edge1.example.org", "wss://edge1.example.org"]
    assert sources_for("http://127.0.0.1:9100/") == ["http://127.0.0.1:9100", "ws://127.0.0.1:9100"]
    assert sources_for("http://[::1]:9100") == ["http://[::1]:9100", "ws://[::1]:9100"]
    # an address that would smuggle in a directive, or is not a bridge's, is left out
    for bad in ("http://a.org; script-src *", "javascript:alert(1)", "http://a.org *", "ftp://a.org", "",
                "http://user@a.org", "http://[::1", "http://a.org\r\nX-Evil: 1"):
        assert sources_for(bad) == [], bad
    policy = content_security_policy(["https://edge1.example.org", "http://x; script-src *"])
    assert "connect-src 'self' https://edge1.example.org wss://edge1.example.org;" in policy
    assert policy.count("script-src") == 1 and "unsafe" not in policy
    assert "frame-ancestors" not in policy and "default-src 'none'" in policy  # any Matrix client may frame it


# -- what the bridge sends -------------------------------------------------------------------


async def test_every_page_stream_and_answer_carries_the_headers(bridge) -> None:
    await bridge.open("hdr", public=False)
    token = bridge.token("hdr", "@web:x")
    paths = ["/", "/spaces/hdr", "/static/space.js", "/static/capture-worklet.js", "/static/index.js",
             "/api/spaces", "/healthz", "/spaces/nope/live.ogg", f"/spaces/hdr/live.ogg?token={token}"]
    expected = security_headers([bridge.settings.public_url] if bridge.settings.public_url else [])
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(bridge.url + path) as resp:
                for name, value in expected.items():
                    assert resp.headers.get(name) == value, (path, name, resp.headers.get(name))
        async with http.ws_connect(f"{bridge.url}/spaces/hdr/ws?token={token}") as ws:
            assert ws._response.headers.get("Referrer-Policy") == "no-referrer"


# -- in Chromium -------------------------------------------------------------------------------


@needs_chromium
async def test_the_token_leaves_the_address_bar_and_a_reload_keeps_it(bridge, browser) -> None:  # noqa: F811
    await bridge.open("tab", public=False, roles={"@web:x": "listener"})
    token = bridge.token("tab", "@web:x")
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/tab?token={token}&x=1")
    await browser.wait_js("window.chorus && window.chorus.me === '@web:x'")
    assert await browser.js("location.search") == "?x=1"
    history = await browser.call("Page.getNavigationHistory")  # replaced, not pushed: no entry holds it
    assert not [e["url"] for e in history["entries"] if token in e["url"]]
    assert await browser.js("sessionStorage.getItem('chorus.token.tab')") == token
    assert token not in await browser.js("document.documentElement.outerHTML.replace(/live\\.ogg\\?token=[^\"]*/, '')")
    await browser.call("Page.reload")
    await browser.wait_js("document.readyState === 'complete' && window.chorus && window.chorus.me === '@web:x'")
    assert "token" not in await browser.js("location.href")


@needs_chromium
async def test_a_followed_link_sends_no_referer_and_an_injected_script_does_not_run(bridge, browser) -> None:  # noqa: F811
    await bridge.open("ref", public=False, roles={"@web:x": "listener"})
    seen: list[dict] = []
    arrived = asyncio.Event()

    async def tip_jar(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        arrived.set()
        return web.Response(text="thanks", content_type="text/html")

    outside = web.Application()
    outside.router.add_get("/tip", tip_jar)
    runner, port = await serve_on_loopback(outside)
    try:
        await browser.call("Page.navigate", url=f"{bridge.url}/spaces/ref?token={bridge.token('ref', '@web:x')}")
        await browser.wait_js("window.chorus && window.chorus.me === '@web:x'")
        # an inline script and an inline handler, as an injection would try them
        await browser.js("""
            window.violations = [];
            document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
            const s = document.createElement('script');
            s.textContent = 'window.injected = 1';
            document.body.append(s);
            const img = document.createElement('img');
            img.setAttribute('onerror', 'window.injectedHandler = 1');
            img.src = 'data:,broken';
            document.body.append(img);
        """)
        await browser.wait_js("window.violations.length >= 2")
        assert await browser.js("typeof window.injected") == "undefined"
        assert await browser.js("typeof window.injectedHandler") == "undefined"
        assert sorted(await browser.js("window.violations")) == ["script-src-attr", "script-src-elem"]
        # a click on a link to another site (as a tip jar's would be)
        await browser.js(f"""
            const a = document.createElement('a');
            a.href = 'http://127.0.0.1:{port}/tip';
            a.textContent = 'tip';
            document.body.append(a);
            a.click();
        """)
        await asyncio.wait_for(arrived.wait(), 15)
        assert "Referer" not in seen[0] and "referer" not in {k.lower() for k in seen[0]}, seen[0]
    finally:
        await runner.cleanup()
