"""Binary audio frames on the client WebSocket (see docs/protocol.md).

    byte 0      version (high nibble, currently 1) | kind (low nibble, 1 = Opus)
    bytes 1-4   sequence number, uint32 big-endian, +1 per 20 ms frame
    bytes 5-8   timestamp in samples at 48 kHz, uint32 big-endian
    bytes 9-    one Opus packet holding exactly 20 ms (960 samples), mono

A *bundle* (bridge → listen-only clients that asked for them, kind 2) carries several
consecutive frames in one message:

    byte 0      version 1 | kind 2 (0x12)
    byte 1      number of frames, 1-255
    then, per frame: its length (uint16 big-endian) and the frame itself, as above
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

WIRE_VERSION = 1
KIND_OPUS = 1
KIND_BUNDLE = 2
HEADER = struct.Struct(">BII")
HEADER_SIZE = HEADER.size  # 9
MAX_OPUS_PACKET = 1275
MAX_BUNDLE = 255
_BUNDLE_HEAD = bytes(((WIRE_VERSION << 4) | KIND_BUNDLE,))
_LENGTH = struct.Struct(">H")


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


def pack_bundle(frames: list[bytes]) -> bytes:
    """Consecutive packed frames (from :func:`pack`) as one bundle."""
    if not 0 < len(frames) <= MAX_BUNDLE:
        raise ValueError(f"a bundle holds 1 to {MAX_BUNDLE} frames, not {len(frames)}")
    parts = [_BUNDLE_HEAD, bytes((len(frames),))]
    for f in frames:
        parts.append(_LENGTH.pack(len(f)))
        parts.append(f)
    return b"".join(parts)


def is_bundle(data: bytes) -> bool:
    return len(data) > 0 and data[0] == _BUNDLE_HEAD[0]


def unpack_bundle(data: bytes) -> list[AudioFrame]:
    """The frames of a bundle, in order; FrameError if any part is malformed."""
    if len(data) < 2 or not is_bundle(data):
        raise FrameError("not a bundle")
    count, offset, frames = data[1], 2, []
    for _ in range(count):
        if offset + 2 > len(data):
            raise FrameError("bundle cut short")
        (n,) = _LENGTH.unpack_from(data, offset)
        offset += 2
        if offset + n > len(data):
            raise FrameError("bundle cut short")
        frames.append(unpack(data[offset:offset + n]))
        offset += n
    if offset != len(data) or not frames:
        raise FrameError("bundle has trailing bytes" if frames else "empty bundle")
    return frames
