"""A real, throw-away Synapse homeserver on 127.0.0.1, for ``make run`` and for tests.

Synapse runs as a subprocess (``python -m synapse.app.homeserver``) of the current
interpreter, so it must be installed in the same environment (the ``local`` or ``dev``
extra). Everything here is synchronous and uses only the standard library.

The configuration is written by this module (as JSON, which is valid YAML) the first time
a data directory is used. It binds 127.0.0.1 only, never talks to the internet, lifts
every rate limit, and hashes passwords cheaply, so that it starts in a few seconds and
tests never see a 429. A data directory can be reused across runs: the shared secret,
database, signing key and users are kept; only the port is rewritten when it changes.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HomeserverError", "LocalHomeserver", "RegisteredUser"]

CONFIG_NAME = "homeserver.yaml"
LOG_CONFIG_NAME = "homeserver.log.config"
LOG_NAME = "homeserver.log"
PID_NAME = "homeserver.pid"

# Large enough that no test or local run is ever rate limited.
_UNLIMITED = {"per_second": 100000, "burst_count": 1000000}


class HomeserverError(Exception):
    """The local homeserver failed to start, or refused a request.

    ``errcode`` and ``status`` are set when the server answered with a Matrix error.
    """

    def __init__(self, message: str, *, errcode: str | None = None, status: int | None = None):
        super().__init__(message)
        self.errcode = errcode
        self.status = status


@dataclass
class RegisteredUser:
    user_id: str
    access_token: str
    password: str
    device_id: str


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Twisted does: a port whose old connections are in TIME_WAIT is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


class LocalHomeserver:
    """A Synapse homeserver whose files live in ``data_dir``.

    >>> with LocalHomeserver(Path("var/synapse")) as hs:
    ...     alice = hs.register("alice", "secret")
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        server_name: str = "localhost",
        log_level: str = "WARNING",
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.server_name = server_name
        self.log_level = log_level.upper()
        self._auto_port = port == 0
        self.port = _free_port() if port == 0 else port
        self._process: subprocess.Popen[bytes] | None = None
        self._shared_secret: str | None = None

    # -- properties -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def shared_secret(self) -> str:
        if self._shared_secret is None:
            self._shared_secret = self._load_config()["registration_shared_secret"]
        return self._shared_secret

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration --------------------------------------------------------------

    def _default_config(self) -> dict[str, Any]:
        d = self.data_dir
        rate_limits: dict[str, Any] = {
            name: dict(_UNLIMITED)
            for name in (
                "rc_message",
                "rc_registration",
                "rc_registration_token_validity",
                "rc_admin_redaction",
                "rc_joins_per_room",
                "rc_key_requests",
                "rc_3pid_validation",
                "rc_third_party_invite",
                "rc_media_create",
                "rc_delayed_event_mgmt",
                "rc_room_creation",
                "rc_reports",
                "rc_user_directory",
                "rc_profile",
            )
        }
        rate_limits["rc_login"] = {k: dict(_UNLIMITED) for k in ("address", "account", "failed_attempts")}
        rate_limits["rc_joins"] = {k: dict(_UNLIMITED) for k in ("local", "remote")}
        rate_limits["rc_invites"] = {k: dict(_UNLIMITED) for k in ("per_room", "per_user", "per_issuer")}
        rate_limits["rc_presence"] = {"per_user": dict(_UNLIMITED)}
        rate_limits["rc_federation"] = {
            "window_size": 1000,
            "sleep_limit": 100000,
            "sleep_delay": 1,
            "reject_limit": 100000,
            "concurrent": 1000,
        }
        return {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "report_stats": False,
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "federation"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(d / "homeserver.db")},
            },
            "log_config": str(d / LOG_CONFIG_NAME),
            "media_store_path": str(d / "media_store"),
            "signing_key_path": str(d / f"{self.server_name}.signing.key"),
            "registration_shared_secret": secrets.token_urlsafe(32),
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "enable_registration": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            # Cheap password hashing: logins and registrations take milliseconds.
            "bcrypt_rounds": 4,
            "room_list_publication_rules": [{"action": "allow"}],
            "alias_creation_rules": [{"action": "allow"}],
            "user_directory": {"enabled": True, "search_all_users": True},
            "federation_domain_whitelist": [self.server_name],
            **rate_limits,
        }

    def _load_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HomeserverError(
                f"{self.config_path} was not written by LocalHomeserver (it is not JSON): "
                f"{exc}; use a fresh data directory"
            ) from exc

    def _write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(self.config_path)

    def _write_log_config(self) -> None:
        log_config = {
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"}},
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "formatter": "precise",
                    "stream": "ext://sys.stderr",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": self.log_level, "handlers": ["console"]},
            "disable_existing_loggers": False,
        }
        (self.data_dir / LOG_CONFIG_NAME).write_text(json.dumps(log_config, indent=2) + "\n")

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._auto_port and not _port_is_free(self.port):
            self.port = _free_port()
        if not self.config_path.exists():
            config = self._default_config()
        else:
            config = self._load_config()
            config["listeners"][0]["port"] = self.port
            config["public_baseurl"] = self.base_url + "/"
            self.server_name = config["server_name"]
        self._shared_secret = config["registration_shared_secret"]
        self._write_config(config)
        self._write_log_config()

    def _kill_stale(self) -> None:
        """Stop a Synapse left running on this data directory by an earlier, killed run."""
        pid_path = self.data_dir / PID_NAME
        try:
            pid = int(pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if b"synapse.app.homeserver" not in b" ".join(cmdline):
            return
        if str(self.config_path).encode() not in cmdline and CONFIG_NAME.encode() not in cmdline:
            return
        try:
            if Path(f"/proc/{pid}/cwd").resolve() != self.data_dir:
                return
        except OSError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start Synapse and wait until it answers ``/_matrix/client/versions``."""
        if self.running:
            return
        self._kill_stale()
        self._prepare()
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except HomeserverError as exc:
                busy = "Address already in use" in str(exc) or "Failed to listen" in str(exc)
                if attempt + 1 < attempts and busy:
                    self.port = _free_port()
                    self._prepare()
                    continue
                raise

    def _start_once(self, timeout: float) -> None:
        if not _port_is_free(self.port):
            # Checked here because another server answering /versions on this port
            # would otherwise look like ours having started.
            raise HomeserverError(f"cannot start Synapse on {self.base_url}: Address already in use")
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(
                f"\n=== LocalHomeserver starting on {self.base_url} at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode()
            )
            log.flush()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.data_dir / PID_NAME).write_text(f"{self._process.pid}\n")
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise HomeserverError(
                    f"Synapse exited with code {code} during start-up; last lines of "
                    f"{self.log_path}:\n{self._log_since(log_offset)}"
                )
            if self._versions_ok() and self._process.poll() is None:
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise HomeserverError(
                    f"Synapse did not answer {self.base_url}/_matrix/client/versions within "
                    f"{timeout:g} s; last lines of {self.log_path}:\n{self._log_since(log_offset)}"
                )
            time.sleep(0.1)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return _tail(self.log_path)
        return "".join(deque(text.splitlines(keepends=True), maxlen=30))

    def _versions_ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/_matrix/client/versions", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20) -> None:
        """Stop Synapse (SIGTERM to its process group, SIGKILL after ``timeout``)."""
        proc, self._process = self._process, None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Anything else left in the group (there should be nothing).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            (self.data_dir / PID_NAME).unlink()

    def __enter__(self) -> LocalHomeserver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- HTTP -----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        access_token: str | None = None,
        what: str = "request",
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if access_token:
            req.add_header("Authorization", f"Bearer {access_token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
            except ValueError:
                err = {}
            errcode = err.get("errcode")
            error = err.get("error") or raw.decode("utf-8", errors="replace")[:200]
            raise HomeserverError(
                f"{what} failed: {errcode or 'HTTP error'}: {error} (HTTP {exc.code})",
                errcode=errcode,
                status=exc.code,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise HomeserverError(f"{what} failed: cannot reach {self.base_url}: {exc}") from exc

    # -- users ----------------------------------------------------------------------

    def register(
        self,
        localpart: str,
        password: str,
        admin: bool = False,
        displayname: str | None = None,
    ) -> RegisteredUser:
        """Create a user with the shared-secret admin API; log in if it exists already."""
        what = f"registering @{localpart}:{self.server_name}"
        path = "/_synapse/admin/v1/register"
        nonce = self._request("GET", path, what=what)["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            )
        )
        body: dict[str, Any] = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        try:
            resp = self._request("POST", path, body, what=what)
        except HomeserverError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise
            user = self.login(localpart, password)
            if displayname is not None:
                quoted = urllib.parse.quote(user.user_id, safe="")
                self._request(
                    "PUT",
                    f"/_matrix/client/v3/profile/{quoted}/displayname",
                    {"displayname": displayname},
                    access_token=user.access_token,
                    what=f"setting the display name of {user.user_id}",
                )
            return user
        return RegisteredUser(
            user_id=resp["user_id"],
            access_token=resp["access_token"],
            password=password,
            device_id=resp.get("device_id", ""),
        )

    def login(self, localpart: str, password: str) -> RegisteredUser:
        """Log in with a password; every call creates a new device and access token."""
        resp = self._request(
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
                "initial_device_display_name": "LocalHomeserver",
            },
            what=f"logging in as @{localpart}:{self.server_name}",
        )
        return RegisteredUser(
            user_id=resp["user_id"],
            access_token=resp["access_token"],
            password=password,
            device_id=resp["device_id"],
        )
