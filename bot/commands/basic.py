"""help and ping."""

from __future__ import annotations

from .context import Ctx
from .registry import help_text, registry, text


@registry.command("help", text("topic", optional=True), group="Basics",
                  help="List the commands, or explain one family (e.g. help space).",
                  examples=("help", "help space"))
async def help_(ctx: Ctx, topic: str | None) -> None:
    plain, rich = help_text(ctx.services.registry, ctx.prefix, topic,
                            is_moderator=ctx.spaces.is_moderator(ctx.sender))
    await ctx.reply(plain, rich)


@registry.command("ping", group="Basics", help="Check that the bot is alive.")
async def ping(ctx: Ctx) -> None:
    await ctx.reply("pong")
