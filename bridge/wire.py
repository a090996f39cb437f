"""Binary audio frames on the client WebSocket (see docs/protocol.md).

    byte 0      version (high nibble, currently 1) | kind (low nibble, 1 = Opus)
    bytes 1-4   sequence number, uint32 big-endian, +1 per 20 ms frame
    bytes 5-8   timestamp in samples at 48 kHz, uint32 big-endian
    bytes 9-    one Opus packet holding exactly 20 ms (960 samples), mono
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

WIRE_VERSION = 1
KIND_OPUS = 1
HEADER = struct.Struct(">BII")
HEADER_SIZE = HEADER.size  # 9
MAX_OPUS_PACKET = 1275


class FrameError(ValueError):
    """A binary frame was refused; ``str()`` says why."""


@dataclass(frozen=True)
class AudioFrame:
    seq: int
    timestamp: int
    payload: bytes


def pack(seq: int, timestamp: int, payload: bytes, kind: int = KIND_OPUS) -> bytes:
    first = (WIRE_VERSION << 4) | kind
    return HEADER.pack(first, seq & 0xFFFFFFFF, timestamp & 0xFFFFFFFF) + payload


def unpack(data: bytes) -> AudioFrame:
    if len(data) <= HEADER_SIZE:
        raise FrameError(f"frame too short ({len(data)} bytes)")
    first, seq, ts = HEADER.unpack_from(data)
    version, kind = first >> 4, first & 0x0F
    if version != WIRE_VERSION:
        raise FrameError(f"unsupported frame version {version}")
    if kind != KIND_OPUS:
        raise FrameError(f"unsupported codec {kind}")
    payload = bytes(data[HEADER_SIZE:])
    if len(payload) > MAX_OPUS_PACKET:
        raise FrameError(f"opus packet too large ({len(payload)} bytes)")
    return AudioFrame(seq, ts, payload)
