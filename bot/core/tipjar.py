"""Tip jar handles: which providers, and what a valid handle looks like for each."""

from __future__ import annotations

import re

_RULES: dict[str, tuple[str, re.Pattern[str], str]] = {
    "paypal": ("PayPal.me", re.compile(r"^[A-Za-z0-9]{1,20}$"), "1–20 letters or digits, e.g. JaneDoe"),
    "cashapp": ("Cash App", re.compile(r"^(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,20}$"),
                "a $cashtag of 1–20 letters or digits with at least one letter, e.g. $JaneDoe"),
    "patreon": ("Patreon", re.compile(r"^[A-Za-z0-9_]{1,64}$"), "letters, digits or _, e.g. janedoe"),
    "venmo": ("Venmo", re.compile(r"^[A-Za-z0-9_-]{5,30}$"), "5–30 letters, digits, - or _, e.g. @Jane-Doe"),
    "bandcamp": ("Bandcamp", re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"),
                 "the lowercase name in name.bandcamp.com, e.g. janedoe"),
}

PROVIDERS = tuple(_RULES)


class TipJarError(ValueError):
    pass


def normalise_handle(provider: str, handle: str) -> str:
    """The handle to store, or TipJarError saying what a valid one looks like."""
    provider = provider.lower()
    if provider not in _RULES:
        raise TipJarError(f"“{provider}” is not a tip jar provider; use one of {', '.join(PROVIDERS)}.")
    name, pattern, example = _RULES[provider]
    h = handle.strip()
    if provider == "cashapp":
        h = h.removeprefix("$")
    elif provider == "venmo":
        h = h.removeprefix("@")
    elif provider == "bandcamp":
        h = h.removesuffix(".bandcamp.com").removeprefix("https://").removeprefix("http://")
        h = h.removesuffix(".bandcamp.com")
    elif provider == "paypal":
        for p in ("https://paypal.me/", "paypal.me/", "https://www.paypal.me/"):
            h = h.removeprefix(p)
    if not pattern.match(h):
        raise TipJarError(f"“{handle}” is not a valid {name} handle: {example}.")
    return h
