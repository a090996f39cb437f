"""The bridge's HTTP side under abuse: half-sent requests, idle connections from one
address, file-descriptor exhaustion, deeply nested JSON, and credentials in logs.

Real bridges on 127.0.0.1 (embedded, and ``python -m bridge`` in a subprocess); the
abusive clients are raw sockets, some bound to 127.0.0.2 so that a second loopback
address can show that others are still served.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from bridge.__main__ import RedactCredentials
from bridge.app import GUARD, TOO_MANY_LISTENERS
from bridge.guard import ConnectionGuard, address_key

from .conftest import SECRET, make_settings, run_bridge

ROOT = Path(__file__).resolve().parents[2]
ATTACKER = "127.0.0.2"
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: "


@pytest.fixture
async def guarded(tmp_path, request):
    options = getattr(request, "param", {})
    running = await run_bridge(make_settings(tmp_path, **options))
    yield running
    await running.session.close()
    await running.runner.cleanup()


async def _connect(url: str, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(url.rsplit(":", 1)[1])
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10)


async def _closed_by_bridge(reader: asyncio.StreamReader, seconds: float = 10.0) -> bytes:
    """Everything the bridge sent until it closed the connection (fails after ``seconds``)."""
    data = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass  # an abort (RST) is a close too
    return data


async def _wait_for(condition, what: str, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _healthz(url: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{url}/healthz") as resp:
            return resp.status


def _close(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.transport.abort()


# -- header timeout ---------------------------------------------------------------


@pytest.mark.parametrize("guarded", [{"header_timeout_seconds": 0.5}], indirect=True)
@pytest.mark.parametrize("sent", [b"", b"GET /heal", HALF_REQUEST])
async def test_a_half_sent_request_is_cut_after_the_header_timeout(guarded, sent) -> None:
    reader, writer = await _connect(guarded.url)
    try:
        writer.write(sent)
        await writer.drain()
        assert await _closed_by_bridge(reader) == b""  # cut without an answer
        await _wait_for(lambda: guarded.app[GUARD].connections == 0, "the connection to be forgotten")
    finally:
        _close(writer)


@pytest.mark.parametrize("guarded", [{"header_timeout_seconds": 0.5}], indirect=True)
async def test_a_complete_request_is_answered_and_an_idle_keepalive_is_cut_later(guarded) -> None:
    reader, writer = await _connect(guarded.url)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200")
        # kept alive, but it must send its next request's headers in time as well
        rest = await _closed_by_bridge(reader)
        assert b'"ok": true' in rest
    finally:
        _close(writer)


# -- per-address cap -----------------------------------------------------------------


@pytest.mark.parametrize("guarded", [{"header_timeout_seconds": 60.0,
                                      "max_pending_connections_per_address": 4}], indirect=True)
async def test_idle_connections_beyond_the_cap_are_closed_and_others_are_served(guarded) -> None:
    guard = guarded.app[GUARD]
    held = []
    try:
        for _ in range(4):
            reader, writer = await _connect(guarded.url, ATTACKER)
            writer.write(HALF_REQUEST)
            held.append((reader, writer))
        await _wait_for(lambda: guard.pending(ATTACKER) == 4, "4 pending connections")
        for _ in range(3):  # the extra ones are closed at once
            reader, writer = await _connect(guarded.url, ATTACKER)
            try:
                writer.write(HALF_REQUEST)
                assert await _closed_by_bridge(reader) == b""
            finally:
                _close(writer)
        assert guard.pending(ATTACKER) == 4
        assert all(not reader.at_eof() for reader, _ in held)  # the first four are held still
        assert await _healthz(guarded.url) == 200  # another address is served meanwhile
        # one held connection finishes its request: answered, and the slot is free again
        reader, writer = held[0]
        writer.write(b"1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
        _close(writer)
        held.pop(0)
        await _wait_for(lambda: guard.pending(ATTACKER) == 3, "the slot to be freed")
        reader, writer = await _connect(guarded.url, ATTACKER)
        held.append((reader, writer))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in await _closed_by_bridge(reader)
    finally:
        _close(*(w for _, w in held))


@pytest.mark.parametrize("guarded", [{"header_timeout_seconds": 60.0,
                                      "max_pending_connections_per_address": 2}], indirect=True)
async def test_websockets_and_the_bot_do_not_count_against_the_cap(guarded) -> None:
    await guarded.open("cap", public=True)
    guard = guarded.app[GUARD]
    connector = aiohttp.TCPConnector(local_addr=(ATTACKER, 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        sockets = [await http.ws_connect(f"{guarded.url.replace('http', 'ws', 1)}/spaces/cap/ws")
                   for _ in range(4)]  # twice the cap, one after the other: all upgraded
        try:
            assert all(not ws.closed for ws in sockets)
            assert guard.pending(ATTACKER) == 0
            for _ in range(3):  # the bot (with the shared secret) keeps its connections
                async with http.get(f"{guarded.url}/control/v1/spaces",
                                    headers={"Authorization": f"Bearer {SECRET}"}) as resp:
                    assert resp.status == 200
            assert guard.pending(ATTACKER) == 0
        finally:
            for ws in sockets:
                await ws.close()


# -- established listener connections per address ---------------------------------------


async def _ogg_that_never_reads(url: str, source: str) -> asyncio.StreamWriter:
    """A live.ogg request from ``source`` whose client then never reads a byte."""
    reader, writer = await _connect(url, source)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.transport.pause_reading()
    writer.write(b"GET /spaces/cap/live.ogg HTTP/1.1\r\nHost: bridge\r\n\r\n")
    return writer


@pytest.mark.parametrize("guarded", [{"max_streams_per_address": 3}], indirect=True)
async def test_listener_connections_beyond_the_cap_are_refused_but_speakers_and_others_are_not(
        guarded) -> None:
    """One address holds at most max_streams_per_address listener connections: never-reading
    Ogg streams count, the next WebSocket gets 4429 and the next stream 429; a host from
    the same address and listeners from other addresses still get in; a freed slot is
    reusable."""
    await guarded.open("cap", public=True, roles={"@host:x": "host"})
    guard = guarded.app[GUARD]
    stage = guarded.stage("cap")
    ws_url = f"{guarded.url.replace('http', 'ws', 1)}/spaces/cap/ws"
    connector = aiohttp.TCPConnector(local_addr=(ATTACKER, 0))
    streams = []
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        held = [await http.ws_connect(ws_url)]
        try:
            streams = [await _ogg_that_never_reads(guarded.url, ATTACKER) for _ in range(2)]
            await _wait_for(lambda: guard.streams(ATTACKER) == 3 and stage.listeners == 3, "3 listeners")
            refused = await http.ws_connect(ws_url)
            msg = await refused.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert (msg.data, msg.extra) == (4429, TOO_MANY_LISTENERS)
            async with http.get(f"{guarded.url}/spaces/cap/live.ogg") as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "30"
                assert await resp.json() == {"error": TOO_MANY_LISTENERS}
            assert (guard.streams(ATTACKER), stage.listeners) == (3, 3)
            # the host, from the same crowded address, is never refused
            host = await http.ws_connect(f"{ws_url}?token={guarded.token('cap', '@host:x', 'host')}")
            held.append(host)
            hello = await host.receive_json(timeout=10)
            assert hello["type"] == "hello"
            # another address is served
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as other:
                ws = await other.ws_connect(ws_url)
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                assert guard.streams("127.0.0.1") == 1
                await ws.close()
            # a never-reading stream goes away: its slot is free again
            _close(streams.pop())
            await _wait_for(lambda: guard.streams(ATTACKER) == 2, "the stream's slot to be freed")
            again = await http.ws_connect(ws_url)
            held.append(again)
            assert (await again.receive_json(timeout=10))["type"] == "hello"
            assert guard.streams(ATTACKER) == 3
        finally:
            _close(*streams)
            for ws in held:
                await ws.close()
    await _wait_for(lambda: guard.streams() == 0, "every slot to be released")


# -- accept errors (file descriptors exhausted) ------------------------------------------


def test_accept_errors_are_logged_once_per_interval_without_tracebacks(caplog) -> None:
    loop = asyncio.new_event_loop()
    seen: list[dict] = []
    try:
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        guard = ConnectionGuard(10.0, 64)
        guard.install_accept_error_log(loop)
        caplog.set_level(logging.WARNING, logger="bridge.guard")
        for _ in range(500):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(errno.EMFILE, "Too many open files")})
        other = {"message": "something else", "exception": RuntimeError("x")}
        loop.call_exception_handler(other)
        lines = [r for r in caplog.records if r.name == "bridge.guard"]
        assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
        assert lines[0].exc_info is None
        assert seen == [other]  # everything else still reaches the handler that was there
        guard.uninstall_accept_error_log()
        loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                     "exception": OSError(errno.EMFILE, "Too many open files")})
        assert len(seen) == 2
    finally:
        loop.close()


async def test_python_m_bridge_survives_running_out_of_file_descriptors(tmp_path) -> None:
    """``python -m bridge`` with 96 file descriptors and no per-address cap: 150 half-sent
    requests exhaust them; the log says so in a line or two (no tracebacks), and once the
    header timeout cuts them /healthz answers again."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bridge]\nlisten_host = "127.0.0.1"\nlisten_port = 0\nshared_secret = "{SECRET}"\n'
                   f'recordings_dir = "{tmp_path / "rec"}"\nheader_timeout_seconds = 2\n'
                   "max_pending_connections_per_address = 0\n")
    limited = ("import resource, runpy, sys\n"
               "resource.setrlimit(resource.RLIMIT_NOFILE, (96, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
               "sys.argv = ['bridge', sys.argv[1]]\n"
               "runpy.run_module('bridge', run_name='__main__', alter_sys=True)\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", limited, str(cfg), cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    held: list[socket.socket] = []

    async def read_log() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            lines.append(line.decode(errors="replace"))

    reader_task = asyncio.create_task(read_log())
    try:
        await _wait_for(lambda: any("bridge listening on" in line for line in lines), "the bridge to start", 30)
        port = int(next(m for line in lines if (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line)))[1])
        for _ in range(150):
            sock = socket.socket()
            sock.setblocking(False)
            held.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        await asyncio.sleep(0)
        for sock in held:
            try:
                sock.send(HALF_REQUEST)
            except OSError:
                pass  # not connected yet: it sits in the listen backlog
        await _wait_for(lambda: any("cannot accept connections" in line for line in lines),
                        "the bridge to notice it is out of file descriptors", 30)

        async def healthy() -> bool:
            try:
                return await _healthz(f"http://127.0.0.1:{port}") == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        async with asyncio.timeout(60):
            while not await healthy():
                await asyncio.sleep(0.2)
        complaints = [line for line in lines if "cannot accept connections" in line]
        assert 1 <= len(complaints) <= 2, complaints
        assert not any("Traceback" in line for line in lines), "".join(lines)
    finally:
        for sock in held:
            sock.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        reader_task.cancel()
        await asyncio.gather(reader_task, return_exceptions=True)
    assert proc.returncode == 0, "".join(lines[-20:])


