"""Moderators: who may host, the threshold, ending spaces, removing and banning people."""

from __future__ import annotations

import html
import logging

from bot.core import rules
from bot.core.followers_csv import ImportError_, parse_counts
from bot.core.words import plural
from bot.db.store import Store
from bot.spaces import THRESHOLD_KEY

from .context import Ctx
from .registry import UsageError, integer, registry, space_id, text, user

log = logging.getLogger(__name__)
MOD = "Moderators"


def _need_mod(ctx: Ctx) -> None:
    if not ctx.spaces.is_moderator(ctx.sender):
        raise UsageError("Only moderators can use !mod commands. The moderators are named in the bot's config.")


def _cmd(name: str, *params, help: str, examples: tuple[str, ...] = ()):
    return registry.command(name, *params, group=MOD, help=help, moderator_only=True, examples=examples)


async def _set_host_override(ctx: Ctx, user: str, value: str | None, action: str, done: str) -> None:
    _need_mod(ctx)
    target = await ctx.resolve_user(user)
    await ctx.db.unit(lambda st: (st.update_user(target, host_override=value),
                                  st.audit(ctx.sender, action, None, target)))
    await ctx.reply(done.format(target))


@_cmd("mod allow-host", user(), help="Let someone host whatever their follower count.")
async def allow_host(ctx: Ctx, user: str) -> None:
    await _set_host_override(ctx, user, "allow", "mod.allow-host",
                             "{} may host spaces now, whatever their follower count.")


@_cmd("mod deny-host", user(), help="Stop someone from hosting whatever their follower count.")
async def deny_host(ctx: Ctx, user: str) -> None:
    await _set_host_override(ctx, user, "deny", "mod.deny-host", "{} may no longer host spaces.")


@_cmd("mod default-host", user(), help="Let the follower threshold decide for someone again.")
async def default_host(ctx: Ctx, user: str) -> None:
    await _set_host_override(ctx, user, None, "mod.default-host",
                             "The follower threshold decides again whether {} may host.")


@_cmd("mod threshold", integer("followers", high=10_000_000), help="Set how many followers hosting needs.",
      examples=("mod threshold 100",))
async def threshold(ctx: Ctx, followers: int) -> None:
    _need_mod(ctx)
    if not 0 <= followers <= 10_000_000:
        raise UsageError("The threshold must be between 0 and 10000000 followers.")
    old = (await ctx.spaces.limits()).min_followers
    await ctx.db.unit(lambda st: (st.set_state(THRESHOLD_KEY, str(followers)),
                                  st.audit(ctx.sender, "mod.threshold", None, None, f"{old} -> {followers}")))
    await ctx.reply(f"Hosting now needs {plural(followers, 'follower')} (was {old}).")


@_cmd("mod end", space_id(optional=False), help="End any live space.")
async def mod_end(ctx: Ctx, id: str) -> None:
    _need_mod(ctx)
    outcome = await ctx.spaces.act(id, ctx.sender, rules.End())
    await ctx.reply(outcome.reply)


@_cmd("mod remove", space_id(optional=False), user(),
      help="Remove someone from a space: their audio is cut at once and they cannot rejoin.")
async def mod_remove(ctx: Ctx, id: str, user: str) -> None:
    _need_mod(ctx)
    target = await ctx.resolve_user(user)
    outcome = await ctx.spaces.act(id, ctx.sender, rules.Remove(target))
    await ctx.reply(outcome.reply)


@_cmd("mod ban", user(), help="Ban someone from hosting and joining any space; removes them from live ones "
     "and cuts their audio at once.")
async def ban(ctx: Ctx, user: str) -> None:
    _need_mod(ctx)
    target = await ctx.resolve_user(user)
    if ctx.spaces.is_moderator(target):
        raise UsageError(f"{target} is a moderator; remove them from the config first.")
    hosted = await ctx.db.unit(lambda st: _set_banned(st, ctx.sender, target, True))
    done = []
    if hosted:
        await ctx.spaces.act(hosted, ctx.sender, rules.End())
        done.append(f"ended their space {hosted}")
    for sid in await ctx.db.spaces_of_participant(target):
        try:
            await ctx.spaces.act(sid, ctx.sender, rules.Remove(target, "banned by a moderator"))
            done.append(f"removed them from {sid}")
        except rules.Refused as exc:
            log.warning("space %s: could not remove banned user %s: %s", sid, target, exc)
    # every live space, not only those they joined: the audio bridge closes whatever
    # connection they hold (a page signed in through the widget, say) and refuses them
    failed = await ctx.spaces.push_access()
    tail = f" ({'; '.join(done)})" if done else ""
    note = (f" ⚠ The audio side did not take it yet for {', '.join(failed)}; Chorus pushes it "
            "again by itself." if failed else "")
    await ctx.reply(f"{target} is banned from Chorus spaces{tail}.{note}")


def _set_banned(st: Store, moderator: str, target: str, banned: bool) -> str | None:
    """Ban or unban, with its audit entry, in one transaction; on a ban, the live space the
    target hosts (None if none). UsageError if it was so already."""
    if st.user(target).banned == banned:
        raise UsageError(f"{target} is already banned." if banned else f"{target} is not banned.")
    st.update_user(target, banned=banned)
    st.audit(moderator, "mod.ban" if banned else "mod.unban", None, target)
    return st.live_space_of_host(target) if banned else None


@_cmd("mod unban", user(), help="Lift a ban.")
async def unban(ctx: Ctx, user: str) -> None:
    _need_mod(ctx)
    target = await ctx.resolve_user(user)
    await ctx.db.unit(lambda st: _set_banned(st, ctx.sender, target, False))
    await ctx.spaces.push_access()  # the bridge lets them in again (where not removed)
    await ctx.reply(f"{target} is no longer banned.")


@_cmd("mod audit", integer("n", optional=True, low=1, high=200), help="The latest moderation and space actions.")
async def audit(ctx: Ctx, n: int | None) -> None:
    _need_mod(ctx)
    n = 20 if n is None else n
    if not 1 <= n <= 200:
        raise UsageError("Ask for between 1 and 200 entries.")
    rows = await ctx.db.audit_log(n)
    if not rows:
        await ctx.reply("The audit log is empty.")
        return
    lines = [f"{r.at:%Y-%m-%d %H:%M} {r.actor_id} {r.action}"
             + (f" space={r.space_id}" if r.space_id else "") + (f" target={r.target_id}" if r.target_id else "")
             + (f" ({r.detail})" if r.detail else "") for r in rows]
    await ctx.reply("\n".join(lines), "<pre>" + html.escape("\n".join(lines)) + "</pre>")


@_cmd("mod import-followers", text("csv", optional=True),
      help="Load follower counts from another network: one “@user:server, count” per line after the command.",
      examples=("mod import-followers @alice:example.org,1200 @bob:example.org,35",))
async def import_followers(ctx: Ctx, csv: str | None) -> None:
    _need_mod(ctx)
    body = ctx.content.get("body", "")
    _, _, rest = body.partition("\n")
    source = rest if rest.strip() else (csv or "")
    try:
        counts = parse_counts(source.replace(" @", "\n@") if "\n" not in source else source)
    except ImportError_ as exc:
        raise UsageError(str(exc)) from None
    await ctx.db.unit(lambda st: (st.import_follower_counts(counts),
                                  st.audit(ctx.sender, "mod.import-followers", None, None, f"{len(counts)} users")))
    await ctx.reply(f"Imported follower counts for {plural(len(counts), 'user')}; hosting uses the "
                    "larger of the imported count and their followers here.")


