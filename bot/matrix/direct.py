"""Which room the bot writes to someone in private: their direct-message room with the bot.

Matrix keeps a user's direct rooms in the ``m.direct`` account data (user id -> room ids),
which each client maintains for its own account. The bot keeps its own the way Element
does: a room it is invited to with ``is_direct`` (someone opened a DM with it) and a room it
makes to write to someone are both listed there. Before making a room the bot looks there
(and at the room it remembers from earlier versions), so links and reminders land in the
DM the person already has, and a new room is made only when there is none.

A room is used only while it is private to the two of them: the bot is in it, the person
is in it or invited, and nobody else is. Personal listening links go there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from nio import AsyncClient, ErrorResponse
from nio.api import Api, RoomPreset
from nio.responses import EmptyResponse

from .client import MatrixError

log = logging.getLogger(__name__)

MDIRECT = "m.direct"
#: join rules under which nobody can come into a room uninvited (and read what was said)
CLOSED_RULES = frozenset({"invite", "knock", "restricted", "knock_restricted"})


def private_to(members: Iterable[str], bot: str, user: str, join_rule: str = "invite") -> bool:
    """Whether a room with these members (joined or invited) is the bot's and the user's
    alone, and stays so: nobody may join it without an invitation."""
    present = set(members)
    return join_rule in CLOSED_RULES and bot in present and user in present and present <= {bot, user}


def with_room(mdirect: dict, user: str, room_id: str) -> dict | None:
    """``m.direct`` with ``room_id`` listed (last) for ``user``; None when it is already there.
    The other users' entries are kept as they are, even ones that are not lists of room ids."""
    rooms = mdirect.get(user)
    listed = [r for r in rooms if isinstance(r, str)] if isinstance(rooms, list) else []
    if room_id in listed:
        return None
    return {**mdirect, user: [*listed, room_id]}


def without_room(mdirect: dict, user: str, room_id: str) -> dict | None:
    """``m.direct`` with ``room_id`` no longer listed for ``user``; None when it was not."""
    rooms = mdirect.get(user)
    if not isinstance(rooms, list) or room_id not in rooms:
        return None
    kept = [r for r in rooms if r != room_id]
    return {k: v for k, v in mdirect.items() if k != user} | ({user: kept} if kept else {})


