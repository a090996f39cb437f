"""Follower counts imported from another network: ``user id, count`` per line."""

from __future__ import annotations

import csv
import io
import re

from .bounds import INT_MAX, MAX_ID_LENGTH, clip, whole_number

_USER = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")


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
        if len(user) > MAX_ID_LENGTH or not _USER.match(user):
            errors.append(f"line {n}: “{clip(user)}” is not a Matrix user id (@name:server)")
            continue
        count = whole_number(raw)
        if count is None:
            errors.append(f"line {n}: count “{clip(raw)}” is not a whole number from 0 to {INT_MAX}")
            continue
        if not 0 <= count <= INT_MAX:
            errors.append(f"line {n}: count {count} is not between 0 and {INT_MAX}")
            continue
        counts[user] = count
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ImportError_("Nothing was imported. " + "; ".join(errors[:5]) + more)
    if not counts:
        raise ImportError_("Nothing to import: give one “@user:server, count” per line.")
    return counts
