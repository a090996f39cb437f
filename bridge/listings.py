"""The pages of spaces that are not live: scheduled, ended or cancelled (protocol 1.5).

The bridge owns only live audio; what a page shows before a space starts and after it
ends is the bot's, pushed with ``PUT /control/v1/listings/{space_id}`` and kept here so
that a page can show it without a Matrix login:

- a scheduled space: its title, host, start time (the page shows it in the viewer's own
  time zone, with a countdown) and its calendar file (the bot writes it);
- an ended one: a summary, and its recordings (Ogg/Opus files of this bridge) with
  their WebVTT transcripts, which the page plays;
- a cancelled one: that it was cancelled.

Pure: :func:`parse_listing` raises :class:`page_info.InfoError` naming the field; a
:class:`ListingBook` keeps the most recent :data:`MAX_LISTINGS`. Nothing here does I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import recording
from .page_info import MAX_USER_ID, InfoError, Profile, checked_link, parse_people

STATES = ("scheduled", "ended", "cancelled")
MAX_TITLE = 300
#: an .ics file is about 1 KiB; this leaves room for long titles and links
MAX_CALENDAR = 16 * 1024
MAX_SPEAKERS = 50
MAX_REACTIONS = 10
MAX_RECORDINGS = 20
MAX_BLOCKED = 1000
MAX_LISTINGS = 2000
#: upcoming spaces on the index page
MAX_UPCOMING = 20


@dataclass(frozen=True)
class RecordingFile:
    file: str
    seconds: float | None
    transcript: str | None  # a .vtt of this bridge, or None

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "seconds": self.seconds, "transcript": self.transcript}


@dataclass(frozen=True)
class Summary:
    duration_seconds: int | None
    peak_listeners: int
    speakers: tuple[str, ...]
    reactions: tuple[tuple[str, int], ...]
    recorded: bool  # a recording was made: the page waits for its file if it is not here yet

    def as_json(self) -> dict[str, Any]:
        return {"duration_seconds": self.duration_seconds, "peak_listeners": self.peak_listeners,
                "speakers": list(self.speakers), "reactions": [list(r) for r in self.reactions],
                "recorded": self.recorded}


@dataclass(frozen=True)
class Listing:
    space_id: str
    state: str
    title: str
    public: bool
    host: str
    starts_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    room_url: str | None = None
    calendar: str | None = None
    summary: Summary | None = None
    recordings: tuple[RecordingFile, ...] = ()
    #: transcripts made without a recording (captions on, recording off)
    transcripts: tuple[str, ...] = ()
    people: dict[str, Profile] = field(default_factory=dict)
    #: people a moderator removed: their links do not open a private space's page
    blocked: frozenset[str] = frozenset()

    def files(self) -> set[str]:
        """The names of this bridge's files the page may fetch."""
        names = {r.file for r in self.recordings} | set(self.transcripts)
        return names | {r.transcript for r in self.recordings if r.transcript}

    def without(self, names: set[str]) -> Listing:
        """This listing less the files named (a recording keeps its place without its
        transcript; one without its audio goes)."""
        kept = tuple(replace(r, transcript=None if r.transcript in names else r.transcript)
                     for r in self.recordings if r.file not in names)
        return replace(self, recordings=kept,
                       transcripts=tuple(t for t in self.transcripts if t not in names))

    def as_page(self) -> dict[str, Any]:
        """What a page is given (GET /api/spaces/{id}): no calendar text (it has its own
        address), no blocked list."""
        return {"space_id": self.space_id, "state": self.state, "title": self.title,
                "public": self.public, "host": self.host,
                "starts_at": _iso(self.starts_at), "started_at": _iso(self.started_at),
                "ended_at": _iso(self.ended_at), "room_url": self.room_url,
                "calendar": self.calendar is not None,
                "summary": self.summary.as_json() if self.summary else None,
                "recordings": [r.as_json() for r in self.recordings],
                "transcripts": list(self.transcripts),
                "people": {u: p.as_json() for u, p in self.people.items()}}


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _time(body: dict[str, Any], name: str, *, required: bool = False) -> datetime | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InfoError(name, f"field {name!r} is needed: an ISO 8601 time in UTC")
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise InfoError(name, f"field {name!r} must be an ISO 8601 time, e.g. 2026-12-24T18:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InfoError(name, f"field {name!r} must be an ISO 8601 time, e.g. 2026-12-24T18:00:00Z") from None
    if moment.tzinfo is None:
        raise InfoError(name, f"field {name!r} must say its zone (Z for UTC)")
    return moment.astimezone(UTC)


def _count(value: Any, where: str, *, none: bool = False) -> int | None:
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise InfoError(where, f"{where} must be a whole number of at least 0")
    return value


def _user(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_USER_ID:
        raise InfoError(where, f"{where} must be a user id")
    return value


def _file(value: Any, where: str, suffix: str) -> str:
    if not isinstance(value, str) or not recording.FILE_NAME.fullmatch(value) \
            or not value.endswith(suffix):
        raise InfoError(where, f"{where} must be the name of one of this bridge's {suffix} files")
    return value


def _summary(value: Any) -> Summary | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InfoError("summary", "field 'summary' must be an object or null")
    speakers = value.get("speakers", [])
    if not isinstance(speakers, list) or len(speakers) > MAX_SPEAKERS:
        raise InfoError("summary.speakers", f"summary.speakers must be a list of at most {MAX_SPEAKERS} user ids")
    reactions = value.get("reactions", [])
    if not isinstance(reactions, list) or len(reactions) > MAX_REACTIONS:
        raise InfoError("summary.reactions",
                        f"summary.reactions must be a list of at most {MAX_REACTIONS} [emoji, count] pairs")
    pairs = []
    for i, pair in enumerate(reactions):
        where = f"summary.reactions.{i}"
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                and 0 < len(pair[0]) <= 32):
            raise InfoError(where, f"{where} must be [emoji, count]")
        pairs.append((pair[0], _count(pair[1], where)))
    recorded = value.get("recorded", False)
    if not isinstance(recorded, bool):
        raise InfoError("summary.recorded", "summary.recorded must be true or false")
    return Summary(
        duration_seconds=_count(value.get("duration_seconds"), "summary.duration_seconds", none=True),
        peak_listeners=_count(value.get("peak_listeners", 0), "summary.peak_listeners"),
        speakers=tuple(_user(u, f"summary.speakers.{i}") for i, u in enumerate(speakers)),
        reactions=tuple(pairs), recorded=recorded)


def _recordings(value: Any) -> tuple[RecordingFile, ...]:
    if not isinstance(value, list) or len(value) > MAX_RECORDINGS:
        raise InfoError("recordings", f"field 'recordings' must be a list of at most {MAX_RECORDINGS}")
    out = []
    for i, item in enumerate(value):
        where = f"recordings.{i}"
        if not isinstance(item, dict):
            raise InfoError(where, f"{where} must be an object with 'file', 'seconds', 'transcript'")
        seconds = item.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                                    or not 0 <= seconds < 10**7):
            raise InfoError(f"{where}.seconds", f"{where}.seconds must be a number of seconds or null")
        transcript = item.get("transcript")
        out.append(RecordingFile(
            _file(item.get("file"), f"{where}.file", ".ogg"),
            float(seconds) if seconds is not None else None,
            None if transcript is None else _file(transcript, f"{where}.transcript", ".vtt")))
    return tuple(out)


