"""The values the rules work on: a space, its people, the limits. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"
    CANCELLED = "cancelled"


class Role(StrEnum):
    HOST = "host"
    COHOST = "cohost"
    SPEAKER = "speaker"
    LISTENER = "listener"


class Visibility(StrEnum):
    EVERYONE = "everyone"
    FOLLOWING = "following"
    INVITED = "invited"


#: roles that hold one of the space's speaker slots (and may send audio)
SPEAKING_ROLES = frozenset({Role.HOST, Role.COHOST, Role.SPEAKER})
#: roles that manage the stage (approve, deny, revoke, invite)
MANAGING_ROLES = frozenset({Role.HOST, Role.COHOST})

FINISHED = frozenset({State.ENDED, State.CANCELLED})


@dataclass(frozen=True)
class Limits:
    min_followers: int = 600
    max_speakers: int = 11
    max_cohosts: int = 2
    max_days_ahead: int = 14


def _frozen(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Space:
    """A space as the rules see it. ``people`` holds those present, with their role."""

    id: str
    host: str
    title: str
    visibility: Visibility = Visibility.EVERYONE
    state: State = State.LIVE
    people: Mapping[str, Role] = field(default_factory=_frozen)
    #: raised hands, oldest first
    requests: tuple[str, ...] = ()
    #: invitations not yet used: user -> LISTENER or SPEAKER
    invited: Mapping[str, Role] = field(default_factory=_frozen)
    #: removed by a moderator: may not come back to this space
    removed: frozenset[str] = frozenset()
    scheduled_for: datetime | None = None
    captions: bool = False
    recording: bool = False

    def role_of(self, user: str) -> Role | None:
        return self.people.get(user)

    @property
    def speakers(self) -> list[str]:
        return [u for u, r in self.people.items() if r in SPEAKING_ROLES]

    @property
    def cohosts(self) -> list[str]:
        return [u for u, r in self.people.items() if r is Role.COHOST]

    @property
    def listeners(self) -> list[str]:
        return [u for u, r in self.people.items() if r is Role.LISTENER]

    def set_role(self, user: str, role: Role | None) -> Space:
        people = dict(self.people)
        if role is None:
            people.pop(user, None)
        else:
            people[user] = role
        return replace(self, people=_frozen(people))

    def without_request(self, user: str) -> Space:
        return replace(self, requests=tuple(u for u in self.requests if u != user))

    def with_invitation(self, user: str, role: Role | None) -> Space:
        invited = dict(self.invited)
        if role is None:
            invited.pop(user, None)
        else:
            invited[user] = role
        return replace(self, invited=_frozen(invited))


@dataclass(frozen=True)
class Actor:
    """Who sends a command, with the facts about them the rules need."""

    user_id: str
    is_moderator: bool = False
    banned: bool = False
    #: follower count: the larger of the follow graph's and the imported one
    followers: int = 0
    #: "allow" / "deny" set by a moderator, or None
    host_override: str | None = None
    #: does the space's host follow this user? (for visibility=following)
    followed_by_host: bool = False
