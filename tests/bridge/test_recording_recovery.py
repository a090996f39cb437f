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
    done = recording.recover(left)
    assert done is not None
    ogg, duration = done
    assert duration == 2.0  # every tick written before the kill
    assert ogg.is_file() and not wav.exists() and not recording.note_path(wav).exists()
    assert recording.leftovers(tmp_path) == []


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def _tone_wav(path: Path, note: dict | None) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
        w.writeframes(sine(440, 0.1).tobytes())
    if note is not None:
        recording.note_path(path).write_text(json.dumps(note))


def test_what_is_not_a_lost_recording_is_left_alone(tmp_path) -> None:
    _tone_wav(tmp_path / "stray.wav", None)  # no note: not written by a recorder
    busy = tmp_path / "busy.wav"  # its recorder, in another process, still holds the note
    _tone_wav(busy, {"space_id": "b"})
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(recording.note_path(busy))],
                              stdout=subprocess.PIPE)
    live = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        live = Recorder(tmp_path, "live")  # a recorder of this process, at work
        live.write(sine(440, 0.1))
        assert recording.leftovers(tmp_path) == []
    finally:
        holder.kill()
        holder.wait(15)
        if live is not None:
            live.close()
    # the holder is gone (killed): its recording is now a leftover; the live one is not
    (left,) = recording.leftovers(tmp_path)
    assert left.wav_path == busy
    recording.release(left)


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
    # a leftover that cannot be converted is kept, set aside, and not taken again
    recording.note_path(junk).write_text(json.dumps({"space_id": "j"}))
    (left,) = recording.leftovers(tmp_path)
    with pytest.raises(NotRecoverable):
        recording.recover(left)
    assert junk.exists() and (tmp_path / "junk.wav.json.failed").exists()
    assert recording.leftovers(tmp_path) == []
    # one with no audio at all is removed, quietly
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
    recording.note_path(empty).write_text(json.dumps({"space_id": "e"}))
    (left,) = recording.leftovers(tmp_path)
    assert recording.recover(left) is None
    assert not empty.exists() and not recording.note_path(empty).exists()


async def test_a_bridge_starting_on_a_crashed_recording_reports_it_to_the_bot(tmp_path) -> None:
    settings = make_settings(tmp_path)
    rec_dir = Path(settings.recordings_dir)
    rec_dir.mkdir(parents=True, exist_ok=True)
    crash_mid_recording(rec_dir, "lost", 1.0)
    broken = rec_dir / "broken.wav"
    broken.write_bytes(b"RIFF....garbage")
    recording.note_path(broken).write_text(json.dumps({"space_id": "broken"}))
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
        assert ready["duration"] == 1.0
        assert Path(ready["path"]).is_file()
        assert failed["type"] == "recording_failed" and failed["recovered"] is True
        assert "PCM WAV header" in failed["reason"]
        assert broken.exists()  # kept for a person to look at, and not reported again
        assert recording.leftovers(rec_dir) == []
    finally:
        await hb.close()
        await running.session.close()
        await running.runner.cleanup()


def test_a_recording_whose_conversion_fails_is_set_aside_not_recovered_later(tmp_path) -> None:
    rec = Recorder(tmp_path, "sp", "Fails")
    rec.write(sine(440, 0.2))
    rec.close()
    with pytest.raises(Exception):  # noqa: B017 - ffmpeg's own error, whatever it is
        rec.convert(tmp_path / "no such folder" / "out.ogg")
    assert rec.wav_path.exists() and not recording.note_path(rec.wav_path).exists()
    assert recording.leftovers(tmp_path) == []  # reported once (recording_failed), not again
