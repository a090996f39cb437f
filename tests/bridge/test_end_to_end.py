"""Two speakers speak real (synthesised) speech; a listener and live.ogg hear both."""

import asyncio
import subprocess

import numpy as np

from bridge.client import SpaceClient, load_audio

from .conftest import best_correlation, rms


async def _ogg_reader(bridge, space_id, sink: bytearray, started: asyncio.Event):
    async with bridge.session.get(f"{bridge.url}/spaces/{space_id}/live.ogg") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("audio/ogg")
        started.set()
        async for chunk in resp.content.iter_any():
            sink.extend(chunk)


def _decode_ogg(path) -> np.ndarray:
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name,sample_rate,channels", "-of", "csv=p=0",
                            str(path)], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "opus,48000,1"
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac",
                          "1", "-ar", "48000", "-"], capture_output=True, check=True)
    assert out.stderr == b"", out.stderr
    return np.frombuffer(out.stdout, dtype="<i2")


async def test_two_speakers_heard_by_listener_and_ogg_stream(bridge, speech_a, speech_b,
                                                             tmp_path):
    await bridge.open("live", roles={"@a:x": "host", "@b:x": "speaker"})
    pcm_a, pcm_b = load_audio(speech_a), load_audio(speech_b)
    ogg_bytes = bytearray()
    started = asyncio.Event()
    ogg_task = asyncio.create_task(_ogg_reader(bridge, "live", ogg_bytes, started))
    await asyncio.wait_for(started.wait(), 5)
    async with SpaceClient(bridge.url, "live") as listener, \
            SpaceClient(bridge.url, "live", bridge.token("live", "@a:x", "host")) as a, \
            SpaceClient(bridge.url, "live", bridge.token("live", "@b:x", "speaker")) as b:
        for c in (listener, a, b):
            await c.wait_type("hello")
        start = listener.frames_received, a.frames_received, b.frames_received
        await asyncio.gather(a.speak(pcm_a), b.speak(pcm_b))
        # let the last frames through the jitter buffer and the relay
        await listener.wait_frames(start[0] + max(len(pcm_a), len(pcm_b)) // 960 + 25)
        heard = listener.heard()[start[0] * 960:]
        heard_a = a.heard()[start[1] * 960:]
        levels = [m for m in listener.messages if m["type"] == "levels"]
    ogg_task.cancel()
    await asyncio.gather(ogg_task, return_exceptions=True)

    # the listener hears both speakers
    assert rms(heard) > 500
    corr_a, corr_b = best_correlation(heard, pcm_a), best_correlation(heard, pcm_b)
    print("listener correlation", corr_a, corr_b)
    assert corr_a > 0.4 and corr_b > 0.4, (corr_a, corr_b)
    # speaker A hears B, not itself (mix-minus)
    self_a, other_a = best_correlation(heard_a, pcm_a), best_correlation(heard_a, pcm_b)
    print("speaker A self/other", self_a, other_a)
    assert other_a > 0.8 and other_a > self_a + 0.3, (self_a, other_a)
    # speaking indicators reached the listener
    assert any(lv["levels"].get("@a:x", -100) > -40 for lv in levels)
    assert any(lv["levels"].get("@b:x", -100) > -40 for lv in levels)

    # live.ogg decodes with ffmpeg and carries both speakers
    path = tmp_path / "live.ogg"
    path.write_bytes(bytes(ogg_bytes))
    decoded = _decode_ogg(path)
    assert len(decoded) > len(pcm_a) // 2
    assert rms(decoded) > 500
    ogg_a, ogg_b = best_correlation(decoded, pcm_a, 3), best_correlation(decoded, pcm_b, 3)
    print("ogg correlation", ogg_a, ogg_b)
    assert ogg_a > 0.4 and ogg_b > 0.4, (ogg_a, ogg_b)


async def test_ogg_stream_ends_cleanly_when_space_closes(bridge, tmp_path):
    await bridge.open("end")
    ogg_bytes = bytearray()
    started = asyncio.Event()
    task = asyncio.create_task(_ogg_reader(bridge, "end", ogg_bytes, started))
    await asyncio.wait_for(started.wait(), 5)
    stage = bridge.stage("end")

    async def some_audio():
        while stage.tick_count < 25:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(some_audio(), 5)
    status, _ = await bridge.control("DELETE", "/spaces/end")
    assert status == 200
    await asyncio.wait_for(task, 5)  # the response ends by itself
    path = tmp_path / "end.ogg"
    path.write_bytes(bytes(ogg_bytes))
    last_page = ogg_bytes.rfind(b"OggS")
    assert ogg_bytes[last_page + 5] & 0x04  # end-of-stream flag on the last page
    decoded = _decode_ogg(path)
    assert len(decoded) > 0


async def test_private_ogg_stream_needs_token(bridge):
    await bridge.open("priv", public=False)
    async with bridge.session.get(f"{bridge.url}/spaces/priv/live.ogg") as resp:
        assert resp.status == 403
    async with bridge.session.get(f"{bridge.url}/spaces/priv/live.ogg?token=nope") as resp:
        assert resp.status == 401
        assert "malformed" in (await resp.json())["error"]
    async with bridge.session.get(f"{bridge.url}/spaces/none/live.ogg") as resp:
        assert resp.status == 404
