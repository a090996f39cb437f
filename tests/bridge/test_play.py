"""Voice messages played into a live space: POST /control/v1/spaces/{id}/play.

The bot hands the bridge the file a speaker posted; the bridge decodes it with
pydub/ffmpeg and plays it into the mix as a virtual source, one frame per tick.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bot.bridge_api import BridgeError, InMemoryBridge
from bot.bridge_http import HttpBridge
from bridge import voice
from bridge.client import SpaceClient, load_audio, save_wav
from bridge.mixer import FRAME_SAMPLES, Mixer
from bridge.stage import Stage

from .conftest import SECRET, best_correlation, rms, sine

TONE_HZ = 12000  # above festival's 8 kHz speech band: tells a speaker's own tone apart


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True, capture_output=True, timeout=60)
    return dst


@pytest.fixture
def speech_ogg(speech_a, tmp_path) -> Path:
    """What Element posts for a voice message: Ogg/Opus."""
    return ffmpeg(speech_a, tmp_path / "voice.ogg", "-c:a", "libopus", "-b:a", "32k")


@pytest.fixture
async def hb(bridge):
    client = HttpBridge(bridge.url, bridge.url, SECRET)
    await client.start()
    yield client
    await client.close()


def band_fraction(pcm: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum() / (spec.sum() + 1e-9))


def lowpass(pcm: np.ndarray, hz: float) -> np.ndarray:
    spec = np.fft.rfft(pcm.astype(np.float64))
    spec[np.fft.rfftfreq(len(pcm), 1 / 48000) >= hz] = 0
    return np.fft.irfft(spec, len(pcm))


async def played(stage: Stage, count: int, timeout: float = 30.0) -> int:
    """Wait until ``count`` voice messages have finished; returns that tick number."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def hook(_result) -> None:
        if stage.voice.played >= count and not done.done():
            done.set_result(stage.tick_count)

    stage.tick_hooks.append(hook)
    try:
        return await asyncio.wait_for(done, timeout)
    finally:
        stage.tick_hooks.remove(hook)


def track_seq(client: SpaceClient) -> asyncio.Condition:
    """Keep ``client.last_seq`` (the stage tick of the last frame it received)."""
    cond = asyncio.Condition()
    client.last_seq = 0  # type: ignore[attr-defined]

    def on_frame(seq: int, pcm: np.ndarray, now: float) -> None:
        client.last_seq = seq  # type: ignore[attr-defined]

        async def notify() -> None:
            async with cond:
                cond.notify_all()
        asyncio.get_running_loop().create_task(notify())

    client.on_frame = on_frame
    return cond


async def received_tick(client: SpaceClient, cond: asyncio.Condition, tick: int) -> None:
    async with cond:
        await asyncio.wait_for(cond.wait_for(lambda: client.last_seq >= tick), 10)


# -- through the real bridge ---------------------------------------------------------


