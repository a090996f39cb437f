"""The Redis feed between an origin bridge and its edges, as pure data (no I/O).

On Redis (all names under ``[bridge] redis_prefix``, ``chorus`` by default):

- ``{prefix}:space:{space_id}`` (pub/sub, origin → edges), one channel per live space:
  - an audio frame: the very bytes the origin's listeners get (bridge/wire.py, 0x11…);
  - ``J`` + a JSON text the origin broadcast to its clients (levels, participants,
    activity, roles, captions), which an edge writes on to its own clients unchanged;
  - ``S`` + the space's state as JSON (title, public, roles, removed, captions,
    recording, origin_url, and for the page the stage's people and the info: host, room
    link, tip jar), sent on every change and once a second, so an edge that
    starts late knows the space within a second, and one that hears nothing for
    :data:`STALE_SECONDS` lets it go;
  - ``U`` + ``{"user_id": …, "message": {…}}``: a message for one person's pages only
    (the host's answer to their raised hand), which an edge writes to that user's clients;
  - ``E`` + ``{"reason": …, "code": 4410|1001}``: the space ended (4410), or its origin
    is shutting down (1001: the pages come back once the space is open again).
- ``{prefix}:to-origin`` (pub/sub, edges → origin): a listener's hand or reaction on an
  edge, checked and rate-limited there, as JSON ``{"type": "hand"|"reaction", …}``.
- ``{prefix}:edge:{edge_id}`` (a key with a TTL): an edge's heartbeat, JSON ``{"id",
  "url", "listeners", "spaces": {space_id: listeners}}``, renewed every
  :data:`HEARTBEAT_SECONDS`; an edge that stops renewing it is gone after
  :data:`EDGE_TTL_SECONDS`. ``{prefix}:edges`` (a set) names the edges, so that readers
  never scan the keyspace; a name whose heartbeat key has expired is taken out of it.

Everything read from Redis is checked here; what does not parse raises FeedError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import jsonsafe, wire
from .page_headers import sources_for

HEARTBEAT_SECONDS = 2.0
EDGE_TTL_SECONDS = 6
#: the origin sends each space's state this often, whether it changed or not
STATE_EVERY_SECONDS = 1.0
#: an edge that has heard nothing of a space for this long closes it (1001): its origin,
#: or the origin's link to Redis, is gone; the pages go elsewhere
STALE_SECONDS = 5.0
BROADCAST = b"J"[0]
STATE = b"S"[0]
ENDED = b"E"[0]
TO_USER = b"U"[0]
AUDIO = (wire.WIRE_VERSION << 4) | wire.KIND_OPUS
#: the largest JSON each kind of message may be (parsing is bounded by these sizes)
MAX_STATE_BYTES = 256 * 1024
MAX_BROADCAST_BYTES = 256 * 1024
MAX_FORWARDED_BYTES = 1024
MAX_HEARTBEAT_BYTES = 64 * 1024
#: at most this many edge heartbeats are read each time
MAX_EDGES = 1000
MAX_USER_ID = 255


class FeedError(ValueError):
    """A message on Redis that is not what the feed sends; ``str()`` says why."""


def space_channel(prefix: str, space_id: str) -> str:
    return f"{prefix}:space:{space_id}"


def space_pattern(prefix: str) -> str:
    """Every space's channel, for PSUBSCRIBE (glob characters in the prefix escaped)."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)
    return f"{escaped}:space:*"


def space_of(prefix: str, channel: str) -> str:
    head = f"{prefix}:space:"
    if not channel.startswith(head) or len(channel) == len(head):
        raise FeedError(f"not a space channel: {channel[:100]!r}")
    return channel[len(head):]


def to_origin_channel(prefix: str) -> str:
    return f"{prefix}:to-origin"


def edge_key(prefix: str, edge_id: str) -> str:
    return f"{prefix}:edge:{edge_id}"


def edges_set(prefix: str) -> str:
    return f"{prefix}:edges"


# -- origin -> edges ----------------------------------------------------------------


def broadcast(text: str) -> bytes:
    return bytes((BROADCAST,)) + text.encode()


