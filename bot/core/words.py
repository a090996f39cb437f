"""Small rules of the bot's English: plurals, and the command prefix in every hint.

Pure: the texts are built elsewhere; these only get a count or a prefix right.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

#: what the rules and texts write before a command name; a bot configured with another
#: prefix shows its own (:func:`with_prefix`)
WRITTEN_PREFIX = "!"

_IRREGULAR = {"person": "people", "reply": "replies", "entry": "entries"}


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 follower``, ``2 followers``, ``0 followers``; ``1 person``, ``3 people``."""
    return f"{n} {one if n == 1 else many or _IRREGULAR.get(one) or one + 's'}"


def prefixer(prefix: str, commands: Iterable[str]) -> Callable[[str], str]:
    """A function showing texts with ``prefix`` (:func:`with_prefix`), its pattern built once:
    it runs on every notice the bot sends."""
    words = sorted({c.split()[0] for c in commands if c}, key=len, reverse=True)
    if prefix == WRITTEN_PREFIX or not words:
        return lambda text: text
    pattern = re.compile(r"(?<![\w!])!(?=(?:" + "|".join(map(re.escape, words)) + r")(?![\w-]))")
    own = re.compile(re.escape(prefix))

    def show(text: str) -> str:
        if not text:
            return text
        covered = {i for m in own.finditer(text) for i in range(m.start(), m.end())}
        return pattern.sub(lambda m: m.group(0) if m.start() in covered else prefix, text)

    return show


def with_prefix(text: str, prefix: str, commands: Iterable[str]) -> str:
    """``text`` with every written ``!command`` (one of ``commands``' first words) shown with
    ``prefix`` instead. Left alone: other ``!`` (a room id, an exclamation), and a ``!`` that
    is part of the prefix where the text already has it (``?!help`` stays, with prefix ``?!``)."""
    return prefixer(prefix, commands)(text)
