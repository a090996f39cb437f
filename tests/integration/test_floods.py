"""Floods against the real bot on a real Synapse (issue 15, item 1): one person's flood of
commands gets a burst of answers and one notice, is dropped unread after that, and
never holds up anyone else; the homeserver's own 429s are waited out, nothing lost."""

from __future__ import annotations

import re
import time

import aiohttp
import pytest
from sqlmodel import Session, select

from bot.db.models import HandledEvent
from tests.integration.helpers import ask, body, room_with_bot

pytestmark = pytest.mark.synapse


def _claimed(chorus, event_ids: list[str]) -> set[str]:
    with Session(chorus.store.engine) as session:
        rows = session.exec(select(HandledEvent.event_id).where(HandledEvent.event_id.in_(event_ids)))
        return set(rows)


async def test_a_flood_gets_its_burst_one_notice_then_nothing(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(options={"command_burst": 3, "commands_per_minute": 1})
    eve, alice = await make_user("eve"), await make_user("alice")
    room = await room_with_bot(eve, chorus.user_id, alice)
    sent = [await eve.send_text(room, "!ping") for _ in range(10)]
    replies = [body(await eve.wait_for_reply(room, event_id)) for event_id in sent[:4]]
    assert replies[:3] == ["pong"] * 3
    assert replies[3].startswith("⏳ Slow down: you sent more than 3 commands")
    silenced = int(re.search(r"for the next (\d+) seconds", replies[3]).group(1))
    assert 150 <= silenced <= 180, replies[3]  # the whole burst of 3, at 1 a minute
    # someone else, right after the flood, is answered as usual
    assert await ask(alice, room, "!ping") == "pong"
    # the six past the notice were dropped before they were claimed: never answered, no database write
    assert _claimed(chorus, sent) == set(sent[:3])
    assert chorus.bot.limiter.silenced_for(eve.user_id, time.time()) > 0
    # and eve stays silenced: her next command is dropped too, while alice's is answered
    late = await eve.send_text(room, "!ping")
    assert await ask(alice, room, "!ping") == "pong"
    assert late not in _claimed(chorus, [late])


async def test_the_homeservers_429s_are_waited_out_and_nothing_is_lost(chorus_factory, make_user) -> None:
    """The bot's account limited by Synapse to one message a second (the admin API's
    per-user override): three people ping at once, each is answered, after 429s."""
    chorus = await chorus_factory()
    admin = await make_user("admin", admin=True)
    url = f"{admin.homeserver_url}/_synapse/admin/v1/users/{chorus.user_id}/override_ratelimit"
    async with aiohttp.ClientSession() as http, http.post(
            url, json={"messages_per_second": 1, "burst_count": 1},
            headers={"Authorization": f"Bearer {admin.client.access_token}"}) as resp:
        assert resp.status == 200, await resp.text()
    people = [await make_user(name) for name in ("ann", "ben", "cat")]
    room = await room_with_bot(people[0], chorus.user_id, *people[1:])
    for _ in range(2):
        sent = [(person, await person.send_text(room, "!ping")) for person in people]
        for person, event_id in sent:
            assert body(await person.wait_for_reply(room, event_id, timeout=60)) == "pong"
    assert chorus.bot.client.gate.limited_count >= 1
