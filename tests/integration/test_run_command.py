"""`python -m bot run` (what `make run` calls), as a newcomer would meet it: it starts its
own Synapse and bridge, the first demo user finds the demo room it names and starts a space
there with no config edit, the bot answers !ping anywhere, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import ClientSession as http_session

from tests.support.matrix_user import MatrixTestUser

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_line(proc: subprocess.Popen, pattern: str, lines: list[str], timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if m := re.search(pattern, line):
            return m
    pytest.fail(f"no line matching {pattern!r}; output so far:\n{''.join(lines)}")


async def test_run_starts_a_local_homeserver_and_the_first_demo_user_hosts_at_once(tmp_path: Path) -> None:
    pytest.importorskip("synapse")
    example = (ROOT / "config.example.toml").read_text()
    config = (example.replace('url = "sqlite:///var/chorus.db"', f'url = "sqlite:///{tmp_path}/chorus.db"')
              .replace('data_dir = "var/homeserver"', f'data_dir = "{tmp_path}/homeserver"')
              .replace("listen_port = 8089", "listen_port = 0")
              .replace("\nport = 8008", "\nport = 0")
              .replace('metrics_listen = ""', 'metrics_listen = "127.0.0.1:0"'))
    assert config != example and config.count('metrics_listen = "127.0.0.1:0"') == 2
    (tmp_path / "config.toml").write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(tmp_path / "config.toml"), "run"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: list[str] = []
    try:
        bridge_status = _wait_for_line(proc, r"bridge \(origin\): /metrics and /healthz on (http://\S+)", lines,
                                       120).group(1)
        bot_status = _wait_for_line(proc, r"bot: /metrics and /healthz on (http://\S+)", lines, 60).group(1)
        url = _wait_for_line(proc, r"Homeserver:\s+(http://\S+)", lines, 120).group(1)
        bot_id = _wait_for_line(proc, r"Bot account:\s+(@\S+)", lines, 10).group(1)
        _wait_for_line(proc, r"Bridge \(web\):\s+http://", lines, 10)
        user_id = _wait_for_line(proc, r"(@alice:\S+)\s+password: (\S+)\s+\(moderator, may host\)", lines, 10)
        alice_id, password = user_id.group(1), user_id.group(2)
        assert _wait_for_line(proc, r"Log in as (@\S+)\.", lines, 10).group(1) == alice_id
        demo_alias = _wait_for_line(proc, r"invitation to the room “Chorus demo” \((#\S+)\)", lines, 10).group(1)
        first_command = _wait_for_line(proc, r"Type there:\s+(.+?)\s*$", lines, 10).group(1)
        assert first_command == "!space start My first space"
        _wait_for_line(proc, r"Ctrl-C stops everything", lines, 10)

        async with http_session() as http:
            async with http.post(f"{url}/_matrix/client/v3/login", json={
                    "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice_id},
                    "password": password}) as resp:
                assert resp.status == 200, await resp.text()
                login = await resp.json()
        alice = await MatrixTestUser.connect(url, login["user_id"], login["access_token"], login["device_id"])
        try:
            # what the banner says: accept the invitation to the demo room, type the command there
            demo_room = await alice.accept_invite(timeout=60, inviter=bot_id)
            async with http_session() as http:
                async with http.get(f"{url}/_matrix/client/v3/directory/room/{quote(demo_alias)}") as resp:
                    assert resp.status == 200 and (await resp.json())["room_id"] == demo_room
            sent = await alice.send_text(demo_room, first_command)
            reply = await alice.wait_for_reply(demo_room, sent, timeout=60)
            body = reply.source["content"]["body"]
            assert "Your space “My first space” is live" in body, body

            room = await alice.create_room(name="hello", invite=[bot_id])
            await alice.wait_for_event(lambda r, e: r == room and getattr(e, "state_key", None) == bot_id
                                       and e.membership == "join", timeout=60)
            sent = await alice.send_text(room, "!ping")
            reply = await alice.wait_for_reply(room, sent, timeout=60)
            assert reply.source["content"]["body"] == "pong"
        finally:
            await alice.close()

        # an operator's view: the bot counted the !ping, the bridge has no live space, both are well
        from tests.support.prometheus import healthz, scrape, value

        bot_metrics = await scrape(bot_status)
        assert value(bot_metrics, "chorus_bot_commands_total", command="ping", outcome="ok") == 1
        assert value(bot_metrics, "chorus_bot_commands_total", command="space start", outcome="ok") == 1
        assert value(await scrape(bridge_status), "chorus_bridge_stages") == 1
        for status_url in (bot_status, bridge_status):
            status, report = await healthz(status_url)
            assert status == 200 and report["ok"], report

        pid_file = tmp_path / "homeserver" / "homeserver.pid"
        synapse_pid = int(pid_file.read_text()) if pid_file.exists() else None
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
        assert proc.returncode == 0, "".join(lines)
        assert "Chorus stopped." in out
        if synapse_pid:
            deadline = time.monotonic() + 20
            while _alive(synapse_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(synapse_pid), "Ctrl-C left the local Synapse running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
