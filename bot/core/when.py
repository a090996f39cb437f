"""Times people type: one-off moments for scheduled spaces, recurring schedules for announcements.

Everything here is pure: the current time is always passed in, nothing reads a clock.

One-off times -- :func:`parse_when`::

    in 2 hours | in 90 minutes | in 1 hour 30 minutes | in 3 days | in 45 min | in 2h | in 1h30m
    today 18:00 | tonight 9pm | tomorrow 18:00 | tomorrow at 6:30pm | 18:00 tomorrow
    friday 9pm | fri 21:00 | next friday 18:00
    2026-12-01 18:00 | 2026-12-01T18:00 | 1 dec 18:00 | dec 1 18:00 | 1 december 2026 6pm
    18:00 | 6pm | 6:30 pm | noon | midnight            (today if still ahead, else tomorrow)

each optionally followed by a zone: an IANA name (``Europe/Berlin``, ``UTC``, case-insensitive,
a bare city such as ``berlin`` also works) or an offset (``UTC+2``, ``UTC-05:30``, ``GMT+1``);
without one the sender's default zone is used.

Semantics worth knowing:

* ``friday 9pm`` is today if today is Friday and 21:00 is still ahead, else the coming Friday;
  ``next friday`` is the first Friday strictly after today (so on a Tuesday it is in 3 days).
* ``tonight`` is today, except that times before 06:00 (and ``midnight``) mean the night's
  early hours, i.e. the next calendar day. ``midnight`` elsewhere is 00:00 at the start of
  the given day.
* A date without a year is this year, or next year if that day has already gone.
* ``in N ...`` is elapsed time (``in 3 days`` = exactly 72 hours later, even across a DST
  change); wall-clock forms are resolved in the zone with :mod:`zoneinfo`.
* DST: a local time that does not exist (the spring-forward gap) is refused with a message
  saying so. A local time that happens twice (fall-back) means the **first** occurrence
  (``fold=0``, still on summer time); :attr:`ParsedWhen.note` says so and :meth:`describe`
  shows it.
* :func:`parse_when` does not apply the scheduling window; :func:`check_window` does.

Recurring schedules -- :func:`parse_recurrence`::

    every day 09:00 | daily 9am | every weekday 9am | every weekend 10:00
    every monday 18:00 | every mon,wed,fri 18:00 | every tuesday and thursday at 6pm
    every 2 hours | every 30 minutes | every hour | every 1h30m          (minimum 5 minutes)
    cron 0 9 * * 1-5 | 0 9 * * 1-5                  (standard cron: day of week 0/7 = Sunday)

with the same optional zone at the end. Cron lines are validated and converted to
APScheduler's own numbering (APScheduler 3 counts weekdays from Monday = 0, unlike cron).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .words import plural

__all__ = [
    "MIN_INTERVAL",
    "WHEN_FORMS",
    "ParsedWhen",
    "Recurrence",
    "WhenError",
    "check_window",
    "describe_instant",
    "next_fire_times",
    "parse_recurrence",
    "parse_timezone",
    "parse_when",
    "zone_name",
]

MIN_INTERVAL = timedelta(minutes=5)


class WhenError(ValueError):
    """Text could not be read as a time, zone or schedule; ``str(exc)`` is for the person."""


WHEN_EXAMPLES = (
    "Examples that work: 'in 2 hours', 'in 90 minutes', 'tomorrow 18:00', 'tonight 9pm', "
    "'friday 21:00', 'next monday 6:30pm', '1 dec 18:00', '2026-12-01 18:00 Europe/Berlin', "
    "'18:00 UTC+2'."
)
#: every form of time :func:`parse_when` reads, as people see it in ``!help space schedule``:
#: (what it is, examples); each example is in the table the parser is tested with
#: (tests/test_when.py WHEN_TABLE), so what the help shows is what works
WHEN_FORMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a span from now", ("in 2 hours", "in 90 minutes", "in 1 hour 30 minutes", "in 3 days", "in 45 min",
                         "in 1h30m", "in an hour")),
    ("today, tonight or tomorrow at a time", ("today 18:00", "tonight 9pm", "tomorrow 9am", "tomorrow at 6:30pm",
                                              "18:00 tomorrow")),
    ("a weekday (this week's, or next week's once it has gone)", ("friday 9pm", "fri 21:00", "on friday at 9pm")),
    ("next and a weekday (the first one after today)", ("next friday 18:00", "next tuesday 18:00")),
    ("a date (this year's, or next year's once it has gone)", ("2026-12-01 18:00", "2026-12-01T18:00", "1 dec 18:00",
                                                               "dec 1 18:00", "1 december 2026 6pm",
                                                               "1st of December at 6 p.m.")),
    ("a time alone (today if still ahead, else tomorrow)", ("18:00", "6pm", "6:30 pm", "noon", "midnight")),
    ("any of these with a zone at the end (else yours, set with !timezone)",
     ("tomorrow 18:00 Europe/Berlin", "friday 9pm berlin", "tomorrow 18:00 UTC", "tomorrow 18:00 UTC+2",
      "tomorrow 18:00 GMT+1", "tomorrow 18:00 +02:00")),
)

ZONE_EXAMPLES = (
    "Use an IANA zone name like Europe/Berlin, America/New_York or UTC, or an offset like UTC+2 or UTC-05:30."
)
RECURRENCE_EXAMPLES = (
    "Examples that work: 'every day 09:00', 'every weekday 9am', 'every monday 18:00', "
    "'every mon,wed,fri 18:00 Europe/Berlin', 'every 2 hours', 'every 30 minutes', "
    "'cron 0 9 * * 1-5'."
)

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DAY_ABBR = tuple(n[:3].lower() for n in DAY_NAMES)
DAY_NAMES_LOW = tuple(n.lower() for n in DAY_NAMES)


def _build_weekdays() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, name in enumerate(DAY_NAMES):
        low = name.lower()
        out[low] = out[low[:3]] = out[low + "s"] = i
    out.update(tues=1, weds=2, thur=3, thurs=3)
    return out


def _build_months() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, name in enumerate(MONTH_NAMES, start=1):
        out[name.lower()] = out[name[:3].lower()] = i
    out["sept"] = 9
    return out


_WEEKDAYS = _build_weekdays()
_MONTHS = _build_months()
_TIME_WORDS = {"noon": time(12), "midday": time(12), "midnight": time(0)}
_KEYWORDS = (
    set(_WEEKDAYS)
    | set(_MONTHS)
    | set(_TIME_WORDS)
    | {"in", "at", "on", "of", "the", "and", "next", "today", "tonight", "tomorrow"}
    | {"every", "each", "daily", "day", "days", "weekday", "weekdays", "weekend", "weekends"}
    | {"cron", "am", "pm", "h", "m", "d", "min", "mins", "minute", "minutes", "hour", "hours"}
)

# ---------------------------------------------------------------- zones

_UTC_ALIASES = {"utc", "gmt", "z", "zulu", "etc/utc", "universal"}
_OFFSET_NAMED = re.compile(r"(?:utc|gmt)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?", re.I)
_OFFSET_BARE = re.compile(r"([+-])(\d{2}):?(\d{2})")
_NOT_ZONES = {"localtime", "factory"}


@lru_cache(maxsize=1)
def _zone_index() -> dict[str, str]:
    """Lower-cased zone name -> canonical IANA key."""
    keys = sorted(available_timezones())
    return {k.lower(): k for k in keys if k.lower() not in _NOT_ZONES}


@lru_cache(maxsize=1)
def _city_index() -> dict[str, str]:
    """Lower-cased last part of a zone name ('berlin', 'new_york') -> IANA key."""
    out: dict[str, str] = {}
    # shorter keys first so 'America/Buenos_Aires'-style aliases lose to nothing odd
    for key in sorted(_zone_index().values(), key=lambda k: (k.count("/"), k)):
        if "/" not in key or key.startswith(("Etc/", "SystemV/", "US/")):
            continue
        out.setdefault(key.rsplit("/", 1)[1].lower(), key)
    return out


def _fixed_offset(sign: str, hours: str, minutes: str | None, raw: str) -> tzinfo:
    h, m = int(hours), int(minutes or 0)
    if m >= 60 or h > 14 or (h == 14 and m):
        raise WhenError(f"{raw!r} is not a real UTC offset (offsets go from UTC-12:00 to UTC+14:00). " + ZONE_EXAMPLES)
    delta = timedelta(hours=h, minutes=m)
    if not delta:
        return ZoneInfo("UTC")
    if sign == "-":
        delta = -delta
    return timezone(delta, _offset_label(delta))


def _offset_label(delta: timedelta) -> str:
    sign = "-" if delta < timedelta(0) else "+"
    minutes = abs(int(delta.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse_timezone(text: str) -> tzinfo:
    """An IANA zone (case-insensitive; a bare city like 'berlin' works) or a UTC offset.

    ``UTC+2``/``GMT-05:30``/``+02:00`` give a fixed-offset :class:`datetime.timezone` (no DST);
    ``UTC``/``GMT``/``Z`` and zero offsets give ``ZoneInfo("UTC")``; names give a
    :class:`zoneinfo.ZoneInfo`. Unknown names raise :class:`WhenError` with suggestions.
    """
    raw = " ".join(str(text).split())
    if not raw:
        raise WhenError("No time zone given. " + ZONE_EXAMPLES)
    low = raw.lower()
    if low in _UTC_ALIASES:
        return ZoneInfo("UTC")
    m = _OFFSET_NAMED.fullmatch(low) or _OFFSET_BARE.fullmatch(low)
    if m:
        return _fixed_offset(*m.groups(), raw=raw)
    key = low.replace(" ", "_")
    found = _zone_index().get(key) or _city_index().get(key)
    if found:
        return ZoneInfo(found)
    names = {**_city_index(), **_zone_index()}
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(names[c] for c in close))
    hint = f" Did you mean {_or_list(suggestions)}?" if suggestions else ""
    raise WhenError(f"I don't know the time zone {raw!r}.{hint} {ZONE_EXAMPLES}")


def zone_name(tz: tzinfo) -> str:
    """'Europe/Berlin', 'UTC', 'UTC+02:00' -- the name to show for a zone."""
    key = getattr(tz, "key", None)
    if key:
        return "UTC" if _is_utc(tz) else key
    if tz is UTC:
        return "UTC"
    return tz.tzname(None) or str(tz)


def _is_utc(tz: tzinfo) -> bool:
    if tz is UTC:
        return True
    key = getattr(tz, "key", None)
    return bool(key) and key.lower() in {
        "utc",
        "etc/utc",
        "etc/uct",
        "uct",
        "universal",
        "etc/universal",
        "zulu",
        "etc/zulu",
    }


def _or_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _and_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------- describing


def _day_label(d: date, with_year: bool = True) -> str:
    label = f"{DAY_NAMES[d.weekday()]} {d.day} {MONTH_NAMES[d.month - 1][:3]}"
    return f"{label} {d.year}" if with_year else label


def describe_instant(instant: datetime, tz: tzinfo) -> str:
    """'Friday 27 Nov 2026 21:00 CET (Europe/Berlin) = 20:00 UTC'."""
    local = instant.astimezone(tz)
    utc = instant.astimezone(UTC)
    head = f"{_day_label(local.date())} {local:%H:%M}"
    if _is_utc(tz):
        return f"{head} UTC"
    name = zone_name(tz)
    abbr = local.tzname()
    zone = f"{abbr} ({name})" if abbr and abbr != name else name
    if utc.date() == local.date():
        tail = f"{utc:%H:%M} UTC"
    else:
        tail = f"{_day_label(utc.date(), with_year=utc.year != local.year)} {utc:%H:%M} UTC"
    return f"{head} {zone} = {tail}"


def _span(delta: timedelta) -> str:
    """'2 hours', '1 hour 30 minutes', '3 days'."""
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [plural(v, w) for v, w in ((days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second")) if v]
    return " ".join(parts) or "0 minutes"


@dataclass(frozen=True)
class ParsedWhen:
    """A moment someone typed: ``instant`` is aware UTC, ``tz`` the zone it was read in.

    ``note`` is non-empty when something about the reading deserves a mention (an ambiguous
    fall-back time resolved to its first occurrence).
    """

    instant: datetime
    tz: tzinfo
    text: str
    note: str = ""

    @property
    def local(self) -> datetime:
        return self.instant.astimezone(self.tz)

    def describe(self) -> str:
        text = describe_instant(self.instant, self.tz)
        return f"{text} ({self.note})" if self.note else text


def check_window(instant: datetime | ParsedWhen, now: datetime, max_days_ahead: int) -> None:
    """Refuse a start time in the past or more than ``max_days_ahead`` days after ``now``.

    ``instant`` may be a :class:`ParsedWhen` (its description, in the sender's zone, goes into
    the message) or an aware datetime (described in its own zone).
    """
    if isinstance(instant, ParsedWhen):
        at, tz, desc = instant.instant, instant.tz, instant.describe()
    else:
        if instant.tzinfo is None:
            raise ValueError("check_window needs an aware datetime")
        at, tz = instant, instant.tzinfo
        desc = describe_instant(at, tz)
    if at <= now:
        raise WhenError(
            f"{desc}: that is in the past (it is now {describe_instant(now, tz)}). "
            "Give a time that is still ahead, e.g. 'in 2 hours' or 'tomorrow 18:00'."
        )
    limit = now + timedelta(days=max_days_ahead)
    if at > limit:
        ahead = at - now
        days = ahead.days
        if days > max_days_ahead:
            amount = plural(days, "day")
        else:  # just over the limit: say by how much
            amount = _span(timedelta(days=days, seconds=ahead.seconds // 60 * 60))
        raise WhenError(
            f"{desc}: that is {amount} ahead; spaces can be scheduled at most "
            f"{plural(max_days_ahead, 'day')} ahead (until {describe_instant(limit, tz)})."
        )


# ---------------------------------------------------------------- pieces of text

_HHMM = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_AMPM = re.compile(r"(\d{1,2})(?::(\d{2}))?(am|pm)")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAY_NUM = re.compile(r"\d{1,2}")
_YEAR = re.compile(r"\d{4}")
_FILLERS = {"at", "on", "of", "the"}


def _looks_like_time(token: str) -> bool:
    return bool(token in _TIME_WORDS or _HHMM.fullmatch(token) or _AMPM.fullmatch(token))


def _parse_time(token: str, fail) -> time | None:
    """A time-of-day token, None if it is not one; ``fail(detail)`` for one that is invalid."""
    if token in _TIME_WORDS:
        return _TIME_WORDS[token]
    m = _HHMM.fullmatch(token)
    if m:
        h, mi, s = int(m[1]), int(m[2]), int(m[3] or 0)
        if h > 23:
            fail(f"{token!r} is not a time of day: hours go from 00 to 23")
        if mi > 59 or s > 59:
            fail(f"{token!r} is not a time of day: minutes go from 00 to 59")
        return time(h, mi, s)
    m = _AMPM.fullmatch(token)
    if m:
        h, mi = int(m[1]), int(m[2] or 0)
        if not 1 <= h <= 12:
            fail(f"{token!r} is not a time of day: with am/pm the hour goes from 1 to 12")
        if mi > 59:
            fail(f"{token!r} is not a time of day: minutes go from 00 to 59")
        h = h % 12 + (12 if m[3] == "pm" else 0)
        return time(h, mi)
    return None


def _normalize_words(text: str) -> str:
    s = " ".join(text.lower().split())
    s = re.sub(r"\b([ap])\.m\.?", r"\1m", s)
    s = re.sub(r"(\d)\s+(am|pm)\b", r"\1\2", s)
    s = re.sub(r"(\d{4}-\d{1,2}-\d{1,2})t(?=\d)", r"\1 ", s)
    s = re.sub(r"\b(\d{1,2})(?:st|nd|rd|th)\b", r"\1", s)
    return s.replace(",", " ")


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (nxt - timedelta(days=1)).day


def _make_date(year: int, month: int, day: int, fail) -> date:
    if not 1 <= month <= 12:
        fail(f"there is no month {month}")
    if not 1 <= year <= 9999:
        fail(f"the year {year} is out of range")
    n = _days_in_month(year, month)
    if not 1 <= day <= n:
        name = MONTH_NAMES[month - 1]
        fail(f"there is no {day} {name} {year} ({name} {year} has {n} days)")
    return date(year, month, day)


_DURATION_ITEM = re.compile(r"\s*(?:and\s+)?(-?\d+(?:\.\d+)?|an?(?=\s))\s*([a-z]+)")
_UNITS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "hours"),
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), "weeks"),
}


def _parse_duration(body: str, fail, allowed: tuple[str, ...]) -> timedelta:
    body = body.strip()
    if not body:
        fail("it needs an amount of time, e.g. 'in 2 hours'")
    total = timedelta()
    pos = 0
    while pos < len(body):
        m = _DURATION_ITEM.match(body, pos)
        if not m:
            rest = body[pos:].strip()
            if re.fullmatch(r"-?\d+(?:\.\d+)?", rest):
                fail(f"{rest!r} needs a unit: minutes, hours or days")
            fail(f"I don't understand {rest!r} as an amount of time")
        number, unit_word = m.groups()
        unit = _UNITS.get(unit_word)
        if unit is None or unit not in allowed:
            fail(f"{unit_word!r} is not a unit I can use here (use {_or_list(list(allowed))})")
        if number.startswith("-"):
            fail(f"'{number} {unit_word}' is negative; use a positive amount like 'in 2 hours'")
        amount = 1.0 if number in ("a", "an") else float(number)
        try:
            total += timedelta(**{unit: amount})
        except OverflowError:
            fail("that is far too long")
        pos = m.end()
    return total


# ---------------------------------------------------------------- local time -> UTC


def _transition(tz: tzinfo, lo: datetime, hi: datetime, before: timedelta) -> datetime:
    """The UTC instant in (lo, hi] where tz's offset stops being ``before`` (to the second)."""
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) // 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            break
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def _localize(naive: datetime, tz: tzinfo, fail, strict: bool = True) -> tuple[datetime, str]:
    """Wall-clock ``naive`` in ``tz`` -> (aware UTC instant, note).

    Nonexistent (gap) times call ``fail``; ambiguous (fall-back) times take fold=0, the first
    occurrence, and return a note saying so. With ``strict=False`` no checks are made.
    """
    first = naive.replace(tzinfo=tz, fold=0)
    off0 = first.utcoffset()
    utc0 = (naive - off0).replace(tzinfo=UTC)
    if not strict:
        return utc0, ""
    off1 = naive.replace(tzinfo=tz, fold=1).utcoffset()
    if off0 == off1:
        return utc0, ""
    zone = zone_name(tz)
    when = f"{naive:%H:%M} on {_day_label(naive.date())}"
    if utc0.astimezone(tz).replace(tzinfo=None) != naive:  # a gap: the clocks jump forward
        t = _transition(tz, (naive - off1).replace(tzinfo=UTC), utc0, off0)
        jump_from = (t + off0).replace(tzinfo=None)
        jump_to = (t + off1).replace(tzinfo=None)
        fail(
            f"{when} does not exist in {zone}: the clocks jump forward from "
            f"{jump_from:%H:%M} to {jump_to:%H:%M} that night (daylight saving time). "
            f"Pick a time before {jump_from:%H:%M} or from {jump_to:%H:%M}",
            examples=False,
        )
    # ambiguous: the clocks go back, this wall time happens twice
    t = _transition(tz, utc0, (naive - off1).replace(tzinfo=UTC), off0)
    back_from = (t + off0).replace(tzinfo=None)
    back_to = (t + off1).replace(tzinfo=None)
    abbr = first.tzname() or _offset_label(off0)
    note = (
        f"{naive:%H:%M} happens twice that night in {zone}, the clocks go back from "
        f"{back_from:%H:%M} to {back_to:%H:%M}; this is the first one, {abbr}"
    )
    return utc0, note


