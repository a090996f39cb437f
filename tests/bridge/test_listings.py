"""The pages of spaces that are not live (protocol 1.5): what the bot gives, what a page
gets and who may get it; every bad input refused naming the field, changing nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.listings import ListingBook, parse_listing
from bridge.page_info import InfoError

CALENDAR = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled(title: str = "Book club", *, public: bool = True, hours: float = 2, **more) -> dict:
    return {"state": "scheduled", "title": title, "public": public, "host": "@ann:x",
            "starts_at": iso(datetime.now(UTC) + timedelta(hours=hours)),
            "room_url": "https://matrix.to/#/!r:x", "calendar": CALENDAR,
            "people": {"@ann:x": {"name": "Ann", "avatar": None}}, **more}


def ended(recordings: list | None = None, **more) -> dict:
    return {"state": "ended", "title": "Last night", "public": True, "host": "@ann:x",
            "started_at": "2026-12-07T18:00:00Z", "ended_at": "2026-12-07T19:02:03Z",
            "summary": {"duration_seconds": 3723, "peak_listeners": 41, "speakers": ["@ann:x", "@bob:x"],
                        "reactions": [["👏", 12], ["🔥", 3]], "recorded": True},
            "recordings": recordings or [], **more}


def files(bridge, *names: str) -> None:
    folder = Path(bridge.settings.recordings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"OggS" + name.encode() * 50)


async def get(bridge, path: str, token: str | None = None, **headers) -> tuple[int, bytes, dict]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with bridge.session.get(f"{bridge.url}{path}", headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def facts(bridge, space_id: str, token: str | None = None) -> tuple[int, dict]:
    async with bridge.session.get(f"{bridge.url}/api/spaces/{space_id}",
                                  headers={"Authorization": f"Bearer {token}"} if token else {}) as resp:
        return resp.status, await resp.json()


# -- through the bridge ------------------------------------------------------------


async def test_a_scheduled_space_is_shown_to_anyone_with_its_calendar_and_on_the_index(bridge) -> None:
    status, body = await bridge.control("PUT", "/listings/s1", scheduled())
    assert (status, body) == (201, {"space_id": "s1", "state": "scheduled", "missing": []})
    status, page = await facts(bridge, "s1")
    assert status == 200
    assert page["state"] == "scheduled" and page["title"] == "Book club" and page["host"] == "@ann:x"
    assert page["calendar"] is True and page["people"]["@ann:x"]["name"] == "Ann"
    assert page["starts_at"].endswith("Z")
    status, data, headers = await get(bridge, "/spaces/s1/calendar.ics")
    assert status == 200 and data.decode() == CALENDAR
    assert headers["Content-Type"].startswith("text/calendar")
    assert 'filename="chorus-s1.ics"' in headers["Content-Disposition"]
    # the index lists it under the live ones, soonest first; a private one not at all
    await bridge.control("PUT", "/listings/s0", scheduled("Sooner", hours=1))
    await bridge.control("PUT", "/listings/s2", scheduled("Secret", public=False, hours=0.5))
    status, index, _ = await get(bridge, "/api/spaces")
    upcoming = json.loads(index)["upcoming"]
    assert [u["space_id"] for u in upcoming] == ["s0", "s1"]
    assert upcoming[1]["people"] == {"@ann:x": {"name": "Ann", "avatar": None}}
    # said again: the same listing is updated (200), and the space going live replaces it
    assert (await bridge.control("PUT", "/listings/s1", scheduled("Book club!")))[0] == 200
    await bridge.open("s1")
    assert await facts(bridge, "s1") == (200, {"space_id": "s1", "state": "live"})
    # a push of its page from before it went live comes too late: refused, the stage stays its page
    status, body = await bridge.control("PUT", "/listings/s1", scheduled())
    assert status == 409 and "is live" in body["error"]
    assert await facts(bridge, "s1") == (200, {"space_id": "s1", "state": "live"})
    status, index, _ = await get(bridge, "/api/spaces")
    assert [u["space_id"] for u in json.loads(index)["upcoming"]] == ["s0"]


async def test_a_private_space_needs_a_valid_link_of_that_space(bridge) -> None:
    await bridge.control("PUT", "/listings/p1", scheduled(public=False, blocked=["@mal:x"]))
    status, body = await facts(bridge, "p1")
    assert status == 403 and "not public" in body["error"] and "title" not in body
    assert (await get(bridge, "/spaces/p1/calendar.ics"))[0] == 403
    status, body = await facts(bridge, "p1", bridge.token("other", "@bob:x"))
    assert status == 401 and "!space join gives you a new one" in body["error"]
    status, body = await facts(bridge, "p1", bridge.token("p1", "@bob:x")[:-4] + "AAAA")
    assert status == 401
    status, body = await facts(bridge, "p1", bridge.token("p1", "@bob:x"))
    assert status == 200 and body["title"] == "Book club"
    # a link in the address works too (an audio player or a download cannot send headers)
    status, data, _ = await get(bridge, f"/spaces/p1/calendar.ics?token={bridge.token('p1', '@bob:x')}")
    assert status == 200 and data.decode() == CALENDAR
    # someone a moderator removed is refused even with a link
    status, body = await facts(bridge, "p1", bridge.token("p1", "@mal:x"))
    assert status == 403


async def test_an_ended_space_plays_its_recording_with_ranges_and_only_its_own_files(bridge) -> None:
    files(bridge, "e1-a.ogg", "e1-a.vtt", "other.ogg")
    status, body = await bridge.control("PUT", "/listings/e1", ended(
        [{"file": "e1-a.ogg", "seconds": 61.5, "transcript": "e1-a.vtt"},
         {"file": "e1-gone.ogg", "seconds": 3.0, "transcript": None}]))
    assert status == 201 and body["missing"] == ["e1-gone.ogg"]  # left out, named
    status, page = await facts(bridge, "e1")
    assert status == 200 and page["state"] == "ended"
    assert page["recordings"] == [{"file": "e1-a.ogg", "seconds": 61.5, "transcript": "e1-a.vtt"}]
    assert page["summary"]["duration_seconds"] == 3723 and page["summary"]["reactions"] == [["👏", 12], ["🔥", 3]]
    whole = (Path(bridge.settings.recordings_dir) / "e1-a.ogg").read_bytes()
    status, data, headers = await get(bridge, "/spaces/e1/files/e1-a.ogg")
    assert status == 200 and data == whole and headers["Content-Type"] == "audio/ogg"
    status, data, headers = await get(bridge, "/spaces/e1/files/e1-a.ogg", Range="bytes=4-9")
    assert status == 206 and data == whole[4:10]
    status, _, headers = await get(bridge, "/spaces/e1/files/e1-a.vtt")
    assert status == 200 and headers["Content-Type"] == "text/vtt; charset=utf-8"
    # a file of the bridge that is not this space's, a name that is not a file name
    for name in ("other.ogg", "e1-gone.ogg", "..%2Fe1-a.ogg", "x.wav"):
        assert (await get(bridge, f"/spaces/e1/files/{name}"))[0] == 404, name
    assert (await get(bridge, "/spaces/e1/calendar.ics"))[0] == 404  # an ended space has none


async def test_a_link_in_the_folder_is_never_served(bridge, tmp_path) -> None:
    outside = tmp_path / "secret.ogg"
    outside.write_bytes(b"secret")
    folder = Path(bridge.settings.recordings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "e2-link.ogg").symlink_to(outside)
    status, body = await bridge.control("PUT", "/listings/e2", ended(
        [{"file": "e2-link.ogg", "seconds": 1.0, "transcript": None}]))
    assert status == 201 and body["missing"] == ["e2-link.ogg"]
    assert (await get(bridge, "/spaces/e2/files/e2-link.ogg"))[0] == 404


@pytest.mark.parametrize(("change", "field"), [
    ({"state": "live"}, "state"),
    ({"title": ""}, "title"),
    ({"title": "x" * 301}, "title"),
    ({"public": "yes"}, "public"),
    ({"host": ""}, "host"),
    ({"starts_at": None}, "starts_at"),
    ({"starts_at": "tomorrow"}, "starts_at"),
    ({"starts_at": "2026-12-24T18:00:00"}, "starts_at"),
    ({"room_url": "javascript:alert(1)"}, "room_url"),
    ({"calendar": "<script>"}, "calendar"),
    ({"calendar": "BEGIN:VCALENDAR" + "x" * 17000}, "calendar"),
    ({"people": {"@a:x": {"name": 5}}}, "people.@a:x.name"),
    ({"recordings": [{"file": "../etc/passwd.ogg"}]}, "recordings.0.file"),
    ({"recordings": [{"file": "a.vtt"}]}, "recordings.0.file"),
    ({"recordings": [{"file": "a.ogg", "seconds": -1}]}, "recordings.0.seconds"),
    ({"recordings": [{"file": "a.ogg", "transcript": "a.ogg"}]}, "recordings.0.transcript"),
    ({"transcripts": ["a.ogg"]}, "transcripts.0"),
    ({"summary": {"reactions": [["👏"]]}}, "summary.reactions.0"),
    ({"summary": {"speakers": [""]}}, "summary.speakers.0"),
    ({"summary": {"peak_listeners": -3}}, "summary.peak_listeners"),
    ({"blocked": "@mal:x"}, "blocked"),
])
async def test_a_bad_listing_is_refused_naming_the_field_and_changes_nothing(bridge, change, field) -> None:
    assert (await bridge.control("PUT", "/listings/b1", scheduled("Kept")))[0] == 201
    status, body = await bridge.control("PUT", "/listings/b1", {**scheduled(), **change})
    assert status == 400 and body["field"] == field, body
    assert (await facts(bridge, "b1"))[1]["title"] == "Kept"


async def test_only_the_bot_gives_or_takes_listings(bridge) -> None:
    assert (await bridge.control("PUT", "/listings/c1", scheduled(), secret="wrong" * 8))[0] == 401
    assert (await bridge.control("PUT", "/listings/c1", scheduled(), secret=None))[0] == 401
    assert (await facts(bridge, "c1"))[0] == 404
    await bridge.control("PUT", "/listings/c1", {**scheduled(), "state": "cancelled"})
    assert (await facts(bridge, "c1"))[1]["state"] == "cancelled"
    assert (await bridge.control("DELETE", "/listings/c1", secret="wrong" * 8))[0] == 401
    assert await bridge.control("DELETE", "/listings/c1") == (200, {"dropped": True})
    assert await bridge.control("DELETE", "/listings/c1") == (200, {"dropped": False})
    status, body = await facts(bridge, "c1")
    assert status == 404 and "no space c1" in body["error"]


# -- pure ----------------------------------------------------------------------------


def test_the_book_keeps_the_most_recent_and_lists_what_is_coming_soonest_first() -> None:
    book = ListingBook(limit=3)
    now = datetime(2026, 12, 8, 12, tzinfo=UTC)
    for i, hours in enumerate([5, 1, -0.5, -2]):
        book.put(parse_listing(f"s{i}", {**scheduled(f"T{i}"), "starts_at": iso(now + timedelta(hours=hours))}))
    assert len(book) == 3 and book.get("s0") is None  # the oldest given went
    # due half an hour ago: still shown (a host may start late); two hours ago: not
    assert [x.space_id for x in book.upcoming(now)] == ["s2", "s1"]
    book.put(parse_listing("s1", {**scheduled(), "state": "cancelled"}))
    assert [x.space_id for x in book.upcoming(now)] == ["s2"]


def test_a_listing_reads_times_in_any_zone_as_utc_and_keeps_recordings_without_lost_files() -> None:
    listing = parse_listing("x", {**ended([{"file": "a.ogg", "seconds": 2, "transcript": "a.vtt"},
                                           {"file": "b.ogg", "seconds": None, "transcript": None}]),
                                  "transcripts": ["c.vtt"], "started_at": "2026-12-07T19:00:00+01:00"})
    assert listing.started_at == datetime(2026, 12, 7, 18, tzinfo=UTC)
    assert listing.files() == {"a.ogg", "a.vtt", "b.ogg", "c.vtt"}
    less = listing.without({"a.vtt", "b.ogg", "c.vtt"})
    assert [(r.file, r.transcript) for r in less.recordings] == [("a.ogg", None)]
    assert less.transcripts == ()
    with pytest.raises(InfoError) as err:
        parse_listing("x", {**ended(), "summary": {"recorded": "yes"}})
    assert err.value.field == "summary.recorded"
