"""Listener fan-out through a real Redis (127.0.0.1:6379): an origin and an edge bridge."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import opus, tokens, wire
from bridge.client import SpaceClient
from bridge.fanout import EDGE, PUBLISHER, audio_channel, registry_key
from bridge.settings import BridgeSettings, SettingsError

from .conftest import SECRET, make_settings, rms, run_bridge, sine

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait (yielding to the loop) until ``predicate()`` is true; fail after ``timeout``."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def redis_client():
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"needs a Redis server on 127.0.0.1:6379 ({exc})")
    yield client
    await client.aclose()


@pytest.fixture
async def pair(tmp_path, redis_client):
    """(origin, edge, prefix): two bridges in this process sharing a fresh key prefix."""
    prefix = f"chorus-test-{uuid.uuid4().hex}:"
    origin = await run_bridge(make_settings(tmp_path / "o", redis_url=REDIS_URL,
                                            redis_prefix=prefix))
    edge = await run_bridge(make_settings(tmp_path / "e", redis_url=REDIS_URL,
                                          redis_prefix=prefix, role="edge"))
    yield origin, edge, prefix
    for running in (edge, origin):
        await running.session.close()
        await running.runner.cleanup()
    await redis_client.delete(registry_key(prefix))


async def _registered(redis_client, prefix: str, space_id: str, present: bool = True) -> None:
    async def poll() -> None:
        while (await redis_client.hget(registry_key(prefix), space_id) is not None) != present:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), 5.0)


class RawListener:
    """A WebSocket listener that keeps every audio packet's exact bytes by tick number."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.packets: dict[int, bytes] = {}
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> RawListener:
        self.ws = await self.session.ws_connect(self.url)
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.packets[struct.unpack(">I", msg.data[1:5])[0]] = msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
        self.close_code = self.ws.close_code
        self.closed.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


async def _refused(url: str, space: str, token: str | None) -> tuple[int | None, str]:
    client = SpaceClient(url, space, token)
    await client.connect()
    code = await client.wait_closed()
    reason = client.close_reason
    await client.close()
    return code, reason


async def test_edge_listener_gets_the_origin_packets_and_hears_the_speaker(pair,
                                                                           redis_client):
    origin, edge, prefix = pair
    await origin.open("s1", roles={"@alice:x": "host"})
    await _registered(redis_client, prefix, "s1")
    async with RawListener(edge.session, f"{edge.url}/spaces/s1/ws") as on_edge, \
            RawListener(origin.session, f"{origin.url}/spaces/s1/ws") as on_origin:
        await _until(lambda: on_edge.of_type("hello") and on_origin.of_type("hello"))
        hello = on_edge.of_type("hello")[0]
        assert hello["roles"] == {"@alice:x": "host"} and hello["may_speak"] is False
        assert hello["title"] == "Test s1"
        await asyncio.wait_for(edge.app[EDGE].spaces["s1"].subscribed.wait(), 5)
        token = origin.token("s1", "@alice:x", "host")
        async with SpaceClient(origin.url, "s1", token) as alice:
            await alice.wait_type("hello")
            await alice.speak(sine(440, 1.0))
            start = max(on_origin.packets)  # ticks after the speech: all in both
            await _until(lambda: max(on_edge.packets, default=0) >= start + 25)

        common = sorted(set(on_edge.packets) & set(on_origin.packets))
        assert len(common) >= 50
        assert all(on_edge.packets[seq] == on_origin.packets[seq] for seq in common)
        # the edge listener hears alice: decode its packets in tick order
        decoder = opus.Decoder()
        try:
            pcm = np.concatenate([decoder.decode(wire.unpack(on_edge.packets[s]).payload)
                                  for s in sorted(on_edge.packets)])
        finally:
            decoder.close()
        loudest = max(rms(pcm[i:i + 9600]) for i in range(0, len(pcm) - 9600, 960))
        assert loudest > 1000
        # events reach the edge too: a roles push arrives as `roles` and `you`
        status, _ = await origin.control("PUT", "/spaces/s1/roles",
                                         {"roles": {"@bob:x": "speaker"}})
        assert status == 200
        await _until(lambda: on_edge.of_type("roles"))
        assert on_edge.of_type("roles")[-1]["roles"] == {"@bob:x": "speaker"}
        assert on_edge.of_type("you")[-1] == {"type": "you", "role": "listener",
                                              "may_speak": False}


