"""A small HTTP server for operators: ``GET /metrics`` (Prometheus' text format) and
``GET /healthz`` (JSON; 200 when healthy, 503 when not). The bridge runs one on
``[bridge] metrics_listen`` and the bot one on ``[bot] metrics_listen``, apart from any
port the public reaches (the figures name spaces, private ones included).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from .schema import split_listen

log = logging.getLogger(__name__)

# no "_created" twin of each counter and histogram: Prometheus does not use them
disable_created_metrics()

#: (healthy, what the JSON says)
Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


def new_registry() -> CollectorRegistry:
    """A registry of a service's own (several may run in one process: the bot and its
    embedded bridge, or a test's), with the process's CPU, memory, file descriptors and
    garbage collector."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


async def start_status_server(listen: str, registry: CollectorRegistry, health: Health, *, name: str,
                              before_scrape: Callable[[], Awaitable[None]] | None = None) -> tuple[web.AppRunner, int]:
    """Serve ``registry`` and ``health`` on ``listen`` ("host:port"; port 0 picks a free
    one). ``before_scrape`` refreshes figures that need I/O. Returns the runner (stop it
    with ``cleanup()``) and the port bound."""
    where = split_listen(listen)
    if where is None:
        raise ValueError(f"not a host:port listen address: {listen!r}")
    host, port = where

    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        # the format the scraper asks for: Prometheus' text format, or OpenMetrics
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        ok, report = await health()
        return web.json_response({"ok": ok, **report}, status=200 if ok else 503)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"Chorus {name}: /metrics (Prometheus), /healthz\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"{name}: cannot serve /metrics on {listen} (metrics_listen): {exc.strerror}") from exc
    bound = runner.addresses[0][1] if runner.addresses else port  # the port bound when 0 was asked for
    log.info("%s: /metrics and /healthz on http://%s:%d", name, f"[{host}]" if ":" in host else host, bound)
    return runner, bound
