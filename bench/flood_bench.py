"""Flood benchmark: reactions and hand changes thrown at a real bridge from other processes.

    .venv/bin/python bench/flood_bench.py                      # both scenarios, 50 listeners
    .venv/bin/python bench/flood_bench.py --listeners 200 --seconds 20

The bridge runs embedded in this process (so its counters can be read); the listeners run
in one helper process and the flooders in others (this script with ``--role``). Per
scenario it reports what the flooders sent, what the bridge accepted and refused, how many
listeners were kept (never closed, and still receiving audio after the flood), the fewest
audio frames a listener got against the ticks of the window, and the most control messages
a listener got in any one second. It prints a markdown table; it does not write RESULTS.md.

Scenarios:
- ``finding``: issue 13's case, 6 anonymous connections x 10 reactions and one signed-in
  listener's 100 raise/lower messages.
- ``sustained``: for ``--seconds``, 2 processes x 20 anonymous connections sending reactions
  as fast as they can, and one signed-in user on 10 connections toggling their hand as
  fast as they can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import tokens  # noqa: E402
from bridge.app import STAGES, start_embedded  # noqa: E402
from bridge.settings import BridgeSettings  # noqa: E402

SECRET = "flood-bench-secret-0123456789-abcdef"
SPACE = "flood"


def ws_url(url: str, token: str | None = None) -> str:
    base = f"{url.replace('http', 'ws', 1)}/spaces/{SPACE}/ws"
    return f"{base}?token={token}" if token else base


# -- helper processes ------------------------------------------------------------------


async def listeners(url: str, count: int) -> None:
    """``count`` listeners; after "go" on stdin they count until "stop", then report."""
    frames = [0] * count
    closed: list[int | None] = [None] * count
    per_second: list[Counter[int]] = [Counter() for _ in range(count)]
    state = {"measuring": False, "t0": 0.0}

    async def listen(i: int, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        async with session.ws_connect(ws_url(url), max_msg_size=1 << 20) as ws:
            ready.set()
            async for msg in ws:
                if not state["measuring"]:
                    continue
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames[i] += 1
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    per_second[i][int(time.monotonic() - state["t0"])] += 1
            closed[i] = ws.close_code

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        readies = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(listen(i, session, readies[i])) for i in range(count)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        state["t0"] = time.monotonic()
        state["measuring"] = True
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        state["measuring"] = False
        elapsed = time.monotonic() - state["t0"]
        print(json.dumps({"frames": frames, "closed": closed, "elapsed": elapsed,
                          "max_control_per_s": max((max(c.values(), default=0) for c in per_second),
                                                   default=0)}), flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def flooder(url: str, kind: str, sockets: int, messages: int, seconds: float,
                  user: str | None) -> None:
    """``sockets`` connections sending ``messages`` each (0: as many as fit in ``seconds``)
    reactions (kind "react") or raise/lower pairs (kind "hand"); reports what it sent."""
    token = tokens.mint(SECRET, SPACE, user, "listener", 3600) if user else None
    sent = [0] * sockets
    errors = [0] * sockets
    closed = [0] * sockets

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(ws_url(url, token), max_msg_size=1 << 20) as ws:
            async def read() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT and '"error"' in msg.data:
                        errors[i] = max(errors[i], json.loads(msg.data).get("count", 0))
            reader = asyncio.create_task(read())
            deadline = time.monotonic() + seconds
            n = 0
            try:
                while (n < messages) if messages else (time.monotonic() < deadline):
                    if kind == "react":
                        await ws.send_str('{"type":"reaction","key":"\\ud83d\\udc4f"}')
                    else:
                        await ws.send_str('{"type":"raise_hand"}' if n % 2 == 0 else '{"type":"lower_hand"}')
                    n += 1
                    if n % 50 == 0:
                        await asyncio.sleep(0)
                await ws.send_str('{"type":"ping","id":"done"}')
                await asyncio.sleep(0.5)
            except (aiohttp.ClientError, ConnectionError):
                closed[i] = 1  # the bridge closed this flooder (1008: too many messages)
            sent[i] = n
            reader.cancel()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        await asyncio.gather(*(one(i, session) for i in range(sockets)))
    print(json.dumps({"sent": sum(sent), "refusals_seen": sum(errors), "closed": sum(closed),
                      "sockets": sockets}), flush=True)


# -- the run ---------------------------------------------------------------------------


async def helper(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if line.strip() != b"ready":
        raise RuntimeError(f"helper {args} did not start: {line!r}")
    return proc


async def tell(proc: asyncio.subprocess.Process, word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word.encode() + b"\n")
    await proc.stdin.drain()


async def result(proc: asyncio.subprocess.Process, timeout: float) -> dict:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    await asyncio.wait_for(proc.wait(), 30)
    return json.loads(line)


async def scenario(name: str, args: argparse.Namespace, floods: list[list[str]]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="chorus-flood-"))
    # every simulated listener and flooder connects from 127.0.0.1: no per-address caps
    settings = BridgeSettings(shared_secret=SECRET, listen_port=0, recordings_dir=str(tmp / "rec"),
                              max_pending_connections_per_address=0, max_streams_per_address=0)
    runner, port = await start_embedded(settings)
    url = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/control/v1/spaces/{SPACE}",
                                    json={"title": "flood", "public": True},
                                    headers={"Authorization": f"Bearer {SECRET}"}) as r:
                r.raise_for_status()
        stage = runner.app[STAGES][SPACE]
        lis = await helper("--role", "listeners", "--url", url, "--count", str(args.listeners))
        procs.append(lis)
        flooders = [await helper("--role", "flooder", "--url", url, *f) for f in floods]
        procs.extend(flooders)
        await tell(lis, "go")
        ticks0 = stage.tick_count
        for f in flooders:
            await tell(f, "go")
        sent = [await result(f, args.seconds + 60) for f in flooders]
        await asyncio.sleep(2.0)  # listeners must still be hearing the space after the flood
        await tell(lis, "stop")
        heard = await result(lis, 60)
        ticks = stage.tick_count - ticks0
        c = stage.counters
        kept = sum(1 for code in heard["closed"] if code is None)
        return {
            "scenario": name, "sent": sum(s["sent"] for s in sent),
            "flood sockets closed": f"{sum(s['closed'] for s in sent)} / {sum(s['sockets'] for s in sent)}",
            "reactions": f"{c['reactions_accepted']} / {c['reactions_refused']}",
            "hands": f"{c['hands_accepted']} / {c['hands_refused']}",
            "activity msgs": c["activity_messages"],
            "listeners kept": f"{kept} / {len(heard['closed'])}",
            "min frames / ticks (window s)": f"{min(heard['frames'])} / {ticks} ({heard['elapsed']:.1f})",
            "clock resyncs": stage.clock_resyncs,
            "max control msgs/s per listener": heard["max_control_per_s"],
            "tick p99 ms": stage.stats()["tick_ms_p99"],
        }
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await runner.cleanup()


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    if "finding" in args.scenarios:
        floods = [["--kind", "react", "--sockets", "6", "--messages", "10"],
                  ["--kind", "hand", "--sockets", "1", "--messages", "100", "--user", "@hand:bench"]]
        rows.append(await scenario("finding (6 anon x 10 reactions, 1 user x 100 hands)", args, floods))
    if "sustained" in args.scenarios:
        s = str(args.seconds)
        floods = [["--kind", "react", "--sockets", "20", "--seconds", s],
                  ["--kind", "react", "--sockets", "20", "--seconds", s],
                  ["--kind", "hand", "--sockets", "10", "--seconds", s, "--user", "@hand:bench"]]
        rows.append(await scenario(f"sustained {args.seconds:g} s (40 anon reacting, 1 user x 10 "
                                   "sockets toggling)", args, floods))
    cols = list(rows[0])
    print(f"\n{args.listeners} listeners; reactions/hands as accepted / refused\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


def main() -> None:
    p = argparse.ArgumentParser(prog="bench/flood_bench.py")
    p.add_argument("--listeners", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--scenarios", default="finding,sustained")
    p.add_argument("--role", choices=["listeners", "flooder"])
    p.add_argument("--url")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--kind", choices=["react", "hand"], default="react")
    p.add_argument("--sockets", type=int, default=1)
    p.add_argument("--messages", type=int, default=0)
    p.add_argument("--user")
    args = p.parse_args()
    if args.role == "listeners":
        asyncio.run(listeners(args.url, args.count))
    elif args.role == "flooder":
        asyncio.run(flooder(args.url, args.kind, args.sockets, args.messages, args.seconds, args.user))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
