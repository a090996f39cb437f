"""Edges on Redis: an origin publishes each live space on a real Redis (the session's: tests/conftest.py);
edges serve its listeners. A listener on an edge hears a speaker on the origin; a revoke
silences the speaker on every edge right after the edge has the roles; hands and
reactions taken on an edge reach the origin; Redis out of reach never costs the origin's
own listeners anything, and everything comes back by itself. The feed's format and the
choice of an edge as pure logic. Every wait is bounded; every process is stopped in a
finally."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis.asyncio as aioredis

from bridge import feed, redis_link, wire
from bridge.app import FEED, INSTANCE, METRICS_PORT, STAGES
from bridge.client import SpaceClient
from bridge.settings import BridgeSettings, SettingsError
from tests.support.bridge_process import BridgeProcess
from tests.support.prometheus import scrape, value
from tests.support.tcp_proxy import TcpProxy

from .conftest import SECRET, make_settings, rms, run_bridge, sine
from .test_live_ogg import Stream
from .test_web_page import CHROMIUM, browser  # noqa: F401 - the fixture

#: the session's Redis (tests/conftest.py: configured, running, or started for the tests)
REDIS = ""


@pytest.fixture(autouse=True)
def _session_redis(redis_url: str) -> None:
    global REDIS
    REDIS = redis_url

# -- the feed's format (pure) ------------------------------------------------------


def test_every_kind_of_space_message_reads_back_as_it_was_sent() -> None:
    state = feed.SpaceState("Gardens", True, {"@a:x": "host"}, frozenset({"@troll:x"}),
                            captions=True, recording=False, origin_url="https://origin.example",
                            people={"@a:x": {"name": "Ann", "avatar": None}},
                            info={"host": "@a:x", "room_url": None, "tips": []})
    assert feed.parse_space_message(state.encode()) == state
    answer = feed.to_user("@b:x", {"type": "answer", "answer": "declined"})
    assert feed.parse_space_message(answer) == feed.ToUser("@b:x", {"type": "answer", "answer": "declined"})
    frame = wire.pack(7, 7 * 960, b"\xfc\x01\x02")
    audio = feed.parse_space_message(frame)
    assert isinstance(audio, feed.Audio) and audio.frame.seq == 7 and audio.data == frame
    assert feed.parse_space_message(feed.broadcast('{"type":"levels"}')) == \
        feed.Broadcast('{"type":"levels"}')
    assert feed.parse_space_message(feed.ended("the host ended it")) == feed.Ended("the host ended it", 4410)
    assert feed.parse_space_message(feed.ended("bridge shutting down", 1001)) == \
        feed.Ended("bridge shutting down", 1001)
    assert feed.parse_space_message(feed.ended("odd", 4403)).code == 4410  # only the two codes
    hand = feed.Forwarded("s", "hand", "@b:x", raised=True, edge_id="e1")
    assert feed.parse_forwarded(hand.encode()) == hand
    reaction = feed.Forwarded("s", "reaction", None, key="👏")
    assert feed.parse_forwarded(reaction.encode()) == reaction


@pytest.mark.parametrize(("data", "says"), [
    (b"", "empty message"),
    (b"Z{}", "unknown message kind"),
    (b"\x11\x00", "audio frame: frame too short"),
    (b"S[1]", "state: expected a JSON object"),
    (b'S{"title":1,"public":true}', "string 'title'"),
    (b'S{"title":"t","public":true,"roles":{"@a:x":5}}', "'roles' must map strings"),
    (b'S{"title":"t","public":true,"removed":"@a:x"}', "'removed' must be a list"),
    (b"J\xff\xfe", "not UTF-8"),
    (b'U{"user_id":"@a:x","message":"hi"}', "needs a 'user_id' and a 'message'"),
    (b'U{"message":{"type":"answer"}}', "needs a 'user_id' and a 'message'"),
])
def test_a_bad_space_message_is_refused_with_the_reason(data, says) -> None:
    with pytest.raises(feed.FeedError) as caught:
        feed.parse_space_message(data)
    assert says in str(caught.value)


@pytest.mark.parametrize(("data", "says"), [
    (b'{"type":"hand","space_id":"s","user_id":"@a:x"}', "boolean 'raised'"),
    (b'{"type":"hand","space_id":"s","user_id":null,"raised":true}', "needs a 'user_id'"),
    (b'{"type":"reaction","space_id":"s","user_id":null,"key":""}', "short printable 'key'"),
    (b'{"type":"speak","space_id":"s","user_id":null}', "unknown forwarded message type"),
    (b'{"type":"hand","user_id":"@a:x","raised":true}', "needs a 'space_id'"),
    (b'{"type":"reaction","space_id":"s","user_id":null,"key":"' + b"x" * 2000 + b'"}', "too large"),
])
def test_a_bad_forwarded_message_is_refused(data, says) -> None:
    with pytest.raises(feed.FeedError) as caught:
        feed.parse_forwarded(data)
    assert says in str(caught.value)


@pytest.mark.parametrize("data", [
    b'{"id":"e1","url":"ftp://x","listeners":1}',
    b'{"id":"e1","url":"http://x; script-src *","listeners":1}',  # the page's CSP could not carry it
    b'{"id":"e1","url":"http://user@x","listeners":1}',
    b'{"id":"","url":"http://x","listeners":1}',
    b'{"id":"e1","url":"http://x","listeners":-1}',
    b'{"id":"e1","url":"http://x","listeners":1,"spaces":{"s":true}}',
])
def test_a_bad_heartbeat_is_refused(data) -> None:
    with pytest.raises(feed.FeedError):
        feed.parse_heartbeat(data)


def test_listeners_are_handed_to_the_least_loaded_edge_and_a_burst_spreads() -> None:
    book = feed.EdgeBook()
    assert book.hand_out() is None and book.urls() == []
    book.update([feed.Heartbeat("a", "http://a", 10, {"s": 10}),
                 feed.Heartbeat("b", "http://b", 7, {"s": 5, "t": 2})])
    assert book.urls() == ["http://b", "http://a"]
    assert book.listeners_of("s") == 15 and book.listeners_of("nope") == 0
    handed = [book.hand_out() for _ in range(5)]
    # b takes three (7 -> 10), then they alternate from a tie (a before b by id)
    assert handed == ["http://b", "http://b", "http://b", "http://a", "http://b"]
    assert book.urls(exclude="b") == ["http://a"]
    book.update([feed.Heartbeat("a", "http://a", 3)])  # b's heartbeat ran out
    assert book.urls() == ["http://a"]


def test_channel_patterns_escape_the_prefix() -> None:
    assert feed.space_pattern("a*b") == "a\\*b:space:*"
    assert feed.space_of("p", feed.space_channel("p", "x:y")) == "x:y"
    with pytest.raises(feed.FeedError):
        feed.space_of("p", "q:space:x")


def test_the_settings_say_what_an_edge_needs() -> None:
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, role="edge")
    assert str(caught.value).startswith('bridge.role: "edge" needs bridge.redis_url')
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, role="relay")
    assert "bridge.role" in str(caught.value) and '"origin", "edge"' in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, redis_prefix="a b")
    assert "bridge.redis_prefix" in str(caught.value)
    edge = BridgeSettings(shared_secret=SECRET, role="edge", redis_url="redis://:hunter2@cache:6379/0")
    assert "hunter2" not in repr(edge) and "role='edge'" in repr(edge)


# -- an origin and edges on a real Redis ---------------------------------------------


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def _stop(*running) -> None:
    for r in running:
        if r is not None:
            with contextlib.suppress(Exception):
                await r.session.close()
            await r.runner.cleanup()


async def _until(predicate, what: str, seconds: float = 15.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _origin_and_edges(tmp_path, prefix: str, edges: int = 1, origin_redis: str | None = None,
                            **extra: Any):
    origin = await run_bridge(make_settings(tmp_path / "origin", public_url="", redis_url=origin_redis or REDIS,
                                            redis_prefix=prefix, ogg_page_ms=20, **extra))
    started = []
    try:
        for i in range(edges):
            started.append(await run_bridge(make_settings(
                tmp_path / f"edge{i}", public_url="", role="edge", redis_url=REDIS,
                redis_prefix=prefix, ogg_page_ms=20, **extra)))
    except BaseException:
        await _stop(origin, *started)
        raise
    return origin, started


def _feed(running):
    """The bridge's Redis feed: an OriginFeed on an origin, an EdgeFeed on an edge."""
    return running.app[FEED]


