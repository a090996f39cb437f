"""Write-once fan-out to WebSocket clients (issue 9, item 1): each tick's frame is framed
once and the same bytes go to every listener's transport; listen-only clients that ask
for them get bundles; speakers get their own frames; only audio decides "too slow"."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from bridge import wire, wsframe
from bridge.client import SpaceClient
from bridge.connection import CLOSE_TOO_SLOW, CONTROL_UNSENT_LIMIT, Backlog, Client
from bridge.stage import Stage

from .conftest import make_settings, rms, run_bridge, sine
from .tap import Tap, read_frames, tapped

BIG = 10_000_000  # an audio limit no test reaches unless it means to


def _stage(tmp_path, **overrides) -> Stage:
    return Stage("fan", "Fan-out", public=True, record=False, captions=False,
                 settings=make_settings(tmp_path, **overrides), emit=lambda e: None)


def _seqs(tap: Tap) -> tuple[list[int], list[str]]:
    """Sequence numbers of the audio written to ``tap`` since the last take, in order, and
    the kind of each binary message ("frame" or "bundle")."""
    seqs, kinds = [], []
    for opcode, payload in tap.take():
        if opcode != wsframe.OP_BINARY:
            continue
        if wire.is_bundle(payload):
            kinds.append("bundle")
            seqs += [f.seq for f in wire.unpack_bundle(payload)]
        else:
            kinds.append("frame")
            seqs.append(wire.unpack(payload).seq)
    return seqs, kinds


# -- framing and the bundle format -----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frames_read_back_at_every_length_boundary(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = wsframe.binary(payload) + wsframe.text("é") + wsframe.PING
    frames, used = read_frames(data)
    assert used == len(data)
    assert frames == [(0x2, payload), (0x1, "é".encode()), (0x9, b"")]


def test_bundle_round_trip_and_refusals():
    frames = [wire.pack(seq, seq * 960, bytes([seq]) * (seq + 3)) for seq in range(1, 6)]
    bundle = wire.pack_bundle(frames)
    assert bundle[:2] == b"\x12\x05" and wire.is_bundle(bundle)
    assert [(f.seq, f.payload) for f in wire.unpack_bundle(bundle)] == [
        (seq, bytes([seq]) * (seq + 3)) for seq in range(1, 6)]
    assert not wire.is_bundle(frames[0])
    for bad, why in [(bundle[:-1], "cut short"), (bundle + b"x", "trailing"),
                     (b"\x12\x00", "empty"), (frames[0], "not a bundle")]:
        with pytest.raises(wire.FrameError, match=why):
            wire.unpack_bundle(bad)
    with pytest.raises(ValueError):
        wire.pack_bundle([])


# -- the tick, without a server --------------------------------------------------------


def test_listeners_get_one_write_per_tick_of_the_same_bytes(tmp_path):
    stage = _stage(tmp_path, listener_bundle_ms=20)
    try:
        clients = [Client(None, "listener", BIG, bundles=True) for _ in range(3)]
        taps = [tapped(c) for c in clients]
        for c in clients:
            stage.add_client(c)
        for _ in range(12):
            stage.tick()
        for tap in taps:
            assert len(tap.writes) == 12
            assert _seqs(tap) == (list(range(1, 13)), ["frame"] * 12)  # 20 ms: no bundles
        # the same bytes for all; a write that carries no control message (the first
        # carries the hello, tick 10 the participants) is one shared object
        shared = 0
        for i in range(12):
            assert taps[0].writes[i] == taps[1].writes[i] == taps[2].writes[i]
            if taps[0].writes[i][0] == 0x82:
                assert taps[0].writes[i] is taps[1].writes[i] is taps[2].writes[i]
                shared += 1
        assert shared == 10
    finally:
        stage.encoder.close()


def test_bundled_listeners_get_every_frame_once_and_share_each_bundle(tmp_path):
    stage = _stage(tmp_path, listener_bundle_ms=100)
    try:
        for _ in range(2):
            stage.tick()
        a, b = (Client(None, "listener", BIG, bundles=True) for _ in range(2))
        plain = Client(None, "listener", BIG)  # did not ask: frames
        ta, tb, tp = tapped(a), tapped(b), tapped(plain)
        for c in (a, b, plain):
            stage.add_client(c)
        for _ in range(16):
            stage.tick()  # ticks 3..18
        # tick 3 as a frame, then a bundle of the last 5 frames every 5 ticks
        assert _seqs(ta) == (list(range(3, 19)), ["frame"] + ["bundle"] * 3)
        assert len(ta.writes) == 4 and a.id in stage.bundles
        assert ta.writes[1] is tb.writes[1]  # one bundle, built once, for both
        assert ta.writes[3] is tb.writes[3]
        assert _seqs(tp) == (list(range(3, 19)), ["frame"] * 16)
        hello = json.loads(read_frames(ta.writes[0])[0][0][1])
        assert hello["type"] == "hello" and hello["bundle_ms"] == 100
    finally:
        stage.encoder.close()


def test_bundled_clients_are_spread_over_the_ticks(tmp_path):
    """Clients joining at different ticks get their bundles at different ticks, so no
    tick writes to all of them."""
    stage = _stage(tmp_path, listener_bundle_ms=100)
    try:
        taps = []
        for _ in range(10):  # one joins before each of ticks 1..10
            c = Client(None, "listener", BIG, bundles=True)
            taps.append(tapped(c))
            stage.add_client(c)
            stage.tick()
        for _ in range(10):
            before = [len(t.writes) for t in taps]
            stage.tick()
            assert sum(len(t.writes) - n for t, n in zip(taps, before, strict=True)) == 2
    finally:
        stage.encoder.close()


def test_a_listener_given_the_mic_leaves_bundles_at_once_and_comes_back(tmp_path):
    stage = _stage(tmp_path, listener_bundle_ms=100)
    try:
        c = Client("@l:x", "listener", BIG, bundles=True)
        tap = tapped(c)
        stage.add_client(c)
        for _ in range(7):
            stage.tick()  # 1 as a frame, 2-6 in a bundle; 7 waits for the next bundle
        assert c.id in stage.bundles
        stage.set_roles({"@l:x": "speaker"})  # 7 goes out at once, as a frame
        assert c.id not in stage.bundles
        for _ in range(5):
            stage.tick()  # 8..12: frames (speakers never get bundles)
        stage.set_roles({})  # a listener again: 13 as a frame, then bundles
        for _ in range(13):
            stage.tick()  # 13..25: bundles at 18 and 23; 24 and 25 wait
        seqs, kinds = _seqs(tap)
        assert seqs == list(range(1, 24))
        assert kinds == ["frame", "bundle"] + ["frame"] * 7 + ["bundle"] * 2
    finally:
        stage.encoder.close()


def test_control_rides_the_bundle_write_and_states_coalesce(tmp_path):
    stage = _stage(tmp_path, listener_bundle_ms=200)
    try:
        c = Client(None, "listener", BIG, bundles=True)
        tap = tapped(c)
        stage.add_client(c)
        for _ in range(10):
            stage.tick()  # 1 as a frame; its bundles come at 11, 21, 31...
        tap.take()
        writes = len(tap.writes)
        for i in range(30):  # a state changing every 20 ms, and one event
            stage._broadcast_json({"type": "levels", "levels": {"@s:x": -i}})
            if i == 3:
                stage._broadcast_json({"type": "activity", "reactions": {"x": 1}, "hands": {}})
            stage.tick()  # 11..40
        # 3 bundles = 3 writes; each carries only the newest levels
        assert len(tap.writes) - writes == 3
        texts = [json.loads(p) for op, p in tap.take() if op == wsframe.OP_TEXT]
        texts = [m for m in texts if m["type"] != "participants"]  # from tick 10
        assert [m["type"] for m in texts] == ["levels", "levels", "activity", "levels"]
        assert [m["levels"]["@s:x"] for m in texts if m["type"] == "levels"] == [0, -10, -20]
        assert len(c.outbox) == 1  # the newest levels wait for the bundle at 41
    finally:
        stage.encoder.close()


def test_only_audio_makes_a_client_too_slow(tmp_path):
    stage = _stage(tmp_path, listener_bundle_ms=20)
    try:
        frame_bytes = 200  # a silent frame is far smaller: 10 frames stay under this limit
        c = Client(None, "listener", 10 * frame_bytes)
        tap = tapped(c)
        stage.add_client(c)
        stage.tick()
        tap.reading = False  # it stops reading
        big = wsframe.text(json.dumps({"type": "caption", "text": "x" * 50_000}))
        for _ in range(3):  # far more control than the audio limit, unsent
            c.send_control(big)
        stage.tick()
        assert c.kicked is None and tap.unsent > 150_000  # control is never "too slow"
        c.send_control(big)  # past CONTROL_UNSENT_LIMIT: it waits in the outbox
        stage.tick()
        assert len(c.outbox) == 1 and tap.unsent < 150_000 + 10 * frame_bytes
        assert 150_000 > CONTROL_UNSENT_LIMIT
        ticks = 0
        while c.kicked is None:
            stage.tick()
            ticks += 1
            assert ticks < 1000, "never kicked"
        assert c.kicked == (CLOSE_TOO_SLOW, "too slow: fell behind the live audio")
        assert ticks >= 5  # it took a backlog of audio, not the control
        writes = len(tap.writes)
        stage.tick()
        assert len(tap.writes) == writes  # nothing more is written to a kicked client
    finally:
        stage.encoder.close()


def test_backlog_counts_exactly_the_audio_still_unsent():
    log = Backlog()
    log.wrote(100, 60)  # 40 of control, then 60 of audio
    log.wrote(50, 50)   # audio only
    log.wrote(30, 0)    # control only
    assert log.unsent(180) == (110, 70)
    assert log.unsent(150) == (110, 40)  # the first write's control went out
    assert log.unsent(100) == (70, 30)   # ... and 40 bytes of its audio: 20 left
    assert log.unsent(30) == (0, 30)
    assert log.unsent(0) == (0, 0)
    log.wrote(10, 10)
    assert log.unsent(10) == (10, 0)


def test_a_client_slowly_falling_behind_is_dropped_at_the_audio_bound(tmp_path):
    """It reads 90 % of what it is sent, while control keeps coming: the audio it has not
    read, not a guess blurred by the control bytes, decides (review finding)."""
    stage = _stage(tmp_path, listener_bundle_ms=20)
    try:
        limit = 3000
        c = Client(None, "listener", limit)
        tap = tapped(c)
        stage.add_client(c)
        tap.reading = False
        for i in range(5000):
            if i % 5 == 0:
                stage._broadcast_json({"type": "levels", "levels": {"@s:x": -i}})
            before = tap.unsent
            stage.tick()
            tap.drain((tap.unsent - before) * 9 // 10)
            if c.kicked is not None:
                break
        assert c.kicked == (CLOSE_TOO_SLOW, "too slow: fell behind the live audio")
        assert tap.unsent < limit + CONTROL_UNSENT_LIMIT
    finally:
        stage.encoder.close()


def test_a_fault_in_the_broadcasts_costs_nobody_their_audio(tmp_path, monkeypatch):
    stage = _stage(tmp_path, listener_bundle_ms=100)
    try:
        a, b = Client(None, "listener", BIG, bundles=True), Client(None, "listener", BIG)
        ta, tb = tapped(a), tapped(b)
        stage.add_client(a)
        stage.add_client(b)

        def broken(*_args):
            raise RuntimeError("participants list broken")
        monkeypatch.setattr(stage, "_send_participants", broken)
        for _ in range(20):
            stage.tick()  # participants are due at tick 10 and fail
        assert _seqs(ta)[0] == list(range(1, 17))  # 17..20 wait for the bundle at 21
        assert _seqs(tb)[0] == list(range(1, 21))
    finally:
        stage.encoder.close()


async def test_closing_message_goes_out_before_the_close(tmp_path):
    stage = _stage(tmp_path)
    c = Client(None, "listener", BIG, bundles=True)
    tap = tapped(c)
    stage.add_client(c)
    stage.tick()
    tap.take()
    await stage.close()
    texts = [json.loads(p) for op, p in tap.take() if op == wsframe.OP_TEXT]
    assert texts == [{"type": "closing", "reason": "space ended"}]
    assert c.kicked == (4410, "space ended")


# -- through a real bridge -------------------------------------------------------------


async def test_bundled_listener_hears_the_speaker_and_the_speaker_gets_frames(tmp_path):
    running = await run_bridge(make_settings(tmp_path, listener_bundle_ms=100))
    try:
        await running.open("b1", roles={"@a:x": "host"})
        token = running.token("b1", "@a:x", "host")
        seqs: list[int] = []
        listener = SpaceClient(running.url, "b1", bundles=True)
        listener.on_frame = lambda seq, _pcm, _now: seqs.append(seq)
        async with listener, SpaceClient(running.url, "b1", token, bundles=True) as alice:
            assert (await listener.wait_type("hello"))["bundle_ms"] == 100
            await alice.wait_type("hello")
            await alice.speak(sine(440, 1.0))
            await listener.wait_frames(60)
            await alice.wait_frames(60)

            async def heard() -> None:
                while rms(listener.heard()[-48000:]) < 1000:
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(heard(), 5)
            assert listener.bundles_received >= 5
            assert alice.bundles_received == 0  # she may speak: frames only
            gaps = [(x, y) for x, y in zip(seqs, seqs[1:], strict=False) if y != x + 1]
            assert not gaps, gaps[:5]
            # the listener's audio is the speaker's tone
            spectrum = np.abs(np.fft.rfft(listener.heard()[-48000:].astype(float)))
            assert abs(int(np.argmax(spectrum)) - 440) <= 2
    finally:
        await running.session.close()
        await running.runner.cleanup()
