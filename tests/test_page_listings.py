"""The bot's side of the pages before and after a space (bot/page_listings.py): what it gives
the bridge for a scheduled, ended or cancelled space, which spaces a bridge that forgot
them gets again (on SQLite and PostgreSQL), the files kept once, and a bridge older than
1.5 or out of reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar

from bot.bridge_api import BridgeError, BridgeUnavailable, InMemoryBridge
from bot.core.model import Role, Space, State, Visibility
from bot.db.database import Database
from bot.db.store import Store
from bot.page_listings import HISTORY_DAYS, PageListings
from bridge.listings import parse_listing

NOW = datetime.now(UTC).replace(microsecond=0)


def space(space_id: str, state: State, *, when: datetime | None = None, public: bool = True,
          people: dict | None = None, removed: frozenset = frozenset()) -> Space:
    return Space(id=space_id, host="@ann:x", title=f"Title {space_id}", state=state,
                 visibility=Visibility.EVERYONE if public else Visibility.INVITED,
                 scheduled_for=when, people=people or {}, removed=removed)


def listings(store: Store, bridge: InMemoryBridge) -> PageListings:
    return PageListings(Database(store), bridge, None, page_url=lambda s: f"https://chorus.example/spaces/{s}",
                        prefix="!", domain="example.org")


def test_a_bridge_that_forgot_gets_every_scheduled_space_and_the_recent_ended_ones(store: Store) -> None:
    old = NOW - timedelta(days=HISTORY_DAYS + 1)
    store.save_space(space("sch2", State.SCHEDULED, when=NOW + timedelta(days=2)))
    store.save_space(space("sch1", State.SCHEDULED, when=NOW + timedelta(hours=1)))
    store.save_space(space("live", State.LIVE))
    store.save_space(space("end1", State.ENDED), started_at=NOW - timedelta(days=3), ended_at=NOW - timedelta(days=3))
    store.save_space(space("end2", State.ENDED), started_at=NOW - timedelta(hours=2), ended_at=NOW - timedelta(hours=1))
    store.save_space(space("endold", State.ENDED), started_at=old, ended_at=old)
    store.save_space(space("can1", State.CANCELLED, when=NOW + timedelta(days=1)))
    store.save_space(space("canold", State.CANCELLED, when=old))
    store.save_space(space("never", State.SCHEDULED, when=old))  # its host never started it
    since = NOW - timedelta(days=HISTORY_DAYS)
    # the scheduled first, soonest first; then the newest ended or cancelled (a cancelled
    # one by the time it was planned for) first, the same on both databases
    assert store.spaces_with_pages(since, 100) == ["sch1", "sch2", "can1", "end2", "end1"]
    assert store.spaces_with_pages(since, 3) == ["sch1", "sch2", "can1"]


def test_a_file_is_kept_once_in_the_order_it_came(store: Store) -> None:
    store.save_space(space("f1", State.ENDED))
    assert store.add_space_file("f1", "f1-a.ogg", "recording", 12.5, "f1-a.vtt") is True
    assert store.add_space_file("f1", "f1-a.ogg", "recording", 12.5, "f1-a.vtt") is False
    assert store.add_space_file("f1", "f1-b.vtt", "transcript") is True
    assert [(f.name, f.kind, f.seconds, f.transcript) for f in store.space_files("f1")] == [
        ("f1-a.ogg", "recording", 12.5, "f1-a.vtt"), ("f1-b.vtt", "transcript", None, None)]


async def test_what_the_bridge_is_given_for_each_state_it_takes(store: Store) -> None:
    bridge = InMemoryBridge()
    pages = listings(store, bridge)
    when = NOW + timedelta(days=1)
    store.save_space(space("sch", State.SCHEDULED, when=when, public=False), origin_room_id="!origin:x")
    store.save_space(space("end", State.ENDED, people={"@ann:x": Role.HOST, "@bob:x": Role.SPEAKER},
                           removed=frozenset({"@mal:x"})),
                     started_at=NOW - timedelta(minutes=61, seconds=3), ended_at=NOW, peak_listeners=17,
                     room_id="!room:x", recording=True)
    store.add_reaction("end", "@bob:x", "👏")
    store.add_reaction("end", "@cat:x", "👏")
    store.add_space_file("end", "end-a.ogg", "recording", 3600.0, "end-a.vtt")
    store.save_space(space("live", State.LIVE))
    pages.changed("sch", "end", "live", "nope")
    await pages.idle()
    assert set(bridge.listings) == {"sch", "end"}  # a live space's page is its stage

    sch = bridge.listings["sch"]
    assert sch["state"] == "scheduled" and sch["public"] is False and sch["host"] == "@ann:x"
    assert sch["starts_at"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sch["room_url"] == "https://matrix.to/#/!origin:x" and "summary" not in sch
    event = next(iter(icalendar.Calendar.from_ical(sch["calendar"]).walk("VEVENT")))
    assert event["DTSTART"].dt == when and "!space join sch" in str(event["DESCRIPTION"])
    assert parse_listing("sch", sch).state == "scheduled"  # the bridge takes it as it is

    end = bridge.listings["end"]
    assert end["calendar"] is None and end["blocked"] == ["@mal:x"]
    assert end["summary"] == {"duration_seconds": 3663, "peak_listeners": 17, "speakers": ["@ann:x", "@bob:x"],
                              "reactions": [["👏", 2]], "recorded": True}
    assert end["recordings"] == [{"file": "end-a.ogg", "seconds": 3600.0, "transcript": "end-a.vtt"}]
    assert parse_listing("end", end).recordings[0].transcript == "end-a.vtt"


class OldBridge(InMemoryBridge):
    """A 1.4 bridge: no listings route."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def put_listing(self, space_id, listing):
        self.calls += 1
        raise BridgeError("bridge refused PUT: 404 Not Found", "Not Found", status=404)


