"""Limits on what people type, shared by every parser: pure, no I/O."""

from __future__ import annotations

#: the Matrix spec's limit for user ids, room ids and room aliases (in bytes; ours are ASCII)
MAX_ID_LENGTH = 255
#: whole numbers fit a 32-bit signed column (PostgreSQL's INTEGER)
INT_MAX = 2**31 - 1
#: how much of what someone typed an error message echoes back
ECHO = 60


def clip(text: str, limit: int = ECHO) -> str:
    """``text`` shortened to ``limit`` characters with an ellipsis: for echoing what
    someone typed back to them without echoing all of it."""
    text = str(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def whole_number(text: str) -> int | None:
    """``text`` as an int, or None; long digit strings are refused before ``int()`` sees them."""
    if len(text) > 12:
        return None
    try:
        return int(text)
    except ValueError:
        return None
