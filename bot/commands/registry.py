"""Commands: one decorated function each, its help and arguments declared beside it.

The help text, ``!help`` and ``docs/commands.md`` are all generated from the registry,
so they cannot drift from the code.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.core.bounds import INT_MAX, clip, whole_number

SPACE_ID_RE = re.compile(r"^[a-z2-9]{6}$")

#: the order of the families in help and in docs/commands.md
GROUP_ORDER = ("Basics", "Following", "Spaces", "Hosts and co-hosts", "Scheduling", "Tip jar",
               "Announcements", "Moderators")


class UsageError(Exception):
    """The command was typed wrong; the message says how to type it right."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # user | text | word | int | space | option
    optional: bool = False
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    #: the range of an int param (by default what a 32-bit column holds)
    low: int = 0
    high: int = INT_MAX

    def usage(self) -> str:
        if self.kind == "option":
            return f"[{self.name}={'|'.join(self.choices) if self.choices else '…'}]"
        label = {"user": f"@{self.name}", "text": f"{self.name}…", "space": "id"}.get(self.kind, self.name)
        if self.kind == "word" and self.choices:
            label = "|".join(self.choices)
        return f"[{label}]" if self.optional else f"<{label}>"


def user(name: str = "user", optional: bool = False, help: str = "") -> Param:
    return Param(name, "user", optional, help=help)


def text(name: str, optional: bool = False, help: str = "") -> Param:
    return Param(name, "text", optional, help=help)


def word(name: str, choices: tuple[str, ...] = (), optional: bool = False, help: str = "") -> Param:
    return Param(name, "word", optional, choices, help=help)


def integer(name: str, optional: bool = False, help: str = "", low: int = 0, high: int = INT_MAX) -> Param:
    return Param(name, "int", optional, help=help, low=low, high=high)


def space_id(optional: bool = True) -> Param:
    """A space id; may be left out inside the space's own room."""
    return Param("id", "space", optional)


def option(name: str, choices: tuple[str, ...] = (), default: str | None = None, help: str = "") -> Param:
    return Param(name, "option", True, choices, default, help)


Handler = Callable[..., Awaitable[None]]


@dataclass
class CommandSpec:
    words: tuple[str, ...]
    params: tuple[Param, ...]
    help: str
    group: str
    handler: Handler
    moderator_only: bool = False
    examples: tuple[str, ...] = ()
    #: more to know, shown by help for this one command and in docs/commands.md
    details: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " ".join(self.words)

    def usage(self, prefix: str = "!") -> str:
        return " ".join([prefix + self.name, *(p.usage() for p in self.params)])