# ---------------------------------------------------------------- one-off times


def _zone_split(raw: str) -> tuple[str, tzinfo | None]:
    """Take a zone off the end of ``raw`` if there clearly is one."""
    m = re.fullmatch(r"(?:(.*)\s+)?((?:utc|gmt)\s*[+-]\s*\d{1,2}(?::?\d{2})?)", raw, re.I)
    if m:
        return (m[1] or "").strip(), parse_timezone(m[2])
    m = re.fullmatch(r"(.*\d:\d{2}(?::\d{2})?)(z|[+-]\d{2}:?\d{2})", raw, re.I)
    if m:
        return m[1].strip(), parse_timezone(m[2])
    head, _, last = raw.rpartition(" ")
    if not head:
        return raw, None
    low = last.lower()
    if _OFFSET_BARE.fullmatch(low):
        return head, parse_timezone(last)
    if low in _KEYWORDS:
        return raw, None
    if "/" in last or low in _UTC_ALIASES or low in _zone_index():
        return head, parse_timezone(last)
    return raw, None


def _with_zone(raw: str, default_tz: tzinfo, parse, fail):
    """Run ``parse(text, tz)`` with the zone at the end of ``raw`` or ``default_tz``."""
    rest, tz = _zone_split(raw)
    if tz is not None:
        if not rest:
            fail("there is only a time zone in it")
        return parse(rest, tz)
    try:
        return parse(raw, default_tz)
    except WhenError as original:
        head, _, last = raw.rpartition(" ")
        if not head or not re.fullmatch(r"[A-Za-z_\-]+", last) or last.lower() in _KEYWORDS:
            raise
        try:
            tz = parse_timezone(last)
        except WhenError as zone_error:
            try:
                parse(head, default_tz)
            except WhenError:
                raise original from None
            raise zone_error from None
        return parse(head, tz)


