"""A real Icecast server (Debian's ``icecast2``) for the tests: its own config and logs in a
temporary folder, on a free loopback port; ``close`` kills it and removes the folder. As
root it drops to ``nobody`` itself (Icecast refuses to run as root), so its folder is
made where nobody can reach it (not under pytest's private tmp_path) and handed to nobody."""

from __future__ import annotations

import asyncio
import base64
import grp
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

PASSWORD = "ice-test-source-password"
START_SECONDS = 20.0


def quiet_port() -> int:
    """A free loopback port below the kernel's range for outgoing connections, so while
    this Icecast is down (a test kills it) no client socket can take its port before it
    starts again."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for Icecast below the ephemeral range")


class IcecastServer:
    def __init__(self, port: int | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="chorus-icecast-"))
        self.port = port or quiet_port()
        self.proc: subprocess.Popen | None = None

    def url(self, prefix: str = "/chorus", password: str = PASSWORD) -> str:
        return f"icecast://source:{password}@127.0.0.1:{self.port}{prefix}"

    def _config(self) -> Path:
        owner = ""
        if os.geteuid() == 0:
            owner = "<changeowner><user>nobody</user><group>nogroup</group></changeowner>"
        xml = self.folder / "icecast.xml"
        xml.write_text(f"""<icecast>
  <location>chorus-tests</location><admin>tests@localhost</admin>
  <limits>
    <clients>50</clients><sources>20</sources><source-timeout>10</source-timeout>
    <header-timeout>10</header-timeout><burst-on-connect>0</burst-on-connect>
  </limits>
  <authentication>
    <source-password>{PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>{PASSWORD}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{self.port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths>
    <basedir>{self.folder}</basedir><logdir>{self.folder}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
""")
        xml.chmod(0o644)
        return xml

    async def start(self) -> IcecastServer:
        binary = shutil.which("icecast2") or shutil.which("icecast")
        if binary is None:
            pytest.fail("icecast2 is not installed (bash scripts/install-system-deps.sh installs it)")
        self.folder.chmod(0o755)
        if os.geteuid() == 0:  # it writes its logs after becoming nobody
            os.chown(self.folder, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        xml = self._config()
        self.proc = subprocess.Popen([binary, "-c", str(xml)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            async with asyncio.timeout(START_SECONDS):
                while await self.status() is None:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"icecast exited: {self.errors()}")
                    await asyncio.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    async def restart(self) -> None:
        """Started again on the same port (it is free once the old process is gone)."""
        self.kill()
        await self.start()

    def errors(self) -> str:
        log = self.folder / "error.log"
        return log.read_text(errors="replace")[-1500:] if log.exists() else "(no error.log)"

    async def get(self, path: str, login: str = "") -> tuple[int, bytes]:
        """One HTTP/1.0 GET to Icecast: status and body."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), 5)
        auth = f"Authorization: Basic {base64.b64encode(login.encode()).decode()}\r\n" if login else ""
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.transport.abort()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def status(self) -> ElementTree.Element | None:
        """Icecast's statistics (its admin XML), or None while it does not answer."""
        try:
            code, body = await self.get("/admin/stats", f"admin:{PASSWORD}")
        except (OSError, TimeoutError, IndexError, ValueError):
            return None
        if code != 200:
            return None
        try:
            return ElementTree.fromstring(body)
        except ElementTree.ParseError:  # cut short while it starts or stops: ask again
            return None

    async def sources(self) -> dict[str, dict[str, str]]:
        """The mounts that have a source now (``/chorus/abc.ogg``), each with its
        statistics (``server_name``, ``listeners``, ...)."""
        status = await self.status()
        if status is None:
            return {}
        return {source.get("mount", ""): {child.tag: child.text or "" for child in source}
                for source in status.iter("source")}

    async def wait_sources(self, wanted, seconds: float = 30.0) -> dict[str, dict[str, Any]]:
        """Waits until ``wanted(sources)`` holds."""
        async with asyncio.timeout(seconds):
            while not wanted(sources := await self.sources()):
                await asyncio.sleep(0.05)
        return sources
