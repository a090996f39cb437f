"""The Icecast tier: the origin feeds each public live space's ``live.ogg`` to an Icecast
server as a source, so an Icecast relay tree (or a CDN in front of it) carries a
listen-only crowd of any size.

``[bridge] icecast_url = "icecast://source:PASSWORD@host:8000/prefix"`` names the server;
space ``abc123`` is mounted at ``/prefix/abc123.ogg``. Each :class:`IcecastSource`
connects with an HTTP ``PUT`` (Icecast 2.4's source protocol), then becomes one more
writer of the space's shared stream (bridge/oggstream.py ``LiveOgg.add_relay``): the same
page bytes every listener gets, written straight to its socket, never counted as a
listener. The origin never waits on Icecast: connecting runs in the source's own task,
with timeouts; a refused login, a mount in use, an Icecast that is down or one that falls
behind only end that connection, which is tried again with backoff (1 s doubling to 30 s)
while the space goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .oggstream import LiveOgg, OggListener
from .schema import Bad, expected, mask_url

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_USER = "source"
#: seconds to connect and to get Icecast's answer to the PUT
HANDSHAKE_SECONDS = 5.0
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
#: a connection that lasted this long starts the backoff over
STABLE_SECONDS = 10.0
#: the longest answer head read from Icecast
MAX_ANSWER_BYTES = 8192
#: after a close, unsent bytes get this long to leave before the socket is cut
FLUSH_SECONDS = 5.0

_PREFIX_RE = re.compile(r"[A-Za-z0-9._~/-]*")
_USAGE = "an icecast://source:PASSWORD@host:port/prefix URL"


@dataclass(frozen=True)
class IcecastTarget:
    """Where to mount: the server, the source login and the mount prefix ("" or "/x")."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> IcecastTarget:
        """Raises :class:`Bad` saying what is wrong, the password never shown."""
        shown = mask_url(text)
        if any(c.isspace() or ord(c) < 32 for c in text):
            raise Bad(f"expected {_USAGE}, got {shown!r} (it holds a space or a control character)")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise Bad(f"expected {_USAGE}, got {shown!r}") from None
        if parts.scheme.lower() != "icecast":
            raise Bad(f"expected {_USAGE}, got {shown!r} (the scheme must be icecast://)")
        if not parts.hostname:
            raise Bad(f"expected {_USAGE}, got {shown!r} (no host)")
        if not parts.password:
            raise Bad(f"expected {_USAGE}, got {shown!r} (no source password: "
                      "icecast://source:PASSWORD@host:port/prefix)")
        if parts.query or parts.fragment or text.endswith(("?", "#")):
            raise Bad(f"expected {_USAGE}, got {shown!r} (no query or fragment)")
        prefix = parts.path.rstrip("/")
        if not _PREFIX_RE.fullmatch(prefix) or "//" in prefix or "/." in prefix:
            raise Bad(f"expected {_USAGE}, got {shown!r} (the mount prefix may hold only "
                      "letters, digits and . _ ~ - /, no empty or dot segments)")
        if port == 0:
            raise Bad(f"expected {_USAGE}, got {shown!r} (port 0)")
        host = parts.hostname
        return cls(host=host, port=DEFAULT_PORT if port is None else port,
                   user=unquote(parts.username or "") or DEFAULT_USER,
                   password=unquote(parts.password), prefix=prefix)

    def mount(self, space_id: str) -> str:
        """The mount of one space: ``{prefix}/{space_id}.ogg`` (the id percent-encoded
        where it holds anything but letters, digits and ``._-``)."""
        return f"{self.prefix}/{quote(space_id, safe='')}.ogg"

    @property
    def address(self) -> str:
        """The server, for logs: no login."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def icecast_url(value: Any) -> str:
    """The ``[bridge] icecast_url`` parser: "" (off) or a URL :meth:`IcecastTarget.parse`
    takes; kept as written."""
    if not isinstance(value, str):
        raise expected(_USAGE + ' or ""', value, secret=True)
    if value:
        IcecastTarget.parse(value)
    return value


def stream_url(listen_base: str, space_id: str) -> str:
    """Where a player hears a space through the Icecast tier (``listen_base`` stands for
    the mount prefix, as the relay or CDN in front of Icecast serves it)."""
    return f"{listen_base}/{quote(space_id, safe='')}.ogg"


def _header_value(text: str, limit: int = 200) -> str:
    """``text`` fit for one header line: no control characters, at most ``limit`` chars."""
    return "".join(c for c in text if c.isprintable())[:limit]


class IcecastRefused(Exception):
    """Icecast answered the PUT with something other than 200."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status