def parse_when(text: str, now: datetime, default_tz: tzinfo) -> ParsedWhen:
    """Read a one-off moment; see the module docstring for what is accepted.

    ``now`` must be aware. Raises :class:`WhenError` saying what was not understood.
    The scheduling window is not applied here (see :func:`check_window`).
    """
    if now.tzinfo is None:
        raise ValueError("parse_when needs an aware 'now'")
    raw = " ".join(str(text).split())

    def fail(detail: str, examples: bool = True):
        tail = f" {WHEN_EXAMPLES}" if examples else ""
        raise WhenError(f"I couldn't understand {raw!r} as a time: {detail}.{tail}")

    if not raw:
        raise WhenError(f"No time given. {WHEN_EXAMPLES}")

    def parse(body: str, tz: tzinfo) -> ParsedWhen:
        try:
            instant, note = _when_tokens(_normalize_words(body), now, tz, fail)
        except (OverflowError, ValueError) as exc:
            if isinstance(exc, WhenError):
                raise
            fail("that is too far in the future")
        return ParsedWhen(instant=instant, tz=tz, text=raw, note=note)

    return _with_zone(raw, default_tz, parse, fail)


def _when_tokens(s: str, now: datetime, tz: tzinfo, fail) -> tuple[datetime, str]:
    now_utc = now.astimezone(UTC)
    if s.startswith("in ") or s == "in":
        delta = _parse_duration(s[2:], fail, ("minutes", "hours", "days", "weeks"))
        if delta <= timedelta(0):
            fail(f"{s!r} is no time from now; say how long from now, e.g. 'in 10 minutes'")
        return now_utc + delta, ""

    tokens = [t for t in s.split() if t not in _FILLERS]
    if not tokens:
        fail("there is no time in it")
    # "18:00 tomorrow", "6pm friday": put the time last
    if len(tokens) >= 2 and _looks_like_time(tokens[0]) and not _looks_like_time(tokens[-1]):
        tokens = tokens[1:] + tokens[:1]

    today = now_utc.astimezone(tz).date()
    head = tokens[0]

    def need_time(rest: list[str], example: str) -> time:
        if not rest:
            fail(f"it needs a time of day, e.g. {example!r}")
        if len(rest) > 1:
            fail(f"I don't understand {' '.join(rest)!r}")
        t = _parse_time(rest[0], fail)
        if t is None:
            fail(f"{rest[0]!r} is not a time of day (use 18:00, 6pm, 6:30pm, noon or midnight)")
        return t

    def at(d: date, t: time) -> tuple[datetime, str]:
        return _localize(datetime.combine(d, t), tz, fail)

    def ahead(d: date, t: time) -> bool:
        return _localize(datetime.combine(d, t), tz, fail, strict=False)[0] > now_utc

    if head in ("today", "tonight", "tomorrow"):
        t = need_time(tokens[1:], f"{head} 18:00")
        d = today + timedelta(days=1 if head == "tomorrow" else 0)
        if head == "tonight" and t < time(6):
            d += timedelta(days=1)  # "tonight 1am", "tonight midnight": the coming night
        return at(d, t)

    if head == "next":
        if len(tokens) < 2:
            fail("'next' needs a day, e.g. 'next friday 18:00'")
        word = tokens[1]
        if word not in _WEEKDAYS:
            if word == "week":
                fail("'next week' does not say which day; try e.g. 'next monday 18:00'")
            fail(
                f"{word!r} is not a day of the week{_suggest(word, DAY_NAMES_LOW)}; "
                "use monday ... sunday or mon ... sun"
            )
        t = need_time(tokens[2:], f"next {word} 18:00")
        days = (_WEEKDAYS[word] - today.weekday()) % 7 or 7
        return at(today + timedelta(days=days), t)

    if head in _WEEKDAYS:
        t = need_time(tokens[1:], f"{head} 18:00")
        d = today + timedelta(days=(_WEEKDAYS[head] - today.weekday()) % 7)
        if d == today and not ahead(d, t):
            d += timedelta(days=7)
        return at(d, t)

    m = _ISO_DATE.fullmatch(head)
    if m:
        d = _make_date(int(m[1]), int(m[2]), int(m[3]), fail)
        return at(d, need_time(tokens[1:], f"{head} 18:00"))

    day_month = None
    if len(tokens) >= 2:
        if _DAY_NUM.fullmatch(tokens[0]) and tokens[1] in _MONTHS:
            day_month = (int(tokens[0]), _MONTHS[tokens[1]])
        elif tokens[0] in _MONTHS and _DAY_NUM.fullmatch(tokens[1]):
            day_month = (int(tokens[1]), _MONTHS[tokens[0]])
    if day_month:
        day, month = day_month
        rest = tokens[2:]
        example = f"{day} {MONTH_NAMES[month - 1][:3].lower()} 18:00"
        if rest and _YEAR.fullmatch(rest[0]):
            d = _make_date(int(rest[0]), month, day, fail)
            return at(d, need_time(rest[1:], example))
        t = need_time(rest, example)
        for year in (today.year, today.year + 1):
            if day <= _days_in_month(year, month) and date(year, month, day) >= today:
                return at(date(year, month, day), t)
        _make_date(today.year, month, day, fail)  # fails: no such day
        _make_date(today.year + 1, month, day, fail)

    if len(tokens) == 1:
        t = _parse_time(head, fail)
        if t is not None:
            d = today if ahead(today, t) else today + timedelta(days=1)
            return at(d, t)

    if head == "yesterday" or head == "ago" or tokens[-1] == "ago":
        fail("that is in the past; spaces can only be scheduled ahead")
    if head == "now":
        fail("'now' is not a time ahead; say when, e.g. 'in 5 minutes'")
    if head.isalpha() and head not in _KEYWORDS:
        fail(f"I don't know the word {head!r}{_suggest(head, DAY_NAMES_LOW + ('tomorrow',))}")
    fail(f"I don't understand {' '.join(tokens)!r}")
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- recurring schedules


