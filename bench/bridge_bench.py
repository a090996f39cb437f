"""Bridge benchmark: N speakers (real speech) and M listeners on loopback.

    .venv/bin/python bench/bridge_bench.py --speakers 11 \
        --listeners 200,400,600,800,1000,1200,1500,2000,3000,5000,10000 \
        --seconds 60 --results bench/RESULTS.md          # what `make bench` runs

The ladder stops at the first step that fails (``--keep-going`` to run them all), and
every step has a deadline, so a run always ends by itself.

The bridge runs as its own process (``python -m bridge``) so its CPU and memory are
measured alone. Speakers and a latency probe run in this process; listeners run in
``--workers`` helper processes (this script with ``--worker``) so the listeners' own
Python overhead is not on the bridge's cores more than necessary.

Reported per listener count M:
- mixer tick p50/p99 (ms, measured inside the bridge around each tick),
- relay-added latency p50/p99 (ms): a speaker sends a short 12 kHz marker burst every
  0.2 s (speech is low-passed below 7 kHz); a listener decodes and times its arrival,
- bridge CPU % (of one core) and RSS; memory per listener = RSS growth / M,
- drops: listeners disconnected or missing more than 2 % of frames in the window.
The largest M with no drops is reported at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import tokens  # noqa: E402
from bridge.client import SpaceClient, load_audio  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
SPACE = "bench"
FRAME = 960
MARKER_HZ = 12000
MARKER_EVERY = 10  # frames (0.2 s)
MARKER_AMP = 12000
#: a received frame holds the marker when its 11-13 kHz content reaches half the marker's
#: amplitude. (Not a share of the frame's energy: with 11 people talking at once the
#: marker is a small share, and a ratio test missed most markers.)
MARKER_LEVEL = MARKER_AMP / 2
#: a step's listeners must report within this many seconds after the step's window
STEP_GRACE = 60.0
TEXTS = [
    "Good evening everyone and welcome to the weekly community call about open source.",
    "Thanks for having me. I want to talk about how we moderate large public rooms.",
    "One question from the audience: how do you keep the conversation friendly and useful?",
    "We rotate moderators every month and write down every decision in the public wiki.",
    "Let me add that new members get a short welcome message with the room rules.",
    "Before we close, remember that the next call is on Thursday at the same time.",
]


# -- helpers -----------------------------------------------------------------------


def speech(i: int, cache: Path) -> np.ndarray:
    text = TEXTS[i % len(TEXTS)]
    wav = cache / f"bench-{i % len(TEXTS)}.wav"
    if not wav.exists():
        txt = wav.with_suffix(".txt")
        txt.write_text(text)
        subprocess.run(["text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)", str(txt), "-o",
                        str(wav)], check=True, capture_output=True)
    pcm = load_audio(wav).astype(np.float64)
    spec = np.fft.rfft(pcm)
    spec[int(7000 * len(pcm) / 48000):] = 0  # keep the marker band free
    return np.clip(np.fft.irfft(spec, len(pcm)), -32768, 32767).astype(np.int16)


def marker_level(pcm: np.ndarray) -> float:
    """About the amplitude of what the frame holds in the 11-13 kHz band."""
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    lo, hi = int(11000 * FRAME / 48000), int(13000 * FRAME / 48000)
    return float(spec[lo:hi].sum() / (FRAME / 2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    """The machine's CPU, as /proc/cpuinfo names it."""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


async def stop_process(proc: subprocess.Popen | None, seconds: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``seconds``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), seconds)
    except TimeoutError:
        proc.kill()
        proc.wait()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- listener worker process ---------------------------------------------------------


