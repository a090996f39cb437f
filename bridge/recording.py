"""Recordings and clips on disk, and getting a recording back after a crash.

A recording is the mix appended tick by tick to a WAV file (48 kHz, mono, 16-bit), with a
small JSON note beside it that says whose it is (space, title, the process writing it).
When the stage stops recording the WAV becomes Ogg/Opus and both files go.

If the bridge dies mid-recording (SIGKILL, power cut) the WAV stays behind with a header
that only counts the first tick. The next bridge to start with the same
``recordings_dir`` finds it by its note, mends the header from the file's size, converts
what was recorded up to the crash and reports it as a ``recording_ready`` event with
``recovered: true``. A WAV whose writer is still running, or that has no note, is left
alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
SAMPLE_BYTES = 2
#: the header Python's wave module writes for PCM: RIFF, WAVE, a 16-byte fmt chunk, data
WAV_HEADER_BYTES = 44
NOTE_SUFFIX = ".json"
#: WAV files a Recorder of this process writes or converts (never taken for leftovers)
_WRITING: set[Path] = set()


def safe_name(space_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", space_id)[:80] or "space"


def note_path(wav_path: Path) -> Path:
    return wav_path.with_name(wav_path.name + NOTE_SUFFIX)


class Recorder:
    """Appends the mix to a WAV file tick by tick; converts to Ogg/Opus at the end."""

    def __init__(self, directory: Path, space_id: str, title: str = "",
                 instance: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.wav_path = directory / f"{safe_name(space_id)}-{stamp}-{time.monotonic_ns()}.wav"
        # the note first: a WAV found without one is never taken for a lost recording
        note_path(self.wav_path).write_text(json.dumps({
            "space_id": space_id, "title": title, "pid": os.getpid(), "instance": instance,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        _WRITING.add(self.wav_path.resolve())
        self._wav = wave.open(str(self.wav_path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(SAMPLE_BYTES)
        self._wav.setframerate(SAMPLE_RATE)
        self.samples = 0
        #: stage time (seconds since it opened) of the first recorded sample
        self.started_at = 0.0

    def write(self, pcm: np.ndarray) -> None:
        self._wav.writeframesraw(pcm.astype("<i2", copy=False).tobytes())
        self.samples += pcm.size

    def close(self) -> None:
        """Finish the WAV file; :func:`export_ogg` converts it."""
        self._wav.close()

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE


def export_ogg(wav_path: Path, ogg_path: Path, remove_wav: bool = True) -> float:
    """Convert a WAV file to Ogg/Opus with pydub; return its duration in seconds."""
    from pydub import AudioSegment

    try:
        segment = AudioSegment.from_wav(str(wav_path))
        segment.export(str(ogg_path), format="ogg", codec="libopus", bitrate="48k")
        if remove_wav:
            wav_path.unlink(missing_ok=True)
            note_path(wav_path).unlink(missing_ok=True)
    finally:
        _WRITING.discard(wav_path.resolve())
    return len(segment) / 1000.0


def write_clip(pcm: np.ndarray, ogg_path: Path) -> float:
    from pydub import AudioSegment

    segment = AudioSegment(pcm.astype("<i2").tobytes(), sample_width=SAMPLE_BYTES,
                           frame_rate=SAMPLE_RATE, channels=1)
    segment.export(str(ogg_path), format="ogg", codec="libopus", bitrate="48k")
    return len(segment) / 1000.0


# -- after a crash -------------------------------------------------------------------


class NotRecoverable(Exception):
    """A leftover WAV that is not one of ours, or is damaged beyond its header."""


@dataclass(frozen=True)
class Leftover:
    wav_path: Path
    space_id: str
    title: str


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: alive
        return True
    return True


def leftovers(directory: Path) -> list[Leftover]:
    """WAV files in ``directory`` left by a bridge that is no longer running.

    A WAV is taken when its note names a space and its writer is gone: a process that
    has ended, or this process when no Recorder of it still writes the file (a bridge
    stopped and started again in one process). Oldest first."""
    found: list[Leftover] = []
    if not directory.is_dir():
        return found
    for wav_path in sorted(directory.glob("*.wav"), key=lambda p: p.stat().st_mtime):
        note = note_path(wav_path)
        try:
            meta = json.loads(note.read_text())
            space_id, pid = str(meta["space_id"]), int(meta.get("pid", 0))
        except FileNotFoundError:
            continue  # not written by a recorder (or by one older than the notes)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("leftover recording %s: its note %s is unreadable (%s); left alone",
                        wav_path, note.name, exc)
            continue
        if wav_path.resolve() in _WRITING or (pid != os.getpid() and _process_alive(pid)):
            continue
        found.append(Leftover(wav_path, space_id, str(meta.get("title", ""))))
    return found


def mend_header(wav_path: Path) -> int:
    """Make the header of a WAV cut off mid-write count every complete sample in the file;
    returns the number of samples. NotRecoverable if it is not the PCM WAV a Recorder
    writes."""
    with wav_path.open("r+b") as f:
        header = f.read(WAV_HEADER_BYTES)
        if (len(header) < WAV_HEADER_BYTES or header[:4] != b"RIFF" or header[8:16] != b"WAVEfmt "
                or header[36:40] != b"data"):
            raise NotRecoverable(f"{wav_path.name} does not start with a PCM WAV header")
        channels, rate = struct.unpack_from("<HI", header, 22)
        bits = struct.unpack_from("<H", header, 34)[0]
        if (channels, rate, bits) != (1, SAMPLE_RATE, 8 * SAMPLE_BYTES):
            raise NotRecoverable(f"{wav_path.name} is {channels} channel(s), {rate} Hz, "
                                 f"{bits} bits, not a Chorus recording")
        size = f.seek(0, os.SEEK_END)
        data = (size - WAV_HEADER_BYTES) // SAMPLE_BYTES * SAMPLE_BYTES
        f.truncate(WAV_HEADER_BYTES + data)  # a half-written last sample goes
        f.seek(4)
        f.write(struct.pack("<I", 36 + data))
        f.seek(40)
        f.write(struct.pack("<I", data))
    return data // SAMPLE_BYTES


def recover(leftover: Leftover) -> tuple[Path, float]:
    """Mend and convert one leftover recording (blocking: run it in a thread). Returns the
    Ogg file and its duration; the WAV and its note are removed once the Ogg is written."""
    samples = mend_header(leftover.wav_path)
    if samples == 0:
        leftover.wav_path.unlink(missing_ok=True)
        note_path(leftover.wav_path).unlink(missing_ok=True)
        raise NotRecoverable(f"{leftover.wav_path.name} holds no audio; removed")
    ogg_path = leftover.wav_path.with_suffix(".ogg")
    return ogg_path, export_ogg(leftover.wav_path, ogg_path)
