"""Floods and strangers' input on the client WebSocket (issue 13, finding 3 and siblings).

Reactions and hand changes are rate-limited and reach listeners in batches (one
``activity`` message per flush); control messages never fill a listener's audio queue;
a client that never reads is closed; no message, however odd, raises out of the stage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import activity, wire
from bridge.activity import ActivityBatch, ActivityLimits, Budget, TokenBucket
from bridge.client import SpaceClient
from bridge.connection import CLOSE_TOO_SLOW, Client
from bridge.outbox import CONTROL_LIMIT, Outbox
from bridge.stage import ACTIVITY_EVERY_TICKS, Stage

from .conftest import make_settings, raw_ws_that_never_reads
from .tap import Tap, tapped

LISTENERS = 5


def activity_of(client: SpaceClient) -> list[dict]:
    return [m for m in client.messages if m["type"] == "activity"]


def reactions_seen(client: SpaceClient) -> int:
    return sum(sum(m["reactions"].values()) for m in activity_of(client))


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (polling the event loop) until ``predicate()`` holds, at most ``timeout`` s."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def flush_own_messages(client: SpaceClient, tag: str) -> None:
    """The bridge handles a connection's messages in order: once the pong for ``tag``
    is back, everything this client sent before it has been handled."""
    await client.send_json({"type": "ping", "id": tag})
    await client.wait_type("pong", where=lambda m: m["id"] == tag, timeout=10)


# -- the finding itself, through a real bridge ------------------------------------------


def _no_refill(monkeypatch) -> None:
    """Buckets keep their bursts but refill negligibly: what is accepted no longer depends
    on how fast the test machine runs."""
    monkeypatch.setattr(activity, "REACTION_RATE", 1e-9)
    monkeypatch.setattr(activity, "HAND_RATE", 1e-9)
    monkeypatch.setattr(activity, "ANON_REACTION_RATE", 1e-9)


async def test_reaction_and_hand_floods_close_no_listener(bridge, monkeypatch):
    """6 anonymous connections x 10 reactions and one signed-in listener's 100 raise/lower
    messages closed every listener before (each became a message in every listener's
    50-frame queue). Now nobody is closed, everyone keeps getting audio, and the
    listeners get the accepted reactions as counts."""
    _no_refill(monkeypatch)
    await bridge.open("flood", roles={"@h:x": "host"})
    stage = bridge.stage("flood")
    listeners = [SpaceClient(bridge.url, "flood") for _ in range(LISTENERS)]
    flooders = [SpaceClient(bridge.url, "flood") for _ in range(6)]
    hands = SpaceClient(bridge.url, "flood", bridge.token("flood", "@hand:x"))
    everyone = [*listeners, *flooders, hands]
    try:
        for c in everyone:
            await c.connect()
        for c in everyone:
            await c.wait_type("hello")
        before = [c.frames_received for c in listeners]

        async def react(c: SpaceClient, i: int) -> None:
            for _ in range(10):
                await c.react("👏")
            await flush_own_messages(c, f"reacted-{i}")

        async def wave() -> None:
            for i in range(100):
                await hands.send_json({"type": "lower_hand" if i % 2 else "raise_hand"})
            await flush_own_messages(hands, "waved")

        await asyncio.gather(*(react(c, i) for i, c in enumerate(flooders)), wave())

        counters = stage.counters
        accepted = counters["reactions_accepted"]
        assert accepted + counters["reactions_refused"] == 60
        assert accepted == activity.ANON_REACTION_BURST  # anonymous ones share a stage budget
        assert counters["hands_accepted"] == activity.HAND_BURST
        assert counters["hands_refused"] > 0
        # refusals went to the senders, and to nobody else
        assert any(m["type"] == "error" and m["code"] == "rate_limited"
                   for c in flooders for m in c.messages)
        assert any(m["type"] == "error" and m["code"] == "rate_limited" for m in hands.messages)
        assert not any(m["type"] == "error" for c in listeners for m in c.messages)
        # every listener sees exactly the accepted reactions, as counts
        for c in listeners:
            await until(lambda c=c: reactions_seen(c) == accepted, what="the reaction counts")
        # ...and is still connected, still hearing the space after the flood
        for c, n in zip(listeners, before, strict=True):
            await c.wait_frames(c.frames_received + 25)
            assert c.frames_received > n + 25 and c.close_code is None
        assert len(stage.clients) == len(everyone)
    finally:
        await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)


async def test_a_reaction_burst_arrives_as_counts_in_few_messages(bridge):
    await bridge.open("burst", roles={"@h:x": "host"})
    stage = bridge.stage("burst")
    users = [f"@u{i}:x" for i in range(4)]
    senders = [SpaceClient(bridge.url, "burst", bridge.token("burst", u)) for u in users]
    listener = SpaceClient(bridge.url, "burst")
    try:
        for c in [*senders, listener]:
            await c.connect()
            await c.wait_type("hello")
        first_tick = stage.tick_count
        keys = ["👏", "🔥"]

        async def burst(c: SpaceClient, i: int) -> None:
            for n in range(10):  # within each user's burst: all accepted
                await c.react(keys[n % 2])
            await flush_own_messages(c, f"burst-{i}")

        await asyncio.gather(*(burst(c, i) for i, c in enumerate(senders)))
        assert stage.counters["reactions_accepted"] == 40
        await until(lambda: reactions_seen(listener) == 40, what="40 reactions at the listener")
        batches = activity_of(listener)
        totals: dict[str, int] = {}
        for m in batches:
            for key, n in m["reactions"].items():
                totals[key] = totals.get(key, 0) + n
        assert totals == {"👏": 20, "🔥": 20}
        # one message per flush at most, whatever the number of clicks
        flushes = (stage.tick_count - first_tick) // ACTIVITY_EVERY_TICKS + 1
        assert len(batches) <= flushes
        assert len(batches) < 40
    finally:
        await asyncio.gather(*(c.close() for c in [*senders, listener]), return_exceptions=True)


async def test_one_user_shares_one_budget_across_connections(bridge, monkeypatch):
    """Opening more sockets buys no extra reactions or hand changes. (The refill rate is
    made negligible so that what is accepted does not depend on how fast the test runs.)"""
    _no_refill(monkeypatch)
    await bridge.open("budget", roles={"@h:x": "host"})
    stage = bridge.stage("budget")
    tok = bridge.token("budget", "@twice:x")
    a, b = SpaceClient(bridge.url, "budget", tok), SpaceClient(bridge.url, "budget", tok)
    other = SpaceClient(bridge.url, "budget", bridge.token("budget", "@other:x"))
    anons = [SpaceClient(bridge.url, "budget") for _ in range(3)]
    everyone = [a, b, other, *anons]
    try:
        for c in everyone:
            await c.connect()
            await c.wait_type("hello")
        for _ in range(activity.REACTION_BURST):
            await a.react("❤️")
        await flush_own_messages(a, "a")
        assert stage.counters["reactions_accepted"] == activity.REACTION_BURST
        for _ in range(5):
            await b.react("❤️")  # a fresh connection, but the same user: nothing left
        await flush_own_messages(b, "b")
        assert stage.counters["reactions_accepted"] == activity.REACTION_BURST
        assert stage.counters["reactions_refused"] == 5
        err = await b.wait_type("error")
        assert err["code"] == "rate_limited" and "slow down" in err["reason"]
        assert not any(m["type"] == "error" for m in a.messages)
        # another user has a budget of their own
        await other.react("❤️")
        await flush_own_messages(other, "other")
        assert stage.counters["reactions_accepted"] == activity.REACTION_BURST + 1
        # hands: the burst is shared too (raise/lower alternately, on both sockets)
        for i in range(activity.HAND_BURST):
            c = a if i % 2 == 0 else b
            await c.send_json({"type": "raise_hand" if i % 2 == 0 else "lower_hand"})
            await flush_own_messages(c, f"hand-{i}")
        for c in (a, b):  # the budget is spent, from either socket
            await c.raise_hand()
            await flush_own_messages(c, "hand-more")
        assert stage.counters["hands_accepted"] == activity.HAND_BURST
        assert stage.counters["hands_refused"] == 2 and "@twice:x" not in stage.hands
        # anonymous listeners: each has a connection budget, and all share the stage's
        for c in anons:
            for _ in range(activity.REACTION_BURST):
                await c.react("😂")
            await flush_own_messages(c, "anon")
        assert stage.counters["reactions_accepted"] == (
            activity.REACTION_BURST + 1 + activity.ANON_REACTION_BURST)
        err = await anons[-1].wait_type("error")
        assert err["code"] == "rate_limited" and "anonymous" in err["reason"]
    finally:
        await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)


async def test_hostile_messages_get_errors_and_harm_nobody(bridge):
    await bridge.open("odd", roles={"@h:x": "host"})
    stage = bridge.stage("odd")
    async with SpaceClient(bridge.url, "odd") as bystander, \
            SpaceClient(bridge.url, "odd", bridge.token("odd", "@odd:x")) as odd:
        await bystander.wait_type("hello")
        await odd.wait_type("hello")
        deep = "[" * 5000 + "]" * 5000
        for text in ("[" * 1500 + "]" * 1500, deep, '{"type": "reaction", "key": ' + deep + "}", "x" * 15000,
                     "[1, 2", '"just a string"', '{"type": 7}', '{"type": "' + "t" * 3000 + '"}',
                     '{"type": "ping", "id": ' + "9" * 3000 + "}", '{"type": "reaction", "key": ""}',
                     '{"type": "reaction", "key": "\\u0000"}', '{"type": "teleport"}'):
            assert odd.ws is not None
            await odd.ws.send_str(text)
        for data in (b"", b"\x11", b"\x11" + b"\0" * 8 + b"\xff" * 500, os.urandom(2000)):
            await odd.ws.send_bytes(data)
        await flush_own_messages(odd, "after")
        errors = [m for m in odd.messages if m["type"] == "error"]
        assert errors and errors[0]["code"] == "bad_message"
        assert "nested more than" in errors[0]["reason"]
        assert "too large" in errors[1]["reason"]  # the 5,000-deep one (10 KB)
        assert stage.counters["bad_messages"] >= 10
        frames = bystander.frames_received
        await bystander.wait_frames(frames + 10)
        assert bystander.close_code is None and odd.close_code is None
        assert not any(m["type"] == "error" for m in bystander.messages)


# -- clients that never read -------------------------------------------------------------


def _mask_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client→server WebSocket frame."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def _never_reading_socket(url: str, path: str) -> socket.socket:
    """A WebSocket handshake, then nothing is ever read: with a 1 MiB receive buffer the
    live audio (6 KB/s) would take minutes to back up to the bridge."""
    return await raw_ws_that_never_reads(url, path, receive_buffer=1 << 20)


async def _closed_by_peer(sock: socket.socket) -> None:
    """Read (now) until the bridge's end is gone: EOF or a reset."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if not await loop.sock_recv(sock, 1 << 16):
                return
        except (ConnectionResetError, BrokenPipeError):
            return


