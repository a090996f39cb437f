"""Before and after, on the real Synapse with the bot and the real bridge: a scheduled space
has a page with its host's name, start time and a calendar file; it follows a new time and
a cancellation; going live makes the stage its page; after the end its page has the
summary and plays the recording the bridge made, which the database keeps for a bridge
that forgot it."""

from __future__ import annotations

from datetime import UTC, timedelta

import icalendar

from bot.bridge_http import HttpBridge
from bot.core.model import State
from bridge.app import LISTINGS, STAGES
from tests.bridge.conftest import SECRET, make_settings, run_bridge
from tests.integration.helpers import ask, room_with_bot, space_id_in, wait_until


async def test_pages_before_and_after_a_space(chorus_factory, make_user, tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host = await make_user("hana")
        await host.client.set_displayname("Hana Host")
        room = await room_with_bot(host, chorus.user_id)
        listings = running.app[LISTINGS]

        # scheduled: a page with the host's name, the time and the calendar file
        sid = space_id_in(await ask(host, room, "!space schedule tomorrow 18:00 | Seed swap"))
        await wait_until(lambda: listings.get(sid) is not None, what="the scheduled space's page")
        when = chorus.store.load_space(sid).space.scheduled_for.replace(tzinfo=UTC)
        async with running.session.get(f"{running.url}/api/spaces/{sid}") as resp:
            page = await resp.json()
        assert page["state"] == "scheduled" and page["title"] == "Seed swap"
        assert page["starts_at"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert page["people"][host.user_id]["name"] == "Hana Host"
        assert page["room_url"].startswith("https://matrix.to/#/")  # the room it was scheduled in
        async with running.session.get(f"{running.url}/spaces/{sid}/calendar.ics") as resp:
            event = next(iter(icalendar.Calendar.from_ical(await resp.read()).walk("VEVENT")))
        assert str(event["SUMMARY"]) == "Seed swap" and event["DTSTART"].dt == when
        assert f"space join {sid}" in str(event["DESCRIPTION"])
        async with running.session.get(f"{running.url}/api/spaces") as resp:
            assert [u["space_id"] for u in (await resp.json())["upcoming"]] == [sid]

        # a new time reaches the page; a cancelled space's page says so
        await ask(host, room, f"!space reschedule {sid} tomorrow 19:30")
        later = when + timedelta(hours=1, minutes=30)
        await wait_until(lambda: listings.get(sid).starts_at == later, what="the new time on the page")
        other = space_id_in(await ask(host, room, "!space schedule tomorrow 20:00 | Not after all"))
        await wait_until(lambda: listings.get(other) is not None, what="the second space's page")
        await ask(host, room, f"!space cancel {other}")
        await wait_until(lambda: listings.get(other).state == "cancelled", what="the cancelled page")

        # live: the stage is the page; recorded, then ended
        assert "live" in await ask(host, room, f"!space golive {sid}")
        await wait_until(lambda: sid in running.app[STAGES], what="the stage")
        assert listings.get(sid) is None
        assert "Recording is on" in await ask(host, room, f"!space record {sid} on")
        stage = running.stage(sid)
        await wait_until(lambda: stage.recorder is not None and stage.recorder.duration > 1.0,
                         what="a second of recording")
        await ask(host, room, f"!space end {sid}")
        await wait_until(lambda: (x := listings.get(sid)) is not None and x.state == "ended" and x.recordings,
                         timeout=60, what="the ended page with its recording")
        async with running.session.get(f"{running.url}/api/spaces/{sid}") as resp:
            page = await resp.json()
        assert page["summary"]["recorded"] is True and page["summary"]["speakers"] == [host.user_id]
        recording = page["recordings"][0]
        assert recording["seconds"] > 1.0
        async with running.session.get(f"{running.url}/spaces/{sid}/files/{recording['file']}") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
            assert (await resp.read()).startswith(b"OggS")
        files = chorus.store.space_files(sid)
        assert [(f.name, f.kind) for f in files] == [(recording["file"], "recording")]
        assert chorus.store.load_space(sid).space.state is State.ENDED

        # a bridge that forgot its pages (as after a restart) gets them again from the database
        listings.drop(sid)
        listings.drop(other)
        await chorus.bot.spaces.resync("restart")
        await wait_until(lambda: (x := listings.get(sid)) is not None and x.recordings
                         and listings.get(other) is not None, what="the pages given again")
        assert listings.get(other).state == "cancelled"
    finally:
        await running.session.close()
        await running.runner.cleanup()
