"""Client WebSocket protocol against a real bridge on 127.0.0.1."""

import asyncio

import numpy as np
import pytest

from bridge import opus, tokens, wire
from bridge.app import STAGES
from bridge.client import SpaceClient, frames_of

from .conftest import SECRET, make_settings, raw_ws_that_never_reads, rms, run_bridge, sine


async def _refused(bridge, space, token):
    client = SpaceClient(bridge.url, space, token)
    await client.connect()
    code = await client.wait_closed()
    reason = client.close_reason
    await client.close()
    return code, reason


async def test_forged_token_is_refused(bridge):
    await bridge.open("s1", public=False)
    forged = tokens.mint("some-other-secret-xyz", "s1", "@m:x", "host", 600)
    assert await _refused(bridge, "s1", forged) == (4401, "token refused: bad signature")


async def test_expired_token_is_refused(bridge):
    await bridge.open("s1", public=False)
    old = tokens.mint(SECRET, "s1", "@a:x", "speaker", 60, now=1_000_000)
    assert await _refused(bridge, "s1", old) == (4401, "token refused: expired")


async def test_token_for_other_space_is_refused(bridge):
    await bridge.open("s1")
    await bridge.open("s2")
    tok = bridge.token("s2", "@a:x", "speaker")
    assert await _refused(bridge, "s1", tok) == (4401, "token refused: wrong space")


async def test_malformed_token_is_refused(bridge):
    await bridge.open("s1")
    assert await _refused(bridge, "s1", "garbage") == (4401, "token refused: malformed")


async def test_private_space_needs_token_and_unknown_space_is_4404(bridge):
    await bridge.open("priv", public=False)
    code, reason = await _refused(bridge, "priv", None)
    assert code == 4403 and "token" in reason
    code, reason = await _refused(bridge, "ghost", None)
    assert code == 4404


async def test_anonymous_listener_hears_speaker(bridge):
    await bridge.open("s1", roles={"@alice:x": "host"})
    async with SpaceClient(bridge.url, "s1") as listener, \
            SpaceClient(bridge.url, "s1", bridge.token("s1", "@alice:x", "host")) as alice:
        hello = await listener.wait_type("hello")
        assert hello["user_id"] is None and hello["may_speak"] is False
        assert (await alice.wait_type("hello"))["may_speak"] is True
        await alice.speak(sine(440, 1.0))
        await listener.wait_frames(40)
        heard_before = len(listener.heard())

        async def energy():
            while rms(listener.heard()[heard_before - 48000 * 2:]) < 1000:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(energy(), 5)
        stats = bridge.stage("s1").stats()
        assert stats["listeners"] == 2 and stats["speakers_connected"] == 1


async def test_listener_audio_is_ignored(bridge):
    await bridge.open("s1", roles={"@bob:x": "listener"})
    async with SpaceClient(bridge.url, "s1", bridge.token("s1", "@bob:x", "speaker")) as bob, \
            SpaceClient(bridge.url, "s1") as other:
        await bob.wait_type("hello")
        await bob.speak(sine(440, 0.2), realtime=False)
        err = await bob.wait_type("error")
        assert err["code"] == "not_allowed"
        stage = bridge.stage("s1")
        assert stage.mixer.speakers == []
        await other.wait_frames(20)
        assert rms(other.heard()) == 0.0


