"""The follow graph: following people is how hosts earn the right to host."""

from __future__ import annotations

from bot.core.words import plural
from bot.matrix.messages import pill

from .context import Ctx
from .registry import UsageError, registry, user

SOCIAL = "Following"


@registry.command("follow", user(), group=SOCIAL, help="Follow someone.", examples=("follow @alice:example.org",))
async def follow(ctx: Ctx, user: str) -> None:
    target = await ctx.resolve_user(user)
    if target == ctx.sender:
        raise UsageError("You can't follow yourself.")
    if not await ctx.db.follow(ctx.sender, target):
        await ctx.reply(f"You already follow {target}.")
        return
    n = await ctx.db.follower_count(target)
    await ctx.reply(f"You now follow {target} ({plural(n, 'follower')}).",
                    f"You now follow {pill(target)} ({plural(n, 'follower')}).")


@registry.command("unfollow", user(), group=SOCIAL, help="Stop following someone.")
async def unfollow(ctx: Ctx, user: str) -> None:
    target = await ctx.resolve_user(user)
    if not await ctx.db.unfollow(ctx.sender, target):
        raise UsageError(f"You don't follow {target}.")
    await ctx.reply(f"You no longer follow {target}.")


@registry.command("followers", user(optional=True), group=SOCIAL,
                  help="How many followers you (or someone) have, and the latest few.")
async def followers(ctx: Ctx, user: str | None) -> None:
    target = await ctx.resolve_user(user) if user else ctx.sender
    graph, imported, latest = await ctx.db.unit(lambda st: (
        st.follower_count(target), st.user(target).imported_followers, st.followers(target, 10)))
    who = "You have" if target == ctx.sender else f"{target} has"
    extra = f" (imported count: {imported})" if imported else ""
    threshold = (await ctx.spaces.limits()).min_followers
    listing = f" Latest: {', '.join(latest)}." if latest else ""
    await ctx.reply(f"{who} {plural(graph, 'follower')}{extra}; hosting needs {threshold}.{listing}")


@registry.command("following", user(optional=True), group=SOCIAL,
                  help="How many people you (or someone) follow, and the latest few.")
async def following(ctx: Ctx, user: str | None) -> None:
    target = await ctx.resolve_user(user) if user else ctx.sender
    n, latest = await ctx.db.unit(lambda st: (st.following_count(target), st.following(target, 10)))
    who = "You follow" if target == ctx.sender else f"{target} follows"
    listing = f": {', '.join(latest)}" if latest else ""
    await ctx.reply(f"{who} {plural(n, 'person')}{listing}.")
