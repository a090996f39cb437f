"""Live captions on the web page, in headless Chromium: they appear in the captions panel
with the speaker's name, and a listener can hide and show them (for themselves only)."""

import asyncio

import numpy as np

from bridge.client import SpaceClient, load_audio

from .conftest import SENTENCE_A, synthesise
from .test_web_page import (
    browser,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without chromium
)

#: what a listener sees of @py:x's captions (nothing while the panel is hidden)
CAPTION_TEXT = ("document.getElementById('captions-panel').hidden ? '' :"
                " [...document.querySelectorAll('#captions li')]"
                ".filter(li => li.querySelector('b').textContent === 'py')"
                ".map(li => li.querySelector('span').textContent).join(' ')")


async def test_captions_show_under_the_speaker_and_can_be_hidden(bridge, browser) -> None:  # noqa: F811
    speech = load_audio(synthesise(SENTENCE_A))
    await bridge.open("cap", captions=True, roles={"@py:x": "host", "@web:x": "listener"})
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/cap?token={bridge.token('cap', '@web:x')}")
    await browser.wait_js("window.chorus && window.chorus.me === '@web:x'")
    assert await browser.js("document.getElementById('cc').hidden") is False

    async with SpaceClient(bridge.url, "cap", bridge.token("cap", "@py:x", "host")) as py:
        await py.wait_type("hello")
        talking = asyncio.create_task(py.speak(np.concatenate([speech, np.zeros(48000, np.int16)])))
        try:
            # a caption line with @py:x's name appears while (or just after) they speak
            await browser.wait_js(f"({CAPTION_TEXT}).toLowerCase().includes('garden')", timeout=60)
            # the listener hides captions: the line goes, the choice is remembered
            await browser.js("document.getElementById('cc').click()")
            assert await browser.js(f"({CAPTION_TEXT})") == ""
            assert await browser.js("localStorage.getItem('chorus.captions')") == "off"
            assert "Show" in await browser.js("document.getElementById('cc').textContent")
            await browser.js("document.getElementById('cc').click()")
            assert await browser.js("localStorage.getItem('chorus.captions')") == "on"
        finally:
            await talking
