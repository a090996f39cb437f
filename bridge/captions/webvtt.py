"""WebVTT transcripts (https://www.w3.org/TR/webvtt1/): one cue per final caption, the
speaker as a ``<v Name>`` voice tag, cues in start-time order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: a cue is shown at least this long, even for a one-word caption
MIN_CUE_SECONDS = 0.5


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    speaker: str
    text: str


def timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _voice(name: str) -> str:
    # a voice annotation ends at ">" and may not hold a line break
    return " ".join(_escape(name).split()) or "speaker"


def render(cues: Iterable[Cue], title: str = "") -> str:
    lines = ["WEBVTT" + (f" - {' '.join(title.split())}" if title else ""), ""]
    ordered = sorted((c for c in cues if c.text.strip()), key=lambda c: (c.start, c.end))
    for n, cue in enumerate(ordered, 1):
        text = " ".join(cue.text.split())
        start = max(0.0, cue.start)
        end = max(cue.end, start + MIN_CUE_SECONDS)
        lines += [str(n), f"{timestamp(start)} --> {timestamp(end)}",
                  f"<v {_voice(cue.speaker)}>{_escape(text)}", ""]
    return "\n".join(lines)


def write(path: str | Path, cues: Iterable[Cue], title: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".vtt.tmp")
    tmp.write_text(render(cues, title), encoding="utf-8")
    tmp.replace(path)
    return path
