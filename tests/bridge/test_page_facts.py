"""What the page shows besides audio, through the control API (protocol 1.4): the host, room
link and tip jar; names and avatars; the host's no to a raised hand; reactions from the
stage named. Every bad input is refused naming the field, and changes nothing."""

from __future__ import annotations

import hashlib

import pytest

from bridge.app import STAGES
from bridge.avatars import MAX_AVATAR_BYTES, AvatarStore, image_type
from bridge.client import SpaceClient
from bridge.page_info import MAX_PROFILES, PageInfo, Profile, ProfileBook
from tests.support.images import face_png

from .conftest import SECRET

AVATAR = face_png((40, 120, 200), 64)
AVATAR_ID = hashlib.sha256(AVATAR).hexdigest()


async def put(bridge, avatar_id: str, data: bytes, secret: str = SECRET) -> tuple[int, dict]:
    async with bridge.session.put(f"{bridge.url}/control/v1/avatars/{avatar_id}", data=data,
                                  headers={"Authorization": f"Bearer {secret}"}) as resp:
        return resp.status, await resp.json()


async def test_an_avatar_is_put_once_and_served_to_anyone_as_the_image_it_is(bridge) -> None:
    assert await put(bridge, AVATAR_ID, AVATAR) == (201, {"avatar": AVATAR_ID, "bytes": len(AVATAR)})
    assert (await put(bridge, AVATAR_ID, AVATAR))[0] == 200  # already there
    async with bridge.session.get(f"{bridge.url}/avatars/{AVATAR_ID}") as resp:
        assert resp.status == 200 and await resp.read() == AVATAR
        assert resp.headers["Content-Type"] == "image/png"
        assert "immutable" in resp.headers["Cache-Control"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with bridge.session.get(f"{bridge.url}/avatars/{'0' * 64}") as resp:
        assert resp.status == 404


@pytest.mark.parametrize(("avatar_id", "data", "status", "says"), [
    ("not-a-hash", AVATAR, 400, "SHA-256"),
    (AVATAR_ID.upper(), AVATAR, 400, "SHA-256"),
    ("0" * 64, AVATAR, 400, "SHA-256 is not the one"),
    (hashlib.sha256(b"<svg onload=alert(1)>").hexdigest(), b"<svg onload=alert(1)>", 400,
     "not a PNG, JPEG, GIF or WebP"),
    (AVATAR_ID, b"", 400, "empty body"),
    (AVATAR_ID, b"\x89PNG\r\n\x1a\n" + bytes(MAX_AVATAR_BYTES), 413, "larger than"),
])
async def test_a_bad_avatar_is_refused_and_not_served(bridge, avatar_id, data, status, says) -> None:
    got, body = await put(bridge, avatar_id, data)
    assert got == status and says in body["error"]
    async with bridge.session.get(f"{bridge.url}/avatars/{AVATAR_ID}") as resp:
        assert resp.status == 404
    assert (await put(bridge, AVATAR_ID, AVATAR, secret="wrong" * 8))[0] == 401


async def test_names_avatars_and_the_host_reach_the_pages(bridge) -> None:
    await bridge.open("p", roles={"@ann:x": "host", "@lis:x": "listener"})
    await put(bridge, AVATAR_ID, AVATAR)
    status, _ = await bridge.control("POST", "/spaces/p", {
        "title": "Test p", "public": True, "host": "@ann:x", "room_url": "https://matrix.to/#/!r:x",
        "tips": [{"label": "PayPal", "url": "https://paypal.me/Ann"}]})
    assert status == 200
    status, body = await bridge.control("PUT", "/spaces/p/people", {"people": {
        "@ann:x": {"name": " Ann ", "avatar": AVATAR_ID}, "@lis:x": {"name": "Lis", "avatar": None}}})
    assert status == 200 and body == {"people": 2}
    async with SpaceClient(bridge.url, "p", bridge.token("p", "@lis:x")) as lis:
        hello = await lis.wait_type("hello")
        # the people on stage come with the hello; a listener's name with the participants
        assert hello["people"] == {"@ann:x": {"name": "Ann", "avatar": AVATAR_ID}}
        assert hello["info"] == {"host": "@ann:x", "room_url": "https://matrix.to/#/!r:x",
                                 "tips": [{"label": "PayPal", "url": "https://paypal.me/Ann"}]}
        me = await lis.wait_type("participants", where=lambda m: m["participants"])
        assert me["participants"] == [{"user_id": "@lis:x", "role": "listener", "hand_raised": False,
                                       "name": "Lis", "avatar": None}]
        # a change to someone on stage is sent at once; so is new info
        await bridge.control("PUT", "/spaces/p/people", {"people": {"@ann:x": {"name": "Ann B", "avatar": None}}})
        people = await lis.wait_type("people", where=lambda m: m["people"]["@ann:x"]["name"] == "Ann B")
        assert people["people"]["@ann:x"]["avatar"] is None
        await bridge.control("POST", "/spaces/p", {"title": "Test p", "public": True, "tips": []})
        info = await lis.wait_type("info", where=lambda m: m["tips"] == [])
        assert info["host"] == "@ann:x"  # what the call did not name is kept
        # a new speaker's profile comes with the roles
        await bridge.control("PUT", "/spaces/p/roles", {"roles": {"@ann:x": "host", "@lis:x": "speaker"}})
        people = await lis.wait_type("people", where=lambda m: "@lis:x" in m["people"])
        assert people["people"]["@lis:x"] == {"name": "Lis", "avatar": None}


@pytest.mark.parametrize(("body", "field"), [
    ({"people": []}, "people"),
    ({"people": {"@a:x": "Ann"}}, "people.@a:x"),
    ({"people": {"@a:x": {"name": 5}}}, "people.@a:x.name"),
    ({"people": {"@a:x": {"name": "x" * 257}}}, "people.@a:x.name"),
    ({"people": {"@a:x": {"avatar": "../../etc/passwd"}}}, "people.@a:x.avatar"),
    ({"people": {f"@u{i}:x": {} for i in range(501)}}, "people"),
])
async def test_bad_people_are_refused_naming_the_entry(bridge, body, field) -> None:
    await bridge.open("bad")
    status, answer = await bridge.control("PUT", "/spaces/bad/people", body)
    assert status == 400 and answer["field"] == field
    assert len(bridge.stage("bad").profiles) == 0
    status, _ = await bridge.control("PUT", "/spaces/nope/people", {"people": {}})
    assert status == 404


@pytest.mark.parametrize(("extra", "field"), [
    ({"host": 5}, "host"),
    ({"room_url": "javascript:alert(1)"}, "room_url"),
    ({"room_url": "https://matrix.to/#/ spaced"}, "room_url"),
    ({"tips": {"label": "x"}}, "tips"),
    ({"tips": [{"label": "PayPal", "url": "javascript:alert(1)"}]}, "tips.0.url"),
    ({"tips": [{"label": "", "url": "https://paypal.me/x"}]}, "tips.0.label"),
    ({"tips": [{"label": "x", "url": "https://x.example"}] * 9}, "tips"),
])
async def test_bad_page_info_is_refused_and_changes_nothing(bridge, extra, field) -> None:
    await bridge.open("info", host="@ann:x")
    status, answer = await bridge.control("POST", "/spaces/info", {"title": "Other", "public": False, **extra})
    assert status == 400 and answer["field"] == field
    stage = bridge.stage("info")
    assert stage.info == PageInfo(host="@ann:x") and stage.title == "Test info" and stage.public
    status, answer = await bridge.control("POST", "/spaces/new", {"title": "New", "public": True, **extra})
    assert status == 400 and "new" not in bridge.app[STAGES]  # and no stage was opened


async def test_the_hosts_no_lowers_the_hand_and_tells_that_person_only(bridge) -> None:
    await bridge.open("h", roles={"@h:x": "host", "@a:x": "listener", "@b:x": "listener"})
    async with SpaceClient(bridge.url, "h", bridge.token("h", "@a:x")) as a, \
            SpaceClient(bridge.url, "h", bridge.token("h", "@b:x")) as b:
        await a.wait_type("hello")
        await b.wait_type("hello")
        await a.raise_hand()
        await b.raise_hand()
        await b.wait_type("activity", where=lambda m: m["hands"].get("@a:x") is True)
        status, _ = await bridge.control("POST", "/spaces/h/answer", {"user_id": "@a:x", "answer": "declined"})
        assert status == 200
        assert await a.wait_type("answer") == {"type": "answer", "answer": "declined"}
        await b.wait_type("activity", where=lambda m: m["hands"].get("@a:x") is False)
        assert bridge.stage("h").hands == {"@b:x"}
        assert not [m for m in b.messages if m.get("type") == "answer"]
        # an unknown answer, or none, changes nothing
        for body in ({"user_id": "@b:x", "answer": "maybe"}, {"user_id": "@b:x"}, {"answer": "declined"}):
            status, answer = await bridge.control("POST", "/spaces/h/answer", body)
            assert status == 400 and answer["field"] in ("answer", "user_id")
        assert bridge.stage("h").hands == {"@b:x"}


async def test_reactions_from_the_stage_are_named_the_audiences_only_counted(bridge) -> None:
    await bridge.open("r", roles={"@sp:x": "speaker", "@li:x": "listener"})
    async with SpaceClient(bridge.url, "r", bridge.token("r", "@sp:x", "speaker")) as sp, \
            SpaceClient(bridge.url, "r", bridge.token("r", "@li:x")) as li:
        await sp.wait_type("hello")
        await li.wait_type("hello")
        await sp.react("🔥")
        await li.react("👏")
        batches = []

        def counted(m) -> bool:
            batches.append(m)
            return sum(sum(b["reactions"].values()) for b in batches) >= 2

        await li.wait_type("activity", where=counted)
        named = {}
        for b in batches:
            named.update(b.get("from", {}))
        assert named == {"@sp:x": "🔥"}


def test_the_profile_book_keeps_the_newest_and_says_what_changed() -> None:
    book = ProfileBook(limit=3)
    assert book.update({"@a:x": Profile("A"), "@b:x": Profile("B")}) == {"@a:x", "@b:x"}
    assert book.update({"@a:x": Profile("A")}) == set()
    book.update({"@c:x": Profile("C"), "@d:x": Profile("D")})
    assert book.get("@b:x") is None and book.get("@a:x") == Profile("A") and len(book) == 3
    assert book.of(["@a:x", "@zz:x"]) == {"@a:x": {"name": "A", "avatar": None}}
    assert MAX_PROFILES >= 1000


def test_the_avatar_store_keeps_within_its_size_and_judges_images_by_their_bytes() -> None:
    images = [face_png((i * 40, 90, 90), 48) for i in range(4)]
    store = AvatarStore(limit_bytes=sum(map(len, images[:3])))
    for data in images:
        store.put(hashlib.sha256(data).hexdigest(), data)
    assert len(store) == 3 and store.size <= store.limit
    assert hashlib.sha256(images[0]).hexdigest() not in store
    assert image_type(b"GIF89a....") == "image/gif"
    assert image_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert image_type(b"<html>") is None