async def test_clients_that_never_read_are_closed(bridge):
    """Many sockets that never read (one of them sending all the while) are all closed as
    not reading, well before their buffers could fill; a reading listener stays."""
    await bridge.open("deaf", roles={"@h:x": "host"})
    stage = bridge.stage("deaf")
    socks: list[socket.socket] = []
    chatter: asyncio.Task | None = None
    async with SpaceClient(bridge.url, "deaf") as good:
        await good.wait_type("hello")
        try:
            known = set(stage.clients)
            for _ in range(30):
                socks.append(await _never_reading_socket(bridge.url, "/spaces/deaf/ws"))
            await until(lambda: len(stage.clients) == 31, what="31 connections")
            deaf = [c for cid, c in stage.clients.items() if cid not in known]
            loop = asyncio.get_running_loop()

            async def chat() -> None:  # data from the client must not count as liveness
                while True:
                    await loop.sock_sendall(socks[0], _mask_frame(0x1, b'{"type":"ping"}'))
                    await asyncio.sleep(0.2)

            chatter = asyncio.create_task(chat())
            await until(lambda: all(c.id not in stage.clients for c in deaf), timeout=60,
                        what="the deaf clients to be closed")
            assert {c.kicked for c in deaf} == {
                (CLOSE_TOO_SLOW, "too slow: not reading (no answer to ping)")}
            chatter.cancel()
            await asyncio.gather(chatter, return_exceptions=True)
            for s in socks:  # and the bridge really let go of each connection
                await asyncio.wait_for(_closed_by_peer(s), 20)
            frames = good.frames_received
            await good.wait_frames(frames + 10)
            assert good.close_code is None and len(stage.clients) == 1
        finally:
            if chatter is not None:
                chatter.cancel()
                await asyncio.gather(chatter, return_exceptions=True)
            for s in socks:
                s.close()


