"""live.ogg against Icecast: the same audio, page duration and listener counts, one run.

    .venv/bin/python bench/ogg_bench.py --listeners 1000 --page-ms 20,200,1000 \\
        --seconds 30 --results bench/RESULTS.md          # what `make bench` runs
    .venv/bin/python bench/ogg_bench.py --listeners 50 --seconds 5 --page-ms 20  # smoke test

For each page duration, and within it for each listener count, the Chorus bridge and
then Icecast (``icecast2``, Debian's package; `scripts/install-system-deps.sh` installs it)
serve the same stream to the same number of listeners, on the same machine, one after
the other (only one server and its source run at a time):

- Chorus: ``python -m bridge`` as its own process, a public space, ``[bridge]
  ogg_page_ms`` = the page duration, ``opus_bitrate`` = ``--bitrate``; one speaker (a
  ``SpaceClient`` in this process) says the source audio in real time, looped; listeners
  read ``GET /spaces/bench/live.ogg``.
- Icecast: its own process with a generated config in a temporary folder (as root it
  drops to nobody:nogroup through ``<changeowner>``, as it refuses to run as root); ffmpeg
  loops the same audio in real time as an Icecast source, ``libopus`` at ``--bitrate``,
  20 ms frames, ``-page_duration`` = the page duration; listeners read ``GET /live.ogg``.

The source audio is festival speech (the sentences of bridge_bench.py) over a quiet
pink-noise bed, so Opus stays near its target bitrate even between sentences.

Listeners are raw TCP connections in ``--workers`` helper processes (this script with
``--worker``; plain sockets and a selector, reading every 0.1 s so the load generator
costs little). Each sends ``GET <path> HTTP/1.1``, takes the response apart (aiohttp
answers HTTP/1.1 with chunked transfer-encoding, Icecast with a plain HTTP/1.0 body) and
parses the Ogg pages: bytes, pages, sequence gaps and the granule positions (audio time)
each listener received inside the window.

Per server and listener count: after all listeners are connected and a warm-up, a
window of ``--seconds``; the server's CPU time (utime + stime of the process, all its
threads) over the window gives CPU % of one core and µs of CPU per listener-second; the
same server's idle CPU (no listeners, ``--baseline-seconds``, measured first) gives the
per-listener cost net of what it spends without listeners (the bridge mixes and encodes
in that process; Icecast's encoder is ffmpeg, outside it). Also: Ogg bytes per listener
per second against the nominal ``bitrate / 8``, the wire bytes (with HTTP framing),
pages per second, listeners dropped or missing audio, and the CPU of the feeder (speaker
or ffmpeg), of the load generator and of the whole machine, so a starved server or a
saturated load generator shows. Every step has a deadline and every process this
script starts is killed when it ends, so a run always ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import json
import os
import platform
import pwd
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge_bench import (  # noqa: E402
    TEXTS,
    cpu_model,
    free_port,
    proc_cpu_seconds,
    proc_rss_mb,
    stop_process,
)

SECRET = "bench-secret-0123456789abcdef-0123456"
SPACE = "bench"
ICECAST_PASSWORD = "bench-source-0123456789"
FRAME = 960
RATE = 48000
#: listeners read their sockets this often (s): a few pages per read, not one read a page
READ_PAUSE = 0.1
#: deadlines (s): a server up, all listeners connected, workers' reports after a window
START_DEADLINE = 30.0
CONNECT_DEADLINE = 90.0
REPORT_DEADLINE = 30.0
OGG_HEADER = struct.Struct("<4sBBqIII")  # capture, version, flags, granule, serial, seq, crc


# -- listener worker process ---------------------------------------------------------


class Listener:
    """One raw HTTP connection reading an Ogg stream."""

    __slots__ = ("sock", "head", "status", "chunked", "cbuf", "chunk_left", "crlf", "obuf",
                 "closed", "error", "wire", "payload", "pages", "gaps", "first_gp", "last_gp",
                 "last_seq", "serial", "serials")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = bytearray()
        self.status: int | None = None
        self.chunked = False
        self.cbuf = bytearray()
        self.chunk_left = 0
        self.crlf = False
        self.obuf = bytearray()
        self.closed = False
        self.error = ""
        self.serial: int | None = None
        self.last_seq: int | None = None
        self.serials = 0
        self.reset()

    def reset(self) -> None:
        """Start a window: the counters count from here."""
        self.wire = self.payload = self.pages = self.gaps = 0
        self.first_gp: int | None = None
        self.last_gp: int | None = None

    def feed(self, data: bytes, measuring: bool) -> None:
        if measuring:
            self.wire += len(data)
        if self.status is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    raise ValueError("no end of response headers")
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.chunked = any(
                line.lower().startswith("transfer-encoding:") and "chunked" in line.lower()
                for line in lines[1:])
            data = bytes(self.head[end + 4:])
            self.head = bytearray()
            if self.status != 200:
                raise ValueError(f"HTTP {self.status}")
        self.ogg(self.dechunk(data) if self.chunked else data, measuring)

    def dechunk(self, data: bytes) -> bytes:
        buf = self.cbuf
        buf += data
        out = bytearray()
        pos = 0
        while pos < len(buf):
            if self.chunk_left:
                take = min(self.chunk_left, len(buf) - pos)
                out += buf[pos:pos + take]
                pos += take
                self.chunk_left -= take
                self.crlf = self.chunk_left == 0
            elif self.crlf:
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ValueError("bad chunk end")
                pos += 2
                self.crlf = False
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(bytes(buf[pos:end]).split(b";")[0], 16)
                pos = end + 2
                if size == 0:
                    raise EOFError("last chunk")
                self.chunk_left = size
        del buf[:pos]
        return bytes(out)

    def ogg(self, data: bytes, measuring: bool) -> None:
        buf = self.obuf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 27:
            if buf[pos:pos + 4] != b"OggS":
                raise ValueError("lost Ogg page sync")
            nseg = buf[pos + 26]
            if n - pos < 27 + nseg:
                break
            size = 27 + nseg + sum(buf[pos + 27:pos + 27 + nseg])
            if n - pos < size:
                break
            _, _, _, gp, serial, seq, _ = OGG_HEADER.unpack_from(buf, pos)
            if serial != self.serial:
                self.serial, self.last_seq = serial, None
                self.serials += 1
            if gp > 0:  # an audio page (the OpusHead and OpusTags pages have granule 0)
                if measuring:
                    if self.last_seq is not None and seq > self.last_seq + 1:
                        self.gaps += seq - self.last_seq - 1
                    if self.first_gp is None:
                        self.first_gp = gp
                    self.last_gp = gp
                self.last_seq = seq
            if measuring:
                self.pages += 1
                self.payload += size
            pos += size
        del buf[:pos]


def worker(host: str, port: int, path: str, count: int, rate: float) -> None:
    """Open ``count`` listeners (``rate`` a second), say ``ready`` (JSON), then obey stdin: ``start`` resets
    the counters, ``stop`` reports them (JSON), ``quit`` or end of input ends."""
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ogg-bench\r\n"
               "Accept: */*\r\n\r\n").encode()
    listeners: list[Listener] = []
    pending = count
    measuring = False
    t0 = time.monotonic()
    ready_sent = False
    stdin_buf = b""

    retries = 0

    def open_one() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        lst = Listener(sock)
        listeners.append(lst)
        sel.register(sock, selectors.EVENT_WRITE, lst)

    def close(lst: Listener, why: str) -> None:
        nonlocal pending, retries
        if not lst.closed:
            lst.closed, lst.error = True, why
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(lst.sock)
            lst.sock.close()
            if not ready_sent and lst.status is None:
                # refused or reset before the response (a full accept queue: Icecast
                # listens with a backlog of 5): try again, as a player would
                listeners.remove(lst)
                pending += 1
                retries += 1

    def report() -> dict:
        return {
            "alive": sum(1 for lst in listeners if not lst.closed),
            "wire": [lst.wire for lst in listeners],
            "payload": [lst.payload for lst in listeners],
            "pages": [lst.pages for lst in listeners],
            "gaps": [lst.gaps for lst in listeners],
            "audio": [(lst.last_gp - lst.first_gp) / RATE if lst.first_gp is not None
                      and lst.last_gp is not None else 0.0 for lst in listeners],
            "closed": [lst.error for lst in listeners if lst.closed],
            "restarts": sum(max(0, lst.serials - 1) for lst in listeners),
        }

    window_start = 0.0
    next_open = time.monotonic()
    while True:
        # new connections at a steady rate, not in bursts: Icecast listens with a backlog
        # of 5, and a burst of SYNs past it waits out TCP's retransmission back-off
        now = time.monotonic()
        while pending and now >= next_open:
            open_one()
            pending -= 1
            next_open = max(next_open + 1 / rate, now - 0.05)
        timeout = min(0.5, max(0.0, next_open - now)) if pending else 0.5
        for key, _ in sel.select(timeout=timeout):
            lst = key.data
            if lst is None:
                chunk = os.read(sys.stdin.fileno(), 4096)
                if not chunk:
                    return
                stdin_buf += chunk
                while b"\n" in stdin_buf:
                    line, stdin_buf = stdin_buf.split(b"\n", 1)
                    cmd = line.strip().decode()
                    if cmd == "start":
                        for x in listeners:
                            x.reset()
                        measuring, window_start = True, time.monotonic()
                    elif cmd == "stop":
                        measuring = False
                        out = report()
                        out["elapsed"] = time.monotonic() - window_start
                        print(json.dumps(out), flush=True)
                    elif cmd == "quit":
                        return
                continue
            try:
                if key.events & selectors.EVENT_WRITE:
                    err = lst.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    lst.sock.sendall(request)  # small: fits the fresh send buffer
                    sel.modify(lst.sock, selectors.EVENT_READ, lst)
                    continue
                data = lst.sock.recv(1 << 18)
                if not data:
                    close(lst, "closed by server")
                    continue
                lst.feed(data, measuring)
            except (OSError, ValueError, EOFError) as exc:
                close(lst, f"{type(exc).__name__}: {exc}")
        if not ready_sent and (
                (not pending and all(x.status is not None or x.closed for x in listeners))
                or time.monotonic() - t0 > CONNECT_DEADLINE):
            ready_sent = True
            errors = sorted({x.error for x in listeners if x.closed})[:3]
            for x in listeners:  # not connected by now: left out of the step
                if x.status is None:
                    close(x, "not connected in time")
            listeners = [x for x in listeners if not x.closed]
            ok = len(listeners)
            print(json.dumps({"ready": ok, "errors": errors, "retries": retries,
                              "connect_s": time.monotonic() - t0}), flush=True)
        if ready_sent:
            time.sleep(READ_PAUSE)


# -- measuring helpers ---------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return proc_cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def source_audio(cache: Path) -> np.ndarray:
    """About 30 s of 48 kHz mono int16: festival speech (if installed) over pink noise."""
    rng = np.random.default_rng(9)
    parts: list[np.ndarray] = []
    if shutil.which("text2wave"):
        from bridge.client import load_audio

        for i, text in enumerate(TEXTS):
            wav = cache / f"ogg-bench-{i}.wav"
            if not wav.exists():
                txt = wav.with_suffix(".txt")
                txt.write_text(text)
                subprocess.run(["text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)",
                                str(txt), "-o", str(wav)], check=True, capture_output=True,
                               timeout=120)
            parts += [load_audio(wav).astype(np.float64), np.zeros(RATE // 4)]
    speech = np.concatenate(parts) if parts else np.zeros(30 * RATE)
    n = len(speech) // FRAME * FRAME
    speech = speech[:n]
    if parts:
        speech *= 3300 / np.sqrt(np.mean(speech ** 2))  # -20 dBFS RMS
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))  # 1/f power: pink
    spec[0] = 0
    pink = np.fft.irfft(spec, n)
    pink *= (1650 if parts else 3300) / np.sqrt(np.mean(pink ** 2))  # -26 / -20 dBFS RMS
    return np.clip(np.round(speech + pink), -32768, 32767).astype(np.int16)


def write_wav(path: Path, pcm: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


async def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A tiny HTTP/1.0 GET on 127.0.0.1 (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def kill(proc: subprocess.Popen | asyncio.subprocess.Process | None) -> None:
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


# -- the servers -----------------------------------------------------------------------


class Server:
    """One server under test and the process that feeds it; ``pid`` is what is measured."""

    name = ""
    path = ""

    def __init__(self, bench: Bench, page_ms: int) -> None:
        self.bench = bench
        self.page_ms = page_ms
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def feeder_pid(self) -> int | None:
        return None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await stop_process(self.proc, 10)

    def rss_mb(self) -> float:
        try:
            return proc_rss_mb(self.proc.pid) if self.proc else 0.0
        except FileNotFoundError:
            return 0.0


class Chorus(Server):
    name = "live.ogg"
    path = f"/spaces/{SPACE}/live.ogg"

    def __init__(self, bench: Bench, page_ms: int) -> None:
        super().__init__(bench, page_ms)
        self.url = f"http://127.0.0.1:{self.port}"
        self.speaker = None
        self.task: asyncio.Task | None = None

    @property
    def feeder_pid(self) -> int | None:
        return os.getpid()  # the speaker runs in this process

    async def start(self) -> None:
        import aiohttp

        from bridge import tokens
        from bridge.client import SpaceClient

        tmp = self.bench.tmp
        cfg = tmp / f"bridge-{self.page_ms}.toml"
        cfg.write_text(
            "[bridge]\n"
            f'listen_host = "127.0.0.1"\nlisten_port = {self.port}\n'
            f'public_url = "{self.url}"\nshared_secret = "{SECRET}"\n'
            f'recordings_dir = "{tmp / "rec"}"\n'
            # every simulated listener connects from 127.0.0.1: no per-address caps
            "max_pending_connections_per_address = 0\nmax_streams_per_address = 0\n"
            f"opus_bitrate = {self.bench.args.bitrate}\nogg_page_ms = {self.page_ms}\n")
        self.log = open(tmp / f"bridge-{self.page_ms}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", str(cfg),
                                      "--log-level", "WARNING"], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited: {self.tail()}")
            with contextlib.suppress(OSError, TimeoutError, IndexError, ValueError):
                if (await http_get(self.port, "/healthz"))[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge did not start: {self.tail()}")
            await asyncio.sleep(0.1)
        headers = {"Authorization": f"Bearer {SECRET}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for method, path, body in [
                    ("POST", f"/spaces/{SPACE}", {"title": "ogg bench", "public": True}),
                    ("PUT", f"/spaces/{SPACE}/roles", {"roles": {"@speaker:bench": "speaker"}})]:
                async with session.request(method, f"{self.url}/control/v1{path}",
                                           json=body) as r:
                    r.raise_for_status()
        token = tokens.mint(SECRET, SPACE, "@speaker:bench", "speaker", 24 * 3600)
        self.speaker = SpaceClient(self.url, SPACE, token, keep_audio=False)
        await asyncio.wait_for(self.speaker.connect(), 10)
        self.task = asyncio.create_task(self.speak(self.bench.pcm))

    async def speak(self, pcm: np.ndarray) -> None:
        assert self.speaker is not None
        frames = [pcm[i:i + FRAME] for i in range(0, len(pcm), FRAME)]
        start = time.perf_counter()
        n = 0
        while True:
            delay = start + n * FRAME / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.speaker.send_frame(frames[n % len(frames)])
            n += 1

    def tail(self) -> str:
        self.log.flush()
        return (self.bench.tmp / f"bridge-{self.page_ms}.log").read_text()[-800:]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.speaker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.speaker.close(), 5)
        await super().stop()
        self.log.close()


class Icecast(Server):
    name = "Icecast"
    path = "/live.ogg"

    def __init__(self, bench: Bench, page_ms: int) -> None:
        super().__init__(bench, page_ms)
        self.ffmpeg: subprocess.Popen | None = None
        self.dir = bench.tmp / f"icecast-{page_ms}"

    @property
    def feeder_pid(self) -> int | None:
        return self.ffmpeg.pid if self.ffmpeg else None

    def config(self) -> str:
        limit = max(self.bench.args.listeners) + 16
        owner = ""
        if os.geteuid() == 0:  # icecast refuses to run as root; it drops to nobody itself
            owner = ("<changeowner><user>nobody</user><group>nogroup</group>"
                     "</changeowner>")
        return f"""<icecast>
  <location>ogg bench</location><admin>bench@localhost</admin>
  <limits>
    <clients>{limit}</clients><sources>2</sources>
    <queue-size>4194304</queue-size><client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>0</burst-on-connect><burst-size>0</burst-size>
  </limits>
  <authentication>
    <source-password>{ICECAST_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>{ICECAST_PASSWORD}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{self.port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths>
    <basedir>{self.dir}</basedir><logdir>{self.dir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging>
    <accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel>
  </logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
"""

    async def start(self) -> None:
        binary = shutil.which("icecast2") or shutil.which("icecast")
        if binary is None:
            raise RuntimeError("icecast2 is not installed (bash scripts/install-system-deps.sh)")
        self.dir.mkdir()
        if os.geteuid() == 0:  # its logs are written after it became nobody
            os.chown(self.dir, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        xml = self.bench.tmp / f"icecast-{self.page_ms}.xml"
        xml.write_text(self.config())
        xml.chmod(0o644)
        self.proc = subprocess.Popen([binary, "-c", str(xml)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_DEADLINE
        while not await self.mounted(None):
            if self.proc.poll() is not None:
                raise RuntimeError(f"icecast exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"icecast did not start: {self.tail()}")
            await asyncio.sleep(0.1)
        args = self.bench.args
        self.ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
             "-stream_loop", "-1", "-i", str(self.bench.wav),
             "-c:a", "libopus", "-b:a", str(args.bitrate), "-ac", "1", "-ar", str(RATE),
             "-frame_duration", "20", "-page_duration", str(self.page_ms * 1000),
             "-content_type", "audio/ogg", "-f", "ogg",
             f"icecast://source:{ICECAST_PASSWORD}@127.0.0.1:{self.port}{self.path}"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir.parent / "ffmpeg.log", "ab"))  # noqa: SIM115
        while not await self.mounted(self.path):
            if self.ffmpeg.poll() is not None:
                raise RuntimeError("ffmpeg exited: "
                                   + (self.dir.parent / "ffmpeg.log").read_text()[-800:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"the source did not mount: {self.tail()}")
            await asyncio.sleep(0.1)

    async def mounted(self, mount: str | None) -> bool:
        """Icecast answers its status (``mount`` None), or lists ``mount`` as a source."""
        try:
            status, body = await http_get(self.port, "/status-json.xsl")
        except (OSError, TimeoutError, IndexError, ValueError):
            return False
        if status != 200:
            return False
        return mount is None or f'{mount}"'.encode() in body

    def tail(self) -> str:
        log = self.dir / "error.log"
        return log.read_text()[-800:] if log.exists() else "(no error.log)"

    async def stop(self) -> None:
        await stop_process(self.ffmpeg, 5)
        await super().stop()


# -- the run ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="chorus-ogg-bench-"))
        self.tmp.chmod(0o755)  # icecast, as nobody, reads its config and writes its logs here
        self.wav = self.tmp / "source.wav"
        self.pcm = np.zeros(0, dtype=np.int16)
        self.workers: list[asyncio.subprocess.Process] = []
        self.servers: list[Server] = []

    async def run(self) -> list[dict]:
        # a SIGTERM cancels the run, so the finally blocks below stop every process
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        cache = Path(tempfile.gettempdir()) / "chorus-bench-speech"
        cache.mkdir(exist_ok=True)
        self.pcm = source_audio(cache)
        write_wav(self.wav, self.pcm)
        rows: list[dict] = []
        try:
            for page_ms in self.args.page_ms:
                for cls in (Chorus, Icecast):
                    server = cls(self, page_ms)
                    self.servers.append(server)
                    await server.start()
                    try:
                        base = await self.baseline(server)
                        for m in self.args.listeners:
                            row = await asyncio.wait_for(
                                self.step(server, m, base),
                                CONNECT_DEADLINE + self.args.warmup + self.args.seconds
                                + REPORT_DEADLINE + 30)
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                    finally:
                        await server.stop()
        finally:
            for w in self.workers:
                kill(w)
            for s in self.servers:
                kill(s.proc)
                if isinstance(s, Icecast):
                    kill(s.ffmpeg)
            if self.args.keep_tmp:
                print(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return rows

    async def baseline(self, server: Server) -> float:
        """The server's CPU % of one core with its source running and no listeners."""
        await asyncio.sleep(2)
        assert server.pid is not None
        c0, t0 = cpu_of(server.pid), time.monotonic()
        await asyncio.sleep(self.args.baseline_seconds)
        return 100 * (cpu_of(server.pid) - c0) / (time.monotonic() - t0)

    async def step(self, server: Server, m: int, base_pct: float) -> dict:
        args = self.args
        workers = max(1, min(args.workers, m))
        per = [m // workers + (1 if i < m % workers else 0) for i in range(workers)]
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", "127.0.0.1", str(server.port), server.path,
            str(n), str(args.connect_rate / workers), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
            for n in per]
        self.workers += procs
        try:
            return await self._step(server, m, base_pct, procs)
        finally:
            for p in procs:
                if p.stdin is not None and not p.stdin.is_closing():
                    p.stdin.close()
            for p in procs:
                try:
                    await asyncio.wait_for(p.wait(), 5)
                except TimeoutError:
                    kill(p)
                    await p.wait()

    async def send(self, procs: list[asyncio.subprocess.Process], cmd: str) -> None:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(cmd.encode() + b"\n")
        await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin))

    async def lines(self, procs: list[asyncio.subprocess.Process], timeout: float) -> list[dict]:
        async def one(p: asyncio.subprocess.Process) -> dict:
            assert p.stdout is not None
            line = await p.stdout.readline()
            if not line:
                raise RuntimeError(f"a listener helper ended (exit {await p.wait()})")
            return json.loads(line)

        return await asyncio.wait_for(asyncio.gather(*(one(p) for p in procs)), timeout)

    async def _step(self, server: Server, m: int, base_pct: float,
                    procs: list[asyncio.subprocess.Process]) -> dict:
        args = self.args
        assert server.pid is not None
        ready = await self.lines(procs, CONNECT_DEADLINE + 10)
        connected = sum(r["ready"] for r in ready)
        errors = sorted({e for r in ready for e in r["errors"]})
        retries = sum(r["retries"] for r in ready)
        connect_s = max(r["connect_s"] for r in ready)
        await asyncio.sleep(args.warmup)
        pids = [server.pid, server.feeder_pid, *(p.pid for p in procs)]
        cpu0 = [cpu_of(pid) for pid in pids]
        busy0, total0 = machine_busy()
        t0 = time.monotonic()
        await self.send(procs, "start")
        rss = 0.0
        while time.monotonic() - t0 < args.seconds:
            rss = max(rss, server.rss_mb())
            await asyncio.sleep(min(0.5, args.seconds - (time.monotonic() - t0)))
        await self.send(procs, "stop")
        t1 = time.monotonic()
        cpu1 = [cpu_of(pid) for pid in pids]
        busy1, total1 = machine_busy()
        reports = await self.lines(procs, REPORT_DEADLINE)
        await self.send(procs, "quit")
        window = t1 - t0
        used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        server_cpu, feeder_cpu, worker_cpu = used[0], used[1], used[2:]
        elapsed = float(np.mean([r["elapsed"] for r in reports]))
        payload = np.array([b for r in reports for b in r["payload"]], dtype=float) / elapsed
        wire = np.array([b for r in reports for b in r["wire"]], dtype=float) / elapsed
        pages = np.array([b for r in reports for b in r["pages"]], dtype=float) / elapsed
        audio = [a for r in reports for a in r["audio"]]
        gaps = [g for r in reports for g in r["gaps"]]
        alive = sum(r["alive"] for r in reports)
        closed = [c for r in reports for c in r["closed"]]
        page_s = server.page_ms / 1000
        need = elapsed - 2 * page_s - 2 * READ_PAUSE - 0.3  # audio time a whole stream covers
        whole = sum(1 for a, g in zip(audio, gaps, strict=True) if g == 0 and a >= need)
        per_ls = server_cpu * 1e6 / (m * window)
        net = (server_cpu - base_pct / 100 * window) * 1e6 / (m * window)
        nominal = args.bitrate / 8
        return {
            "page_ms": server.page_ms,
            "server": server.name,
            "listeners": m,
            "connected": connected,
            "connect_s": round(connect_s, 1),
            "connect_retries": retries,
            "alive_at_end": alive,
            "window_s": round(window, 2),
            "cpu_pct": round(100 * server_cpu / window, 1),
            "idle_cpu_pct": round(base_pct, 1),
            "us_per_listener_s": round(per_ls, 1),
            "net_us_per_listener_s": round(net, 1),
            "ogg_bytes_per_s_mean": round(float(payload.mean()), 0) if m else 0,
            "ogg_bytes_per_s_min": round(float(payload.min()), 0) if m else 0,
            "of_nominal_pct": round(100 * float(payload.mean()) / nominal, 1) if m else 0,
            "wire_bytes_per_s_mean": round(float(wire.mean()), 0) if m else 0,
            "pages_per_s": round(float(pages.mean()), 2) if m else 0,
            "audio_s_min": round(min(audio), 2) if audio else 0,
            "whole_stream": whole,
            "seq_gaps": int(sum(gaps)),
            "stream_restarts": sum(r["restarts"] for r in reports),
            "dropped": len(closed) + (m - connected),
            "errors": sorted(set(closed) | set(errors))[:3],
            "feeder_cpu_pct": round(100 * feeder_cpu / window, 1),
            "loadgen_cpu_pct": round(100 * sum(worker_cpu) / window, 1),
            "loadgen_max_worker_pct": round(100 * max(worker_cpu) / window, 1),
            "machine_busy_pct": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
            "server_rss_mb": round(rss, 1),
        }


# -- report ----------------------------------------------------------------------------


COLUMNS = [
    ("page ms", "page_ms"), ("server", "server"), ("listeners", "listeners"),
    ("server CPU %", "cpu_pct"), ("idle CPU %", "idle_cpu_pct"),
    ("µs CPU / listener-s", "us_per_listener_s"),
    ("net of idle µs / listener-s", "net_us_per_listener_s"),
    ("Ogg B/s per listener (min)", None), ("of bitrate/8", "of_nominal_pct"),
    ("wire B/s", "wire_bytes_per_s_mean"), ("pages/s", "pages_per_s"),
    ("whole stream", None), ("dropped", "dropped"), ("feeder CPU %", "feeder_cpu_pct"),
    ("load gen CPU % (max worker)", None), ("machine busy %", "machine_busy_pct"),
    ("RSS MB", "server_rss_mb"),
]


def table(rows: list[dict]) -> list[str]:
    out = ["| " + " | ".join(c for c, _ in COLUMNS) + " |",
           "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for title, key in COLUMNS:
            if key is not None:
                cells.append(f"{r[key]:g}" if isinstance(r[key], float) else str(r[key]))
            elif title.startswith("Ogg"):
                cells.append(f"{r['ogg_bytes_per_s_mean']:g} ({r['ogg_bytes_per_s_min']:g})")
            elif title == "whole stream":
                cells.append(f"{r['whole_stream']} / {r['listeners']}")
            else:
                cells.append(f"{r['loadgen_cpu_pct']:g} ({r['loadgen_max_worker_pct']:g})")
        out.append("| " + " | ".join(cells) + " |")
    return out


def verdicts(rows: list[dict], target_m: int = 1000) -> list[str]:
    """The target: live.ogg's CPU per listener ≤ Icecast's at the same page duration, in
    the same run, every listener getting the whole stream (1,000 listeners each)."""
    out = []
    for page_ms in sorted({r["page_ms"] for r in rows}):
        pair = {r["server"]: r for r in rows if r["page_ms"] == page_ms
                and r["listeners"] == target_m}
        if set(pair) != {Chorus.name, Icecast.name}:
            continue
        c, i = pair[Chorus.name], pair[Icecast.name]
        whole = all(r["whole_stream"] == target_m for r in (c, i))
        raw = c["us_per_listener_s"] <= i["us_per_listener_s"]
        net = c["net_us_per_listener_s"] <= i["net_us_per_listener_s"]
        out.append(
            f"- {page_ms} ms pages, {target_m:,} listeners each: live.ogg "
            f"{c['us_per_listener_s']:g} µs per listener-second against Icecast's "
            f"{i['us_per_listener_s']:g} (net of idle: {c['net_us_per_listener_s']:g} against "
            f"{i['net_us_per_listener_s']:g}); every listener got the whole stream: "
            f"live.ogg {c['whole_stream']:,}, Icecast {i['whole_stream']:,} of {target_m:,}. "
            f"**{'Met' if raw and whole else 'NOT met'}** on total CPU, "
            f"{'met' if net and whole else 'not met'} net of idle.")
    return out


MARK = ("<!-- ogg-bench -->", "<!-- /ogg-bench -->")
NOTES = (
    "CPU is the server process's (all threads) over the window, % of one core; µs per "
    "listener-second = CPU seconds × 10⁶ / (listeners × window); 'net of idle' first takes "
    "off the server's CPU with its source running and no listeners (idle CPU %): the bridge "
    "decodes the speaker, mixes and encodes in its own process, Icecast's encoder is ffmpeg "
    "(feeder CPU %, not counted as Icecast's). Ogg B/s = bytes of Ogg pages per listener "
    "per second (nominal Opus payload = bitrate/8); wire B/s adds HTTP framing (aiohttp "
    "answers HTTP/1.1 with chunked transfer-encoding, Icecast answers HTTP/1.0 unchunked). "
    "'whole stream' = listeners with no missing Ogg page (sequence numbers) whose pages "
    "cover the window's audio time (granule positions); 'dropped' = not connected or "
    "disconnected by the server. Everything (servers, feeders, load generator) shares the "
    "same machine's cores: see machine busy % and the load generator's CPU.")


def section(rows: list[dict], args: argparse.Namespace) -> str:
    cpu = cpu_model()
    icecast = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "icecast2"],
                             capture_output=True, text=True).stdout.strip() or "?"
    lines = [
        MARK[0],
        "## live.ogg against Icecast (issue 9)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, Icecast {icecast}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- the same source audio (festival speech over pink noise, looped) at "
        f"{args.bitrate} b/s Opus, 20 ms frames; listeners in {args.workers} helper "
        f"processes on the same machine; {args.warmup:g} s warm-up, {args.seconds:g} s "
        f"window, idle CPU over {args.baseline_seconds:g} s",
        "",
        *table(rows),
        "",
        "Against the target (live.ogg CPU per listener ≤ Icecast's at the same page "
        "duration, in the same run, every listener getting the whole stream, 1,000 "
        "listeners each):",
        "",
        *(verdicts(rows) or ["- no page duration was run with 1,000 listeners on both."]),
        "",
        NOTES,
        MARK[1],
    ]
    return "\n".join(lines)


