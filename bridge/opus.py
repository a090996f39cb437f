"""A minimal ctypes binding to libopus (Debian's libopus0).

Only what the bridge needs: a 48 kHz mono encoder and decoder for 20 ms frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

SAMPLE_RATE = 48000
CHANNELS = 1
FRAME_SAMPLES = 960
MAX_PACKET = 1500
#: largest frame Opus can carry (120 ms at 48 kHz)
MAX_FRAME_SAMPLES = 5760

OPUS_APPLICATION_VOIP = 2048
OPUS_APPLICATION_AUDIO = 2049
OPUS_SET_BITRATE_REQUEST = 4002
OPUS_SET_COMPLEXITY_REQUEST = 4010
OPUS_GET_LOOKAHEAD_REQUEST = 4027


class OpusError(RuntimeError):
    pass


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - depends on the machine
        raise OpusError(f"libopus not found ({exc}); install libopus0") from exc
    c_int_p = ctypes.POINTER(ctypes.c_int)
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, c_int_p]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encode.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32,
    ]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encoder_destroy.restype = None
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, c_int_p]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decode.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_strerror.argtypes = [ctypes.c_int]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    return lib


_lib = _load()


def _err(code: int) -> str:
    return _lib.opus_strerror(code).decode("ascii", "replace")


class Encoder:
    """48 kHz mono Opus encoder for 960-sample int16 frames."""

    def __init__(self, bitrate: int = 48000, application: int = OPUS_APPLICATION_AUDIO,
                 complexity: int | None = None) -> None:
        err = ctypes.c_int(0)
        self._st = _lib.opus_encoder_create(SAMPLE_RATE, CHANNELS, application, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise OpusError(f"opus_encoder_create: {_err(err.value)}")
        # opus_encoder_ctl is variadic; pass the int explicitly.
        _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), OPUS_SET_BITRATE_REQUEST,
                              ctypes.c_int32(bitrate))
        if complexity is not None:
            _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), OPUS_SET_COMPLEXITY_REQUEST,
                                  ctypes.c_int32(complexity))
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    @property
    def lookahead(self) -> int:
        value = ctypes.c_int32(0)
        _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), OPUS_GET_LOOKAHEAD_REQUEST,
                              ctypes.byref(value))
        return int(value.value)

    def encode(self, pcm: np.ndarray) -> bytes:
        if pcm.dtype != np.int16 or pcm.shape != (FRAME_SAMPLES,):
            raise ValueError("encode wants 960 int16 samples")
        pcm = np.ascontiguousarray(pcm)
        n = _lib.opus_encode(self._st, pcm.ctypes.data, FRAME_SAMPLES, self._out, MAX_PACKET)
        if n < 0:
            raise OpusError(f"opus_encode: {_err(n)}")
        return self._out.raw[:n]

    def close(self) -> None:
        if self._st:
            _lib.opus_encoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        self.close()


class Decoder:
    """48 kHz mono Opus decoder; returns int16 arrays."""

    def __init__(self) -> None:
        err = ctypes.c_int(0)
        self._st = _lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise OpusError(f"opus_decoder_create: {_err(err.value)}")
        self._buf = np.zeros(MAX_FRAME_SAMPLES, dtype=np.int16)

    def decode(self, packet: bytes | None) -> np.ndarray:
        """Decode one packet (``None`` = packet loss concealment for 20 ms)."""
        if packet is None:
            n = _lib.opus_decode(self._st, None, 0, self._buf.ctypes.data, FRAME_SAMPLES, 0)
        else:
            n = _lib.opus_decode(self._st, packet, len(packet), self._buf.ctypes.data,
                                 MAX_FRAME_SAMPLES, 0)
        if n < 0:
            raise OpusError(f"opus_decode: {_err(n)}")
        return self._buf[:n].copy()

    def close(self) -> None:
        if self._st:
            _lib.opus_decoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        self.close()


def packet_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) in an Opus packet, or raise OpusError if it is invalid."""
    if not packet:
        raise OpusError("empty packet")
    n = _lib.opus_packet_get_nb_samples(packet, len(packet), SAMPLE_RATE)
    if n < 0:
        raise OpusError(f"invalid packet: {_err(n)}")
    return n