def _json(tag: int, obj: dict[str, Any]) -> bytes:
    return bytes((tag,)) + json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SpaceState:
    """What an edge needs to serve a space's listeners as the origin would."""

    title: str
    public: bool
    roles: dict[str, str] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    captions: bool = False
    recording: bool = False
    #: where a listener who is given the mic goes to speak (the origin's public address)
    origin_url: str = ""
    #: names and avatars of the people on stage, and the page's info (bridge/page_info.py),
    #: as JSON; an edge reads them leniently (a bad entry is left out)
    people: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _json(STATE, {"title": self.title, "public": self.public, "roles": self.roles,
                             "removed": sorted(self.removed), "captions": self.captions,
                             "recording": self.recording, "origin_url": self.origin_url,
                             "people": self.people, "info": self.info})


#: the close codes an ended space may carry: ended for good, or the origin going away
END_CODES = (4410, 1001)


def ended(reason: str, code: int = 4410) -> bytes:
    return _json(ENDED, {"reason": reason, "code": code if code in END_CODES else 4410})


def to_user(user_id: str, message: dict[str, Any]) -> bytes:
    return _json(TO_USER, {"user_id": user_id, "message": message})


@dataclass(frozen=True)
class ToUser:
    user_id: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Audio:
    frame: wire.AudioFrame
    #: the bytes as received: what the edge's per-frame clients get
    data: bytes


@dataclass(frozen=True)
class Broadcast:
    text: str


@dataclass(frozen=True)
class Ended:
    reason: str
    code: int = 4410


def _object(data: bytes, what: str, max_bytes: int) -> dict[str, Any]:
    try:
        return jsonsafe.loads_object(data, max_bytes=max_bytes)
    except jsonsafe.JsonRefused as exc:
        raise FeedError(f"{what}: {exc}") from None


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise FeedError(f"{what} must map strings to strings")
    return value


def parse_space_message(data: bytes) -> Audio | Broadcast | SpaceState | Ended | ToUser:
    """One message of a space's channel; FeedError if it is none of the five."""
    if not data:
        raise FeedError("empty message")
    tag = data[0]
    if tag == AUDIO:
        try:
            return Audio(wire.unpack(data), bytes(data))
        except wire.FrameError as exc:
            raise FeedError(f"audio frame: {exc}") from None
    if tag == BROADCAST:
        if len(data) > MAX_BROADCAST_BYTES:
            raise FeedError(f"broadcast too large ({len(data)} bytes)")
        try:
            return Broadcast(data[1:].decode())
        except UnicodeDecodeError:
            raise FeedError("broadcast is not UTF-8") from None
    if tag == ENDED:
        obj = _object(data[1:], "end", MAX_FORWARDED_BYTES)
        reason, code = obj.get("reason"), obj.get("code")
        return Ended(reason if isinstance(reason, str) else "space ended",
                     code if code in END_CODES else 4410)
    if tag == TO_USER:
        obj = _object(data[1:], "message to a user", MAX_FORWARDED_BYTES)
        user_id, message = obj.get("user_id"), obj.get("message")
        if not (isinstance(user_id, str) and 0 < len(user_id) <= MAX_USER_ID) \
                or not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise FeedError("a message to a user needs a 'user_id' and a 'message' with a 'type'")
        return ToUser(user_id, message)
    if tag == STATE:
        obj = _object(data[1:], "state", MAX_STATE_BYTES)
        title, public = obj.get("title"), obj.get("public")
        if not isinstance(title, str) or not isinstance(public, bool):
            raise FeedError("state needs a string 'title' and a boolean 'public'")
        removed = obj.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(u, str) for u in removed):
            raise FeedError("state 'removed' must be a list of user ids")
        origin_url = obj.get("origin_url", "")
        if not isinstance(origin_url, str):
            raise FeedError("state 'origin_url' must be a string")
        people, info = obj.get("people", {}), obj.get("info", {})
        return SpaceState(title, public, _string_map(obj.get("roles", {}), "state 'roles'"),
                          frozenset(removed), obj.get("captions") is True,
                          obj.get("recording") is True, origin_url,
                          people if isinstance(people, dict) else {},
                          info if isinstance(info, dict) else {})
    raise FeedError(f"unknown message kind 0x{tag:02x}")


# -- edges -> origin ----------------------------------------------------------------


