"""The page before and after, in headless Chromium: a scheduled space (its start in the
viewer's own time zone, a countdown, a calendar file a real iCalendar library reads, the
page turning live when the host starts), an ended one (the summary, the recording in a
player with its WebVTT transcript as the captions track), a cancelled one, a private one
without a link, and upcoming spaces on the index. Phone and desktop; screenshots go to
the test's temporary folder (``tmp_path/shots``)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar

from bot.core import calendar as ics
from bridge.captions.webvtt import Cue, write

from .test_space_page import DESKTOP, PHONE, shoot
from .test_web_page import Browser, browser  # noqa: F401 - the fixture


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def text_of(element_id: str) -> str:
    return f"document.getElementById('{element_id}').textContent"


async def open_page(browser: Browser, url: str, state: str) -> None:  # noqa: F811
    await browser.call("Page.navigate", url=url)
    await browser.wait_js(f"document.body?.dataset.page === '{state}'")


def scheduled_listing(space_id: str, starts: datetime, *, public: bool = True, title: str = "Seed swap") -> dict:
    calendar = ics.space_ics(ics.SpaceEvent(
        space_id=space_id, title=title, host="@ann:x", starts=starts,
        url="https://matrix.to/#/!garden:x", page_url=f"http://example.org/spaces/{space_id}"),
        datetime.now(UTC))
    return {"state": "scheduled", "title": title, "public": public, "host": "@ann:x",
            "starts_at": iso(starts), "room_url": "https://matrix.to/#/!garden:x", "calendar": calendar,
            "people": {"@ann:x": {"name": "Ann Example", "avatar": None}}}


async def test_scheduled_page_counts_down_in_the_viewers_zone_and_turns_live(bridge, browser, tmp_path):  # noqa: F811
    shots = tmp_path / "shots"
    starts = (datetime.now(UTC) + timedelta(hours=2, minutes=5)).replace(second=0, microsecond=0)
    assert (await bridge.control("PUT", "/listings/sch", scheduled_listing("sch", starts)))[0] == 201
    await browser.call("Emulation.setTimezoneOverride", timezoneId="Asia/Tokyo")
    await browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
    await open_page(browser, f"{bridge.url}/spaces/sch", "scheduled")
    assert await browser.js(text_of("state")) == "Scheduled"
    assert await browser.js(text_of("title")) == "Seed swap"
    assert await browser.js(text_of("host-name")) == "Ann Example"
    # the start in the viewer's zone (Tokyo, UTC+9), said as such
    tokyo = starts.astimezone(ZoneInfo("Asia/Tokyo"))
    shown = await browser.js(text_of("starts-at"))
    assert f"{tokyo.hour % 12 or 12}:{tokyo.minute:02d}" in shown and "GMT+9" in shown, shown
    assert str(tokyo.day) in shown
    assert "Asia/Tokyo" in await browser.js(text_of("zone"))
    assert await browser.js("document.getElementById('starts-at').dateTime") == iso(starts)
    countdown = await browser.js(text_of("countdown"))
    assert countdown.startswith("Starts in 2 h 0"), countdown
    # nothing of a live page: no Listen, no hand, no audience; Share stays
    for hidden in ("listen", "react", "audience-heading"):
        assert await browser.js(f"document.getElementById('{hidden}').offsetParent === null"), hidden
    assert await browser.js("document.getElementById('share').offsetParent !== null")
    assert await browser.js("document.getElementById('conn').hidden")
    assert await browser.js("document.documentElement.scrollWidth <= window.innerWidth")
    await shoot(browser, shots, "scheduled-phone")

    # the calendar file the page offers is the bot's, and a calendar reads it
    href = await browser.js("document.getElementById('ics').href")
    assert await browser.js("document.getElementById('ics').hasAttribute('download')")
    async with bridge.session.get(href) as resp:
        assert resp.status == 200
        cal = icalendar.Calendar.from_ical(await resp.read())
    event = next(iter(cal.walk("VEVENT")))
    assert str(event["SUMMARY"]) == "Seed swap"
    assert event["DTSTART"].dt == starts
    assert str(event["URL"]) == "https://matrix.to/#/!garden:x"

    # a space a few minutes away counts in seconds, and the count goes on
    soon = datetime.now(UTC) + timedelta(minutes=3)
    await bridge.control("PUT", "/listings/soon", scheduled_listing("soon", soon, title="Soon"))
    await browser.call("Emulation.setDeviceMetricsOverride", **DESKTOP)
    await open_page(browser, f"{bridge.url}/spaces/soon", "scheduled")
    first = await browser.js(text_of("countdown"))
    assert first.startswith("Starts in 2 min") or first.startswith("Starts in 3 min"), first
    await browser.wait_js(f"{text_of('countdown')} !== {first!r}")
    await shoot(browser, shots, "scheduled-desktop")

    # a space whose time has come: the page looks every few seconds, and when the host
    # starts it the page becomes the live page by itself
    due = datetime.now(UTC) - timedelta(minutes=1)
    await bridge.control("PUT", "/listings/due", scheduled_listing("due", due, title="Due"))
    await open_page(browser, f"{bridge.url}/spaces/due", "scheduled")
    assert (await browser.js(text_of("countdown"))).startswith("Starting any moment")
    await bridge.open("due", roles={"@ann:x": "host"})
    await browser.wait_js("window.chorus.conn === 'connected'", timeout=30)
    assert await browser.js(text_of("state")) == "● Live"
    assert await browser.js("document.body.dataset.page") == "live"
    assert await browser.js("document.getElementById('before').hidden")
    assert await browser.js("document.getElementById('listen').offsetParent !== null")


def recording_files(folder: Path) -> tuple[str, str]:
    """A six-second Ogg/Opus recording and its WebVTT transcript, as the bridge names them."""
    folder.mkdir(parents=True, exist_ok=True)
    ogg = folder / "ended-20261207T180000-1.ogg"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=330:duration=6", "-ac", "1", "-ar", "48000", "-c:a", "libopus",
                    str(ogg)], check=True, timeout=60)
    write(ogg.with_suffix(".vtt"), [Cue(0.2, 2.5, "@ann:x", "Welcome to the seed swap."),
                                    Cue(3.0, 5.5, "@bob:x", "I brought tomato seeds & beans.")],
          "Seed swap")
    return ogg.name, ogg.with_suffix(".vtt").name


def ended_listing(recordings: list, *, public: bool = True) -> dict:
    return {"state": "ended", "title": "Seed swap", "public": public, "host": "@ann:x",
            "started_at": "2026-12-07T18:00:00Z", "ended_at": "2026-12-07T19:02:03Z",
            "room_url": "https://matrix.to/#/!garden:x",
            "summary": {"duration_seconds": 3723, "peak_listeners": 41, "speakers": ["@ann:x", "@bob:x"],
                        "reactions": [["👏", 12], ["🔥", 3]], "recorded": True},
            "recordings": recordings,
            "people": {"@ann:x": {"name": "Ann Example", "avatar": None},
                       "@bob:x": {"name": "Bob Builder", "avatar": None}}}


async def test_ended_page_shows_the_summary_and_plays_the_recording_with_its_transcript(bridge, browser, tmp_path):  # noqa: F811
    shots = tmp_path / "shots"
    ogg, vtt = recording_files(Path(bridge.settings.recordings_dir))
    # the space is live, the page on it; it ends, and its page follows once the bot gives it
    await bridge.open("ended", roles={"@ann:x": "host"})
    await browser.call("Emulation.setDeviceMetricsOverride", **DESKTOP)
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/ended")
    await browser.wait_js("window.chorus && window.chorus.conn === 'connected'")
    assert (await bridge.control("DELETE", "/spaces/ended"))[0] == 200
    await browser.wait_js("window.chorus.conn === 'ended'")
    # first without the recording (still being converted): the page says so
    waiting = ended_listing([])
    assert (await bridge.control("PUT", "/listings/ended", waiting))[0] == 201
    await browser.wait_js("document.body.dataset.page === 'ended'")
    assert "being prepared" in await browser.js(text_of("recording-note"))
    assert await browser.js(text_of("state")) == "Ended"
    summary = await browser.js("[...document.querySelectorAll('#summary dt, #summary dd')].map(e => e.textContent)")
    pairs = dict(zip(summary[::2], summary[1::2], strict=True))
    assert pairs["Duration"] == "1 h 2 min" and pairs["Peak listeners"] == "41"
    assert pairs["Speakers"] == "AEAnn ExampleBBBob Builder"  # faces (initials) and names
    assert pairs["Top reactions"] == "👏 ×12  🔥 ×3"

    # the recording arrives: a player, its transcript as its captions track
    ready = ended_listing([{"file": ogg, "seconds": 6.0, "transcript": vtt}])
    assert (await bridge.control("PUT", "/listings/ended", ready))[0] == 200
    await browser.js("ChorusListing.load()")
    await browser.wait_js("!!document.querySelector('#recordings audio')")
    await browser.wait_js("document.querySelector('#recordings audio').readyState >= 1")
    assert 5.5 < await browser.js("document.querySelector('#recordings audio').duration") < 6.5
    assert await browser.js("document.querySelector('#recordings track').kind") == "captions"
    await browser.wait_js("document.querySelector('#recordings audio').textTracks[0].cues?.length === 2")
    lines = await browser.js("[...document.querySelectorAll('.transcript li')].map(e => e.textContent)")
    assert lines == ["0:00Ann Example: Welcome to the seed swap.",
                     "0:03Bob Builder: I brought tomato seeds & beans."]
    assert await browser.js(text_of("recording-note")) == ""
    # a line of the transcript plays from there; the line being said shows under the player
    await browser.js("document.querySelectorAll('.transcript .at')[1].click()")
    await browser.wait_js("document.querySelector('.cue').textContent.includes('tomato')")
    assert await browser.js("document.querySelector('.cue b').textContent") == "Bob Builder: "
    await browser.js("document.querySelector('#recordings audio').pause()")
    await browser.js("document.querySelector('#recordings details').open = true")
    await shoot(browser, shots, "ended-desktop")
    await browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
    await browser.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
    assert await browser.js("document.documentElement.scrollWidth <= window.innerWidth")
    await shoot(browser, shots, "ended-phone-dark")


async def test_a_private_ended_space_needs_its_link_and_a_cancelled_one_says_so(bridge, browser, tmp_path):  # noqa: F811
    ogg, vtt = recording_files(Path(bridge.settings.recordings_dir))
    status, _ = await bridge.control("PUT", "/listings/priv", ended_listing(
        [{"file": ogg, "seconds": 6.0, "transcript": vtt}], public=False))
    assert status == 201
    await browser.call("Page.navigate", url=f"{bridge.url}/spaces/priv")
    await browser.wait_js("window.chorus?.conn === 'refused'")
    assert "not public" in await browser.js(text_of("conn-text"))
    assert await browser.js("document.getElementById('after').hidden")
    # with the link the bot sent: the page, and the player reaches the file with it
    token = bridge.token("priv", "@bob:x")
    await open_page(browser, f"{bridge.url}/spaces/priv?token={token}", "ended")
    await browser.wait_js("document.querySelector('#recordings audio')?.readyState >= 1")
    assert "token=" not in await browser.js("location.href")  # the link left the address bar

    await bridge.control("PUT", "/listings/gone", {**scheduled_listing("gone", datetime.now(UTC) + timedelta(days=1)),
                                                   "state": "cancelled"})
    await open_page(browser, f"{bridge.url}/spaces/gone", "cancelled")
    assert await browser.js(text_of("state")) == "Cancelled"
    assert "cancelled" in await browser.js(text_of("cancelled"))
    assert (await browser.js(text_of("cancelled-when"))).startswith("It was planned for ")
    await shoot(browser, tmp_path / "shots", "cancelled")


async def test_the_index_lists_upcoming_spaces_soonest_first_in_the_viewers_zone(bridge, browser, tmp_path):  # noqa: F811
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for space_id, title, hours, public in [("u2", "Later", 26, True), ("u1", "Sooner", 3, True),
                                           ("u3", "Hidden", 1, False)]:
        assert (await bridge.control("PUT", f"/listings/{space_id}", scheduled_listing(
            space_id, now + timedelta(hours=hours), public=public, title=title)))[0] == 201
    await bridge.open("onair", roles={"@ann:x": "host"})
    await browser.call("Emulation.setTimezoneOverride", timezoneId="America/New_York")
    await browser.call("Emulation.setDeviceMetricsOverride", **DESKTOP)
    await browser.call("Page.navigate", url=f"{bridge.url}/")
    await browser.wait_js("document.querySelectorAll('#upcoming .card').length === 2")
    titles = await browser.js("[...document.querySelectorAll('#upcoming h2')].map(e => e.textContent)")
    assert titles == ["Sooner", "Later"]
    assert await browser.js("document.querySelectorAll('#spaces .card').length") == 1  # the live one
    sooner = (now + timedelta(hours=3)).astimezone(ZoneInfo("America/New_York"))
    when = await browser.js("document.querySelector('#upcoming .starts').textContent")
    assert f"{sooner.hour % 12 or 12}:{sooner.minute:02d}" in when and ("EST" in when or "EDT" in when), when
    assert await browser.js("document.querySelector('#upcoming .host b').textContent") == "Ann Example"
    assert await browser.js("document.querySelector('#upcoming a.button').getAttribute('href')") == "/spaces/u1"
    await shoot(browser, tmp_path / "shots", "index-upcoming")
