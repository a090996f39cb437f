"""Example-based tests of the pure rules of a space (bot/core/rules.py).

Each command: the happy path (new state, the effects with their fields, the reply) and
each refusal (``Refused`` with a message that says why and what to do, and the input
space left exactly as it was).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from bot.core import effects as fx
from bot.core.model import Actor, Limits, Role, Space, State, Visibility
from bot.core.rules import (
    AddCohost,
    Approve,
    Cancel,
    Command,
    Deny,
    End,
    GoLive,
    Invite,
    Join,
    Leave,
    LowerHand,
    Outcome,
    RaiseHand,
    React,
    Refused,
    Remove,
    RemoveCohost,
    Reschedule,
    Revoke,
    SetCaptions,
    SetRecording,
    apply,
    hosting_refusal,
    is_reaction_key,
    start_space,
)

LIMITS = Limits()
SID = "sp1"
HOST = "@host:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
DAVE = "@dave:example.org"
MOD = "@mod:example.org"
WHEN = datetime(2030, 5, 17, 18, 30, tzinfo=UTC)

host = Actor(HOST, followers=1000)
alice = Actor(ALICE)
bob = Actor(BOB)
carol = Actor(CAROL)
dave = Actor(DAVE)
mod = Actor(MOD, is_moderator=True)


# ---------------------------------------------------------------- helpers


def clone(space: Space) -> Space:
    """An equal copy that shares no mutable storage with ``space``."""
    return replace(
        space,
        people=MappingProxyType(dict(space.people)),
        invited=MappingProxyType(dict(space.invited)),
        requests=tuple(space.requests),
        removed=frozenset(space.removed),
    )


def live(visibility: Visibility = Visibility.EVERYONE, **kw) -> Space:
    out = start_space(SID, host, "Friday music chat", visibility, LIMITS, **kw)
    assert out.space.state is State.LIVE
    return out.space


def scheduled(visibility: Visibility = Visibility.EVERYONE) -> Space:
    out = start_space(SID, host, "Friday music chat", visibility, LIMITS, scheduled_for=WHEN)
    assert out.space.state is State.SCHEDULED
    return out.space


def stage(
    space: Space,
    *,
    listeners=(),
    speakers=(),
    cohosts=(),
    requests=(),
    invited=None,
) -> Space:
    """Put people on a space directly (requests are also listeners)."""
    for u in listeners:
        space = space.set_role(u, Role.LISTENER)
    for u in requests:
        space = space.set_role(u, Role.LISTENER)
    for u in speakers:
        space = space.set_role(u, Role.SPEAKER)
    for u in cohosts:
        space = space.set_role(u, Role.COHOST)
    space = replace(space, requests=space.requests + tuple(requests))
    for u, r in (invited or {}).items():
        space = space.with_invitation(u, r)
    return space


def ok(space: Space, cmd: Command, actor: Actor, limits: Limits = LIMITS) -> Outcome:
    before = clone(space)
    out = apply(space, cmd, actor, limits)
    assert space == before, "apply must not change its input"
    assert all(e.space_id == space.id for e in out.effects)
    assert out.reply
    return out


def refused(space: Space, cmd: Command, actor: Actor, *words: str, limits: Limits = LIMITS) -> str:
    before = clone(space)
    with pytest.raises(Refused) as exc:
        apply(space, cmd, actor, limits)
    assert space == before, "a refused command changes nothing"
    msg = str(exc.value)
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


def kinds(out: Outcome) -> list[type]:
    return [type(e) for e in out.effects]


def one(out: Outcome, kind: type):
    found = [e for e in out.effects if isinstance(e, kind)]
    assert len(found) == 1, f"expected one {kind.__name__} in {out.effects}"
    return found[0]


def full_space(limits: Limits = LIMITS) -> Space:
    """Host plus speakers up to the limit, and a listener with a raised hand."""
    speakers = [f"@s{i}:example.org" for i in range(limits.max_speakers - 1)]
    return stage(live(), speakers=speakers, requests=[ALICE])


# ---------------------------------------------------------------- hosting gate / start


def test_start_live_space():
    out = start_space(SID, host, "  Friday   music\tchat ", Visibility.FOLLOWING, LIMITS)
    s = out.space
    assert s.id == SID and s.host == HOST
    assert s.title == "Friday music chat"
    assert s.visibility is Visibility.FOLLOWING
    assert s.state is State.LIVE
    assert dict(s.people) == {HOST: Role.HOST}
    assert s.requests == () and dict(s.invited) == {} and s.removed == frozenset()
    assert kinds(out) == [fx.CreateRoom, fx.OpenStage, fx.RolesChanged, fx.UpdateCard, fx.NotifyFollowers,
                          fx.Audit]
    assert all(e.space_id == SID for e in out.effects)
    audit = one(out, fx.Audit)
    assert (audit.actor, audit.action, audit.detail) == (HOST, "space.start", "Friday music chat")
    assert "Friday music chat" in out.reply and SID in out.reply and "following" in out.reply


def test_start_carries_captions_and_recording():
    out = start_space(SID, host, "t", Visibility.EVERYONE, LIMITS, captions=True, recording=True)
    s = out.space
    assert s.captions and s.recording


def test_start_scheduled_space():
    out = start_space(SID, host, "Later", Visibility.INVITED, LIMITS, scheduled_for=WHEN)
    s = out.space
    assert s.state is State.SCHEDULED
    assert s.scheduled_for == WHEN
    assert dict(s.people) == {}
    assert kinds(out) == [fx.UpdateCard, fx.ScheduleReminders, fx.Audit]
    assert one(out, fx.Audit).action == "space.schedule"
    assert "Scheduled" in out.reply and SID in out.reply


def test_hosting_at_threshold_is_allowed():
    a = Actor(ALICE, followers=600)
    assert hosting_refusal(a, LIMITS) is None
    assert start_space(SID, a, "t", Visibility.EVERYONE, LIMITS).space.host == ALICE


def test_hosting_below_threshold_refused_with_counts():
    a = Actor(ALICE, followers=599)
    with pytest.raises(Refused) as exc:
        start_space(SID, a, "t", Visibility.EVERYONE, LIMITS)
    msg = str(exc.value)
    assert "600" in msg and "599" in msg
    assert "1 more" in msg
    assert f"!follow {ALICE}" in msg and "allow-host" in msg


def test_hosting_threshold_comes_from_limits():
    a = Actor(ALICE, followers=3)
    with pytest.raises(Refused) as exc:
        start_space(SID, a, "t", Visibility.EVERYONE, Limits(min_followers=10))
    assert "10" in str(exc.value) and "3" in str(exc.value) and "7 more" in str(exc.value)
    start_space(SID, Actor(ALICE, followers=10), "t", Visibility.EVERYONE, Limits(min_followers=10))


def test_hosting_override_allow_ignores_count():
    a = Actor(ALICE, followers=0, host_override="allow")
    assert start_space(SID, a, "t", Visibility.EVERYONE, LIMITS).space.state is State.LIVE


def test_hosting_override_deny_beats_count():
    a = Actor(ALICE, followers=10_000, host_override="deny")
    with pytest.raises(Refused, match="moderator"):
        start_space(SID, a, "t", Visibility.EVERYONE, LIMITS)


def test_banned_cannot_host_even_if_allowed():
    a = Actor(ALICE, followers=10_000, host_override="allow", banned=True)
    with pytest.raises(Refused, match="banned"):
        start_space(SID, a, "t", Visibility.EVERYONE, LIMITS)
    with pytest.raises(Refused, match="banned"):
        start_space(SID, a, "t", Visibility.EVERYONE, LIMITS, scheduled_for=WHEN)


def test_scheduling_also_needs_the_hosting_gate():
    with pytest.raises(Refused, match="600"):
        start_space(SID, Actor(ALICE, followers=5), "t", Visibility.EVERYONE, LIMITS,
                    scheduled_for=WHEN)


@pytest.mark.parametrize("title", ["", "   ", "\t\n"])
def test_start_needs_a_title(title):
    with pytest.raises(Refused) as exc:
        start_space(SID, host, title, Visibility.EVERYONE, LIMITS)
    assert "title" in str(exc.value) and "!space start" in str(exc.value)


def test_start_title_too_long():
    with pytest.raises(Refused) as exc:
        start_space(SID, host, "x" * 201, Visibility.EVERYONE, LIMITS)
    assert "201" in str(exc.value) and "200" in str(exc.value)
    assert start_space(SID, host, "x" * 200, Visibility.EVERYONE, LIMITS).space.title == "x" * 200


# ---------------------------------------------------------------- join


def test_join_everyone_as_listener():
    s = live()
    out = ok(s, Join(), alice)
    assert out.space.role_of(ALICE) is Role.LISTENER
    assert kinds(out) == [fx.UpdateCard]
    assert "listener" in out.reply and "Friday music chat" in out.reply


def test_join_twice_refused():
    s = ok(live(), Join(), alice).space
    refused(s, Join(), alice, "already", "listener")


def test_join_following_when_followed():
    out = ok(live(Visibility.FOLLOWING), Join(), Actor(ALICE, followed_by_host=True))
    assert out.space.role_of(ALICE) is Role.LISTENER


def test_join_following_when_not_followed_refused():
    refused(live(Visibility.FOLLOWING), Join(), alice, "follows", HOST, "invite")


def test_join_invited_without_invitation_refused():
    refused(live(Visibility.INVITED), Join(), Actor(ALICE, followed_by_host=True),
            "invited", HOST, "!space invite")


def test_join_invited_with_invitation():
    s = stage(live(Visibility.INVITED), invited={ALICE: Role.LISTENER})
    out = ok(s, Join(), alice)
    assert out.space.role_of(ALICE) is Role.LISTENER


def test_join_following_with_invitation_even_if_not_followed():
    s = stage(live(Visibility.FOLLOWING), invited={ALICE: Role.LISTENER})
    assert ok(s, Join(), alice).space.role_of(ALICE) is Role.LISTENER


@pytest.mark.parametrize("vis", [Visibility.FOLLOWING, Visibility.INVITED])
def test_moderator_bypasses_visibility(vis):
    out = ok(live(vis), Join(), mod)
    assert out.space.role_of(MOD) is Role.LISTENER


def test_invited_as_speaker_takes_a_slot():
    s = stage(live(Visibility.INVITED), invited={ALICE: Role.SPEAKER})
    out = ok(s, Join(), alice)
    assert out.space.role_of(ALICE) is Role.SPEAKER
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard]
    assert "speaker" in out.reply
    # the invitation is used: coming back later is as a listener
    assert out.space.invited[ALICE] is Role.LISTENER


def test_invited_as_speaker_joins_as_listener_when_full():
    s = stage(full_space(), invited={BOB: Role.SPEAKER})
    out = ok(s, Join(), bob)
    assert out.space.role_of(BOB) is Role.LISTENER
    assert len(out.space.speakers) == 11
    assert kinds(out) == [fx.UpdateCard]
    assert "full" in out.reply and "!space request" in out.reply
    assert out.space.invited[BOB] is Role.LISTENER


def test_join_scheduled_refused():
    refused(scheduled(), Join(), alice, "scheduled", "2030-05-17 18:30", f"!space remind {SID}")


def test_join_removed_refused_even_for_moderators():
    s = replace(live(Visibility.EVERYONE), removed=frozenset({ALICE, MOD}))
    refused(s, Join(), alice, "removed", "cannot rejoin")
    refused(s, Join(), mod, "removed")


def test_banned_cannot_join():
    refused(live(), Join(), Actor(ALICE, banned=True), "banned")


# ---------------------------------------------------------------- leave


def test_listener_leaves():
    s = stage(live(), listeners=[ALICE])
    out = ok(s, Leave(), alice)
    assert ALICE not in out.space.people
    assert kinds(out) == [fx.UpdateCard]
    assert "left" in out.reply


def test_speaker_leaves_frees_the_slot():
    s = stage(live(), speakers=[ALICE])
    out = ok(s, Leave(), alice)
    assert ALICE not in out.space.people
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard]


def test_leaving_with_raised_hand_closes_it():
    s = stage(live(), requests=[ALICE, BOB])
    out = ok(s, Leave(), alice)
    assert out.space.requests == (BOB,)
    assert kinds(out) == [fx.UpdateCard, fx.HandClosed]
    assert one(out, fx.HandClosed).user_id == ALICE


def test_host_cannot_leave():
    refused(live(), Leave(), host, "host", f"!space end {SID}")


def test_leave_when_not_in_refused():
    refused(live(), Leave(), alice, "not in")


def test_banned_may_still_leave():
    s = stage(live(), listeners=[ALICE])
    out = ok(s, Leave(), Actor(ALICE, banned=True))
    assert ALICE not in out.space.people


# ---------------------------------------------------------------- raise / lower


def test_raise_hand():
    s = stage(live(), listeners=[ALICE, BOB])
    s = ok(s, RaiseHand(), alice).space
    out = ok(s, RaiseHand(), bob)
    assert out.space.requests == (ALICE, BOB)  # oldest first
    assert kinds(out) == [fx.AskToSpeak]
    assert one(out, fx.AskToSpeak).user_id == BOB
    assert "raised" in out.reply
    assert out.space.role_of(BOB) is Role.LISTENER


def test_raise_hand_needs_joining():
    refused(live(), RaiseHand(), alice, "Join", f"!space join {SID}")


@pytest.mark.parametrize("who,actor", [(HOST, host), (ALICE, alice)])
def test_raise_hand_when_already_speaking_refused(who, actor):
    s = stage(live(), speakers=[ALICE])
    refused(s, RaiseHand(), actor, "already speak")


def test_raise_hand_twice_refused():
    s = stage(live(), requests=[ALICE])
    refused(s, RaiseHand(), alice, "already raised", "!space lower")


def test_lower_hand():
    s = stage(live(), requests=[ALICE, BOB])
    out = ok(s, LowerHand(), alice)
    assert out.space.requests == (BOB,)
    assert out.space.role_of(ALICE) is Role.LISTENER
    assert kinds(out) == [fx.HandClosed]
    assert one(out, fx.HandClosed).user_id == ALICE


def test_lower_hand_not_raised_refused():
    refused(stage(live(), listeners=[ALICE]), LowerHand(), alice, "not raised")


# ---------------------------------------------------------------- approve


def test_host_approves():
    s = stage(live(), requests=[ALICE, BOB])
    out = ok(s, Approve(ALICE), host)
    assert out.space.role_of(ALICE) is Role.SPEAKER
    assert out.space.requests == (BOB,)
    assert kinds(out) == [fx.HandClosed, fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]
    assert one(out, fx.HandClosed).user_id == ALICE
    assert ALICE in one(out, fx.Announce).text and HOST in one(out, fx.Announce).text
    audit = one(out, fx.Audit)
    assert (audit.actor, audit.action, audit.target) == (HOST, "speaker.approve", ALICE)
    assert ALICE in out.reply


def test_cohost_approves():
    s = stage(live(), cohosts=[CAROL], requests=[ALICE])
    assert ok(s, Approve(ALICE), carol).space.role_of(ALICE) is Role.SPEAKER


@pytest.mark.parametrize("actor", [bob, dave, mod])
def test_approve_needs_host_or_cohost(actor):
    s = stage(live(), speakers=[BOB], listeners=[DAVE], requests=[ALICE])
    refused(s, Approve(ALICE), actor, "host or a co-host")


def test_approve_needs_a_raised_hand():
    s = stage(live(), listeners=[ALICE])
    refused(s, Approve(ALICE), host, "has not asked", f"!space invite {ALICE}")
    refused(s, Approve(BOB), host, "has not asked")


def test_approve_the_eleventh_speaker():
    speakers = [f"@s{i}:example.org" for i in range(9)]
    s = stage(live(), speakers=speakers, requests=[ALICE])
    out = ok(s, Approve(ALICE), host)
    assert len(out.space.speakers) == 11


def test_approve_twelfth_speaker_refused():
    s = full_space()
    assert len(s.speakers) == 11
    msg = refused(s, Approve(ALICE), host, "11", "!space revoke")
    assert "speakers" in msg


def test_approve_at_limit_counts_cohosts():
    s = stage(live(), speakers=[BOB], cohosts=[CAROL], requests=[ALICE])
    refused(s, Approve(ALICE), host, "3", limits=Limits(max_speakers=3))


# ---------------------------------------------------------------- deny


def test_deny_removes_request_and_dms_target():
    s = stage(live(), requests=[ALICE, BOB])
    out = ok(s, Deny(ALICE), host)
    assert out.space.requests == (BOB,)
    assert out.space.role_of(ALICE) is Role.LISTENER
    assert kinds(out) == [fx.HandClosed, fx.HandDeclined, fx.DirectMessage, fx.Audit]
    dm = one(out, fx.DirectMessage)
    assert dm.user_id == ALICE
    assert "declined" in dm.text and "Friday music chat" in dm.text
    assert one(out, fx.Audit).action == "speaker.deny"
    assert ALICE in out.reply


def test_cohost_denies():
    s = stage(live(), cohosts=[CAROL], requests=[ALICE])
    assert ok(s, Deny(ALICE), carol).space.requests == ()


def test_deny_by_listener_refused():
    s = stage(live(), requests=[ALICE, BOB])
    refused(s, Deny(ALICE), bob, "host or a co-host")


def test_deny_without_hand_refused():
    refused(stage(live(), listeners=[ALICE]), Deny(ALICE), host, "no raised hand")


# ---------------------------------------------------------------- revoke


def test_host_revokes_speaker():
    s = stage(live(), speakers=[ALICE])
    out = ok(s, Revoke(ALICE), host)
    assert out.space.role_of(ALICE) is Role.LISTENER
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]
    assert one(out, fx.Audit).target == ALICE
    assert ALICE in one(out, fx.Announce).text


def test_cohost_revokes_speaker():
    s = stage(live(), speakers=[ALICE], cohosts=[CAROL])
    assert ok(s, Revoke(ALICE), carol).space.role_of(ALICE) is Role.LISTENER


@pytest.mark.parametrize("actor", [host, carol])
def test_host_cannot_be_revoked(actor):
    s = stage(live(), cohosts=[CAROL])
    refused(s, Revoke(HOST), actor, "host cannot be revoked")


def test_cohost_revokable_only_by_host():
    s = stage(live(), cohosts=[CAROL, DAVE])
    refused(s, Revoke(DAVE), carol, "co-host", "only the host")
    out = ok(s, Revoke(DAVE), host)
    assert out.space.role_of(DAVE) is Role.LISTENER


def test_listener_not_revokable():
    s = stage(live(), listeners=[ALICE])
    refused(s, Revoke(ALICE), host, "not a speaker")
    refused(s, Revoke(BOB), host, "not a speaker")


def test_revoke_by_speaker_refused():
    s = stage(live(), speakers=[ALICE, BOB])
    refused(s, Revoke(BOB), alice, "host or a co-host")


# ---------------------------------------------------------------- invite


def test_invite_absent_user_as_listener():
    out = ok(live(Visibility.INVITED), Invite(ALICE), host)
    assert out.space.invited[ALICE] is Role.LISTENER
    assert ALICE not in out.space.people
    assert kinds(out) == [fx.InviteToRoom, fx.Audit]
    inv = one(out, fx.InviteToRoom)
    assert (inv.user_id, inv.role) == (ALICE, "listener")
    assert one(out, fx.Audit).action == "space.invite"
    # and now they may join the invited-only space
    assert ok(out.space, Join(), alice).space.role_of(ALICE) is Role.LISTENER


def test_invite_absent_user_as_speaker():
    out = ok(live(), Invite(ALICE, Role.SPEAKER), host)
    assert out.space.invited[ALICE] is Role.SPEAKER
    assert one(out, fx.InviteToRoom).role == "speaker"


def test_invite_as_speaker_when_full_refused():
    refused(full_space(), Invite(BOB, Role.SPEAKER), host, "11")


def test_invite_present_listener_as_speaker_brings_them_up():
    s = stage(live(), requests=[ALICE], listeners=[BOB])
    out = ok(s, Invite(ALICE, Role.SPEAKER), host)
    assert out.space.role_of(ALICE) is Role.SPEAKER
    assert out.space.requests == ()
    assert kinds(out) == [fx.HandClosed, fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]
    out = ok(s, Invite(BOB, Role.SPEAKER), host)
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]


def test_invite_present_listener_as_speaker_when_full_refused():
    refused(full_space(), Invite(ALICE, Role.SPEAKER), host, "11")


def test_invite_present_person_refused():
    s = stage(live(), speakers=[ALICE], listeners=[BOB])
    refused(s, Invite(ALICE, Role.SPEAKER), host, "already")
    refused(s, Invite(BOB, Role.LISTENER), host, "already")
    refused(s, Invite(HOST), host, "already")


@pytest.mark.parametrize("role", [Role.COHOST, Role.HOST])
def test_invite_with_other_role_refused(role):
    refused(live(), Invite(ALICE, role), host, "as=listener", "as=speaker")


def test_invite_removed_refused():
    s = replace(live(), removed=frozenset({ALICE}))
    refused(s, Invite(ALICE), host, "removed")


def test_cohost_may_invite_but_listener_may_not():
    s = stage(live(), cohosts=[CAROL], listeners=[BOB])
    assert ALICE in ok(s, Invite(ALICE), carol).space.invited
    refused(s, Invite(ALICE), bob, "host or a co-host")


def test_invite_before_start_host_only():
    s = scheduled(Visibility.INVITED)
    out = ok(s, Invite(ALICE, Role.SPEAKER), host)
    assert out.space.invited[ALICE] is Role.SPEAKER
    refused(s, Invite(ALICE), alice, "Only the host")
    refused(s, Invite(ALICE), mod, "Only the host")
    s = ok(out.space, GoLive(), host).space
    assert ok(s, Join(), alice).space.role_of(ALICE) is Role.SPEAKER


# ---------------------------------------------------------------- co-hosts


def test_add_cohost_from_speaker():
    s = stage(live(), speakers=[ALICE])
    out = ok(s, AddCohost(ALICE), host)
    assert out.space.role_of(ALICE) is Role.COHOST
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]
    assert one(out, fx.Audit).action == "cohost.add"


def test_add_cohost_from_listener_with_hand():
    s = stage(live(), requests=[ALICE])
    out = ok(s, AddCohost(ALICE), host)
    assert out.space.role_of(ALICE) is Role.COHOST
    assert out.space.requests == ()
    assert kinds(out)[0] is fx.HandClosed


def test_only_host_adds_cohosts():
    s = stage(live(), cohosts=[CAROL], speakers=[ALICE])
    refused(s, AddCohost(ALICE), carol, "Only the host", HOST)
    refused(s, AddCohost(ALICE), mod, "Only the host")


def test_add_cohost_bad_targets():
    s = stage(live(), cohosts=[CAROL])
    refused(s, AddCohost(HOST), host, "host already")
    refused(s, AddCohost(ALICE), host, "not in", "invite them first")
    refused(s, AddCohost(CAROL), host, "already a co-host")


def test_cohost_limit():
    s = stage(live(), cohosts=[CAROL, DAVE], speakers=[ALICE])
    refused(s, AddCohost(ALICE), host, "2", "!space uncohost")
    s1 = stage(live(), speakers=[ALICE])
    refused(s1, AddCohost(ALICE), host, "0", limits=Limits(max_cohosts=0))
    s3 = ok(s, AddCohost(ALICE), host, Limits(max_cohosts=3)).space
    assert len(s3.cohosts) == 3


def test_add_cohost_listener_when_full_refused_speaker_allowed():
    s = full_space()
    refused(s, AddCohost(ALICE), host, "11")
    out = ok(s, AddCohost("@s0:example.org"), host)
    assert len(out.space.speakers) == 11


def test_uncohost_makes_speaker():
    s = stage(live(), cohosts=[CAROL])
    out = ok(s, RemoveCohost(CAROL), host)
    assert out.space.role_of(CAROL) is Role.SPEAKER
    assert kinds(out) == [fx.RolesChanged, fx.UpdateCard, fx.Announce, fx.Audit]
    assert one(out, fx.Audit).action == "cohost.remove"


def test_uncohost_refusals():
    s = stage(live(), cohosts=[CAROL, DAVE], speakers=[ALICE])
    refused(s, RemoveCohost(DAVE), carol, "Only the host")
    refused(s, RemoveCohost(ALICE), host, "not a co-host")
    refused(s, RemoveCohost(HOST), host, "not a co-host")


# ---------------------------------------------------------------- end


def test_host_ends():
    s = stage(live(), speakers=[ALICE], requests=[BOB])
    out = ok(s, End(), host)
    assert out.space.state is State.ENDED
    assert out.space.requests == ()
    assert kinds(out) == [fx.CloseSpace, fx.UpdateCard, fx.Audit]
    assert one(out, fx.CloseSpace).reason == "ended by the host"
    assert one(out, fx.Audit).action == "space.end"
    assert "ended" in out.reply


def test_moderator_ends():
    out = ok(live(), End(), mod)
    assert out.space.state is State.ENDED
    assert MOD in one(out, fx.CloseSpace).reason


@pytest.mark.parametrize("actor", [carol, alice])
def test_end_by_others_refused(actor):
    s = stage(live(), cohosts=[CAROL], listeners=[ALICE])
    refused(s, End(), actor, "Only the host", "moderator")


def test_end_scheduled_refused():
    refused(scheduled(), End(), host, "scheduled")


EVERY_COMMAND = [
    Join(), Leave(), RaiseHand(), LowerHand(), Approve(ALICE), Deny(ALICE), Revoke(ALICE),
    Invite(DAVE), Invite(DAVE, Role.SPEAKER), AddCohost(ALICE), RemoveCohost(CAROL), End(),
    React("👏"), Remove(ALICE), SetCaptions(True), SetRecording(True), GoLive(), Cancel(),
    Reschedule(WHEN),
]


@pytest.mark.parametrize("cmd", EVERY_COMMAND, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("actor", [host, alice, carol, mod, dave], ids=lambda a: a.user_id)
def test_nothing_happens_after_end(cmd, actor):
    s = stage(live(), speakers=[ALICE], cohosts=[CAROL], requests=[BOB])
    s = ok(s, End(), host).space
    refused(s, cmd, actor, "ended", "nothing more")


@pytest.mark.parametrize("cmd", EVERY_COMMAND, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("actor", [host, alice, mod], ids=lambda a: a.user_id)
def test_nothing_happens_after_cancel(cmd, actor):
    s = ok(scheduled(), Cancel(), host).space
    refused(s, cmd, actor, "cancelled", "nothing more")


# ---------------------------------------------------------------- react


VALID = ["👏", "👍🏽", "🇩🇪", "❤️", "👨‍👩‍👧", "😂", "🔥", "✅", "👩🏻‍❤️‍💋‍👩🏼"]
SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
INVALID = ["abc", "", ":)", " ", "👍 abc", "a👍", "1", "\u200d", "\ufe0f", "👏" * 17, "👍👍", "^👍",
           "🇩", "👍\u200d", "1\u20e3x"]


@pytest.mark.parametrize("key", VALID)
def test_react_with_emoji(key):
    assert is_reaction_key(key)
    s = stage(live(), listeners=[ALICE])
    out = ok(s, React(key), alice)
    assert out.space == s
    assert kinds(out) == [fx.ReactionAdded]
    r = one(out, fx.ReactionAdded)
    assert (r.user_id, r.key) == (ALICE, key)
    assert key in out.reply


def test_host_reacts():
    assert one(ok(live(), React("👏"), host), fx.ReactionAdded).user_id == HOST


@pytest.mark.parametrize("key", INVALID)
def test_react_with_non_emoji_refused(key):
    assert not is_reaction_key(key)
    s = stage(live(), listeners=[ALICE])
    refused(s, React(key), alice, "not an emoji", "!space react")


@pytest.mark.parametrize("key", ["1️⃣", "#️⃣", "*⃣", SCOTLAND])
def test_react_keycap_and_subdivision_flags(key):
    assert is_reaction_key(key)


def test_react_needs_joining():
    refused(live(), React("👏"), alice, "Join")


def test_react_on_scheduled_refused():
    refused(scheduled(), React("👏"), host, "scheduled")


# ---------------------------------------------------------------- remove (moderation)


def test_moderator_removes_speaker_for_good():
    s = stage(live(), speakers=[ALICE], invited={ALICE: Role.SPEAKER})
    out = ok(s, Remove(ALICE), mod)
    assert ALICE not in out.space.people
    assert ALICE in out.space.removed
    assert ALICE not in out.space.invited
    assert kinds(out) == [fx.RolesChanged, fx.Kick, fx.UpdateCard, fx.Audit]
    kick = one(out, fx.Kick)
    assert kick.user_id == ALICE and MOD in kick.reason
    assert one(out, fx.Audit).action == "mod.remove"
    refused(out.space, Join(), alice, "removed", "cannot rejoin")
    refused(out.space, Invite(ALICE), host, "removed")


def test_remove_with_reason_and_raised_hand():
    s = stage(live(), requests=[ALICE])
    out = ok(s, Remove(ALICE, "spam"), mod)
    assert out.space.requests == ()
    assert kinds(out) == [fx.HandClosed, fx.Kick, fx.UpdateCard, fx.Audit]
    assert one(out, fx.Kick).reason == "spam"


def test_remove_someone_not_present_keeps_them_out():
    out = ok(live(), Remove(ALICE), mod)
    assert ALICE in out.space.removed
    refused(out.space, Join(), alice, "removed")


@pytest.mark.parametrize("actor", [host, carol, alice])
def test_remove_needs_moderator(actor):
    s = stage(live(), cohosts=[CAROL], listeners=[ALICE, BOB])
    refused(s, Remove(BOB), actor, "Only moderators")


def test_moderator_cannot_remove_host():
    refused(live(), Remove(HOST), mod, "hosts this space", f"!mod end {SID}")


def test_remove_twice_refused():
    s = ok(live(), Remove(ALICE), mod).space
    refused(s, Remove(ALICE), mod, "already been removed")


# ---------------------------------------------------------------- captions / recording


@pytest.mark.parametrize("actor", [host, carol])
def test_captions_on_off(actor):
    s = stage(live(), cohosts=[CAROL])
    out = ok(s, SetCaptions(True), actor)
    assert out.space.captions is True
    assert kinds(out) == [fx.StageOptions, fx.Announce, fx.Audit]
    opt = one(out, fx.StageOptions)
    assert (opt.captions, opt.recording) == (True, None)
    assert out.reply == "Captions are on."
    assert one(out, fx.Announce).text == "Captions are on."
    out = ok(out.space, SetCaptions(False), actor)
    assert out.space.captions is False
    assert one(out, fx.StageOptions).captions is False


def test_captions_permission_and_repeat():
    s = stage(live(), speakers=[ALICE])
    refused(s, SetCaptions(True), alice, "host or a co-host")
    refused(s, SetCaptions(False), host, "already off")
    refused(live(captions=True), SetCaptions(True), host, "already on")


def test_recording_on_off():
    out = ok(live(), SetRecording(True), host)
    assert out.space.recording is True
    opt = one(out, fx.StageOptions)
    assert (opt.captions, opt.recording) == (None, True)
    assert out.reply == "Recording is on."
    off = ok(out.space, SetRecording(False), host)
    assert off.space.recording is False and off.reply == "Recording is off."


def test_recording_host_only_and_repeat():
    s = stage(live(), cohosts=[CAROL])
    refused(s, SetRecording(True), carol, "Only the host")
    refused(s, SetRecording(True), mod, "Only the host")
    refused(s, SetRecording(False), host, "already off")


# ---------------------------------------------------------------- scheduled spaces


def test_go_live():
    s = scheduled()
    out = ok(s, GoLive(), host)
    assert out.space.state is State.LIVE
    assert dict(out.space.people) == {HOST: Role.HOST}
    assert kinds(out) == [fx.CancelReminders, fx.CreateRoom, fx.OpenStage, fx.RolesChanged,
                          fx.UpdateCard, fx.NotifyFollowers, fx.Audit]
    assert "live" in out.reply


def test_go_live_rechecks_hosting_gate():
    s = scheduled()
    refused(s, GoLive(), Actor(HOST, followers=12), "600", "12")
    refused(s, GoLive(), Actor(HOST, followers=10_000, host_override="deny"), "moderator")
    refused(s, GoLive(), Actor(HOST, followers=10_000, banned=True), "banned")
    ok(s, GoLive(), Actor(HOST, followers=0, host_override="allow"))


def test_go_live_by_others_refused():
    refused(scheduled(), GoLive(), mod, "Only the host")
    refused(scheduled(), GoLive(), alice, "Only the host")


def test_go_live_when_live_refused():
    refused(live(), GoLive(), host, "live", "scheduled")


@pytest.mark.parametrize("actor", [host, mod])
def test_cancel(actor):
    out = ok(scheduled(), Cancel(), actor)
    assert out.space.state is State.CANCELLED
    assert kinds(out) == [fx.CancelReminders, fx.UpdateCard, fx.Audit]
    assert "Cancelled" in out.reply


def test_cancel_refusals():
    refused(scheduled(), Cancel(), alice, "Only the host", "moderator")
    refused(live(), Cancel(), host, "live")


def test_reschedule():
    later = datetime(2030, 5, 20, 9, 0, tzinfo=UTC)
    out = ok(scheduled(), Reschedule(later), host)
    assert out.space.scheduled_for == later
    assert out.space.state is State.SCHEDULED
    assert kinds(out) == [fx.ScheduleReminders, fx.UpdateCard, fx.Audit]
    assert one(out, fx.Audit).detail == later.isoformat()


def test_reschedule_refusals():
    refused(scheduled(), Reschedule(WHEN), mod, "Only the host")
    refused(live(), Reschedule(WHEN), host, "live")


def test_live_only_commands_refused_while_scheduled():
    s = scheduled()
    for cmd in (Leave(), RaiseHand(), LowerHand(), Approve(ALICE), Deny(ALICE), Revoke(ALICE),
                AddCohost(ALICE), RemoveCohost(ALICE), End(), React("👏"), Remove(ALICE),
                SetCaptions(True), SetRecording(True)):
        refused(s, cmd, host, "scheduled", "!space remind")


# ---------------------------------------------------------------- banned actors


@pytest.mark.parametrize("cmd", [c for c in EVERY_COMMAND if not isinstance(c, Leave)],
                         ids=lambda c: type(c).__name__)
def test_banned_actor_refused(cmd):
    s = stage(live(), listeners=[ALICE], requests=[BOB])
    refused(s, cmd, Actor(HOST, followers=1000, banned=True), "banned")


def test_the_rules_and_the_bridge_spell_the_roles_alike():
    from bot.core.model import SPEAKING_ROLES
    from bridge.roles import AUDIO_ROLES, ROLES

    assert {role.value for role in Role} == ROLES
    assert {role.value for role in SPEAKING_ROLES} == AUDIO_ROLES
