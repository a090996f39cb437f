"""The embedded bridge's tick while the bot works its database: does a command's store
work hold the event loop the bridge's audio runs on?

    .venv/bin/python bench/db_tick_bench.py                      # 60 s idle, 60 s of commands
    .venv/bin/python bench/db_tick_bench.py --members 6 --phase 30

Everything is real and in its own process: a local Synapse (started here), a fresh
PostgreSQL database on the local server (``--postgres``, dropped at the end; if none
answers there, a throwaway server is started for the run, as the tests do), the bot
(``python -m bot run``, with its embedded bridge) and ``--members`` people, each in a
process of its own (this script with ``--role member``), who send space commands one after
another, each as soon as the previous one is answered: join, raise a hand, lower it, leave.
A host opens one live space; its stage ticks every 20 ms in the bot's process.

For each phase (``--phase`` seconds with no commands, then as long with the members at
work) it reads the stage's own figures from the bridge's control API: how late each tick
started against its 20 ms clock (p50, p99, max: the event loop held by the bot shows
here, as gaps the listeners hear) and how long a tick took (p99). The stage keeps the last
3,000 ticks (60 s), so a phase of up to 60 s is read whole. It prints a Markdown table;
it does not write RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.matrix_bench import header, percentile, work_folder  # noqa: E402
from bot.local_homeserver import LocalHomeserver  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.matrix_user import MatrixTestUser  # noqa: E402

#: what each member sends, in a loop (the space id is added)
ROUND = ("!space join {id}", "!space request {id}", "!space lower {id}", "!space leave {id}")
STAGE_KEEPS_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



# -- a member (its own process) ------------------------------------------------------------


async def member(homeserver: str, user_id: str, token: str, device: str, room: str, space_id: str,
                 seconds: float) -> None:
    """Send the ROUND of commands, each once the previous one is answered, for ``seconds``;
    then print one JSON line: how many were answered, and each answer's time in ms."""
    user = await MatrixTestUser.connect(homeserver, user_id, token, device)
    times: list[float] = []
    unanswered = 0
    try:
        await user.join(room)
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            t0 = time.monotonic()
            sent = await user.send_text(room, ROUND[i % len(ROUND)].format(id=space_id))
            i += 1
            try:
                await user.wait_for_reply(room, sent, timeout=60)
                times.append((time.monotonic() - t0) * 1000)
            except (AssertionError, TimeoutError):
                unanswered += 1
        print(json.dumps({"event": "done", "answered": len(times), "unanswered": unanswered,
                          "times": times}), flush=True)
    finally:
        await user.close()


