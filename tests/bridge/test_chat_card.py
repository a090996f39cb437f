"""The card the bot posts in chat, as HTML a Matrix client renders: headless Chromium shows
the bot's own ``formatted_body`` (bot/cards.py) in a plain chat timeline, for the
README's picture (saved in ``tmp_path/shots``); its links lead where they should and a
title with markup in it stays text."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime

from bot import cards
from bot.core.model import Role, Space, State, Visibility

from .test_space_page import shoot
from .test_web_page import browser  # noqa: F401 - the fixture

PAGE_URL = "https://chorus.example.org/spaces/k3x9pq"

TIMELINE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font: 15px/1.45 system-ui, sans-serif; background: #fff; color: #17191c; margin: 0; padding: 18px 22px; }}
.event {{ display: flex; gap: 12px; margin-bottom: 22px; max-width: 760px; }}
.avatar {{ width: 34px; height: 34px; border-radius: 50%; background: #0dbd8b; color: #fff; display: grid;
          place-items: center; font-weight: 700; flex: none; }}
.sender {{ font-weight: 600; color: #0dbd8b; }}
.notice {{ color: #5c6470; }}
.notice a {{ color: #0086e6; text-decoration: none; }}
.notice code {{ background: #f4f6fa; border-radius: 4px; padding: 0 4px; font-size: 13px; }}
.notice p {{ margin: 4px 0; }}
.reactions {{ display: flex; gap: 6px; margin-top: 4px; }}
.reactions span {{ border: 1px solid #e3e8f0; border-radius: 12px; padding: 1px 8px; background: #f4f6fa;
                   font-family: "Noto Color Emoji", sans-serif; }}
.reactions small {{ font-family: system-ui, sans-serif; }}
</style></head><body>{events}</body></html>"""


def event(body: str, reactions: list[tuple[str, int]]) -> str:
    chips = "".join(f"<span>{key} <small>{n}</small></span>" for key, n in reactions)
    return (f'<div class="event"><div class="avatar">C</div><div><div class="sender">Chorus</div>'
            f'<div class="notice">{body}</div><div class="reactions">{chips}</div></div></div>')


async def test_the_chat_card_shows_the_space_and_its_links(browser, tmp_path):  # noqa: F811
    live = Space(id="k3x9pq", host="@ann:example.org", title="Friday music chat",
                 visibility=Visibility.EVERYONE, state=State.LIVE,
                 people={"@ann:example.org": Role.HOST, "@bob:example.org": Role.SPEAKER,
                         "@cat:example.org": Role.COHOST, "@dan:example.org": Role.LISTENER})
    _, live_html = cards.card(cards.CardFacts(live, "!music:example.org", PAGE_URL,
                                              {"paypal": "AnnExample", "bandcamp": "annmusic"}, 37))
    later = Space(id="p7wq2m", host="@ann:example.org", title="Seed swap", state=State.SCHEDULED,
                  scheduled_for=datetime(2026, 12, 12, 18, 0, tzinfo=UTC))
    _, later_html = cards.card(cards.CardFacts(later, None, PAGE_URL.replace("k3x9pq", "p7wq2m"), {}, 0))
    evil = Space(id="x", host="@mal:example.org", title="<img src=x onerror=alert(1)><b>loud</b>")
    _, evil_html = cards.card(cards.CardFacts(evil, None, PAGE_URL, {}, 0))
    page = TIMELINE.format(events=event(live_html, [("🎧", 12), ("✋", 2)]) + event(later_html, [("🔔", 5)])
                           + event(evil_html, []))
    await browser.call("Emulation.setDeviceMetricsOverride", width=820, height=400, deviceScaleFactor=1,
                       mobile=False)
    await browser.call("Page.navigate", url="data:text/html;base64," + base64.b64encode(page.encode()).decode())
    await browser.wait_js("document.readyState === 'complete' && !!document.querySelector('.notice')")

    first = "document.querySelectorAll('.notice')[0]"
    text = await browser.js(f"{first}.textContent")
    assert "🔴 LIVE: Friday music chat" in text
    assert "37 listening" in text and "!space join k3x9pq" in text
    links = dict(await browser.js(f"[...{first}.querySelectorAll('a')].map(a => [a.textContent, a.href])"))
    assert links["Open the space room"] == "https://matrix.to/#/!music:example.org"
    assert links["listen in the browser"] == PAGE_URL
    assert links["PayPal"] == "https://paypal.me/AnnExample"
    assert any(href == "https://matrix.to/#/@bob:example.org" for href in links.values())
    second = await browser.js("document.querySelectorAll('.notice')[1].textContent")
    assert "Starts: Sat 12 Dec 2026 18:00 UTC" in second and "!space calendar p7wq2m" in second
    page_link = "document.querySelectorAll('.notice')[1].querySelector('a[href$=\"/p7wq2m\"]')"
    assert await browser.js(f"{page_link}.textContent") == "Its page"
    # a title with markup in it is shown as it was typed, not obeyed
    third = "document.querySelectorAll('.notice')[2]"
    assert "<img src=x onerror=alert(1)><b>loud</b>" in await browser.js(f"{third}.textContent")
    assert await browser.js(f"{third}.querySelectorAll('img, b b').length") == 0
    await browser.js("document.querySelectorAll('.event')[2].remove()")  # not in the picture
    height = await browser.js("document.body.scrollHeight")
    await browser.call("Emulation.setDeviceMetricsOverride", width=820, height=height, deviceScaleFactor=1,
                       mobile=False)
    await shoot(browser, tmp_path / "shots", "chat-card")
    assert html.escape("<b>loud</b>") in evil_html


def test_a_card_links_a_page_before_and_after_only_for_a_public_space() -> None:
    when = datetime(2026, 12, 12, 18, 0, tzinfo=UTC)
    for vis, linked in [(Visibility.EVERYONE, True), (Visibility.FOLLOWING, False), (Visibility.INVITED, False)]:
        for state in (State.SCHEDULED, State.ENDED):
            s = Space(id="p7wq2m", host="@ann:example.org", title="Seed swap", state=state, visibility=vis,
                      scheduled_for=when)
            plain, rich = cards.card(cards.CardFacts(s, None, PAGE_URL, {}, 0))
            assert (PAGE_URL in plain) is linked and (PAGE_URL in rich) is linked, (vis, state)
            if state is State.SCHEDULED:
                assert "!space calendar p7wq2m" in plain
