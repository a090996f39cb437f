"""Follower counts imported from another network: ``user id, count`` per line."""

from __future__ import annotations

import csv
import io
import re

_USER = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
#: the Matrix spec's longest user id
MAX_USER_ID = 255
#: counts are stored in a 32-bit signed column
MAX_COUNT = 2**31 - 1
#: what an error echoes of a bad cell
_ECHO = 60


def _clip(text: str) -> str:
    return text if len(text) <= _ECHO else text[: _ECHO - 1] + "…"


class ImportError_(ValueError):
    pass


def parse_counts(text: str) -> dict[str, int]:
    """All lines or none: any bad line raises with its number and what is wrong.

    A first line ``user_id,count`` (a header) is skipped; blank lines and ``#`` comments too.
    """
    counts: dict[str, int] = {}
    errors: list[str] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if n == 1 and cells[0].lower() in ("user_id", "user", "mxid"):
            continue
        if len(cells) != 2:
            errors.append(f"line {n}: expected “user id, count”, got {len(cells)} fields")
            continue
        user, raw = cells
        if len(user) > MAX_USER_ID or not _USER.match(user):
            errors.append(f"line {n}: “{_clip(user)}” is not a Matrix user id (@name:server)")
            continue
        try:
            count = int(raw) if len(raw) <= 12 else None
        except ValueError:
            count = None
        if count is None:
            errors.append(f"line {n}: count “{_clip(raw)}” is not a whole number from 0 to {MAX_COUNT}")
            continue
        if not 0 <= count <= MAX_COUNT:
            errors.append(f"line {n}: count {count} is not between 0 and {MAX_COUNT}")
            continue
        counts[user] = count
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ImportError_("Nothing was imported. " + "; ".join(errors[:5]) + more)
    if not counts:
        raise ImportError_("Nothing to import: give one “@user:server, count” per line.")
    return counts
