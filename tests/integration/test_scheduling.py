"""Scheduled spaces, reminders and announcements on a real homeserver, with jobs that
survive a restart and never fire twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.interval import IntervalTrigger

from bot.core import rules
from bot.core.model import State
from tests.integration.helpers import ask, body, room_with_bot, space_id_in, wait_for_dm


async def _wait_until(instant: datetime) -> None:
    """Let the wall clock pass ``instant`` (the scheduled time itself is what is tested)."""
    while datetime.now(UTC) < instant:
        await asyncio.sleep(0.05)


async def test_schedule_replies_with_the_time_and_refuses_bad_times(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    assert "Europe/Berlin" in await ask(host, room, "!timezone Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.now(berlin).date() + timedelta(days=3)  # a date, written out, always ahead
    local = datetime(day.year, day.month, day.day, 18, 0, tzinfo=berlin)
    when = local.astimezone(UTC)
    reply = await ask(host, room, f"!space schedule {day.day} {day:%b %Y} 18:00 | Advent jam")
    sid = space_id_in(reply)
    assert f"18:00 {local.tzname()} (Europe/Berlin) = {when:%H:%M} UTC" in reply
    rec = chorus.store.load_space(sid)
    assert rec.space.state is State.SCHEDULED
    assert rec.space.scheduled_for.replace(tzinfo=UTC) == when
    assert chorus.bot.scheduler.next_run("space-start", sid) == when

    past = await ask(host, room, f"!space schedule {day - timedelta(days=40):%Y-%m-%d} 10:00 | Too late")
    assert "in the past" in past
    far = await ask(host, room, f"!space schedule {day + timedelta(days=60):%Y-%m-%d} 10:00 | Too far")
    assert "at most 14 days ahead" in far
    bad = await ask(host, room, "!space schedule next blursday | Nonsense")
    assert "tomorrow 18:00" in bad or "e.g." in bad
    missing = await ask(host, room, "!space schedule tomorrow 18:00 Friday jam")
    assert "Separate the time and the title with |" in missing
    assert len(chorus.store.spaces_in_state(State.SCHEDULED)) == 1

    assert "cancelled" in (await ask(host, room, f"!space cancel {sid}")).lower()
    assert chorus.bot.scheduler.next_run("space-start", sid) is None


async def test_start_time_reminders_reach_host_and_subscriber(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0}, scheduling={"early_reminder_minutes": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Soon"))
    card = await fan.wait_for_message(room, lambda b: "Scheduled: Soon" in b, sender=chorus.user_id)
    await fan.react(room, card.event_id, "🔔")
    await wait_for_dm(fan, chorus.user_id, lambda b: "remind you" in b)
    due = datetime.now(UTC) + timedelta(seconds=3)
    await chorus.bot.spaces.act(sid, host.user_id, rules.Reschedule(due))
    host_dm = await wait_for_dm(host, chorus.user_id, lambda b: f"space golive {sid}" in b)
    assert "It's time" in body(host_dm)
    fan_dm = await wait_for_dm(fan, chorus.user_id, lambda b: "is starting now" in b)
    assert f"!space join {sid}" in body(fan_dm)
    assert "late" not in body(fan_dm)
    assert "is live" in await ask(host, room, f"!space golive {sid}")
    assert chorus.store.load_space(sid).space.state is State.LIVE


async def test_reminder_due_while_the_bot_was_down_arrives_once(db_url, chorus_factory, make_user,
                                                                 monkeypatch) -> None:
    """On SQLite and on PostgreSQL: the job store is the bot's own database."""
    import bot.scheduler

    monkeypatch.setattr(bot.scheduler, "LATE_AFTER", timedelta(milliseconds=500))
    chorus = await chorus_factory(hosting={"min_followers": 0}, scheduling={"early_reminder_minutes": 0},
                                  database={"url": db_url})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | While away"))
    due = datetime.now(UTC) + timedelta(seconds=2)
    await chorus.bot.spaces.act(sid, host.user_id, rules.Reschedule(due))
    await chorus.stop()
    await _wait_until(due + timedelta(seconds=1))
    await chorus.start()
    dm = await wait_for_dm(host, chorus.user_id, lambda b: f"space golive {sid}" in b)
    assert "It's time" in body(dm)
    assert "late: Chorus was not running at the planned time" in body(dm)
    await chorus.restart()
    await host.expect_no_event(lambda r, e: e.sender == chorus.user_id and "golive" in
                               e.source.get("content", {}).get("body", ""), within=3)


async def test_reminder_past_the_grace_is_dropped_with_a_note(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0},
                                  scheduling={"early_reminder_minutes": 0, "misfire_grace_minutes": 0})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Missed"))
    due = datetime.now(UTC) + timedelta(seconds=1)
    await chorus.bot.spaces.act(sid, host.user_id, rules.Reschedule(due))
    await chorus.stop()
    await _wait_until(due + timedelta(seconds=3))
    await chorus.start()
    dm = await wait_for_dm(host, chorus.user_id, lambda b: "while Chorus was not running" in b)
    assert f"space golive {sid}" in body(dm)
    assert chorus.store.load_space(sid).space.state is State.SCHEDULED


