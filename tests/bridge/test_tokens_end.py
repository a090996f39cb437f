"""Tokens end: an open connection is closed when its token expires unless it was renewed,
and a user a moderator removed is cut off at once and refused after. Real bridge on
127.0.0.1; waits are on conditions (the clock passing an expiry included), each bounded."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bridge import tokens
from bridge.client import SpaceClient
from tests.integration.helpers import wait_until

from .conftest import SECRET


async def test_a_connection_is_closed_when_its_token_expires(bridge):
    await bridge.open("exp", public=False)
    async with SpaceClient(bridge.url, "exp", bridge.token("exp", "@l:x", ttl=2)) as c:
        hello = await c.wait_type("hello")
        assert hello["expires_at"] <= time.time() + 2 and 0 <= hello["expires_in"] <= 2
        assert await c.wait_closed(15) == 4401
        assert c.close_reason == "token expired"


async def test_a_renewed_connection_outlives_its_first_token(bridge):
    await bridge.open("ren", public=False, roles={"@s:x": "speaker"})
    async with SpaceClient(bridge.url, "ren", bridge.token("ren", "@s:x", "speaker", ttl=2)) as c:
        first = (await c.wait_type("hello"))["expires_at"]
        await c.renew()
        renewed = await c.wait_type("token")
        assert renewed["expires_at"] > first + 60  # a full token_ttl_seconds from now
        assert renewed["expires_in"] > 60
        claims = tokens.verify(SECRET, renewed["token"], "ren")
        assert (claims.user, claims.role) == ("@s:x", "speaker")
        assert c.token == renewed["token"]  # what a reconnect would use
        await wait_until(lambda: time.time() > first + 1.5, 15, "the first token's expiry")
        frames = c.frames_received
        await c.wait_frames(frames + 10)
        assert not c.closed.is_set()
    # the renewed token opens a new connection too
    async with SpaceClient(bridge.url, "ren", renewed["token"]) as again:
        assert (await again.wait_type("hello"))["user_id"] == "@s:x"


async def test_a_renewal_must_be_for_the_same_user_and_space_and_anonymous_has_none(bridge):
    await bridge.open("mine", public=True)
    async with SpaceClient(bridge.url, "mine", bridge.token("mine", "@a:x", ttl=2)) as c:
        await c.wait_type("hello")
        await c.renew(bridge.token("mine", "@b:x", ttl=600))  # someone else's
        error = await c.wait_type("error")
        assert error["code"] == "not_allowed" and "another user" in error["reason"]
        await c.renew(bridge.token("other", "@a:x", ttl=600))  # another space's
        error = await c.wait_type("error", where=lambda m: "wrong space" in m["reason"])
        assert await c.wait_closed(15) == 4401  # neither renewed it
    # in a space that is not public, only someone the bot's roles name may renew
    await bridge.open("closed", public=False, roles={"@in:x": "listener"})
    async with SpaceClient(bridge.url, "closed", bridge.token("closed", "@gone:x", ttl=600)) as c:
        await c.wait_type("hello")  # its token still lets it in until it ends
        await c.renew()
        error = await c.wait_type("error")
        assert error["code"] == "not_allowed" and "not in this space" in error["reason"]
    async with SpaceClient(bridge.url, "mine") as anonymous:
        assert (await anonymous.wait_type("hello"))["expires_at"] is None
        await anonymous.renew()
        error = await anonymous.wait_type("error")
        assert error["code"] == "not_allowed" and "anonymous" in error["reason"]


async def test_a_removed_user_is_cut_off_at_once_and_refused_after(bridge):
    await bridge.open("mod", public=True, roles={"@bad:x": "speaker"})
    token = bridge.token("mod", "@bad:x", "speaker", ttl=600)
    async with SpaceClient(bridge.url, "mod", token) as bad, \
            SpaceClient(bridge.url, "mod", bridge.token("mod", "@ok:x", ttl=600)) as ok:
        await bad.wait_type("hello")
        await ok.wait_type("hello")
        status, body = await bridge.control("PUT", "/spaces/mod/roles",
                                            {"roles": {}, "removed": ["@bad:x"]})
        assert status == 200, body
        assert await bad.wait_closed(10) == 4403
        assert bad.close_reason == "removed from this space by a moderator"
        frames = ok.frames_received
        await ok.wait_frames(frames + 5)  # the others go on
    async with SpaceClient(bridge.url, "mod", token) as again:
        assert await again.wait_closed(10) == 4403
    # a malformed removed list is refused and changes nothing
    status, body = await bridge.control("PUT", "/spaces/mod/roles", {"roles": {}, "removed": "@x"})
    assert status == 400 and body["field"] == "removed"
    assert bridge.stage("mod").removed == frozenset({"@bad:x"})
    # (the widget's sign-in refuses them too: tests/bridge/test_openid.py)


async def _ogg_until_it_ends(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """GET a live.ogg stream and read it to its end; (status, bytes)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:
            data = await asyncio.wait_for(resp.read(), timeout)
            return resp.status, data


async def test_a_live_ogg_stream_ends_with_its_token_and_a_removed_user_gets_none(bridge):
    await bridge.open("ogg", public=False)
    url = f"{bridge.url}/spaces/ogg/live.ogg?token="
    status, data = await _ogg_until_it_ends(url + bridge.token("ogg", "@l:x", ttl=2))
    assert status == 200 and data.startswith(b"OggS") and len(data) > 300  # it ended, with audio
    status, _ = await bridge.control("PUT", "/spaces/ogg/roles", {"roles": {}, "removed": ["@l:x"]})
    assert status == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(url + bridge.token("ogg", "@l:x", ttl=600)) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "removed from this space by a moderator"
