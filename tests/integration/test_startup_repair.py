"""Start-up repair of scheduled jobs (issue 13, finding 7): a bot killed between saving a
scheduled space or an announcement and planning its job finds the job missing when it
starts again, and recreates it; a job left over for a space or announcement that is over
goes. Real bot, real Synapse, on SQLite and on PostgreSQL (the job store is the bot's own
database)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from nio import ErrorResponse
from sqlalchemy import text

from bot.core.model import State
from tests.integration.helpers import ask, body, room_with_bot, space_id_in, wait_for_dm
from tests.support.matrix_user import unique_localpart


def _announcement_number(reply: str) -> int:
    assert reply.startswith("Announcement #"), reply
    return int(reply.split("#", 1)[1].split(" ", 1)[0])


def _forget_all_jobs(chorus) -> None:
    """What a kill -9 between saving the rows and planning their jobs leaves behind."""
    with chorus.engine.begin() as conn:
        conn.execute(text("DELETE FROM apscheduler_jobs"))


async def _alias_of(user, room: str) -> str:
    """An alias for ``room``, to name it in !announce."""
    alias = f"#{unique_localpart('ann')}:{user.user_id.split(':', 1)[1]}"
    resp = await user.client.room_put_alias(alias, room)
    assert not isinstance(resp, ErrorResponse), resp
    return alias


def _repair_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("start-up repair:")]


async def test_missing_jobs_are_recreated_at_start_and_the_reminders_still_arrive(
        db_url, chorus_factory, make_user, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot.scheduling")
    chorus = await chorus_factory(hosting={"min_followers": 0}, database={"url": db_url})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    alias = await _alias_of(host, room)
    sched = chorus.bot.scheduler
    later = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Tomorrow's jam"))
    soon = space_id_in(await ask(host, room, "!space schedule tomorrow 19:00 | Crash window"))
    once = _announcement_number(await ask(host, room, f"!announce {alias} at tomorrow 10:00 | See you"))
    daily = _announcement_number(await ask(host, room, f"!announce {alias} every day 09:00 | Daily hello"))
    overdue = _announcement_number(await ask(host, room, f"!announce {alias} at in 2 hours | Back after the crash"))
    planned = {jid: sched.next_run(*jid.split(":", 1)) for jid in sched.job_ids()}
    assert set(planned) >= {f"space-start:{later}", f"space-early:{later}", f"space-start:{soon}",
                            f"announce:{once}", f"announce:{daily}", f"announce:{overdue}"}

    await chorus.stop()
    _forget_all_jobs(chorus)
    # the bot stayed down past the start of one space and the time of one announcement
    now = datetime.now(UTC)
    chorus.store.update_space_row(soon, scheduled_for=now - timedelta(minutes=1))
    made = chorus.store.announcement(overdue).created_at
    chorus.store.update_announcement(overdue, created_at=made - timedelta(hours=2, minutes=1))
    caplog.clear()
    await chorus.start()
    sched = chorus.bot.scheduler

    # the future ones are back at exactly the times first planned
    for jid in (f"space-start:{later}", f"space-early:{later}", f"announce:{once}", f"announce:{daily}"):
        assert sched.next_run(*jid.split(":", 1)) == planned[jid], jid
    # the late ones ran as soon as the bot was back, saying they are late
    dm = await wait_for_dm(host, chorus.user_id, lambda b: f"space golive {soon}" in b)
    assert "It's time" in body(dm) and "Crash window" in body(dm)
    assert "Chorus was not running at the planned time" in body(dm)
    post = await host.wait_for_message(room, lambda b: b.startswith("Back after the crash"), sender=chorus.user_id)
    assert "late" in body(post)
    lines = _repair_lines(caplog)
    start_line = next(x for x in lines if f"space-start job for space {later}" in x)
    assert host.user_id in start_line and room in start_line and "recreated" in start_line
    assert any(f"announcement #{daily}" in x and host.user_id in x and room in x for x in lines)
    assert chorus.store.announcement(overdue).active is False

    # a second start finds nothing missing: what already ran is not planned again
    caplog.clear()
    await chorus.restart()
    assert _repair_lines(caplog) == ["start-up repair: all 2 scheduled spaces and 2 announcements have their jobs"]
    await host.expect_no_event(lambda r, e: e.sender == chorus.user_id and f"space golive {soon}" in
                               e.source.get("content", {}).get("body", ""), within=2)


async def test_jobs_of_spaces_and_announcements_that_are_over_are_removed_at_start(
        db_url, chorus_factory, make_user, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot.scheduling")
    chorus = await chorus_factory(hosting={"min_followers": 0}, database={"url": db_url})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    alias = await _alias_of(host, room)
    ended = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Ends early"))
    kept = space_id_in(await ask(host, room, "!space schedule tomorrow 20:00 | Still on"))
    dropped = _announcement_number(await ask(host, room, f"!announce {alias} at tomorrow 10:00 | Never mind"))
    assert chorus.bot.scheduler.next_run("space-start", ended) is not None

    await chorus.stop()
    # the rows were saved as over, the process died before the jobs were dropped
    chorus.store.update_space_row(ended, state=State.CANCELLED.value)
    chorus.store.update_announcement(dropped, active=False)
    caplog.clear()
    await chorus.start()

    sched = chorus.bot.scheduler
    assert sched.job_ids(f"space-start:{ended}") == [] and sched.job_ids(f"space-early:{ended}") == []
    assert sched.next_run("announce", str(dropped)) is None
    assert sched.next_run("space-start", kept) is not None and sched.next_run("space-early", kept) is not None
    lines = _repair_lines(caplog)
    gone = next(x for x in lines if f"space-start job for space {ended}" in x)
    assert "cancelled" in gone and host.user_id in gone and "job removed" in gone
    assert any(f"announcement #{dropped} (inactive" in x and "job removed" in x for x in lines)
