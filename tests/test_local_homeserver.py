"""The local Synapse homeserver and the Matrix test-user helpers, against a real server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from bot.local_homeserver import HomeserverError, LocalHomeserver
from tests.support.matrix_user import EventTimeout, unique_localpart

pytestmark = pytest.mark.synapse


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _is_text(room_id: str, body: str):
    def matches(r, e) -> bool:
        content = e.source.get("content") or {}
        return (
            r == room_id
            and e.source.get("type") == "m.room.message"
            and content.get("msgtype") == "m.text"
            and content.get("body") == body
        )

    matches.__name__ = f"text {body!r} in {room_id}"
    return matches


def test_homeserver_answers_versions(homeserver: LocalHomeserver) -> None:
    assert homeserver.base_url.startswith("http://127.0.0.1:")
    assert homeserver.server_name == "localhost"
    versions = _get_json(homeserver.base_url + "/_matrix/client/versions")
    assert versions["versions"]


def test_register_is_idempotent(homeserver: LocalHomeserver) -> None:
    localpart = unique_localpart("idem")
    first = homeserver.register(localpart, "pw-1", displayname="Idem")
    second = homeserver.register(localpart, "pw-1")
    assert first.user_id == second.user_id == f"@{localpart}:localhost"
    assert first.access_token and second.access_token
    assert first.device_id and second.device_id
    profile = _get_json(f"{homeserver.base_url}/_matrix/client/v3/profile/{first.user_id}")
    assert profile["displayname"] == "Idem"


def test_register_admin(homeserver: LocalHomeserver) -> None:
    admin = homeserver.register(unique_localpart("admin"), "pw", admin=True)
    req = urllib.request.Request(
        f"{homeserver.base_url}/_synapse/admin/v2/users/{admin.user_id}",
        headers={"Authorization": f"Bearer {admin.access_token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["admin"] is True


def test_bad_password_login_is_a_clear_error(homeserver: LocalHomeserver) -> None:
    localpart = unique_localpart("pw")
    homeserver.register(localpart, "right")
    with pytest.raises(HomeserverError, match="Invalid username or password") as info:
        homeserver.login(localpart, "wrong")
    assert info.value.errcode == "M_FORBIDDEN"
    assert localpart in str(info.value)
    # and registering an existing user with the wrong password fails the same way
    with pytest.raises(HomeserverError, match="M_FORBIDDEN"):
        homeserver.register(localpart, "wrong")


def test_openid_userinfo_is_served(homeserver: LocalHomeserver) -> None:
    user = homeserver.register(unique_localpart("oid"), "pw")
    req = urllib.request.Request(
        f"{homeserver.base_url}/_matrix/client/v3/user/{user.user_id}/openid/request_token",
        data=b"{}",
        method="POST",
        headers={
            "Authorization": f"Bearer {user.access_token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.loads(resp.read())["access_token"]
    info = _get_json(f"{homeserver.base_url}/_matrix/federation/v1/openid/userinfo?access_token={token}")
    assert info == {"sub": user.user_id}


async def test_invite_join_message_and_reaction(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob", displayname="Bob")
    room_id = await alice.create_room(name="test room", invite=[bob.user_id])

    assert await bob.wait_for_invite(inviter=alice.user_id) == room_id
    await bob.join(room_id)
    joined = await alice.wait_for_event(
        lambda r, e: (
            r == room_id
            and e.source["type"] == "m.room.member"
            and e.source["state_key"] == bob.user_id
            and e.source["content"]["membership"] == "join"
        )
    )
    assert joined.source["content"]["displayname"] == "Bob"

    event_id = await bob.send_text(room_id, "hello alice")
    seen = await alice.wait_for_event(_is_text(room_id, "hello alice"))
    assert seen.source["event_id"] == event_id
    assert seen.source["sender"] == bob.user_id

    reaction_id = await alice.react(room_id, event_id, "👍")
    reaction = await bob.wait_for_event(lambda r, e: r == room_id and e.source["type"] == "m.reaction")
    assert reaction.source["event_id"] == reaction_id
    assert reaction.source["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": event_id,
        "key": "👍",
    }


async def test_events_are_buffered_across_waits(make_user) -> None:
    alice = await make_user("alice")
    room_id = await alice.create_room(name="buffer")
    first = await alice.send_text(room_id, "one")
    second = await alice.send_text(room_id, "two")
    # Waiting for the second event first must not lose the first one.
    assert (await alice.wait_for_event(_is_text(room_id, "two"))).source["event_id"] == second
    assert (await alice.wait_for_event(_is_text(room_id, "one"))).source["event_id"] == first
    # An event is handed out once.
    with pytest.raises(EventTimeout, match="no event matching text 'one'"):
        await alice.wait_for_event(_is_text(room_id, "one"), timeout=1.5)


async def test_wait_for_reply_and_expect_no_event(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    room_id = await alice.create_room(invite=[bob.user_id])
    await bob.accept_invite()
    command_id = await bob.send_text(room_id, "!ping")
    await alice.wait_for_event(_is_text(room_id, "!ping"))
    reply = {
        "msgtype": "m.notice",
        "body": "pong",
        "m.relates_to": {"m.in_reply_to": {"event_id": command_id}},
    }
    await alice.send(room_id, reply)
    got = await bob.wait_for_reply(room_id, command_id)
    assert got.source["content"]["body"] == "pong"

    await bob.expect_no_event(_is_text(room_id, "nobody says this"), within=1.5)
    await alice.send_text(room_id, "surprise")
    with pytest.raises(AssertionError, match="surprise"):
        await bob.expect_no_event(_is_text(room_id, "surprise"), within=5)


async def test_knock(make_user) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    room_id = await alice.create_room(
        name="knock here",
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
    )
    await bob.knock(room_id, reason="let me in")
    knock = await alice.wait_for_event(
        lambda r, e: (
            r == room_id and e.source["type"] == "m.room.member" and e.source["content"].get("membership") == "knock"
        )
    )
    assert knock.source["state_key"] == bob.user_id
    assert knock.source["content"]["reason"] == "let me in"


def test_persistent_data_dir_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "hs"
    server = LocalHomeserver(data_dir)
    with server:
        secret = server.shared_secret
        user = server.register("carol", "pw")
        first_port = server.port
    assert not server.running

    # A new instance on the same directory, on another port.
    again = LocalHomeserver(data_dir, port=0)
    while again.port == first_port:
        again = LocalHomeserver(data_dir, port=0)
    with again:
        assert again.shared_secret == secret
        assert json.loads((data_dir / "homeserver.yaml").read_text())["listeners"][0]["port"] == again.port
        assert again.login("carol", "pw").user_id == user.user_id
        assert again.register("carol", "pw").user_id == user.user_id
    again.stop()  # idempotent

    # The same instance can be started again, too.
    server.start()
    try:
        assert server.login("carol", "pw").user_id == user.user_id
    finally:
        server.stop()


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    server = LocalHomeserver(tmp_path / "bad")
    server.data_dir.mkdir()
    config = server._default_config()
    config["database"] = {"name": "no-such-engine", "args": {}}
    server._write_config(config)
    with pytest.raises(HomeserverError, match="exited with code") as info:
        server.start(timeout=60)
    assert "Unsupported database type 'no-such-engine'" in str(info.value)
    assert not server.running


def test_start_stops_a_server_left_running_on_the_same_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "hs"
    crashed = LocalHomeserver(data_dir)
    crashed.start()
    # Simulate a run that died without stopping its server.
    orphan, crashed._process = crashed._process, None
    assert orphan is not None and orphan.poll() is None
    try:
        with LocalHomeserver(data_dir) as fresh:
            assert orphan.wait(timeout=20) is not None
            assert fresh.running
            fresh.register("dave", "pw")
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