async def worker(url: str, count: int, seconds: float) -> None:
    counts = [0] * count
    closed: list[int | None] = [None] * count
    measuring = False

    async def listen(i: int, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/spaces/{SPACE}/ws",
                                      max_msg_size=1 << 20) as ws:
            ready.set()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and measuring:
                    counts[i] += 1
            closed[i] = ws.close_code

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        readies = [asyncio.Event() for _ in range(count)]
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(listen(i, session, readies[i])))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        await asyncio.gather(*(r.wait() for r in readies))
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        measuring = True
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.monotonic() - t0
        print(json.dumps({"counts": counts, "closed": closed, "elapsed": elapsed}), flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- main ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.sent_last = 0.0
        self._marker_on = False
        self.latencies: list[float] = []
        self.recording_latency = False

    def start_bridge(self) -> None:
        cfg = self.tmp / "config.toml"
        cfg.write_text(
            "[bridge]\n"
            f'listen_host = "127.0.0.1"\nlisten_port = {self.port}\n'
            f'public_url = "{self.url}"\nshared_secret = "{SECRET}"\n'
            f'recordings_dir = "{self.tmp / "rec"}"\n'
            # every simulated listener connects from 127.0.0.1: no per-address caps
            "max_pending_connections_per_address = 0\nmax_streams_per_address = 0\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", str(cfg),
                                      "--log-level", "WARNING"], cwd=ROOT)

    async def control(self, session: aiohttp.ClientSession, method: str, path: str,
                      body: object = None) -> dict:
        async with session.request(method, f"{self.url}/control/v1{path}", json=body,
                                   headers={"Authorization": f"Bearer {SECRET}"}) as r:
            r.raise_for_status()
            return await r.json()

    async def wait_healthy(self, session: aiohttp.ClientSession) -> None:
        for _ in range(200):
            try:
                async with session.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("bridge did not start")

    async def speaker_loop(self, client: SpaceClient, pcm: np.ndarray, probe: bool) -> None:
        t = np.arange(FRAME) / 48000
        marker = np.round(MARKER_AMP * np.sin(2 * np.pi * MARKER_HZ * t)).astype(np.int16)
        frames = [pcm[i:i + FRAME] for i in range(0, len(pcm) - FRAME, FRAME)]
        start = time.perf_counter()
        n = 0
        while True:
            frame = frames[n % len(frames)]
            if probe and n % MARKER_EVERY == 0:
                frame = np.clip(frame.astype(np.int32) // 4 + marker, -32768, 32767).astype(
                    np.int16)
            delay = start + n * FRAME / 48000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if probe and n % MARKER_EVERY == 0:
                self.sent_last = time.perf_counter()
            await client.send_frame(frame)
            n += 1

    def on_probe_frame(self, seq: int, pcm: np.ndarray, now: float) -> None:
        is_on = marker_level(pcm) > MARKER_LEVEL
        if is_on and not self._marker_on and self.recording_latency and self.sent_last:
            lat = now - self.sent_last
            if 0 <= lat < MARKER_EVERY * FRAME / 48000:
                self.latencies.append(lat * 1000)
        self._marker_on = is_on

    async def run(self) -> list[dict]:
        args = self.args
        cache = Path(tempfile.gettempdir()) / "chorus-bench-speech"
        cache.mkdir(exist_ok=True)
        pcms = [speech(i, cache) for i in range(args.speakers)]
        self.start_bridge()
        assert self.proc is not None
        try:
            return await self._run(pcms)
        finally:
            self.proc.terminate()
            self.proc.wait(10)
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _run(self, pcms: list[np.ndarray]) -> list[dict]:
        args = self.args
        assert self.proc is not None
        rows: list[dict] = []
        async with aiohttp.ClientSession() as session:
            await self.wait_healthy(session)
            await self.control(session, "POST", f"/spaces/{SPACE}",
                               {"title": "bench", "public": True})
            roles = {f"@s{i}:bench": "speaker" for i in range(args.speakers)}
            await self.control(session, "PUT", f"/spaces/{SPACE}/roles", {"roles": roles})
            speakers = []
            for i in range(args.speakers):
                tok = tokens.mint(SECRET, SPACE, f"@s{i}:bench", "speaker", 3600)
                c = SpaceClient(self.url, SPACE, tok, keep_audio=False)
                await c.connect()
                speakers.append(c)
            probe = SpaceClient(self.url, SPACE, keep_audio=False)
            probe.on_frame = self.on_probe_frame
            await probe.connect()
            tasks = [asyncio.create_task(self.speaker_loop(c, pcms[i], probe=i == 0))
                     for i, c in enumerate(speakers)]
            await asyncio.sleep(2)
            base_rss = proc_rss_mb(self.proc.pid)
            for m in args.listeners:
                row = await self.step(session, m, base_rss)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if failed(row) and not args.keep_going:
                    break  # the ladder is sorted: larger M will not hold either
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in [*speakers, probe]:
                await c.close()
        return rows

    async def step(self, session: aiohttp.ClientSession, m: int, base_rss: float) -> dict:
        args = self.args
        assert self.proc is not None
        workers = max(1, min(args.workers, m))
        per = [m // workers + (1 if i < m % workers else 0) for i in range(workers)]
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", self.url, str(n), str(args.seconds),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for n in per]
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 120)
            assert line.strip() == b"ready", line
        await asyncio.sleep(1)
        stats0 = await self.control(session, "GET", f"/spaces/{SPACE}")
        cpu0, t0 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        self.latencies = []
        self.recording_latency = True
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        results = []
        rss_peak = 0.0
        done = asyncio.gather(*(p.stdout.readline() for p in procs if p.stdout))
        deadline = time.monotonic() + args.seconds + STEP_GRACE
        while not done.done():
            if time.monotonic() > deadline:  # a stuck helper must not hang the run
                done.cancel()
                raise RuntimeError(f"listener helpers did not report within "
                                   f"{args.seconds + STEP_GRACE:.0f} s at M={m}")
            rss_peak = max(rss_peak, proc_rss_mb(self.proc.pid))
            await asyncio.sleep(0.25)
        for line in done.result():
            results.append(json.loads(line))
        cpu1, t1 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        self.recording_latency = False
        stats = await self.control(session, "GET", f"/spaces/{SPACE}")
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            await p.wait()
        counts = [c for r in results for c in r["counts"]]
        kicked = sum(1 for r in results for c in r["closed"] if c is not None)
        codes = sorted({c for r in results for c in r["closed"] if c is not None})
        expected = np.mean([r["elapsed"] for r in results]) * 50
        short = sum(1 for c in counts if c < 0.98 * expected)
        return {
            "speakers": args.speakers,
            "listeners": m,
            "tick_ms_p50": stats["tick_ms_p50"],
            "tick_ms_p99": stats["tick_ms_p99"],
            "latency_ms_p50": round(pct(self.latencies, 50), 1),
            "latency_ms_p99": round(pct(self.latencies, 99), 1),
            "latency_samples": len(self.latencies),
            "bridge_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "bridge_rss_mb": round(rss_peak, 1),
            "kb_per_listener": round(max(0.0, rss_peak - base_rss) * 1024 / m, 1),
            "frames_expected": int(expected),
            "frames_min": int(min(counts)) if counts else 0,
            "disconnected": kicked,
            "close_codes": codes,
            "short_listeners": short,
            "clock_resyncs": stats["clock_resyncs"] - stats0["clock_resyncs"],
            "drops": kicked + short,
        }


