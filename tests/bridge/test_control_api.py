"""The bot-facing control API over real HTTP."""

import pytest

from .conftest import SECRET


async def test_missing_secret_is_401_json(bridge):
    status, body = await bridge.control("GET", "/spaces/s1", secret=None)
    assert status == 401
    assert "bearer" in body["error"]


async def test_wrong_secret_is_401_json(bridge):
    status, body = await bridge.control("POST", "/spaces/s1", {"title": "x", "public": True},
                                        secret="not-" + SECRET)
    assert status == 401
    assert body["error"] == "wrong shared secret"
    status, _ = await bridge.control("GET", "/spaces/s1")
    assert status == 404


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/spaces/nope", None),
    ("PATCH", "/spaces/nope", {"record": True}),
    ("PUT", "/spaces/nope/roles", {"roles": {}}),
    ("DELETE", "/spaces/nope", None),
    ("POST", "/spaces/nope/clip", {}),
])
async def test_unknown_space_is_404(bridge, method, path, body):
    status, data = await bridge.control(method, path, body)
    assert status == 404
    assert "nope" in data["error"]


@pytest.mark.parametrize("body,field", [
    ({"public": True}, "title"),
    ({"title": 5, "public": True}, "title"),
    ({"title": "t"}, "public"),
    ({"title": "t", "public": "yes"}, "public"),
    ({"title": "t", "public": True, "record": 1}, "record"),
    ([1, 2], "body"),
])
async def test_bad_open_body_is_400_naming_field(bridge, body, field):
    status, data = await bridge.control("POST", "/spaces/s1", body)
    assert status == 400
    assert data["field"] == field


async def test_non_json_body_is_400(bridge):
    async with bridge.session.post(f"{bridge.url}/control/v1/spaces/s1", data=b"{nope",
                                   headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["field"] == "body"


async def test_bad_roles_are_400_naming_the_user(bridge):
    await bridge.open("s1")
    status, data = await bridge.control("PUT", "/spaces/s1/roles",
                                        {"roles": {"@a:x": "speaker", "@b:x": "emperor"}})
    assert status == 400
    assert data["field"] == "roles.@b:x"
    status, data = await bridge.control("PUT", "/spaces/s1/roles", {"roles": ["@a:x"]})
    assert status == 400 and data["field"] == "roles"
    status, data = await bridge.control("PATCH", "/spaces/s1", {"colour": "red"})
    assert status == 400 and data["field"] == "colour"


async def test_open_is_idempotent_and_stats_follow_options(bridge):
    status, first = await bridge.control("POST", "/spaces/s1", {"title": "A", "public": True})
    assert status == 201 and first["open"] is True
    stage = bridge.stage("s1")
    status, again = await bridge.control("POST", "/spaces/s1", {"title": "A", "public": True})
    assert status == 200
    assert bridge.stage("s1") is stage
    status, stats = await bridge.control("PATCH", "/spaces/s1", {"captions": True})
    assert status == 200 and stats["captions"] is True and stats["recording"] is False
    status, stats = await bridge.control("GET", "/spaces/s1")
    assert status == 200
    for key in ("space_id", "open", "listeners", "peak_listeners", "speakers_connected",
                "recording", "captions"):
        assert key in stats
    assert stats["space_id"] == "s1" and stats["captions"] is True
    status, closed = await bridge.control("DELETE", "/spaces/s1")
    assert status == 200 and closed["open"] is False
    status, _ = await bridge.control("GET", "/spaces/s1")
    assert status == 404
