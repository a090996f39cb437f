"""The bridge's per-tick costs alone, with no other load on the machine:

    .venv/bin/python bench/mix_bench.py [--speakers 11] [--ticks 500] [--clients 1000]

- mixing: N speakers' Opus frames decoded and mixed (bridge/mixer.py), then the shared
  encode and N mix-minus encodes, as a stage does each 20 ms; p50/p99 per tick;
- fan-out, Python side: ``Client.deliver`` to clients whose transport does nothing, so
  what is timed is the bridge's own work per listener per frame, without the ``send()``.

Figures go in bench/RESULTS.md by hand (a single process; no peer to compare with).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import opus  # noqa: E402
from bridge.connection import Client  # noqa: E402
from bridge.mixer import Mixer  # noqa: E402

FRAME = 960


def mixing(speakers: int, ticks: int) -> tuple[float, float]:
    t = np.arange(FRAME * ticks) / 48000
    packets = []
    for i in range(speakers):
        enc = opus.Encoder(32000, application=opus.OPUS_APPLICATION_VOIP)
        tone = (8000 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.int16)
        packets.append([enc.encode(tone[j * FRAME:(j + 1) * FRAME]) for j in range(ticks)])
        enc.close()
    decoders = [opus.Decoder() for _ in range(speakers)]
    mixer = Mixer(4, 1)
    for i, dec in enumerate(decoders):
        mixer.add_speaker(i, decode=dec.decode)
    shared = opus.Encoder(48000)
    own = [opus.Encoder(48000) for _ in range(speakers)]
    times = []
    for j in range(ticks):
        for i in range(speakers):
            mixer.push(i, j, packets[i][j])
        start = time.perf_counter()
        result = mixer.tick()
        shared.encode(result.mix)
        for i in range(speakers):
            own[i].encode(result.minus[i])
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


class NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def fan_out(clients: int, ticks: int) -> float:
    """µs of Python per client per frame."""
    cs = [Client(None, "listener", 1 << 30) for _ in range(clients)]
    for c in cs:
        c.attach(NullTransport(), lambda: True)
    frame = bytes(130)
    now = time.monotonic()
    start = time.perf_counter()
    for _ in range(ticks):
        now += 0.02
        for c in cs:
            c.deliver(frame, now)
    return (time.perf_counter() - start) / (clients * ticks) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speakers", type=int, default=11)
    p.add_argument("--ticks", type=int, default=500)
    p.add_argument("--clients", type=int, default=1000)
    args = p.parse_args()
    p50, p99 = mixing(args.speakers, args.ticks)
    print(f"mixing, {args.speakers} speakers: p50 {p50:.3f} ms, p99 {p99:.3f} ms per tick")
    print(f"fan-out, Python side: {fan_out(args.clients, 100):.2f} µs per client per frame")


if __name__ == "__main__":
    main()
