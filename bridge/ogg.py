"""Ogg page framing for an Opus stream (RFC 3533, RFC 7845), written by hand.

:class:`OggOpusWriter` turns Opus packets into Ogg pages: the OpusHead page (beginning
of stream) and OpusTags are pages 0 and 1 and can be built again at any time (a live
listener who joins later gets them, then the next audio page); audio pages hold one or
more packets (:meth:`OggOpusWriter.audio_page`).
"""

from __future__ import annotations

import struct


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC_TABLE = _make_table()


def ogg_crc32(data: bytes) -> int:
    """CRC-32 with polynomial 0x04C11DB7, no reflection, init 0, no final xor."""
    crc = 0
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return crc


FLAG_CONTINUED = 0x01
FLAG_BOS = 0x02
FLAG_EOS = 0x04
_PAGE_HEADER = struct.Struct("<4sBBqIII")


def page(
    packets: list[bytes], granule: int, serial: int, sequence: int, flags: int = 0
) -> bytes:
    """One Ogg page holding whole ``packets`` (each under 255*255 bytes in total)."""
    lacing = bytearray()
    for packet in packets:
        n = len(packet)
        lacing.extend(b"\xff" * (n // 255))
        lacing.append(n % 255)
    if len(lacing) > 255:
        raise ValueError("too many segments for one page")
    header = _PAGE_HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0)
    raw = bytearray(header + bytes([len(lacing)]) + bytes(lacing) + b"".join(packets))
    struct.pack_into("<I", raw, 22, ogg_crc32(raw))
    return bytes(raw)


def opus_head(pre_skip: int, channels: int = 1, input_rate: int = 48000) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


def opus_tags(vendor: str = "chorus bridge", comments: tuple[str, ...] = ()) -> bytes:
    v = vendor.encode("utf-8")
    out = b"OpusTags" + struct.pack("<I", len(v)) + v + struct.pack("<I", len(comments))
    for c in comments:
        cb = c.encode("utf-8")
        out += struct.pack("<I", len(cb)) + cb
    return out


class OggOpusWriter:
    """Builds the pages of one Ogg/Opus logical stream."""

    def __init__(self, serial: int, pre_skip: int = 312, title: str | None = None) -> None:
        self.serial = serial & 0xFFFFFFFF
        self.pre_skip = pre_skip
        self.title = title
        self._seq = 2  # 0 and 1 are the header pages
        self.granule = 0

    def headers(self) -> bytes:
        """The OpusHead and OpusTags pages (sequence 0 and 1), for any listener's start."""
        comments = (f"TITLE={self.title}",) if self.title else ()
        return (page([opus_head(self.pre_skip)], 0, self.serial, 0, FLAG_BOS)
                + page([opus_tags(comments=comments)], 0, self.serial, 1))

    def audio_page(self, packets: list[bytes], samples: int = 960, last: bool = False) -> bytes:
        """One page of ``packets`` (``samples`` per packet); advances the granule."""
        self.granule += samples * len(packets)
        out = page(packets, self.granule, self.serial, self._seq, FLAG_EOS if last else 0)
        self._seq += 1
        return out

    def skip_page(self, count: int, samples: int = 960) -> None:
        """Account for a page of ``count`` packets that nobody needs built."""
        self.granule += samples * count
        self._seq += 1

    def audio(self, packet: bytes, samples: int = 960, last: bool = False) -> bytes:
        return self.audio_page([packet], samples, last)


def lacing_values(packet: bytes) -> int:
    """Segment-table entries a packet takes in a page (255 at most per page)."""
    return len(packet) // 255 + 1
