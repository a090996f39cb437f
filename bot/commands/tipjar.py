"""Tip jars: hosts publish where listeners can tip them."""

from __future__ import annotations

from bot import cards
from bot.core.tipjar import PROVIDERS, TipJarError, normalise_handle

from .context import Ctx
from .registry import UsageError, registry, user, word

TIPS = "Tip jar"


@registry.command("tipjar set", word("provider", PROVIDERS), word("handle"), group=TIPS,
                  help="Publish a tip jar handle; it shows on your spaces' cards.",
                  examples=("tipjar set cashapp $JaneDoe", "tipjar set bandcamp janedoe"))
async def tip_set(ctx: Ctx, provider: str, handle: str) -> None:
    try:
        clean = normalise_handle(provider, handle)
    except TipJarError as exc:
        raise UsageError(str(exc)) from None
    await ctx.db.set_tip(ctx.sender, provider, clean)
    await ctx.spaces.tip_jar_changed(ctx.sender)
    plain, rich = cards.tip_links({provider: clean})
    await ctx.reply(f"Your tip jar now shows {plain}.", f"Your tip jar now shows {rich}.")


@registry.command("tipjar remove", word("provider", PROVIDERS), group=TIPS, help="Remove a tip jar handle.")
async def tip_remove(ctx: Ctx, provider: str) -> None:
    if not await ctx.db.remove_tip(ctx.sender, provider):
        raise UsageError(f"Your tip jar has no {provider} handle.")
    await ctx.spaces.tip_jar_changed(ctx.sender)
    await ctx.reply(f"Removed {provider} from your tip jar.")


@registry.command("tipjar", user(optional=True), group=TIPS, help="Show your (or someone's) tip jar.")
async def tip_show(ctx: Ctx, user: str | None) -> None:
    target = await ctx.resolve_user(user) if user else ctx.sender
    plain, rich = cards.tip_links(await ctx.db.tip_jar(target))
    who = "Your" if target == ctx.sender else f"{target}'s"
    if not plain:
        hint = f" Add one with {ctx.prefix}tipjar set <provider> <handle>." if target == ctx.sender else ""
        await ctx.reply(f"{who} tip jar is empty.{hint}")
        return
    await ctx.reply(f"{who} tip jar: {plain}", f"{who} tip jar: {rich}")
