"""Command flood benchmark: one person floods the bot with commands; how fast is another
person's ``!ping`` answered, before and during the flood?

    .venv/bin/python bench/command_flood_bench.py                 # 50 commands/s for 10 s
    .venv/bin/python bench/command_flood_bench.py --rate 100 --seconds 20

Everything is real and in its own process: a local Synapse (started here), the bot
(``python -m bot run``, with its embedded bridge, on SQLite), the flooder (this script
with ``--role flood``), and the pingers (this process: ``--pingers`` people, each pinging every 2.5 s, within the
limit). For each scenario, the bot's per-person limit on (the defaults: 10 at once, 30 a
minute) and off (1000 at once, 6000 a minute), the pingers ping for ``--baseline`` seconds
alone, then again while the flooder sends ``!ping`` at ``--rate`` a second for
``--seconds``. A ping is timed from before its send to its answer arriving in the
pinger's sync. It prints a Markdown table; it does
not write RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.matrix_bench import header, percentile, work_folder  # noqa: E402
from bot.local_homeserver import LocalHomeserver  # noqa: E402
from tests.support.matrix_user import MatrixTestUser  # noqa: E402

#: name: (command_burst, commands_per_minute, what the flooder sends). "chat flood" is the
#: control: the same load on Synapse, but nothing for the bot to do
SCENARIOS = {"chat flood": (10, 30, "hello"), "limit on": (10, 30, "!ping"), "limit off": (1000, 6000, "!ping")}
#: each pinger pings this often: 24 a minute, within the default limit of 30
PING_EVERY = 2.5


def _is_reply_to(event, room: str, room_id: str, wanted: set[str] | None = None) -> str | None:
    content = event.source.get("content") or {}
    to = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
    if room != room_id or content.get("msgtype") != "m.notice" or not to:
        return None
    return to if wanted is None or to in wanted else None


# -- the flooder (its own process) ---------------------------------------------------------


async def flood(homeserver: str, user_id: str, token: str, device: str, room: str, rate: float,
                seconds: float, text: str) -> None:
    """Send ``text`` ``rate`` times a second for ``seconds``, then print one JSON line."""
    user = await MatrixTestUser.connect(homeserver, user_id, token, device)
    try:
        await user.join(room)
        sent: list[str] = []
        errors = 0

        async def one() -> None:
            nonlocal errors
            try:
                sent.append(await user.send_text(room, text))
            except Exception:  # noqa: BLE001 - counted
                errors += 1

        tasks = []
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        print(json.dumps({"event": "sent", "sent": len(sent), "errors": errors, "ids": sent,
                          "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    finally:
        await user.close()


# -- the bench -----------------------------------------------------------------------------



async def _ping(user: MatrixTestUser, room: str, sends: list[float] | None = None) -> float | None:
    """One ``!ping``'s answer time in ms (None if none came within a minute); the time
    the homeserver took to take the ping is added to ``sends``."""
    t0 = time.monotonic()
    sent = await user.send_text(room, "!ping")
    if sends is not None:
        sends.append((time.monotonic() - t0) * 1000)
    try:
        await user.wait_for_reply(room, sent, timeout=60)
    except (AssertionError, TimeoutError):
        return None
    return (time.monotonic() - t0) * 1000


async def _ping_while(users: list[MatrixTestUser], room: str, going, sends: list[float]) -> list[float | None]:
    """Each user pings every PING_EVERY seconds (within the bot's per-person limit),
    staggered, while ``going()``."""
    times: list[float | None] = []

    async def one(i: int, user: MatrixTestUser) -> None:
        await asyncio.sleep(i * PING_EVERY / len(users))
        while going():
            t0 = time.monotonic()
            times.append(await _ping(user, room, sends))
            await asyncio.sleep(max(0.0, PING_EVERY - (time.monotonic() - t0)))

    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    return times


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.hs = LocalHomeserver(work / "synapse")

    def _start_bot(self, name: str, burst: int, per_minute: int, bot_user) -> subprocess.Popen:
        folder = self.work / name.replace(" ", "-")
        folder.mkdir()
        (folder / "config.toml").write_text(
            f'[matrix]\nhomeserver = "{self.hs.base_url}"\nuser_id = "{bot_user.user_id}"\n'
            f'password = "{bot_user.password}"\nstore_path = "{folder}/nio"\n'
            f'[bot]\ncommand_burst = {burst}\ncommands_per_minute = {per_minute}\n'
            f'[database]\nurl = "sqlite:///{folder}/chorus.db"\n'
            f'[bridge]\nlisten_port = 0\nrecordings_dir = "{folder}/recordings"\n')
        log = (folder / "bot.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "bot", "--config", str(folder / "config.toml"), "run"],
                                cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    async def scenario(self, name: str, burst: int, per_minute: int, text: str) -> dict:
        a = self.args
        tag = secrets.token_hex(3)
        bot_user = self.hs.register(f"bench-bot-{tag}", secrets.token_urlsafe(12))
        pingers_reg = [self.hs.register(f"pinger{i}-{tag}", secrets.token_urlsafe(12)) for i in range(a.pingers)]
        flooder_reg = self.hs.register(f"flooder-{tag}", secrets.token_urlsafe(12))
        bot = self._start_bot(name, burst, per_minute, bot_user)
        flooder = None
        pingers = [await MatrixTestUser.connect(self.hs.base_url, r.user_id, r.access_token, r.device_id)
                   for r in pingers_reg]
        try:
            room = await pingers[0].create_room(name="flood", invite=[bot_user.user_id], preset="public_chat")
            await pingers[0].wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                                            and e.state_key == bot_user.user_id, timeout=120,
                                            description="the bot joining")
            for p in pingers[1:]:
                await p.join(room)
            print(f"[{name}] bot is in the room; {a.baseline:.0f} s of pings alone", flush=True)
            for p in pingers:  # warm up
                await _ping(p, room)
            end = time.monotonic() + a.baseline
            alone_sends: list[float] = []
            alone = await _ping_while(pingers, room, lambda: time.monotonic() < end, alone_sends)
            flooder = subprocess.Popen(
                [sys.executable, __file__, "--role", "flood", self.hs.base_url, flooder_reg.user_id,
                 flooder_reg.access_token, flooder_reg.device_id, room, str(a.rate), str(a.seconds), text],
                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines: list[dict] = []
            reader = asyncio.create_task(asyncio.to_thread(_read_lines, flooder, lines))
            print(f"[{name}] flooding: {a.rate:g} {text!r}/s for {a.seconds:g} s", flush=True)
            during_sends: list[float] = []
            during = await _ping_while(pingers, room, lambda: not any(x["event"] == "sent" for x in lines),
                                       during_sends)
            await asyncio.wait_for(reader, 600)
            flooder.wait(30)
            sent = next(x for x in lines if x["event"] == "sent")
            answers = await _answers_to(pingers[0], room, set(sent["ids"]))
            return {"scenario": name, "burst": burst, "per_minute": per_minute, "alone": alone, "during": during,
                    "alone_sends": alone_sends, "during_sends": during_sends,
                    **{k: sent[k] for k in ("sent", "errors", "seconds")},
                    **{k: answers.get(k, 0) for k in ("pong", "notices", "other")}}
        finally:
            for p in pingers:
                await p.close()
            for proc in (flooder, bot):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()

    async def run(self) -> list[dict]:
        print("starting a local Synapse", flush=True)
        self.hs.start()
        try:
            rows = []
            for name in self.args.scenarios.split(","):
                rows.append(await self.scenario(name, *SCENARIOS[name]))
            return rows
        finally:
            self.hs.stop()


async def _answers_to(user: MatrixTestUser, room: str, asked: set[str]) -> dict[str, int]:
    """The bot's answers to the flooder's commands, read from the room's history once
    10 s have passed with no new one (so late answers are counted too)."""
    counted: dict[str, str] = {}
    last_change = time.monotonic()
    while time.monotonic() - last_change < 10:
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            resp = await user.client.room_messages(room, start=token, limit=1000)
            for event in resp.chunk:
                to = _is_reply_to(event, room, room, asked)
                if to:
                    found[to] = event.source["content"].get("body", "")
            if not resp.chunk or not resp.end:
                break
            token = resp.end
        if len(found) != len(counted):
            counted, last_change = found, time.monotonic()
        await asyncio.sleep(2)
    return {"pong": sum(1 for b in counted.values() if b == "pong"),
            "notices": sum(1 for b in counted.values() if b.startswith("⏳ Slow down")),
            "other": sum(1 for b in counted.values() if b != "pong" and not b.startswith("⏳ Slow down"))}


def _read_lines(proc: subprocess.Popen, into: list[dict]) -> None:
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            into.append(json.loads(line))


def table(rows: list[dict], args: argparse.Namespace) -> str:
    out = [*header(f"python bench/command_flood_bench.py --rate {args.rate:g} --seconds {args.seconds:g} "
                   f"--baseline {args.baseline:g} --pingers {args.pingers}"),
           "| bot's limit per person | another person's !ping alone: p50 / p99 ms (n) | during the flood: "
           "p50 / p99 ms (n) | of which Synapse taking the ping, alone / flood: p50 ms | flood sent (s) "
           "| flooder answered: pong / notices |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        def fig(xs: list[float | None]) -> str:
            answered = [x for x in xs if x is not None]
            lost = len(xs) - len(answered)
            if not answered:
                return f"none of {len(xs)} answered"
            return (f"{statistics.median(answered):.0f} / {percentile(answered, 0.99):.0f} ({len(answered)}"
                    + (f"; {lost} unanswered in 60 s)" if lost else ")"))
        sends = f"{statistics.median(r['alone_sends']):.0f} / {statistics.median(r['during_sends'] or [0]):.0f}"
        out.append(f"| {r['scenario']} ({r['burst']} at once, {r['per_minute']}/min) | {fig(r['alone'])} | "
                   f"{fig(r['during'])} | {sends} | {r['sent']} in {r['seconds']} s ({r['errors']} failed) | "
                   f"{r['pong']} / {r['notices']} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=50.0, help="the flooder's messages a second")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts")
    p.add_argument("--baseline", type=float, default=20.0, help="seconds of pings with no flood")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--pingers", type=int, default=5, help=f"people pinging, each every {PING_EVERY} s")
    p.add_argument("--keep", action="store_true", help="keep the bot's and Synapse's logs")
    p.add_argument("--role", nargs=9, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        _, homeserver, user_id, token, device, room, rate, seconds, text = args.role
        asyncio.run(flood(homeserver, user_id, token, device, room, float(rate), float(seconds), text))
        return
    with work_folder("chorus-flood-", args.keep) as work:
        rows = asyncio.run(Bench(args, work).run())
    print(table(rows, args))


if __name__ == "__main__":
    main()
