"""Start-up repair, the pure part: which jobs the rows want, and what to do about the stored ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.core.job_repair import (
    CREATE,
    REMOVE,
    REPLACE,
    RETIRE,
    ActiveAnnouncement,
    ScheduledSpace,
    claim_key,
    plan_repair,
)

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=30)
EARLY = timedelta(minutes=15)


def never(_job: str, _due: datetime) -> bool:
    return False


def plan(spaces=(), anns=(), jobs=None, ran=never, early=EARLY):
    fixes = plan_repair(spaces, anns, jobs or {}, now=NOW, grace=GRACE, early=early, ran=ran)
    return {(f.action, f.job_id): f.due for f in fixes}


def space(sid: str = "abc123", start: datetime = NOW + timedelta(hours=2)) -> ScheduledSpace:
    return ScheduledSpace(sid, "@host:x", "!room:x", start)


def test_nothing_to_do_when_every_row_has_its_jobs() -> None:
    s = space()
    jobs = {"space-start:abc123": s.start, "space-early:abc123": s.start - EARLY, "announce:7": NOW}
    assert plan([s], [ActiveAnnouncement(7, "@o:x", "!r:x", True)], jobs) == {}


def test_a_scheduled_space_without_jobs_gets_start_and_early_reminder() -> None:
    s = space()
    assert plan([s]) == {(CREATE, "space-start:abc123"): s.start,
                         (CREATE, "space-early:abc123"): s.start - EARLY}


def test_no_early_reminder_when_its_time_has_passed_or_it_is_switched_off() -> None:
    soon = space(start=NOW + timedelta(minutes=5))
    assert plan([soon]) == {(CREATE, "space-start:abc123"): soon.start}
    assert plan([space()], early=timedelta(0)) == {(CREATE, "space-start:abc123"): space().start}


def test_a_start_within_the_grace_is_recreated_to_run_late_but_not_one_that_ran() -> None:
    late = space(start=NOW - timedelta(minutes=10))
    assert plan([late]) == {(CREATE, "space-start:abc123"): late.start}
    ran = {("space-start:abc123", late.start)}
    assert plan([late], ran=lambda j, d: (j, d) in ran) == {}


def test_a_start_past_the_grace_is_not_recreated() -> None:
    assert plan([space(start=NOW - GRACE - timedelta(seconds=1))]) == {}


def test_jobs_at_the_wrong_time_are_replanned() -> None:
    s = space()
    jobs = {"space-start:abc123": s.start - timedelta(hours=1), "space-early:abc123": s.start - EARLY}
    assert plan([s], jobs=jobs) == {(REPLACE, "space-start:abc123"): s.start}
    jobs = {"space-start:abc123": s.start, "space-early:abc123": NOW + timedelta(minutes=1)}
    assert plan([s], jobs=jobs) == {(REPLACE, "space-early:abc123"): s.start - EARLY}


def test_an_early_reminder_no_longer_wanted_goes_unless_it_is_just_due() -> None:
    soon = space(start=NOW + timedelta(minutes=5))
    stale = {"space-start:abc123": soon.start, "space-early:abc123": NOW + timedelta(hours=1)}
    assert plan([soon], jobs=stale) == {(REMOVE, "space-early:abc123"): None}
    due_now = {"space-start:abc123": soon.start, "space-early:abc123": soon.start - EARLY}
    assert plan([soon], jobs=due_now) == {}
    assert plan([space()], jobs={"space-start:abc123": space().start,
                                 "space-early:abc123": space().start - EARLY},
                early=timedelta(0)) == {(REMOVE, "space-early:abc123"): None}


def test_jobs_of_spaces_and_announcements_that_are_over_are_removed_others_kept() -> None:
    jobs = {"space-start:gone01": NOW, "space-early:gone01": NOW, "announce:3": NOW, "other:1": NOW}
    assert plan(jobs=jobs) == {(REMOVE, "space-start:gone01"): None, (REMOVE, "space-early:gone01"): None,
                               (REMOVE, "announce:3"): None}


def test_announcements_recurring_and_one_off() -> None:
    due = NOW + timedelta(hours=3)
    anns = [ActiveAnnouncement(1, "@o:x", "!r:x", True), ActiveAnnouncement(2, "@o:x", "!r:x", False, due),
            ActiveAnnouncement(3, "@o:x", "!r:x", False, None)]
    assert plan(anns=anns) == {(CREATE, "announce:1"): None, (CREATE, "announce:2"): due}


def test_a_one_off_that_already_ran_is_retired_and_one_far_past_is_planned_to_be_reported() -> None:
    past = NOW - timedelta(days=2)
    ann = [ActiveAnnouncement(4, "@o:x", "!r:x", False, past)]
    assert plan(anns=ann, ran=lambda j, d: j == "announce:4") == {(RETIRE, "announce:4"): None}
    assert plan(anns=ann) == {(CREATE, "announce:4"): past}


def test_claim_key_is_what_a_firing_claims() -> None:
    assert claim_key("space-start:abc123", NOW) == "job:space-start:abc123:2026-05-04T12:00:00+00:00"
