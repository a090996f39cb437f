"""Recordings and clips on disk, and getting a recording back after a crash.

A recording is the mix appended tick by tick to a WAV file (48 kHz, mono, 16-bit), each
tick written straight to the file (no buffer in the process), with a small JSON note
beside it that says whose it is (space, title). The recorder holds an exclusive lock on
the note (flock) until the recording is converted; the kernel lets go of it when the
process dies, however it dies. When the stage stops recording the WAV becomes Ogg/Opus
and both files go.

If the bridge dies mid-recording (SIGKILL, power cut) the WAV stays behind with a header
that only counts the first tick. The next bridge to start with the same
``recordings_dir`` finds it by its note, which it can lock, mends the header from the
file's size, converts everything that reached the disk and reports it as a
``recording_ready`` event with ``recovered: true``. A WAV whose note is locked (its
recorder still runs, in this process or another on the same machine) or that has no note
is left alone; one that cannot be converted keeps its WAV and has its note renamed to
``.json.failed``, so it is reported once.
"""

from __future__ import annotations

import contextlib
import fcntl
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
FAILED_SUFFIX = ".failed"
#: the names of the files the bridge hands out (GET /control/v1/files/{name}): recordings,
#: clips and transcripts; no folders, no dot files
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}\.(ogg|vtt)")
FILE_TYPES = {"ogg": "audio/ogg", "vtt": "text/vtt"}


def safe_name(space_id: str) -> str:
    """A space id as the start of a file name: letters, digits, ``_.-``, never a dot file
    or an option (what FILE_NAME accepts)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", space_id)[:80].lstrip(".-") or "space"


def note_path(wav_path: Path) -> Path:
    return wav_path.with_name(wav_path.name + NOTE_SUFFIX)


def set_aside(wav_path: Path) -> None:
    """Keep a WAV that could not be converted for a person to look at, and never report it
    again: its note becomes ``.json.failed``."""
    note = note_path(wav_path)
    with contextlib.suppress(OSError):
        note.rename(note.with_name(note.name + FAILED_SUFFIX))


def _lock(path: Path) -> int | None:
    """An exclusive lock on ``path`` (its open descriptor), or None if someone holds it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class Recorder:
    """Appends the mix to a WAV file tick by tick; :meth:`convert` makes it Ogg/Opus."""

    def __init__(self, directory: Path, space_id: str, title: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.wav_path = directory / f"{safe_name(space_id)}-{stamp}-{time.monotonic_ns()}.wav"
        # the note first, locked: a WAV found without one is never taken for a lost
        # recording, nor one whose note is locked
        note = note_path(self.wav_path)
        note.write_text(json.dumps({"space_id": space_id, "title": title, "pid": os.getpid(),
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        fd = _lock(note)
        assert fd is not None, "a new note cannot be locked by anyone else"
        self._note_fd: int | None = fd
        # unbuffered: each tick reaches the file at once, so a crash loses none of it
        self._file = open(self.wav_path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._wav = wave.open(self._file, "wb")
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
        """Finish the WAV file (its header counts every sample); :meth:`convert` next."""
        self._wav.close()
        self._file.close()

    def convert(self, ogg_path: Path) -> float:
        """Convert the closed WAV to ``ogg_path`` (blocking: run it in a thread); the WAV
        and its note go. On failure the WAV is kept and set aside. Either way the note's
        lock is let go."""
        try:
            return export_ogg(self.wav_path, ogg_path)
        except BaseException:
            set_aside(self.wav_path)
            raise
        finally:
            if self._note_fd is not None:
                os.close(self._note_fd)
                self._note_fd = None

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE


def export_ogg(wav_path: Path, ogg_path: Path, remove_wav: bool = True) -> float:
    """Convert a WAV file to Ogg/Opus with pydub; return its duration in seconds."""
    from pydub import AudioSegment

    segment = AudioSegment.from_wav(str(wav_path))
    segment.export(str(ogg_path), format="ogg", codec="libopus", bitrate="48k")
    if remove_wav:
        wav_path.unlink(missing_ok=True)
        note_path(wav_path).unlink(missing_ok=True)
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
    #: the note's lock, held while it is recovered
    lock_fd: int


def leftovers(directory: Path) -> list[Leftover]:
    """WAV files in ``directory`` left by a recorder that is no longer running: those whose
    note names a space and can be locked. Oldest first. The caller owns each one's lock
    (``Leftover.lock_fd``) and passes it to :func:`recover`, or :func:`release`s it."""
    found: list[tuple[float, Leftover]] = []
    if not directory.is_dir():
        return []
    for wav_path in directory.glob("*.wav"):
        note = note_path(wav_path)
        try:
            fd = _lock(note)
        except FileNotFoundError:
            continue  # not written by a recorder (or by one older than the notes)
        except OSError as exc:
            log.warning("leftover recording %s: its note cannot be opened (%s); left alone",
                        wav_path, exc)
            continue
        if fd is None:
            continue  # its recorder is still at work
        try:
            meta = json.loads(os.pread(fd, 64 * 1024, 0))
            space_id = str(meta["space_id"])
            found.append((wav_path.stat().st_mtime,
                          Leftover(wav_path, space_id, str(meta.get("title", "")), fd)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            os.close(fd)
            log.warning("leftover recording %s: its note %s is unreadable (%s); left alone",
                        wav_path, note.name, exc)
    return [left for _, left in sorted(found, key=lambda pair: pair[0])]


def release(leftover: Leftover) -> None:
    with contextlib.suppress(OSError):
        os.close(leftover.lock_fd)


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


def recover(leftover: Leftover) -> tuple[Path, float] | None:
    """Mend and convert one leftover recording (blocking: run it in a thread). Returns the
    Ogg file and its duration; the WAV and its note are removed once the Ogg is written.
    None for a WAV with no audio in it (removed). On failure (NotRecoverable, a conversion
    error) the WAV is kept and set aside. The note's lock is let go in every case."""
    try:
        samples = mend_header(leftover.wav_path)
        if samples == 0:
            leftover.wav_path.unlink(missing_ok=True)
            note_path(leftover.wav_path).unlink(missing_ok=True)
            return None
        ogg_path = leftover.wav_path.with_suffix(".ogg")
        return ogg_path, export_ogg(leftover.wav_path, ogg_path)
    except BaseException:
        set_aside(leftover.wav_path)
        raise
    finally:
        release(leftover)