# -- units: outbox, buckets, batches --------------------------------------------------------


def test_outbox_coalesces_states_and_stays_bounded():
    box = Outbox(limit=4)
    for i in range(100):  # a flood of states costs one slot each
        box.put(b"levels %d" % i, key="levels")
        box.put(b"participants %d" % i, key="participants")
    for i in range(10):  # events: the oldest make room
        box.put(b"error %d" % i)
    assert box.take() == [b"error 6", b"error 7", b"error 8", b"error 9"]
    assert box.dropped == 8 and len(box) == 0
    box.put(b"levels a", key="levels")
    box.put(b"error x")
    box.put(b"levels b", key="levels")  # newest state, in the older one's place
    assert box.take() == [b"levels b", b"error x"]


def test_token_bucket_burst_then_rate():
    bucket = TokenBucket(3, 1.0, stamp=100.0)
    assert [bucket.has_token(100.0) and (bucket.take(100.0) or True) for _ in range(4)] == [
        True, True, True, False]
    assert not bucket.has_token(100.5)
    assert bucket.has_token(101.0)
    assert bucket.is_full(110.0) and bucket.tokens == 3


def test_limits_share_user_budget_and_cap_anonymous():
    limits = ActivityLimits()
    one, two = Budget(), Budget()
    now = 1000.0
    ok = [limits.allow_reaction(one if i % 2 else two, "@u:x", now) for i in range(20)]
    assert ok.count(True) == activity.REACTION_BURST  # two sockets, one user, one budget
    assert limits.allow_reaction(Budget(), "@v:x", now)
    anon = [limits.allow_reaction(Budget(), None, now) for _ in range(50)]
    assert anon.count(True) == activity.ANON_REACTION_BURST
    # a refused action costs nothing: the connection bucket was not spent
    solo = Budget()
    assert not limits.allow_reaction(solo, "@u:x", now)
    assert solo.reactions.tokens == activity.REACTION_BURST
    limits.forget_idle(now + 3600, connected={"@v:x"})
    assert len(limits) == 1