async def test_malformed_frames_are_dropped_and_space_unharmed(bridge):
    await bridge.open("s1", roles={"@a:x": "speaker"})
    enc = opus.Encoder()
    good = enc.encode(sine(440, 0.02))
    async with SpaceClient(bridge.url, "s1", bridge.token("s1", "@a:x", "speaker")) as a, \
            SpaceClient(bridge.url, "s1") as listener:
        await a.wait_type("hello")
        assert a.ws is not None
        bad_frames = [
            b"\x11\x00",                                 # too short
            bytes([0x21]) + b"\x00" * 8 + good,          # version 2
            bytes([0x12]) + b"\x00" * 8 + good,          # unknown codec
            wire.pack(0, 0, b"\xff\xff\xff\xff\xff"),    # not an Opus packet
            wire.pack(0, 0, enc.encode(sine(440, 0.02)) * 0 + b"\x0b" + b"\x00" * 40),
        ]
        for frame in bad_frames:
            await a.ws.send_bytes(frame)
        await a.ws.send_str("{not json")
        await a.send_json({"type": "teleport"})
        await a.wait_type("error", where=lambda m: m["count"] >= 4)
        stage = bridge.stage("s1")

        async def refused_all():
            while stage.clients and max(c.frames_refused for c in stage.clients.values()) < 5:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(refused_all(), 5)
        assert stage.mixer.speakers == []
        # the same connection can still speak, and the listener hears it
        await a.speak(sine(440, 1.0))

        async def energy():
            while rms(listener.heard()[-48000:]) < 1000:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(energy(), 5)


async def test_oversize_message_closes_only_that_client(bridge):
    await bridge.open("s1", roles={"@a:x": "speaker"})
    async with SpaceClient(bridge.url, "s1", bridge.token("s1", "@a:x", "speaker")) as a, \
            SpaceClient(bridge.url, "s1") as listener:
        await a.wait_type("hello")
        assert a.ws is not None
        await a.ws.send_bytes(wire.pack(0, 0, b"\x00" * (bridge.settings.max_msg_size + 10)))
        assert await a.wait_closed() == 1009
        before = listener.frames_received
        await listener.wait_frames(before + 10)
        assert bridge.stage("s1").stats()["listeners"] == 1


async def test_revoked_speaker_is_cut_on_the_next_tick(bridge):
    await bridge.open("s1", roles={"@a:x": "speaker"})
    stage = bridge.stage("s1")
    log: list[tuple[int, bool]] = []
    stage.tick_hooks.append(lambda r: log.append((stage.tick_count, bool(r.active))))
    revoked_at: list[int] = []
    original = stage.set_roles

    def spy(roles):
        revoked_at.append(stage.tick_count)
        original(roles)
    stage.set_roles = spy  # type: ignore[method-assign]

    async with SpaceClient(bridge.url, "s1", bridge.token("s1", "@a:x", "speaker")) as a:
        await a.wait_type("hello")
        speaking = asyncio.create_task(a.speak(sine(300, 3.0)))

        async def heard_in_mix():
            while not any(active for _, active in log):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(heard_in_mix(), 5)
        status, _ = await bridge.control("PUT", "/spaces/s1/roles", {"roles": {"@a:x": "listener"}})
        assert status == 200
        you = await a.wait_type("you", where=lambda m: m["may_speak"] is False)
        assert you["role"] == "listener"
        await a.wait_type("error", where=lambda m: m["code"] == "not_allowed")

        async def ticks_after_revoke():
            while sum(1 for tick, _ in log if tick > revoked_at[0]) < 5:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(ticks_after_revoke(), 5)
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)
    after = [active for tick, active in log if tick > revoked_at[0]]
    assert after and not any(after)
    assert stage.mixer.speakers == []


async def test_slow_listener_is_dropped_without_harming_others(tmp_path):
    running = await run_bridge(make_settings(tmp_path, listener_queue_frames=8,
                                             opus_bitrate=256000))
    try:
        await running.open("s1", roles={"@a:x": "speaker"})
        stage = running.stage("s1")
        noise = np.random.default_rng(1).integers(-20000, 20000, 48000 * 60).astype(np.int16)
        good = SpaceClient(running.url, "s1")
        seqs: list[int] = []
        good.on_frame = lambda seq, _pcm, _now: seqs.append(seq)
        async with SpaceClient(running.url, "s1", running.token("s1", "@a:x", "speaker")) as a, good:
            slow = await raw_ws_that_never_reads(running.url, "/spaces/s1/ws", receive_buffer=4096)
            speaking = asyncio.create_task(a.speak(noise))

            async def slow_dropped():
                while len(stage.clients) > 2:
                    await asyncio.sleep(0.02)
            try:
                await asyncio.wait_for(slow_dropped(), 60)
            finally:
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
                slow.close()
            # the good listener never missed a beat: it got every tick since it joined
            assert good.close_code is None
            gaps = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]
            assert seqs and not gaps, (len(seqs), gaps[:5])
            assert len(seqs) >= 25  # the slow one was dropped after ≥ 8 frames queued, ½ s at least
            assert stage.clock_resyncs == 0
    finally:
        await running.session.close()
        await running.runner.cleanup()