@dataclass(frozen=True)
class Recurrence:
    """A repeating schedule.

    ``kind == "cron"``: ``minute``, ``hour``, ``day``, ``month`` and ``day_of_week`` hold
    APScheduler 3 field expressions (weekdays as names, e.g. ``"mon-fri"``), evaluated in
    ``tz`` so 18:00 stays 18:00 local across DST.
    ``kind == "interval"``: ``interval`` is the fixed elapsed time between fires.
    """

    kind: str
    tz: tzinfo
    text: str
    minute: str | None = None
    hour: str | None = None
    day: str | None = None
    month: str | None = None
    day_of_week: str | None = None
    interval: timedelta | None = None

    @property
    def cron_expr(self) -> str:
        """The five cron fields in APScheduler notation (weekday names, not numbers)."""
        return f"{self.minute} {self.hour} {self.day} {self.month} {self.day_of_week}"

    def describe(self) -> str:
        if self.kind == "interval":
            assert self.interval is not None
            span = _span(self.interval)
            return f"every {span[2:] if re.fullmatch(r'1 [a-z]+', span) else span}"
        zone = zone_name(self.tz)
        simple = re.compile(r"\d+(?:,\d+)*")
        if (
            self.day == "*"
            and self.month == "*"
            and simple.fullmatch(self.minute or "")
            and simple.fullmatch(self.hour or "")
        ):
            minutes = [int(x) for x in self.minute.split(",")]
            hours = [int(x) for x in self.hour.split(",")]
            if len(minutes) * len(hours) <= 6:
                times = [f"{h:02d}:{m:02d}" for h in sorted(hours) for m in sorted(minutes)]
                return f"every {_days_phrase(self.day_of_week)} at {_and_list(times)} {zone}"
        return f"on the cron schedule '{self.cron_expr}' ({zone})"

    def to_trigger(self, start: datetime | None = None) -> CronTrigger | IntervalTrigger:
        """An APScheduler 3 trigger. For intervals without ``start`` APScheduler starts the
        count at its own "now" (first fire one interval later)."""
        if self.kind == "interval":
            assert self.interval is not None
            return IntervalTrigger(seconds=self.interval.total_seconds(), start_date=start, timezone=self.tz)
        return CronTrigger(
            minute=self.minute,
            hour=self.hour,
            day=self.day,
            month=self.month,
            day_of_week=self.day_of_week,
            start_date=start,
            timezone=self.tz,
        )