def test_batch_counts_and_latest_hand():
    batch = ActivityBatch()
    assert batch.flush() is None
    for key in ["a", "b", "a", "a"]:
        batch.add_reaction(key)
    batch.set_hand("@u:x", True)
    batch.set_hand("@u:x", False)
    assert batch.flush() == {"type": "activity", "reactions": {"a": 3, "b": 1},
                             "hands": {"@u:x": False}}
    assert batch.flush() is None
    for i in range(activity.MAX_KEYS_PER_BATCH):
        batch.add_reaction(str(i))
    assert not batch.has_room_for("new") and batch.has_room_for("0")


# -- the stage without a server: coalescing and a standing fuzz test -----------------------


def _stage(tmp_path, events: list) -> Stage:
    return Stage("fz", "Fuzz", public=True, record=False, captions=False,
                 settings=make_settings(tmp_path), emit=events.append)


def _drain(stage: Stage, client: Client) -> list[dict]:
    """The JSON messages the client has been sent, after one more tick delivers them."""
    stage.tick()
    tap = client.transport
    assert isinstance(tap, Tap)
    return tap.take_split()[0]


def test_stage_coalesces_a_burst_into_one_message_per_flush(tmp_path, monkeypatch):
    _no_refill(monkeypatch)
    events: list = []
    stage = _stage(tmp_path, events)
    try:
        listener = Client(None, "listener", 10_000)
        tap = tapped(listener)
        senders = [Client(f"@s{i}:x", "listener", 10_000) for i in range(5)]
        for c in [listener, *senders]:
            stage.add_client(c)
        for _ in range(ACTIVITY_EVERY_TICKS):
            stage.tick()
        tap.take()
        for _ in range(12):  # 60 clicks, 10 per user accepted
            for c in senders:
                stage.on_json(c, '{"type": "reaction", "key": "🔥"}')
        stage.on_json(senders[0], '{"type": "raise_hand"}')
        writes = len(tap.writes)
        for _ in range(ACTIVITY_EVERY_TICKS):
            stage.tick()
        control, audio = tap.take_split()
        # one write per tick, one audio frame in each, whatever the chatter: the control
        # messages ride along in the same write
        assert len(tap.writes) - writes == ACTIVITY_EVERY_TICKS
        assert len(audio) == ACTIVITY_EVERY_TICKS
        assert [wire.unpack(f).seq for f in audio] == list(
            range(ACTIVITY_EVERY_TICKS + 1, 2 * ACTIVITY_EVERY_TICKS + 1))
        got = [m for m in control if m["type"] == "activity"]
        assert got == [{"type": "activity", "reactions": {"🔥": 50}, "hands": {"@s0:x": True}}]
        assert stage.counters["reactions_accepted"] == 50
        assert stage.counters["reactions_refused"] == 10
        # the bot still hears of each accepted reaction (it batches on its side)
        assert sum(1 for e in events if e["type"] == "reaction") == 50
        assert listener.kicked is None
    finally:
        stage.encoder.close()


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
MESSAGES = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "raise_hand", "lower_hand", "reaction", "x", ""])},
    optional={"key": JSON_VALUES, "id": JSON_VALUES, "extra": JSON_VALUES})