def failed(row: dict) -> bool:
    """A step fails if any listener was dropped or fell behind, or the tick stalled."""
    return row["drops"] > 0 or row["clock_resyncs"] > 0


TARGET = (11, 10_000, 60.0)  # speakers, listeners, relay-added latency p99 (ms)
TITLE = "# Bridge benchmark results"


def section(rows: list[dict], args: argparse.Namespace) -> str:
    """This run's Markdown, between markers so a later run replaces only its own."""
    cpu = cpu_model()
    ok = [r for r in rows if not failed(r)]
    best = max(ok, key=lambda r: r["listeners"]) if ok else None
    n = args.speakers
    lines = [
        f"<!-- bench:{n} -->",
        f"## {n} speakers" + (" (the target case)" if n == TARGET[0] else ""),
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- {n} speakers (festival HTS speech, looped, all talking at once), listeners in "
        f"{args.workers} helper processes on the same machine, {args.seconds:g} s per step",
        "",
        "| listeners | tick p50 ms | tick p99 ms | latency p50 ms | latency p99 ms "
        "(samples) | bridge CPU % | bridge RSS MB | KB/listener | min frames / expected | "
        "disconnected | short | clock resyncs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['listeners']} | {r['tick_ms_p50']} | {r['tick_ms_p99']} | "
            f"{r['latency_ms_p50']} | {r['latency_ms_p99']} ({r['latency_samples']}) | "
            f"{r['bridge_cpu_pct']} | {r['bridge_rss_mb']} | {r['kb_per_listener']} | "
            f"{r['frames_min']} / {r['frames_expected']} | {r['disconnected']} | "
            f"{r['short_listeners']} | {r['clock_resyncs']} |")
    lines += ["", "Largest listener count held for the whole step with no drops: "
              f"**{best['listeners'] if best else 'none'}**."]
    if rows and failed(rows[-1]) and len(rows) < len(args.listeners):
        lines.append(f"The ladder stopped at the first failing step ({rows[-1]['listeners']}).")
    if n == TARGET[0]:
        _, m_target, p99_target = TARGET
        if best is None:
            verdict = "no step held"
        else:
            p99 = best["latency_ms_p99"]
            verdict = (f"held {best['listeners']} listeners, "
                       f"{best['listeners'] / m_target:.0%} of the {m_target:,} target; "
                       f"latency p99 there {p99} ms, "
                       f"{'under' if p99 < p99_target else 'NOT under'} {p99_target:g} ms")
        fast = [r["listeners"] for r in ok if r["latency_ms_p99"] < p99_target]
        verdict += (f"; largest count held with p99 under {p99_target:g} ms: "
                    f"{max(fast) if fast else 'none'}")
        lines += ["", f"Against the target ({TARGET[0]} speakers, {m_target:,} listeners, "
                  f"relay-added p99 < {p99_target:g} ms on 2 cores): {verdict}."]
    lines += [
        "",
        "Latency is speaker send → listener receive of a 12 kHz marker frame on loopback: "
        "it includes the jitter buffer, the wait for the next 20 ms tick, mixing, Opus "
        "encode and the WebSocket hop; it excludes capture/playout buffering in real "
        "clients. CPU % is of one core, for the bridge process only; the speakers, the "
        "probe and the listener processes share the same machine, so at high listener "
        "counts the limit is the machine (the listener processes' Python WebSocket "
        "clients compete with the bridge for the cores: see clock resyncs, which count "
        "event-loop stalls of more than 200 ms), not the bridge alone. 'short' = "
        "listeners that received under 98 % of the frames of the window; 'disconnected' "
        "= closed by the bridge (4408 too slow) or otherwise.",
        f"<!-- /bench:{n} -->",
    ]
    return "\n".join(lines)


