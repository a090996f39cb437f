"""``python -m bridge`` as a separate process on a fixed loopback port, that a test can
kill with SIGKILL and start again on the same address (and the same recordings folder).

With ``private_recordings`` its recordings folder is a tmpfs mounted in a mount namespace
of its own (``unshare -m``): nothing it writes there can be seen by the test's process,
as on another machine. Where the namespace cannot be made (no privilege for it), the
bridge runs without it and ``private_recordings`` reads False.

Every wait is bounded; :meth:`BridgeProcess.stop` kills whatever is left and belongs in
a ``finally``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: mounts a private tmpfs on $0, then runs the rest of the command line
_PRIVATE_MOUNT = 'mount -t tmpfs -o mode=0700 chorus-recordings "$0" && exec "$@"'


@functools.cache
def mount_namespace_command() -> tuple[str, ...] | None:
    """How to run a command in a mount namespace of its own here: as root ``unshare -m``,
    else in a user namespace too (``unshare -rm``); None if neither is allowed."""
    if shutil.which("unshare") is None:
        return None
    for flags in (("-m",), ("-r", "-m")):
        command = ("unshare", *flags, "--propagation", "private")
        try:
            probe = subprocess.run([*command, "sh", "-c", "mount -t tmpfs none /mnt && umount /mnt"],
                                   capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode == 0:
            return command
    return None


def mount_namespaces_work() -> bool:
    return mount_namespace_command() is not None


class BridgeProcess:
    def __init__(self, work_dir: Path, secret: str, port: int | None = None,
                 extra_config: str = "", private_recordings: bool = False) -> None:
        self.work_dir = work_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.recordings = work_dir / "recordings"
        self.config = work_dir / "bridge.toml"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'[bridge]\nlisten_host = "127.0.0.1"\nlisten_port = {self.port}\n'
            f'public_url = "{self.url}"\nshared_secret = "{secret}"\n'
            f'recordings_dir = "{self.recordings}"\n{extra_config}')
        self.private_recordings = private_recordings and mount_namespaces_work()
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.starts = 0

    async def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it listens (its log says so)."""
        assert self.proc is None or self.proc.returncode is not None
        mark = len(self.lines)
        command = [sys.executable, "-m", "bridge", "--config", str(self.config)]
        if self.private_recordings:
            self.recordings.mkdir(parents=True, exist_ok=True)
            unshare = mount_namespace_command()
            assert unshare is not None
            command = [*unshare, "sh", "-c", _PRIVATE_MOUNT, str(self.recordings), *command]
        self.proc = await asyncio.create_subprocess_exec(
            *command, cwd=self.work_dir,
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
        self._reader = asyncio.create_task(self._read(self.proc))
        self.starts += 1

        async def listening() -> None:
            while not any("bridge listening on" in line for line in self.lines[mark:]):
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError("the bridge exited: " + "".join(self.lines[-20:]))
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(listening(), timeout)
        except TimeoutError:
            raise TimeoutError("the bridge did not start: " + "".join(self.lines[-20:])) from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.lines.append(line.decode(errors="replace"))

    async def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: nothing is flushed or finished."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 15)
        await self._stop_reader()

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except TimeoutError:
                self._reader.cancel()
            self._reader = None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within 15 s."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 15)
        await self._stop_reader()
