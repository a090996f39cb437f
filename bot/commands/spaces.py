"""Spaces: start, find, join, speak, manage, end."""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from bot import cards
from bot.core import calendar as ics
from bot.core import rules
from bot.core.model import Role, State, Visibility
from bot.core.words import plural
from bot.db.store import SpaceRecord, Store
from bot.matrix.messages import matrix_to, pill
from bot.page_listings import calendar_event

from .context import Ctx
from .registry import UsageError, option, registry, space_id, text, user, word

SPACES = "Spaces"
HOSTS = "Hosts and co-hosts"
VIS = option("visibility", ("everyone", "following", "invited"), "everyone",
             help="who may join: everyone, people the host follows, or invited people only")


def _may_see(st: Store, ctx: Ctx, rec: SpaceRecord) -> bool:
    """Whether the sender may see the space (in the database's thread: it may ask ``st``)."""
    s = rec.space
    if s.visibility is Visibility.EVERYONE or ctx.sender == s.host or ctx.sender in s.people:
        return True
    if ctx.spaces.is_moderator(ctx.sender) or ctx.sender in s.invited:
        return True
    return s.visibility is Visibility.FOLLOWING and st.follows(s.host, ctx.sender)


def _visible(st: Store, ctx: Ctx, sid: str) -> SpaceRecord | None:
    rec = st.load_space(sid)
    return rec if rec is not None and _may_see(st, ctx, rec) else None


async def _load(ctx: Ctx, sid: str) -> SpaceRecord:
    rec = await ctx.db.unit(lambda st: _visible(st, ctx, sid))
    if rec is None:
        raise UsageError(f"There is no space with id “{sid}” that you can see. Type {ctx.prefix}spaces to list them.")
    return rec


async def _act(ctx: Ctx, sid: str, command: rules.Command) -> rules.Outcome:
    outcome = await ctx.spaces.act(sid, ctx.sender, command)
    await ctx.reply(outcome.reply)
    return outcome


@registry.command("spaces", group=SPACES, help="List the live and upcoming spaces you can join.")
async def list_spaces(ctx: Ctx) -> None:
    seen = await ctx.db.unit(lambda st: [(row, _visible(st, ctx, row.id))
                                         for row in st.spaces_in_state(State.LIVE, State.SCHEDULED)])
    live, upcoming = [], []
    for row, rec in seen:
        if rec is None:
            continue
        if rec.space.state is State.LIVE:
            live.append(f"{row.id} · “{row.title}” by {row.host_id} · {len(rec.space.listeners)} listening, "
                        f"{len(rec.space.speakers)} speaking")
        else:
            when = row.scheduled_for.strftime("%a %d %b %H:%M UTC") if row.scheduled_for else "?"
            upcoming.append(f"{row.id} · “{row.title}” by {row.host_id} · starts {when}")
    if not live and not upcoming:
        await ctx.reply(f"No spaces right now. Start one with {ctx.prefix}space start <title>.")
        return
    plain = []
    if live:
        plain += ["Live now:", *("  " + x for x in live)]
    if upcoming:
        plain += ["Upcoming:", *("  " + x for x in upcoming)]
    plain.append(f"Join with {ctx.prefix}space join <id>.")
    rich = "<br>".join(html.escape(line) for line in plain)
    await ctx.reply("\n".join(plain), rich)


@registry.command("space start", text("title"), VIS, group=SPACES,
                  help="Start a live space now (hosting needs enough followers).",
                  examples=("space start Friday music chat", "space start Core team sync visibility=invited"))
async def start(ctx: Ctx, title: str, visibility: str) -> None:
    outcome = await ctx.spaces.start(ctx.sender, title, Visibility(visibility), ctx.room_id)
    room = await ctx.spaces.welcome(outcome.space.id, ctx.sender)
    link = f" Room: {matrix_to(room)}" if room else ""
    await ctx.reply(outcome.reply + link + " You have been invited to it; your personal link to speak "
                    "is in a direct message.",
                    html.escape(outcome.reply) + (f' <a href="{matrix_to(room)}">Open the space room</a>.'
                                                  if room else ""))


