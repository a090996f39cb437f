"""PostgreSQL and Redis for the tests: the ones configured or already running, else
throwaway servers started in a temporary folder (Debian's ``postgresql`` and
``redis-server`` packages, which scripts/install-system-deps.sh installs).

- ``CHORUS_TEST_POSTGRES`` / ``CHORUS_TEST_REDIS`` set: that server is used, as it is.
- Otherwise a server answering on the standard port (PostgreSQL 5432, database ``test``,
  user ``postgres``; Redis 6379) is used.
- Otherwise one is started on a free port for the test session and stopped at its end.

A throwaway server's folder (``/tmp/chorus-test-postgres-*``, ``/tmp/chorus-test-redis-*``)
names the test process that owns it; one whose owner is gone (a run that was killed) is
stopped and removed by the next run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class ServiceError(RuntimeError):
    pass


class MissingServer(ServiceError):
    """The server's program is not installed here."""


#: where throwaway servers live: /tmp, which the postgres user can reach (a TMPDIR under
#: /root would not be), with a short path for PostgreSQL's socket
ROOT = Path("/tmp")
OWNER_FILE = "owner.pid"


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
    """Whether a Redis at ``url`` takes writes (one that answers PING but refuses writes,
    e.g. MISCONF after a failed snapshot, is no use to the tests)."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3) as client:
            return bool(client.set("chorus-test:probe", "1", ex=5))
    except (redis.RedisError, OSError):
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _new_folder(kind: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"chorus-test-{kind}-", dir=ROOT))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def _orphans(kind: str) -> list[Path]:
    """Folders of throwaway ``kind`` servers whose test process is gone."""
    found = []
    for folder in ROOT.glob(f"chorus-test-{kind}-*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if not _alive(owner):
            found.append(folder)
    return found


def _tail(path: Path, chars: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


class ThrowawayPostgres:
    """``initdb`` and ``pg_ctl`` in a folder of its own under /tmp (removed at :meth:`stop`),
    on a free loopback port, trust auth, no locale. As root (initdb refuses root) the server
    runs as the ``postgres`` user the package creates."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []

    @staticmethod
    def _bin(name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                       key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
        path = found[-1] if found else shutil.which(name)
        if not path:
            raise MissingServer(f"no PostgreSQL server on this machine ({name} not found) and none running: "
                                "install Debian's postgresql package (make install does), or set "
                                "CHORUS_TEST_POSTGRES to a server's URL")
        return path

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = _tail(self.folder / "postgres.log") if self.folder else ""
            raise ServiceError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-600:]}" + (f"\nlog: {log}" if log else ""))

    def start(self) -> str:
        initdb, pg_ctl = self._bin("initdb"), self._bin("pg_ctl")
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError("running as root and there is no postgres user to run PostgreSQL as") from None
            self._as = ["runuser", "-u", "postgres", "--"]
        for orphan in _orphans("postgres"):
            self._stop_in(orphan)
        self.folder = _new_folder("postgres")
        try:
            if self._as:
                os.chown(self.folder, user.pw_uid, user.pw_gid)
            data = self.folder / "data"
            self._run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "--no-locale",
                      "-E", "UTF8")
            options = (f"-p {self.port} -k {shlex.quote(str(self.folder))} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            self._run(pg_ctl, "-D", str(data), "-l", str(self.folder / "postgres.log"), "-o", options,
                      "-w", "-t", "60", "start", timeout=90)
            _wait(lambda: postgres_answers(self.url), 30, f"PostgreSQL on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self.url

    def _stop_in(self, folder: Path) -> None:
        if (folder / "data" / "postmaster.pid").exists():
            with contextlib.suppress(ServiceError, subprocess.TimeoutExpired, OSError):
                self._run(self._bin("pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop",
                          timeout=30)
        shutil.rmtree(folder, ignore_errors=True)

    def stop(self) -> None:
        if self.folder is not None:
            self._stop_in(self.folder)
            self.folder = None


class ThrowawayRedis:
    """``redis-server`` without persistence on a free loopback port, in a folder of its own."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise MissingServer("no Redis on this machine (redis-server not found) and none running: install "
                                "Debian's redis-server package (make install does), or set CHORUS_TEST_REDIS")
        for orphan in _orphans("redis"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((orphan / "redis.pid").read_text()), signal.SIGKILL)
            shutil.rmtree(orphan, ignore_errors=True)
        self.folder = _new_folder("redis")
        try:
            self._proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"),
                 "--pidfile", str(self.folder / "redis.pid")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def up() -> bool:
                if self._proc.poll() is not None:
                    raise ServiceError(f"redis-server on port {self.port} exited ({self._proc.returncode}): "
                                       f"{_tail(self.folder / 'redis.log')}")
                return redis_answers(self.url)

            _wait(up, 30, f"Redis on port {self.port}")
        except BaseException:
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
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