async def test_edge_serves_live_ogg_and_unsubscribes_when_the_last_listener_leaves(
        pair, redis_client):
    origin, edge, prefix = pair
    await origin.open("s1")
    await _registered(redis_client, prefix, "s1")
    channel = audio_channel(prefix, "s1")

    async def subscribers() -> int:
        return dict(await redis_client.pubsub_numsub(channel)).get(channel.encode(), 0)

    async def wait_subscribers(n: int) -> None:
        async def poll() -> None:
            while await subscribers() != n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), 5.0)

    assert await subscribers() == 0
    async with edge.session.get(f"{edge.url}/spaces/s1/live.ogg") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("audio/ogg")
        data = b""
        while data.count(b"OggS") < 4:  # OpusHead, OpusTags, then audio pages
            data += await asyncio.wait_for(resp.content.readany(), 5)
        assert data.startswith(b"OggS") and b"OpusHead" in data
        await wait_subscribers(1)
    await wait_subscribers(0)
    assert "s1" in edge.app[EDGE].spaces and edge.app[EDGE].spaces["s1"].listeners == 0


async def test_edge_refuses_like_the_origin(pair, redis_client):
    origin, edge, prefix = pair
    assert (await _refused(edge.url, "ghost", None))[0] == 4404
    await origin.open("priv", public=False)
    await _registered(redis_client, prefix, "priv")
    code, reason = await _refused(edge.url, "priv", None)
    assert code == 4403 and "token" in reason
    forged = tokens.mint("some-other-secret-xyz", "priv", "@m:x", "host", 600)
    assert await _refused(edge.url, "priv", forged) == (4401, "token refused: bad signature")
    async with edge.session.get(f"{edge.url}/spaces/ghost/live.ogg") as resp:
        assert resp.status == 404


async def test_edge_refuses_audio_and_has_no_control_api(pair, redis_client):
    origin, edge, prefix = pair
    await origin.open("s1", roles={"@alice:x": "host"})
    await _registered(redis_client, prefix, "s1")
    token = tokens.mint(SECRET, "s1", "@alice:x", "host", 600)
    async with SpaceClient(edge.url, "s1", token) as alice:
        hello = await alice.wait_type("hello")
        assert hello["role"] == "host" and hello["may_speak"] is False
        await alice.speak(sine(440, 0.1), realtime=False)
        err = await alice.wait_type("error")
        assert err["code"] == "not_allowed" and "origin" in err["reason"]
    assert origin.stage("s1").mixer.speakers == []
    async with edge.session.post(f"{edge.url}/control/v1/spaces/s2",
                                 json={"title": "x", "public": True},
                                 headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 403
        assert "edge bridge" in (await resp.json())["error"]
    assert await redis_client.hget(registry_key(prefix), "s2") is None


async def test_closing_on_origin_ends_edge_listeners(pair, redis_client):
    origin, edge, prefix = pair
    await origin.open("s1")
    await _registered(redis_client, prefix, "s1")
    async with SpaceClient(edge.url, "s1") as listener:
        await listener.wait_type("hello")
        await asyncio.wait_for(edge.app[EDGE].spaces["s1"].subscribed.wait(), 5)
        status, body = await origin.control("DELETE", "/spaces/s1")
        assert status == 200 and body["open"] is False
        assert await listener.wait_closed() == 4410
        assert listener.close_reason == "space ended"
        assert (await listener.wait_type("closing"))["reason"] == "space ended"
    await _registered(redis_client, prefix, "s1", present=False)
    assert (await _refused(edge.url, "s1", None))[0] == 4404


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_origin_serves_its_listeners_with_redis_unreachable(tmp_path, caplog):
    origin = await run_bridge(make_settings(
        tmp_path, redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        redis_prefix=f"chorus-test-{uuid.uuid4().hex}:"))
    try:
        await origin.open("s1", roles={"@alice:x": "host"})
        token = origin.token("s1", "@alice:x", "host")
        async with SpaceClient(origin.url, "s1") as listener, \
                SpaceClient(origin.url, "s1", token) as alice:
            await listener.wait_type("hello")
            await alice.wait_type("hello")
            await alice.speak(sine(440, 1.0))
            await _until(lambda: rms(listener.heard()[-48000:]) > 1000)
        publisher = origin.app[PUBLISHER]
        await _until(lambda: publisher.dropped > 0)
        assert publisher.published == 0
        warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(warnings) == 1 and "s1" in warnings[0].getMessage()
    finally:
        await origin.session.close()
        await origin.runner.cleanup()


def test_edge_role_needs_redis_and_role_is_checked():
    with pytest.raises(SettingsError, match="redis_url"):
        BridgeSettings(shared_secret=SECRET, role="edge")
    with pytest.raises(SettingsError, match="bridge.role"):
        BridgeSettings(shared_secret=SECRET, role="relay", redis_url=REDIS_URL)
