"""Captions bench: recogniser real-time factor per active speaker, and how many speakers
can be captioned at once on this machine.

    .venv/bin/python bench/captions_bench.py [--max-speakers 8] [--workers N]

1. RTF of one speaker: festival speech through one worker process (resampling and
   recognition, as the bridge does it), busy time / audio time.
2. Capacity: N speakers all talking at once, fed in real time into a pool of
   ``--workers`` processes (default: CPU count). A speaker count is sustainable when
   every final caption arrives within 2 s of the end of its utterance and the
   backlog does not grow; the largest sustainable N is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.captions import CaptionPool, StageCaptions  # noqa: E402
from bridge.client import frames_of, load_audio  # noqa: E402
from bridge.mixer import dbfs  # noqa: E402
from tests.bridge.conftest import SENTENCE_A, SENTENCE_B, synthesise  # noqa: E402


async def run(pool: CaptionPool, speech: list[np.ndarray], speakers: int) -> dict:
    stage = StageCaptions(pool, "bench", broadcast=lambda e: None, emit=lambda e: None)
    stage.enable()
    gap = np.zeros(48000, np.int16)
    tracks = [frames_of(np.concatenate([gap[: 4800 * (i % 7)], speech[i % len(speech)], gap]))
              for i in range(speakers)]
    n_frames = max(len(t) for t in tracks)
    silent = np.zeros(960, np.int16)
    busy0, audio0 = pool.busy_seconds, pool.audio_seconds
    t0 = time.perf_counter()
    for tick in range(1, n_frames + 1):
        target = t0 + tick * 0.02
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        frames = {k: (t[tick - 1] if tick <= len(t) else silent) for k, t in enumerate(tracks)}
        levels = {k: dbfs(f) for k, f in frames.items()}
        stage.feed(tick, frames, levels, lambda k: f"@s{k}:bench")
    flush_start = time.perf_counter()
    await stage.flush(end_open=True, timeout=120)
    lag = time.perf_counter() - flush_start
    audio = pool.audio_seconds - audio0
    busy = pool.busy_seconds - busy0
    return {"speakers": speakers, "finals": len(stage.finals), "audio_s": audio,
            "busy_s": busy, "rtf": busy / audio if audio else 0.0,
            "final_lag_s": lag, "dropped": pool.chunks_dropped, "text": stage.finals}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-speakers", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    speech = [load_audio(synthesise(SENTENCE_A)), load_audio(synthesise(SENTENCE_B))]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPU(s), "
          f"{platform.processor() or platform.platform()}, Python {platform.python_version()}")

    pool = CaptionPool(workers=1)
    t = time.perf_counter()
    await pool.start()
    print(f"pocketsphinx worker start + model load: {time.perf_counter() - t:.2f} s")
    one = await run(pool, speech[:1], 1)
    print(f"1 speaker, 1 worker: RTF {one['rtf']:.3f} (busy {one['busy_s']:.2f} s for "
          f"{one['audio_s']:.2f} s of speech); final caption {one['final_lag_s']:.2f} s "
          f"after the speaker stopped")
    print("   text:", " | ".join(c.text for c in one["text"]))
    await pool.close()

    pool = CaptionPool(workers=args.workers)
    await pool.start()
    best = 0
    for n in range(1, args.max_speakers + 1):
        r = await run(pool, speech, n)
        ok = r["final_lag_s"] < 2.0 and r["dropped"] == 0 and r["finals"] >= n
        print(f"{n} speakers at once, {args.workers} worker(s): RTF per speaker "
              f"{r['rtf']:.3f}, last final {r['final_lag_s']:.2f} s after speech ended, "
              f"{r['finals']} finals -> {'ok' if ok else 'falls behind'}")
        if not ok:
            break
        best = n
    print(f"speakers captioned at once (finals within 2 s): {best}"
          + (" (limit of the run)" if best == args.max_speakers else ""))
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
