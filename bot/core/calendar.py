"""A space as a calendar event: an iCalendar (RFC 5545) file people add to their calendar.

Pure: the times and links are passed in. Lines end in CRLF, are folded at 75 octets
(never inside a UTF-8 character), and text values are escaped, as RFC 5545 asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: how long the event lasts in a calendar when the host said nothing (spaces have no end time)
DEFAULT_LENGTH = timedelta(hours=1)
PRODID = "-//Chorus//Chorus live audio spaces//EN"


@dataclass(frozen=True)
class SpaceEvent:
    space_id: str
    title: str
    host: str
    starts: datetime
    #: where to open it: the matrix.to link of its room (or of the room it was scheduled in)
    url: str
    #: the listening page, and what to type in chat
    page_url: str = ""
    join_hint: str = ""
    #: the bot's server name: with the space id, an id no other calendar event has
    domain: str = "chorus"
    length: timedelta = DEFAULT_LENGTH


def _escape(text: str) -> str:
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def _fold(line: str) -> str:
    """One content line, folded: at most 75 octets a line, the rest on lines that start
    with a space; a character is never cut in two."""
    out, current = [], b""
    limit = 75
    for ch in line:
        b = ch.encode("utf-8")
        if len(current) + len(b) > limit:
            out.append(current)
            current, limit = b"", 74  # continuation lines begin with one space
        current += b
    out.append(current)
    return "\r\n ".join(part.decode("utf-8") for part in out)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def space_ics(event: SpaceEvent, now: datetime) -> str:
    """The .ics text of one space: a calendar with one event, in UTC."""
    description = [f"A live audio space hosted by {event.host} on Matrix."]
    if event.page_url:
        description.append(f"Listen in the browser: {event.page_url}")
    if event.join_hint:
        description.append(event.join_hint)
    description.append(f"Open it in Matrix: {event.url}")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{_escape(event.space_id)}@{_escape(event.domain)}",
        f"DTSTAMP:{_stamp(now)}",
        f"DTSTART:{_stamp(event.starts)}",
        f"DTEND:{_stamp(event.starts + event.length)}",
        f"SUMMARY:{_escape(event.title)}",
        f"DESCRIPTION:{_escape(chr(10).join(description))}",
        f"LOCATION:{_escape(event.url)}",
        f"URL:{event.url}",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        f"DESCRIPTION:{_escape(event.title)}",
        "TRIGGER:-PT10M",
        "END:VALARM",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(_fold(line) + "\r\n" for line in lines)


def file_name(space_id: str) -> str:
    return f"chorus-{space_id}.ics"