async def test_reactions_and_hands_broadcast(bridge):
    await bridge.open("s1", roles={"@h:x": "host", "@l:x": "listener"})
    async with SpaceClient(bridge.url, "s1", bridge.token("s1", "@h:x", "host")) as host, \
            SpaceClient(bridge.url, "s1", bridge.token("s1", "@l:x")) as lis:
        await lis.wait_type("hello")
        await lis.raise_hand()
        await lis.react("👏")
        # both reach everyone in batches: a count per reaction, the latest hand per user
        hand = await host.wait_type("activity", where=lambda m: "@l:x" in m["hands"])
        assert hand["hands"]["@l:x"] is True
        r = await host.wait_type("activity", where=lambda m: m["reactions"])
        assert r["reactions"] == {"👏": 1}
        p = await host.wait_type("participants", where=lambda m: any(
            e["hand_raised"] for e in m["participants"]))
        assert {e["user_id"] for e in p["participants"]} == {"@h:x", "@l:x"}
        await host.raise_hand()
        assert (await host.wait_type("error"))["code"] == "not_allowed"


def test_frame_header_round_trip():
    data = wire.pack(0xFFFFFFFF, 123456, b"\xf8\xff\xfe")
    f = wire.unpack(data)
    assert (f.seq, f.timestamp, f.payload) == (0xFFFFFFFF, 123456, b"\xf8\xff\xfe")
    with pytest.raises(wire.FrameError, match="version"):
        wire.unpack(b"\x21" + data[1:])
    with pytest.raises(wire.FrameError, match="codec"):
        wire.unpack(b"\x13" + data[1:])
    with pytest.raises(wire.FrameError, match="short"):
        wire.unpack(data[:9])


def test_frames_of_pads_last_frame():
    frames = frames_of(np.ones(2000, dtype=np.int16))
    assert len(frames) == 3 and frames[-1][100:].sum() == 0


async def test_a_reconnecting_client_comes_back_after_a_drop_and_stops_when_the_space_ends(bridge):
    await bridge.open("back", roles={"@s:x": "speaker"})
    stage = bridge.stage("back")
    async with SpaceClient(bridge.url, "back", bridge.token("back", "@s:x", "speaker"),
                           reconnect=True) as c:
        await c.wait_type("hello")
        (first,) = stage.clients.values()
        first.kick(4408, "too slow: fell behind the live audio")
        await c.wait_reconnected(1, timeout=30)
        assert [m["type"] for m in c.messages].count("hello") == 2
        (second,) = stage.clients.values()
        assert second.id != first.id and second.user_id == "@s:x"
        await c.send_frame(sine(440, 0.02))  # it speaks on the new connection
        frames = c.frames_received
        await c.wait_frames(frames + 5)
        status, _ = await bridge.control("DELETE", "/spaces/back")
        assert status == 200
        assert await c.wait_closed(10) == 4410
        assert c.reconnects == 1


async def test_a_reconnecting_client_waits_for_a_space_a_restarted_bridge_does_not_know_yet(bridge):
    await bridge.open("gone")
    async with SpaceClient(bridge.url, "gone", reconnect=True) as c:
        await c.wait_type("hello")
        # as after a restart: the stage is gone without "space ended" reaching the client
        stage = bridge.app[STAGES].pop("gone")
        (client,) = stage.clients.values()
        client.kick(1001, "bridge shutting down")
        await stage.close()

        async def refused_once() -> None:  # its retries meet "no such space" (4404)
            while c.close_code != 4404:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(refused_once(), 30)
        assert not c.closed.is_set()
        await bridge.open("gone")
        await c.wait_reconnected(1, timeout=30)
        assert bridge.stage("gone").listeners == 1
