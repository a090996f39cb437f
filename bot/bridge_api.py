"""What the bot needs from the audio bridge, and an in-memory stand-in.

The bot decides who may speak; the bridge only enforces it. Everything the bot asks
of the bridge goes through :class:`BridgeControl`. The real implementation talks to the
bridge's authenticated control API over HTTP (see ``docs/protocol.md``); the in-memory
one below keeps the same state in a dict, for unit tests and for running without audio.

Roles are pushed as a whole map per space (user id -> role), so a push is idempotent
and the bot can simply push every live space again. It does so whenever the bridge may
have lost them: at start, when the bridge comes back as a new instance (it restarted),
and when a push failed (see ``on_resync``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridge.recording import FILE_NAME
from bridge.roles import AUDIO_ROLES, ROLES

BridgeEventHandler = Callable[[dict[str, Any]], Awaitable[None]]
#: pushes every live stage to the bridge again; raises BridgeUnavailable to be retried.
#: Its argument says why: "start" (first contact), "restart" (a new bridge instance) or
#: "recovered" (pushes had failed and the bridge answers again).
ResyncHandler = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class StageStats:
    space_id: str
    open: bool
    listeners: int = 0
    peak_listeners: int = 0
    speakers_connected: int = 0
    recording: bool = False
    captions: bool = False


class BridgeError(Exception):
    """The bridge refused a request or could not be reached. ``reason`` is the bridge's own
    words (for people), the message also says which request (for logs)."""

    def __init__(self, message: str, reason: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message
        #: the bridge's HTTP status, when it answered
        self.status = status


class BridgeUnavailable(BridgeError):
    """The bridge could not be reached, or has lost the stage: the bot's pushes will be
    made again by the next resync, once it answers."""


class StageMissing(BridgeError):
    """The bridge has no stage for the space: it ended, or the bridge lost it (a restart);
    the caller knows which."""


class BridgeControl(Protocol):
    #: the address people's browsers use for the bridge's pages
    public_url: str

    async def open_stage(
        self, space_id: str, title: str, *, public: bool, record: bool = False,
        captions: bool = False, page: dict[str, Any] | None = None,
    ) -> None:
        """Open (or update) a stage; ``page`` is what its page shows besides audio (1.4):
        ``host``, ``room_url`` and ``tips`` ([{label, url}])."""
        ...

    async def set_people(self, space_id: str, people: dict[str, dict[str, Any]]) -> None:
        """Display names and avatars for the page (1.4): ``{user_id: {"name", "avatar"}}``,
        merged into what the bridge knows; ``avatar`` names an image given to put_avatar."""
        ...

    async def put_avatar(self, avatar_id: str, data: bytes) -> None:
        """An avatar image (PNG, JPEG, GIF or WebP) named by its SHA-256 (1.4)."""
        ...

    async def answer_hand(self, space_id: str, user_id: str, answer: str) -> None:
        """The host's no ("declined") to a raised hand: the bridge lowers it and tells the
        person's pages (1.4)."""
        ...

    async def put_listing(self, space_id: str, listing: dict[str, Any]) -> list[str]:
        """The page of a space that is not live (scheduled, ended, cancelled; 1.5). The
        names of the files it gave that the bridge does not have (left out)."""
        ...

    async def set_roles(self, space_id: str, roles: dict[str, str],
                        removed: Iterable[str] = ()) -> None:
        """Who is who in a live space, as a whole: ``roles`` (others are listeners) and the
        users a moderator removed (the bridge closes their connections and refuses them)."""
        ...

    async def set_options(
        self, space_id: str, *, record: bool | None = None, captions: bool | None = None
    ) -> None: ...

    async def close_stage(self, space_id: str) -> StageStats: ...

    async def stats(self, space_id: str) -> StageStats: ...

    async def play(self, space_id: str, data: bytes, content_type: str, user_id: str) -> float:
        """Play a voice message into the live mix as ``user_id`` (host, co-host or
        speaker); returns its duration in seconds. BridgeError if refused."""
        ...

    async def fetch(self, name: str, into: Path) -> Path:
        """Download one of the bridge's recordings, clips or transcripts (``name`` as its
        events give it) into the folder ``into``; the file written. BridgeError if the
        bridge refuses, BridgeUnavailable if it cannot be reached."""
        ...

    def page_url(self, space_id: str, token: str | None = None) -> str: ...

    def mint_token(self, space_id: str, user_id: str, role: str) -> str: ...

    def on_event(self, handler: BridgeEventHandler) -> None: ...

    def on_resync(self, handler: ResyncHandler) -> None:
        """Call ``handler`` whenever every live stage must be pushed again."""
        ...

    def forget(self, handler: BridgeEventHandler | ResyncHandler) -> None:
        """Call ``handler`` (given to on_event or on_resync) no more: its bot has stopped."""
        ...

    @property
    def available(self) -> bool:
        """Whether the bridge answers and holds what the bot last pushed."""
        ...

    def mark_stale(self, why: str) -> None:
        """The bridge has lost something it was told: push every live stage again."""
        ...

    async def stage_ids(self) -> list[str]:
        """The spaces the bridge has an open stage for."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def forget_handler(handler: object, *lists: list) -> None:
    """Take ``handler`` out of each of ``lists`` (a bridge's event and resync handlers)."""
    for handlers in lists:
        while handler in handlers:
            handlers.remove(handler)


@dataclass
class _Stage:
    title: str
    public: bool
    record: bool
    captions: bool
    roles: dict[str, str] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    listeners: int = 0
    peak: int = 0
    page: dict[str, Any] = field(default_factory=dict)
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: list[tuple[str, str]] = field(default_factory=list)


class InMemoryBridge:
    """Keeps stage state in memory; used where no audio is needed."""

    def __init__(self, public_url: str = "http://127.0.0.1:8089") -> None:
        self.public_url = public_url.rstrip("/")
        self.stages: dict[str, _Stage] = {}
        self.closed: set[str] = set()
        self._handlers: list[BridgeEventHandler] = []
        self._resync: list[ResyncHandler] = []
        #: play() calls: (space_id, data, content_type, user_id)
        self.played: list[tuple[str, bytes, str, str]] = []
        self.available = True
        #: what fetch() hands out, by file name (tests put files here)
        self.files: dict[str, bytes] = {}
        #: put_listing() calls, the last of each space
        self.listings: dict[str, dict[str, Any]] = {}
        #: the avatars put, by their SHA-256
        self.avatars: dict[str, bytes] = {}

    async def start(self) -> None:
        for handler in self._resync:
            await handler("start")

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync.append(handler)

    def forget(self, handler) -> None:
        forget_handler(handler, self._handlers, self._resync)

    def mark_stale(self, why: str) -> None:
        return None  # it never loses what it holds

    async def fetch(self, name: str, into: Path) -> Path:
        if not FILE_NAME.fullmatch(name) or name not in self.files:
            raise BridgeError(f"the bridge has no file {name!r}")
        dest = into / name
        dest.write_bytes(self.files[name])
        return dest

    async def stage_ids(self) -> list[str]:
        return list(self.stages)

    async def close(self) -> None:
        return None

    async def open_stage(self, space_id, title, *, public, record=False, captions=False, page=None):
        old = self.stages.get(space_id)
        stage = self.stages[space_id] = _Stage(title, public, record, captions)
        if old is not None:
            stage.roles, stage.removed, stage.people = old.roles, old.removed, old.people
            stage.page = old.page
        stage.page.update(page or {})
        self.closed.discard(space_id)

    async def set_people(self, space_id, people):
        self._stage(space_id).people.update(people)

    async def put_avatar(self, avatar_id, data):
        self.avatars[avatar_id] = data

    async def answer_hand(self, space_id, user_id, answer):
        self._stage(space_id).answers.append((user_id, answer))

    async def put_listing(self, space_id, listing):
        self.listings[space_id] = listing
        return []

    def _stage(self, space_id: str) -> _Stage:
        try:
            return self.stages[space_id]
        except KeyError:
            raise StageMissing(f"space {space_id} has no open stage") from None

    async def set_roles(self, space_id, roles, removed=()):
        unknown = set(roles.values()) - ROLES
        if unknown:
            raise BridgeError(f"unknown role(s) {sorted(unknown)} for space {space_id}")
        stage = self._stage(space_id)
        stage.roles = dict(roles)
        stage.removed = frozenset(removed)

    async def set_options(self, space_id, *, record=None, captions=None):
        stage = self._stage(space_id)
        if record is not None:
            stage.record = record
        if captions is not None:
            stage.captions = captions

    async def close_stage(self, space_id):
        stats = await self.stats(space_id)
        self.stages.pop(space_id, None)
        self.closed.add(space_id)
        return StageStats(space_id, False, 0, stats.peak_listeners, 0, False, False)

    async def stats(self, space_id):
        stage = self.stages.get(space_id)
        if stage is None:
            return StageStats(space_id, False)
        speakers = sum(1 for r in stage.roles.values() if r in AUDIO_ROLES)
        return StageStats(space_id, True, stage.listeners, stage.peak, speakers,
                          stage.record, stage.captions)

    def page_url(self, space_id, token=None):
        url = f"{self.public_url}/spaces/{space_id}"
        return f"{url}?token={token}" if token else url

    def mint_token(self, space_id, user_id, role):
        return f"memory.{space_id}.{user_id}.{role}"

    def on_event(self, handler):
        self._handlers.append(handler)

    async def emit(self, event: dict[str, Any]) -> None:
        """Deliver an event as if the bridge had sent it (tests)."""
        for handler in self._handlers:
            await handler(event)

    async def play(self, space_id: str, data: bytes, content_type: str, user_id: str) -> float:
        """Record the call; same refusals as the bridge (no stage, not a speaker, empty),
        but no decoding: the duration returned is always 0.0."""
        stage = self._stage(space_id)
        if stage.roles.get(user_id) not in AUDIO_ROLES:
            raise BridgeError(f"{user_id} is not a host, co-host or speaker of this space")
        if not data:
            raise BridgeError("empty body: send the audio file as the body")
        self.played.append((space_id, data, content_type, user_id))
        return 0.0

    def may_send_audio(self, space_id: str, user_id: str) -> bool:
        stage = self.stages.get(space_id)
        return bool(stage and stage.roles.get(user_id) in AUDIO_ROLES)
