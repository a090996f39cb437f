"""How a space looks in chat: its card, its summary, its room's state. Pure."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.core.model import Role, Space, State, Visibility
from bot.matrix.messages import matrix_to, pill

TIP_PROVIDERS = {
    "paypal": ("PayPal", "https://paypal.me/{}"),
    "cashapp": ("Cash App", "https://cash.app/${}"),
    "patreon": ("Patreon", "https://www.patreon.com/{}"),
    "venmo": ("Venmo", "https://venmo.com/u/{}"),
    "bandcamp": ("Bandcamp", "https://{}.bandcamp.com"),
}

ROLES_STATE_EVENT = "org.chorus.space.roles"
WIDGET_STATE_EVENT = "im.vector.modular.widgets"

_VIS_TEXT = {
    "everyone": "open to everyone",
    "following": "open to people the host follows",
    "invited": "invited people only",
}


@dataclass(frozen=True)
class CardFacts:
    space: Space
    room_id: str | None
    page_url: str
    tip_jar: dict[str, str]
    listeners: int
    prefix: str = "!"


def tip_urls(tip_jar: dict[str, str]) -> list[tuple[str, str, str]]:
    """Each tip jar entry as (the provider's name, the handle, its address)."""
    return [(TIP_PROVIDERS[p][0], h, TIP_PROVIDERS[p][1].format(h))
            for p, h in tip_jar.items() if p in TIP_PROVIDERS]


def tip_links(tip_jar: dict[str, str]) -> tuple[str, str]:
    tips = tip_urls(tip_jar)
    if not tips:
        return "", ""
    plain = ", ".join(f"{name} {handle}" for name, handle, _ in tips)
    rich = ", ".join(f'<a href="{html.escape(url)}">{name}</a>' for name, _, url in tips)
    return plain, rich


def card(f: CardFacts) -> tuple[str, str]:
    s = f.space
    p = f.prefix
    speakers = [u for u, r in s.people.items() if r is not Role.LISTENER]
    state_word = {State.LIVE: "🔴 LIVE", State.SCHEDULED: "🗓 Scheduled", State.ENDED: "Ended",
                  State.CANCELLED: "Cancelled"}[s.state]
    lines = [f"{state_word}: {s.title}", f"Host: {s.host} · {_VIS_TEXT[s.visibility.value]} · id {s.id}"]
    rich = [f"<p><b>{state_word}: {html.escape(s.title)}</b><br>",
            f"Host: {pill(s.host)} · {_VIS_TEXT[s.visibility.value]} · id <code>{s.id}</code><br>"]
    if s.state is State.LIVE:
        lines.append(f"Speakers: {', '.join(speakers)} · {f.listeners} listening")
        rich.append(f"Speakers: {', '.join(pill(u) for u in speakers)} · {f.listeners} listening<br>")
        lines.append(f"Join: {p}space join {s.id} (or react 🎧) · ask to speak: {p}space request {s.id} (or ✋)")
        rich.append(f"Join: <code>{p}space join {s.id}</code> (or react 🎧) · ask to speak: "
                    f"<code>{p}space request {s.id}</code> (or ✋)<br>")
        if f.room_id:
            lines.append(f"Room: {matrix_to(f.room_id)} · Listen: {f.page_url}")
            rich.append(f'<a href="{matrix_to(f.room_id)}">Open the space room</a> · '
                        f'<a href="{html.escape(f.page_url)}">listen in the browser</a><br>')
    elif s.state is State.SCHEDULED and s.scheduled_for:
        when = s.scheduled_for.strftime("%a %d %b %Y %H:%M UTC")
        lines.append(f"Starts: {when} · react 🔔 or type {p}space remind {s.id} to be reminded")
        rich.append(f"Starts: {when} · react 🔔 or type <code>{p}space remind {s.id}</code> to be reminded<br>")
        if s.visibility is Visibility.EVERYONE:  # a private space's page needs a personal link
            lines.append(f"Its page (a countdown in your time zone): {f.page_url} · for your calendar: "
                         f"{p}space calendar {s.id}")
            rich.append(f'<a href="{html.escape(f.page_url)}">Its page</a> (a countdown in your time zone) · '
                        f"for your calendar: <code>{p}space calendar {s.id}</code><br>")
        else:
            lines.append(f"For your calendar: {p}space calendar {s.id}")
            rich.append(f"For your calendar: <code>{p}space calendar {s.id}</code><br>")
    elif s.state is State.ENDED and s.visibility is Visibility.EVERYONE:
        lines.append(f"How it went, and the recording if there is one: {f.page_url}")
        rich.append(f'<a href="{html.escape(f.page_url)}">How it went</a>, and the recording if there is one<br>')
    tips_plain, tips_rich = tip_links(f.tip_jar)
    if tips_plain:
        lines.append(f"Tip jar: {tips_plain}")
        rich.append(f"Tip jar: {tips_rich}<br>")
    rich.append("</p>")
    return "\n".join(lines), "".join(rich)


def summary(space: Space, started: datetime | None, ended: datetime, peak: int,
            speakers: list[str], top_reactions: list[tuple[str, int]]) -> tuple[str, str]:
    duration = _duration(ended - started) if started else "unknown"
    reacts = " ".join(f"{k}×{n}" for k, n in top_reactions) or "none"
    plain = (f"“{space.title}” has ended. Duration {duration}, peak listeners {peak}, "
             f"speakers: {', '.join(speakers) or 'the host'}; top reactions: {reacts}.")
    rich = (f"<p><b>“{html.escape(space.title)}” has ended.</b><br>Duration: {duration}<br>"
            f"Peak listeners: {peak}<br>Speakers: {', '.join(pill(u) for u in speakers) or 'the host'}"
            f"<br>Top reactions: {html.escape(reacts)}</p>")
    return plain, rich


def _duration(d: timedelta) -> str:
    secs = max(0, int(d.total_seconds()))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s"


def power_levels(bot: str, space: Space) -> dict:
    """Room power levels that mirror roles: host and co-hosts moderate, the bot administers."""
    users = {bot: 100}
    for user, role in space.people.items():
        if role in (Role.HOST, Role.COHOST):
            users[user] = 50
        elif role is Role.SPEAKER:
            users[user] = 10
    if space.host not in users:
        users[space.host] = 50
    return {
        "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
        "invite": 50, "kick": 50, "ban": 50, "redact": 50,
        "events": {"m.room.power_levels": 100, "m.room.join_rules": 100,
                   ROLES_STATE_EVENT: 100, WIDGET_STATE_EVENT: 100,
                   "m.room.name": 50, "m.room.topic": 50},
    }


def roles_state(space: Space) -> dict:
    """The state event clients read to show who is on stage."""
    by_role: dict[str, list[str]] = {r.value: [] for r in Role}
    for user, role in sorted(space.people.items()):
        by_role[role.value].append(user)
    return {"space_id": space.id, "state": space.state.value, "host": space.host,
            "cohosts": by_role["cohost"], "speakers": by_role["speaker"],
            "requests": list(space.requests), "listeners": len(by_role["listener"])}


def widget_state(space: Space, page_url: str) -> dict:
    url = page_url + ("&" if "?" in page_url else "?") + \
        "widget=1&user=$matrix_user_id&room=$matrix_room_id&widgetId=$matrix_widget_id"
    return {"type": "m.custom", "url": url, "name": f"Chorus audio: {space.title}",
            "id": f"chorus-{space.id}", "data": {"space_id": space.id}}


def join_rule_for(visibility: str) -> str:
    return {"everyone": "public", "following": "knock", "invited": "invite"}[visibility]
