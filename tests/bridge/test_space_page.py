"""The live space page in headless Chromium: the stage with faces, names and a ring on whoever
is talking, the audience, captions, reactions over their sender, the host and tip jar,
sharing, the hand and its answers, on a phone and a desktop, light and dark. Screenshots
go to the test's temporary folder (``tmp_path/shots``) for a look."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import aiohttp

from bridge.client import SpaceClient
from tests.support.images import face_png

from .conftest import SECRET, sine
from .test_web_page import Browser, browser  # noqa: F401 - the fixture


async def press(browser: Browser, key: str, code: int) -> None:  # noqa: F811
    """A key pressed and let go, as a person's keyboard would (Enter types a return)."""
    text = {"Enter": "\r"}.get(key, "")
    await browser.call("Input.dispatchKeyEvent", type="keyDown", key=key, code=key, text=text,
                       windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)
    await browser.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=key,
                       windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)


PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
DESKTOP = {"width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": False}


async def shoot(browser: Browser, folder: Path, name: str) -> Path:  # noqa: F811
    folder.mkdir(exist_ok=True)
    shot = await browser.call("Page.captureScreenshot", format="png")
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


async def put_avatar(bridge, data: bytes) -> str:
    avatar_id = hashlib.sha256(data).hexdigest()
    async with bridge.session.put(f"{bridge.url}/control/v1/avatars/{avatar_id}", data=data,
                                  headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 201, await resp.text()
    return avatar_id


async def dress(bridge, space_id: str, people: dict, **info) -> None:
    """What the bot gives a page: the host, room link and tip jar, names and avatars."""
    status, body = await bridge.control("POST", f"/spaces/{space_id}",
                                        {"title": "Gardening hour", "public": True, **info})
    assert status == 200, body
    status, body = await bridge.control("PUT", f"/spaces/{space_id}/people", {"people": people})
    assert status == 200, body


def tile(user: str, then: str = "") -> str:
    return f"document.querySelector('#stage li[data-user=\"{user}\"]'){then}"


async def test_live_page_shows_faces_rings_audience_captions_and_reactions(bridge, browser, tmp_path):  # noqa: F811
    shots = tmp_path / "shots"
    await bridge.open("live", roles={"@ann:x": "host", "@bob:x": "speaker", "@cat:x": "speaker",
                                     "@web:x": "listener"})
    ann_face = await put_avatar(bridge, face_png((214, 120, 60)))
    await dress(bridge, "live", {
        "@ann:x": {"name": "Ann Example", "avatar": ann_face},
        "@bob:x": {"name": "Bob Builder", "avatar": None},
        "@cat:x": {"name": "Cat Stevens", "avatar": None},
        "@web:x": {"name": "Wendy Web", "avatar": None},
    }, host="@ann:x", room_url="https://matrix.to/#/!room:x",
        tips=[{"label": "PayPal", "url": "https://paypal.me/AnnExample"}])
    await browser.call("Emulation.setDeviceMetricsOverride", **DESKTOP)
    token = bridge.token("live", "@web:x")
    ann = SpaceClient(bridge.url, "live", bridge.token("live", "@ann:x", "host"))
    bob = SpaceClient(bridge.url, "live", bridge.token("live", "@bob:x", "speaker"))
    speaking = None
    try:
        for c in (ann, bob):
            await c.connect()
            await c.wait_type("hello")
        await browser.call("Page.navigate", url=f"{bridge.url}/spaces/live?token={token}")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
        # the top: live, title, host with their face, tip jar
        assert await browser.js("document.getElementById('state').textContent") == "● Live"
        assert await browser.js("document.getElementById('host-name').textContent") == "Ann Example"
        assert await browser.js("document.querySelector('#tip-links a').href") == "https://paypal.me/AnnExample"
        assert await browser.js("document.querySelector('#tip-links a').rel") == "noopener noreferrer"
        # the stage: host first, names, roles; a picture for Ann, initials for Bob
        await browser.wait_js(tile("@ann:x", ".querySelector('img.avatar').naturalWidth > 0"))
        names = await browser.js("[...document.querySelectorAll('#stage .name')].map(e => e.textContent)")
        assert names == ["Ann Example", "Bob Builder", "Cat Stevens"]
        roles = await browser.js("[...document.querySelectorAll('#stage .role')].map(e => e.textContent)")
        assert roles == ["Host", "Speaker", "Speaker"]
        assert await browser.js(tile("@bob:x", ".querySelector('.initials').textContent")) == "BB"
        # Cat has a speaker's role but is not connected
        await browser.wait_js(tile("@cat:x", ".classList.contains('away')"))
        assert await browser.js(tile("@cat:x", ".querySelector('.away-note').textContent")) == "not connected"
        assert not await browser.js(tile("@ann:x", ".classList.contains('away')"))
        # the audience: the page's own person, with their name
        await browser.wait_js("document.getElementById('count').textContent === '1'")
        assert await browser.js("document.querySelector('#audience li').getAttribute('aria-label')") == "Wendy Web"

        # Ann talks, Bob does not: the ring is on Ann only
        speaking = asyncio.create_task(ann.speak(sine(300, 20.0, amp=12000)))
        await browser.wait_js(tile("@ann:x", ".classList.contains('speaking')"))
        assert not await browser.js(tile("@bob:x", ".classList.contains('speaking')"))
        assert "speaking" in await browser.js(tile("@ann:x", ".getAttribute('aria-label')"))

        # a reaction from Bob rises from Bob's face; one from the audience from the bar
        await bob.react("🔥")
        await browser.wait_js("!!document.querySelector('.float[data-from=\"@bob:x\"]')")
        float_x = await browser.js("parseFloat(document.querySelector('.float[data-from=\"@bob:x\"]').style.left)")
        box = await browser.js(tile("@bob:x", ".querySelector('.face').getBoundingClientRect().toJSON()"))
        assert box["left"] - 40 <= float_x <= box["right"] + 40

        # captions: the panel shows the speaker's name and words; finals are read out
        stage = bridge.stage("live")
        stage._broadcast_json({"type": "captions", "enabled": True})
        stage._broadcast_json({"type": "caption", "space_id": "live", "user_id": "@ann:x", "utterance": 1,
                               "text": "welcome to the garden", "final": False, "start": 1.0, "end": 2.0})
        await browser.wait_js("!!document.querySelector('#captions li.partial')")
        stage._broadcast_json({"type": "caption", "space_id": "live", "user_id": "@ann:x", "utterance": 1,
                               "text": "welcome to the garden hour", "final": True, "start": 1.0, "end": 2.5})
        await browser.wait_js("document.getElementById('captions-live').textContent"
                              " === 'Ann Example: welcome to the garden hour'")
        line = await browser.js("document.querySelector('#captions li').textContent")
        assert line == "Ann Examplewelcome to the garden hour"
        assert await browser.js("document.getElementById('captions-panel').hidden") is False
        # hidden for this listener only, at a click
        await browser.js("document.getElementById('cc').click()")
        assert await browser.js("document.getElementById('captions-panel').hidden") is True
        await browser.js("document.getElementById('cc').click()")

        await shoot(browser, shots, "live-desktop")
        # a phone: nothing wider than the screen, the controls in reach
        await browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
        await browser.wait_js("innerWidth === 390")
        assert await browser.js("document.documentElement.scrollWidth <= innerWidth")
        bar = await browser.js("document.querySelector('.controls').getBoundingClientRect().toJSON()")
        assert bar["bottom"] <= 844 and bar["top"] > 844 / 2
        await shoot(browser, shots, "live-phone")
        # dark, as the system says
        light = await browser.js("getComputedStyle(document.body).backgroundColor")
        await browser.call("Emulation.setEmulatedMedia",
                           features=[{"name": "prefers-color-scheme", "value": "dark"}])
        await browser.wait_js(f"getComputedStyle(document.body).backgroundColor !== {json.dumps(light)}")
        await shoot(browser, shots, "live-phone-dark")
        assert await browser.js("window.chorus.stats.errors.length") == 0
    finally:
        if speaking is not None:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)
        await ann.close()
        await bob.close()


