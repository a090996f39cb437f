"""Property tests of the rules of a space: random people, limits and command sequences.

A pool of eight people (one host, moderators, people the host follows, now and then a
banned one) sends random commands (every Command in rules.py) to one space. Each step is
applied with ``rules.apply``; a refusal must leave the space as it was, and after every
step the invariants below must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.core import effects as fx
from bot.core import rules
from bot.core.model import (
    FINISHED,
    SPEAKING_ROLES,
    Actor,
    Limits,
    Role,
    Space,
    State,
    Visibility,
)
from bot.core.rules import Refused

SID = "!space-under-test"
HOST = "@host:x"
POOL = [HOST, "@mod1:x", "@mod2:x", "@a:x", "@b:x", "@c:x", "@d:x", "@e:x"]
OTHERS = POOL[1:]

VALID_KEYS = ["👏", "👍🏽", "🇩🇪", "❤️", "👨‍👩‍👧", "🔥"]
INVALID_KEYS = ["abc", "", ":)", " ", "👍 x", "x"]
KEYS = st.one_of(st.sampled_from(VALID_KEYS), st.sampled_from(INVALID_KEYS), st.text(max_size=3))
WHENS = st.datetimes(min_value=datetime(2030, 1, 1), max_value=datetime(2031, 1, 1),
                     timezones=st.just(UTC))

# How often each command comes up (End and Cancel rarely, so sequences stay long).
KIND_WEIGHTS = {
    rules.Join: 16, rules.Leave: 3, rules.RaiseHand: 10, rules.LowerHand: 2, rules.Approve: 10,
    rules.Deny: 4, rules.Revoke: 5, rules.Invite: 8, rules.AddCohost: 6, rules.RemoveCohost: 4,
    rules.End: 1, rules.React: 4, rules.Remove: 2, rules.SetCaptions: 2,
    rules.SetRecording: 2, rules.GoLive: 6, rules.Cancel: 1, rules.Reschedule: 2,
}
assert set(KIND_WEIGHTS) == set(rules._HANDLERS), "every command must be generated"
KINDS = [k for k, n in KIND_WEIGHTS.items() for _ in range(n)]
TARGETED = (rules.Approve, rules.Deny, rules.Revoke, rules.Invite, rules.AddCohost,
            rules.RemoveCohost, rules.Remove)


@dataclass(frozen=True)
class World:
    limits: Limits
    actors: dict[str, Actor]
    space: Space


def clone(space: Space) -> Space:
    return replace(
        space,
        people=MappingProxyType(dict(space.people)),
        invited=MappingProxyType(dict(space.invited)),
        requests=tuple(space.requests),
        removed=frozenset(space.removed),
    )


@st.composite
def worlds(draw) -> World:
    limits = Limits(
        min_followers=draw(st.integers(0, 20)),
        max_speakers=draw(st.integers(1, 5)),
        max_cohosts=draw(st.integers(0, 3)),
    )
    rare = st.sampled_from([False] * 19 + [True])
    actors = {
        HOST: Actor(
            HOST,
            is_moderator=draw(rare),
            banned=draw(rare),
            followers=draw(st.integers(0, 30)),
            host_override=draw(st.sampled_from([None, None, "allow", "deny"])),
        )
    }
    for user in OTHERS:
        actors[user] = Actor(
            user,
            is_moderator=user.startswith("@mod") or draw(rare),
            banned=draw(rare),
            followers=draw(st.integers(0, 30)),
            followed_by_host=draw(st.booleans()),
        )
    visibility = draw(st.sampled_from([Visibility.EVERYONE, *Visibility]))
    when = draw(st.one_of(st.none(), st.none(), st.none(), WHENS))
    # The space was started when the host could host; their facts may differ now.
    starter = Actor(HOST, host_override="allow")
    space = rules.start_space(SID, starter, "Property test", visibility, limits,
                              scheduled_for=when).space
    return World(limits, actors, space)


def draw_step(data, space: Space, actors: dict[str, Actor]):
    """One random (actor, command); actor and target are often the people it is about."""
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    people = list(space.people)
    managers = [u for u, r in space.people.items() if r in (Role.HOST, Role.COHOST)]
    mods = [u for u, a in actors.items() if a.is_moderator]
    who_st = st.sampled_from(POOL)
    likely = {
        rules.Join: [u for u in POOL if u not in space.people],
        rules.Leave: [u for u in people if u != space.host],
        rules.RaiseHand: space.listeners, rules.LowerHand: list(space.requests),
        rules.React: people, rules.Remove: mods, rules.End: [HOST] + mods,
        rules.Cancel: [HOST] + mods,
    }.get(kind, managers if kind in (rules.Approve, rules.Deny, rules.Revoke, rules.Invite,
                                     rules.SetCaptions) else [HOST])
    if likely:
        who_st = st.one_of(st.sampled_from(likely), st.sampled_from(likely), who_st)
    who = data.draw(who_st, label="actor")
    guests = [u for u in people if u != space.host]
    relevant = {
        rules.Approve: list(space.requests), rules.Deny: list(space.requests),
        rules.Revoke: [u for u in space.speakers if u != space.host],
        rules.AddCohost: guests, rules.RemoveCohost: space.cohosts,
        rules.Remove: guests + sorted(space.removed),
        rules.Invite: [u for u in POOL if u not in space.people] + space.listeners
        + sorted(space.removed),
    }.get(kind, [])
    target_st = st.sampled_from(POOL)
    if relevant:
        target_st = st.one_of(st.sampled_from(relevant), st.sampled_from(relevant), target_st)
    if kind in TARGETED:
        target = data.draw(target_st, label="target")
        if kind is rules.Invite:
            role = data.draw(st.sampled_from([Role.LISTENER, Role.SPEAKER, Role.SPEAKER,
                                              Role.COHOST, Role.HOST]), label="role")
            cmd = rules.Invite(target, role)
        elif kind is rules.Remove:
            cmd = rules.Remove(target, data.draw(st.sampled_from(["", "spam"]), label="reason"))
        else:
            cmd = kind(target)
    elif kind is rules.React:
        cmd = rules.React(data.draw(KEYS, label="key"))
    elif kind in (rules.SetCaptions, rules.SetRecording):
        cmd = kind(data.draw(st.booleans(), label="on"))
    elif kind is rules.Reschedule:
        cmd = rules.Reschedule(data.draw(WHENS, label="when"))
    else:
        cmd = kind()
    return actors[who], cmd


def every_command() -> list[rules.Command]:
    t = POOL[3]
    return [
        rules.Join(), rules.Leave(), rules.RaiseHand(), rules.LowerHand(), rules.Approve(t),
        rules.Deny(t), rules.Revoke(t), rules.Invite(t), rules.Invite(t, Role.SPEAKER),
        rules.AddCohost(t), rules.RemoveCohost(t), rules.End(), rules.React("👏"),
        rules.Remove(t), rules.SetCaptions(True), rules.SetCaptions(False),
        rules.SetRecording(True), rules.SetRecording(False), rules.GoLive(), rules.Cancel(),
        rules.Reschedule(datetime(2030, 6, 1, tzinfo=UTC)),
    ]


# ---------------------------------------------------------------- invariants


def stage_roles(space: Space) -> dict[str, Role]:
    return {u: r for u, r in space.people.items() if r in SPEAKING_ROLES}


def check_space(space: Space, limits: Limits) -> None:
    assert len(space.speakers) <= limits.max_speakers, space
    assert len(space.cohosts) <= limits.max_cohosts, space
    hosts = [u for u, r in space.people.items() if r is Role.HOST]
    if space.state is State.LIVE:
        assert hosts == [space.host], space
    else:
        assert hosts in ([], [space.host]), space
    if space.state is State.SCHEDULED:
        assert not space.people, "nobody is in a space before it starts"
    assert len(set(space.requests)) == len(space.requests), "one raised hand per person"
    for user in space.requests:
        assert space.people.get(user) is Role.LISTENER, (user, space)
    if space.state is not State.LIVE:
        assert space.requests == ()
    assert not (space.removed & set(space.people)), "removed users are never present"
    assert not (space.removed & set(space.invited)), "removed users keep no invitation"
    assert space.host not in space.removed
    assert set(space.invited.values()) <= {Role.LISTENER, Role.SPEAKER}


def check_step(before: Space, cmd: rules.Command, actor: Actor, out: rules.Outcome,
               limits: Limits) -> None:
    after = out.space
    assert isinstance(out.reply, str) and out.reply
    assert all(isinstance(e, fx.Effect) for e in out.effects)
    assert {e.space_id for e in out.effects} <= {before.id}, out.effects
    assert (after.id, after.host, after.title, after.visibility) == (
        before.id, before.host, before.title, before.visibility)
    assert before.state not in FINISHED, "nothing may happen in a finished space"
    assert (before.state, after.state) in {
        (State.LIVE, State.LIVE), (State.LIVE, State.ENDED), (State.SCHEDULED, State.SCHEDULED),
        (State.SCHEDULED, State.LIVE), (State.SCHEDULED, State.CANCELLED),
    }, (before.state, after.state)
    assert before.removed <= after.removed, "a removal is for good"
    assert not actor.banned or isinstance(cmd, rules.Leave), "banned people only leave"

    kinds = [type(e) for e in out.effects]
    if stage_roles(before) != stage_roles(after):
        assert fx.RolesChanged in kinds, ("roles changed without RolesChanged", cmd, kinds)
    if fx.RolesChanged in kinds:
        assert stage_roles(before) != stage_roles(after), ("RolesChanged for nothing", cmd)
    closed = {e.user_id for e in out.effects if isinstance(e, fx.HandClosed)}
    asked = {e.user_id for e in out.effects if isinstance(e, fx.AskToSpeak)}
    gone = set(before.requests) - set(after.requests)
    if not isinstance(cmd, rules.End):  # CloseSpace closes all hands at once
        assert closed == gone, ("hands closed", cmd, closed, gone)
    assert asked == set(after.requests) - set(before.requests)
    if before.people != after.people:
        assert fx.UpdateCard in kinds, ("people changed, card not updated", cmd)

    me = actor.user_id
    match cmd:
        case rules.Join():
            assert me not in before.people and after.people.get(me) is not None
            assert me not in before.removed
            invitation = before.invited.get(me)
            if invitation is None and not actor.is_moderator:
                assert before.visibility is Visibility.EVERYONE or (
                    before.visibility is Visibility.FOLLOWING and actor.followed_by_host)
            if after.people[me] is Role.SPEAKER:
                assert invitation is Role.SPEAKER
            else:
                assert after.people[me] is Role.LISTENER
        case rules.Leave():
            assert me != before.host and me not in after.people
        case rules.RaiseHand():
            assert after.requests == before.requests + (me,)
        case rules.Approve(target=t):
            assert t in before.requests and after.people[t] is Role.SPEAKER
            assert before.people.get(me) in (Role.HOST, Role.COHOST)
        case rules.Deny(target=t):
            assert t not in after.requests
            assert after.people.get(t) is Role.LISTENER
            assert any(isinstance(e, fx.DirectMessage) and e.user_id == t for e in out.effects)
        case rules.Revoke(target=t):
            assert after.people.get(t) is Role.LISTENER, "a revoked speaker is a listener"
            assert t != before.host
            if before.people.get(t) is Role.COHOST:
                assert me == before.host
        case rules.AddCohost(target=t):
            assert me == before.host and after.people[t] is Role.COHOST
        case rules.RemoveCohost(target=t):
            assert me == before.host and after.people[t] is Role.SPEAKER
        case rules.End():
            assert after.state is State.ENDED, "End ends the space"
            assert me == before.host or actor.is_moderator
        case rules.Cancel():
            assert after.state is State.CANCELLED, "Cancel cancels the space"
            assert me == before.host or actor.is_moderator
        case rules.GoLive():
            assert me == before.host and rules.hosting_refusal(actor, limits) is None
        case rules.React(key=k):
            assert after == before and rules.is_reaction_key(k) and me in before.people
        case rules.Remove(target=t):
            assert actor.is_moderator and t != before.host
            assert t in after.removed and t not in after.people
        case rules.SetRecording() | rules.Reschedule():
            assert me == before.host


def check_finished_refuses_everything(space: Space, actors: dict[str, Actor],
                                      limits: Limits) -> None:
    for actor in actors.values():
        for cmd in every_command():
            before = clone(space)
            try:
                rules.apply(space, cmd, actor, limits)
            except Refused:
                assert space == before
            else:
                raise AssertionError(f"{cmd} by {actor.user_id} worked in a {space.state} space")


# ---------------------------------------------------------------- the property


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), data=st.data(),
       n_steps=st.one_of(st.integers(0, 60), st.integers(40, 60)))
def test_random_command_sequences_keep_the_invariants(world: World, data, n_steps: int):
    space, limits, actors = world.space, world.limits, world.actors
    check_space(space, limits)
    after_finish = 0
    for _ in range(n_steps):
        if space.state in FINISHED:
            after_finish += 1
            if after_finish > 3:  # the sweep below tries everything on a finished space
                break
        actor, cmd = draw_step(data, space, actors)
        before = clone(space)
        try:
            out = rules.apply(space, cmd, actor, limits)
        except Refused as exc:
            event(f"refused {type(cmd).__name__}")
            assert space == before, "a refused command changes nothing"
            assert str(exc), "a refusal says why"
            continue
        event(f"ok {type(cmd).__name__}")
        check_step(before, cmd, actor, out, limits)
        space = out.space
        check_space(space, limits)
    if space.state in FINISHED:
        check_finished_refuses_everything(space, actors, limits)
    event(f"final state {space.state.value}")
    event(f"speakers at the limit: {len(space.speakers) == limits.max_speakers}")


@settings(max_examples=200, deadline=None)
@given(key=st.text(max_size=20))
def test_reaction_key_check_never_crashes(key: str):
    ok = rules.is_reaction_key(key)
    assert isinstance(ok, bool)
    if ok:
        assert key and not key.isspace() and len(key) <= 16


@settings(max_examples=200, deadline=None)
@given(
    followers=st.integers(0, 2000),
    minimum=st.integers(0, 2000),
    override=st.sampled_from([None, "allow", "deny"]),
    banned=st.booleans(),
)
def test_hosting_gate(followers: int, minimum: int, override, banned: bool):
    actor = Actor("@h:x", followers=followers, host_override=override, banned=banned)
    limits = Limits(min_followers=minimum)
    may = not banned and override != "deny" and (override == "allow" or followers >= minimum)
    why = rules.hosting_refusal(actor, limits)
    assert (why is None) == may
    if why and not banned and override is None:
        assert str(minimum) in why and str(followers) in why
    try:
        out = rules.start_space("s", actor, "t", Visibility.EVERYONE, limits)
    except Refused as exc:
        assert not may and str(exc) == why
    else:
        assert may and out.space.host == "@h:x"