@registry.command("space info", space_id(), group=SPACES, help="Everything about a space.")
async def info(ctx: Ctx, id: str | None) -> None:
    rec = await _load(ctx, await ctx.resolve_space(id, mine=True))
    s, row = rec.space, rec.row
    speakers = [f"{u} ({r.value})" for u, r in s.people.items() if r is not Role.LISTENER]
    tips_plain, tips_rich = cards.tip_links(await ctx.db.tip_jar(s.host))
    lines = [f"“{s.title}” ({s.id}) · {s.state.value} · {s.visibility.value}", f"Host: {s.host}"]
    if s.state is State.LIVE:
        lines += [f"Speakers ({len(s.speakers)}/{(await ctx.spaces.limits()).max_speakers}): {', '.join(speakers)}",
                  f"Listeners: {len(s.listeners)} · raised hands: {len(s.requests)}",
                  f"Captions {'on' if s.captions else 'off'} · recording {'on' if s.recording else 'off'}"]
        if row.room_id:
            lines.append(f"Room: {matrix_to(row.room_id)}")
        lines.append(f"Listen: {ctx.spaces.page_url(s.id)}")
        if not ctx.spaces.bridge.available:
            lines.append("⚠ Audio: the audio bridge is unavailable or catching up right now; "
                         "the space comes back on it by itself as soon as it answers.")
    elif s.state is State.SCHEDULED and s.scheduled_for:
        lines.append(f"Starts {s.scheduled_for.strftime('%a %d %b %Y %H:%M UTC')}")
    if tips_plain:
        lines.append(f"Tip jar: {tips_plain}")
    rich = "<br>".join(html.escape(x) for x in lines if not x.startswith("Tip jar"))
    if tips_rich:
        rich += f"<br>Tip jar: {tips_rich}"
    await ctx.reply("\n".join(lines), rich)


@registry.command("space join", space_id(optional=False), group=SPACES,
                  help="Join a space as a listener.", examples=("space join k3x9pq",))
async def join(ctx: Ctx, id: str) -> None:
    rec = await _load(ctx, id)
    outcome = await ctx.spaces.act(rec.space.id, ctx.sender, rules.Join())
    room = await ctx.spaces.welcome(rec.space.id, ctx.sender)
    extra = f" You're invited to its room: {matrix_to(room)}." if room else ""
    await ctx.reply(outcome.reply + extra + " Your personal listening link is in a direct message.")


@registry.command("space leave", space_id(), group=SPACES, help="Leave a space.")
async def leave(ctx: Ctx, id: str | None) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.Leave())


@registry.command("space request", space_id(), group=SPACES,
                  help="Raise your hand: ask the host to let you speak.")
async def request(ctx: Ctx, id: str | None) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.RaiseHand())


@registry.command("space lower", space_id(), group=SPACES, help="Lower your raised hand.")
async def lower(ctx: Ctx, id: str | None) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.LowerHand())


@registry.command("space react", space_id(), text("emoji"), group=SPACES,
                  help="React with an emoji, shown to everyone in the space.", examples=("space react 👏",))
async def react(ctx: Ctx, id: str | None, emoji: str) -> None:
    outcome = await ctx.spaces.act(await ctx.resolve_space(id, mine=True), ctx.sender, rules.React(emoji.strip()))
    await ctx.matrix.react(ctx.room_id, ctx.event_id, outcome.effects[0].key)


@registry.command("space share", space_id(), user(), group=SPACES,
                  help="Send someone a direct message with the space's links.")
async def share(ctx: Ctx, id: str | None, user: str) -> None:
    rec = await _load(ctx, await ctx.resolve_space(id, mine=True))
    target = await ctx.resolve_user(user)
    s = rec.space
    if s.state not in (State.LIVE, State.SCHEDULED):
        raise UsageError(f"Space {s.id} has {s.state.value}; there is nothing to share.")
    room = rec.row.room_id
    lines = [f"{ctx.sender} shares the space “{s.title}” hosted by {s.host} with you."]
    rich = [f"{pill(ctx.sender)} shares the space “{html.escape(s.title)}” hosted by {pill(s.host)} with you."]
    if room:
        lines.append(f"Room: {matrix_to(room)}")
        rich.append(f'<a href="{matrix_to(room)}">Open the space room</a>')
    page = ctx.spaces.page_url(s.id)
    lines.append(f"Listen in the browser: {page}")
    rich.append(f'<a href="{html.escape(page)}">Listen in the browser</a>')
    lines.append(f"Or type {ctx.prefix}space join {s.id}")
    rich.append(f"Or type <code>{ctx.prefix}space join {s.id}</code>")
    await ctx.matrix.dm(target, "\n".join(lines), "<br>".join(rich))
    await ctx.reply(f"Sent {target} the links to “{s.title}”.")


# ------------------------------------------------------------------ hosts


@registry.command("space approve", space_id(), user(), group=HOSTS,
                  help="Let someone with a raised hand speak (or react ✅ on their request).")
