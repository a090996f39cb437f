"""A small Python client for a bridge space (tests, bench, demo).

    async with SpaceClient("http://127.0.0.1:8089", "space1", token=tok) as c:
        await c.speak_wav("hello.wav")          # real time, 20 ms frames
        c.save_wav("heard.wav")                 # what it heard

With ``reconnect=True`` a lost connection comes back by itself, with backoff and jitter,
as the web page's does: not after a close that says trying again cannot help (bad token,
forbidden, space ended), and after "no such space" (4404) for 90 s from the first such
answer: a bridge that restarted knows the space again once the bot has opened it there.

Command line: ``python -m bridge.client URL SPACE [--token T] [--speak in.wav]
[--record out.wav] [--seconds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from . import opus, wire

log = logging.getLogger(__name__)

FRAME = 960
RATE = 48000
#: close codes after which reconnecting cannot help (docs/protocol.md)
FINAL_CLOSES = frozenset({4401, 4403, 4410})
CLOSE_NO_SPACE = 4404
#: after a lost connection, "no such space" is retried this long: a restarted bridge
#: knows its spaces again once the bot has pushed them
RESTORE_WAIT_SECONDS = 90.0
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


def load_audio(path: str | Path) -> np.ndarray:
    """Any file ffmpeg reads → 48 kHz mono int16 samples (pydub)."""
    from pydub import AudioSegment

    seg = AudioSegment.from_file(str(path))
    seg = seg.set_frame_rate(RATE).set_channels(1).set_sample_width(2)
    return np.frombuffer(seg.raw_data, dtype="<i2").astype(np.int16)


def save_wav(path: str | Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    n = -(-len(pcm) // FRAME)
    padded = np.zeros(n * FRAME, dtype=np.int16)
    padded[: len(pcm)] = pcm
    return [padded[i * FRAME:(i + 1) * FRAME] for i in range(n)]


class SpaceClient:
    def __init__(self, base_url: str, space_id: str, token: str | None = None, *,
                 keep_audio: bool = True, session: aiohttp.ClientSession | None = None,
                 read: bool = True, bundles: bool = False, reconnect: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.space_id = space_id
        self.token = token
        self.keep_audio = keep_audio
        self.read = read
        #: ask for bundles (several frames per message) while listen-only
        self.bundles = bundles
        self.bundles_received = 0
        self._session = session
        self._own_session = session is None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages: list[dict[str, Any]] = []
        self.audio: list[np.ndarray] = []
        self.frames_received = 0
        self.bytes_received = 0
        self.on_frame: Callable[[int, np.ndarray, float], None] | None = None
        self._decoder = opus.Decoder()
        self._encoder: opus.Encoder | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: come back by itself after a lost connection (see the module's docstring)
        self.reconnect = reconnect
        self.reconnects = 0
        #: frames not sent because the connection was down
        self.frames_dropped = 0
        self._closing = False

    @property
    def ws_url(self) -> str:
        url = self.base_url.replace("http", "ws", 1) + f"/spaces/{self.space_id}/ws"
        query = [f"token={self.token}"] if self.token else []
        if self.bundles:
            query.append("bundles=1")
        return f"{url}?{'&'.join(query)}" if query else url

    async def __aenter__(self) -> SpaceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.ws = await self._open()
        if self.read:
            self._reader = asyncio.create_task(self._read_loop())

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        return await self._session.ws_connect(self.ws_url, max_msg_size=1 << 20, autoclose=True)

    async def _read_loop(self) -> None:
        try:
            while True:
                await self._read_one_connection()
                if not await self._come_back():
                    return
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _read_one_connection(self) -> None:
        assert self.ws is not None
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_binary(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_json(json.loads(msg.data))
                    async with self._changed:
                        self._changed.notify_all()
                else:
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        self.close_reason = msg.extra or ""
                    break
        finally:
            self.close_code = self.ws.close_code

    async def _come_back(self) -> bool:
        """After a lost connection: reconnect with backoff and jitter; False if it should
        not (not asked to, closed on purpose, or a close that trying again cannot help)."""
        if not self.reconnect or self._closing or self.close_code in FINAL_CLOSES:
            return False
        if self.close_code == CLOSE_NO_SPACE:
            return False  # the space was never there for this connection
        no_space_since: float | None = None  # the first "no such space" since the loss
        delay = RETRY_FIRST_SECONDS
        while not self._closing:
            await asyncio.sleep(delay * (0.5 + 0.5 * random.random()))
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            try:
                ws = await self._open()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("space %s: reconnecting failed (%s); trying again", self.space_id,
                         type(exc).__name__)
                continue
            if self._closing:
                await ws.close()
                return False
            try:
                first = await ws.receive(timeout=10.0)
            except TimeoutError:
                await ws.close()
                continue
            if first.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await ws.close()
                self.close_code, self.close_reason = ws.close_code, str(first.extra or "")
                if self.close_code in FINAL_CLOSES:
                    return False
                if self.close_code == CLOSE_NO_SPACE:
                    # the bridge answers but has not got the space (back) yet
                    now = time.monotonic()
                    no_space_since = no_space_since or now
                    if now - no_space_since > RESTORE_WAIT_SECONDS:
                        return False
                continue
            self.ws = ws
            self.close_code, self.close_reason = None, ""
            self.reconnects += 1
            log.info("space %s: reconnected (%d)", self.space_id, self.reconnects)
            if first.type == aiohttp.WSMsgType.TEXT:
                self._on_json(json.loads(first.data))
            elif first.type == aiohttp.WSMsgType.BINARY:
                self._on_binary(first.data)
            async with self._changed:
                self._changed.notify_all()
            return True
        return False

    def _on_json(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message.get("type") == "token" and isinstance(message.get("token"), str):
            self.token = message["token"]  # a reconnect uses the renewed token

    async def renew(self, token: str | None = None) -> None:
        """Ask for a fresh token (or hand over one the bot minted); the answer is a
        ``token`` message, which this client keeps for its reconnects."""
        await self.send_json({"type": "renew"} if token is None else {"type": "renew", "token": token})

    def _on_binary(self, data: bytes) -> None:
        if wire.is_bundle(data):
            self.bundles_received += 1
            for frame in wire.unpack_bundle(data):
                self._on_frame(frame, 0)
            self.bytes_received += len(data)
        else:
            self._on_frame(wire.unpack(data), len(data))

    def _on_frame(self, frame: wire.AudioFrame, size: int) -> None:
        now = time.perf_counter()
        pcm = self._decoder.decode(frame.payload)
        self.frames_received += 1
        self.bytes_received += size
        if self.keep_audio:
            self.audio.append(pcm)
        if self.on_frame is not None:
            self.on_frame(frame.seq, pcm, now)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = 5.0) -> dict[str, Any]:
        """First message (already received or not) matching ``predicate``."""
        async def find() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for m in self.messages:
                        if predicate(m):
                            return m
                    if self.closed.is_set():
                        raise ConnectionError(
                            f"closed ({self.close_code} {self.close_reason})")
                    await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)

    async def wait_type(self, kind: str, timeout: float = 5.0,
                        where: Callable[[dict[str, Any]], bool] = lambda m: True,
                        ) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("type") == kind and where(m), timeout)

    async def wait_frames(self, n: int, timeout: float = 10.0) -> None:
        async def poll() -> None:
            while self.frames_received < n:
                if self.closed.is_set():
                    raise ConnectionError(f"closed ({self.close_code} {self.close_reason})")
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), timeout)

    async def wait_reconnected(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until this client has come back ``count`` times in all (ConnectionError if it
        gave up)."""
        async def until() -> None:
            async with self._changed:
                while self.reconnects < count:
                    if self.closed.is_set():
                        raise ConnectionError(
                            f"gave up reconnecting ({self.close_code} {self.close_reason})")
                    await self._changed.wait()
        await asyncio.wait_for(until(), timeout)

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def send_json(self, obj: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(obj))

    async def raise_hand(self) -> None:
        await self.send_json({"type": "raise_hand"})

    async def react(self, key: str) -> None:
        await self.send_json({"type": "reaction", "key": key})

    async def send_frame(self, pcm: np.ndarray) -> None:
        """Encode and send one 960-sample frame with the next sequence number."""
        if self._encoder is None:
            self._encoder = opus.Encoder(bitrate=32000, application=opus.OPUS_APPLICATION_VOIP)
        assert self.ws is not None
        packet = self._encoder.encode(pcm)
        frame = wire.pack(self._seq, self._seq * FRAME, packet)
        self._seq += 1
        if self.reconnect and self.ws.closed:
            self.frames_dropped += 1  # down, coming back: the moment is lost, not queued
            return
        try:
            await self.ws.send_bytes(frame)
        except ConnectionError:
            if not self.reconnect:
                raise
            self.frames_dropped += 1

    async def speak(self, pcm: np.ndarray, realtime: bool = True,
                    on_sent: Callable[[int, float], None] | None = None) -> None:
        """Send ``pcm`` as 20 ms frames, paced against the monotonic clock."""
        start = time.perf_counter()
        for i, frame in enumerate(frames_of(pcm)):
            if realtime:
                delay = start + i * FRAME / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if on_sent is not None:
                on_sent(self._seq, time.perf_counter())
            await self.send_frame(frame)

    async def speak_wav(self, path: str | Path, realtime: bool = True) -> None:
        await self.speak(load_audio(path), realtime)

    def heard(self) -> np.ndarray:
        if not self.audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.audio)

    def save_wav(self, path: str | Path) -> None:
        save_wav(path, self.heard())

    async def close(self) -> None:
        self._closing = True
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._own_session and self._session is not None:
            await self._session.close()
        self._decoder.close()
        if self._encoder is not None:
            self._encoder.close()


async def _main(args: argparse.Namespace) -> None:
    async with SpaceClient(args.url, args.space, args.token, reconnect=True) as client:
        hello = await client.wait_type("hello")
        print(json.dumps(hello))
        if args.speak:
            await client.speak_wav(args.speak)
        else:
            await asyncio.sleep(args.seconds)
        if args.record:
            client.save_wav(args.record)
            print(f"wrote {len(client.heard()) / RATE:.1f} s to {args.record}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bridge.client")
    p.add_argument("url", help="bridge base URL, e.g. http://127.0.0.1:8089")
    p.add_argument("space")
    p.add_argument("--token")
    p.add_argument("--speak", help="audio file to speak in real time")
    p.add_argument("--record", help="write what was heard to this WAV file")
    p.add_argument("--seconds", type=float, default=10.0, help="listen this long")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
