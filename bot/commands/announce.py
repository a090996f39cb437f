"""Announcements: one-off or recurring messages that moderators (and room moderators)
schedule into rooms — event reminders, rules of the week, "space tonight at 8"."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from bot.core.bounds import clip
from bot.core.when import (
    WhenError,
    check_window,
    describe_instant,
    next_fire_times,
    parse_recurrence,
    parse_when,
    zone_name,
)
from bot.matrix.client import MatrixError
from bot.matrix.messages import is_room_alias, is_room_id

from .context import Ctx
from .registry import UsageError, integer, registry, text

ANN = "Announcements"
USAGE = ("!announce <room> at <when> | <text>  or  !announce <room> every <schedule> | <text> "
         "(e.g. every day 09:00, every monday 18:00, every 2 hours, or a cron line)")
MAX_ANNOUNCEMENT = 4000


def parse_spec(spec: str) -> dict[str, str] | None:
    """``<room> at|every|cron <when> | <text>`` split into its parts, or None.

    A tokenizer, not a regex: one split on the first ``|`` and one on white space, so the
    work is linear in the length of what was typed, whatever it holds."""
    head, bar, message = spec.partition("|")
    words = head.split(None, 2)
    if not bar or len(words) < 3 or words[1].lower() not in ("at", "every", "cron"):
        return None
    when, message = words[2].strip(), message.strip()
    if not when or not message:
        return None
    return {"room": words[0], "mode": words[1], "when": when, "text": message}


def _svc(ctx: Ctx):
    if ctx.services.scheduler is None:
        raise UsageError("Scheduling is not running on this bot.")
    return ctx.services.scheduler


async def _may_announce(ctx: Ctx, room_id: str, typed: str) -> None:
    """Refused unless the sender may announce there; the room is named as they typed it."""
    level = await ctx.matrix.power_level(room_id, ctx.sender)
    if level is None:
        raise UsageError(f"I'm not in {typed}; invite me there first.")
    if not ctx.spaces.is_moderator(ctx.sender) and level < 50:
        raise UsageError(f"Only moderators, or people with power level 50 or more in {typed} "
                         f"(you have {level}), can schedule announcements there.")


@registry.command("announce", text("room at|every when | text"), group=ANN,
                  help="Schedule a message into a room, once or again and again (moderators and room mods).",
                  examples=("announce #general:example.org at friday 17:00 | Space tonight at 8!",
                            "announce #general:example.org every monday 09:00 Europe/Berlin | **Weekly** sync"))
async def announce(ctx: Ctx, **kw) -> None:
    raw = ctx.content.get("body", "").strip()
    spec = raw.split(None, 1)[1] if len(raw.split(None, 1)) > 1 else ""
    m = parse_spec(spec)
    if not m:
        raise UsageError(f"Usage: {USAGE}")
    if len(m["text"]) > MAX_ANNOUNCEMENT:
        raise UsageError(f"Keep an announcement under {MAX_ANNOUNCEMENT} characters.")
    if not (is_room_alias(m["room"]) or is_room_id(m["room"])):
        raise UsageError(f"“{clip(m['room'])}” is not a room: give its alias (#name:server) or id "
                         f"(!id:server). Usage: {USAGE}")
    svc = _svc(ctx)
    try:
        room_id = await ctx.matrix.resolve_room(m["room"])
    except MatrixError as exc:
        raise UsageError(f"I can't find the room {m['room']}: {exc}") from None
    await _may_announce(ctx, room_id, m["room"])
    tz = await svc.user_tz(ctx.sender)
    message = m["text"]
    now = datetime.now(UTC)
    try:
        if m["mode"].lower() == "at":
            parsed = parse_when(m["when"], now, tz)
            check_window(parsed, now, 365)
            ann = await ctx.db.add_announcement(room_id=room_id, owner_id=ctx.sender, text=message,
                                                schedule=m["when"].strip(), timezone=zone_name(parsed.tz),
                                                recurring=False)
            await svc.plan_announcement(ann, parsed.instant)
            when = parsed.describe()
        else:
            rec = parse_recurrence(f"{m['mode'].lower()} {m['when'].strip()}", tz)
            ann = await ctx.db.add_announcement(room_id=room_id, owner_id=ctx.sender, text=message,
                                                schedule=rec.text, timezone=zone_name(rec.tz), recurring=True)
            await svc.plan_announcement(ann)
            upcoming = ", ".join(describe_instant(t, rec.tz) for t in next_fire_times(rec, now, 2))
            when = f"{rec.describe()} (next: {upcoming})"
    except WhenError as exc:
        raise UsageError(str(exc)) from None
    await ctx.db.audit(ctx.sender, "announce.add", None, room_id, f"#{ann.id} {when}")
    await ctx.reply(f"Announcement #{ann.id} for {m['room']}: {when}. "
                    f"Cancel with {ctx.prefix}announce cancel {ann.id}.")


@registry.command("announce list", group=ANN, help="Scheduled announcements (yours; all for moderators).")
async def announce_list(ctx: Ctx) -> None:
    svc = _svc(ctx)
    rows = await ctx.db.announcements(None if ctx.spaces.is_moderator(ctx.sender) else ctx.sender)
    if not rows:
        await ctx.reply("No announcements are scheduled.")
        return
    tz = await svc.user_tz(ctx.sender)
    lines = []
    planned = await svc.next_announcements([a.id for a in rows])
    labels = {room_id: await ctx.matrix.room_label(room_id) for room_id in {a.room_id for a in rows}}
    for a in rows:
        nxt = planned[a.id]
        when = describe_instant(nxt, tz) if nxt else "not planned"
        kind = "every " + a.schedule.removeprefix("every ") if a.recurring else "once"
        preview = a.text if len(a.text) <= 60 else a.text[:57] + "…"
        lines.append(f"#{a.id} {labels[a.room_id]} · {kind} · next {when} · by {a.owner_id} · {preview}")
    await ctx.reply("\n".join(lines), "<br>".join(html.escape(x) for x in lines))


@registry.command("announce cancel", integer("number"), group=ANN, help="Stop a scheduled announcement.")
async def announce_cancel(ctx: Ctx, number: int) -> None:
    svc = _svc(ctx)
    ann = await ctx.db.announcement(number)
    if ann is None or not ann.active:
        raise UsageError(f"There is no scheduled announcement #{number}. See {ctx.prefix}announce list.")
    if ann.owner_id != ctx.sender and not ctx.spaces.is_moderator(ctx.sender):
        raise UsageError(f"Announcement #{number} is {ann.owner_id}'s; only they or a moderator can cancel it.")
    await svc.cancel_announcement(number)
    await ctx.db.audit(ctx.sender, "announce.cancel", None, ann.room_id, f"#{number}")
    await ctx.reply(f"Announcement #{number} is cancelled.")
