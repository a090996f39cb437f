"""A transport that keeps what a stage writes to a client, for driving a Stage without a
server, and an RFC 6455 frame reader to read it back (written apart from bridge/wsframe.py,
so that the two check each other)."""

from __future__ import annotations

import json
import struct

from bridge.connection import Client


def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the start of ``data`` as (opcode, payload), and how many
    bytes they took. Fails on a masked frame, a fragment or a reserved bit."""
    frames, pos = [], 0
    while pos + 2 <= len(data):
        first, second = data[pos], data[pos + 1]
        assert first & 0x80, "fragmented frame"
        assert not first & 0x70, "reserved bits set"
        assert not second & 0x80, "a server frame must not be masked"
        length, head = second & 0x7F, 2
        if length == 126:
            if pos + 4 > len(data):
                break
            (length,), head = struct.unpack_from(">H", data, pos + 2), 4
        elif length == 127:
            if pos + 10 > len(data):
                break
            (length,), head = struct.unpack_from(">Q", data, pos + 2), 10
        if pos + head + length > len(data):
            break
        frames.append((first & 0x0F, bytes(data[pos + head:pos + head + length])))
        pos += head + length
    return frames, pos


class Tap:
    """Stands for an asyncio transport. ``reading=False`` makes every byte written stay
    "unsent" (a client that stopped reading); ``unsent`` is what the transport would hold."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.unsent = 0
        self.closing = False
        self._data = bytearray()

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(data)
        self._data += data
        if not self.reading:
            self.unsent += len(data)

    def drain(self, n: int) -> None:
        """The client reads ``n`` of the unsent bytes."""
        self.unsent -= min(n, self.unsent)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def take(self) -> list[tuple[int, bytes]]:
        """The messages written since the last take (whole frames only)."""
        frames, used = read_frames(bytes(self._data))
        del self._data[:used]
        return frames

    def take_split(self) -> tuple[list[dict], list[bytes]]:
        """Since the last take: the JSON messages, and the binary (audio) payloads."""
        texts, audio = [], []
        for opcode, payload in self.take():
            if opcode == 0x1:
                texts.append(json.loads(payload))
            elif opcode == 0x2:
                audio.append(payload)
        return texts, audio


def tapped(client: Client) -> Tap:
    tap = Tap()
    client.attach(tap, lambda: not tap.closing)
    return tap
