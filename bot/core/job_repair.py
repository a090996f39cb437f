"""Which scheduled jobs the database says should exist, and what to do about missing,
mistimed and left-over ones (start-up repair).

A crash between saving a row and planning its job (``!space schedule`` saved the space,
then the process was killed) leaves a scheduled space with no start job: it would never
remind or start. A crash the other way round (a space ended or an announcement cancelled,
the job not yet dropped) leaves a job for something that is over. :func:`plan_repair`
compares the rows with the stored jobs and returns the fixes; ``bot/scheduling.py``
applies them when the bot starts.

Pure: the caller passes the rows, the jobs, the clock and what already ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

SPACE_START = "space-start"
SPACE_EARLY = "space-early"
ANNOUNCE = "announce"
SPACE_KINDS = (SPACE_START, SPACE_EARLY)

#: a job planned this close to the wanted time is the right job
SAME_TIME = timedelta(seconds=1)

CREATE = "create"
REPLACE = "replace"
REMOVE = "remove"
#: a one-off announcement that was posted but not marked done: mark it done
RETIRE = "retire"


def job_id(kind: str, ref: str) -> str:
    return f"{kind}:{ref}"


def claim_key(job: str, due: datetime) -> str:
    """What a firing of ``job`` due at ``due`` claims in the handled-events table."""
    return f"job:{job}:{due.isoformat()}"


@dataclass(frozen=True)
class ScheduledSpace:
    """A space in the "scheduled" state; ``start`` is aware UTC."""

    id: str
    host: str
    room: str | None
    start: datetime


@dataclass(frozen=True)
class ActiveAnnouncement:
    """An active announcement; ``due`` is a one-off's instant (None for recurring ones, or
    when a one-off's time could not be worked out again)."""

    id: int
    owner: str
    room: str
    recurring: bool
    due: datetime | None = None


@dataclass(frozen=True)
class Fix:
    """One change: ``due`` is the time to plan (None: the announcement's recurrence)."""

    action: str
    kind: str
    ref: str
    reason: str
    due: datetime | None = None

    @property
    def job_id(self) -> str:
        return job_id(self.kind, self.ref)


#: (job id, due time) -> did a firing of that job at about that time already run?
RanBefore = Callable[[str, datetime], bool]


def _differs(planned: datetime | None, wanted: datetime) -> bool:
    return planned is None or abs(planned - wanted) > SAME_TIME


def _space_fixes(space: ScheduledSpace, jobs: Mapping[str, datetime | None], now: datetime,
                 grace: timedelta, early: timedelta, ran: RanBefore) -> list[Fix]:
    fixes: list[Fix] = []
    start_id = job_id(SPACE_START, space.id)
    if start_id in jobs:
        if _differs(jobs[start_id], space.start):
            fixes.append(Fix(REPLACE, SPACE_START, space.id, "start job planned at the wrong time", space.start))
    elif space.start >= now - grace and not ran(start_id, space.start):
        fixes.append(Fix(CREATE, SPACE_START, space.id, "start job was missing", space.start))

    early_id = job_id(SPACE_EARLY, space.id)
    early_at = space.start - early
    wanted = early > timedelta(0) and early_at > now
    if early_id in jobs:
        if wanted and _differs(jobs[early_id], early_at):
            fixes.append(Fix(REPLACE, SPACE_EARLY, space.id, "early reminder planned at the wrong time", early_at))
        elif not wanted and (early <= timedelta(0) or _differs(jobs[early_id], early_at)):
            fixes.append(Fix(REMOVE, SPACE_EARLY, space.id, "early reminder no longer wanted"))
    elif wanted:
        fixes.append(Fix(CREATE, SPACE_EARLY, space.id, "early reminder was missing", early_at))
    return fixes


def _announcement_fixes(ann: ActiveAnnouncement, jobs: Mapping[str, datetime | None],
                        ran: RanBefore) -> list[Fix]:
    ref = str(ann.id)
    if job_id(ANNOUNCE, ref) in jobs:
        return []
    if ann.recurring:
        return [Fix(CREATE, ANNOUNCE, ref, "recurring job was missing")]
    if ann.due is None:
        return []
    if ran(job_id(ANNOUNCE, ref), ann.due):
        return [Fix(RETIRE, ANNOUNCE, ref, "already posted but still marked active")]
    # planned even when far in the past: the scheduler then reports it as missed to its owner
    return [Fix(CREATE, ANNOUNCE, ref, "one-off job was missing", ann.due)]


def plan_repair(spaces: Iterable[ScheduledSpace], announcements: Iterable[ActiveAnnouncement],
                jobs: Mapping[str, datetime | None], *, now: datetime, grace: timedelta,
                early: timedelta, ran: RanBefore) -> list[Fix]:
    """The fixes that make ``jobs`` (job id -> next run time) match the rows.

    - A scheduled space has a start job at its start time when that is in the future or
      within ``grace`` (then it runs late), unless a firing at that time already ran; and
      an early reminder ``early`` before the start while that is still ahead.
    - An active announcement has its job: a recurring one from its recurrence, a one-off
      at ``due``; a one-off that already ran is retired instead.
    - Jobs of these kinds for anything else (ended, cancelled, inactive, deleted) go.
    Jobs of other kinds are left alone.
    """
    spaces = list(spaces)
    announcements = list(announcements)
    fixes: list[Fix] = []
    for space in spaces:
        fixes += _space_fixes(space, jobs, now, grace, early, ran)
    for ann in announcements:
        fixes += _announcement_fixes(ann, jobs, ran)
    scheduled = {s.id for s in spaces}
    active = {str(a.id) for a in announcements}
    for jid in sorted(jobs):
        kind, _, ref = jid.partition(":")
        if kind in SPACE_KINDS and ref not in scheduled:
            fixes.append(Fix(REMOVE, kind, ref, "the space is not scheduled any more"))
        elif kind == ANNOUNCE and ref not in active:
            fixes.append(Fix(REMOVE, kind, ref, "the announcement is not active any more"))
    return fixes