class DirectRooms:
    """The bot's direct rooms: found in ``m.direct`` (loaded once, then kept up to date by the
    bot's own writes), made when missing. ``remembered(user)`` and ``remember(user, room)``
    are the store's memory of the rooms the bot made before it kept ``m.direct``."""

    def __init__(self, client: AsyncClient, remembered: Callable[[str], Awaitable[str | None]],
                 remember: Callable[[str, str], Awaitable[None]]) -> None:
        self.client = client
        self._remembered, self._remember = remembered, remember
        self._mdirect: dict | None = None
        #: one look-up-or-make at a time per person (two reminders at once make one room):
        #: their lock and how many calls hold or wait for it
        self._per_user: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        #: one read-modify-write of m.direct at a time
        self._writing = asyncio.Lock()

    async def _room_facts(self, room_id: str) -> tuple[list[str], str] | None:
        """Who is in a room or invited, and its join rule, as the homeserver says now (the
        bot's client may hold only part of a room's state after a restart); None when the
        bot is not in it. Raises MatrixError when the homeserver cannot say."""
        resp = await self.client.room_get_state(room_id)
        if isinstance(resp, ErrorResponse):
            if resp.status_code in ("M_FORBIDDEN", "M_NOT_FOUND"):
                return None
            raise MatrixError(f"read the members of {room_id}: {resp.status_code} {resp.message}")
        members, join_rule = [], "invite"
        for e in resp.events:
            content = e.get("content") or {}
            if e.get("type") == "m.room.member" and content.get("membership") in ("join", "invite"):
                members.append(e.get("state_key"))
            elif e.get("type") == "m.room.join_rules" and e.get("state_key") == "":
                join_rule = content.get("join_rule", "invite")
        return members, join_rule

    async def room_for(self, user: str) -> str:
        """The room to write to ``user`` in private; made (and listed in ``m.direct``) if none."""
        lock, users = self._per_user.setdefault(user, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._find_or_make(user)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._per_user[user]

    async def _find_or_make(self, user: str) -> str:
        bot = self.client.user_id
        listed = (await self._load()).get(user)
        candidates = [r for r in reversed(listed) if isinstance(r, str)] if isinstance(listed, list) else []
        remembered = await self._remembered(user)
        if remembered and remembered not in candidates:
            candidates.append(remembered)
        for room_id in candidates:
            facts = await self._room_facts(room_id)
            if facts is not None and private_to(facts[0], bot, user, facts[1]):
                if room_id == remembered:
                    await self.mark(user, room_id)
                return room_id
            if facts is not None and set(facts[0]) == {bot}:
                await self._let_go(user, room_id)  # they left it (or declined): so does the bot
        resp = await self.client.room_create(is_direct=True, invite=[user], preset=RoomPreset.trusted_private_chat)
        if isinstance(resp, ErrorResponse):
            raise MatrixError(f"create a direct room with {user}: {resp.status_code} {resp.message}")
        room_id = resp.room_id
        log.info("room %s: made to write to %s in private (no direct room of theirs was usable)", room_id, user)
        await self._remember(user, room_id)
        await self.mark(user, room_id)
        return room_id

    async def _let_go(self, user: str, room_id: str) -> None:
        """Leave a direct room the person has left, and take it out of ``m.direct``."""
        resp = await self.client.room_leave(room_id)
        if isinstance(resp, ErrorResponse):
            log.warning("room %s: could not leave the direct room %s left: %s", room_id, user, resp.message)
            return
        log.info("room %s: left the direct room with %s, who had left it", room_id, user)
        await self._update(user, room_id, without_room)

    async def mark(self, user: str, room_id: str) -> None:
        """List ``room_id`` as a direct room with ``user`` in the bot's ``m.direct``. A failure
        is logged: the room is still used, and listed at the next chance."""
        await self._update(user, room_id, with_room)

    async def _update(self, user: str, room_id: str, change) -> None:
        """Read ``m.direct`` afresh, ``change(it, user, room_id)`` and write it back (when the
        change changes something), one at a time."""
        async with self._writing:
            try:
                current = await self._fetch()
                updated = change(current, user, room_id)
                if updated is None:
                    self._mdirect = current
                    return
                method, path = "PUT", Api._build_path(["user", self.client.user_id, "account_data", MDIRECT])  # noqa: SLF001
                resp = await self.client._send(EmptyResponse, method, path, Api.to_json(updated))  # noqa: SLF001
                if isinstance(resp, ErrorResponse):
                    raise RuntimeError(f"{resp.status_code} {resp.message}")
                self._mdirect = updated
            except Exception as exc:  # noqa: BLE001 - a network error or the server's refusal
                log.warning("room %s: could not update the direct room with %s in m.direct: %s", room_id, user, exc)

    async def _load(self) -> dict:
        async with self._writing:  # never an older copy over what a write just stored
            if self._mdirect is None:
                try:
                    self._mdirect = await self._fetch()
                except Exception as exc:  # noqa: BLE001 - tried again at the next message
                    log.warning("could not read the bot's m.direct; looking only at the room it remembers: %s", exc)
                    return {}
            return self._mdirect

    async def _fetch(self) -> dict:
        """The bot's ``m.direct`` now ({} when it has none). Raises unless the homeserver
        answered it (a proxy's error page is no empty ``m.direct``: writing after it would
        lose every other entry)."""
        method, path = "GET", Api._build_path(["user", self.client.user_id, "account_data", MDIRECT])  # noqa: SLF001
        resp = await self.client._send(_AccountData, method, path)  # noqa: SLF001
        status = getattr(getattr(resp, "transport_response", None), "status", None)
        if isinstance(resp, ErrorResponse):
            if resp.status_code == "M_NOT_FOUND" and status == 404:
                return {}
            raise RuntimeError(f"{resp.status_code} {resp.message}")
        if status != 200:
            raise RuntimeError(f"HTTP {status} without an m.direct")
        return resp.content


class _AccountData(EmptyResponse):
    """An account data object as it came."""

    content: dict

    @classmethod
    def from_dict(cls, parsed_dict: dict):
        if "errcode" in parsed_dict:
            return ErrorResponse.from_dict(parsed_dict)
        resp = cls()
        resp.content = parsed_dict if isinstance(parsed_dict, dict) else {}
        return resp
