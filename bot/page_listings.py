"""The pages of spaces that are not live: the bot gives the bridge what they show.

A scheduled space's page shows its start time with a countdown and offers its calendar
file; an ended one's shows a summary and plays its recordings with their transcripts as
captions; a cancelled one's says so (protocol 1.5, ``PUT …/listings/{id}``). The bridge
keeps them in memory only, so every resync (the bot's start, a bridge restart) gives it
the scheduled spaces and those that ended in the last :data:`HISTORY_DAYS` days again.

Pushes run in the background, one at a time in one task (a change before the pages a
resync gives again), so no command waits for a slow homeserver's profile or for the
bridge; a failed push is logged and made again by the next change or resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.core import calendar as ics
from bot.core.model import Space, State, Visibility
from bot.db.database import Database
from bot.db.store import as_utc, speakers_of
from bot.matrix.messages import matrix_to

from .bridge_api import BridgeControl, BridgeError, BridgeUnavailable
from .profiles import PageProfiles

log = logging.getLogger(__name__)

#: ended and cancelled spaces whose pages a restarted bridge is given again
HISTORY_DAYS = 30
#: pages given to a restarted bridge at most (it keeps 2,000)
MAX_PUSHED = 500
#: names on an ended space's page, and its recordings and transcripts (the newest; the
#: bridge takes 50 and 20)
MAX_SPEAKERS = 50
MAX_FILES = 20
LISTED_STATES = (State.SCHEDULED, State.ENDED, State.CANCELLED)


def _iso(moment: datetime | None) -> str | None:
    moment = as_utc(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def calendar_event(space: Space, row: Any, *, page_url: str, prefix: str, domain: str) -> ics.SpaceEvent | None:
    """The calendar event of a scheduled (or live) space, None for one with no time to
    add: the same event ``!space calendar`` answers with and its page offers."""
    if space.state is State.SCHEDULED and space.scheduled_for:
        starts = as_utc(space.scheduled_for)
    elif space.state is State.LIVE and row.started_at:
        starts = as_utc(row.started_at)
    else:
        return None
    room = row.room_id or row.origin_room_id
    return ics.SpaceEvent(
        space_id=space.id, title=space.title, host=space.host, starts=starts,
        url=matrix_to(room) if room else page_url, page_url=page_url,
        join_hint=f"In chat: {prefix}space join {space.id}", domain=domain)


def listing_body(space: Space, row: Any, *, files: list[Any], reactions: list[tuple[str, int]],
                 people: dict[str, dict[str, Any]], calendar: str | None) -> dict[str, Any]:
    """What the bridge is given for a space's page (docs/protocol.md, 1.5). Pure."""
    room = row.room_id or row.origin_room_id
    body: dict[str, Any] = {
        "state": space.state.value, "title": space.title,
        "public": space.visibility is Visibility.EVERYONE, "host": space.host,
        "starts_at": _iso(space.scheduled_for), "started_at": _iso(row.started_at),
        "ended_at": _iso(row.ended_at), "room_url": matrix_to(room) if room else None,
        "calendar": calendar, "people": people, "blocked": sorted(space.removed)}
    recordings = [f for f in files if f.kind == "recording"][-MAX_FILES:]
    if space.state is State.ENDED:
        started, ended = as_utc(row.started_at), as_utc(row.ended_at)
        body["summary"] = {
            "duration_seconds": max(0, int((ended - started).total_seconds())) if started and ended else None,
            "peak_listeners": row.peak_listeners, "speakers": speakers_of(row)[:MAX_SPEAKERS],
            "reactions": [[key, n] for key, n in reactions],
            "recorded": bool(recordings) or row.recording}
        body["recordings"] = [{"file": f.name, "seconds": f.seconds, "transcript": f.transcript}
                              for f in recordings]
        body["transcripts"] = [f.name for f in files if f.kind == "transcript"][-MAX_FILES:]
    return body


class PageListings:
    def __init__(self, db: Database, bridge: BridgeControl, profiles: PageProfiles | None, *,
                 page_url: Callable[[str], str], prefix: str, domain: str) -> None:
        self.db = db
        self.bridge = bridge
        self.profiles = profiles
        self.page_url = page_url
        self.prefix = prefix
        self.domain = domain
        #: the bridge answered 404 to a listing: it is older than 1.5 (until it restarts)
        self._unsupported = False
        #: spaces whose pages are to be given, in order (a change goes before a resync's)
        self._wanted: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def changed(self, *space_ids: str, first: bool = True) -> None:
        """These spaces' pages changed: give them to the bridge soon (before the pages a
        resync asked for, unless ``first`` is false)."""
        if self._unsupported:
            return
        for space_id in reversed(space_ids) if first else space_ids:
            self._wanted[space_id] = None
            self._wanted.move_to_end(space_id, last=not first)
        if self._wanted and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._work(), name="page-listings")

    async def resync(self) -> None:
        """The bridge may have none (it restarted, or the bot did): every page it should
        have, in the background."""
        self._unsupported = False
        since = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
        self.changed(*await self.db.spaces_with_pages(since, MAX_PUSHED), first=False)

    async def idle(self) -> None:
        """Wait until every push asked for has been made (tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _work(self) -> None:
        pushed = 0
        while self._wanted and not self._unsupported:
            space_id, _ = self._wanted.popitem(last=False)
            try:
                pushed += await self.push(space_id)
            except asyncio.CancelledError:
                raise
            except BridgeUnavailable as exc:  # the resync when it answers gives them all
                log.warning("space %s: its page could not be given to the bridge: %s", space_id, exc)
                self._wanted.clear()
            except Exception:  # noqa: BLE001 - a task of its own: nothing else would log it
                log.exception("space %s: giving its page to the bridge failed", space_id)
        if pushed > 1:
            log.info("gave the bridge the pages of %d scheduled or ended spaces", pushed)

    async def push(self, space_id: str) -> bool:
        """Give the bridge this space's page as the database has it now; whether one was
        given (a live space's page is its stage)."""
        rec = await self.db.load_space(space_id)
        if rec is None or rec.space.state not in LISTED_STATES:
            return False
        space, row = rec.space, rec.row
        files = await self.db.space_files(space_id) if space.state is State.ENDED else []
        reactions = await self.db.top_reactions(space_id) if space.state is State.ENDED else []
        users = [space.host, *(speakers_of(row)[:MAX_SPEAKERS] if space.state is State.ENDED else [])]
        people = await self.profiles.entries(space_id, list(dict.fromkeys(users))) if self.profiles else {}
        event = calendar_event(space, row, page_url=self.page_url(space_id), prefix=self.prefix,
                               domain=self.domain)
        calendar = ics.space_ics(event, datetime.now(UTC)) if event else None
        body = listing_body(space, row, files=files, reactions=reactions, people=people,
                            calendar=calendar)
        try:
            missing = await self.bridge.put_listing(space_id, body)
        except BridgeUnavailable:
            raise
        except BridgeError as exc:
            if exc.status == 409:  # it went live meanwhile: its stage is its page now
                log.info("space %s: not given its %s page: it is live again", space_id, space.state.value)
                return False
            if exc.status == 404:
                log.warning("the audio bridge does not show scheduled or ended spaces (protocol "
                            "1.5); their pages say only that they are not live until it is upgraded")
                self._unsupported = True
                return False
            log.error("space %s: the bridge refused its %s page: %s", space_id, space.state.value, exc)
            return False
        if missing:
            log.warning("space %s: the bridge no longer has %s; its page goes without them",
                        space_id, ", ".join(missing))
        return True
