"""The rules of a space: who may do what, in which state, within which limits.

Pure functions of (space, command, actor facts, limits) -> Outcome. An Outcome is the new
space, the effects for the adapters, and the reply to the person who asked. A command that
breaks a rule raises :class:`Refused` with a message that says why and what would work;
a refused command changes nothing.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime

from . import effects as fx
from .model import (
    FINISHED,
    MANAGING_ROLES,
    SPEAKING_ROLES,
    Actor,
    Limits,
    Role,
    Space,
    State,
    Visibility,
)
from .words import plural


class Refused(Exception):
    """A command broke a rule; ``str(exc)`` is the message for the person."""


@dataclass(frozen=True)
class Outcome:
    space: Space
    effects: tuple[fx.Effect, ...]
    reply: str


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    pass


@dataclass(frozen=True)
class Join(Command):
    pass


@dataclass(frozen=True)
class Leave(Command):
    pass


@dataclass(frozen=True)
class RaiseHand(Command):
    pass


@dataclass(frozen=True)
class LowerHand(Command):
    pass


@dataclass(frozen=True)
class Approve(Command):
    target: str


@dataclass(frozen=True)
class Deny(Command):
    target: str


@dataclass(frozen=True)
class Revoke(Command):
    target: str


@dataclass(frozen=True)
class Invite(Command):
    target: str
    role: Role = Role.LISTENER


@dataclass(frozen=True)
class AddCohost(Command):
    target: str


@dataclass(frozen=True)
class RemoveCohost(Command):
    target: str


@dataclass(frozen=True)
class End(Command):
    pass


@dataclass(frozen=True)
class React(Command):
    key: str


@dataclass(frozen=True)
class Remove(Command):
    """A moderator removes someone from this space for good."""

    target: str
    reason: str = ""


@dataclass(frozen=True)
class SetCaptions(Command):
    on: bool


@dataclass(frozen=True)
class SetRecording(Command):
    on: bool


@dataclass(frozen=True)
class GoLive(Command):
    """A scheduled space starts (by its host, or by itself with autostart)."""


@dataclass(frozen=True)
class Cancel(Command):
    pass


@dataclass(frozen=True)
class Reschedule(Command):
    when: datetime


# ---------------------------------------------------------------- helpers


def hosting_refusal(actor: Actor, limits: Limits) -> str | None:
    """Why ``actor`` may not host, or None if they may."""
    if actor.banned:
        return "You are banned from Chorus spaces by a moderator, so you cannot host."
    if actor.host_override == "deny":
        return "A moderator has turned off hosting for you. Ask a moderator if you think this is wrong."
    if actor.host_override == "allow":
        return None
    if actor.followers < limits.min_followers:
        missing = limits.min_followers - actor.followers
        return (
            f"Hosting needs at least {plural(limits.min_followers, 'follower')}; you have {actor.followers}. "
            f"{plural(missing, 'more person', 'more people')} {'needs' if missing == 1 else 'need'} to follow you "
            f"(they type !follow {actor.user_id}), "
            "or a moderator can allow you to host with !mod allow-host."
        )
    return None


def start_space(
    space_id: str,
    actor: Actor,
    title: str,
    visibility: Visibility,
    limits: Limits,
    *,
    scheduled_for: datetime | None = None,
    captions: bool = False,
    recording: bool = False,
) -> Outcome:
    """A new space: live at once, or scheduled when ``scheduled_for`` is given."""
    title = " ".join(title.split())
    if not title:
        raise Refused("A space needs a title, e.g. !space start Friday music chat")
    if len(title) > 200:
        raise Refused(f"That title is {len(title)} characters long; keep it to 200 or fewer.")
    why = hosting_refusal(actor, limits)
    if why:
        raise Refused(why)
    if scheduled_for is None:
        space = Space(
            id=space_id, host=actor.user_id, title=title, visibility=visibility,
            state=State.LIVE, captions=captions, recording=recording,
        ).set_role(actor.user_id, Role.HOST)
        return Outcome(space, (
            fx.CreateRoom(space_id),
            fx.OpenStage(space_id),
            fx.RolesChanged(space_id),
            fx.UpdateCard(space_id),
            fx.NotifyFollowers(space_id),
            fx.Audit(space_id, actor.user_id, "space.start", None, title),
        ), f"Your space “{title}” is live ({visibility.value}). Its id is {space_id}.")
    space = Space(
        id=space_id, host=actor.user_id, title=title, visibility=visibility,
        state=State.SCHEDULED, scheduled_for=scheduled_for, captions=captions,
        recording=recording,
    )
    return Outcome(space, (
        fx.UpdateCard(space_id),
        fx.ScheduleReminders(space_id),
        fx.Audit(space_id, actor.user_id, "space.schedule", None, title),
    ), f"Scheduled “{title}” ({visibility.value}). Its id is {space_id}.")


def _need_state(space: Space, *states: State) -> None:
    if space.state in states:
        return
    if space.state in FINISHED:
        raise Refused(f"Space {space.id} (“{space.title}”) has {space.state.value}; nothing more can happen in it.")
    if space.state is State.SCHEDULED:
        when = space.scheduled_for.strftime("%Y-%m-%d %H:%M UTC") if space.scheduled_for else "later"
        raise Refused(
            f"Space {space.id} (“{space.title}”) is scheduled for {when} and not live yet. "
            f"Type !space remind {space.id} to be reminded when it starts."
        )
    raise Refused(f"Space {space.id} is {space.state.value}; that only works when it is "
                  + " or ".join(s.value for s in states) + ".")


def _need_manager(space: Space, actor: Actor, what: str) -> None:
    if space.role_of(actor.user_id) in MANAGING_ROLES:
        return
    raise Refused(f"Only the host or a co-host can {what} in space {space.id}.")


def _need_host(space: Space, actor: Actor, what: str) -> None:
    if actor.user_id != space.host:
        raise Refused(f"Only the host ({space.host}) can {what} in space {space.id}.")


def _free_slots(space: Space, limits: Limits) -> int:
    return limits.max_speakers - len(space.speakers)


def _full_message(space: Space, limits: Limits) -> str:
    return (
        f"Space {space.id} already has {plural(len(space.speakers), 'speaker')}, the most it can have "
        f"(host included: {limits.max_speakers}). Revoke a speaker first with !space revoke @user."
    )


_ZWJ = "\u200d"
_KEYCAP_BASES = set("0123456789#*")


def _is_modifier(ch: str) -> bool:
    """Skin tones, variation selectors, the keycap mark and tag characters."""
    return ("\U0001f3fb" <= ch <= "\U0001f3ff" or ch in "\ufe0f\ufe0e\u20e3"
            or "\U000e0020" <= ch <= "\U000e007f")


def _is_regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def is_reaction_key(key: str) -> bool:
    """Exactly one emoji: a symbol with its modifiers (skin tone, variation selector,
    tags), a keycap, a flag (two regional indicators), or a ZWJ sequence of those."""
    if not key or len(key) > 32:
        return False
    i, n = 0, len(key)
    while True:
        if i >= n:
            return False
        ch = key[i]
        if _is_regional(ch):
            if i + 1 >= n or not _is_regional(key[i + 1]):
                return False
            i += 2
        elif ch in _KEYCAP_BASES:
            rest = key[i + 1:i + 3]
            if rest not in ("\ufe0f\u20e3", "\u20e3"):
                return False
            i += 1 + len(rest)
        elif unicodedata.category(ch) == "So":
            i += 1
        else:
            return False
        while i < n and _is_modifier(key[i]):
            i += 1
        if i == n:
            return True
        if key[i] != _ZWJ:
            return False
        i += 1


# ---------------------------------------------------------------- the rules


def apply(space: Space, command: Command, actor: Actor, limits: Limits) -> Outcome:
    """Apply ``command`` by ``actor`` to ``space``; raises Refused if it breaks a rule."""
    handler = _HANDLERS.get(type(command))
    if handler is None:  # pragma: no cover - programming error
        raise TypeError(f"no rule for {type(command).__name__}")
    if actor.banned and not isinstance(command, Leave):
        raise Refused("You are banned from Chorus spaces by a moderator.")
    return handler(space, command, actor, limits)


def _join(space: Space, cmd: Join, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    user = actor.user_id
    if user in space.people:
        raise Refused(f"You are already in space {space.id} as {space.people[user].value}.")
    if user in space.removed:
        raise Refused(f"A moderator removed you from space {space.id}; you cannot rejoin it.")
    invitation = space.invited.get(user)
    if invitation is None and not actor.is_moderator:
        if space.visibility is Visibility.INVITED:
            raise Refused(
                f"Space {space.id} is for invited people only. Ask the host ({space.host}) "
                "to invite you with !space invite."
            )
        if space.visibility is Visibility.FOLLOWING and not actor.followed_by_host:
            raise Refused(
                f"Space {space.id} is open to people the host ({space.host}) follows. "
                "Ask the host to follow you or to invite you."
            )
    role = Role.LISTENER
    note = ""
    new = space
    if invitation is Role.SPEAKER:
        if _free_slots(space, limits) > 0:
            role = Role.SPEAKER
        else:
            note = " The speaker slots are full, so you joined as a listener; raise your hand with !space request."
        new = new.with_invitation(user, Role.LISTENER)
    new = new.set_role(user, role)
    effects: list[fx.Effect] = [fx.UpdateCard(space.id)]
    if role in SPEAKING_ROLES:
        effects.insert(0, fx.RolesChanged(space.id))
    return Outcome(new, tuple(effects),
                   f"You joined “{space.title}” ({space.id}) as a {role.value}.{note}")


def _leave(space: Space, cmd: Leave, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    user = actor.user_id
    if user not in space.people:
        raise Refused(f"You are not in space {space.id}.")
    if user == space.host:
        raise Refused(f"You host space {space.id}; end it with !space end {space.id} instead of leaving.")
    role = space.people[user]
    new = space.set_role(user, None).without_request(user)
    effects: list[fx.Effect] = [fx.UpdateCard(space.id)]
    if user in space.requests:
        effects.append(fx.HandClosed(space.id, user))
    if role in SPEAKING_ROLES:
        effects.insert(0, fx.RolesChanged(space.id))
    return Outcome(new, tuple(effects), f"You left “{space.title}”.")


def _raise(space: Space, cmd: RaiseHand, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    user = actor.user_id
    role = space.role_of(user)
    if role is None:
        raise Refused(f"Join space {space.id} first (!space join {space.id}), then ask to speak.")
    if role is not Role.LISTENER:
        raise Refused(f"You can already speak in space {space.id} (you are {role.value}).")
    if user in space.requests:
        raise Refused("Your hand is already raised; the host will answer. Lower it with !space lower.")
    new = replace(space, requests=space.requests + (user,))
    return Outcome(new, (fx.AskToSpeak(space.id, user),),
                   f"Your hand is raised in “{space.title}”; the host or a co-host will answer.")


def _lower(space: Space, cmd: LowerHand, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    if actor.user_id not in space.requests:
        raise Refused(f"Your hand is not raised in space {space.id}.")
    return Outcome(space.without_request(actor.user_id),
                   (fx.HandClosed(space.id, actor.user_id),), "Your hand is lowered.")


def _approve(space: Space, cmd: Approve, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_manager(space, actor, "approve requests to speak")
    if cmd.target not in space.requests:
        raise Refused(
            f"{cmd.target} has not asked to speak in space {space.id}. "
            f"To bring someone up anyway, use !space invite {cmd.target} as=speaker."
        )
    if _free_slots(space, limits) <= 0:
        raise Refused(_full_message(space, limits))
    new = space.without_request(cmd.target).set_role(cmd.target, Role.SPEAKER)
    return Outcome(new, (
        fx.HandClosed(space.id, cmd.target),
        fx.RolesChanged(space.id),
        fx.UpdateCard(space.id),
        fx.Announce(space.id, f"{cmd.target} is now a speaker (approved by {actor.user_id})."),
        fx.Audit(space.id, actor.user_id, "speaker.approve", cmd.target),
    ), f"{cmd.target} can speak now.")


def _deny(space: Space, cmd: Deny, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_manager(space, actor, "answer requests to speak")
    if cmd.target not in space.requests:
        raise Refused(f"{cmd.target} has no raised hand in space {space.id}.")
    new = space.without_request(cmd.target)
    return Outcome(new, (
        fx.HandClosed(space.id, cmd.target),
        fx.HandDeclined(space.id, cmd.target),
        fx.DirectMessage(space.id, cmd.target,
                         f"Your request to speak in “{space.title}” was declined. You are still listening."),
        fx.Audit(space.id, actor.user_id, "speaker.deny", cmd.target),
    ), f"Declined {cmd.target}'s request to speak.")


def _revoke(space: Space, cmd: Revoke, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_manager(space, actor, "revoke speakers")
    role = space.role_of(cmd.target)
    if cmd.target == space.host:
        raise Refused("The host cannot be revoked.")
    if role is Role.COHOST and actor.user_id != space.host:
        raise Refused(f"{cmd.target} is a co-host; only the host can revoke a co-host.")
    if role not in (Role.SPEAKER, Role.COHOST):
        raise Refused(f"{cmd.target} is not a speaker in space {space.id}.")
    new = space.set_role(cmd.target, Role.LISTENER)
    return Outcome(new, (
        fx.RolesChanged(space.id),
        fx.UpdateCard(space.id),
        fx.Announce(space.id, f"{cmd.target} is a listener again."),
        fx.Audit(space.id, actor.user_id, "speaker.revoke", cmd.target),
    ), f"{cmd.target} is a listener again.")


def _invite(space: Space, cmd: Invite, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE, State.SCHEDULED)
    if space.state is State.SCHEDULED:
        _need_host(space, actor, "invite people before the space starts")
    else:
        _need_manager(space, actor, "invite people")
    if cmd.role not in (Role.LISTENER, Role.SPEAKER):
        raise Refused("Invite as=listener or as=speaker.")
    if cmd.target in space.removed:
        raise Refused(f"A moderator removed {cmd.target} from this space.")
    current = space.role_of(cmd.target)
    if current is not None:
        if cmd.role is Role.SPEAKER and current is Role.LISTENER:
            if _free_slots(space, limits) <= 0:
                raise Refused(_full_message(space, limits))
            new = space.without_request(cmd.target).set_role(cmd.target, Role.SPEAKER)
            effects: list[fx.Effect] = [
                fx.RolesChanged(space.id), fx.UpdateCard(space.id),
                fx.Announce(space.id, f"{cmd.target} was invited to speak by {actor.user_id}."),
                fx.Audit(space.id, actor.user_id, "speaker.invite", cmd.target),
            ]
            if cmd.target in space.requests:
                effects.insert(0, fx.HandClosed(space.id, cmd.target))
            return Outcome(new, tuple(effects), f"{cmd.target} can speak now.")
        raise Refused(f"{cmd.target} is already in space {space.id} as {current.value}.")
    if cmd.role is Role.SPEAKER and _free_slots(space, limits) <= 0:
        raise Refused(_full_message(space, limits))
    new = space.with_invitation(cmd.target, cmd.role)
    return Outcome(new, (
        fx.InviteToRoom(space.id, cmd.target, cmd.role.value),
        fx.Audit(space.id, actor.user_id, "space.invite", cmd.target, cmd.role.value),
    ), f"Invited {cmd.target} to “{space.title}” as {cmd.role.value}.")


def _cohost(space: Space, cmd: AddCohost, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_host(space, actor, "add co-hosts")
    role = space.role_of(cmd.target)
    if cmd.target == space.host:
        raise Refused("You are the host already.")
    if role is None:
        raise Refused(f"{cmd.target} is not in space {space.id}; invite them first.")
    if role is Role.COHOST:
        raise Refused(f"{cmd.target} is already a co-host.")
    if len(space.cohosts) >= limits.max_cohosts:
        raise Refused(
            f"Space {space.id} already has {len(space.cohosts)} co-hosts, the most allowed "
            f"({limits.max_cohosts}). Remove one with !space uncohost @user first."
        )
    if role is Role.LISTENER and _free_slots(space, limits) <= 0:
        raise Refused(_full_message(space, limits))
    new = space.without_request(cmd.target).set_role(cmd.target, Role.COHOST)
    effects: list[fx.Effect] = [
        fx.RolesChanged(space.id), fx.UpdateCard(space.id),
        fx.Announce(space.id, f"{cmd.target} is now a co-host."),
        fx.Audit(space.id, actor.user_id, "cohost.add", cmd.target),
    ]
    if cmd.target in space.requests:
        effects.insert(0, fx.HandClosed(space.id, cmd.target))
    return Outcome(new, tuple(effects), f"{cmd.target} is now a co-host.")


def _uncohost(space: Space, cmd: RemoveCohost, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_host(space, actor, "remove co-hosts")
    if space.role_of(cmd.target) is not Role.COHOST:
        raise Refused(f"{cmd.target} is not a co-host of space {space.id}.")
    new = space.set_role(cmd.target, Role.SPEAKER)
    return Outcome(new, (
        fx.RolesChanged(space.id), fx.UpdateCard(space.id),
        fx.Announce(space.id, f"{cmd.target} is no longer a co-host (still a speaker)."),
        fx.Audit(space.id, actor.user_id, "cohost.remove", cmd.target),
    ), f"{cmd.target} is no longer a co-host; they can still speak.")


def _end(space: Space, cmd: End, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    if actor.user_id != space.host and not actor.is_moderator:
        raise Refused(f"Only the host ({space.host}) or a moderator can end space {space.id}.")
    by = "the host" if actor.user_id == space.host else f"moderator {actor.user_id}"
    new = replace(space, state=State.ENDED, requests=())
    return Outcome(new, (
        fx.CloseSpace(space.id, f"ended by {by}"),
        fx.UpdateCard(space.id),
        fx.Audit(space.id, actor.user_id, "space.end"),
    ), f"Space “{space.title}” has ended.")


def _react(space: Space, cmd: React, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    if actor.user_id not in space.people:
        raise Refused(f"Join space {space.id} to react in it.")
    if not is_reaction_key(cmd.key):
        raise Refused(f"“{cmd.key[:40]}” is not an emoji. React with one emoji, e.g. !space react 👏")
    return Outcome(space, (fx.ReactionAdded(space.id, actor.user_id, cmd.key),), f"Reacted {cmd.key}")


def _remove(space: Space, cmd: Remove, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    if not actor.is_moderator:
        raise Refused("Only moderators can remove people from a space.")
    if cmd.target == space.host:
        raise Refused(f"{cmd.target} hosts this space; end it with !mod end {space.id} instead.")
    if cmd.target in space.removed:
        raise Refused(f"{cmd.target} has already been removed from space {space.id}.")
    role = space.role_of(cmd.target)
    new = replace(space.set_role(cmd.target, None).without_request(cmd.target).with_invitation(cmd.target, None),
                  removed=space.removed | {cmd.target})
    effects: list[fx.Effect] = [
        fx.Kick(space.id, cmd.target, cmd.reason or f"removed by moderator {actor.user_id}"),
        fx.UpdateCard(space.id),
        fx.Audit(space.id, actor.user_id, "mod.remove", cmd.target, cmd.reason),
    ]
    if role in SPEAKING_ROLES:
        effects.insert(0, fx.RolesChanged(space.id))
    if cmd.target in space.requests:
        effects.insert(0, fx.HandClosed(space.id, cmd.target))
    return Outcome(new, tuple(effects), f"Removed {cmd.target} from space {space.id}.")


def _toggle(space: Space, actor: Actor, option: str, subject: str, on: bool) -> Outcome:
    """Turn a stage option (captions, recording) on or off; ``subject`` is e.g. "Captions are"."""
    word = "on" if on else "off"
    if getattr(space, option) == on:
        raise Refused(f"{subject} already {word} in space {space.id}.")
    return Outcome(replace(space, **{option: on}), (
        fx.StageOptions(space.id, **{option: on}),
        fx.Announce(space.id, f"{subject} {word}."),
        fx.Audit(space.id, actor.user_id, f"space.{option}", None, word),
    ), f"{subject} {word}.")


def _captions(space: Space, cmd: SetCaptions, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_manager(space, actor, "turn captions on or off")
    return _toggle(space, actor, "captions", "Captions are", cmd.on)


def _recording(space: Space, cmd: SetRecording, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.LIVE)
    _need_host(space, actor, "turn recording on or off")
    return _toggle(space, actor, "recording", "Recording is", cmd.on)


def _go_live(space: Space, cmd: GoLive, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.SCHEDULED)
    _need_host(space, actor, "start this space")
    why = hosting_refusal(actor, limits)
    if why:
        raise Refused(why)
    new = replace(space, state=State.LIVE).set_role(space.host, Role.HOST)
    return Outcome(new, (
        fx.CancelReminders(space.id),
        fx.CreateRoom(space.id),
        fx.OpenStage(space.id),
        fx.RolesChanged(space.id),
        fx.UpdateCard(space.id),
        fx.NotifyFollowers(space.id),
        fx.Audit(space.id, actor.user_id, "space.start", None, space.title),
    ), f"Your space “{space.title}” is live. Its id is {space.id}.")


def _cancel(space: Space, cmd: Cancel, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.SCHEDULED)
    if actor.user_id != space.host and not actor.is_moderator:
        raise Refused(f"Only the host ({space.host}) or a moderator can cancel space {space.id}.")
    new = replace(space, state=State.CANCELLED)
    return Outcome(new, (
        fx.CancelReminders(space.id),
        fx.UpdateCard(space.id),
        fx.Audit(space.id, actor.user_id, "space.cancel"),
    ), f"Cancelled “{space.title}”.")


def _reschedule(space: Space, cmd: Reschedule, actor: Actor, limits: Limits) -> Outcome:
    _need_state(space, State.SCHEDULED)
    _need_host(space, actor, "reschedule this space")
    new = replace(space, scheduled_for=cmd.when)
    return Outcome(new, (
        fx.ScheduleReminders(space.id),
        fx.UpdateCard(space.id),
        fx.Audit(space.id, actor.user_id, "space.reschedule", None, cmd.when.isoformat()),
    ), f"Rescheduled “{space.title}”.")


_HANDLERS = {
    Join: _join, Leave: _leave, RaiseHand: _raise, LowerHand: _lower,
    Approve: _approve, Deny: _deny, Revoke: _revoke, Invite: _invite,
    AddCohost: _cohost, RemoveCohost: _uncohost, End: _end, React: _react,
    Remove: _remove, SetCaptions: _captions, SetRecording: _recording,
    GoLive: _go_live, Cancel: _cancel, Reschedule: _reschedule,
}