async def test_a_raised_hand_is_answered_on_the_page_yes_then_no(bridge, browser, tmp_path):  # noqa: F811
    await bridge.open("hand", roles={"@h:x": "host", "@web:x": "listener"})
    await browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
    token = bridge.token("hand", "@web:x")
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/hand?token={token}")
    await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
    stage = bridge.stage("hand")

    # with the keyboard: Tab reaches the hand button, Enter raises it
    for _ in range(30):
        if await browser.js("document.activeElement && document.activeElement.id") == "hand":
            break
        await press(browser, "Tab", 9)
    assert await browser.js("document.activeElement.id") == "hand"
    await press(browser, "Enter", 13)
    await browser.wait_js("document.getElementById('hand-state').textContent.includes('Your hand is raised')")
    assert await browser.js("document.getElementById('hand').getAttribute('aria-pressed')") == "true"
    assert await browser.js("document.getElementById('hand-state').getAttribute('role')") == "status"
    assert "@web:x" in stage.hands
    await shoot(browser, tmp_path / "shots", "hand-raised-phone")

    # yes: the bot makes them a speaker
    status, _ = await bridge.control("PUT", "/spaces/hand/roles",
                                     {"roles": {"@h:x": "host", "@web:x": "speaker"}})
    assert status == 200
    await browser.wait_js("document.getElementById('hand-state').textContent.includes('You can speak now')")
    assert await browser.js("document.getElementById('mic').hidden") is False
    assert await browser.js("document.getElementById('hand').hidden") is True
    await browser.wait_js("!!" + tile("@web:x"))  # on stage now
    await shoot(browser, tmp_path / "shots", "hand-approved-phone")

    # back in the audience, the hand up again, and this time a no
    status, _ = await bridge.control("PUT", "/spaces/hand/roles",
                                     {"roles": {"@h:x": "host", "@web:x": "listener"}})
    await browser.wait_js("document.getElementById('hand').hidden === false")
    assert await browser.js("document.getElementById('hand-state').textContent") == ""
    await browser.js("document.getElementById('hand').click()")
    await browser.wait_js("document.getElementById('hand-state').textContent.includes('Your hand is raised')")
    status, _ = await bridge.control("POST", "/spaces/hand/answer", {"user_id": "@web:x", "answer": "declined"})
    assert status == 200
    await browser.wait_js("document.getElementById('hand-state').textContent.includes('declined')")
    assert await browser.js("document.getElementById('hand').textContent") == "✋ Raise hand"
    assert "@web:x" not in stage.hands
    await shoot(browser, tmp_path / "shots", "hand-declined-phone")
    # the hand can go up again after a no
    await browser.js("document.getElementById('hand').click()")
    await browser.wait_js("document.getElementById('hand-state').textContent.includes('Your hand is raised')")


