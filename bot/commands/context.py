"""What a command handler gets: who asked, where, and the services to act with."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bot.core.bounds import MAX_ID_LENGTH, clip
from bot.db.database import Database
from bot.matrix.client import MatrixError, MatrixIO
from bot.matrix.messages import is_user_id, pills_in
from bot.spaces import SpaceService

from .registry import Registry, UsageError

log = logging.getLogger(__name__)


@dataclass
class Services:
    #: the store, off the event loop (bot/db/database.py)
    db: Database
    matrix: MatrixIO
    spaces: SpaceService
    registry: Registry
    prefix: str
    server_name: str
    #: the scheduler service (scheduled spaces, reminders, announcements); None until wired
    scheduler: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    services: Services
    sender: str
    room_id: str
    event_id: str
    content: dict

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def spaces(self) -> SpaceService:
        return self.services.spaces

    @property
    def matrix(self) -> MatrixIO:
        return self.services.matrix

    @property
    def prefix(self) -> str:
        return self.services.prefix

    async def reply(self, plain: str, html: str | None = None) -> str:
        return await self.matrix.reply(self.room_id, self.event_id, plain, html)

    async def resolve_user(self, raw: str) -> str:
        """A Matrix id from what was typed: an id, a pill, a display name or a localpart."""
        raw = raw.strip()
        if len(raw) > MAX_ID_LENGTH:
            raise UsageError(f"“{clip(raw)}” is too long to be a Matrix user: a user id has at most "
                             f"{MAX_ID_LENGTH} characters.")
        pills = dict((label, uid) for uid, label in pills_in(self.content.get("formatted_body")))
        if raw in pills:
            return pills[raw]
        candidate = raw
        if not candidate.startswith("@"):
            members = self.matrix.members(self.room_id)
            by_name = [uid for uid, name in members.items() if name and name.lower() == raw.lower()]
            if len(by_name) == 1:
                return by_name[0]
            if len(by_name) > 1:
                raise UsageError(f"More than one person here is called “{clip(raw)}”: {', '.join(by_name)}. "
                                 "Use their full Matrix id.")
        if ":" not in candidate:
            local = candidate.lstrip("@").lower()
            candidate = f"@{local}:{self.services.server_name}"
        candidate = candidate.rstrip(",.;")
        if not is_user_id(candidate) and ":" in candidate:
            local, _, server = candidate.partition(":")
            candidate = f"{local.lower()}:{server}"  # @Alice:example.org means @alice:example.org
        if not is_user_id(candidate):
            raise UsageError(f"“{clip(raw)}” is not a Matrix user. Write a user as @name:server, "
                             "or mention them with a pill.")
        try:
            await self.matrix.display_name(candidate)
        except MatrixError:
            raise UsageError(f"I can't find the user {candidate} on Matrix. Check the spelling.") from None
        return candidate

    async def resolve_space(self, raw: str | None, *, mine: bool = False) -> str:
        """The space the command is about: the id typed, or the space of this room, or the
        one live space the sender is in (``mine``) or hosts."""
        if raw:
            return raw
        here, hosting, in_spaces = await self.db.unit(lambda st: (
            st.space_by_room(self.room_id),
            st.live_space_of_host(self.sender) if mine else None,
            st.spaces_of_participant(self.sender) if mine else []))
        if here:
            return here
        if mine:
            if hosting:
                return hosting
            if len(in_spaces) == 1:
                return in_spaces[0]
            if len(in_spaces) > 1:
                raise UsageError(f"You are in several spaces ({', '.join(in_spaces)}); add the space id.")
        raise UsageError("Which space? Add its id (see !spaces), or type the command in the space's room.")
