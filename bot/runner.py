"""Putting Chorus together from settings: database, homeserver, bridge, bot. Used by
``python -m bot run`` (and so ``make run``) and by the integration tests."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot import demo
from bot.app import BotOptions, Chorus
from bot.bridge_api import BridgeControl
from bot.config import ConfigError, Settings
from bot.core.model import Limits
from bot.db.engine import make_engine, upgrade
from bot.db.store import Store
from bot.files import private_dir
from bot.scheduling import ScheduleSettings
from bot.spaces import SpaceSettings

log = logging.getLogger(__name__)


@dataclass
class LocalAccounts:
    homeserver: str
    bot_user_id: str
    bot_password: str
    demo: list[tuple[str, str]]


def space_settings(settings: Settings, local: bool = False) -> SpaceSettings:
    """The rules' settings; with ``local`` (the bot runs on its own local homeserver) the demo
    moderators of ``[local]`` are moderators too."""
    moderators = set(settings.moderation.moderators)
    if local:
        moderators.update(demo.user_ids(settings.local.moderators_of_demo, settings.local.server_name))
    return SpaceSettings(
        limits=Limits(settings.hosting.min_followers, settings.spaces.max_speakers,
                      settings.spaces.max_cohosts, settings.scheduling.max_days_ahead),
        moderators=frozenset(moderators),
        announcement_rooms=tuple(settings.announcements.rooms),
        prefix=settings.bot.command_prefix,
        captions_by_default=settings.spaces.captions_by_default,
        record_by_default=settings.spaces.record_by_default,
        notify_batch_size=settings.scheduling.notify_batch_size,
        notify_interval_seconds=settings.scheduling.notify_interval_seconds,
    )


def bot_options(settings: Settings, homeserver: str | None = None, user_id: str | None = None,
                password: str | None = None) -> BotOptions:
    m = settings.matrix
    return BotOptions(
        homeserver=homeserver or m.homeserver, user_id=user_id or m.user_id,
        password=password if password is not None else m.password, access_token=m.access_token,
        device_id=m.device_id, device_name=m.device_name, store_path=m.store_path,
        prefix=settings.bot.command_prefix, sync_timeout_ms=m.sync_timeout_ms,
        allowed_homeservers=tuple(m.allowed_homeservers), encryption=_encryption_available(),
        misfire_grace_minutes=settings.scheduling.misfire_grace_minutes,
        captions_to_room=settings.captions.post_to_room,
        command_burst=settings.bot.command_burst, commands_per_minute=settings.bot.commands_per_minute,
    )


def schedule_settings(settings: Settings) -> ScheduleSettings:
    s = settings.scheduling
    return ScheduleSettings(early_reminder_minutes=s.early_reminder_minutes, max_days_ahead=s.max_days_ahead,
                            default_timezone=s.default_timezone)


def _encryption_available() -> bool:
    try:
        from nio.crypto import ENCRYPTION_ENABLED
    except ImportError:  # pragma: no cover
        return False
    return bool(ENCRYPTION_ENABLED)


def start_local_homeserver(settings: Settings):
    """Start (or restart) the local Synapse and register the bot and the demo accounts."""
    from bot.local_homeserver import LocalHomeserver

    loc = settings.local
    data_dir = private_dir(loc.data_dir)  # Synapse's keys and the bot's password live here
    hs = LocalHomeserver(data_dir, port=loc.port, server_name=loc.server_name)
    hs.start()
    cred_file = data_dir / "chorus-bot.json"
    if cred_file.exists():
        creds = json.loads(cred_file.read_text())
    else:
        creds = {"password": secrets.token_urlsafe(18)}
        cred_file.write_text(json.dumps(creds))
        cred_file.chmod(0o600)
    bot_local = settings.matrix.user_id[1:].split(":", 1)[0]
    bot_user = hs.register(bot_local, creds["password"], admin=True, displayname=settings.bot.display_name)
    demo = []
    for name in settings.local.demo_users:
        u = hs.register(name, settings.local.demo_password, displayname=name.capitalize())
        demo.append((u.user_id, settings.local.demo_password))
    return hs, LocalAccounts(hs.base_url, bot_user.user_id, creds["password"], demo)


def own_homeserver(settings: Settings, local_url: str | None = None) -> dict[str, str]:
    """The bot's own server name -> the homeserver URL the bot uses (the local Synapse's
    when it runs one): widget sign-ins of its users are checked there, so they work
    without federation. Empty when neither is known, or when the URL is not one the
    bridge takes (a user or query in it): then discovery finds it, as for others."""
    from bridge.settings import homeserver_url

    if local_url:
        return {settings.local.server_name: local_url}
    if not settings.matrix.homeserver:
        return {}
    try:
        return {settings.matrix.server_name: homeserver_url(settings.matrix.homeserver)}
    except ValueError as exc:
        log.warning("widget sign-ins of %s go through federation discovery: matrix.homeserver is "
                    "not a URL the bridge takes (%s)", settings.matrix.server_name, exc)
        return {}


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _told_to_remote(control_url: str, homeservers: dict[str, str]) -> dict[str, str]:
    """What the bot tells a separate bridge: a loopback URL means this machine, so it
    is left out unless the bridge is on this machine too (its control URL is loopback)."""
    if _is_loopback(control_url):
        return homeservers
    kept = {name: url for name, url in homeservers.items() if not _is_loopback(url)}
    for name in sorted(set(homeservers) - set(kept)):
        log.warning("not telling the bridge at %s to check %s's widget sign-ins at %s: that is this "
                    "machine's loopback, not the bridge's; list a URL the bridge can reach in its "
                    "[bridge.openid_homeservers]", control_url, name, homeservers[name])
    return kept


async def make_bridge(settings: Settings, stack: AsyncExitStack,
                      own_homeservers: dict[str, str] | None = None) -> BridgeControl:
    """The bridge client: an embedded bridge in this process, or a remote one.

    ``own_homeservers`` (:func:`own_homeserver`, the default) joins ``[bridge.openid_homeservers]``
    (whose entries win): in the embedded bridge's settings, or told to a remote one (whose
    own ``[bridge.openid_homeservers]`` wins over what it is told)."""
    from bot.bridge_http import HttpBridge

    b = settings.bridge
    own = own_homeserver(settings) if own_homeservers is None else own_homeservers
    known = {**own, **b.openid_homeservers}
    secret = b.shared_secret or secrets.token_urlsafe(32)
    if b.mode == "remote":
        return HttpBridge(b.control_url, b.public_url or b.control_url, secret, b.token_ttl_seconds,
                          homeservers=_told_to_remote(b.control_url, known))
    from bridge.app import start_embedded
    from bridge.settings import KEYS as BRIDGE_KEYS
    from bridge.settings import BridgeSettings

    private_dir(b.recordings_dir)  # what people said: the bot's alone (the bridge writes inside)
    sections = {"bridge": b, "captions": settings.captions, "spaces": settings.spaces}
    values = {k.field: getattr(sections[k.section], k.name) for k in BRIDGE_KEYS if k.field}
    values.update(public_url=settings.bridge_public_url, shared_secret=secret,
                  openid_homeservers=tuple(known.items()))
    bs = BridgeSettings(**values)
    runner, port = await start_embedded(bs)
    stack.push_async_callback(runner.cleanup)
    control = f"http://{b.listen_host}:{port}"
    public = b.public_url or b.resolved_public_url(port)
    log.info("bridge embedded at %s (public %s)", control, public)
    return HttpBridge(control, public, secret, b.token_ttl_seconds)


async def serve(settings: Settings, *, print_=print, bridge: BridgeControl | None = None) -> None:
    """Run Chorus until SIGINT/SIGTERM."""
    engine = make_engine(settings.database.url)
    upgrade(engine)
    store = Store(engine)
    async with AsyncExitStack() as stack:
        hs_url, user_id, password = None, None, None
        if not settings.matrix.homeserver:
            print_("Starting a local Synapse homeserver (first start takes a few seconds)…")
            hs, accounts = await asyncio.to_thread(start_local_homeserver, settings)
            stack.callback(hs.stop)
            hs_url, user_id, password = accounts.homeserver, accounts.bot_user_id, accounts.bot_password
        else:
            settings.check_for_remote_homeserver()
        if bridge is None:
            bridge = await make_bridge(settings, stack, own_homeserver(settings, hs_url))
        from bot import redact

        redact.install([settings.bridge.shared_secret, getattr(bridge, "_secret", ""), settings.matrix.password,
                        settings.matrix.access_token, password or ""])
        options = bot_options(settings, hs_url, user_id, password)
        if options.encryption:
            private_dir(options.store_path)  # the nio store: the bot's encryption keys
        bot = Chorus(options, store, bridge, space_settings(settings, local=bool(hs_url)),
                     schedule_settings(settings))
        stack.push_async_callback(bot.close)
        if settings.bot.metrics_listen:
            await serve_status(bot, settings.bot.metrics_listen, stack)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bot.stop)
        task = asyncio.create_task(bot.run())
        ready = asyncio.create_task(bot.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        room = await _set_up_demo(settings, bot) if hs_url else None
        _print_banner(print_, settings, bot, bridge, local=bool(hs_url), room=room)
        await task
        print_("Chorus stopped.")


async def serve_status(bot: Chorus, listen: str, stack: AsyncExitStack) -> int:
    """The bot's GET /metrics and /healthz on ``listen`` (bridge/status_server.py), stopped
    with ``stack``; returns the port bound."""
    from bridge.status_server import start_status_server

    runner, port = await start_status_server(listen, bot.metrics.registry, bot.health, name="bot",
                                             before_scrape=bot.check_database)
    stack.push_async_callback(runner.cleanup)
    return port


async def _set_up_demo(settings: Settings, bot: Chorus) -> demo.DemoRoom | None:
    """The local homeserver's demo (bot/demo.py): the demo moderators may host, and the demo
    room is open with the demo users invited. A failure is logged: Chorus runs on without it."""
    loc = settings.local
    try:
        await demo.let_host(bot.db, bot.options.user_id, demo.user_ids(loc.moderators_of_demo, loc.server_name))
        return await demo.open_room(bot.matrix, loc.server_name, demo.user_ids(loc.demo_users, loc.server_name),
                                    settings.bot.command_prefix)
    except Exception as exc:  # noqa: BLE001 - the demo is a convenience; the bot is what matters
        log.error("demo: could not set up the demo room on the local homeserver: %s", exc)
        return None


def _print_banner(print_, settings: Settings, bot: Chorus, bridge: BridgeControl, *, local: bool,
                  room: demo.DemoRoom | None) -> None:
    p = settings.bot.command_prefix
    lines = ["", "Chorus is running.",
             f"  Homeserver:   {bot.options.homeserver}",
             f"  Bot account:  {bot.options.user_id}",
             f"  Bridge (web): {bridge.public_url}/"]
    loc = settings.local
    if local:
        users = demo.user_ids(loc.demo_users, loc.server_name)
        mods = demo.user_ids(loc.moderators_of_demo, loc.server_name)  # none only when there are no demo users
        lines.append("  Demo logins (any Matrix client, e.g. Element, with the homeserver above):")
        for user in users:
            role = "  (moderator, may host)" if user in mods else ""
            lines.append(f"    {user}  password: {loc.demo_password}{role}")
        if mods and room is not None:
            lines += ["  Try it now:",
                      f"    1. Log in as {mods[0]}.",
                      f"    2. Accept the invitation to the room “{demo.ROOM_NAME}” ({room.alias}).",
                      f"    3. Type there:  {p}{demo.FIRST_COMMAND}",
                      f"    Others join with the link the bot posts, or {p}space join <id>; {p}help lists everything."]
    lines += [f"  Talk to the bot anywhere: invite {bot.options.user_id} to a room (or DM it) and type {p}help.",
              "  Ctrl-C stops everything.", ""]
    print_("\n".join(lines))


__all__ = ["ConfigError", "serve", "start_local_homeserver", "make_bridge", "own_homeserver"]
