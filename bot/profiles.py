"""Names and avatars for the space page: the bot reads them from Matrix and gives them to
the bridge (protocol 1.4), so that a page, which has no Matrix login, shows faces.

The page needs no Matrix access of its own: display names come from the homeserver's
profile API, avatars as small square thumbnails through its (authenticated) media API;
each image goes to the bridge once per bridge start (``PUT …/avatars/{sha256}``), and
the names with their avatars' hashes to each space they are in (``PUT …/people``).

Work is asked for with :meth:`PageProfiles.want` and done in the background, one task per
space at a time, so a command never waits for a slow remote homeserver. Profiles are kept
for :data:`FRESH_SECONDS`; a failure costs a person their face, never their place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.avatars import MAX_AVATAR_BYTES, image_type
from bridge.page_info import MAX_NAME, MAX_USER_ID

from .bridge_api import BridgeControl, BridgeError
from .matrix.client import MatrixError, MatrixIO

log = logging.getLogger(__name__)

#: a profile read this long ago is read again when next wanted
FRESH_SECONDS = 15 * 60
#: profiles kept in memory, and the avatar images' bytes (the bridge keeps twice that)
MAX_PROFILES = 5000
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: the thumbnails' size in pixels (the page shows them at up to 72 CSS px, so 2× density)
AVATAR_PIXELS = 144
#: one profile read (and its thumbnail) may take this long; a remote server may be down
FETCH_SECONDS = 10.0
#: profile reads at once
CONCURRENT_FETCHES = 4
#: people per PUT, and its body's size (the bridge takes 500 and 64 KiB)
PER_CALL = 100
PER_CALL_BYTES = 48 * 1024


@dataclass(frozen=True)
class Known:
    name: str | None
    avatar: str | None  # the SHA-256 of the thumbnail
    read_at: float

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "avatar": self.avatar}


class PageProfiles:
    def __init__(self, matrix: MatrixIO, bridge: BridgeControl) -> None:
        self.matrix = matrix
        self.bridge = bridge
        self._known: OrderedDict[str, Known] = OrderedDict()
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._image_bytes = 0
        #: avatars the bridge has since its last start (it keeps them in memory only)
        self._on_bridge: set[str] = set()
        #: the bridge answered 404 to these calls: it is older than 1.4 (until it restarts)
        self._unsupported = False
        self._wanted: dict[str, set[str]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fetching = asyncio.Semaphore(CONCURRENT_FETCHES)

    def want(self, space_id: str, users: Iterable[str]) -> None:
        """Give these people's names and avatars to the space's page, soon."""
        wanted = self._wanted.setdefault(space_id, set())
        wanted.update(users)
        if not wanted:
            return
        task = self._tasks.get(space_id)
        if task is None or task.done():
            self._tasks[space_id] = asyncio.create_task(self._work(space_id),
                                                        name=f"page-profiles:{space_id}")

    def bridge_restarted(self) -> None:
        """The bridge may have lost the avatars (or be a newer one): put each again when
        next needed."""
        self._on_bridge.clear()
        self._unsupported = False

    async def idle(self) -> None:
        """Wait until every push asked for has been made (tests)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _work(self, space_id: str) -> None:
        try:
            while users := self._wanted.pop(space_id, set()):
                try:
                    await self.push(space_id, sorted(users))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a task of its own: nothing else would log it
                    log.exception("space %s: names and avatars for its page failed", space_id)
        finally:
            if self._tasks.get(space_id) is asyncio.current_task():
                del self._tasks[space_id]

    async def entries(self, space_id: str, users: list[str]) -> dict[str, dict[str, Any]]:
        """``{user_id: {"name", "avatar"}}`` for these people, read if not fresh, with
        their avatars put to the bridge (an avatar it did not take is left out)."""
        users = [u for u in users if 0 < len(u) <= MAX_USER_ID]
        now = time.monotonic()
        stale = [u for u in users if (k := self._known.get(u)) is None or now - k.read_at > FRESH_SECONDS]
        await asyncio.gather(*(self._read(u) for u in stale))
        people = {}
        for user in users:
            known = self._known.get(user)
            if known is None:
                continue
            entry = known.entry()
            if known.avatar is not None and (self._unsupported
                                             or not await self._put_avatar(space_id, known.avatar)):
                entry["avatar"] = None
            people[user] = entry
        return people

    async def push(self, space_id: str, users: list[str]) -> None:
        """Read what is not fresh, put new avatars, then the people, to the bridge."""
        if self._unsupported:
            return
        people = await self.entries(space_id, users)
        if self._unsupported:  # the avatar's answer said so
            return
        for batch in batches(people):
            try:
                await self.bridge.set_people(space_id, batch)
            except BridgeError as exc:
                if self._too_old(exc):
                    return
                log.warning("space %s: the bridge did not take the names and avatars of %d "
                            "people: %s", space_id, len(batch), exc)

    def _too_old(self, exc: BridgeError) -> bool:
        """A 404 that is not about the space: a bridge older than 1.4 (said once)."""
        if exc.status != 404 or "no open stage" in exc.reason:
            return False
        if not self._unsupported:
            log.warning("the audio bridge does not take names and avatars (protocol 1.4); its "
                        "pages show user ids until it is upgraded")
        self._unsupported = True
        return True

    async def _read(self, user_id: str) -> None:
        async with self._fetching:
            name = avatar = None
            try:
                async with asyncio.timeout(FETCH_SECONDS):
                    name, mxc = await self.matrix.profile(user_id)
                    if mxc is not None:
                        avatar = self._keep_image(await self.matrix.thumbnail(mxc, AVATAR_PIXELS))
            except asyncio.CancelledError:
                raise
            except (MatrixError, TimeoutError) as exc:
                log.info("the profile of %s for the space page: %s (shown by their user id)",
                         user_id, exc or "timed out")
            except Exception as exc:  # noqa: BLE001 - a transport error: this person only
                log.warning("the profile of %s for the space page could not be read: %r", user_id, exc)
            if name is not None:
                name = name.strip()[:MAX_NAME] or None
            self._known[user_id] = Known(name, avatar, time.monotonic())
            self._known.move_to_end(user_id)
            while len(self._known) > MAX_PROFILES:
                self._known.popitem(last=False)

    def _keep_image(self, data: bytes) -> str | None:
        """The thumbnail's SHA-256 if the bridge would take it (an image, small enough)."""
        if len(data) > MAX_AVATAR_BYTES or image_type(data) is None:
            return None
        avatar_id = hashlib.sha256(data).hexdigest()
        if avatar_id not in self._images:
            self._image_bytes += len(data)
        self._images[avatar_id] = data
        self._images.move_to_end(avatar_id)
        while self._image_bytes > MAX_IMAGE_BYTES and len(self._images) > 1:
            old_id, old = self._images.popitem(last=False)
            self._image_bytes -= len(old)
            self._on_bridge.discard(old_id)  # the bridge may have let it go too: put it again
        return avatar_id

    async def _put_avatar(self, space_id: str, avatar_id: str) -> bool:
        """Whether the bridge has the image (put now if it had not)."""
        if avatar_id in self._on_bridge:
            return True
        data = self._images.get(avatar_id)
        if data is None:
            return False
        try:
            await self.bridge.put_avatar(avatar_id, data)
        except BridgeError as exc:
            if not self._too_old(exc):
                log.warning("space %s: the bridge did not take an avatar: %s", space_id, exc)
            return False
        self._on_bridge.add(avatar_id)
        return True


def batches(people: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """``people`` in calls of at most PER_CALL people and about PER_CALL_BYTES of JSON (a
    name of 256 characters outside ASCII is 1.5 KiB escaped)."""
    out: list[dict[str, dict[str, Any]]] = []
    batch: dict[str, dict[str, Any]] = {}
    size = 0
    for user, entry in people.items():
        cost = len(json.dumps({user: entry})) + 2
        if batch and (len(batch) >= PER_CALL or size + cost > PER_CALL_BYTES):
            out.append(batch)
            batch, size = {}, 0
        batch[user] = entry
        size += cost
    if batch:
        out.append(batch)
    return out
