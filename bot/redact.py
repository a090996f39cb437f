"""Secrets never reach a log: a logging filter that blanks them out of every record.

It knows the secrets of this run (the bridge's shared secret, the bot's password and access
token), and also blanks anything shaped like one: ``Bearer …`` headers, ``access_token=…``
and ``token=…`` query parameters, ``"Authorization": "…"`` pairs. It is a last line of
defence; the code also avoids logging requests' reprs in the first place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

HIDDEN = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:access_)?token=)[^&\s'\"]+"),
    re.compile(r"(?i)(['\"]?authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+(?:\s+[^'\"\s,}]+)?"),
    re.compile(r"(?i)(['\"](?:access_token|password|shared_secret)['\"]\s*:\s*['\"])[^'\"]+"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, HIDDEN)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + HIDDEN, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with secrets blanked out."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # at least 8 characters: blanking short strings would mangle ordinary words
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: log it as it is
            message = str(record.msg)
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
            record.exc_info = None  # formatters print exc_text; nothing re-renders the raw traceback
        return True


def install(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Put a redacting filter on every handler of the root logger (call after logging is set up)."""
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(flt)
    return flt