_SECTION = re.compile(r"<!-- bench:(\d+) -->.*?<!-- /bench:\1 -->\n*", re.S)


def write_results(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Put this run's section into ``path``: bench sections first (most speakers first),
    replacing the one for this speaker count; everything else in the file is kept."""
    text = path.read_text() if path.exists() else TITLE + "\n"
    sections = {int(m.group(1)): m.group(0).strip() for m in _SECTION.finditer(text)}
    sections[args.speakers] = section(rows, args)
    rest = _SECTION.sub("", text)
    if rest.startswith(TITLE):
        rest = rest[len(TITLE):]
    body = "\n\n".join(sections[k] for k in sorted(sections, reverse=True))
    path.write_text(f"{TITLE}\n\n{body}\n\n{rest.strip()}\n".replace("\n\n\n", "\n\n"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speakers", type=int, default=4)
    p.add_argument("--listeners", default="10,50,100,200",
                   help="comma-separated listener counts, one step each")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2, help="listener helper processes")
    p.add_argument("--results", type=Path,
                   help="write a Markdown table here (replaces only this speaker count's "
                        "section; other sections of the file are kept)")
    p.add_argument("--keep-going", action="store_true",
                   help="run every step even after one fails (default: stop there)")
    p.add_argument("--worker", nargs=3, metavar=("URL", "COUNT", "SECONDS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        url, count, seconds = args.worker
        asyncio.run(worker(url, int(count), float(seconds)))
        return
    args.listeners = [int(x) for x in args.listeners.split(",")]
    rows = asyncio.run(Bench(args).run())
    if args.results:
        write_results(rows, args, args.results)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