def _days_phrase(dow: str | None) -> str:
    days = _dow_set(dow)
    if len(days) == 7:
        return "day"
    if days == {0, 1, 2, 3, 4}:
        return "weekday (Monday to Friday)"
    return _and_list([DAY_NAMES[i] for i in sorted(days)])


def _dow_set(dow: str | None) -> set[int]:
    if not dow or dow == "*":
        return set(range(7))
    out: set[int] = set()
    for part in dow.split(","):
        a, _, b = part.partition("-")
        ia = _DAY_ABBR.index(a)
        ib = _DAY_ABBR.index(b) if b else ia
        out.update(range(ia, ib + 1))
    return out


def _dow_expr(days: set[int]) -> str:
    """{0,1,2,3,4} -> 'mon-fri'; {0,2,4} -> 'mon,wed,fri'; all -> '*'."""
    if len(days) == 7:
        return "*"
    return ",".join(
        f"{_DAY_ABBR[a]}-{_DAY_ABBR[b]}" if b - a >= 2 else ",".join(_DAY_ABBR[i] for i in range(a, b + 1))
        for a, b in _runs(sorted(days))
    )


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _num_expr(values: set[int], lo: int, hi: int) -> str:
    if values == set(range(lo, hi + 1)):
        return "*"
    return ",".join(
        f"{a}-{b}" if b - a >= 2 else ",".join(str(i) for i in range(a, b + 1)) for a, b in _runs(sorted(values))
    )


