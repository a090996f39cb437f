"""Fixtures for bridge tests: a real bridge on 127.0.0.1, tokens, synthesised speech."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest

from bridge import tokens
from bridge.app import STAGES, start_embedded
from bridge.settings import BridgeSettings
from bridge.stage import Stage

SECRET = "bridge-test-secret-0123456789-abcdef"
FRAME = 960


@dataclass
class RunningBridge:
    url: str
    settings: BridgeSettings
    runner: Any
    session: aiohttp.ClientSession

    @property
    def app(self):
        return self.runner.app

    def stage(self, space_id: str) -> Stage:
        return self.app[STAGES][space_id]

    def token(self, space_id: str, user: str, role: str = "listener", ttl: int = 600) -> str:
        return tokens.mint(SECRET, space_id, user, role, ttl)

    async def control(self, method: str, path: str, body: Any = None,
                      secret: str | None = SECRET) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        async with self.session.request(method, f"{self.url}/control/v1{path}", json=body,
                                        headers=headers) as resp:
            return resp.status, await resp.json()

    async def open(self, space_id: str, *, public: bool = True,
                   roles: dict[str, str] | None = None, **options: Any) -> None:
        status, body = await self.control("POST", f"/spaces/{space_id}",
                                          {"title": f"Test {space_id}", "public": public,
                                           **options})
        assert status in (200, 201), body
        if roles:
            status, body = await self.control("PUT", f"/spaces/{space_id}/roles",
                                              {"roles": roles})
            assert status == 200, body


async def raw_ws_that_never_reads(url: str, path: str, receive_buffer: int) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads; its kernel receive
    buffer is ``receive_buffer`` bytes (small: the bridge's sends back up at once)."""
    host, port = urlsplit(url).netloc.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n")
    await loop.sock_sendall(sock, req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def make_settings(tmp_path: Path, **overrides: Any) -> BridgeSettings:
    base = BridgeSettings(listen_host="127.0.0.1", listen_port=0,
                          public_url="http://127.0.0.1:8089", shared_secret=SECRET,
                          recordings_dir=str(tmp_path / "recordings"))
    return replace(base, **overrides)


async def run_bridge(settings: BridgeSettings) -> RunningBridge:
    runner, port = await start_embedded(settings)
    session = aiohttp.ClientSession()
    return RunningBridge(f"http://127.0.0.1:{port}", settings, runner, session)


@pytest.fixture
async def bridge(tmp_path):
    running = await run_bridge(make_settings(tmp_path))
    yield running
    await running.session.close()
    await running.runner.cleanup()


def sine(freq: float, seconds: float, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


SPEECH_CACHE = Path(tempfile.gettempdir()) / "chorus-test-speech"


def synthesise(text: str) -> Path:
    """Speech WAV from festival's HTS voice, cached by text."""
    if shutil.which("text2wave") is None:
        pytest.skip("festival's text2wave is not installed (scripts/install-system-deps.sh)")
    SPEECH_CACHE.mkdir(exist_ok=True)
    out = SPEECH_CACHE / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.wav"
    if not out.exists():
        # names of this process's own: two test runs at once each write theirs, then one wins
        txt = out.with_suffix(f".{os.getpid()}.txt")
        txt.write_text(text)
        tmp = out.with_suffix(f".{os.getpid()}.tmp.wav")
        subprocess.run(["text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)", str(txt),
                        "-o", str(tmp)], check=True, capture_output=True, timeout=120)
        tmp.replace(out)
        txt.unlink()
    return out


SENTENCE_A = ("Welcome to the community space. Today we talk about gardens, "
              "tomatoes and the weather in early spring.")
SENTENCE_B = ("Thanks for having me. I have been growing peppers on my balcony "
              "for three years now.")


@pytest.fixture(scope="session")
def speech_a() -> Path:
    return synthesise(SENTENCE_A)


@pytest.fixture(scope="session")
def speech_b() -> Path:
    return synthesise(SENTENCE_B)


def envelope(pcm: np.ndarray, win: int = 480) -> np.ndarray:
    n = len(pcm) // win
    x = pcm[: n * win].astype(np.float64).reshape(n, win)
    return np.sqrt((x * x).mean(axis=1))


def best_correlation(heard: np.ndarray, source: np.ndarray, max_lag_s: float = 1.5) -> float:
    """Largest normalised correlation of loudness envelopes over plausible delays."""
    h, s = envelope(heard), envelope(source)
    best = -1.0
    for lag in range(int(max_lag_s * 100)):
        seg = h[lag: lag + len(s)]
        if len(seg) < len(s) // 2:
            break
        ss = s[: len(seg)]
        if seg.std() == 0 or ss.std() == 0:
            continue
        best = max(best, float(np.corrcoef(seg, ss)[0, 1]))
    return best


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
