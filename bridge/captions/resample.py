"""48 kHz → 16 kHz for the recognisers: a windowed-sinc low-pass, then keep every 3rd
sample. Streaming (keeps the filter's tail between calls); pure numpy."""

from __future__ import annotations

import numpy as np

FACTOR = 3
TAPS = 95


def _lowpass(taps: int = TAPS, cutoff_hz: float = 7000.0, rate: float = 48000.0) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * n) * np.kaiser(taps, 8.0)
    return (h / h.sum()).astype(np.float32)


_FILTER = _lowpass()


class Downsampler:
    """Feed 48 kHz int16 in any lengths; get 16 kHz int16 out, continuous across calls."""

    def __init__(self) -> None:
        self._tail = np.zeros(TAPS - 1, dtype=np.float32)
        self._phase = 0  # index into the next input of the next sample to keep

    def __call__(self, pcm48: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._tail, pcm48.astype(np.float32)])
        self._tail = x[len(x) - (TAPS - 1):]
        windows = np.lib.stride_tricks.sliding_window_view(x, TAPS)[self._phase::FACTOR]
        self._phase = (self._phase - len(pcm48)) % FACTOR
        y = windows @ _FILTER[::-1]
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)
