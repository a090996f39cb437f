"""What the rules ask the outside world to do. The bot's adapters carry these out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Effect:
    space_id: str


@dataclass(frozen=True)
class CreateRoom(Effect):
    """Create the space's Matrix room and post its card."""


@dataclass(frozen=True)
class OpenStage(Effect):
    """Open the space's stage on the audio bridge."""


@dataclass(frozen=True)
class RolesChanged(Effect):
    """Push roles to the bridge, mirror them in power levels and the roles state event."""


@dataclass(frozen=True)
class UpdateCard(Effect):
    """Refresh the space's card(s): state, listener count, speakers."""


@dataclass(frozen=True)
class InviteToRoom(Effect):
    user_id: str
    role: str


@dataclass(frozen=True)
class AskToSpeak(Effect):
    """Post a raised hand to the host and co-hosts, with ✅/❌ to answer it."""

    user_id: str


@dataclass(frozen=True)
class HandClosed(Effect):
    """A raised hand was answered or withdrawn; its notice no longer acts."""

    user_id: str


@dataclass(frozen=True)
class HandDeclined(Effect):
    """The host said no to a raised hand: the bridge lowers it, the person's page says so."""

    user_id: str


@dataclass(frozen=True)
class Announce(Effect):
    """A notice in the space's room."""

    text: str


@dataclass(frozen=True)
class DirectMessage(Effect):
    user_id: str
    text: str


@dataclass(frozen=True)
class Kick(Effect):
    user_id: str
    reason: str


@dataclass(frozen=True)
class ReactionAdded(Effect):
    user_id: str
    key: str


@dataclass(frozen=True)
class StageOptions(Effect):
    captions: bool | None = None
    recording: bool | None = None


@dataclass(frozen=True)
class CloseSpace(Effect):
    """Summary in the room, room closed to new joins, widget removed, stage closed, card ended."""

    reason: str


@dataclass(frozen=True)
class ScheduleReminders(Effect):
    """(Re)plan the start-time and early reminders of a scheduled space."""


@dataclass(frozen=True)
class CancelReminders(Effect):
    pass


@dataclass(frozen=True)
class NotifyFollowers(Effect):
    """The host went live: direct-message followers who opted in (batched, in the background)."""


@dataclass(frozen=True)
class Audit(Effect):
    actor: str
    action: str
    target: str | None = None
    detail: str = ""
