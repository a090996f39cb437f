"""What scheduled jobs do: remind hosts and listeners of scheduled spaces, start spaces
that asked to start by themselves, post announcements. And planning those jobs, and
repairing them at start-up (:meth:`ScheduleService.repair`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from bot.core import rules
from bot.core.job_repair import (
    ANNOUNCE,
    CREATE,
    REMOVE,
    RETIRE,
    SPACE_EARLY,
    SPACE_KINDS,
    SPACE_START,
    ActiveAnnouncement,
    Fix,
    ScheduledSpace,
    claim_key,
    plan_repair,
)
from bot.core.model import State
from bot.core.when import (
    Recurrence,
    WhenError,
    describe_instant,
    parse_recurrence,
    parse_timezone,
    parse_when,
)
from bot.db import models as m
from bot.db.database import Database
from bot.db.engine import session_scope
from bot.db.store import as_utc
from bot.matrix.client import MatrixError, MatrixIO
from bot.matrix.messages import markdown_to_html
from bot.scheduler import Firing, Scheduler
from bot.spaces import SpaceService

log = logging.getLogger(__name__)

__all__ = ["ANNOUNCE", "SPACE_EARLY", "SPACE_START", "ScheduleService", "ScheduleSettings"]

#: a claimed firing this close to a wanted due time counts as that firing (a one-off
#: announcement's time is worked out again from when it was made, to the millisecond)
RAN_TOLERANCE = timedelta(seconds=5)


@dataclass(frozen=True)
class ScheduleSettings:
    early_reminder_minutes: int = 15
    max_days_ahead: int = 14
    default_timezone: str = "UTC"


class ScheduleService:
    def __init__(self, scheduler: Scheduler, db: Database, matrix: MatrixIO, spaces: SpaceService,
                 settings: ScheduleSettings, prefix: str = "!") -> None:
        self.scheduler = scheduler
        #: the store off the event loop, for the jobs and commands (bot/db/database.py)
        self.db = db
        #: the store itself, for the start-up repair only (once, in a database thread, while
        #: the scheduler is paused)
        self.store = db.store
        self.matrix = matrix
        self.spaces = spaces
        self.settings = settings
        self.prefix = prefix
        scheduler.on(SPACE_START, self._space_start)
        scheduler.on(SPACE_EARLY, self._space_early)
        scheduler.on(ANNOUNCE, self._announce)
        scheduler.on_missed(self._missed)
        spaces.on_schedule = self.plan_space

    async def user_tz(self, user_id: str):
        name = (await self.db.user(user_id)).timezone or self.settings.default_timezone
        try:
            return parse_timezone(name)
        except WhenError:
            return ZoneInfo("UTC")

    # ------------------------------------------------------------------ spaces

    async def plan_space(self, space_id: str, on: bool) -> None:
        """Plan (or drop) a scheduled space's jobs; the job store is written off the loop."""
        when = None
        if on:
            rec = await self.db.load_space(space_id)
            when = as_utc(rec.space.scheduled_for)
        await self.db.run(self._plan_space, space_id, when)
        if when is not None:
            log.info("space %s: reminders planned for %s", space_id, when.isoformat())

    def _plan_space(self, space_id: str, when: datetime | None) -> None:
        if when is None:
            self.scheduler.drop(SPACE_START, space_id)
            self.scheduler.drop(SPACE_EARLY, space_id)
            return
        self.scheduler.plan(SPACE_START, space_id, when)
        early = when - timedelta(minutes=self.settings.early_reminder_minutes)
        if self.settings.early_reminder_minutes and early > datetime.now(UTC):
            self.scheduler.plan(SPACE_EARLY, space_id, early)
        else:
            self.scheduler.drop(SPACE_EARLY, space_id)

    async def _claim(self, f: Firing) -> bool:
        """True the first time this (job, due time) fires; never twice."""
        if await self.db.claim_event(claim_key(f.job_id, f.due)):
            return True
        log.warning("job %s due %s already ran; not running it again", f.job_id, f.due.isoformat())
        return False

    def _late_note(self, f: Firing) -> str:
        if not f.is_late:
            return ""
        minutes = int(f.late.total_seconds() // 60)
        return f" (This comes {minutes} min late: Chorus was not running at the planned time.)"

    async def _room_label(self, room_id: str) -> str:
        try:
            return await self.matrix.room_label(room_id)
        except Exception:  # noqa: BLE001 - a message about a failure must not fail for its room's name
            return room_id

    async def _safe_dm(self, user: str, text: str, space_id: str | None = None) -> None:
        try:
            await self.matrix.dm(user, text)
        except MatrixError as exc:
            log.error("space %s: could not send a reminder to %s: %s", space_id, user, exc)

    async def _space_start(self, f: Firing) -> None:
        rec = await self.db.load_space(f.ref)
        if rec is None or rec.space.state is not State.SCHEDULED or not await self._claim(f):
            return
        space, row = rec.space, rec.row
        late = self._late_note(f)
        if row.autostart:
            try:
                await self.spaces.act(space.id, space.host, rules.GoLive())
                await self._safe_dm(space.host, f"Your scheduled space “{space.title}” ({space.id}) has "
                                    f"started by itself.{late}", space.id)
            except rules.Refused as exc:
                await self._safe_dm(space.host, f"Your scheduled space “{space.title}” ({space.id}) could "
                                    f"not start by itself: {exc}{late}", space.id)
        else:
            await self._safe_dm(space.host, f"It's time for your space “{space.title}” ({space.id}). "
                                f"Start it with: {self.prefix}space golive {space.id}{late}", space.id)
        live = await self.db.space_state(space.id) == State.LIVE.value
        how = (f"Join with {self.prefix}space join {space.id}" if live
               else f"The host will open it shortly; then join with {self.prefix}space join {space.id}")
        for user in await self.db.reminder_users(space.id):
            if user != space.host:
                await self._safe_dm(user, f"🔔 “{space.title}” by {space.host} is starting now. {how}.{late}",
                                    space.id)
        log.info("space %s: start-time reminders sent%s", space.id, " (late)" if late else "")

    async def _space_early(self, f: Firing) -> None:
        rec = await self.db.load_space(f.ref)
        if rec is None or rec.space.state is not State.SCHEDULED or not await self._claim(f):
            return
        space = rec.space
        minutes = self.settings.early_reminder_minutes
        unit = "minute" if minutes == 1 else "minutes"
        for user in [space.host, *await self.db.reminder_users(space.id)]:
            when = describe_instant(as_utc(space.scheduled_for), await self.user_tz(user))
            await self._safe_dm(user, f"🔔 “{space.title}” by {space.host} starts in about {minutes} {unit} "
                                f"({when}).", space.id)

    async def _missed(self, f: Firing) -> None:
        if f.kind == SPACE_START:
            rec = await self.db.load_space(f.ref)
            if rec and rec.space.state is State.SCHEDULED and await self._claim(f):
                await self._safe_dm(rec.space.host, (
                    f"Your scheduled space “{rec.space.title}” ({rec.space.id}) was due at "
                    f"{describe_instant(f.due, await self.user_tz(rec.space.host))} while Chorus was not running, "
                    "too long ago to start it now. Start it with "
                    f"{self.prefix}space golive {rec.space.id}, or cancel it."), rec.space.id)
        elif f.kind == ANNOUNCE:
            ann = await self.db.announcement(int(f.ref))
            if ann and ann.active and await self._claim(f):
                room = await self._room_label(ann.room_id)
                await self._safe_dm(ann.owner_id, (
                    f"Announcement #{ann.id} for {room} was due at {f.due:%Y-%m-%d %H:%M} UTC while "
                    "Chorus was not running, too long ago to post it now; it was skipped."
                    + (" It stays scheduled for its next time." if ann.recurring else "")))
                if not ann.recurring:
                    await self.db.update_announcement(ann.id, active=False)

    # ------------------------------------------------------------------ announcements

    def recurrence_of(self, ann) -> Recurrence:
        return parse_recurrence(ann.schedule, parse_timezone(ann.timezone))

    async def plan_announcement(self, ann, when: datetime | None = None) -> datetime | None:
        return await self.db.run(self._plan_announcement, ann, when)

    def _plan_announcement(self, ann, when: datetime | None = None) -> datetime | None:
        trigger = when if when is not None else self.recurrence_of(ann).to_trigger()
        return self.scheduler.plan(ANNOUNCE, str(ann.id), trigger)

    async def cancel_announcement(self, ann_id: int) -> None:
        await self.db.run(self.scheduler.drop, ANNOUNCE, str(ann_id))
        await self.db.update_announcement(ann_id, active=False)

    async def next_announcements(self, ann_ids: list[int]) -> dict[int, datetime | None]:
        return await self.db.run(lambda: {i: self.scheduler.next_run(ANNOUNCE, str(i)) for i in ann_ids})

    async def _announce(self, f: Firing) -> None:
        ann = await self.db.announcement(int(f.ref))
        if ann is None or not ann.active or not await self._claim(f):
            return
        text = ann.text
        late = self._late_note(f)
        try:
            await self.matrix.send(ann.room_id, {
                "msgtype": "m.notice", "body": text + late,
                "format": "org.matrix.custom.html", "formatted_body": markdown_to_html(text + late)})
        except MatrixError as exc:
            log.error("announcement %s: could not post in room %s (owner %s): %s", ann.id, ann.room_id,
                      ann.owner_id, exc)
            await self._safe_dm(ann.owner_id, f"Announcement #{ann.id} could not be posted in "
                                              f"{await self._room_label(ann.room_id)}: {exc}")
            return
        await self.db.update_announcement(ann.id, fired=ann.fired + 1, active=ann.recurring)
        log.info("announcement %s posted in %s%s", ann.id, ann.room_id, " (late)" if late else "")

    # ------------------------------------------------------------------ start-up repair

    def repair(self, now: datetime | None = None) -> list[Fix]:
        """Give every scheduled space and active announcement its job(s), drop jobs for
        ended spaces and inactive announcements; returns what was fixed. Call it once the
        scheduler has started, off the event loop (the bot runs it in a database thread). A
        fix that fails is logged and the others still happen."""
        now = now or datetime.now(UTC)
        try:
            spaces = {r.id: r for r in self.store.spaces_in_state(State.SCHEDULED) if r.scheduled_for is not None}
            anns = {str(a.id): a for a in self.store.announcements()}
            wanted_spaces = [ScheduledSpace(r.id, r.host_id, r.origin_room_id or r.room_id,
                                            as_utc(r.scheduled_for)) for r in spaces.values()]
            wanted_anns = [ActiveAnnouncement(a.id, a.owner_id, a.room_id, a.recurring,
                                              None if a.recurring else self._one_off_due(a))
                           for a in anns.values()]
            jobs = {jid: t for jid, t in self.scheduler.jobs().items()
                    if jid.partition(":")[0] in (*SPACE_KINDS, ANNOUNCE)}
            minutes = self.settings.early_reminder_minutes
            fixes = plan_repair(wanted_spaces, wanted_anns, jobs, now=now, grace=self.scheduler.misfire_grace,
                                early=timedelta(minutes=minutes), ran=self._ran_before)
        except Exception:  # noqa: BLE001 - the bot runs on; the jobs that are there still fire
            log.exception("start-up repair of scheduled jobs could not run; missing jobs stay missing until "
                          "the next start")
            return []
        done: list[Fix] = []
        for fix in fixes:
            try:
                self._apply(fix, anns)
                done.append(fix)
                log.warning("start-up repair: %s: %s; %s", self._subject(fix, spaces, anns), fix.reason,
                            self._outcome(fix))
            except Exception:  # noqa: BLE001 - one bad row must not stop the others or the bot
                log.exception("start-up repair: could not %s job %s (%s)", fix.action, fix.job_id, fix.reason)
        if not fixes:
            log.info("start-up repair: all %d scheduled spaces and %d announcements have their jobs",
                     len(spaces), len(anns))
        return done

    def _one_off_due(self, ann) -> datetime | None:
        """A one-off announcement's instant, read again from its text as of when it was made."""
        try:
            return parse_when(ann.schedule, as_utc(ann.created_at), parse_timezone(ann.timezone)).instant
        except WhenError as exc:
            log.error("start-up repair: announcement %s (owner %s, room %s): cannot work out its time "
                      "again from %r: %s", ann.id, ann.owner_id, ann.room_id, ann.schedule, exc)
            return None

    def _ran_before(self, job: str, due: datetime) -> bool:
        """Whether a firing of ``job`` due at about ``due`` was claimed (it ran, or was reported missed)."""
        prefix = claim_key(job, due)[: -len(due.isoformat())]
        with session_scope(self.store.engine) as s:
            keys = s.exec(select(m.HandledEvent.event_id)
                          .where(col(m.HandledEvent.event_id).startswith(prefix, autoescape=True))).all()
        for key in keys:
            try:
                claimed = datetime.fromisoformat(key[len(prefix):])
            except ValueError:
                continue
            if abs(as_utc(claimed) - due) <= RAN_TOLERANCE:
                return True
        return False

    def _apply(self, fix: Fix, anns: dict) -> None:
        if fix.action == REMOVE:
            self.scheduler.drop(fix.kind, fix.ref)
        elif fix.action == RETIRE:
            self.store.update_announcement(int(fix.ref), active=False)
        elif fix.kind == ANNOUNCE and fix.due is None:
            self._plan_announcement(anns[fix.ref])
        else:
            self.scheduler.plan(fix.kind, fix.ref, fix.due)

    def _outcome(self, fix: Fix) -> str:
        if fix.action == REMOVE:
            return "job removed"
        if fix.action == RETIRE:
            return "marked done"
        nxt = self.scheduler.next_run(fix.kind, fix.ref)
        verb = "recreated" if fix.action == CREATE else "re-planned"
        return f"job {verb} for {nxt.isoformat() if nxt else 'no further run'}"

    def _subject(self, fix: Fix, spaces: dict, anns: dict) -> str:
        """'space X (host, room)' or 'announcement #N (owner, room)' for the log line."""
        if fix.kind in SPACE_KINDS:
            row = spaces.get(fix.ref)
            if row is None:
                rec = self.store.load_space(fix.ref)
                row = rec.row if rec else None
            if row is None:
                return f"{fix.kind} job for space {fix.ref} (no such space)"
            rooms = f"room {row.origin_room_id or row.room_id}"
            if row.room_id and row.origin_room_id and row.room_id != row.origin_room_id:
                rooms += f", space room {row.room_id}"
            return f"{fix.kind} job for space {fix.ref} “{row.title}” ({row.state}; host {row.host_id}, {rooms})"
        ann = anns.get(fix.ref)
        if ann is None and fix.ref.isdigit() and len(fix.ref) < 19:
            ann = self.store.announcement(int(fix.ref))
        if ann is None:
            return f"{fix.kind} job for announcement #{fix.ref} (no such announcement)"
        state = "active" if ann.active else "inactive"
        return f"{fix.kind} job for announcement #{ann.id} ({state}; owner {ann.owner_id}, room {ann.room_id})"