@dataclass(frozen=True)
class Forwarded:
    """A listener's hand or reaction, taken on an edge for the origin."""

    space_id: str
    kind: str  # "hand" | "reaction"
    user_id: str | None
    raised: bool = False
    key: str = ""
    #: the edge it was taken on (the origin lowers its hands when it is gone)
    edge_id: str = ""

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"type": self.kind, "space_id": self.space_id, "user_id": self.user_id,
                               "edge": self.edge_id}
        if self.kind == "hand":
            obj["raised"] = self.raised
        else:
            obj["key"] = self.key
        return json.dumps(obj, separators=(",", ":")).encode()


def parse_forwarded(data: bytes) -> Forwarded:
    obj = _object(data, "forwarded message", MAX_FORWARDED_BYTES)
    space_id, user_id, kind = obj.get("space_id"), obj.get("user_id"), obj.get("type")
    edge_id = obj.get("edge", "")
    if not isinstance(edge_id, str) or len(edge_id) > 64:
        raise FeedError("forwarded 'edge' must be an edge id")
    if not isinstance(space_id, str) or not space_id:
        raise FeedError("forwarded message needs a 'space_id'")
    if not (user_id is None or isinstance(user_id, str) and 0 < len(user_id) <= MAX_USER_ID):
        raise FeedError("forwarded 'user_id' must be a user id or null")
    if kind == "hand":
        if user_id is None or not isinstance(obj.get("raised"), bool):
            raise FeedError("a forwarded hand needs a 'user_id' and a boolean 'raised'")
        return Forwarded(space_id, "hand", user_id, raised=obj["raised"], edge_id=edge_id)
    if kind == "reaction":
        key = obj.get("key")
        if not isinstance(key, str) or not 0 < len(key) <= 16 or not key.isprintable():
            raise FeedError("a forwarded reaction needs a short printable 'key'")
        return Forwarded(space_id, "reaction", user_id, key=key, edge_id=edge_id)
    raise FeedError(f"unknown forwarded message type {str(kind)[:32]!r}")


# -- heartbeats and the choice of an edge -------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    edge_id: str
    url: str
    listeners: int
    spaces: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps({"id": self.edge_id, "url": self.url, "listeners": self.listeners,
                           "spaces": self.spaces}, separators=(",", ":")).encode()


def parse_heartbeat(data: bytes) -> Heartbeat:
    obj = _object(data, "heartbeat", MAX_HEARTBEAT_BYTES)
    edge_id, url, listeners, spaces = (obj.get("id"), obj.get("url"), obj.get("listeners"),
                                       obj.get("spaces", {}))
    if not isinstance(edge_id, str) or not edge_id:
        raise FeedError("heartbeat needs an 'id'")
    if not isinstance(url, str) or not sources_for(url):
        raise FeedError("heartbeat 'url' must be a plain http(s) URL (scheme, host, port)")
    if not isinstance(listeners, int) or isinstance(listeners, bool) or listeners < 0:
        raise FeedError("heartbeat 'listeners' must be a count")
    if not isinstance(spaces, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in spaces.items()):
        raise FeedError("heartbeat 'spaces' must map space ids to counts")
    return Heartbeat(edge_id, url.rstrip("/"), listeners, dict(spaces))


class EdgeBook:
    """The live edges as their heartbeats last said, and the listeners handed to each since
    (a burst of joins between two heartbeats must not all go to the same edge)."""

    def __init__(self) -> None:
        self.edges: dict[str, Heartbeat] = {}
        self._handed: dict[str, int] = {}

    def update(self, beats: list[Heartbeat]) -> None:
        """The heartbeats read now: any edge not among them is gone."""
        self.edges = {b.edge_id: b for b in beats}
        self._handed = {}

    def load(self, edge_id: str) -> int:
        return self.edges[edge_id].listeners + self._handed.get(edge_id, 0)

    def urls(self, exclude: str = "") -> list[str]:
        """Every edge's address, least loaded first (ties by id)."""
        order = sorted(self.edges, key=lambda e: (self.load(e), e))
        return [self.edges[e].url for e in order if e != exclude]

    def hand_out(self) -> str | None:
        """The least-loaded edge's address, counted as one listener more; None if none."""
        if not self.edges:
            return None
        best = min(self.edges, key=lambda e: (self.load(e), e))
        self._handed[best] = self._handed.get(best, 0) + 1
        return self.edges[best].url

    def listeners_of(self, space_id: str) -> int:
        return sum(b.spaces.get(space_id, 0) for b in self.edges.values())