def write_results(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Replace this bench's section in ``path`` (between its markers), or append it."""
    text = path.read_text() if path.exists() else "# Bridge benchmark results\n"
    new = section(rows, args)
    pattern = re.compile(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listeners", default="1000", help="comma-separated listener counts")
    p.add_argument("--seconds", type=float, default=30.0, help="measuring window per step")
    p.add_argument("--page-ms", default="20",
                   help="comma-separated Ogg page durations in ms (multiples of 20, 20..1000)")
    p.add_argument("--workers", type=int, default=4, help="listener helper processes")
    p.add_argument("--bitrate", type=int, default=48000, help="Opus bitrate, both servers")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds after all listeners connected, before the window")
    p.add_argument("--baseline-seconds", type=float, default=10.0,
                   help="window for each server's idle CPU (no listeners)")
    p.add_argument("--results", type=Path,
                   help="write this run's Markdown section here (replacing its last one)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary folder (configs, logs) for a look afterwards")
    p.add_argument("--connect-rate", type=float, default=200.0,
                   help="new listener connections a second, over all helpers")
    p.add_argument("--worker", nargs=5, metavar=("HOST", "PORT", "PATH", "COUNT", "RATE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        host, port, path, count, rate = args.worker
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            worker(host, int(port), path, int(count), float(rate))
        return
    args.listeners = [int(x) for x in args.listeners.split(",")]
    args.page_ms = [int(x) for x in args.page_ms.split(",")]
    for ms in args.page_ms:
        if not (20 <= ms <= 1000 and ms % 20 == 0):
            p.error(f"--page-ms: {ms} is not a multiple of 20 from 20 to 1000")
    try:
        rows = asyncio.run(Bench(args).run())
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit("stopped")
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(verdicts(rows, max(args.listeners)) or ["(no pair to compare)"]))
    if args.results:
        write_results(rows, args, args.results)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