async def test_share_gives_the_link_without_the_token_and_the_room(bridge, browser):  # noqa: F811
    await bridge.open("sh", roles={"@web:x": "listener"})
    status, _ = await bridge.control("POST", "/spaces/sh", {"title": "Test sh", "public": True,
                                                            "room_url": "https://matrix.to/#/!r:x"})
    assert status == 200
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/sh?token={bridge.token('sh', '@web:x')}")
    await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
    await browser.js("document.getElementById('share').focus()")
    await press(browser, "Enter", 13)
    await browser.wait_js("document.getElementById('share-panel').hidden === false")
    assert await browser.js("document.activeElement.id") == "share-link"
    assert await browser.js("document.getElementById('share-link').value") == f"{bridge.url}/spaces/sh"
    assert await browser.js("document.getElementById('room-link').href") == "https://matrix.to/#/!r:x"
    await browser.js("document.getElementById('copy').click()")
    await browser.wait_js("document.getElementById('copied').textContent === 'Link copied.'")
    # Escape closes it and gives the focus back
    await press(browser, "Escape", 27)
    await browser.wait_js("document.getElementById('share-panel').hidden === true")
    assert await browser.js("document.activeElement.id") == "share"


async def test_an_avatar_the_bridge_lost_falls_back_to_initials(bridge, browser):  # noqa: F811
    await bridge.open("lost", roles={"@ann:x": "host"})
    status, _ = await bridge.control("PUT", "/spaces/lost/people",
                                     {"people": {"@ann:x": {"name": "ann o'neil", "avatar": "ab" * 32}}})
    assert status == 200
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/lost")
    await browser.wait_js("!!" + tile("@ann:x", "?.querySelector('.initials')"))
    assert await browser.js(tile("@ann:x", ".querySelector('.initials').textContent")) == "AO"
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/avatars/{'ab' * 32}") as resp:
        assert resp.status == 404


async def test_the_index_shows_live_public_spaces_as_cards(bridge, browser, tmp_path):  # noqa: F811
    await bridge.open("quiet", public=True, roles={"@q:x": "host"})
    await bridge.open("busy", public=True, roles={"@ann:x": "host", "@bob:x": "cohost",
                                                  **{f"@s{i}:x": "speaker" for i in range(6)}})
    await bridge.open("hidden", public=False, roles={"@h:x": "host"})
    ann_face = await put_avatar(bridge, face_png((214, 120, 60)))
    await dress(bridge, "busy", {"@ann:x": {"name": "Ann Example", "avatar": ann_face},
                                 "@bob:x": {"name": "Bob Builder"}}, host="@ann:x")
    listeners = [SpaceClient(bridge.url, "busy") for _ in range(2)]
    try:
        for c in listeners:
            await c.connect()
            await c.wait_type("hello")
        for viewport in (DESKTOP, PHONE):
            await browser.call("Emulation.setDeviceMetricsOverride", **viewport)
            await browser.call("Page.navigate", url=f"{bridge.url}/")
            titles = await browser.wait_js(
                "[...document.querySelectorAll('#spaces .card h2 a')].map(a => a.textContent).join('|')")
            assert titles == "Gardening hour|Test quiet"  # busiest first; the private one not at all
            busy = "document.querySelector('#spaces .card[data-space=\"busy\"]')"
            assert await browser.js(f"{busy}.querySelector('.host b').textContent") == "Ann Example"
            await browser.wait_js(f"{busy}.querySelector('.host img.avatar').naturalWidth > 0")
            faces = await browser.js(f"[...{busy}.querySelectorAll('.card-faces li')]"
                                     ".map(li => li.getAttribute('aria-label') || li.textContent)")
            assert faces[:2] == ["Ann Example", "Bob Builder"] and faces[-1] == "+2" and len(faces) == 7
            assert await browser.js(f"{busy}.querySelector('.card-foot .meta').textContent") == \
                "2 listening · 0 speaking"
            assert await browser.js(f"{busy}.querySelector('a.button').getAttribute('href')") == "/spaces/busy"
            assert await browser.js("document.documentElement.scrollWidth <= innerWidth")
            await shoot(browser, tmp_path / "shots", f"index-{'phone' if viewport['mobile'] else 'desktop'}")
    finally:
        for c in listeners:
            await c.close()