async def _open_with_edge(origin, edge, space_id: str, roles: dict[str, str]) -> None:
    """Open a space on the origin; back once the edge serves it and the origin counts on the edge."""
    await origin.open(space_id, roles=roles)
    await _served(edge, space_id)
    await _until(lambda: _feed(origin).urls() == [edge.url], "the origin to see the edge")


async def _served(edge, space_id: str) -> None:
    await _until(lambda: space_id in _stages(edge), f"the edge to serve {space_id}")


def _stages(running) -> dict:
    return running.app[STAGES]


def _tone_peak(pcm: np.ndarray) -> int:
    spectrum = np.abs(np.fft.rfft(pcm[:48000].astype(np.float64)))
    return int(np.argmax(spectrum))


async def test_a_listener_on_an_edge_hears_the_origin_and_its_hand_and_reaction_reach_it(tmp_path) -> None:
    prefix = _prefix()
    origin, (edge,) = await _origin_and_edges(tmp_path, prefix, metrics_listen="127.0.0.1:0")
    try:
        await _open_with_edge(origin, edge, "garden", {"@host:x": "host", "@bee:x": "listener"})
        token = edge.token("garden", "@bee:x")
        async with SpaceClient(origin.url, "garden", origin.token("garden", "@host:x", "host")) as host, \
                SpaceClient(edge.url, "garden", token) as bee:
            hello = await bee.wait_type("hello")
            assert hello["title"] == "Test garden" and hello["edge"] is True
            assert hello["origin_url"] == origin.url and hello["role"] == "listener"
            assert hello["may_speak"] is False and hello["edges"] == []
            await host.wait_type("hello")
            await host.speak(sine(440, 2.0))
            await bee.wait_frames(75)
            heard = bee.heard()
            loud = max(range(0, len(heard) - 48000, 4800), key=lambda s: rms(heard[s:s + 48000]))
            assert abs(_tone_peak(heard[loud:]) - 440) <= 2
            # the edge plays through live.ogg too
            ogg = await Stream(edge.url, "garden").start()
            try:
                await ogg.wait_pages(5)
            finally:
                await ogg.close()
            # a hand on the edge: the origin has it, tells the bot, names it to everyone
            await bee.raise_hand()
            await _until(lambda: "@bee:x" in origin.stage("garden").hands, "the hand on the origin")
            await host.wait_type("participants", where=lambda m: any(
                p["user_id"] == "@bee:x" and p["hand_raised"] for p in m["participants"]))
            await bee.wait_type("participants", where=lambda m: any(
                p["user_id"] == "@bee:x" and p["hand_raised"] for p in m["participants"]))
            # a reaction on the edge reaches the origin's clients and the edge's alike
            await bee.react("👏")
            await host.wait_type("activity", where=lambda m: m.get("reactions", {}).get("👏"))
            await bee.wait_type("activity", where=lambda m: m.get("reactions", {}).get("👏"))
            assert origin.stage("garden").counters["reactions_accepted"] == 1
            # an edge takes no audio, and says where to speak
            await bee.send_frame(sine(440, 0.02))
            error = await bee.wait_type("error")
            assert error["code"] == "not_allowed" and origin.url in error["reason"]
            # listener counts: the origin counts the edge's listeners from its heartbeat
            await _until(lambda: origin.stage("garden").edge_listeners == 1, "the edge's count")
            # and each bridge's /metrics says so: the edge its own listener and its link to Redis
            at_edge, at_origin = await scrape(edge.app[METRICS_PORT]), await scrape(origin.app[METRICS_PORT])
            assert value(at_edge, "chorus_bridge_info", role="edge", instance_id=edge.app[INSTANCE]) == 1
            assert value(at_edge, "chorus_bridge_listeners", space_id="garden") == 1
            assert value(at_edge, "chorus_bridge_redis_up") == 1
            assert value(at_edge, "chorus_bridge_frames_refused_total") == 1  # the frame the edge would not take
            assert value(at_origin, "chorus_bridge_edge_listeners", space_id="garden") == 1
            assert value(at_origin, "chorus_bridge_listeners", space_id="garden") == 1  # the host
            assert value(at_origin, "chorus_bridge_edges") == 1
            # an edge has no control API
            status, body = await edge.control("POST", "/spaces/other", {"title": "x", "public": True})
            assert status == 404 and "edge" in body["error"]
            # a lowered hand goes the same way; one who leaves the edge takes the hand along
            await bee.raise_hand()  # already up: nothing changes
        await _until(lambda: "@bee:x" not in origin.stage("garden").hands, "the hand to go with its owner")
        # the space ends on the origin: the edge ends it for its listeners (4410)
        async with SpaceClient(edge.url, "garden") as anonymous:
            await anonymous.wait_type("hello")
            status, _ = await origin.control("DELETE", "/spaces/garden")
            assert status == 200
            assert await anonymous.wait_closed(10) == 4410
        assert "garden" not in _stages(edge)
    finally:
        await _stop(edge, origin)