# -- JSON bounds ------------------------------------------------------------------------


DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b', "public": true}'


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT])
async def test_deeply_nested_json_is_400_and_the_bridge_stays_healthy(guarded, body) -> None:
    await guarded.open("deep", public=True)
    for method, path in (("POST", "/control/v1/spaces/deep"), ("PUT", "/control/v1/spaces/deep/roles"),
                         ("PATCH", "/control/v1/spaces/deep")):
        async with guarded.session.request(method, f"{guarded.url}{path}", data=body,
                                           headers={"Authorization": f"Bearer {SECRET}",
                                                    "Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()
            answer = await resp.json()
            assert answer["field"] == "body" and "nested more than" in answer["error"]
    async with guarded.session.post(f"{guarded.url}/spaces/deep/openid", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        answer = await resp.json()
        assert answer["field"] == "body" and "nested more than" in answer["error"]
    assert await _healthz(guarded.url) == 200
    status, stats = await guarded.control("GET", "/spaces/deep")
    assert status == 200 and stats["open"] is True


# -- logs -------------------------------------------------------------------------------


async def test_logs_carry_neither_tokens_nor_the_shared_secret(guarded, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    await guarded.open("logs", public=True)
    token = guarded.token("logs", "@speaker:example.org", "speaker")
    async with guarded.session.get(f"{guarded.url}/spaces/logs?token={token}") as resp:
        assert resp.status == 200
    async with guarded.session.ws_connect(f"{guarded.url.replace('http', 'ws', 1)}/spaces/logs/ws?token={token}"):
        pass
    async with guarded.session.get(f"{guarded.url}/spaces/logs/ws?token=not-a-real-token-4242") as resp:
        pass
    oid = "openid-access-token-77777777"
    async with guarded.session.post(f"{guarded.url}/spaces/logs/openid",
                                    json={"access_token": oid, "matrix_server_name": "localhost"}) as resp:
        assert resp.status == 401
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any('"GET /spaces/logs HTTP/1.1" 200' in line for line in access), access
    assert any("/spaces/logs/ws " in line for line in access), access
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in (token, SECRET, "not-a-real-token-4242", oid):
            assert secret not in text, f"{record.name}: {text}"


def test_the_standalone_log_filter_redacts_credentials() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s with %s and %s", (
        "/spaces/a/ws?token=abc.def&x=1", "Bearer s3cr3t-value", f"secret {SECRET}"), None)
    assert RedactCredentials(SECRET).filter(record)
    text = record.getMessage()
    assert "abc.def" not in text and "s3cr3t-value" not in text and SECRET not in text
    assert "token=<redacted>&x=1" in text


# -- the arithmetic of the limits (no network, a fake clock) ------------------------------


@pytest.mark.parametrize("host,key", [
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 address
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # same /64, same key
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("unknown", "unknown"),
])
def test_caps_count_ipv6_callers_by_their_64(host, key) -> None:
    assert address_key(host) == key


def test_rate_limiter_counts_per_key_and_overall_and_refills() -> None:
    from bridge.limits import RateLimiter, Throttle

    now = [0.0]
    limiter = RateLimiter(per_key=2, total=3, max_keys=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b") and not limiter.allow("b")  # the overall bucket is empty now
    assert limiter.retry_after("a") == pytest.approx(30.0)  # 2 a minute: one every 30 s
    now[0] += 30.0
    assert limiter.allow("a") and not limiter.allow("a")
    now[0] += 600.0
    limiter.allow("c")  # a third key: the idle (full) buckets are forgotten
    assert len(limiter) <= 2

    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.ready("x") == 0
    assert [throttle.ready("x") for _ in range(5)] == [None] * 5
    now[0] += 60.0
    assert throttle.ready("x") == 5  # the next line says how many were held back
