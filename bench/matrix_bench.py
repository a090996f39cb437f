"""What the benchmarks that run the bot on a local Synapse share (command_flood_bench.py,
db_tick_bench.py): a percentile, the lines that say where a table was measured, and the
folder a run keeps its logs in."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The value at fraction ``q`` (0..1) of the sorted ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def header(command: str, label: str = "") -> list[str]:
    """The Markdown lines above a result table: when, on what machine, with what command."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return [f"- date: {when}" + (f"; {label}" if label else ""),
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            f"- command: `{command}`", ""]


@contextlib.contextmanager
def work_folder(prefix: str, keep: bool) -> Iterator[Path]:
    """A folder for the run's bot and Synapse; removed afterwards unless ``keep``."""
    if keep:
        folder = tempfile.mkdtemp(prefix=prefix)
        print(f"logs are kept in {folder}", flush=True)
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)