@st.composite
def hostile_text(draw) -> str:
    kind = draw(st.sampled_from(["message", "json", "deep", "huge", "text", "broken"]))
    if kind == "message":
        return json.dumps(draw(MESSAGES))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    if kind == "deep":
        n = draw(st.integers(1, 6000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"type":"reaction","key":[']))
        return opener * n + draw(st.sampled_from(["1", "", "]"])) + "]" * n
    if kind == "huge":
        return json.dumps({"type": "reaction", "key": "x" * draw(st.integers(17, 20000))})
    if kind == "broken":
        text = json.dumps(draw(MESSAGES))
        return text[: draw(st.integers(0, len(text)))]
    return draw(st.text(max_size=200))


@st.composite
def hostile_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "header", "short"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "short":
        return draw(st.binary(max_size=9))
    seq = draw(st.integers(0, 2**32 - 1))
    return wire.pack(seq, seq * 960, draw(st.binary(max_size=1400)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(inputs=st.lists(st.one_of(hostile_text(), hostile_bytes()), min_size=1, max_size=12),
       signed_in=st.booleans(), speaker=st.booleans())
def test_fuzz_websocket_input_never_escapes_the_stage(tmp_path, inputs, signed_in, speaker):
    """Whatever a client sends, nothing raises out of on_json/on_audio, nobody else is
    closed or sent an error, queues stay bounded, and the stage keeps ticking."""
    events: list = []
    stage = _stage(tmp_path, events)
    try:
        user = "@fuzz:x" if signed_in else None
        if speaker and signed_in:
            stage.set_roles({"@fuzz:x": "speaker"})
        fuzzer = Client(user, "listener", 10_000)
        bystander = Client("@by:x", "listener", 10_000)
        fuzzer_tap, bystander_tap = tapped(fuzzer), tapped(bystander)
        stage.add_client(fuzzer)
        stage.add_client(bystander)
        seen = []
        for item in inputs:
            if isinstance(item, bytes):
                stage.on_audio(fuzzer, item)
            else:
                stage.on_json(fuzzer, item)
            assert len(fuzzer.outbox) <= CONTROL_LIMIT
            ticks = stage.tick_count
            stage.tick()
            assert stage.tick_count == ticks + 1
            seen += bystander_tap.take_split()[0]
        for _ in range(ACTIVITY_EVERY_TICKS):
            stage.tick()
        seen += bystander_tap.take_split()[0]
        assert bystander.kicked is None and fuzzer.kicked is None
        assert not any(m["type"] == "error" for m in seen)
        assert stage.counters["reactions_accepted"] <= activity.REACTION_BURST
        fuzzer_tap.take_split()  # everything sent back parses as frames and JSON
    finally:
        stage.encoder.close()


def test_pong_echoes_only_small_ids(tmp_path):
    stage = _stage(tmp_path, [])
    try:
        c = Client(None, "listener", 10_000)
        tapped(c)
        stage.add_client(c)
        _drain(stage, c)
        stage.on_json(c, '{"type": "ping", "id": "abc"}')
        stage.on_json(c, '{"type": "ping", "id": {"nested": [1]}}')
        got = _drain(stage, c)
        assert {"type": "pong", "id": "abc"} in got
        assert any(m["type"] == "error" and m["code"] == "bad_message" for m in got)
    finally:
        stage.encoder.close()


@pytest.mark.parametrize("depth", [17, 5000, 100_000])
def test_deep_json_is_a_bad_message_not_a_recursion_error(tmp_path, depth):
    stage = _stage(tmp_path, [])
    try:
        c = Client(None, "listener", 10_000)
        tapped(c)
        stage.add_client(c)
        _drain(stage, c)
        stage.on_json(c, "[" * depth + "]" * depth)
        (err,) = _drain(stage, c)
        assert err["type"] == "error" and err["code"] == "bad_message"
    finally:
        stage.encoder.close()


def test_silence_frames_are_bounded_per_tick(tmp_path):
    """The tick writes each client exactly one audio frame: the very same bytes object
    for all (framed once), in one write."""
    stage = _stage(tmp_path, [])
    try:
        a, b = Client(None, "listener", 10_000), Client(None, "listener", 10_000)
        ta, tb = tapped(a), tapped(b)
        stage.add_client(a)
        stage.add_client(b)
        stage.tick()  # the first write also carries the hello
        stage.tick()
        assert len(ta.writes) == len(tb.writes) == 2
        assert ta.writes[1] is tb.writes[1]
        texts, audio = ta.take_split()
        assert [m["type"] for m in texts] == ["hello"]
        assert [f[0] for f in audio] == [0x11, 0x11]
        assert [wire.unpack(f).seq for f in audio] == [1, 2] and stage.tick_count == 2
    finally:
        stage.encoder.close()


def test_a_behind_bot_costs_one_log_line_not_one_per_dropped_event(caplog) -> None:
    from bridge.events import EventBus

    bus = EventBus(queue_size=10)
    bus.subscribe()
    with caplog.at_level(logging.WARNING, logger="bridge.events"):
        for i in range(5_000):
            bus.emit({"type": "reaction", "space_id": "s1", "n": i})
    assert bus.dropped == 4_990
    assert len([r for r in caplog.records if "behind" in r.getMessage()]) == 1
