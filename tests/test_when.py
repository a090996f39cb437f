"""Parsing the times people type: one-off moments, zones, recurring schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import assume, given
from hypothesis import strategies as st

from bot.core.when import (
    WHEN_FORMS,
    ParsedWhen,
    Recurrence,
    WhenError,
    check_window,
    next_fire_times,
    parse_recurrence,
    parse_timezone,
    parse_when,
)

# Tuesday 24 Nov 2026, 14:00 UTC = 15:00 in Berlin, 09:00 in New York, 03:00 Wed in Auckland
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
AUCKLAND = ZoneInfo("Pacific/Auckland")
ZUTC = ZoneInfo("UTC")
ZONES = {"Berlin": BERLIN, "NewYork": NEW_YORK, "Auckland": AUCKLAND, "UTC": ZUTC}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- one-off times

WHEN_TABLE = [
    # relative: elapsed time from now, the zone does not matter
    ("in 2 hours", "Berlin", utc(2026, 11, 24, 16, 0)),
    ("in 90 minutes", "Berlin", utc(2026, 11, 24, 15, 30)),
    ("in 1 hour 30 minutes", "Berlin", utc(2026, 11, 24, 15, 30)),
    ("in 1 hour and 30 minutes", "UTC", utc(2026, 11, 24, 15, 30)),
    ("in 3 days", "Berlin", utc(2026, 11, 27, 14, 0)),
    ("in 45 min", "Berlin", utc(2026, 11, 24, 14, 45)),
    ("in 2h", "NewYork", utc(2026, 11, 24, 16, 0)),
    ("in 30m", "Berlin", utc(2026, 11, 24, 14, 30)),
    ("in 1h30m", "Berlin", utc(2026, 11, 24, 15, 30)),
    ("in an hour", "Berlin", utc(2026, 11, 24, 15, 0)),
    ("  IN   2   Hours ", "Berlin", utc(2026, 11, 24, 16, 0)),
    # today / tonight / tomorrow, in the sender's zone
    ("today 18:00", "Berlin", utc(2026, 11, 24, 17, 0)),
    ("tonight 9pm", "Berlin", utc(2026, 11, 24, 20, 0)),
    ("tonight 1am", "Berlin", utc(2026, 11, 25, 0, 0)),  # the coming night's early hours
    ("tonight midnight", "Berlin", utc(2026, 11, 24, 23, 0)),
    ("tomorrow 18:00", "Berlin", utc(2026, 11, 25, 17, 0)),
    ("tomorrow 9am", "Berlin", utc(2026, 11, 25, 8, 0)),
    ("tomorrow at 6:30pm", "Berlin", utc(2026, 11, 25, 17, 30)),
    ("Tomorrow At 6:30 PM", "Berlin", utc(2026, 11, 25, 17, 30)),
    ("18:00 tomorrow", "Berlin", utc(2026, 11, 25, 17, 0)),
    ("tomorrow 18:00", "NewYork", utc(2026, 11, 25, 23, 0)),
    # it is already Wednesday 03:00 in Auckland (UTC+13)
    ("today 18:00", "Auckland", utc(2026, 11, 25, 5, 0)),
    ("tomorrow 9am", "Auckland", utc(2026, 11, 25, 20, 0)),
    ("wednesday 18:00", "Auckland", utc(2026, 11, 25, 5, 0)),
    # weekdays
    ("friday 9pm", "Berlin", utc(2026, 11, 27, 20, 0)),
    ("fri 21:00", "Berlin", utc(2026, 11, 27, 20, 0)),
    ("FRIDAY 9 PM", "Berlin", utc(2026, 11, 27, 20, 0)),
    ("next friday 18:00", "Berlin", utc(2026, 11, 27, 17, 0)),
    ("tuesday 18:00", "Berlin", utc(2026, 11, 24, 17, 0)),  # today, still ahead
    ("tue 10:00", "Berlin", utc(2026, 12, 1, 9, 0)),  # today, gone: next week's
    ("next tuesday 18:00", "Berlin", utc(2026, 12, 1, 17, 0)),  # strictly after today
    ("monday 18:00", "Berlin", utc(2026, 11, 30, 17, 0)),
    ("on friday at 9pm", "Berlin", utc(2026, 11, 27, 20, 0)),
    # dates
    ("2026-12-01 18:00", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("2026-12-01T18:00", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("2026-12-01T18:00Z", "Berlin", utc(2026, 12, 1, 18, 0)),
    ("2026-12-01T18:00+02:00", "Berlin", utc(2026, 12, 1, 16, 0)),
    ("1 dec 18:00", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("dec 1 18:00", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("1 december 2026 6pm", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("1st of December at 6 p.m.", "Berlin", utc(2026, 12, 1, 17, 0)),
    ("1 jan 10:00", "Berlin", utc(2027, 1, 1, 9, 0)),  # January has gone: next year
    ("2027-07-01 18:00", "Berlin", utc(2027, 7, 1, 16, 0)),  # summer time, UTC+2
    # a bare time: today if still ahead, else tomorrow
    ("18:00", "Berlin", utc(2026, 11, 24, 17, 0)),
    ("10:00", "Berlin", utc(2026, 11, 25, 9, 0)),
    ("6pm", "Berlin", utc(2026, 11, 24, 17, 0)),
    ("6:30 pm", "Berlin", utc(2026, 11, 24, 17, 30)),
    ("12am", "Berlin", utc(2026, 11, 24, 23, 0)),
    ("12pm", "Berlin", utc(2026, 11, 25, 11, 0)),
    ("noon", "Berlin", utc(2026, 11, 25, 11, 0)),
    ("midnight", "Berlin", utc(2026, 11, 24, 23, 0)),
    ("9am", "NewYork", utc(2026, 11, 25, 14, 0)),  # exactly now is not ahead
    ("9:01am", "NewYork", utc(2026, 11, 24, 14, 1)),
    # an explicit zone beats the sender's
    ("tomorrow 18:00 Europe/Berlin", "UTC", utc(2026, 11, 25, 17, 0)),
    ("tomorrow 18:00 europe/berlin", "UTC", utc(2026, 11, 25, 17, 0)),
    ("tomorrow 18:00 America/New_York", "Berlin", utc(2026, 11, 25, 23, 0)),
    ("tomorrow 18:00 UTC", "Berlin", utc(2026, 11, 25, 18, 0)),
    ("tomorrow 18:00 UTC+2", "Berlin", utc(2026, 11, 25, 16, 0)),
    ("tomorrow 18:00 UTC-05:30", "Berlin", utc(2026, 11, 25, 23, 30)),
    ("tomorrow 18:00 GMT+1", "UTC", utc(2026, 11, 25, 17, 0)),
    ("tomorrow 18:00 +02:00", "UTC", utc(2026, 11, 25, 16, 0)),
    ("friday 9pm berlin", "UTC", utc(2026, 11, 27, 20, 0)),
    ("2026-12-01 18:00 Asia/Tokyo", "Berlin", utc(2026, 12, 1, 9, 0)),
]


@pytest.mark.parametrize(("text", "zone", "expected"), WHEN_TABLE)
def test_parse_when_table(text: str, zone: str, expected: datetime) -> None:
    parsed = parse_when(text, NOW, ZONES[zone])
    assert parsed.instant == expected
    assert parsed.instant.utcoffset() == timedelta(0)
    assert parsed.text == " ".join(text.split())


def test_every_form_the_help_shows_is_in_the_table() -> None:
    """!help space schedule shows WHEN_FORMS: each example has its expected time above."""
    tested = {text for text, _zone, _expected in WHEN_TABLE}
    shown = [example for _form, examples in WHEN_FORMS for example in examples]
    assert len(shown) >= 30 and not set(shown) - tested, set(shown) - tested


def test_zone_used_is_reported() -> None:
    assert parse_when("tomorrow 18:00", NOW, BERLIN).tz == BERLIN
    assert parse_when("tomorrow 18:00 America/New_York", NOW, BERLIN).tz == NEW_YORK
    fixed = parse_when("tomorrow 18:00 UTC+2", NOW, BERLIN).tz
    assert fixed.utcoffset(None) == timedelta(hours=2)


def test_describe() -> None:
    parsed = parse_when("friday 9pm", NOW, BERLIN)
    assert parsed.describe() == "Friday 27 Nov 2026 21:00 CET (Europe/Berlin) = 20:00 UTC"
    assert parse_when("friday 9pm UTC", NOW, BERLIN).describe() == "Friday 27 Nov 2026 21:00 UTC"
    assert parse_when("friday 9pm UTC+2", NOW, BERLIN).describe() == "Friday 27 Nov 2026 21:00 UTC+02:00 = 19:00 UTC"
    # the UTC side names its own day when the date differs
    assert (
        parse_when("midnight", NOW, BERLIN).describe()
        == "Wednesday 25 Nov 2026 00:00 CET (Europe/Berlin) = Tuesday 24 Nov 23:00 UTC"
    )


def test_relative_is_elapsed_time_across_dst() -> None:
    before_change = utc(2027, 3, 27, 12, 0)  # 13:00 CET, the day before clocks go forward
    parsed = parse_when("in 1 day", before_change, BERLIN)
    assert parsed.instant == utc(2027, 3, 28, 12, 0)
    assert parsed.local.hour == 14  # 24 hours later is 14:00 CEST


# ---------------------------------------------------------------- DST edges


def test_spring_forward_gap_is_refused() -> None:
    with pytest.raises(WhenError) as err:
        parse_when("2027-03-28 02:30 Europe/Berlin", NOW, ZUTC)
    message = str(err.value)
    assert "does not exist" in message
    assert "02:00 to 03:00" in message
    assert "Europe/Berlin" in message


def test_spring_forward_gap_new_york() -> None:
    with pytest.raises(WhenError, match="does not exist.*02:00 to 03:00"):
        parse_when("2027-03-14 02:30", NOW, NEW_YORK)
    # either side of the gap is fine
    assert parse_when("2027-03-14 01:59", NOW, NEW_YORK).instant == utc(2027, 3, 14, 6, 59)
    assert parse_when("2027-03-14 03:00", NOW, NEW_YORK).instant == utc(2027, 3, 14, 7, 0)


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): the first one wins
        ("2026-10-25 02:30 Europe/Berlin", ZUTC, utc(2026, 10, 25, 0, 30)),
        ("2027-10-31 02:30", BERLIN, utc(2027, 10, 31, 0, 30)),
        # 01:30 happens at 05:30 UTC (EDT) and at 06:30 UTC (EST)
        ("2026-11-01 01:30", NEW_YORK, utc(2026, 11, 1, 5, 30)),
    ],
)
def test_fall_back_ambiguity_takes_first_occurrence(text, zone, expected) -> None:
    parsed = parse_when(text, NOW, zone)
    assert parsed.instant == expected
    assert "twice" in parsed.note and "first" in parsed.note
    assert "twice" in parsed.describe()


def test_ambiguous_note_is_only_for_ambiguous_times() -> None:
    assert parse_when("2026-10-25 03:30 Europe/Berlin", NOW, ZUTC).note == ""
    assert parse_when("2026-10-25 03:30 Europe/Berlin", NOW, ZUTC).instant == utc(2026, 10, 25, 2, 30)


# ---------------------------------------------------------------- bad input

BAD_WHEN = [
    ("yesterday", "past"),
    ("next blursday", "'blursday' is not a day of the week"),
    ("25:00", "hours go from 00 to 23"),
    ("18:75", "minutes go from 00 to 59"),
    ("13pm", "hour goes from 1 to 12"),
    ("2026-02-30 10:00", "no 30 February 2026"),
    ("31 feb 10:00", "no 31 February"),
    ("2026-13-01 10:00", "no month 13"),
    ("in -2 hours", "negative"),
    ("in 0 minutes", "no time from now"),
    ("in 2", "needs a unit"),
    ("in 2 fortnights", "'fortnights' is not a unit"),
    ("in 99999999999 days", "too long"),
    ("", "No time given"),
    ("   ", "No time given"),
    ("tomorrow", "needs a time of day"),
    ("friday", "needs a time of day"),
    ("next week", "which day"),
    ("blah", "'blah'"),
    ("tomorrow 18:00 Mars/Olympus", "time zone 'Mars/Olympus'"),
    ("tomorrow 18:00 UTC+15", "not a real UTC offset"),
    ("tomorrow 18:00 17:00", "'18:00 17:00'"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_WHEN)
def test_bad_when(text: str, fragment: str) -> None:
    with pytest.raises(WhenError) as err:
        parse_when(text, NOW, BERLIN)
    message = str(err.value)
    assert fragment in message
    assert "Europe/Berlin" in message  # every message shows what works


def test_bad_when_is_a_value_error_and_names_the_input() -> None:
    with pytest.raises(ValueError, match="'next blursday'"):
        parse_when("next blursday", NOW, BERLIN)
    with pytest.raises(WhenError, match="did you mean 'thursday'"):
        parse_when("next blursday", NOW, BERLIN)
    with pytest.raises(WhenError, match="Examples that work: 'in 2 hours'"):
        parse_when("whenever", NOW, BERLIN)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_when("in 2 hours", datetime(2026, 11, 24, 14, 0), BERLIN)


# ---------------------------------------------------------------- the scheduling window


def test_window_accepts_times_inside() -> None:
    check_window(parse_when("tomorrow 18:00", NOW, BERLIN), NOW, 14)
    check_window(NOW + timedelta(days=14), NOW, 14)  # the limit itself is allowed
    check_window(NOW + timedelta(minutes=1), NOW, 14)


def test_window_refuses_the_past_with_description() -> None:
    parsed = parse_when("today 10:00", NOW, BERLIN)
    with pytest.raises(WhenError) as err:
        check_window(parsed, NOW, 14)
    message = str(err.value)
    assert "that is in the past" in message
    assert "Tuesday 24 Nov 2026 10:00 CET (Europe/Berlin) = 09:00 UTC" in message
    with pytest.raises(WhenError, match="in the past"):
        check_window(NOW, NOW, 14)
    with pytest.raises(WhenError, match="in the past"):
        check_window(NOW - timedelta(minutes=1), NOW, 14)


def test_window_refuses_too_far_ahead() -> None:
    parsed = parse_when("2026-12-20 18:00", NOW, BERLIN)
    with pytest.raises(WhenError) as err:
        check_window(parsed, NOW, 14)
    message = str(err.value)
    assert message.startswith("Sunday 20 Dec 2026 18:00 CET (Europe/Berlin) = 17:00 UTC")
    assert "that is 26 days ahead" in message
    assert "spaces can be scheduled at most 14 days ahead" in message
    assert "until Tuesday 8 Dec 2026 15:00 CET (Europe/Berlin) = 14:00 UTC" in message


def test_window_just_over_the_limit_says_by_how_much() -> None:
    parsed = parse_when("2026-12-08 18:00", NOW, BERLIN)
    with pytest.raises(WhenError, match="that is 14 days 3 hours ahead; .* at most 14 days"):
        check_window(parsed, NOW, 14)
    with pytest.raises(WhenError, match="at most 3 days ahead"):
        check_window(NOW + timedelta(days=5), NOW, 3)


# ---------------------------------------------------------------- zones


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("AMERICA/NEW_YORK", "America/New_York"),
        ("America/New York", "America/New_York"),
        ("berlin", "Europe/Berlin"),
        ("UTC", "UTC"),
        ("utc", "UTC"),
        ("GMT", "UTC"),
        ("Z", "UTC"),
        ("UTC+0", "UTC"),
    ],
)
def test_parse_timezone_names(text: str, key: str) -> None:
    tz = parse_timezone(text)
    assert isinstance(tz, ZoneInfo)
    assert tz.key == key


@pytest.mark.parametrize(
    ("text", "offset", "name"),
    [
        ("UTC+2", timedelta(hours=2), "UTC+02:00"),
        ("utc-05:30", timedelta(hours=-5, minutes=-30), "UTC-05:30"),
        ("GMT+1", timedelta(hours=1), "UTC+01:00"),
        ("UTC +0545", timedelta(hours=5, minutes=45), "UTC+05:45"),
        ("+02:00", timedelta(hours=2), "UTC+02:00"),
        ("UTC-12", timedelta(hours=-12), "UTC-12:00"),
        ("UTC+14", timedelta(hours=14), "UTC+14:00"),
    ],
)
def test_parse_timezone_offsets(text: str, offset: timedelta, name: str) -> None:
    tz = parse_timezone(text)
    assert isinstance(tz, timezone)
    assert tz.utcoffset(None) == offset
    assert tz.tzname(None) == name


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Europe/Berln", "Did you mean Europe/Berlin"),
        ("America/New_Yrok", "Did you mean America/New_York"),
        ("Mars/Olympus", "I don't know the time zone 'Mars/Olympus'"),
        ("UTC+15", "not a real UTC offset"),
        ("UTC+3:75", "not a real UTC offset"),
        ("", "No time zone given"),
    ],
)
def test_parse_timezone_bad(text: str, fragment: str) -> None:
    with pytest.raises(WhenError) as err:
        parse_timezone(text)
    assert fragment in str(err.value)
    assert "Europe/Berlin" in str(err.value)


# ---------------------------------------------------------------- recurring schedules

CRON_TABLE = [
    ("every day 09:00", "0 9 * * *", "every day at 09:00 Europe/Berlin"),
    ("daily 9am", "0 9 * * *", "every day at 09:00 Europe/Berlin"),
    ("every weekday 9am", "0 9 * * mon-fri", "every weekday (Monday to Friday) at 09:00 Europe/Berlin"),
    ("every weekend 10:30", "30 10 * * sat,sun", "every Saturday and Sunday at 10:30 Europe/Berlin"),
    ("every monday 18:00", "0 18 * * mon", "every Monday at 18:00 Europe/Berlin"),
    ("Every Monday at 6pm", "0 18 * * mon", "every Monday at 18:00 Europe/Berlin"),
    (
        "every mon,wed,fri 18:00",
        "0 18 * * mon,wed,fri",
        "every Monday, Wednesday and Friday at 18:00 Europe/Berlin",
    ),
    (
        "every tuesday and thursday at 6:30pm",
        "30 18 * * tue,thu",
        "every Tuesday and Thursday at 18:30 Europe/Berlin",
    ),
    ("every monday 18:00 UTC", "0 18 * * mon", "every Monday at 18:00 UTC"),
    ("every monday 18:00 America/New_York", "0 18 * * mon", "every Monday at 18:00 America/New_York"),
    ("cron 0 9 * * 1-5", "0 9 * * mon-fri", "every weekday (Monday to Friday) at 09:00 Europe/Berlin"),
    ("0 9 * * 1-5", "0 9 * * mon-fri", "every weekday (Monday to Friday) at 09:00 Europe/Berlin"),
    ("0 9 * * 0", "0 9 * * sun", "every Sunday at 09:00 Europe/Berlin"),
    ("0 9 * * 7", "0 9 * * sun", "every Sunday at 09:00 Europe/Berlin"),
    ("0 9 * * 5-7", "0 9 * * fri-sun", "every Friday, Saturday and Sunday at 09:00 Europe/Berlin"),
    ("0 9,18 * * *", "0 9,18 * * *", "every day at 09:00 and 18:00 Europe/Berlin"),
    (
        "*/15 9-17 * * *",
        "0,15,30,45 9-17 * * *",
        "on the cron schedule '0,15,30,45 9-17 * * *' (Europe/Berlin)",
    ),
    ("0 9 1 jan,jul *", "0 9 1 1,7 *", "on the cron schedule '0 9 1 1,7 *' (Europe/Berlin)"),
]


@pytest.mark.parametrize(("text", "cron", "description"), CRON_TABLE)
def test_cron_recurrences(text: str, cron: str, description: str) -> None:
    rec = parse_recurrence(text, BERLIN)
    assert rec.kind == "cron"
    assert rec.cron_expr == cron
    assert rec.describe() == description
    assert rec.interval is None
    assert rec.text == text


@pytest.mark.parametrize(
    ("text", "interval", "description"),
    [
        ("every 2 hours", timedelta(hours=2), "every 2 hours"),
        ("every 30 minutes", timedelta(minutes=30), "every 30 minutes"),
        ("every 5 minutes", timedelta(minutes=5), "every 5 minutes"),
        ("every 90 minutes", timedelta(minutes=90), "every 1 hour 30 minutes"),
        ("every 1h30m", timedelta(minutes=90), "every 1 hour 30 minutes"),
        ("every hour", timedelta(hours=1), "every hour"),
        ("every 3 days", timedelta(days=3), "every 3 days"),
    ],
)
def test_interval_recurrences(text: str, interval: timedelta, description: str) -> None:
    rec = parse_recurrence(text, BERLIN)
    assert rec.kind == "interval"
    assert rec.interval == interval
    assert rec.describe() == description


def test_recurrence_zone() -> None:
    assert parse_recurrence("every monday 18:00", BERLIN).tz == BERLIN
    assert parse_recurrence("every monday 18:00 America/New_York", BERLIN).tz == NEW_YORK
    rec = parse_recurrence("every monday 18:00 UTC+2", BERLIN)
    assert rec.tz.utcoffset(None) == timedelta(hours=2)


def test_weekly_stays_at_local_time_across_dst() -> None:
    rec = parse_recurrence("every monday 18:00 Europe/Berlin", ZUTC)
    fires = next_fire_times(rec, utc(2027, 3, 15, 0, 0), 4)
    assert [f.astimezone(UTC) for f in fires] == [
        utc(2027, 3, 15, 17, 0),  # CET, UTC+1
        utc(2027, 3, 22, 17, 0),
        utc(2027, 3, 29, 16, 0),  # CEST, UTC+2, after the 28 March change
        utc(2027, 4, 5, 16, 0),
    ]
    assert all(f.astimezone(BERLIN).hour == 18 and f.minute == 0 for f in fires)


def test_cron_weekday_numbers_are_cron_numbers_not_apscheduler_ones() -> None:
    weekdays = parse_recurrence("0 9 * * 1-5", ZUTC)
    fires = next_fire_times(weekdays, NOW, 10)
    assert len(fires) == 10
    assert {f.weekday() for f in fires} == {0, 1, 2, 3, 4}  # Monday..Friday
    sundays = next_fire_times(parse_recurrence("0 9 * * 0", ZUTC), NOW, 3)
    assert [f.date().isoformat() for f in sundays] == ["2026-11-29", "2026-12-06", "2026-12-13"]


def test_next_fire_times_are_strictly_after() -> None:
    rec = parse_recurrence("every day 09:00 UTC", BERLIN)
    fires = next_fire_times(rec, utc(2026, 11, 25, 9, 0), 2)
    assert fires == [utc(2026, 11, 26, 9, 0), utc(2026, 11, 27, 9, 0)]
    assert next_fire_times(rec, NOW, 0) == []


def test_interval_next_fire_times() -> None:
    rec = parse_recurrence("every 2 hours", BERLIN)
    assert next_fire_times(rec, NOW, 3) == [
        NOW + timedelta(hours=2),
        NOW + timedelta(hours=4),
        NOW + timedelta(hours=6),
    ]
    start = NOW + timedelta(minutes=10)
    assert next_fire_times(rec, NOW, 2, start=start) == [start, start + timedelta(hours=2)]


def test_to_trigger() -> None:
    cron = parse_recurrence("every monday 18:00 Europe/Berlin", ZUTC).to_trigger()
    assert isinstance(cron, CronTrigger)
    assert cron.timezone == BERLIN
    first = cron.get_next_fire_time(None, NOW)
    assert first == datetime(2026, 11, 30, 18, 0, tzinfo=BERLIN)

    start = NOW + timedelta(days=1)
    late = parse_recurrence("every monday 18:00", BERLIN).to_trigger(start=start + timedelta(days=6))
    assert late.get_next_fire_time(None, NOW) == datetime(2026, 12, 7, 18, 0, tzinfo=BERLIN)

    interval = parse_recurrence("every 30 minutes", BERLIN).to_trigger(start=start)
    assert isinstance(interval, IntervalTrigger)
    assert interval.get_next_fire_time(None, NOW) == start
    assert interval.get_next_fire_time(start, NOW) == start + timedelta(minutes=30)


def test_recurrence_is_frozen() -> None:
    rec = parse_recurrence("every day 09:00", BERLIN)
    assert isinstance(rec, Recurrence)
    with pytest.raises(AttributeError):
        rec.hour = "10"  # type: ignore[misc]
    parsed = parse_when("in 2 hours", NOW, BERLIN)
    assert isinstance(parsed, ParsedWhen)
    with pytest.raises(AttributeError):
        parsed.instant = NOW  # type: ignore[misc]


BAD_RECURRENCES = [
    ("every 1 minute", "the shortest interval is 5 minutes"),
    ("every 4 minutes", "the shortest interval is 5 minutes"),
    ("every minute", "the shortest interval is 5 minutes"),
    ("* * * * *", "the shortest interval is 5 minutes"),
    ("*/2 9 * * *", "the shortest interval is 5 minutes"),
    ("every 30 seconds", "'seconds' is not a unit"),
    ("0 9 * *", "needs 5 fields"),
    ("cron 0 9 * * 1-5 *", "needs 5 fields"),
    ("99 9 * * *", "99 is out of range for the minute field (0-59)"),
    ("0 24 * * *", "24 is out of range for the hour field (0-23)"),
    ("0 9 * 13 *", "13 is out of range for the month field"),
    ("0 9 * * 8", "8 is out of range for the day-of-week field"),
    ("0 9 * * 5-1", "goes backwards"),
    ("0 9 31 2 *", "never happens"),
    ("0 9 1 * 1", "both the day of the month and the day of the week"),
    ("0 9 x * *", "'x' is not a valid value"),
    ("every week", "does not say which day or time"),
    ("every day", "needs a time of day"),
    ("every blursday 9am", "'blursday' is not a day of the week"),
    ("every 2 days 9:00", "can't also have a time of day"),
    ("every monday 25:00", "hours go from 00 to 23"),
    ("weekly", "starts with 'every'"),
    ("", "No schedule given"),
    ("every monday 18:00 Mars/Olympus", "time zone 'Mars/Olympus'"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_RECURRENCES)
def test_bad_recurrences(text: str, fragment: str) -> None:
    with pytest.raises(WhenError) as err:
        parse_recurrence(text, BERLIN)
    message = str(err.value)
    assert fragment in message
    assert "Europe/Berlin" in message  # every message shows what works


# ---------------------------------------------------------------- properties


@given(st.integers(min_value=1, max_value=20000))
def test_in_n_minutes_is_now_plus_n_minutes(n: int) -> None:
    assert parse_when(f"in {n} minutes", NOW, BERLIN).instant == NOW + timedelta(minutes=n)


@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
    zone=st.sampled_from([BERLIN, NEW_YORK, AUCKLAND, ZUTC, ZoneInfo("Asia/Kolkata")]),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
)
def test_bare_time_is_the_next_such_wall_clock_time(now, zone, hour, minute) -> None:
    try:
        parsed = parse_when(f"{hour:02d}:{minute:02d}", now, zone)
    except WhenError as exc:  # only a DST gap may refuse a well-formed time
        assert "does not exist" in str(exc)
        assume(False)
    assert now < parsed.instant <= now + timedelta(hours=25)
    local = parsed.instant.astimezone(zone)
    assert (local.hour, local.minute) == (hour, minute)
