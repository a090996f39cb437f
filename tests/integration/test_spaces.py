"""Spaces from chat, end to end on a real Synapse: hosting gate, roles, rooms, knocks, end."""

from __future__ import annotations

from nio import RoomGetStateEventResponse

from bot.bridge_api import BridgeError, InMemoryBridge
from bot.core.model import Role, State
from tests.integration.helpers import ask, body, room_with_bot, space_id_in, state_event, wait_for_dm, wait_until


async def _follow(users, target: str, room: str) -> None:
    for u in users:
        assert "You now follow" in await ask(u, room, f"!follow {target}")


async def test_hosting_gate_then_a_live_space_with_its_own_room(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 2})
    host, f1, f2 = await make_user("host"), await make_user("fan"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, f1, f2)
    await _follow([f1], host.user_id, room)

    refused = await ask(host, room, "!space start Friday jam")
    assert "needs at least 2 followers; you have 1" in refused
    assert "!follow" in refused
    assert chorus.store.live_space_of_host(host.user_id) is None

    await _follow([f2], host.user_id, room)
    started = await ask(host, room, "!space start Friday jam visibility=everyone")
    sid = space_id_in(started)
    rec = chorus.store.load_space(sid)
    assert rec.space.state is State.LIVE and rec.space.people == {host.user_id: Role.HOST}

    # the host is invited to the space's room; its state mirrors the space
    space_room = await host.accept_invite(inviter=chorus.user_id)
    assert space_room == rec.row.room_id
    rules = await state_event(host, space_room, "m.room.join_rules")
    assert rules.content["join_rule"] == "public"
    name = await state_event(host, space_room, "m.room.name")
    assert "Friday jam" in name.content["name"]
    levels = await state_event(host, space_room, "m.room.power_levels")
    assert levels.content["users"][host.user_id] == 50 and levels.content["users"][chorus.user_id] == 100
    widget = await state_event(host, space_room, "im.vector.modular.widgets", f"chorus-{sid}")
    assert widget.content["type"] == "m.custom" and f"/spaces/{sid}" in widget.content["url"]
    roles = await state_event(host, space_room, "org.chorus.space.roles")
    assert roles.content["host"] == host.user_id

    # the card is posted where the command was typed, with 🎧 and ✋ as buttons
    card = await f1.wait_for_message(room, lambda b: "LIVE: Friday jam" in b, sender=chorus.user_id)
    assert "Join:" in body(card)
    assert chorus.bridge.stages[sid].roles == {host.user_id: "host"}


