"""Avatars for the space page: small images the bot fetched from the homeserver (a page has
no Matrix login, and Synapse's media needs one), kept here by their SHA-256 and served at
``GET /avatars/{sha256}``.

Only PNG, JPEG, GIF and WebP are taken, judged by their first bytes (never by what the
sender says), each at most :data:`MAX_AVATAR_BYTES`; the store keeps at most
:data:`STORE_BYTES` in memory and drops the least recently used beyond it. Nothing is on
disk: after a restart the bot puts them again with its next push.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

MAX_AVATAR_BYTES = 256 * 1024
STORE_BYTES = 32 * 1024 * 1024


class AvatarError(ValueError):
    pass


def image_type(data: bytes) -> str | None:
    """The image's media type from its first bytes, or None if it is none of the four."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check(avatar_id: str, data: bytes) -> str:
    """The media type of ``data``, if it is an image whose SHA-256 is ``avatar_id``;
    AvatarError saying why not."""
    if not data:
        raise AvatarError("the body is empty")
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarError(f"an avatar may be at most {MAX_AVATAR_BYTES // 1024} KiB")
    kind = image_type(data)
    if kind is None:
        raise AvatarError("not a PNG, JPEG, GIF or WebP image")
    if hashlib.sha256(data).hexdigest() != avatar_id:
        raise AvatarError("the body's SHA-256 is not the one in the address")
    return kind


class AvatarStore:
    def __init__(self, limit_bytes: int = STORE_BYTES) -> None:
        self.limit = limit_bytes
        self.size = 0
        self._images: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def put(self, avatar_id: str, data: bytes) -> bool:
        """Keep a checked image (:func:`check`); True if it was new."""
        kind = check(avatar_id, data)
        if avatar_id in self._images:
            self._images.move_to_end(avatar_id)
            return False
        self._images[avatar_id] = (kind, data)
        self.size += len(data)
        while self.size > self.limit and len(self._images) > 1:
            _, (_, old) = self._images.popitem(last=False)
            self.size -= len(old)
        return True

    def get(self, avatar_id: str) -> tuple[str, bytes] | None:
        found = self._images.get(avatar_id)
        if found is not None:
            self._images.move_to_end(avatar_id)
        return found

    def __contains__(self, avatar_id: str) -> bool:
        return avatar_id in self._images

    def __len__(self) -> int:
        return len(self._images)
