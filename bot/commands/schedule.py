"""Scheduled spaces, reminders, time zones and go-live notifications."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.core import rules
from bot.core.model import State, Visibility
from bot.core.when import WHEN_FORMS, WhenError, check_window, describe_instant, parse_timezone, parse_when, zone_name
from bot.db.store import as_utc

from .context import Ctx
from .registry import UsageError, option, registry, space_id, text, word

SCHED = "Scheduling"
EXAMPLES_WHEN = "tomorrow 18:00, in 2 hours, friday 9pm, 2026-12-01 18:00 Europe/Berlin"


def _svc(ctx: Ctx):
    if ctx.services.scheduler is None:
        raise UsageError("Scheduling is not running on this bot.")
    return ctx.services.scheduler


async def _parse_future(ctx: Ctx, when_text: str):
    svc = _svc(ctx)
    tz = await svc.user_tz(ctx.sender)
    now = datetime.now(UTC)
    try:
        parsed = parse_when(when_text, now, tz)
        check_window(parsed, now, (await ctx.spaces.limits()).max_days_ahead)
    except WhenError as exc:
        raise UsageError(f"{exc} Your time zone is {zone_name(tz)} (change it with {ctx.prefix}timezone).") from None
    return parsed


@registry.command("space schedule", text("when | title"), option("visibility", ("everyone", "following", "invited"),
                  "everyone"), option("autostart", ("yes", "no"), "no", help="start by itself at the time"),
                  group=SCHED, help="Schedule a space up to 14 days ahead: when | title.",
                  examples=("space schedule tomorrow 18:00 | Friday jam", "space schedule fri 9pm Europe/Berlin | "
                            "Book club visibility=following autostart=yes"),
                  details=("when can be any of these (case does not matter):",
                           *(f"{form}: {', '.join(examples)}" for form, examples in WHEN_FORMS)))
async def schedule(ctx: Ctx, visibility: str, autostart: str, **kw) -> None:
    when_text, sep, title = kw["when | title"].partition("|")
    if not sep or not title.strip() or not when_text.strip():
        raise UsageError(f"Separate the time and the title with |, e.g. {ctx.prefix}space schedule "
                         f"tomorrow 18:00 | Friday jam. Times like: {EXAMPLES_WHEN} "
                         f"({ctx.prefix}help space schedule lists every form).")
    parsed = await _parse_future(ctx, when_text.strip())
    outcome = await ctx.spaces.start(ctx.sender, title.strip(), Visibility(visibility), ctx.room_id,
                                     scheduled_for=parsed.instant, autostart=autostart == "yes")
    how = "It will start by itself." if autostart == "yes" else \
        f"I'll remind you then; start it with {ctx.prefix}space golive {outcome.space.id}."
    await ctx.reply(f"{outcome.reply} Starts {parsed.describe()}. {how}")


@registry.command("space golive", space_id(), group=SCHED, help="Start your scheduled space now.")
async def golive(ctx: Ctx, id: str | None) -> None:
    sid = id or await _only_scheduled_of(ctx)
    outcome = await ctx.spaces.act(sid, ctx.sender, rules.GoLive())
    room = await ctx.spaces.welcome(sid, ctx.sender)
    await ctx.reply(outcome.reply + (" You have been invited to its room." if room else ""))


async def _only_scheduled_of(ctx: Ctx) -> str:
    mine = [r.id for r in await ctx.db.spaces_in_state(State.SCHEDULED) if r.host_id == ctx.sender]
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UsageError("You have no scheduled space.")
    raise UsageError(f"You have several scheduled spaces ({', '.join(mine)}); add the id.")


@registry.command("space cancel", space_id(optional=False), group=SCHED, help="Cancel a scheduled space.")
async def cancel(ctx: Ctx, id: str) -> None:
    outcome = await ctx.spaces.act(id, ctx.sender, rules.Cancel())
    for user in await ctx.db.reminder_users(id):
        try:
            await ctx.matrix.dm(user, f"The scheduled space “{outcome.space.title}” was cancelled.")
        except Exception:  # noqa: BLE001 - telling subscribers is best effort
            pass
    await ctx.reply(outcome.reply)


@registry.command("space reschedule", space_id(optional=False), text("when"), group=SCHED,
                  help="Move a scheduled space to another time.", examples=("space reschedule k3x9pq friday 20:00",))
async def reschedule(ctx: Ctx, id: str, when: str) -> None:
    parsed = await _parse_future(ctx, when)
    outcome = await ctx.spaces.act(id, ctx.sender, rules.Reschedule(parsed.instant))
    await ctx.reply(f"{outcome.reply} It now starts {parsed.describe()}.")


@registry.command("space upcoming", group=SCHED, help="Scheduled spaces, soonest first.")
async def upcoming(ctx: Ctx) -> None:
    svc = _svc(ctx)
    tz = await svc.user_tz(ctx.sender)
    def visible_rows(st) -> list:
        rows = sorted((r for r in st.spaces_in_state(State.SCHEDULED) if r.scheduled_for),
                      key=lambda r: as_utc(r.scheduled_for))
        return [r for r in rows if r.visibility == "everyone" or r.host_id == ctx.sender
                or st.follows(r.host_id, ctx.sender)]

    visible = await ctx.db.unit(visible_rows)
    if not visible:
        await ctx.reply(f"No scheduled spaces. Schedule one with {ctx.prefix}space schedule <when> | <title>.")
        return
    lines = [f"{r.id} · “{r.title}” by {r.host_id} · {describe_instant(as_utc(r.scheduled_for), tz)}"
             for r in visible]
    await ctx.reply("Upcoming:\n" + "\n".join(lines) + f"\nBe reminded with {ctx.prefix}space remind <id> (or 🔔).")


@registry.command("space remind", space_id(optional=False), group=SCHED,
                  help="Be reminded when a scheduled space starts (or react 🔔 on its card).")
async def remind(ctx: Ctx, id: str) -> None:
    await ctx.reply(await ctx.spaces.remind(id, ctx.sender, True))


@registry.command("space unremind", space_id(optional=False), group=SCHED, help="Stop a reminder.")
async def unremind(ctx: Ctx, id: str) -> None:
    await ctx.reply(await ctx.spaces.remind(id, ctx.sender, False))


@registry.command("timezone", word("zone", optional=True), group=SCHED,
                  help="Show or set your time zone (e.g. Europe/Berlin, UTC+2) for times you type and read.")
async def timezone(ctx: Ctx, zone: str | None) -> None:
    svc = _svc(ctx)
    if zone is None:
        await ctx.reply(f"Your time zone is {zone_name(await svc.user_tz(ctx.sender))}.")
        return
    try:
        tz = parse_timezone(zone)
    except WhenError as exc:
        raise UsageError(str(exc)) from None
    await ctx.db.update_user(ctx.sender, timezone=zone_name(tz))
    now = describe_instant(datetime.now(UTC), tz)
    await ctx.reply(f"Your time zone is now {zone_name(tz)} (it is {now}).")


@registry.command("notify", word("state", ("on", "off")), group=SCHED,
                  help="Get a direct message when someone you follow goes live.")
async def notify(ctx: Ctx, state: str) -> None:
    await ctx.db.update_user(ctx.sender, notify_golive=state == "on")
    await ctx.reply("I'll message you when people you follow go live." if state == "on"
                    else "I won't message you when people you follow go live.")