async def test_voice_message_is_heard_by_listener_and_speaker(bridge, hb, speech_a,
                                                              speech_ogg):
    await bridge.open("vm", roles={"@h:x": "host", "@s:x": "speaker"})
    stage = bridge.stage("vm")
    source = load_audio(speech_a)
    async with SpaceClient(bridge.url, "vm") as listener, \
            SpaceClient(bridge.url, "vm", bridge.token("vm", "@h:x", "host")) as host:
        await listener.wait_type("hello")
        await host.wait_type("hello")
        seq_l, seq_h = track_seq(listener), track_seq(host)
        # the host talks (a 12 kHz tone) all through the voice message, so it gets its
        # own mix-minus: it must hear the message, but not its own tone
        tone = sine(TONE_HZ, len(source) / 48000 + 4.0, amp=6000)
        talking = asyncio.create_task(host.speak(tone))
        try:
            duration = await hb.play("vm", speech_ogg.read_bytes(), "audio/ogg", "@s:x")
            assert duration == pytest.approx(len(source) / 48000, abs=0.1)
            assert stage.voice.users() == ["@s:x"]  # waiting for its tick, or playing
            end_tick = await played(stage, 1)
        finally:
            talking.cancel()
            await asyncio.gather(talking, return_exceptions=True)
        await received_tick(listener, seq_l, end_tick)
        await received_tick(host, seq_h, end_tick)
        heard_l, heard_h = listener.heard(), host.heard()

    # it ended cleanly: out of the mixer, nothing waiting, the stage still live
    assert stage.voice.idle and "voice:@s:x" not in stage.mixer
    assert stage.open and stage.mixer.speakers == []

    # the listener hears the message (and the host's tone)
    speech_l = lowpass(heard_l, 8000)
    corr_l = best_correlation(speech_l, source, max_lag_s=len(heard_l) / 48000)
    assert corr_l > 0.6, corr_l
    assert band_fraction(heard_l, TONE_HZ - 200, TONE_HZ + 200) > 0.05
    # the speaker hears the message too (it is not "self" for anyone) without its tone
    speech_h = lowpass(heard_h, 8000)
    corr_h = best_correlation(speech_h, source, max_lag_s=len(heard_h) / 48000)
    assert corr_h > 0.6, corr_h
    assert rms(speech_h) > 300
    assert band_fraction(heard_h, TONE_HZ - 200, TONE_HZ + 200) < 0.01


async def test_undecodable_audio_is_refused_and_stage_unharmed(bridge, hb):
    await bridge.open("bad", roles={"@h:x": "host"})
    stage = bridge.stage("bad")
    async with SpaceClient(bridge.url, "bad") as listener:
        await listener.wait_type("hello")
        with pytest.raises(BridgeError, match="400") as err:
            await hb.play("bad", b"this is not audio, just text\n" * 500, "audio/ogg",
                          "@h:x")
        assert err.value.reason.startswith("could not decode audio: ")
        assert "Invalid data" in err.value.reason
        with pytest.raises(BridgeError, match="could not decode audio"):
            await hb.play("bad", b"OggS" + bytes(range(256)) * 40, "audio/ogg", "@h:x")
        assert stage.open and stage.voice.idle and stage.mixer.speakers == []
        before = listener.frames_received
        await listener.wait_frames(before + 10)  # the tick goes on
    assert (await hb.stats("bad")).open


async def test_only_current_speakers_may_play(bridge, hb, speech_ogg):
    await bridge.open("who", roles={"@h:x": "host", "@c:x": "cohost", "@l:x": "listener"})
    data = speech_ogg.read_bytes()
    for user in ("@l:x", "@stranger:x"):
        with pytest.raises(BridgeError, match="403") as err:
            await hb.play("who", data, "audio/ogg", user)
        assert "not a host, co-host or speaker" in err.value.reason
    assert await hb.play("who", data, "audio/ogg", "@c:x") > 5
    assert bridge.stage("who").voice.users() == ["@c:x"]


async def test_oversize_file_is_413(bridge, hb):
    await bridge.open("big", roles={"@h:x": "host"})
    with pytest.raises(BridgeError, match="413") as err:
        await hb.play("big", bytes(voice.MAX_BYTES + 1), "audio/wav", "@h:x")
    assert err.value.reason == f"audio file is larger than {voice.MAX_BYTES} bytes"
    assert bridge.stage("big").voice.idle


async def test_too_long_message_is_400(bridge, hb, tmp_path):
    await bridge.open("long", roles={"@h:x": "host"})
    # 5 min 10 s of quiet in 60 KB of Opus: the size is fine, the length is not
    path = tmp_path / "long.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:sample_rate=48000", "-t",
                    str(voice.MAX_SECONDS + 10), "-c:a", "libopus", "-b:a", "6k", str(path)],
                   check=True, capture_output=True, timeout=60)
    with pytest.raises(BridgeError, match="400") as err:
        await hb.play("long", path.read_bytes(), "audio/ogg", "@h:x")
    assert err.value.reason == "voice message is longer than 300 seconds"
    assert bridge.stage("long").voice.idle


