"""live.ogg as one shared stream per space: each page built once, the same bytes written
to every listener, a late listener joining at the next page, pages of ``ogg_page_ms``,
slow readers cut, HTTP/1.0 and HTTP/1.1 (chunked) alike. Real bridges on 127.0.0.1,
real ffmpeg for decoding; :class:`LiveOgg`'s page cutting also as pure logic."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.client import SpaceClient
from bridge.ogg import FLAG_BOS, FLAG_EOS, ogg_crc32
from bridge.oggstream import MAX_LACING, LiveOgg, OggListener
from bridge.settings import BridgeSettings, SettingsError

from .conftest import SECRET, make_settings, run_bridge, sine


@dataclass
class Page:
    flags: int
    granule: int
    serial: int
    seq: int
    packets: list[bytes]
    raw: bytes


def parse_pages(data: bytes) -> list[Page]:
    """Every whole Ogg page in ``data`` (each one's CRC checked)."""
    pages, pos = [], 0
    while pos + 27 <= len(data):
        assert data[pos:pos + 4] == b"OggS", f"no page at {pos}"
        flags, granule, serial, seq, crc = struct.unpack_from("<BqIII", data, pos + 5)
        count = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + count]
        size = 27 + count + sum(lacing)
        if pos + size > len(data):
            break
        raw = data[pos:pos + size]
        body = bytearray(raw)
        body[22:26] = b"\0\0\0\0"
        assert ogg_crc32(bytes(body)) == crc, f"bad CRC in page {seq}"
        packets, at, current = [], pos + 27 + count, b""
        for n in lacing:
            current += data[at:at + n]
            at += n
            if n < 255:
                packets.append(current)
                current = b""
        pages.append(Page(flags, granule, serial, seq, packets, raw))
        pos += size
    return pages


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body (a cut-off last chunk is dropped)."""
    out, pos = bytearray(), 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return bytes(out)
        size = int(body[pos:end], 16)
        if size == 0 or end + 2 + size + 2 > len(body):
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        assert body[end + 2 + size:end + 4 + size] == b"\r\n"
        pos = end + 4 + size


class Stream:
    """A raw HTTP client of live.ogg that keeps everything it receives."""

    def __init__(self, url: str, space_id: str, version: str = "1.1", path: str = "") -> None:
        self.url, self.space_id, self.version = url, space_id, version
        self.path = path or f"/spaces/{space_id}/live.ogg"
        self.raw = bytearray()
        self.done = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> Stream:
        port = int(self.url.rsplit(":", 1)[1])
        reader, self.writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        self.writer.write(f"GET {self.path} HTTP/{self.version}\r\n"
                          "Host: bridge\r\n\r\n".encode())

        async def read() -> None:
            try:
                while chunk := await reader.read(65536):
                    self.raw += chunk
                    if b"chunked" in self.head.lower() and self.raw.endswith(b"\r\n0\r\n\r\n"):
                        break  # the last chunk: the response is complete (kept alive)
            except ConnectionError:
                pass
            finally:
                self.done.set()
        self._task = asyncio.create_task(read())
        return self

    @property
    def head(self) -> bytes:
        return bytes(self.raw[:self.raw.find(b"\r\n\r\n") + 4])

    @property
    def body(self) -> bytes:
        rest = bytes(self.raw[len(self.head):])
        return dechunk(rest) if b"chunked" in self.head.lower() else rest

    def pages(self) -> list[Page]:
        return parse_pages(self.body)

    async def wait_pages(self, count: int, seconds: float = 10.0) -> list[Page]:
        async with asyncio.timeout(seconds):
            while len(self.pages()) < count:
                await asyncio.sleep(0.02)
        return self.pages()

    async def close(self) -> None:
        self.writer.transport.abort()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _decode(path) -> tuple[np.ndarray, str]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True, timeout=60)
    return np.frombuffer(out.stdout, dtype="<i2"), out.stderr.decode()


async def test_listeners_share_one_stream_and_a_late_one_joins_at_the_next_page(tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path, ogg_page_ms=100))
    first = second = None
    try:
        await running.open("share")
        stage = running.stage("share")
        first = await Stream(running.url, "share").start()
        await first.wait_pages(2 + 4)
        second = await Stream(running.url, "share").start()
        await second.wait_pages(2 + 4)
        assert len(stage.ogg_listeners) == 2
        status, _ = await running.control("DELETE", "/spaces/share")
        assert status == 200
        async with asyncio.timeout(10):  # both responses end by themselves
            await first.done.wait()
            await second.done.wait()
        a, b = first.pages(), second.pages()
    finally:
        for stream in (first, second):
            if stream is not None:
                await stream.close()
        await running.session.close()
        await running.runner.cleanup()
    for pages in (a, b):
        head, tags, audio = pages[0], pages[1], pages[2:]
        assert head.flags & FLAG_BOS and head.packets[0].startswith(b"OpusHead")
        assert tags.packets[0].startswith(b"OpusTags") and b"TITLE=Test share" in tags.packets[0]
        assert (head.seq, tags.seq) == (0, 1)
        assert {p.serial for p in pages} == {head.serial}
        # 100 ms pages: 5 packets of 960 samples each, sequence and granule in step
        assert all(len(p.packets) == 5 for p in audio[:-1])
        assert [p.seq for p in audio] == list(range(audio[0].seq, audio[0].seq + len(audio)))
        assert all(q.granule - p.granule == len(q.packets) * 960 for p, q in zip(audio, audio[1:], strict=False))
        assert audio[-1].flags & FLAG_EOS and not any(p.flags & FLAG_EOS for p in audio[:-1])
    # one stream: the same serial, and the late listener's audio pages are, byte for byte,
    # the pages the first listener got from that point on
    assert a[0].serial == b[0].serial
    joined = next(i for i, p in enumerate(a) if p.seq == b[2].seq)
    assert [p.raw for p in a[joined:]] == [p.raw for p in b[2:]]
    assert b[2].seq > a[2].seq  # it joined mid-stream, at a later page


async def test_a_late_listener_and_an_http_10_listener_decode_with_ffmpeg(tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path, ogg_page_ms=20))
    streams: list[Stream] = []
    try:
        await running.open("dec", roles={"@a:x": "speaker"})
        async with SpaceClient(running.url, "dec", running.token("dec", "@a:x", "speaker")) as a:
            speaking = asyncio.create_task(a.speak(sine(440, 6.0)))
            try:
                streams.append(await Stream(running.url, "dec").start())
                await streams[0].wait_pages(2 + 50)
                streams.append(await Stream(running.url, "dec", version="1.0").start())
                await streams[1].wait_pages(2 + 100)
            finally:
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
        status, _ = await running.control("DELETE", "/spaces/dec")
        assert status == 200
        async with asyncio.timeout(10):
            for stream in streams:
                await stream.done.wait()
    finally:
        for stream in streams:
            await stream.close()
        await running.session.close()
        await running.runner.cleanup()
    late = streams[1]
    assert late.head.startswith(b"HTTP/1.0 200") or late.head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in late.head.lower()  # HTTP/1.0: the pages as they are
    assert b"chunked" in streams[0].head.lower()
    for i, stream in enumerate(streams):
        path = tmp_path / f"{i}.ogg"
        path.write_bytes(stream.body)
        pcm, errors = _decode(path)
        assert errors == "", errors
        assert len(pcm) >= 960 * 100
        # the tone is in there: strongest frequency of the loudest second is 440 Hz
        loud = max(range(0, len(pcm) - 48000, 4800), key=lambda s: np.abs(pcm[s:s + 48000]).mean())
        spectrum = np.abs(np.fft.rfft(pcm[loud:loud + 48000].astype(np.float64)))
        assert abs(int(np.argmax(spectrum)) - 440) <= 2


async def test_a_stream_that_never_reads_is_cut_and_the_others_keep_every_page(tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path, listener_queue_frames=8, opus_bitrate=256000,
                                             ogg_page_ms=20))
    slow = None
    good = None
    try:
        await running.open("slow", roles={"@a:x": "speaker"})
        stage = running.stage("slow")
        noise = np.random.default_rng(2).integers(-20000, 20000, 48000 * 60).astype(np.int16)
        async with SpaceClient(running.url, "slow", running.token("slow", "@a:x", "speaker")) as a:
            good = await Stream(running.url, "slow").start()
            await good.wait_pages(3)
            port = int(running.url.rsplit(":", 1)[1])
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(slow, ("127.0.0.1", port))
            await loop.sock_sendall(slow, b"GET /spaces/slow/live.ogg HTTP/1.1\r\nHost: b\r\n\r\n")
            async with asyncio.timeout(10):
                while len(stage.ogg_listeners) != 2:
                    await asyncio.sleep(0.02)
            speaking = asyncio.create_task(a.speak(noise))
            try:
                async with asyncio.timeout(60):
                    while len(stage.ogg_listeners) != 1:
                        await asyncio.sleep(0.02)
            finally:
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
            assert not good.done.is_set()  # the reader was never cut
            pages = good.pages()
    finally:
        if slow is not None:
            slow.close()
        if good is not None:
            await good.close()
        await running.session.close()
        await running.runner.cleanup()
    audio = pages[2:]
    assert len(audio) > 50
    assert [p.seq for p in audio] == list(range(audio[0].seq, audio[0].seq + len(audio)))


async def test_a_new_title_reaches_listeners_who_join_after_it(bridge) -> None:
    await bridge.open("titled")
    before = await Stream(bridge.url, "titled").start()
    try:
        await before.wait_pages(2)
        status, _ = await bridge.control("POST", "/spaces/titled", {"title": "Gardens at noon",
                                                                    "public": True})
        assert status == 200
        after = await Stream(bridge.url, "titled").start()
        try:
            tags = (await after.wait_pages(2))[1].packets[0]
        finally:
            await after.close()
        assert b"TITLE=Gardens at noon" in tags
        assert b"TITLE=Test titled" in before.pages()[1].packets[0]
        assert after.pages()[0].serial == before.pages()[0].serial
    finally:
        await before.close()


# -- pure logic: LiveOgg's pages -------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False
        self.stuck = 0  # bytes that pretend not to leave

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.stuck

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1)


def _stream(page_packets: int, buffer_limit: int = 10_000) -> LiveOgg:
    return LiveOgg(pre_skip=312, title="t", page_packets=page_packets, buffer_limit=buffer_limit,
                   too_slow=(4408, "too slow"), space_id="s")


def test_pages_hold_page_packets_and_never_overflow_the_segment_table() -> None:
    stream = _stream(page_packets=50)
    transport = FakeTransport()
    stream.add(OggListener(transport, chunked=False))
    big = b"x" * 1275  # 6 lacing values: 42 fit in one page
    for _ in range(100):
        stream.push(big)
    pages = parse_pages(bytes(transport.data))
    assert [len(p.packets) for p in pages] == [42, 42]
    assert all(len(p.raw) < 65536 and p.raw[26] <= MAX_LACING for p in pages)
    assert pages[1].granule == 84 * 960
    small = _stream(page_packets=5)
    t2 = FakeTransport()
    small.add(OggListener(t2, chunked=True))
    for _ in range(12):
        small.push(b"y" * 100)
    assert [len(p.packets) for p in parse_pages(dechunk(bytes(t2.data)))] == [5, 5]


def test_pages_nobody_hears_are_not_built_but_keep_time() -> None:
    stream = _stream(page_packets=5)
    for _ in range(10):
        stream.push(b"z" * 50)
    transport = FakeTransport()
    stream.add(OggListener(transport, chunked=False))
    for _ in range(5):
        stream.push(b"z" * 50)
    (only,) = parse_pages(bytes(transport.data))
    assert (only.seq, only.granule) == (2 + 2, 15 * 960)
    assert stream.pages == 3


def test_a_listener_over_the_buffer_limit_or_gone_is_kicked_and_gets_nothing_more() -> None:
    stream = _stream(page_packets=1, buffer_limit=1000)
    slow, gone, fine = FakeTransport(), FakeTransport(), FakeTransport()
    listeners = [OggListener(t, chunked=False) for t in (slow, gone, fine)]
    for listener in listeners:
        stream.add(listener)
    stream.push(b"a" * 10)
    slow.stuck, gone.closing = 1001, True
    stream.push(b"b" * 10)
    assert listeners[0].kicked == (4408, "too slow") and listeners[0].kick_event.is_set()
    assert listeners[1].kicked == (4408, "gone: the connection closed")
    assert listeners[2].kicked is None
    written = len(slow.data)
    stream.push(b"c" * 10)
    assert len(slow.data) == written  # a kicked listener is written no more
    assert len(parse_pages(bytes(fine.data))) == 3
    stream.end(4410, "space ended")
    last = parse_pages(bytes(fine.data))[-1]
    assert last.flags & FLAG_EOS and listeners[2].kicked == (4410, "space ended")


@pytest.mark.parametrize("value", [0, 10, 30, 1020, 2000])
def test_ogg_page_ms_must_be_a_multiple_of_20_up_to_a_second(value) -> None:
    refused = r"bridge.ogg_page_ms: expected (a multiple of 20|an integer from 20 to 1000)"
    with pytest.raises(SettingsError, match=refused):
        BridgeSettings(shared_secret=SECRET, ogg_page_ms=value)
    assert BridgeSettings(shared_secret=SECRET, ogg_page_ms=1000).ogg_page_ms == 1000
