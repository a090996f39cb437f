"""PostgreSQL and Redis for the tests: the ones configured or already running, else
throwaway servers started in a temporary folder (Debian's ``postgresql`` and
``redis-server`` packages, which scripts/install-system-deps.sh installs).

- ``CHORUS_TEST_POSTGRES`` / ``CHORUS_TEST_REDIS`` set: that server is used, as it is.
- Otherwise a server answering on the standard port (PostgreSQL 5432, database ``test``,
  user ``postgres``; Redis 6379) is used.
- Otherwise one is started on a free port for the test session and stopped at its end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_answers(url: str) -> bool:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def redis_answers(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


class ThrowawayPostgres:
    """``initdb`` and ``pg_ctl`` in a temporary folder of its own (removed at :meth:`stop`),
    on a free loopback port, trust auth. As root (initdb refuses root) the server runs as
    the ``postgres`` user the package creates."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="chorus-test-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []

    def _bin(self, name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                       key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
        path = found[-1] if found else shutil.which(name)
        if not path:
            raise ServiceError(f"no PostgreSQL server on this machine ({name} not found) and none running: "
                               "install Debian's postgresql package (make install does), or set "
                               "CHORUS_TEST_POSTGRES to a server's URL")
        return path

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServiceError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-600:]}")

    def start(self) -> str:
        initdb, pg_ctl = self._bin("initdb"), self._bin("pg_ctl")
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError("running as root and there is no postgres user to run PostgreSQL as") from None
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-o", options,
                  "-w", "-t", "60", "start", timeout=90)
        _wait(lambda: postgres_answers(self.url), 30, f"PostgreSQL on port {self.port}")
        return self.url

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run(self._bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
            except (ServiceError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


class ThrowawayRedis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise ServiceError("no Redis on this machine (redis-server not found) and none running: install "
                               "Debian's redis-server package (make install does), or set CHORUS_TEST_REDIS")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: self._proc.poll() is None and redis_answers(self.url), 30, f"Redis on port {self.port}")
        except ServiceError:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