async def test_unknown_space_missing_user_and_secret(bridge, hb, speech_ogg):
    with pytest.raises(BridgeError, match="404"):
        await hb.play("nowhere", speech_ogg.read_bytes(), "audio/ogg", "@h:x")
    await bridge.open("q", roles={"@h:x": "host"})
    url = f"{bridge.url}/control/v1/spaces/q/play"
    async with bridge.session.post(url, data=b"x",
                                   headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["field"] == "user_id"
    async with bridge.session.post(url, params={"user_id": "@h:x"}, data=b"x") as resp:
        assert resp.status == 401
    async with bridge.session.post(url, params={"user_id": "@h:x"}, data=b"",
                                   headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("empty body")


async def test_messages_queue_and_play_in_order(bridge, tmp_path):
    await bridge.open("fifo", roles={"@h:x": "host", "@s:x": "speaker"})
    stage = bridge.stage("fifo")
    wav = tmp_path / "one.wav"
    save_wav(wav, sine(440, 1.0))
    mp3 = ffmpeg(wav, tmp_path / "two.mp3")
    order: list[str] = []

    def who_plays(_result) -> None:
        clip = stage.voice.playing
        if clip is not None and (not order or order[-1] != clip.user_id):
            order.append(clip.user_id)

    stage.tick_hooks.append(who_plays)
    answers = []
    for path, user, ctype in ((wav, "@h:x", "audio/wav"), (mp3, "@s:x", "audio/mpeg")):
        async with bridge.session.post(
                f"{bridge.url}/control/v1/spaces/fifo/play", params={"user_id": user},
                data=path.read_bytes(), headers={"Authorization": f"Bearer {SECRET}",
                                                 "Content-Type": ctype}) as resp:
            assert resp.status == 200, await resp.text()
            answers.append(await resp.json())
    assert answers[0] == {"duration_seconds": 1.0, "starts_in_seconds": 0.0}
    # the second waits for what is left of the first
    assert 0.0 <= answers[1]["starts_in_seconds"] <= 1.0
    assert answers[1]["duration_seconds"] == pytest.approx(1.0, abs=0.06)
    await played(stage, 2)
    assert order == ["@h:x", "@s:x"]
    assert stage.voice.idle and stage.mixer.speakers == []


async def test_revoke_cuts_the_voice_message_at_once(bridge, hb, speech_ogg):
    await bridge.open("cut", roles={"@h:x": "host", "@s:x": "speaker"})
    stage = bridge.stage("cut")
    await hb.play("cut", speech_ogg.read_bytes(), "audio/ogg", "@s:x")
    await hb.play("cut", speech_ogg.read_bytes(), "audio/ogg", "@s:x")
    assert stage.voice.users() == ["@s:x", "@s:x"]
    await played(stage, 0)  # one tick: the first is playing now
    assert "voice:@s:x" in stage.mixer
    await hb.set_roles("cut", {"@h:x": "host", "@s:x": "listener"})
    assert stage.voice.idle and "voice:@s:x" not in stage.mixer
    assert stage.mixer.speakers == []  # the next tick mixes nothing of it


async def test_closing_the_space_drops_queued_messages(bridge, hb, speech_ogg):
    await bridge.open("end", roles={"@h:x": "host"})
    stage = bridge.stage("end")
    await hb.play("end", speech_ogg.read_bytes(), "audio/ogg", "@h:x")
    await hb.close_stage("end")
    assert stage.voice.idle and stage.mixer.speakers == []


async def test_voice_message_is_captioned_as_its_poster(bridge, hb, speech_ogg):
    pytest.importorskip("pocketsphinx")
    events: asyncio.Queue = asyncio.Queue()
    hb.on_event(events.put)
    await asyncio.wait_for(hb.connected.wait(), 5)
    await bridge.open("cc", roles={"@h:x": "host", "@s:x": "speaker"}, captions=True)
    await hb.play("cc", speech_ogg.read_bytes(), "audio/ogg", "@s:x")
    while True:
        event = await asyncio.wait_for(events.get(), 30)
        if event["type"] == "caption":
            break
    assert event["user_id"] == "@s:x" and event["space_id"] == "cc"
    assert "community" in event["text"]


# -- units -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,args", [
    ("ogg", ("-c:a", "libopus", "-ar", "24000")), ("oga", ("-c:a", "libvorbis")),
    ("mp3", ()), ("m4a", ("-c:a", "aac")), ("wav", ()), ("flac", ()),
])
def test_decode_formats_to_48k_mono(speech_a, tmp_path, suffix, args):
    # festival writes 16 kHz mono; make it stereo (and 44.1 kHz unless set) on the way
    src = ffmpeg(speech_a, tmp_path / f"in.{suffix}", "-ac", "2", "-ar", "44100", *args)
    pcm = voice.decode(src.read_bytes())
    ref = load_audio(speech_a)
    assert pcm.dtype == np.int16
    assert len(pcm) / 48000 == pytest.approx(len(ref) / 48000, abs=0.1)
    assert best_correlation(pcm, ref, max_lag_s=0.2) > 0.9


