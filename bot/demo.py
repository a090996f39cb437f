"""What `make run` sets up on its own local homeserver so that a newcomer can try Chorus at
once: the demo moderators (``[local] demo_moderators``) may host, and a "Chorus demo" room
(``#chorus-demo:<server>``) has the bot and every demo user invited.

Nothing here runs against a real homeserver: the runner calls it only when it started the
local one. Every step can run again on the next start and changes nothing already done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.db.database import Database
from bot.db.store import Store
from bot.matrix.client import MatrixError, MatrixIO

log = logging.getLogger(__name__)

ROOM_NAME = "Chorus demo"
ALIAS_LOCALPART = "chorus-demo"
#: the first thing to type in the demo room
FIRST_COMMAND = "space start My first space"
#: sync_state key: hosting was granted once to this demo user (a moderator's later change stays)
GRANTED_KEY = "demo.host-granted.{}"


@dataclass(frozen=True)
class DemoRoom:
    room_id: str
    alias: str


def user_ids(localparts: tuple[str, ...], server_name: str) -> list[str]:
    return [f"@{name}:{server_name}" for name in localparts]


async def let_host(db: Database, bot_user: str, users: list[str]) -> list[str]:
    """Allow each of ``users`` to host, as ``!mod allow-host`` would (with an audit entry), the
    first time only; returns who was allowed now."""

    def grant(st: Store) -> list[str]:
        granted = []
        for user in users:
            key = GRANTED_KEY.format(user)
            if st.get_state(key) is None:
                st.update_user(user, host_override="allow")
                st.audit(bot_user, "demo.allow-host", None, user, "local demo moderator")
                st.set_state(key, "1")
                granted.append(user)
        return granted

    granted = await db.unit(grant)
    for user in granted:
        log.info("demo: %s may host (a demo moderator)", user)
    return granted


def _gone_for_good(exc: MatrixError) -> bool:
    """Whether the bot can never join the room again: everyone left it (the homeserver is no
    longer in it), or the bot is banned from it. Anything else may pass."""
    text = str(exc)
    return "M_FORBIDDEN" in text or "no servers that are in the room" in text


async def open_room(matrix: MatrixIO, server_name: str, invite: list[str], prefix: str,
                    alias_localpart: str = ALIAS_LOCALPART) -> DemoRoom:
    """The demo room, made on the first start; on later starts the bot joins it again if it
    left and invites the demo users who are not in it."""
    alias = f"#{alias_localpart}:{server_name}"
    room_id = await matrix.room_of_alias(alias)
    if room_id is not None:
        try:
            await matrix.join(alias)
        except MatrixError as exc:
            if not _gone_for_good(exc):
                raise  # the runner logs it; the room is tried again at the next start
            log.warning("demo: room %s (%s) cannot be joined again (%s); making a new one", alias, room_id, exc)
            await matrix.drop_alias(alias)
            room_id = None
    if room_id is None:
        room_id = await matrix.create_public_room(
            name=ROOM_NAME, topic=f"Try Chorus here: type {prefix}{FIRST_COMMAND}, or {prefix}help.",
            alias_localpart=alias_localpart, invite=invite)
        log.info("demo: room %s (%s) made, %s invited", alias, room_id, ", ".join(invite))
        return DemoRoom(room_id, alias)
    for user in invite:  # the bot's idea of who is in it may be old: the homeserver decides
        try:
            await matrix.invite(room_id, user)
        except MatrixError as exc:
            log.warning("demo: room %s (%s): could not invite %s: %s", alias, room_id, user, exc)
    return DemoRoom(room_id, alias)
