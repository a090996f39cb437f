"""What the space page shows besides audio, as the bot tells it (protocol 1.4), checked.

- :class:`PageInfo`: the host, a link to the space's Matrix room (matrix.to) and the
  host's tip jar, given with ``POST /control/v1/spaces/{id}``;
- :class:`Profile`: a person's display name and avatar (the SHA-256 of an image the bot
  put with ``PUT /control/v1/avatars/{sha256}``), given with ``PUT …/people``, kept in a
  bounded :class:`ProfileBook` per stage.

Pure: parsing raises :class:`InfoError` naming the field; nothing here does I/O.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_NAME = 256
MAX_URL = 500
MAX_LABEL = 40
MAX_TIPS = 8
#: profiles one ``PUT …/people`` may carry, and one stage keeps (the oldest go first)
MAX_PEOPLE_PER_CALL = 500
MAX_PROFILES = 5000
MAX_USER_ID = 255
AVATAR_ID = re.compile(r"[0-9a-f]{64}")


class InfoError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def checked_link(value: Any, field: str) -> str:
    """An http(s) address a page may link to (nothing else: no ``javascript:``)."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise InfoError(field, f"field {field!r} must be an http(s) address of at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
            or any(c.isspace() or not c.isprintable() for c in value):
        raise InfoError(field, f"field {field!r} must be an http(s) address")
    return value


@dataclass(frozen=True)
class Tip:
    label: str
    url: str


@dataclass(frozen=True)
class PageInfo:
    host: str | None = None
    room_url: str | None = None
    tips: tuple[Tip, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "room_url": self.room_url,
                "tips": [{"label": t.label, "url": t.url} for t in self.tips]}

    def updated(self, body: dict[str, Any]) -> PageInfo:
        """This info with the fields ``body`` names (``host``, ``room_url``, ``tips``)
        replaced; the others kept. InfoError names a bad one."""
        host, room_url, tips = self.host, self.room_url, self.tips
        if "host" in body:
            host = body["host"]
            if host is not None and not (isinstance(host, str) and 0 < len(host) <= MAX_USER_ID):
                raise InfoError("host", "field 'host' must be a user id or null")
        if "room_url" in body:
            room_url = None if body["room_url"] is None else checked_link(body["room_url"], "room_url")
        if "tips" in body:
            given = body["tips"]
            if not isinstance(given, list) or len(given) > MAX_TIPS:
                raise InfoError("tips", f"field 'tips' must be a list of at most {MAX_TIPS} links")
            parsed = []
            for i, tip in enumerate(given):
                where = f"tips.{i}"
                if not isinstance(tip, dict):
                    raise InfoError(where, f"{where} must be an object with 'label' and 'url'")
                label = tip.get("label")
                if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL:
                    raise InfoError(f"{where}.label", f"{where}.label must be 1–{MAX_LABEL} characters")
                parsed.append(Tip(label, checked_link(tip.get("url"), f"{where}.url")))
            tips = tuple(parsed)
        return PageInfo(host, room_url, tips)

    @classmethod
    def from_json(cls, obj: Any) -> PageInfo:
        """Info as :meth:`as_json` wrote it (an edge reads the origin's); anything that does
        not parse is left out rather than refused."""
        if not isinstance(obj, dict):
            return cls()
        info = cls()
        for key in ("host", "room_url", "tips"):
            try:
                info = info.updated({key: obj[key]}) if key in obj else info
            except InfoError:
                continue
        return info


@dataclass(frozen=True)
class Profile:
    name: str | None = None
    avatar: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "avatar": self.avatar}


def parse_people(value: Any) -> dict[str, Profile]:
    """``{user_id: {"name": str|null, "avatar": sha256-hex|null}}``; InfoError names the
    first bad entry."""
    if not isinstance(value, dict):
        raise InfoError("people", "field 'people' must be an object of user ids")
    if len(value) > MAX_PEOPLE_PER_CALL:
        raise InfoError("people", f"field 'people' may name at most {MAX_PEOPLE_PER_CALL} people per call")
    people = {}
    for user_id, entry in value.items():
        where = f"people.{user_id}"
        if not 0 < len(user_id) <= MAX_USER_ID:
            raise InfoError("people", "a user id in 'people' is empty or too long")
        if not isinstance(entry, dict):
            raise InfoError(where, f"{where} must be an object with 'name' and 'avatar'")
        name, avatar = entry.get("name"), entry.get("avatar")
        if name is not None and not (isinstance(name, str) and len(name) <= MAX_NAME):
            raise InfoError(f"{where}.name",
                            f"{where}.name must be a string of at most {MAX_NAME} characters or null")
        if avatar is not None and not (isinstance(avatar, str) and AVATAR_ID.fullmatch(avatar)):
            raise InfoError(f"{where}.avatar",
                            f"{where}.avatar must be the SHA-256 of an avatar (64 hex digits) or null")
        people[user_id] = Profile(name.strip() or None if name else None, avatar)
    return people


def profiles_from_json(value: Any) -> dict[str, Profile]:
    """Profiles as an origin's state carries them; what does not parse is left out."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for user_id, entry in value.items():
        try:
            out.update(parse_people({user_id: entry}))
        except InfoError:
            continue
    return out


class ProfileBook:
    """The profiles the bot gave for one stage, the most recent :data:`MAX_PROFILES`."""

    def __init__(self, limit: int = MAX_PROFILES) -> None:
        self.limit = limit
        self._book: OrderedDict[str, Profile] = OrderedDict()

    def update(self, people: dict[str, Profile]) -> set[str]:
        """Take these profiles; the users whose profile changed."""
        changed = set()
        for user_id, profile in people.items():
            if self._book.get(user_id) != profile:
                changed.add(user_id)
            self._book[user_id] = profile
            self._book.move_to_end(user_id)
        while len(self._book) > self.limit:
            self._book.popitem(last=False)
        return changed

    def get(self, user_id: str) -> Profile | None:
        return self._book.get(user_id)

    def of(self, users: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The known profiles of ``users``, as JSON."""
        return {u: p.as_json() for u in users if (p := self._book.get(u)) is not None}

    def __len__(self) -> int:
        return len(self._book)
