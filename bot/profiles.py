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
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.avatars import MAX_AVATAR_BYTES, image_type

from .bridge_api import BridgeControl, BridgeError
from .matrix.client import MatrixError, MatrixIO

log = logging.getLogger(__name__)

#: a profile read this long ago is read again when next wanted
FRESH_SECONDS = 15 * 60
#: profiles and avatar images kept in memory
MAX_PROFILES = 5000
MAX_IMAGES = 1000
#: the thumbnails' size in pixels (the page shows them at up to 72 CSS px, so 2× density)
AVATAR_PIXELS = 144
#: one profile read (and its thumbnail) may take this long; a remote server may be down
FETCH_SECONDS = 10.0
#: profile reads at once
CONCURRENT_FETCHES = 4
#: people per PUT (the bridge takes 500)
PER_CALL = 500


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
        #: avatars the bridge has since its last start (it keeps them in memory only)
        self._on_bridge: set[str] = set()
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
        """The bridge may have lost the avatars: put each again when next needed."""
        self._on_bridge.clear()

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
        while users := self._wanted.pop(space_id, set()):
            try:
                await self.push(space_id, sorted(users))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a task of its own: nothing else would log it
                log.exception("space %s: names and avatars for its page failed", space_id)

    async def push(self, space_id: str, users: list[str]) -> None:
        """Read what is not fresh, put new avatars, then the people, to the bridge."""
        now = time.monotonic()
        stale = [u for u in users if (k := self._known.get(u)) is None or now - k.read_at > FRESH_SECONDS]
        await asyncio.gather(*(self._read(u) for u in stale))
        people = {}
        for user in users:
            known = self._known.get(user)
            if known is None:
                continue
            entry = known.entry()
            if known.avatar is not None and not await self._put_avatar(space_id, known.avatar):
                entry["avatar"] = None
            people[user] = entry
        items = list(people.items())
        for start in range(0, len(items), PER_CALL):
            try:
                await self.bridge.set_people(space_id, dict(items[start:start + PER_CALL]))
            except BridgeError as exc:
                log.warning("space %s: the bridge did not take the names and avatars of %d "
                            "people: %s", space_id, len(items), exc)
                return

    async def _read(self, user_id: str) -> None:
        async with self._fetching:
            name = avatar = None
            try:
                async with asyncio.timeout(FETCH_SECONDS):
                    name, mxc = await self.matrix.profile(user_id)
                    if mxc is not None:
                        avatar = self._keep_image(await self.matrix.thumbnail(mxc, AVATAR_PIXELS))
            except (MatrixError, TimeoutError) as exc:
                log.info("the profile of %s for the space page: %s (shown by their user id)",
                         user_id, exc or "timed out")
            self._known[user_id] = Known(name, avatar, time.monotonic())
            self._known.move_to_end(user_id)
            while len(self._known) > MAX_PROFILES:
                self._known.popitem(last=False)

    def _keep_image(self, data: bytes) -> str | None:
        """The thumbnail's SHA-256 if the bridge would take it (an image, small enough)."""
        if len(data) > MAX_AVATAR_BYTES or image_type(data) is None:
            return None
        avatar_id = hashlib.sha256(data).hexdigest()
        self._images[avatar_id] = data
        self._images.move_to_end(avatar_id)
        while len(self._images) > MAX_IMAGES:
            self._images.popitem(last=False)
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
            log.warning("space %s: the bridge did not take an avatar: %s", space_id, exc)
            return False
        self._on_bridge.add(avatar_id)
        return True