async def test_a_listener_on_an_edge_sees_the_faces_and_hears_the_hosts_no(tmp_path) -> None:
    """The page's facts (names, avatars, host, tip jar) reach an edge's listeners, in their
    hello and as they change; the host's no to a hand raised on the edge reaches that
    listener there, and the hand may go up again."""
    prefix = _prefix()
    origin, (edge,) = await _origin_and_edges(tmp_path, prefix)
    try:
        await _open_with_edge(origin, edge, "faces", {"@host:x": "host", "@bee:x": "listener"})
        await origin.control("POST", "/spaces/faces", {"title": "Test faces", "public": True, "host": "@host:x",
                                                       "tips": [{"label": "Patreon", "url": "https://patreon.com/h"}]})
        await origin.control("PUT", "/spaces/faces/people", {"people": {"@host:x": {"name": "Hosta"}}})
        await _until(lambda: _stages(edge)["faces"].info.host == "@host:x"
                     and _stages(edge)["faces"].stage_people(), "the edge to have the page's facts")
        async with SpaceClient(edge.url, "faces", edge.token("faces", "@bee:x")) as bee:
            hello = await bee.wait_type("hello")
            assert hello["edge"] is True
            assert hello["people"] == {"@host:x": {"name": "Hosta", "avatar": None}}
            assert hello["info"]["tips"] == [{"label": "Patreon", "url": "https://patreon.com/h"}]
            await origin.control("PUT", "/spaces/faces/people", {"people": {"@host:x": {"name": "Hosta B"}}})
            await bee.wait_type("people", where=lambda m: m["people"]["@host:x"]["name"] == "Hosta B")
            await bee.raise_hand()
            await _until(lambda: "@bee:x" in origin.stage("faces").hands, "the hand on the origin")
            status, _ = await origin.control("POST", "/spaces/faces/answer",
                                             {"user_id": "@bee:x", "answer": "declined"})
            assert status == 200
            assert (await bee.wait_type("answer", timeout=10))["answer"] == "declined"
            assert "@bee:x" not in origin.stage("faces").hands
            assert "@bee:x" not in _stages(edge)["faces"].hands
            await bee.raise_hand()  # up again after a no: the edge takes it, the origin has it
            await _until(lambda: "@bee:x" in origin.stage("faces").hands, "the hand raised again")
    finally:
        await _stop(edge, origin)