@dataclass
class Registry:
    commands: dict[tuple[str, ...], CommandSpec] = field(default_factory=dict)

    def command(self, name: str, *params: Param, help: str, group: str,
                moderator_only: bool = False, examples: tuple[str, ...] = (), details: tuple[str, ...] = ()):
        words = tuple(name.split())

        def register(fn: Handler) -> Handler:
            if words in self.commands:
                raise ValueError(f"command {name!r} registered twice")
            self.commands[words] = CommandSpec(words, tuple(params), help, group, fn,
                                               moderator_only, examples, details)
            return fn

        return register

    def groups(self) -> dict[str, list[CommandSpec]]:
        out: dict[str, list[CommandSpec]] = {}
        for spec in self.commands.values():
            out.setdefault(spec.group, []).append(spec)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))

    def find(self, tokens: list[str], prefix: str = "!") -> tuple[CommandSpec, list[str]]:
        """The command the tokens name (longest match) and the remaining tokens."""
        lowered = [t.lower() for t in tokens]
        for n in (2, 1):
            key = tuple(lowered[:n])
            if len(key) == n and key in self.commands:
                return self.commands[key], tokens[n:]
        raise UsageError(self._unknown(lowered, prefix))

    def _unknown(self, lowered: list[str], prefix: str = "!", what_for: str = "command") -> str:
        lowered = [clip(t) for t in lowered[:2]]
        typed = " ".join(lowered)
        names = [" ".join(w) for w in self.commands]
        families = {w[0] for w in self.commands if len(w) > 1}
        if lowered and lowered[0] in families:
            subs = sorted(w[1] for w in self.commands if len(w) > 1 and w[0] == lowered[0])
            attempt = lowered[1] if len(lowered) > 1 else ""
            close = difflib.get_close_matches(attempt, subs, n=1)
            hint = f" Did you mean “{prefix}{lowered[0]} {close[0]}”?" if close else ""
            what = f"“{prefix}{typed}” is not a command." if attempt else f"“{prefix}{lowered[0]}” needs a subcommand."
            return f"{what}{hint} Try: {', '.join(subs)}. Type {prefix}help {lowered[0]} for details."
        close = difflib.get_close_matches(typed, names, n=1) or difflib.get_close_matches(
            lowered[0] if lowered else "", names, n=1)
        hint = f" Did you mean “{prefix}{close[0]}”?" if close else ""
        if what_for == "topic":
            sections = ", ".join(g.lower() for g in self.groups())
            return (f"There is no help on “{typed}”.{hint} Ask for a command (e.g. {prefix}help space start) "
                    f"or a section: {sections}.")
        return f"I don't know the command “{prefix}{typed}”.{hint} Type {prefix}help to see all commands."

    def topic(self, text: str, prefix: str = "!") -> tuple[str, list[CommandSpec], frozenset[str]]:
        """What ``!help <text>`` is about: a section of docs/commands.md (its name, or a word
        of it: "scheduling", "hosts", "tip jar"), one command ("space schedule"), a family
        ("space", "mod") or a command's last word ("schedule"). Returns ("section"|"command"|
        "family", the commands, the names of those to show in full); UsageError with the
        nearest topic if none. A command named as its section ("spaces", "following") gives
        the section, with that command in full."""
        words = [w for w in re.split(r"[\s_]+", text.lower().strip()) if w]
        if words and words[0].startswith(prefix):
            words[0] = words[0][len(prefix):]
        words = [w for w in words if w]
        typed = " ".join(words)
        key = tuple(words)
        exact = frozenset({typed}) if key in self.commands else frozenset()
        squeezed = typed.replace(" ", "").replace("-", "")
        for group, specs in self.groups().items():
            name = group.lower()
            keys = {name.replace(" ", "").replace("-", "")}
            keys |= {w.replace("-", "") for w in name.split() if w not in ("and", "jar")}
            if squeezed in keys:
                return "section", specs, exact
        family = [s for s in self.commands.values() if len(words) == 1 and s.words[0] == typed]
        if len(family) > 1:
            return "family", family, exact
        if exact:
            return "command", [self.commands[key]], exact
        last = [s for s in self.commands.values() if len(words) == 1 and len(s.words) > 1 and s.words[-1] == typed]
        if len(last) == 1:
            return "command", last, frozenset({last[0].name})
        if last:
            return "family", last, frozenset()
        raise UsageError(self._unknown(words, prefix, what_for="topic"))


def split_args(text: str) -> list[str]:
    """Split on white space; "double quotes" keep words together."""
    tokens: list[str] = []
    for m in re.finditer(r'"([^"]*)"|(\S+)', text):
        tokens.append(m.group(1) if m.group(1) is not None else m.group(2))
    return tokens


def parse(spec: CommandSpec, tokens: list[str], prefix: str = "!") -> dict[str, Any]:
    """Match tokens to the declared params; raw strings for users/spaces (resolved later)."""
    usage = f"Usage: {spec.usage(prefix)}"
    options = {p.name: p for p in spec.params if p.kind == "option"}
    values: dict[str, Any] = {p.name: p.default for p in options.values()}
    rest: list[str] = []
    for tok in tokens:
        key, eq, val = tok.partition("=")
        if eq and key.lower() in options:
            p = options[key.lower()]
            val = val.lower()
            if p.choices and val not in p.choices:
                raise UsageError(f"{clip(key)}= takes one of {', '.join(p.choices)}, not “{clip(val)}”. {usage}")
            values[p.name] = val
        else:
            rest.append(tok)
    positional = [p for p in spec.params if p.kind != "option"]
    for i, p in enumerate(positional):
        if p.kind == "text":
            joined = " ".join(rest).strip()
            rest = []
            if not joined and not p.optional:
                raise UsageError(f"Missing {p.name}. {usage}")
            values[p.name] = joined or None
            continue
        remaining_required = [q for q in positional[i + 1:] if not q.optional]
        if p.kind == "space":
            if rest and SPACE_ID_RE.match(rest[0].lower()) and (
                    len(rest) > len(remaining_required) or not p.optional):
                values[p.name] = rest.pop(0).lower()
            elif not p.optional:
                raise UsageError(f"Missing the space id. {usage}")
            else:
                values[p.name] = None
            continue
        if not rest:
            if p.optional:
                values[p.name] = None
                continue
            raise UsageError(f"Missing {p.usage()}. {usage}")
        if p.kind == "user" and i == len(positional) - 1 and len(rest) > 1 and not rest[0].startswith("@"):
            values[p.name] = " ".join(rest)  # a display name with spaces, e.g. "Alice Liddell"
            rest = []
            continue
        tok = rest.pop(0)
        if p.kind == "int":
            number = whole_number(tok)
            if number is None or not p.low <= number <= p.high:
                raise UsageError(f"{p.name} must be a whole number from {p.low} to {p.high}, "
                                 f"not “{clip(tok)}”. {usage}")
            values[p.name] = number
        elif p.kind == "word" and p.choices:
            tok_l = tok.lower()
            if tok_l not in p.choices:
                close = difflib.get_close_matches(clip(tok_l), p.choices, n=1)
                hint = f" Did you mean “{close[0]}”?" if close else ""
                raise UsageError(f"“{clip(tok)}” is not one of {', '.join(p.choices)}.{hint} {usage}")
            values[p.name] = tok_l
        elif p.kind == "word":
            values[p.name] = tok
        else:  # user: raw, resolved by the dispatcher
            values[p.name] = tok
    if rest:
        raise UsageError(f"Too many words: “{clip(' '.join(rest))}”. {usage}")
    return values


