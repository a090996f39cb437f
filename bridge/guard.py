"""The bridge's listening socket, guarded against idle and half-sent connections.

aiohttp waits for request headers as long as a client likes, so a few thousand half-sent
requests used to exhaust the bridge's file descriptors. :class:`ConnectionGuard` wraps
each connection's protocol and keeps, per connection, whether it is *pending*: from
accept until it becomes a WebSocket or a stream (the response is prepared and is not a
plain answer) or presents the shared secret. Pending connections

- must send complete request headers within ``header_timeout`` seconds, at accept and
  again after each answer on a kept-alive connection, or they are cut;
- are capped per remote address (``max_pending_per_address``; 0 = no cap): beyond it a
  new connection from that address is closed at once. An IPv6 "address" here is its /64
  (:func:`address_key`).

Established listener connections (WebSockets and ``live.ogg`` streams) are capped per
address too (``max_streams_per_address``; :meth:`ConnectionGuard.admit_stream`): a plain
HTTP stream whose client never reads cannot be told from one that reads until kernel
buffers fill (minutes at Opus bitrates), so what one address can hold open is bounded
instead.

Accept errors such as "Too many open files" are logged once a minute with a count,
instead of a traceback per attempt (:meth:`ConnectionGuard.install_accept_error_log`).
:class:`PathOnlyAccessLogger` keeps query strings (which carry tokens) out of the access
log.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .limits import Throttle

log = logging.getLogger(__name__)

ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: seconds between repeated warnings of one kind
LOG_INTERVAL = 60.0


class _Conn:
    __slots__ = ("transport", "address", "pending", "trusted", "stream", "timer")

    def __init__(self, transport: asyncio.BaseTransport, address: str) -> None:
        self.transport = transport
        self.address = address
        self.pending = True
        self.trusted = False
        self.stream = False
        self.timer: asyncio.TimerHandle | None = None


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, list | tuple) and peer:
        return address_key(str(peer[0]))
    return str(peer or "unknown")


def address_key(host: str) -> str:
    """What the per-address caps count by: an IPv4 address as it is (also when written as
    IPv4-mapped IPv6), an IPv6 address by its /64, since one subscriber usually holds a
    whole /64 and could otherwise open each connection from a fresh address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionGuard:
    """Header timeout and per-address caps for the connections of one listening site."""

    def __init__(self, header_timeout: float, max_pending_per_address: int,
                 max_streams_per_address: int = 0) -> None:
        if header_timeout <= 0:
            raise ValueError("header_timeout must be positive")
        self.header_timeout = header_timeout
        self.max_pending_per_address = max_pending_per_address
        self.max_streams_per_address = max_streams_per_address
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self._pending: dict[str, int] = {}
        self._streams: dict[str, int] = {}
        self._log_throttle = Throttle(LOG_INTERVAL)
        self._installed_on: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None

    # -- what the tests and health checks can read ---------------------------------

    def pending(self, address: str | None = None) -> int:
        """Pending connections from ``address``, or from everyone."""
        if address is None:
            return sum(self._pending.values())
        return self._pending.get(address, 0)

    def streams(self, address: str | None = None) -> int:
        """Admitted listener connections from ``address``, or from everyone."""
        if address is None:
            return sum(self._streams.values())
        return self._streams.get(address, 0)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- the protocol side -----------------------------------------------------------

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` wrapping ``inner``'s protocols."""
        return lambda: _GuardedProtocol(self, inner())

    def _opened(self, transport: asyncio.BaseTransport) -> bool:
        address = _address(transport)
        cap = self.max_pending_per_address
        if cap and self._pending.get(address, 0) >= cap:
            held = self._log_throttle.ready(("cap", address))
            if held is not None:
                log.warning("closing new connections from %s: it already has %d connections that "
                            "have not sent a request, upgraded or signed in (max_pending_connections_"
                            "per_address)%s", address, cap, _more(held))
            return False
        conn = self._conns[transport] = _Conn(transport, address)
        self._pending[address] = self._pending.get(address, 0) + 1
        self._arm(conn)
        return True

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conns.pop(transport, None)
        if conn is None:
            return
        self._disarm(conn)
        if conn.pending:
            self._unpend(conn)
        if conn.stream:
            conn.stream = False
            _decrement(self._streams, conn.address)

    def _unpend(self, conn: _Conn) -> None:
        conn.pending = False
        _decrement(self._pending, conn.address)

    def _arm(self, conn: _Conn) -> None:
        self._disarm(conn)
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(self.header_timeout, self._too_slow, conn)

    @staticmethod
    def _disarm(conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _too_slow(self, conn: _Conn) -> None:
        conn.timer = None
        held = self._log_throttle.ready("timeout")
        if held is not None:
            log.info("closed a connection from %s that sent no complete request headers within %gs%s",
                     conn.address, self.header_timeout, _more(held))
        conn.transport.abort()

    # -- the request side (middleware, response signal, shared-secret check) ----------

    def _conn_of(self, request: web.BaseRequest) -> _Conn | None:
        transport = request.transport
        return self._conns.get(transport) if transport is not None else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Headers have arrived: stop the clock; after the answer, restart it while the
        connection waits for its next request (unless it is trusted by then)."""
        conn = self._conn_of(request)
        if conn is not None:
            self._disarm(conn)
        try:
            return await handler(request)
        finally:
            if conn is not None and not conn.trusted and self._conns.get(conn.transport) is conn:
                if not conn.pending:
                    conn.pending = True
                    self._pending[conn.address] = self._pending.get(conn.address, 0) + 1
                self._arm(conn)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """A WebSocket or a stream began: the connection is no longer pending."""
        if isinstance(response, web.Response):
            return  # a plain answer: the connection stays pending until it is sent
        conn = self._conn_of(request)
        if conn is not None and conn.pending:
            self._unpend(conn)

    def admit_stream(self, request: web.Request) -> bool:
        """May this request become a listener connection? False when its address already
        holds ``max_streams_per_address`` of them (the caller refuses it); True otherwise,
        and the connection counts until it closes. Connections the guard did not accept
        (tests' own sites) are always admitted."""
        conn = self._conn_of(request)
        if conn is None or conn.stream:
            return True
        cap = self.max_streams_per_address
        if cap and self._streams.get(conn.address, 0) >= cap:
            held = self._log_throttle.ready(("streams", conn.address))
            if held is not None:
                log.warning("refusing a listener connection from %s: it already holds %d "
                            "(max_streams_per_address)%s", conn.address, cap, _more(held))
            return False
        conn.stream = True
        self._streams[conn.address] = self._streams.get(conn.address, 0) + 1
        return True

    def trust(self, request: web.Request) -> None:
        """The request proved the shared secret: this connection is never pending again."""
        conn = self._conn_of(request)
        if conn is None:
            return
        conn.trusted = True
        self._disarm(conn)
        if conn.pending:
            self._unpend(conn)

    # -- accept errors -------------------------------------------------------------

    def install_accept_error_log(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route the event loop's "out of system resource" accept errors through one
        throttled warning; every other exception goes to the handler there was before."""
        if self._installed_on is not None:
            return
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_exception)
        self._installed_on = loop

    def uninstall_accept_error_log(self) -> None:
        loop, self._installed_on = self._installed_on, None
        if loop is not None and loop.get_exception_handler() == self._on_loop_exception:
            loop.set_exception_handler(self._previous_handler)

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS and "accept" in context.get("message", ""):
            held = self._log_throttle.ready(("accept", exc.errno))
            if held is not None:
                log.warning("cannot accept connections: %s (%d open connections, %d pending); "
                            "retrying every second%s", exc.strerror or errno.errorcode.get(exc.errno),
                            self.connections, self.pending(), _more(held))
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)


def _decrement(counts: dict[str, int], address: str) -> None:
    left = counts.get(address, 0) - 1
    if left > 0:
        counts[address] = left
    else:
        counts.pop(address, None)


def _more(held: int) -> str:
    return f" ({held} more like this in the last {LOG_INTERVAL:g}s)" if held else ""


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol, telling the guard about open and close."""

    __slots__ = ("_guard", "_inner", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard._opened(transport):
            self._inner = None  # aiohttp never sees it
            transport.abort()
            return
        assert self._inner is not None
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard._closed(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guard.protocol_factory(server), self._host, self._port,
                                                backlog=self._backlog)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines with the path but never the query string (tokens travel there),
    nor the Referer (a page URL with its query)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', request.remote, request.method,
                         request.rel_url.raw_path, request.version.major, request.version.minor,
                         response.status, response.body_length, time,
                         request.headers.get("User-Agent", "-")[:200])

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