async def test_a_revoke_silences_the_speaker_on_every_edge_right_after_the_roles(tmp_path) -> None:
    prefix = _prefix()
    origin, edges = await _origin_and_edges(tmp_path, prefix, edges=2)
    try:
        await origin.open("stage", roles={"@host:x": "host", "@sp:x": "speaker"})
        for e in edges:
            await _served(e, "stage")
        listeners = [SpaceClient(e.url, "stage", keep_audio=False) for e in edges]
        heard: list[list[tuple[float, int]]] = [[], []]

        def recorder(into: list, client: SpaceClient):
            # each frame with how many messages had come before it (roles included)
            return lambda seq, pcm, t: into.append((rms(pcm), len(client.messages)))

        for into, client in zip(heard, listeners, strict=True):
            client.on_frame = recorder(into, client)
            await client.connect()
        try:
            async with SpaceClient(origin.url, "stage", origin.token("stage", "@sp:x", "speaker")) as sp:
                await sp.wait_type("hello")
                speaking = asyncio.create_task(sp.speak(sine(440, 6.0)))
                try:
                    for i in range(2):
                        await _until(lambda i=i: sum(1 for level, _ in heard[i][-10:] if level > 1000) >= 10,
                                     "the speaker to be heard on every edge")
                    status, body = await origin.control("PUT", "/spaces/stage/roles",
                                                        {"roles": {"@host:x": "host"}})
                    assert status == 200, body
                    for client in listeners:
                        await client.wait_type("roles", where=lambda m: "@sp:x" not in m["roles"], timeout=10)
                    marks = []
                    for client in listeners:
                        marks.append(next(n for n, m in enumerate(client.messages, 1)
                                          if m.get("type") == "roles" and "@sp:x" not in m["roles"]))
                    for i in range(2):
                        await _until(lambda i=i: sum(1 for _, n in heard[i] if n >= marks[i]) >= 10,
                                     "frames after the roles")
                finally:
                    speaking.cancel()
                    await asyncio.gather(speaking, return_exceptions=True)
        finally:
            for client in listeners:
                await client.close()
        for i in range(2):
            before = [level for level, n in heard[i] if n < marks[i]]
            after = [level for level, n in heard[i] if n >= marks[i]]
            tone = min(before[-5:])
            assert tone > 1000  # the tone, up to the roles
            # the first frame after them still holds the codec's 6.5 ms look-ahead of the
            # tone; from the next on, silence (what is left is the decoder's fading tail,
            # more than 34 dB down)
            assert max(after[1:10]) < 0.02 * tone, (tone, after[:10])
    finally:
        await _stop(*edges, origin)