async def test_autostart_goes_live_and_notifies_opted_in_followers(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0}, scheduling={"early_reminder_minutes": 0})
    host, fan, quiet = await make_user("host"), await make_user("fan"), await make_user("quiet")
    room = await room_with_bot(host, chorus.user_id, fan, quiet)
    await ask(fan, room, f"!follow {host.user_id}")
    await ask(quiet, room, f"!follow {host.user_id}")
    assert "message you" in await ask(fan, room, "!notify on")
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Auto autostart=yes"))
    await chorus.bot.spaces.act(sid, host.user_id, rules.Reschedule(datetime.now(UTC) + timedelta(seconds=2)))
    await wait_for_dm(host, chorus.user_id, lambda b: "started by itself" in b)
    assert chorus.store.load_space(sid).space.state is State.LIVE
    dm = await wait_for_dm(fan, chorus.user_id, lambda b: "is live now" in b)
    assert f"!space join {sid}" in body(dm)
    await quiet.expect_no_event(lambda r, e: "is live now" in e.source.get("content", {}).get("body", ""),
                                within=2)


async def test_recurring_announcement_fires_twice_then_stops_after_cancel(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(moderation={"moderators": []})
    mod = await make_user("roommod")
    room = await room_with_bot(mod, chorus.user_id)  # the room's creator has power level 100
    other = await make_user("member")
    await other.join(room)
    refused = await ask(other, room, f"!announce {room} every day 09:00 | hello")
    assert "power level 50" in refused
    reply = await ask(mod, room, f"!announce {room} every monday 18:00 Europe/Berlin | **Weekly** sync")
    assert "every Monday at 18:00" in reply
    number = int(reply.split("#", 1)[1].split(" ", 1)[0])
    ann = chorus.store.announcement(number)
    assert ann.recurring and ann.active
    # the same job, re-planned every 2 seconds so the test need not wait a week
    chorus.bot.scheduler.plan("announce", str(number), IntervalTrigger(seconds=2, timezone=UTC))
    first = await mod.wait_for_message(room, "**Weekly** sync", sender=chorus.user_id, timeout=20)
    assert "<strong>Weekly</strong>" in first.source["content"]["formatted_body"]
    await mod.wait_for_message(room, "**Weekly** sync", sender=chorus.user_id, timeout=20)
    assert "cancelled" in await ask(mod, room, f"!announce cancel {number}")
    assert chorus.bot.scheduler.next_run("announce", str(number)) is None
    await mod.expect_no_event(lambda r, e: e.source.get("content", {}).get("body") == "**Weekly** sync",
                              within=4.5)
    assert chorus.store.announcement(number).fired >= 2


async def test_early_reminder_goes_out_before_the_start(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0}, scheduling={"early_reminder_minutes": 1})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Early bird"))
    assert "remind you" in await ask(fan, room, f"!space remind {sid}")
    # starting 62 s from now puts the early reminder 2 s from now
    await chorus.bot.spaces.act(sid, host.user_id, rules.Reschedule(datetime.now(UTC) + timedelta(seconds=62)))
    for user in (host, fan):
        dm = await wait_for_dm(user, chorus.user_id, lambda b: "starts in about 1 minute " in b)
        assert "Early bird" in body(dm)
    assert "Cancelled" in await ask(host, room, f"!space cancel {sid}")
    assert chorus.bot.scheduler.job_ids("space-") == []


async def test_announcements_need_the_bot_in_the_room(chorus_factory, make_user) -> None:
    chorus = await chorus_factory()
    mod = await make_user("mod")
    room = await room_with_bot(mod, chorus.user_id)
    elsewhere = await mod.create_room(name="no bot here")
    assert "I'm not in" in await ask(mod, room, f"!announce {elsewhere} at tomorrow 10:00 | hi")
    assert "Usage: !announce" in await ask(mod, room, f"!announce {room} whenever | hi")
    assert "No announcements" in await ask(mod, room, "!announce list")
    assert "no scheduled announcement #99" in await ask(mod, room, "!announce cancel 99")


async def test_space_calendar_replies_with_an_ics_file_of_the_space(chorus_factory, make_user) -> None:
    import icalendar

    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 UTC | Book club, part 2"))
    starts = chorus.store.load_space(sid).space.scheduled_for

    sent = await fan.send_text(room, f"!space calendar {sid}")
    reply = await fan.wait_for_event(lambda r, e: r == room and e.source.get("content", {}).get(
        "m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == sent, timeout=30)
    content = reply.source["content"]
    assert content["msgtype"] == "m.file" and content["body"] == f"chorus-{sid}.ics"
    assert content["info"]["mimetype"] == "text/calendar"
    got = await fan.client.download(mxc=content["url"])
    assert not hasattr(got, "status_code"), got
    event = next(iter(icalendar.Calendar.from_ical(got.body).walk("VEVENT")))
    assert event.decoded("DTSTART") == (starts if starts.tzinfo else starts.replace(tzinfo=UTC))
    assert str(event["SUMMARY"]) == "Book club, part 2"
    assert str(event["URL"]) == f"https://matrix.to/#/{room}"  # where it was scheduled: no room of its own yet
    assert f"!space join {sid}" in str(event["DESCRIPTION"]) and host.user_id in str(event["DESCRIPTION"])

    assert "Cancelled" in await ask(host, room, f"!space cancel {sid}")
    assert "no time to add to a calendar" in await ask(fan, room, f"!space calendar {sid}")
    assert "no space with id “zzzzzz”" in await ask(fan, room, "!space calendar zzzzzz")