def parse_listing(space_id: str, body: dict[str, Any]) -> Listing:
    """A listing from the bot's JSON; InfoError names the first bad field."""
    state = body.get("state")
    if state not in STATES:
        raise InfoError("state", "field 'state' must be one of " + ", ".join(STATES))
    title = body.get("title")
    if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
        raise InfoError("title", f"field 'title' must be 1–{MAX_TITLE} characters")
    public = body.get("public")
    if not isinstance(public, bool):
        raise InfoError("public", "field 'public' must be true or false")
    calendar = body.get("calendar")
    if calendar is not None and not (isinstance(calendar, str)
                                     and calendar.startswith("BEGIN:VCALENDAR")
                                     and len(calendar.encode()) <= MAX_CALENDAR):
        raise InfoError("calendar", f"field 'calendar' must be an iCalendar text of at most "
                        f"{MAX_CALENDAR // 1024} KiB, or null")
    transcripts = body.get("transcripts", [])
    if not isinstance(transcripts, list) or len(transcripts) > MAX_RECORDINGS:
        raise InfoError("transcripts", f"field 'transcripts' must be a list of at most {MAX_RECORDINGS}")
    blocked = body.get("blocked", [])
    if not isinstance(blocked, list) or len(blocked) > MAX_BLOCKED:
        raise InfoError("blocked", f"field 'blocked' must be a list of at most {MAX_BLOCKED} user ids")
    room_url = body.get("room_url")
    return Listing(
        space_id=space_id, state=state, title=title, public=public,
        host=_user(body.get("host"), "host"),
        starts_at=_time(body, "starts_at", required=state == "scheduled"),
        started_at=_time(body, "started_at"), ended_at=_time(body, "ended_at"),
        room_url=None if room_url is None else checked_link(room_url, "room_url"),
        calendar=calendar, summary=_summary(body.get("summary")),
        recordings=_recordings(body.get("recordings", [])),
        transcripts=tuple(_file(t, f"transcripts.{i}", ".vtt") for i, t in enumerate(transcripts)),
        people=parse_people(body.get("people", {})),
        blocked=frozenset(_user(u, f"blocked.{i}") for i, u in enumerate(blocked)))


class ListingBook:
    """The listings the bot gave, the most recently given :data:`MAX_LISTINGS`."""

    def __init__(self, limit: int = MAX_LISTINGS) -> None:
        self.limit = limit
        self._book: OrderedDict[str, Listing] = OrderedDict()

    def put(self, listing: Listing) -> None:
        self._book[listing.space_id] = listing
        self._book.move_to_end(listing.space_id)
        while len(self._book) > self.limit:
            self._book.popitem(last=False)

    def drop(self, space_id: str) -> bool:
        return self._book.pop(space_id, None) is not None

    def get(self, space_id: str) -> Listing | None:
        return self._book.get(space_id)

    def upcoming(self, now: datetime, *, late: float = 3600.0, limit: int = MAX_UPCOMING) -> list[Listing]:
        """Public scheduled spaces, soonest first; one whose time passed less than ``late``
        seconds ago is still shown (its host may start it late)."""
        found = [x for x in self._book.values() if x.state == "scheduled" and x.public
                 and x.starts_at is not None and (now - x.starts_at).total_seconds() < late]
        found.sort(key=lambda x: (x.starts_at, x.title))
        return found[:limit]

    def __len__(self) -> int:
        return len(self._book)
