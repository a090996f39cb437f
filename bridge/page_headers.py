"""The headers every answer of the bridge carries, so a page's token stays the page's.

- ``Referrer-Policy: no-referrer``: a link followed from a page (a tip jar, matrix.to)
  tells the other site nothing of the page's address.
- ``Content-Security-Policy``: scripts, styles and images from the bridge itself only (no
  inline script, no ``eval``), connections to the bridge itself and to the addresses of
  the deployment's other bridges (its edges, or an edge's origin), no forms, no plugins.
  Framing is not restricted (no ``frame-ancestors``): the page is a widget in whatever
  Matrix client a community uses, Element Desktop's ``vector://`` included, which
  ``frame-ancestors *`` would refuse.
- ``X-Content-Type-Options: nosniff``: a file is only ever what its type says.

Pure: the addresses of the other bridges are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

#: what a host[:port] in a source may hold (so no address can add a directive of its own)
_NETLOC = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def sources_for(url: str) -> list[str]:
    """The CSP sources that let a page reach the bridge at ``url`` over HTTP and WebSocket;
    [] for anything that is not a plain http(s) address."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if parts.scheme not in ("http", "https") or not _NETLOC.fullmatch(parts.netloc or ""):
        return []
    ws = "wss" if parts.scheme == "https" else "ws"
    return [f"{parts.scheme}://{parts.netloc}", f"{ws}://{parts.netloc}"]


def content_security_policy(other_bridges: Iterable[str] = ()) -> str:
    connect = ["'self'"]
    for url in other_bridges:
        connect += [s for s in sources_for(url) if s not in connect]
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {' '.join(connect)}",
        "media-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
    ])


def security_headers(other_bridges: Iterable[str] = ()) -> dict[str, str]:
    return {
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": content_security_policy(other_bridges),
        "X-Content-Type-Options": "nosniff",
    }