async def test_redis_out_of_reach_costs_the_origin_nothing_and_the_edges_come_back(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(redis_link, "RETRY_MAX_SECONDS", 1.0)
    monkeypatch.setattr(feed, "STALE_SECONDS", 2.0)
    where = urlsplit(REDIS)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 6379).start()
    prefix = _prefix()
    origin = edge = None
    try:
        origin, (edge,) = await _origin_and_edges(tmp_path, prefix,
                                                  origin_redis=REDIS.replace(where.netloc.rpartition("@")[2],
                                                                             f"127.0.0.1:{proxy.port}"))
        await origin.open("steady")
        await _served(edge, "steady")
        own = SpaceClient(origin.url, "steady", keep_audio=False)
        far = SpaceClient(edge.url, "steady", keep_audio=False)
        await own.connect()
        await far.connect()
        try:
            await own.wait_type("hello")
            await far.wait_frames(10)
            proxy.cut()
            await _until(lambda: _feed(origin).status()["state"] == "down", "the origin to see Redis gone")
            frames = own.frames_received
            await own.wait_frames(frames + 100, timeout=15)  # the origin's listener: nothing lost
            assert not own.closed.is_set()
            # the edge hears nothing more of the space: it closes it, its pages go elsewhere
            assert await far.wait_closed(15) == 1001
            assert "lost the space's origin" in far.close_reason
            status = _feed(origin).status()
            assert status["last_error"] and status["downs"] == 1
            proxy.restore()
            await _until(lambda: _feed(origin).status()["state"] == "up", "the origin's link back")
            await _served(edge, "steady")
            async with SpaceClient(edge.url, "steady", keep_audio=False) as again:
                await again.wait_frames(10)
            assert not own.closed.is_set()
        finally:
            await own.close()
            await far.close()
    finally:
        await _stop(edge, origin)
        proxy.close()


async def test_a_listener_that_connects_to_an_edge_as_it_starts_waits_for_the_space(tmp_path) -> None:
    """An edge that has just started learns the spaces within a second: a listener who
    arrives first is held a moment, not refused."""
    prefix = _prefix()
    origin = await run_bridge(make_settings(tmp_path / "o", public_url="", redis_url=REDIS,
                                            redis_prefix=prefix))
    edge = None
    try:
        await origin.open("early")
        edge = await run_bridge(make_settings(tmp_path / "e", public_url="", role="edge",
                                              redis_url=REDIS, redis_prefix=prefix))
        async with SpaceClient(edge.url, "early") as client:
            assert (await client.wait_type("hello"))["title"] == "Test early"
        async with SpaceClient(edge.url, "nothing-here") as client:
            assert await client.wait_closed(10) == 4404
    finally:
        await _stop(edge, origin)


