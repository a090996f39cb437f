"""JSON from strangers, bounded: size and nesting are checked before the parser runs.

Python's ``json`` parser recurses once per level of nesting, so a message like
``[[[[…]]]]`` 5,000 deep raises RecursionError (and a deep enough one can exhaust the C
stack). :func:`loads` refuses such input before parsing, in one linear scan that counts
nesting outside strings, and turns every parser failure into :class:`JsonRefused`.
"""

from __future__ import annotations

import json
from typing import Any

#: deeper than anything the bridge's protocol needs (the control API nests 2 levels)
MAX_DEPTH = 16
#: a client's WebSocket messages are small; the control API's bodies are at most 64 KiB
MAX_BYTES = 64 * 1024


class JsonRefused(ValueError):
    """The text is not acceptable JSON; the message says why, in a few words."""


def nesting_depth(text: str, limit: int) -> int:
    """The deepest nesting of ``[``/``{`` outside strings, counting no further than
    ``limit + 1``. One pass, no recursion: linear in ``len(text)``."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(data: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as JSON, refusing (JsonRefused) what is too large, too deep or broken."""
    if len(data) > max_bytes:
        raise JsonRefused(f"message too large (more than {max_bytes} bytes)")
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused("not UTF-8") from None
    if nesting_depth(data, max_depth) > max_depth:
        raise JsonRefused(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise JsonRefused("not JSON") from None


def loads_object(data: str | bytes, **limits: int) -> dict[str, Any]:
    """Like :func:`loads`, and the value must be a JSON object."""
    value = loads(data, **limits)
    if not isinstance(value, dict):
        raise JsonRefused("expected a JSON object")
    return value