def parse_recurrence(text: str, default_tz: tzinfo) -> Recurrence:
    """Read a repeating schedule; see the module docstring for what is accepted."""
    raw = " ".join(str(text).split())

    def fail(detail: str, examples: bool = True):
        tail = f" {RECURRENCE_EXAMPLES}" if examples else ""
        raise WhenError(f"I couldn't understand {raw!r} as a schedule: {detail}.{tail}")

    if not raw:
        raise WhenError(f"No schedule given. {RECURRENCE_EXAMPLES}")

    def parse(body: str, tz: tzinfo) -> Recurrence:
        tokens = body.lower().split()
        head = tokens[0]
        if head == "cron":
            fields = _parse_cron(tokens[1:], fail)
            return Recurrence(kind="cron", tz=tz, text=raw, **fields)
        if re.fullmatch(r"[\d*][\d*,/\-]*", head):
            fields = _parse_cron(tokens, fail)
            return Recurrence(kind="cron", tz=tz, text=raw, **fields)
        if head in ("every", "each"):
            rest = tokens[1:]
        elif head == "daily":
            rest = ["day", *tokens[1:]]
        elif head in ("weekdays", "weekends"):
            rest = tokens
        else:
            fail(f"a schedule starts with 'every' (or is a cron line), not {head!r}")
        return _parse_every(" ".join(rest), tz, raw, fail)

    return _with_zone(raw, default_tz, parse, fail)