def test_decode_refusals():
    with pytest.raises(voice.VoiceError, match="could not decode audio: the file is empty"):
        voice.decode(b"")
    with pytest.raises(voice.VoiceError, match="could not decode audio: .*Invalid data"):
        voice.decode(b"\x00\x01garbage" * 100)


def test_queue_feeds_one_frame_per_tick_into_mix_minus():
    mixer = Mixer(4, 1)
    queue = voice.VoiceQueue(mixer)
    mixer.add_speaker("alice")
    msg = sine(1000, 0.05, amp=5000)  # 2.5 frames: the last one padded with silence
    assert queue.add("@v:x", msg) == 0.0
    got, minus_alice = [], []
    for n in range(4):
        mixer.push("alice", n, np.zeros(FRAME_SAMPLES, np.int16))
        queue.feed()
        result = mixer.tick()
        got.append(result.mix)
        minus_alice.append(result.minus["alice"])
    heard = np.concatenate(got)
    assert np.array_equal(heard[:len(msg)], msg)
    assert not heard[len(msg):].any()
    # alice (a speaker) hears the message in her mix-minus
    assert np.array_equal(np.concatenate(minus_alice)[:len(msg)], msg)
    assert queue.idle and queue.played == 1 and mixer.speakers == ["alice"]


def test_queue_limit_and_drop():
    mixer = Mixer(4, 1)
    queue = voice.VoiceQueue(mixer, max_queued_seconds=3.0)
    queue.add("@a:x", np.ones(96000, np.int16))
    queue.add("@b:x", np.ones(48000, np.int16))
    with pytest.raises(voice.VoiceError, match="too much audio waiting"):
        queue.add("@a:x", np.ones(480, np.int16))
    queue.feed()
    assert queue.user_of("voice:@a:x") == "@a:x" and queue.user_of(7) is None
    queue.drop_unless(lambda user: user != "@a:x")
    assert queue.playing is None and [c.user_id for c in queue.waiting] == ["@b:x"]
    assert "voice:@a:x" not in mixer


async def test_in_memory_bridge_play_records_the_call():
    mem = InMemoryBridge()
    await mem.open_stage("s", "t", public=True)
    await mem.set_roles("s", {"@h:x": "host", "@l:x": "listener"})
    assert await mem.play("s", b"OggS...", "audio/ogg", "@h:x") == 0.0
    assert mem.played == [("s", b"OggS...", "audio/ogg", "@h:x")]
    with pytest.raises(BridgeError, match="not a host"):
        await mem.play("s", b"OggS...", "audio/ogg", "@l:x")
    with pytest.raises(BridgeError, match="no open stage"):
        await mem.play("gone", b"OggS...", "audio/ogg", "@h:x")