async def test_an_edge_passes_over_garbage_on_its_channels(tmp_path) -> None:
    prefix = _prefix()
    origin, (edge,) = await _origin_and_edges(tmp_path, prefix)
    writer = aioredis.Redis.from_url(REDIS)
    try:
        await origin.open("clean")
        await _served(edge, "clean")
        async with SpaceClient(edge.url, "clean", keep_audio=False) as client:
            await client.wait_frames(5)
            await writer.publish(feed.space_channel(prefix, "clean"), b"\x11junk")
            await writer.publish(feed.to_origin_channel(prefix), b"not json")
            await _until(lambda: _feed(edge).refused >= 1, "the edge to refuse it")
            await _until(lambda: _feed(origin).status()["refused"] >= 1, "the origin to refuse it")
            frames = client.frames_received
            await client.wait_frames(frames + 25)
    finally:
        await writer.aclose()
        await _stop(edge, origin)


async def _edges_seen(session, url: str, count: int) -> bool:
    async with session.get(f"{url}/healthz") as resp:
        return (await resp.json())["edges"] == count


def _edge_config(prefix: str) -> str:
    """The lines of config.toml that make a `python -m bridge` process an edge on this test's feed."""
    return f'role = "edge"\nredis_url = "{REDIS}"\nredis_prefix = "{prefix}"\n'


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_a_page_is_handed_an_edge_and_moves_on_when_that_edge_is_killed(tmp_path, browser) -> None:  # noqa: F811
    """The page opened on the origin listens on the edge the origin names; that edge is
    killed with SIGKILL: the page goes on to the other edge by itself."""
    prefix = _prefix()
    origin = await run_bridge(make_settings(tmp_path / "origin", public_url="", redis_url=REDIS,
                                            redis_prefix=prefix))
    edges = [BridgeProcess(tmp_path / f"edge{i}", SECRET, extra_config=_edge_config(prefix)) for i in range(2)]
    try:
        for e in edges:
            await e.start()
        await origin.open("hall")
        urls = sorted(e.url for e in edges)
        await _until(lambda: sorted(_feed(origin).urls()) == urls, "the origin to see both edges")
        async with asyncio.timeout(20):  # and each edge the other (what its pages fall back on)
            while not all([await _edges_seen(origin.session, u, 2) for u in urls]):
                await asyncio.sleep(0.1)
        await browser.call("Page.navigate", url=f"{origin.url}/spaces/hall")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected' && window.chorus.onEdge")
        first = await browser.js("window.chorus.base")
        assert first in urls and await browser.js("window.chorus.moves") == 1
        frames = await browser.js("window.chorus.stats.framesIn")
        await browser.wait_js(f"window.chorus.stats.framesIn > {frames + 25}")
        victim = next(e for e in edges if e.url == first)
        survivor = next(u for u in urls if u != first)
        await victim.kill()
        await browser.wait_js(f"window.chorus.conn === 'connected' && window.chorus.base === '{survivor}'",
                              timeout=30)
        frames = await browser.js("window.chorus.stats.framesIn")
        await browser.wait_js(f"window.chorus.stats.framesIn > {frames + 25}")
        assert await browser.js("window.chorus.onEdge") is True
    finally:
        for e in edges:
            await e.kill()
        await _stop(origin)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_a_page_handed_an_edge_its_policy_does_not_allow_stays_on_the_origin(tmp_path, browser) -> None:  # noqa: F811
    """A page loaded before its edge came up: its Content-Security-Policy does not list the
    edge, the browser refuses the connection (an error, no close), and the page takes the
    edge as lost and listens on the origin instead of hanging."""
    prefix = _prefix()
    origin = await run_bridge(make_settings(tmp_path / "origin", public_url="", redis_url=REDIS,
                                            redis_prefix=prefix))
    edge = BridgeProcess(tmp_path / "edge", SECRET, extra_config=_edge_config(prefix))
    try:
        await origin.open("late")
        await browser.call("Page.navigate", url=f"{origin.url}/spaces/late")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected' && !window.chorus.onEdge")
        await edge.start()
        await _until(lambda: _feed(origin).urls() == [edge.url], "the origin to see the edge")
        await browser.js("window.chorus.ws.close()")  # the page connects again: now it is handed the edge
        await browser.wait_js(f"window.chorus.failedEdges.has('{edge.url}')", timeout=30)
        await browser.wait_js("window.chorus.conn === 'connected' && !window.chorus.onEdge", timeout=30)
        frames = await browser.js("window.chorus.stats.framesIn")
        await browser.wait_js(f"window.chorus.stats.framesIn > {frames + 25}")
    finally:
        await edge.kill()
        await _stop(origin)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_a_listener_given_the_mic_on_an_edge_goes_back_to_the_origin_to_speak(tmp_path, browser) -> None:  # noqa: F811
    prefix = _prefix()
    origin, (edge,) = await _origin_and_edges(tmp_path, prefix)
    try:
        await _open_with_edge(origin, edge, "talk", {"@host:x": "host", "@me:x": "listener"})
        token = origin.token("talk", "@me:x")
        await browser.call("Page.navigate", url=f"{origin.url}/spaces/talk?token={token}")
        await browser.wait_js("window.chorus && window.chorus.conn === 'connected' && window.chorus.onEdge")
        assert await browser.js("window.chorus.base") == edge.url
        await _until(lambda: any(c.user_id == "@me:x" for c in edge.stage("talk").clients.values()),
                     "the page on the edge")
        status, body = await origin.control("PUT", "/spaces/talk/roles",
                                            {"roles": {"@host:x": "host", "@me:x": "speaker"}})
        assert status == 200, body
        await browser.wait_js(f"window.chorus.conn === 'connected' && window.chorus.base === '{origin.url}'"
                              " && window.chorus.maySpeak && !window.chorus.onEdge")
        await _until(lambda: any(c.user_id == "@me:x" for c in origin.stage("talk").clients.values()),
                     "the page on the origin")
        assert await browser.js("document.getElementById('mic').hidden") is False
    finally:
        await _stop(edge, origin)