async def approve(ctx: Ctx, id: str | None, user: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.Approve(await ctx.resolve_user(user)))


@registry.command("space deny", space_id(), user(), group=HOSTS,
                  help="Decline a request to speak (or react ❌ on it).")
async def deny(ctx: Ctx, id: str | None, user: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.Deny(await ctx.resolve_user(user)))


@registry.command("space revoke", space_id(), user(), group=HOSTS,
                  help="Make a speaker a listener again.")
async def revoke(ctx: Ctx, id: str | None, user: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.Revoke(await ctx.resolve_user(user)))


@registry.command("space invite", space_id(), user(),
                  option("as", ("listener", "speaker"), "listener", help="the role they get when they join"),
                  group=HOSTS, help="Invite someone to the space, as a listener or a speaker.",
                  examples=("space invite @bob:example.org as=speaker",))
async def invite(ctx: Ctx, id: str | None, user: str, **kw) -> None:
    role = Role(kw["as"])
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.Invite(await ctx.resolve_user(user), role))


@registry.command("space cohost", space_id(), user(), group=HOSTS,
                  help="Make someone in the space a co-host (host only).")
async def cohost(ctx: Ctx, id: str | None, user: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.AddCohost(await ctx.resolve_user(user)))


@registry.command("space uncohost", space_id(), user(), group=HOSTS,
                  help="Take away someone's co-host role; they stay a speaker (host only).")
async def uncohost(ctx: Ctx, id: str | None, user: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.RemoveCohost(await ctx.resolve_user(user)))


@registry.command("space captions", space_id(), word("state", ("on", "off")), group=HOSTS,
                  help="Turn live captions on or off.")
async def captions(ctx: Ctx, id: str | None, state: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.SetCaptions(state == "on"))


@registry.command("space record", space_id(), word("state", ("on", "off")), group=HOSTS,
                  help="Turn recording on or off (host only).")
async def record(ctx: Ctx, id: str | None, state: str) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.SetRecording(state == "on"))


@registry.command("space clip", space_id(), group=SPACES,
                  help="Post the last 30 seconds of the space in its room as audio.")
async def clip(ctx: Ctx, id: str | None) -> None:
    rec = await _load(ctx, await ctx.resolve_space(id, mine=True))
    if rec.space.state is not State.LIVE:
        raise UsageError(f"Space {rec.space.id} is not live; there is nothing to clip.")
    if ctx.sender not in rec.space.people:
        raise UsageError(f"Join space {rec.space.id} to clip it.")
    clipper = getattr(ctx.spaces.bridge, "clip", None)
    if clipper is None:
        raise UsageError("This bridge cannot make clips.")
    try:
        made = await clipper(rec.space.id)
    except Exception as exc:  # noqa: BLE001 - the bridge says why (e.g. nothing to clip yet)
        raise UsageError(f"No clip: {exc}") from None
    name = made.get("file") or PurePosixPath(str(made.get("path") or "")).name
    if await ctx.spaces.post_audio(rec.space.id, name, float(made.get("duration") or 0), "clip") is None:
        raise UsageError("The clip was made but could not be posted; the space's room says why.")
    await ctx.reply(f"Posted the last {plural(int(float(made.get('duration') or 0)), 'second')} in the space's room.")


@registry.command("space end", space_id(), group=HOSTS, help="End the space (host only).")
async def end(ctx: Ctx, id: str | None) -> None:
    await _act(ctx, await ctx.resolve_space(id, mine=True), rules.End())


@registry.command("space calendar", space_id(optional=False), group="Scheduling",
                  help="Get a calendar file (.ics) of a scheduled space, to add it to your calendar.",
                  examples=("space calendar k3x9pq",))
async def calendar(ctx: Ctx, id: str) -> None:
    rec = await _load(ctx, id)
    s = rec.space
    event = calendar_event(s, rec.row, page_url=ctx.spaces.page_url(s.id), prefix=ctx.prefix,
                           domain=ctx.services.server_name or "chorus")
    if event is None:
        raise UsageError(f"Space {s.id} has {s.state.value}; there is no time to add to a calendar.")
    with tempfile.TemporaryDirectory(prefix="chorus-ics-") as folder:
        path = Path(folder) / ics.file_name(s.id)
        path.write_text(ics.space_ics(event, datetime.now(UTC)), encoding="utf-8", newline="")
        await ctx.matrix.send_file(ctx.room_id, path, path.name, "text/calendar", reply_to=ctx.event_id)
