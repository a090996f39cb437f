"""bot/core/calendar.py: a space's .ics file, read back by a real iCalendar library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from bot.core.calendar import SpaceEvent, file_name, space_ics

NOW = datetime(2026, 12, 3, 19, 0, tzinfo=UTC)
STARTS = datetime(2026, 12, 4, 17, 30, tzinfo=UTC)


def _event(**changes) -> SpaceEvent:
    fields = dict(space_id="k3x9pq", title="Friday jam", host="@alice:example.org", starts=STARTS,
                  url="https://matrix.to/#/!room:example.org", page_url="https://chorus.example.org/spaces/k3x9pq",
                  join_hint="In chat: !space join k3x9pq", domain="example.org")
    fields.update(changes)
    return SpaceEvent(**fields)


def _read(text: str):
    calendar = icalendar.Calendar.from_ical(text)
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    return calendar, events[0]


def test_a_scheduled_space_reads_back_as_one_event() -> None:
    text = space_ics(_event(), NOW)
    calendar, event = _read(text)
    assert str(calendar["VERSION"]) == "2.0" and "Chorus" in str(calendar["PRODID"])
    assert event.decoded("DTSTART") == STARTS
    assert event.decoded("DTEND") == STARTS + timedelta(hours=1)
    assert event.decoded("DTSTAMP") == NOW
    assert str(event["SUMMARY"]) == "Friday jam"
    assert str(event["UID"]) == "k3x9pq@example.org"
    assert str(event["URL"]) == "https://matrix.to/#/!room:example.org"
    description = str(event["DESCRIPTION"])
    assert "@alice:example.org" in description and "https://chorus.example.org/spaces/k3x9pq" in description
    assert "!space join k3x9pq" in description and "https://matrix.to/#/!room:example.org" in description
    assert [str(a["TRIGGER"].to_ical(), "ascii") for a in event.walk("VALARM")] == ["-PT10M"]
    assert file_name("k3x9pq") == "chorus-k3x9pq.ics"


@pytest.mark.parametrize("title", [
    "Books, wine; and \\ backslashes",
    "Line one\nline two",
    "🎙️ Über-long ünïcödé title " * 6,
    "x" * 200,
])
def test_any_title_survives_and_every_line_is_short(title: str) -> None:
    text = space_ics(_event(title=title), NOW)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    for line in text.split("\r\n"):
        assert len(line.encode("utf-8")) <= 75, line
    _calendar, event = _read(text)
    assert str(event["SUMMARY"]) == title


def test_a_start_in_another_zone_is_written_in_utc() -> None:
    from zoneinfo import ZoneInfo

    berlin = STARTS.astimezone(ZoneInfo("Europe/Berlin"))
    text = space_ics(_event(starts=berlin), NOW)
    assert "DTSTART:20261204T173000Z\r\n" in text
    assert _read(text)[1].decoded("DTSTART") == STARTS