async def test_an_edge_going_away_lowers_its_hands_and_an_origin_going_away_is_not_the_end(tmp_path) -> None:
    prefix = _prefix()
    origin, edges = await _origin_and_edges(tmp_path, prefix, edges=2)
    first, second = edges
    try:
        await origin.open("hall", roles={"@host:x": "host"})
        for e in edges:
            await _served(e, "hall")
        async with SpaceClient(first.url, "hall", first.token("hall", "@bee:x")) as bee:
            await bee.wait_type("hello")
            await bee.raise_hand()
            await _until(lambda: "@bee:x" in origin.stage("hall").hands, "the hand on the origin")
            await _stop(first)  # the edge shuts down with the hand still up
            assert await bee.wait_closed(10) == 1001
        await _until(lambda: "@bee:x" not in origin.stage("hall").hands, "the hand to come down")
        async with SpaceClient(second.url, "hall") as listener:
            await listener.wait_type("hello")
            await _stop(origin)  # a restart of the origin is not the end of the space: 1001
            assert await listener.wait_closed(10) == 1001
            assert "origin" in listener.close_reason  # the page does not hold it against the edge
    finally:
        await _stop(second, first, origin)


def test_hands_raised_on_an_edge_come_down_when_that_edge_is_no_longer_alive(tmp_path) -> None:
    from bridge.stage import Stage
    events: list[dict] = []
    stage = Stage("s", "t", public=True, record=False, captions=False,
                  settings=make_settings(tmp_path), emit=events.append)
    try:
        stage.remote_hand("@a:x", True, "edge-1")
        stage.remote_hand("@b:x", True, "edge-2")
        stage.edges_alive({"edge-2"})
        assert stage.hands == {"@b:x"}
        assert [e["type"] for e in events] == ["hand_raised", "hand_raised", "hand_lowered"]
        assert events[-1]["user_id"] == "@a:x"
    finally:
        stage.encoder.close()