def _parse_every(body: str, tz: tzinfo, raw: str, fail) -> Recurrence:
    s = _normalize_words(body)
    tokens = [t for t in s.split() if t not in {"at", "and", "&", "on"}]
    if not tokens:
        fail("'every' what? Name days and a time, or an interval")
    head = tokens[0]
    if head in ("week", "weeks", "fortnight", "month", "months", "year", "years"):
        fail(
            f"'every {head}' does not say which day or time; name the day and time, e.g. "
            "'every monday 18:00', or use a cron line such as 'cron 0 18 1 * *' "
            "for 18:00 on the 1st of each month"
        )
    if head[0].isdigit() or head in ("a", "an", "hour", "minute", "min"):
        if any(_looks_like_time(t) for t in tokens):
            fail("an interval can't also have a time of day; for fixed times use e.g. 'every day 09:00'")
        duration_text = s if head[0].isdigit() or head in ("a", "an") else "1 " + s
        delta = _parse_duration(duration_text, fail, ("minutes", "hours", "days"))
        if delta < MIN_INTERVAL:
            fail(f"every {_span(delta)} is too often; the shortest interval is {_span(MIN_INTERVAL)}")
        return Recurrence(kind="interval", tz=tz, text=raw, interval=delta)

    days: set[int] = set()
    i = 0
    while i < len(tokens) and not _looks_like_time(tokens[i]):
        word = tokens[i]
        if word in ("day", "days"):
            days.update(range(7))
        elif word in ("weekday", "weekdays"):
            days.update(range(5))
        elif word in ("weekend", "weekends"):
            days.update((5, 6))
        elif word in _WEEKDAYS:
            days.add(_WEEKDAYS[word])
        else:
            fail(
                f"{word!r} is not a day of the week{_suggest(word, DAY_NAMES_LOW)}; "
                "use day, weekday, weekend, monday ... sunday or mon ... sun"
            )
        i += 1
    if not days:
        fail("it needs days before the time, e.g. 'every monday 18:00'")
    rest = tokens[i:]
    if not rest:
        fail(f"it needs a time of day, e.g. 'every {' '.join(tokens)} 18:00'")
    if len(rest) > 1:
        fail(f"I don't understand {' '.join(rest)!r}; give one time of day")
    t = _parse_time(rest[0], fail)
    assert t is not None
    return Recurrence(
        kind="cron",
        tz=tz,
        text=raw,
        minute=str(t.minute),
        hour=str(t.hour),
        day="*",
        month="*",
        day_of_week=_dow_expr(days),
    )