# -- the bench -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.hs = LocalHomeserver(work / "synapse")
        self.secret = secrets.token_urlsafe(32)
        self.bridge_port = _free_port()
        self.database = f"chorus_bench_{uuid.uuid4().hex[:10]}"

    def _database_url(self) -> str:
        base = self.args.postgres.rsplit("/", 1)[0]
        return f"{base}/{self.database}"

    def _create_database(self) -> None:
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.database}"')
        admin.dispose()

    def _drop_database(self) -> None:
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        admin.dispose()

    def _start_bot(self, bot_user) -> subprocess.Popen:
        folder = self.work / "bot"
        folder.mkdir()
        (folder / "config.toml").write_text(
            f'[matrix]\nhomeserver = "{self.hs.base_url}"\nuser_id = "{bot_user.user_id}"\n'
            f'password = "{bot_user.password}"\nstore_path = "{folder}/nio"\n'
            f'[bot]\ncommand_burst = 1000\ncommands_per_minute = 6000\n'
            f'[database]\nurl = "{self._database_url()}"\n'
            f'[hosting]\nmin_followers = 0\n'
            f'[bridge]\nlisten_port = {self.bridge_port}\nshared_secret = "{self.secret}"\n'
            f'recordings_dir = "{folder}/recordings"\n')
        log = (folder / "bot.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "bot", "--config", str(folder / "config.toml"), "run"],
                                cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    async def _stages(self, session: aiohttp.ClientSession) -> list[dict]:
        async with session.get(f"http://127.0.0.1:{self.bridge_port}/control/v1/spaces",
                               headers={"Authorization": f"Bearer {self.secret}"}) as resp:
            return (await resp.json())["spaces"]

    async def _phase(self, session: aiohttp.ClientSession, space_id: str, seconds: float) -> dict:
        """The stage's figures for the last ``seconds`` (at most the 60 s it keeps)."""
        before = next(s for s in await self._stages(session) if s["space_id"] == space_id)
        await asyncio.sleep(seconds)
        after = next(s for s in await self._stages(session) if s["space_id"] == space_id)
        return {**{k: after[k] for k in ("tick_late_ms_p50", "tick_late_ms_p99", "tick_late_ms_max",
                                         "tick_ms_p99")},
                "ticks": after["ticks"] - before["ticks"], "resyncs": after["clock_resyncs"] - before["clock_resyncs"]}

    async def run(self) -> dict:
        a = self.args
        throwaway = None
        if not services.postgres_answers(a.postgres):
            print(f"no PostgreSQL answers at {a.postgres}; starting a throwaway one", flush=True)
            throwaway = services.ThrowawayPostgres()
            a.postgres = throwaway.start()
        try:
            return await self._run()
        finally:
            if throwaway is not None:
                throwaway.stop()

    async def _run(self) -> dict:
        a = self.args
        bot = None
        members: list[subprocess.Popen] = []
        host = None
        try:
            print("starting a local Synapse", flush=True)
            self.hs.start()
            self._create_database()
            tag = secrets.token_hex(3)
            bot_user = self.hs.register(f"bench-bot-{tag}", secrets.token_urlsafe(12))
            host_reg = self.hs.register(f"host-{tag}", secrets.token_urlsafe(12))
            member_regs = [self.hs.register(f"member{i}-{tag}", secrets.token_urlsafe(12)) for i in range(a.members)]
            bot = self._start_bot(bot_user)
            host = await MatrixTestUser.connect(self.hs.base_url, host_reg.user_id, host_reg.access_token,
                                                host_reg.device_id)
            room = await host.create_room(name="lobby", invite=[bot_user.user_id], preset="public_chat")
            await host.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                                      and e.state_key == bot_user.user_id, timeout=120,
                                      description="the bot joining")
            started = await host.send_text(room, "!space start Bench of the tick")
            await host.wait_for_reply(room, started, timeout=60)
            async with aiohttp.ClientSession() as session:
                stages = await self._stages(session)
                if len(stages) != 1:
                    raise SystemExit(f"expected one live stage on the embedded bridge, found {len(stages)}")
                space_id = stages[0]["space_id"]
                phase = min(a.phase, STAGE_KEEPS_SECONDS)
                print(f"space {space_id} is live; {phase:.0f} s with no commands", flush=True)
                idle = await self._phase(session, space_id, phase)
                print(f"{a.members} members send commands for {phase:.0f} s", flush=True)
                for reg in member_regs:
                    members.append(subprocess.Popen(
                        [sys.executable, __file__, "--role", "member", self.hs.base_url, reg.user_id,
                         reg.access_token, reg.device_id, room, space_id, str(phase)],
                        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}))
                busy = await self._phase(session, space_id, phase)
            results = []
            for proc in members:
                out, _ = await asyncio.to_thread(proc.communicate, timeout=180)
                results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            times = [t for r in results for t in r["times"]]
            return {"idle": idle, "busy": busy, "answered": len(times),
                    "unanswered": sum(r["unanswered"] for r in results), "times": times, "phase": phase}
        finally:
            if host is not None:
                await host.close()
            for proc in [*members, bot]:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            self.hs.stop()
            self._drop_database()


def table(r: dict, args: argparse.Namespace, label: str) -> str:
    times = r["times"]
    answers = (f"{statistics.median(times):.0f} / {percentile(times, 0.99):.0f}" if times else "none")
    out = [*header(f"python bench/db_tick_bench.py --members {args.members} --phase {args.phase:g}", label),
           "| phase | commands answered (in s) | answer p50 / p99 ms | tick late p50 / p99 / max ms "
           "| tick took p99 ms | ticks (clock resyncs) |",
           "|---|---|---|---|---|---|"]
    for name, key in (("no commands", "idle"), (f"{args.members} members sending commands", "busy")):
        f = r[key]
        cmds = (f"{r['answered']} in {r['phase']:.0f}" + (f" ({r['unanswered']} unanswered)" if r["unanswered"] else "")
                if key == "busy" else "0")
        out.append(f"| {name} | {cmds} | {answers if key == 'busy' else '-'} | {f['tick_late_ms_p50']:.1f} / "
                   f"{f['tick_late_ms_p99']:.1f} / {f['tick_late_ms_max']:.1f} | {f['tick_ms_p99']:.2f} | "
                   f"{f['ticks']} ({f['resyncs']}) |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=4, help="people sending commands, each in its own process")
    p.add_argument("--phase", type=float, default=60.0, help="seconds of each phase (at most 60)")
    p.add_argument("--postgres", default=os.environ.get("CHORUS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="a PostgreSQL server the bench may create a database on")
    p.add_argument("--label", default="", help="a note for the table's first line (e.g. the commit)")
    p.add_argument("--keep", action="store_true", help="keep the bot's and Synapse's logs")
    p.add_argument("--role", nargs=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        _, homeserver, user_id, token, device, room, space_id, seconds = args.role
        asyncio.run(member(homeserver, user_id, token, device, room, space_id, float(seconds)))
        return
    with work_folder("chorus-dbtick-", args.keep) as work:
        result = asyncio.run(Bench(args, work).run())
    print(table(result, args, args.label))


if __name__ == "__main__":
    main()
