"""WebSocket frames as a server sends them (RFC 6455 §5.2): built once, written as bytes.

The stage builds each tick's audio frame, and each broadcast JSON text, as one complete
WebSocket frame and writes the very same bytes to every connection's transport, instead
of asking each connection's WebSocket writer to build its own. Server frames are never
masked and never compressed (the bridge's client WebSockets are opened with
``compress=False``), so a frame's bytes are the same for every client.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_PING = 0x9
FIN = 0x80

_LEN16 = struct.Struct(">BBH")
_LEN64 = struct.Struct(">BBQ")

#: a ping with no payload; clients answer with a pong (the bridge's liveness check)
PING = bytes((FIN | OP_PING, 0))


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame carrying ``payload``."""
    first = FIN | opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return _LEN16.pack(first, 126, n) + payload
    return _LEN64.pack(first, 127, n) + payload


def binary(payload: bytes) -> bytes:
    return frame(OP_BINARY, payload)


def text(payload: str) -> bytes:
    return frame(OP_TEXT, payload.encode())