_CRON_ITEM = re.compile(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?")
_CRON_MONTHS = {m[:3].lower(): i for i, m in enumerate(MONTH_NAMES, start=1)}
_CRON_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def _expand_cron_field(field: str, lo: int, hi: int, label: str, names: dict[str, int] | None, fail) -> set[int]:
    def value(tok: str) -> int:
        if tok.isdigit():
            v = int(tok)
        elif names and tok in names:
            v = names[tok]
        else:
            fail(f"{tok!r} is not a valid value for the {label} field")
        if not lo <= v <= hi:
            fail(f"{tok} is out of range for the {label} field ({lo}-{hi})")
        return v

    out: set[int] = set()
    for part in field.split(","):
        m = _CRON_ITEM.fullmatch(part)
        if not m:
            fail(f"{part!r} in the {label} field is not valid cron syntax")
        rng, step_text = m.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            fail(f"the step in {part!r} ({label} field) must be at least 1")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_text, b_text = rng.split("-")
            a, b = value(a_text), value(b_text)
            if a > b:
                fail(f"the range {rng!r} in the {label} field goes backwards")
        else:
            a = value(rng)
            b = hi if step_text else a
        out.update(range(a, b + 1, step))
    return out


def _parse_cron(fields: list[str], fail) -> dict[str, str]:
    if len(fields) != 5:
        fail(f"a cron line needs 5 fields (minute hour day-of-month month day-of-week), this one has {len(fields)}")
    minute_f, hour_f, day_f, month_f, dow_f = fields
    minutes = _expand_cron_field(minute_f, 0, 59, "minute", None, fail)
    hours = _expand_cron_field(hour_f, 0, 23, "hour", None, fail)
    days = _expand_cron_field(day_f, 1, 31, "day-of-month", None, fail)
    months = _expand_cron_field(month_f, 1, 12, "month", _CRON_MONTHS, fail)
    cron_dows = _expand_cron_field(dow_f, 0, 7, "day-of-week", _CRON_DAYS, fail)
    dows = {(v - 1) % 7 for v in cron_dows}  # cron: 0/7 = Sunday; APScheduler: 0 = Monday

    if len(days) < 31 and len(dows) < 7:
        fail(
            "restricting both the day of the month and the day of the week is not supported "
            "(cron and APScheduler disagree on what it means); restrict only one"
        )
    if not any(d <= _days_in_month(2024, m) for d in days for m in months):
        fail("that date never happens")
    gap = _min_gap(sorted(minutes), hours)
    if gap < MIN_INTERVAL:
        fail(f"that cron line fires every {_span(gap)}; the shortest interval is {_span(MIN_INTERVAL)}")
    return {
        "minute": _num_expr(minutes, 0, 59),
        "hour": _num_expr(hours, 0, 23),
        "day": _num_expr(days, 1, 31),
        "month": _num_expr(months, 1, 12),
        "day_of_week": _dow_expr(dows),
    }


def _min_gap(minutes: list[int], hours: set[int]) -> timedelta:
    gaps = [b - a for a, b in zip(minutes, minutes[1:], strict=False)]
    if any((h + 1) % 24 in hours for h in hours):
        gaps.append(60 - minutes[-1] + minutes[0])
    return timedelta(minutes=min(gaps)) if gaps else timedelta(hours=1)


def next_fire_times(recurrence: Recurrence, after: datetime, n: int, start: datetime | None = None) -> list[datetime]:
    """The next ``n`` fire times strictly after ``after`` (aware, in the recurrence's zone).

    These are what APScheduler 3 will do, including its DST quirks: a daily cron time inside
    the spring-forward gap fires an hour later by the wall clock (02:30 -> 03:30), and one in
    the fall-back overlap fires twice (once per occurrence).

    Intervals count from ``start``; without one, from ``after`` (first fire one interval
    after ``after``), which is what a job added at ``after`` would do.
    """
    if after.tzinfo is None:
        raise ValueError("next_fire_times needs an aware 'after'")
    if recurrence.kind == "interval" and start is None:
        assert recurrence.interval is not None
        start = after + recurrence.interval
    trigger = recurrence.to_trigger(start)
    out: list[datetime] = []
    previous = None
    now = after + timedelta(microseconds=1)
    while len(out) < n:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        # APScheduler 3 can hand back a wall time inside a DST gap (e.g. 02:30 on the night
        # clocks spring forward); going through UTC shows the instant it really fires at.
        out.append(fire.astimezone(UTC).astimezone(recurrence.tz))
        previous = now = fire
    return out