class DownBridge(InMemoryBridge):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def put_listing(self, space_id, listing):
        self.calls += 1
        if space_id == "a":
            raise BridgeError("bridge refused PUT: 400 field 'title'", "field 'title'", status=400)
        raise BridgeUnavailable("bridge unreachable", "the audio bridge cannot be reached")


async def test_an_old_bridge_is_asked_once_and_an_unreachable_one_waits_for_the_resync(store: Store, caplog) -> None:
    for sid in ("a", "b", "c"):
        store.save_space(space(sid, State.SCHEDULED, when=NOW + timedelta(hours=1)))
    old = OldBridge()
    pages = listings(store, old)
    pages.changed("a", "b", "c")
    await pages.idle()
    pages.changed("a")
    await pages.idle()
    assert old.calls == 1 and "protocol 1.5" in caplog.text
    await pages.resync()  # a new bridge (an upgraded one, maybe): asked again
    await pages.idle()
    assert old.calls == 2

    down = DownBridge()
    pages = listings(store, down)
    pages.changed("a", "b", "c")
    await pages.idle()
    # a refused page is logged and the next goes on; an unreachable bridge stops the rest
    assert down.calls == 2 and "refused its scheduled page" in caplog.text


async def test_an_ended_space_with_many_recordings_gives_the_newest_the_bridge_takes(store: Store) -> None:
    bridge = InMemoryBridge()
    store.save_space(space("many", State.ENDED), started_at=NOW - timedelta(hours=3), ended_at=NOW, recording=True)
    for i in range(25):  # recording turned off and on again, many times
        store.add_space_file("many", f"many-{i:02d}.ogg", "recording", 60.0, None)
    pages = listings(store, bridge)
    pages.changed("many")
    await pages.idle()
    files = [r["file"] for r in bridge.listings["many"]["recordings"]]
    assert files == [f"many-{i:02d}.ogg" for i in range(5, 25)]
    assert len(parse_listing("many", bridge.listings["many"]).recordings) == 20


class OrderBridge(InMemoryBridge):
    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    async def put_listing(self, space_id, listing):
        self.order.append(space_id)
        return await super().put_listing(space_id, listing)


async def test_a_change_goes_before_the_pages_a_resync_gives_again(store: Store) -> None:
    for i in range(5):
        store.save_space(space(f"r{i}", State.SCHEDULED, when=NOW + timedelta(hours=i + 1)))
    store.save_space(space("new", State.CANCELLED, when=NOW + timedelta(days=2)))
    bridge = OrderBridge()
    pages = listings(store, bridge)
    await pages.resync()  # every page, queued
    pages.changed("new")  # just cancelled: its page first
    await pages.idle()
    assert bridge.order[0] == "new" and sorted(bridge.order) == ["new", "r0", "r1", "r2", "r3", "r4"]