async def test_request_approve_by_reaction_then_revoke(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, listener = await make_user("host"), await make_user("listener")
    room = await room_with_bot(host, chorus.user_id, listener)
    sid = space_id_in(await ask(host, room, "!space start Q&A"))
    space_room = await host.accept_invite(inviter=chorus.user_id)

    assert "joined" in await ask(listener, room, f"!space join {sid}")
    assert "hand is raised" in await ask(listener, room, f"!space request {sid}")
    notice = await host.wait_for_message(space_room, lambda b: "asks to speak" in b, sender=chorus.user_id)
    assert listener.user_id in body(notice)
    await host.react(space_room, notice.event_id, "✅")
    await host.wait_for_message(space_room, lambda b: "is now a speaker" in b)
    assert chorus.store.load_space(sid).space.people[listener.user_id] is Role.SPEAKER
    assert chorus.bridge.stages[sid].roles[listener.user_id] == "speaker"
    levels = await state_event(host, space_room, "m.room.power_levels")
    assert levels.content["users"][listener.user_id] == 10

    assert "listener again" in await ask(host, room, f"!space revoke {sid} {listener.user_id}")
    space = chorus.store.load_space(sid).space
    assert space.people[listener.user_id] is Role.LISTENER
    assert chorus.bridge.stages[sid].roles[listener.user_id] == "listener"
    assert not chorus.bridge.may_send_audio(sid, listener.user_id)

    # a second request, denied with ❌: the hand is gone and the listener is told
    await ask(listener, room, f"!space request {sid}")
    again = await host.wait_for_message(space_room, lambda b: "asks to speak" in b, sender=chorus.user_id)
    await host.react(space_room, again.event_id, "❌")
    await wait_until(lambda: chorus.store.load_space(sid).space.requests == ())
    assert chorus.store.load_space(sid).space.people[listener.user_id] is Role.LISTENER
    await wait_for_dm(listener, chorus.user_id, lambda b: "was declined" in b)


async def test_the_twelfth_speaker_is_refused(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host = await make_user("host")
    guests = [await make_user(f"g{i}") for i in range(11)]
    room = await room_with_bot(host, chorus.user_id, *guests)
    sid = space_id_in(await ask(host, room, "!space start Big panel"))
    for g in guests[:10]:
        await host.send_text(room, f"!space invite {sid} {g.user_id} as=speaker")
        await g.send_text(room, f"!space join {sid}")
    last = guests[10]
    # the bot answers in order: once these are answered, all the commands above were handled
    await ask(last, room, f"!space join {sid}", timeout=180)
    await ask(last, room, f"!space request {sid}")
    space = chorus.store.load_space(sid).space
    assert len(space.speakers) == 11
    refused = await ask(host, room, f"!space approve {sid} {last.user_id}")
    assert "already has 11 speakers" in refused and "11" in refused
    after = chorus.store.load_space(sid).space
    assert after.people[last.user_id] is Role.LISTENER and last.user_id in after.requests
    assert len(after.speakers) == 11


async def test_following_space_lets_in_followees_and_refuses_strangers(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, friend, stranger = await make_user("host"), await make_user("friend"), await make_user("stranger")
    room = await room_with_bot(host, chorus.user_id, friend, stranger)
    await _follow([host], friend.user_id, room)
    sid = space_id_in(await ask(host, room, "!space start Friends only visibility=following"))
    space_room = await host.accept_invite(inviter=chorus.user_id)
    rules = await state_event(host, space_room, "m.room.join_rules")
    assert rules.content["join_rule"] == "knock"

    await friend.knock(space_room, "let me in")
    await friend.accept_invite(inviter=chorus.user_id)
    await host.wait_for_event(lambda r, e: r == space_room and getattr(e, "state_key", None) == friend.user_id
                              and e.membership == "join")
    # the bot takes the join from its own sync: the host may see it first
    await wait_until(lambda: chorus.store.load_space(sid).space.people.get(friend.user_id) is Role.LISTENER,
                     what="the friend to be in the space")

    await stranger.knock(space_room, "me too?")
    ev = await host.wait_for_event(lambda r, e: r == space_room and getattr(e, "state_key", None) ==
                                   stranger.user_id and e.membership == "leave")
    assert "people" in ev.source["content"].get("reason", "") and host.user_id in ev.source["content"]["reason"]
    assert stranger.user_id not in chorus.store.load_space(sid).space.people
    refused = await ask(stranger, room, f"!space join {sid}")
    assert "no space with id" in refused or "people the host" in refused


async def test_invited_space_refuses_the_uninvited(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, guest, other = await make_user("host"), await make_user("guest"), await make_user("other")
    room = await room_with_bot(host, chorus.user_id, guest, other)
    sid = space_id_in(await ask(host, room, "!space start Secret visibility=invited"))
    space_room = await host.accept_invite(inviter=chorus.user_id)
    assert (await state_event(host, space_room, "m.room.join_rules")).content["join_rule"] == "invite"

    refused = await ask(other, room, f"!space join {sid}")
    assert "no space" in refused or "invited people only" in refused
    assert other.user_id not in chorus.store.load_space(sid).space.people

    assert "Invited" in await ask(host, room, f"!space invite {sid} {guest.user_id}")
    await guest.accept_invite(inviter=chorus.user_id)
    await host.wait_for_event(lambda r, e: r == space_room and getattr(e, "state_key", None) == guest.user_id
                              and e.membership == "join")
    # the bot acts on the join in its own sync: wait for it
    await wait_until(lambda: chorus.store.load_space(sid).space.people.get(guest.user_id) is Role.LISTENER,
                     what="the guest joining the space")


async def test_non_host_approve_is_refused_and_changes_nothing(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, a, b = await make_user("host"), await make_user("a"), await make_user("b")
    room = await room_with_bot(host, chorus.user_id, a, b)
    sid = space_id_in(await ask(host, room, "!space start Rules"))
    await ask(a, room, f"!space join {sid}")
    await ask(b, room, f"!space join {sid}")
    await ask(a, room, f"!space request {sid}")
    before = chorus.store.load_space(sid).space
    refused = await ask(b, room, f"!space approve {sid} {a.user_id}")
    assert "Only the host or a co-host" in refused
    assert chorus.store.load_space(sid).space == before


async def test_end_closes_the_room_and_posts_a_summary(chorus_factory, make_user) -> None:
    # reactions are batched; a long interval means they are posted when the space ends
    chorus = await chorus_factory(hosting={"min_followers": 0}, options={"reaction_interval_seconds": 3600})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    sid = space_id_in(await ask(host, room, "!space start Short one"))
    space_room = await host.accept_invite(inviter=chorus.user_id)
    await ask(fan, room, f"!space join {sid}")
    reacted = await fan.send_text(room, f"!space react {sid} 👏")
    # the bot answers a reaction command by reacting to it, and shows it in the space room
    await fan.wait_for_event(lambda r, e: e.source.get("type") == "m.reaction" and e.sender == chorus.user_id
                             and e.source["content"]["m.relates_to"]["event_id"] == reacted)
    # a flood of reactions from one person: counted up to their share, posted as one message
    for _ in range(7):
        more = await fan.send_text(room, f"!space react {sid} 👏")
        await fan.wait_for_event(lambda r, e, more=more: e.source.get("type") == "m.reaction"
                                 and e.sender == chorus.user_id
                                 and e.source["content"]["m.relates_to"]["event_id"] == more)
    refused = await ask(fan, room, f"!space end {sid}")
    assert "Only the host" in refused
    assert "has ended" in await ask(host, room, f"!space end {sid}")
    await host.wait_for_message(space_room, "👏 ×5 — from 1 person")
    summary = await host.wait_for_message(space_room, lambda b: "has ended. Duration" in b)
    assert "👏×5" in body(summary) and "peak listeners 1" in body(summary)
    await host.expect_no_event(lambda r, e: r == space_room and "from 1 person" in
                               e.source.get("content", {}).get("body", ""), within=1)
    assert (await state_event(host, space_room, "m.room.join_rules")).content["join_rule"] == "invite"
    widget = await state_event(host, space_room, "im.vector.modular.widgets", f"chorus-{sid}")
    assert not isinstance(widget, RoomGetStateEventResponse) or widget.content == {}
    assert sid in chorus.bridge.closed
    assert "has ended" in await ask(fan, room, f"!space request {sid}")


async def test_restart_mid_space_keeps_every_role(db_url, chorus_factory, make_user) -> None:
    """On SQLite and on PostgreSQL (db_url runs the test once with each; it comes first so that
    the database outlives the bot at teardown)."""
    chorus = await chorus_factory(hosting={"min_followers": 0}, database={"url": db_url})
    host, co, sp, li = (await make_user("host"), await make_user("co"), await make_user("sp"),
                        await make_user("li"))
    room = await room_with_bot(host, chorus.user_id, co, sp, li)
    sid = space_id_in(await ask(host, room, "!space start Marathon"))
    for u in (co, sp, li):
        await ask(u, room, f"!space join {sid}")
    await ask(host, room, f"!space cohost {sid} {co.user_id}")
    await ask(sp, room, f"!space request {sid}")
    await ask(co, room, f"!space approve {sid} {sp.user_id}")
    await ask(li, room, f"!space request {sid}")
    expected = {host.user_id: Role.HOST, co.user_id: Role.COHOST, sp.user_id: Role.SPEAKER,
                li.user_id: Role.LISTENER}
    assert dict(chorus.store.load_space(sid).space.people) == expected

    chorus.bridge = InMemoryBridge()  # the bridge restarted too and lost its state
    await chorus.restart()
    space = chorus.store.load_space(sid).space
    assert dict(space.people) == expected and space.requests == (li.user_id,)
    assert chorus.bridge.stages[sid].roles == {u: r.value for u, r in expected.items()}
    info = await ask(li, room, f"!space info {sid}")
    assert f"{co.user_id} (cohost)" in info and f"{sp.user_id} (speaker)" in info
    # the co-host still acts as one after the restart
    assert "can speak now" in await ask(co, room, f"!space approve {sid} {li.user_id}")


class NoCaptionsBridge(InMemoryBridge):
    """A bridge that came back without its captions model: it refuses captions."""

    async def open_stage(self, space_id, title, *, public, record=False, captions=False, page=None):
        if captions:
            raise BridgeError("refused", "captions unavailable: no model")
        await super().open_stage(space_id, title, public=public, record=record, captions=captions,
                                 page=page)


async def test_a_resync_puts_back_lost_stages_closes_stale_ones_and_tells_the_room(
        chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, sp = await make_user("host"), await make_user("sp")
    room = await room_with_bot(host, chorus.user_id, sp)
    sid = space_id_in(await ask(host, room, "!space start Night shift"))
    space_room = await host.accept_invite(inviter=chorus.user_id)
    assert "Captions are on" in await ask(host, room, f"!space captions {sid} on")
    await ask(sp, room, f"!space join {sid}")
    await ask(sp, room, f"!space request {sid}")
    assert "can speak now" in await ask(host, room, f"!space approve {sid} {sp.user_id}")

    # the bridge restarts without captions, and still has a stage the bot ended meanwhile
    bridge = NoCaptionsBridge()
    await bridge.open_stage("old123", "Ended while apart", public=True)
    chorus.bot.spaces.bridge = bridge
    await chorus.bot.spaces.resync("restart")
    assert bridge.stages[sid].roles == {host.user_id: "host", sp.user_id: "speaker"}
    assert bridge.stages[sid].captions is False  # the audio first, without captions
    assert chorus.store.load_space(sid).space.captions is False  # and the truth says so
    await host.wait_for_message(space_room, lambda b: b.startswith("Captions are off: the audio "
                                "bridge could not turn them back on (captions unavailable"),
                                sender=chorus.user_id)
    assert "old123" in bridge.closed and "old123" not in bridge.stages
    notice = await host.wait_for_message(space_room, lambda b: "audio bridge is back" in b,
                                         sender=chorus.user_id)
    assert "Pages reconnect by themselves" in body(notice)
    # the bridge loses the stage behind the bot's back: an approval finds it missing, says
    # so, and the next resync puts it back with the new speaker
    fan = await make_user("fan")
    await fan.join(room)
    await ask(fan, room, f"!space join {sid}")
    await ask(fan, room, f"!space request {sid}")
    del bridge.stages[sid]
    reply = await ask(host, room, f"!space approve {sid} {fan.user_id}")
    assert "can speak now" in reply and "had lost this space's stage" in reply, reply
    await chorus.bot.spaces.resync("recovered")
    assert bridge.stages[sid].roles[fan.user_id] == "speaker"


async def test_the_bot_posts_what_the_bridge_serves_and_says_so_when_it_cannot(
        chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host = await make_user("host")
    room = await room_with_bot(host, chorus.user_id)
    sid = space_id_in(await ask(host, room, "!space start Files"))
    space_room = await host.accept_invite(inviter=chorus.user_id)
    chorus.bridge.files["files-1.ogg"] = b"OggS" + bytes(2000)
    chorus.bridge.files["files-1.vtt"] = b"WEBVTT\n"
    # the path is the bridge's own, on a disk the bot never reads: only the name counts
    await chorus.bridge.emit({"type": "recording_ready", "space_id": sid, "duration": 75.5,
                              "path": "/elsewhere/files-1.ogg", "file": "files-1.ogg",
                              "transcript_path": "/elsewhere/files-1.vtt",
                              "transcript_file": "files-1.vtt"})
    audio = await host.wait_for_message(space_room, "Recording: Files (1:15).ogg", sender=chorus.user_id)
    assert audio.source["content"]["info"] == {"mimetype": "audio/ogg", "size": 2004, "duration": 75500}
    vtt = await host.wait_for_message(space_room, "Transcript: Files.vtt", sender=chorus.user_id)
    assert vtt.source["content"]["info"]["mimetype"] == "text/vtt"
    # a bridge that cannot hand the file over: the room hears why
    await chorus.bridge.emit({"type": "recording_ready", "space_id": sid, "duration": 3,
                              "path": "/elsewhere/gone.ogg"})
    notice = await host.wait_for_message(
        space_room, lambda b: b.startswith("The recording of this space could not be posted"),
        sender=chorus.user_id)
    assert "gone.ogg" in body(notice)