class IcecastSource:
    """Feeds one space's stream to its Icecast mount for as long as it runs; see the
    module's text.

    ``state``: ``connecting``, ``live`` (mounted, pages flowing), ``waiting`` (to try
    again after ``last_error``) or ``stopped``."""

    def __init__(self, target: IcecastTarget, ogg: LiveOgg, space_id: str, *,
                 title: str = "", page_url: str = "", bitrate: int = 0,
                 after: Awaitable[Any] | None = None) -> None:
        self.target = target
        self.ogg = ogg
        self.space_id = space_id
        self.mount = target.mount(space_id)
        self.title = title
        self.page_url = page_url
        self.bitrate = bitrate
        self.state = "connecting"
        self.last_error: str | None = None
        #: times the mount was taken (1 after the first success)
        self.mounts = 0
        self.failures = 0
        self._relay: OggListener | None = None
        self._task: asyncio.Task[None] | None = None
        #: what must finish before the first connection (an earlier source of the mount)
        self._after = after

    def __repr__(self) -> str:
        return f"<IcecastSource {self.space_id} {self.where}>"

    @property
    def where(self) -> str:
        return f"icecast://{self.target.address}{self.mount}"

    def status(self) -> dict[str, Any]:
        return {"mount": self.mount, "state": self.state, "mounts": self.mounts,
                "last_error": self.last_error}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"icecast:{self.space_id}")

    async def stop(self) -> None:
        """Unmount: what was written still goes out (the last page, when the space ended),
        then the connection closes. Returns once the source's task is over."""
        self.state = "stopped"
        relay = self._relay
        if relay is not None:
            self.ogg.discard_relay(relay)
            _close(relay.transport)  # not abort: buffered pages are flushed first
        if self._task is not None:
            self._task.cancel()
            # gather: a cancel of the caller still reaches the caller (and the task)
            (outcome,) = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("space %s: Icecast source %s had failed: %r", self.space_id,
                          self.where, outcome)

    # -- the connection ----------------------------------------------------------------

    def _request(self) -> bytes:
        login = base64.b64encode(f"{self.target.user}:{self.target.password}".encode()).decode()
        lines = [f"PUT {self.mount} HTTP/1.1",
                 f"Host: {self.target.address}",
                 f"Authorization: Basic {login}",
                 "User-Agent: Chorus",
                 "Content-Type: audio/ogg",
                 "ice-public: 0",
                 f"ice-name: {_header_value(self.title or self.space_id)}",
                 "ice-description: live on Chorus"]
        if self.bitrate:
            lines.append(f"ice-audio-info: channels=1;samplerate=48000;bitrate={self.bitrate // 1000}")
        if self.page_url:
            lines.append(f"ice-url: {_header_value(self.page_url, 1000)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _handshake(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.target.host, self.target.port,
                                                       limit=MAX_ANSWER_BYTES)
        try:
            writer.write(self._request())
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                status, reason = _status(head)
                if status != 100:  # (a 100 Continue is followed by the real answer)
                    break
            if status != 200:
                body = b""
                with contextlib.suppress(Exception):
                    body = await asyncio.wait_for(reader.read(200), 0.5)
                detail = body.decode("utf-8", "replace").strip().splitlines()
                raise IcecastRefused(status, f"{reason}: {detail[0]}" if detail else reason)
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def _run(self) -> None:
        if self._after is not None:  # wait, not gather: our cancel must not cancel it
            await asyncio.wait({asyncio.ensure_future(self._after)})
            self._after = None
        delay = RETRY_FIRST_SECONDS
        while not self.ogg.ended:
            self.state = "connecting"
            started = time.monotonic()
            try:
                reason = await self._attempt()
            except Exception as exc:  # noqa: BLE001 - a fault of ours: logged, tried again
                log.exception("space %s: Icecast source %s failed unexpectedly; tried again "
                              "with backoff", self.space_id, self.where)
                self.failures += 1
                self.last_error, reason = f"unexpected error: {exc!r}", ""
            if reason is None:  # the space ended: the last page is on its way
                self.state = "stopped"
                return
            if time.monotonic() - started >= STABLE_SECONDS:
                delay = RETRY_FIRST_SECONDS
            if reason:
                self._failed(reason)
            self.state = "waiting"
            wait = delay * random.uniform(0.8, 1.2)
            log.debug("space %s: Icecast source %s: trying again in %.1f s", self.space_id,
                      self.where, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
        self.state = "stopped"

    async def _attempt(self) -> str | None:
        """One connection: None when the space ended, otherwise why it failed or ended
        ("" when that was already logged)."""
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                reader, writer = await self._handshake()
        except IcecastRefused as exc:
            self._failed(_refusal(exc), refused=exc.status == 401)
            return ""
        except TimeoutError:
            return f"no answer within {HANDSHAKE_SECONDS:g} s"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            return _connect_error(exc)
        return await self._stream(reader, writer)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        """Pages go to Icecast until the space ends (None) or the connection is lost (why)."""
        transport = writer.transport
        if self.ogg.ended:
            _close(transport)
            return None
        relay = OggListener(transport, chunked=False, space_id=self.space_id)  # type: ignore[arg-type]
        transport.write(self.ogg.headers())
        self.ogg.add_relay(relay)
        self._relay = relay
        self.state = "live"
        self.mounts += 1
        if self.failures:
            log.info("space %s: Icecast source %s mounted again after %d failed attempt(s)",
                     self.space_id, self.where, self.failures)
        else:
            log.info("space %s: Icecast source %s mounted", self.space_id, self.where)
        self.failures, self.last_error = 0, None
        closed = asyncio.create_task(_until_closed(reader))
        kicked = asyncio.create_task(relay.kick_event.wait())
        try:
            await asyncio.wait({closed, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closed, kicked):
                task.cancel()
            await asyncio.gather(closed, kicked, return_exceptions=True)
            self.ogg.discard_relay(relay)
            self._relay = None
        if self.ogg.ended:
            _close(transport)  # the last page, with end-of-stream, goes out first
            return None
        lost = closed.done() or transport.is_closing()
        transport.abort()
        if relay.kicked is not None and not lost:
            return (f"fell behind (more than {self.ogg.buffer_limit} bytes unsent): "
                    "reconnecting")
        return "Icecast closed the connection"

    def _failed(self, reason: str, *, refused: bool = False) -> None:
        self.failures += 1
        repeated = reason == self.last_error
        self.last_error = reason
        if repeated:  # the same reason again: once is enough at warning level
            log.debug("space %s: Icecast source %s: %s (attempt %d)", self.space_id,
                      self.where, reason, self.failures)
            return
        level = logging.ERROR if refused else logging.WARNING
        log.log(level, "space %s: Icecast source %s: %s; the space goes on without it and the "
                "source is tried again with backoff", self.space_id, self.where, reason)


def _close(transport: asyncio.BaseTransport) -> None:
    """Close after what is buffered is sent, or cut it after FLUSH_SECONDS."""
    transport.close()
    asyncio.get_running_loop().call_later(FLUSH_SECONDS, transport.abort)


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Returns when the peer closes (Icecast sends nothing after its answer)."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass


def _status(head: bytes) -> tuple[int, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith(("HTTP/", "ICE/")) or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {line[:80]!r}")
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


def _refusal(exc: IcecastRefused) -> str:
    if exc.status == 401:
        return f"Icecast refused the source login ({exc}): check the user and password in [bridge] icecast_url"
    if exc.status == 403:
        return f"Icecast refused the mount ({exc}): another source may hold it, or the server is full"
    return f"Icecast refused the source ({exc})"


def _connect_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is Icecast running?)"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "Icecast closed the connection before answering"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "Icecast's answer was too long"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
