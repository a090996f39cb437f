"""A recording cut off by a crash (bridge/recording.py): its WAV is mended and converted
by the next bridge to start, and reported; what is not ours, or is still being written,
is left alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.bridge_http import HttpBridge
from bridge import recording
from bridge.recording import NotRecoverable, Recorder

from .conftest import SECRET, make_settings, run_bridge, sine

ROOT = Path(__file__).resolve().parents[2]

#: a Recorder writing ``seconds`` of tone, then the process killing itself with SIGKILL
CRASH = """
import os, signal, sys
import numpy as np
from pathlib import Path
from bridge.recording import Recorder
rec = Recorder(Path(sys.argv[1]), sys.argv[2], "Cut off")
tone = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
for _ in range(int(float(sys.argv[3]) * 50)):
    rec.write(tone)
os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_mid_recording(directory: Path, space_id: str, seconds: float) -> Path:
    proc = subprocess.run([sys.executable, "-c", CRASH, str(directory), space_id, str(seconds)],
                          cwd=ROOT, timeout=60, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    (wav,) = directory.glob("*.wav")
    return wav


def test_a_wav_cut_off_by_sigkill_is_mended_and_converted(tmp_path) -> None:
    wav = crash_mid_recording(tmp_path, "sp/1", 2.0)
    with wave.open(str(wav)) as w:  # the header the crash left counts one tick only
        assert w.getnframes() == 960
    (left,) = recording.leftovers(tmp_path)
    assert left.space_id == "sp/1" and left.title == "Cut off"
    ogg, duration = recording.recover(left)
    # all but what was still in the writer's buffer (8 KiB, 85 ms) when it was killed
    assert 2.0 - 0.09 <= duration <= 2.0
    assert ogg.is_file() and not wav.exists() and not recording.note_path(wav).exists()
    assert recording.leftovers(tmp_path) == []


def test_what_is_not_a_lost_recording_is_left_alone(tmp_path) -> None:
    # a WAV with no note (not written by a Recorder)
    stray = tmp_path / "stray.wav"
    with wave.open(str(stray), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
        w.writeframes(sine(440, 0.1).tobytes())
    # one whose writer is another process still running (pid 1)
    busy = tmp_path / "busy.wav"
    busy.write_bytes(stray.read_bytes())
    recording.note_path(busy).write_text(json.dumps({"space_id": "b", "pid": 1}))
    # one this process is writing now
    live = Recorder(tmp_path, "live")
    live.write(sine(440, 0.1))
    try:
        assert recording.leftovers(tmp_path) == []
    finally:
        live.close()


def test_damaged_leftovers_are_refused_with_the_reason(tmp_path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all" * 10)
    with pytest.raises(NotRecoverable, match="does not start with a PCM WAV header"):
        recording.mend_header(junk)
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(44100)
        w.writeframes(np.zeros(200, np.int16).tobytes())
    with pytest.raises(NotRecoverable, match="2 channel"):
        recording.mend_header(stereo)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
    recording.note_path(empty).write_text(json.dumps({"space_id": "e", "pid": 0}))
    (left,) = recording.leftovers(tmp_path)
    with pytest.raises(NotRecoverable, match="holds no audio"):
        recording.recover(left)
    assert not empty.exists()


async def test_a_bridge_starting_on_a_crashed_recording_reports_it_to_the_bot(tmp_path) -> None:
    settings = make_settings(tmp_path)
    rec_dir = Path(settings.recordings_dir)
    rec_dir.mkdir(parents=True, exist_ok=True)
    crash_mid_recording(rec_dir, "lost", 1.0)
    broken = rec_dir / "broken.wav"
    broken.write_bytes(b"RIFF....garbage")
    recording.note_path(broken).write_text(json.dumps({"space_id": "broken", "pid": 0}))
    running = await run_bridge(settings)
    hb = HttpBridge(running.url, running.url, SECRET)
    events: asyncio.Queue = asyncio.Queue()
    hb.on_event(events.put)
    try:
        await hb.start()
        seen = {}
        async with asyncio.timeout(30):
            while len(seen) < 2:
                event = await events.get()
                seen[event["space_id"]] = event
        ready, failed = seen["lost"], seen["broken"]
        assert ready["type"] == "recording_ready" and ready["recovered"] is True
        assert 1.0 - 0.09 <= ready["duration"] <= 1.0
        assert Path(ready["path"]).is_file()
        assert failed["type"] == "recording_failed" and failed["recovered"] is True
        assert "PCM WAV header" in failed["reason"]
        assert broken.exists()  # kept for a person to look at
    finally:
        await hb.close()
        await running.session.close()
        await running.runner.cleanup()