def help_text(registry: Registry, prefix: str, topic: str | None = None,
              is_moderator: bool = True) -> tuple[str, str]:
    """Plain and HTML help: for everything, or for one section, family or command (which
    also shows its arguments, examples and details)."""
    import html as _html

    kind, specs, detailed = (registry.topic(topic, prefix) if topic
                             else ("all", list(registry.commands.values()), frozenset()))
    shown = [s for s in specs if is_moderator or not s.moderator_only]
    if not shown:
        raise UsageError(f"Those commands are for moderators only. Type {prefix}help to see yours.")
    groups = {g: [s for s in items if s in shown] for g, items in registry.groups().items()}
    groups = {g: items for g, items in groups.items() if items}
    plain, rich = [], []
    for group, items in groups.items():
        plain.append(group)
        rich.append(f"<p><b>{_html.escape(group)}</b></p><ul>")
        for s in items:
            plain.append(f"  {s.usage(prefix)} — {s.help}")
            rich.append(f"<li><code>{_html.escape(s.usage(prefix))}</code> — {_html.escape(s.help)}")
            if s.name in detailed:
                more = [f"{p.name}: {p.help}" for p in s.params if p.help]
                more += [f"e.g. {prefix}{ex}" for ex in s.examples]
                plain += [f"    {line}" for line in (*more, *s.details)]
                rich.append("<ul>" + "".join(f"<li>{_html.escape(line)}</li>" for line in (*more, *s.details))
                            + "</ul>" if more or s.details else "")
            rich.append("</li>")
        rich.append("</ul>")
    if kind == "all":
        sections = ", ".join(g.lower() for g in groups)
        plain.append(f"Type {prefix}help <command> or {prefix}help <section> for more, e.g. "
                     f"{prefix}help space schedule or {prefix}help scheduling. Sections: {sections}.")
        rich.append(f"<p>Type <code>{prefix}help &lt;command&gt;</code> or <code>{prefix}help &lt;section&gt;</code> "
                    f"for more, e.g. <code>{prefix}help space schedule</code> or <code>{prefix}help scheduling</code>. "
                    f"Sections: {_html.escape(sections)}.</p>")
    return "\n".join(plain), "".join(rich)


def markdown_reference(registry: Registry, prefix: str = "!") -> str:
    """docs/commands.md, generated."""
    out = ["# Chorus commands", "",
           "Generated from the code by `python -m bot docs`; do not edit by hand.",
           "", "Arguments: `<required>`, `[optional]`, `@user` is a Matrix id, a pill or a display name; "
           "`id` is a space id and may be left out inside the space's own room.", ""]
    for group, specs in registry.groups().items():
        out += [f"## {group}", ""]
        for s in specs:
            mod = " *(moderators)*" if s.moderator_only else ""
            out.append(f"- `{s.usage(prefix)}`{mod} — {s.help}")
            for p in s.params:
                if p.help:
                    out.append(f"  - `{p.name}`: {p.help}")
            for ex in s.examples:
                out.append(f"  - e.g. `{prefix}{ex}`")
            for line in s.details:
                out.append(f"  - {line}")
        out.append("")
    return "\n".join(out)


#: the bot's commands; the family modules register into it
registry = Registry()
