"""Reading a /metrics page as Prometheus would: with prometheus-client's own text parser."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(base: str | int) -> Samples:
    """The samples of ``base``/metrics (a URL, or a port on 127.0.0.1); it must answer 200 in
    Prometheus' text format."""
    url = f"http://127.0.0.1:{base}" if isinstance(base, int) else base
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics",
                                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError if there is no such series."""
    return samples[(name, tuple(sorted(labels.items())))]


async def healthz(base: str | int) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{base}" if isinstance(base, int) else base
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz",
                                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return resp.status, await resp.json()
