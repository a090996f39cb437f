"""The bot's hands on Matrix: thin async wrappers over matrix-nio that raise on errors.

matrix-nio returns error responses instead of raising; every call here checks and raises
:class:`MatrixError` with the room and the server's message, so callers can log it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nio import Api, AsyncClient, ErrorResponse, MatrixRoom, ResizingMethod, SyncResponse, ThumbnailResponse

from . import messages
from .send_gate import MAX_TRIES, MAX_WAIT_SECONDS, SendGate

log = logging.getLogger(__name__)


#: Space rooms use room version 10: knocking works, and the bot (the creator) is an ordinary
#: user in the power levels (from version 12 on, creators must not be listed there).
SPACE_ROOM_VERSION = "10"


#: room versions in which a room's creator is an ordinary entry in the power levels
PRE_CREATOR_POWER_VERSIONS = frozenset(str(v) for v in range(1, 12))


class MatrixError(Exception):
    pass


def _check(resp: Any, what: str) -> Any:
    if isinstance(resp, ErrorResponse):
        code = getattr(resp, "status_code", None) or ""
        raise MatrixError(f"{what}: {code} {resp.message}".replace("  ", " "))
    return resp


class GatedClient(AsyncClient):
    """matrix-nio's client with every request but the long-poll /sync and media transfers
    passed through a :class:`SendGate`: a 429 closes the gate for the ``retry_after_ms`` the
    homeserver asked, and the requests waiting then go out one at a time, fairly
    (send_gate.py). /sync and media wait out their own 429s outside the gate.
    Build it with ``max_limit_exceeded=0`` in its config, so matrix-nio hands every 429
    back here instead of sleeping on it itself."""

    def __init__(self, *args: Any, gate: SendGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate or SendGate()

    async def _send(self, response_class: type, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        provider = kwargs.get("data_provider")

        async def attempt(tries_before: int) -> Any:
            if provider is not None:  # an upload: a retry must read the file from its start again
                async def again(got_429: int, got_timeouts: int) -> Any:
                    return await provider(got_429 + tries_before, got_timeouts)
                kwargs["data_provider"] = again
            return await super(GatedClient, self)._send(response_class, method, path, *args, **kwargs)

        if response_class is SyncResponse or "/media/" in path.split("?", 1)[0]:
            # the long poll, and uploads and downloads (limited apart, and as slow as their
            # files): never one at a time with the rest, but their 429s are waited out too
            return await _waiting_out_429s(attempt)
        return await self.gate.run(attempt, _retry_after)


async def _waiting_out_429s(attempt: Callable[[int], Awaitable[Any]]) -> Any:
    for tries in range(MAX_TRIES):
        resp = await attempt(tries)
        wait = _retry_after(resp)
        if wait is None:
            break
        await asyncio.sleep(min(wait, MAX_WAIT_SECONDS))
    return resp


def _retry_after(resp: Any) -> float | None:
    """Seconds the homeserver asked to wait, if ``resp`` is its 429; else None."""
    if not isinstance(resp, ErrorResponse):
        return None
    status = getattr(getattr(resp, "transport_response", None), "status", None)
    if resp.status_code in ("M_LIMIT_EXCEEDED", 429, "429") or status == 429:
        return (resp.retry_after_ms or 5000) / 1000
    return None


class MatrixIO:
    def __init__(self, client: AsyncClient, direct) -> None:
        self.client = client
        #: the direct rooms (bot/matrix/direct.py DirectRooms): ``await direct.room_for(user)``
        self.direct = direct
        #: the last touch to every notice's text, plain and HTML (the app shows its own
        #: command prefix in the hints: bot/core/words.py prefixer)
        self.wording: Callable[[str], str] = lambda text: text

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def send(self, room_id: str, content: dict, event_type: str = "m.room.message") -> str:
        if self.client.olm and room_id not in self.client.rooms:
            # a room the bot created or joined since its last sync: with encryption on,
            # matrix-nio refuses to send to rooms it has not synced yet.
            self.client.rooms[room_id] = MatrixRoom(room_id, self.client.user_id,
                                                    room_id in self.client.encrypted_rooms)
        resp = await self.client.room_send(room_id, event_type, content,
                                           ignore_unverified_devices=True)
        return _check(resp, f"send {event_type} to {room_id}").event_id

    async def reply(self, room_id: str, event_id: str, plain: str, html: str | None = None) -> str:
        plain, html = self._worded(plain, html)
        return await self.send(room_id, messages.notice(plain, html, reply_to=event_id))

    async def notice(self, room_id: str, plain: str, html: str | None = None) -> str:
        plain, html = self._worded(plain, html)
        return await self.send(room_id, messages.notice(plain, html))

    def _worded(self, plain: str, html: str | None) -> tuple[str, str | None]:
        return self.wording(plain), (self.wording(html) if html is not None else None)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        return await self.send(room_id, messages.reaction(event_id, key), "m.reaction")

    async def edit(self, room_id: str, event_id: str, new_content: dict) -> str:
        return await self.send(room_id, messages.edit(event_id, new_content))

    async def upload(self, path: Path, content_type: str) -> str:
        """Upload a file to the homeserver's media repository; returns its mxc:// URI."""
        size = path.stat().st_size
        with path.open("rb") as fh:
            resp, _keys = await self.client.upload(fh, content_type=content_type, filename=path.name,
                                                   filesize=size)
        return _check(resp, f"upload {path.name} ({size} bytes)").content_uri

    async def send_audio(self, room_id: str, path: Path, duration_s: float, body: str) -> str:
        """Upload an audio file and post it as an m.audio message."""
        mime = "audio/ogg" if path.suffix == ".ogg" else "audio/mpeg" if path.suffix == ".mp3" else "audio/wav"
        uri = await self.upload(path, mime)
        return await self.send(room_id, {
            "msgtype": "m.audio", "body": body, "url": uri,
            "info": {"mimetype": mime, "size": path.stat().st_size, "duration": int(duration_s * 1000)},
        })

    async def send_file(self, room_id: str, path: Path, body: str, mime: str, reply_to: str | None = None) -> str:
        uri = await self.upload(path, mime)
        content = {"msgtype": "m.file", "body": body, "filename": body, "url": uri,
                   "info": {"mimetype": mime, "size": path.stat().st_size}}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send(room_id, content)

    async def download(self, mxc: str, max_bytes: int) -> tuple[bytes, str]:
        """Fetch a file from the media repository (bytes, content type)."""
        resp = await self.client.download(mxc=mxc)
        resp = _check(resp, f"download {mxc}")
        if len(resp.body) > max_bytes:
            raise MatrixError(f"{mxc} is {len(resp.body)} bytes, more than {max_bytes}")
        return resp.body, resp.content_type

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> None:
        _check(await self.client.room_redact(room_id, event_id, reason), f"redact in {room_id}")

    async def dm(self, user_id: str, plain: str, html: str | None = None) -> str:
        room_id = await self.dm_room(user_id)
        return await self.notice(room_id, plain, html)

    async def dm_room(self, user_id: str) -> str:
        """The user's direct room with the bot: the one they have, or a new one."""
        return await self.direct.room_for(user_id)

    async def create_room(self, *, name: str, topic: str, join_rule: str, invite: list[str],
                          power_levels: dict, initial_state: list[dict]) -> str:
        state = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": join_rule}},
                 {"type": "m.room.history_visibility", "state_key": "",
                  "content": {"history_visibility": "shared"}}, *initial_state]
        resp = await self.client.room_create(
            name=name, topic=topic, invite=invite, initial_state=state,
            power_level_override=power_levels, room_version=SPACE_ROOM_VERSION,
        )
        return _check(resp, f"create room “{name}”").room_id

    async def create_public_room(self, *, name: str, topic: str, alias_localpart: str,
                                 invite: list[str]) -> str:
        """A room anyone on the homeserver may find (by its alias) and join; the bot is its admin."""
        resp = await self.client.room_create(name=name, topic=topic, alias=alias_localpart, invite=invite,
                                             preset=_preset("public_chat"))
        return _check(resp, f"create room “{name}” (#{alias_localpart})").room_id

    async def room_label(self, room_id: str) -> str:
        """How people know a room: its alias (#name:server), else its name in quotes, else
        (a room with neither, or one the bot cannot see) its id."""
        room = self.client.rooms.get(room_id)
        alias = room.canonical_alias if room is not None else None
        name = room.name if room is not None else None
        if not alias and not name:  # not synced, or only part of its state since a restart
            alias = (await self.get_state(room_id, "m.room.canonical_alias") or {}).get("alias")
            if not alias:
                name = (await self.get_state(room_id, "m.room.name") or {}).get("name")
        if isinstance(alias, str) and alias:
            return alias
        if isinstance(name, str) and name.strip():
            return f"“{name.strip()[:80]}”"
        return room_id

    async def room_of_alias(self, alias: str) -> str | None:
        """The room an alias points at; None when it points nowhere."""
        resp = await self.client.room_resolve_alias(alias)
        if isinstance(resp, ErrorResponse):
            if resp.status_code == "M_NOT_FOUND":
                return None
            raise MatrixError(f"look up {alias}: {resp.message}")
        return resp.room_id

    async def drop_alias(self, alias: str) -> None:
        _check(await self.client.room_delete_alias(alias), f"remove the alias {alias}")

    async def put_state(self, room_id: str, event_type: str, content: dict, state_key: str = "") -> None:
        resp = await self.client.room_put_state(room_id, event_type, content, state_key)
        _check(resp, f"set {event_type} in {room_id}")

    async def get_state(self, room_id: str, event_type: str, state_key: str = "") -> dict | None:
        resp = await self.client.room_get_state_event(room_id, event_type, state_key)
        if isinstance(resp, ErrorResponse):
            return None
        return resp.content

    async def invite(self, room_id: str, user_id: str) -> None:
        resp = await self.client.room_invite(room_id, user_id)
        if isinstance(resp, ErrorResponse) and "already in the room" in (resp.message or ""):
            return
        _check(resp, f"invite {user_id} to {room_id}")

    async def kick(self, room_id: str, user_id: str, reason: str) -> None:
        _check(await self.client.room_kick(room_id, user_id, reason), f"kick {user_id} from {room_id}")

    async def join(self, room_id: str) -> None:
        _check(await self.client.join(room_id), f"join {room_id}")

    async def display_name(self, user_id: str) -> str | None:
        """The user's display name; raises MatrixError if the user does not exist."""
        resp = await self.client.get_profile(user_id)
        if isinstance(resp, ErrorResponse):
            raise MatrixError(f"no such user {user_id} ({resp.message})")
        return resp.displayname

    async def profile(self, user_id: str) -> tuple[str | None, str | None]:
        """The user's display name and avatar (an mxc:// URI), either None when unset;
        MatrixError if the homeserver cannot say (no such user, a remote server down)."""
        resp = _check(await self.client.get_profile(user_id), f"profile of {user_id}")
        name, avatar = resp.displayname, resp.avatar_url
        return (name if isinstance(name, str) else None,
                avatar if isinstance(avatar, str) and avatar.startswith("mxc://") else None)

    async def thumbnail(self, mxc: str, size: int) -> bytes:
        """A square thumbnail (``size`` pixels, cropped) of an image in the media repository,
        through the authenticated media API (Synapse refuses new media to the old one),
        else the old API for a homeserver without it. MatrixError if neither gives one."""
        server, _, media_id = mxc.removeprefix("mxc://").partition("/")
        if not server or not media_id or "/" in media_id:
            raise MatrixError(f"not a media URI: {mxc[:100]}")
        query = {"width": size, "height": size, "method": "crop"}
        path = Api._build_path(["media", "thumbnail", server, media_id], query,  # noqa: SLF001
                               "/_matrix/client/v1")
        resp = await self.client._send(ThumbnailResponse, "GET", path)  # noqa: SLF001
        status = getattr(getattr(resp, "transport_response", None), "status", None)
        if isinstance(resp, ErrorResponse) and status in (400, 404, 405):  # no such API here
            resp = await self.client.thumbnail(server, media_id, size, size, ResizingMethod.crop)
        return _check(resp, f"thumbnail of {mxc}").body

    async def power_level(self, room_id: str, user_id: str) -> int | None:
        """The user's power level in a room the bot is in; None if the bot is not in it.

        From room version 12 on, the room's creators are not listed in the power levels and
        outrank everyone; they count as 100 here."""
        room = self.client.rooms.get(room_id)
        if room is None:
            return None
        if room.room_version not in PRE_CREATOR_POWER_VERSIONS and user_id not in room.power_levels.users:
            resp = await self.client.room_get_state(room_id)
            events = [] if isinstance(resp, ErrorResponse) else resp.events
            create = next((e for e in events if e.get("type") == "m.room.create"), {})
            creators = [create.get("sender"), *(create.get("content", {}).get("additional_creators") or [])]
            if user_id in creators:
                return 100
        return room.power_levels.get_user_level(user_id)

    async def resolve_room(self, text: str) -> str:
        """A room id from a room id or an alias; MatrixError if there is no such room."""
        if text.startswith("!"):
            return text
        resp = await self.client.room_resolve_alias(text)
        if isinstance(resp, ErrorResponse):
            raise MatrixError(f"no room {text} ({resp.message})")
        return resp.room_id

    def members(self, room_id: str) -> dict[str, str | None]:
        """user id -> display name of the joined members the client knows in a room."""
        room = self.client.rooms.get(room_id)
        if room is None:
            return {}
        return {uid: u.display_name for uid, u in room.users.items()}


def _preset(name: str):
    from nio.api import RoomPreset

    return RoomPreset(name)
