"""Reading and writing the bot's tables.

Each method is one short transaction, unless it runs inside :meth:`Store.unit`: then every
method called in the block, on that thread, shares the unit's one transaction (a command's
load, decision and save; bot/db/database.py runs units off the event loop). The methods
that catch an IntegrityError (a duplicate is their answer) need a transaction of their
own and refuse to run inside a unit.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, col, delete, select, update

from bot.core.model import Actor, Role, Space, State, Visibility, _frozen

from . import models as m
from .engine import session_scope

SPACE_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_space_id() -> str:
    return "".join(secrets.choice(SPACE_ID_ALPHABET) for _ in range(6))


@dataclass
class SpaceRecord:
    """A space as the rules see it, plus what only the adapters need."""

    space: Space
    row: m.Space


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    # ------------------------------------------------------------ transactions

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One transaction for every method called in the block on this thread: committed
        when the block ends, rolled back (all of it) on error. A unit inside a unit is
        part of the outer one."""
        if self._ambient() is not None:
            yield
            return
        with session_scope(self.engine) as s:
            self._local.session = s
            try:
                yield
            finally:
                self._local.session = None

    def in_unit(self) -> bool:
        return self._ambient() is not None

    def _ambient(self) -> Session | None:
        return getattr(self._local, "session", None)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """The unit's session, or a transaction of this call's own."""
        ambient = self._ambient()
        if ambient is not None:
            yield ambient
            return
        with session_scope(self.engine) as s:
            yield s

    def _own_tx(self, what: str):
        """A transaction of its own, for a method whose answer is an IntegrityError."""
        if self._ambient() is not None:
            raise RuntimeError(f"Store.{what} needs a transaction of its own; it cannot run inside a unit")
        return session_scope(self.engine)

    # ------------------------------------------------------------ key/value + events

    def get_state(self, key: str) -> str | None:
        with self._tx() as s:
            row = s.get(m.SyncState, key)
            return row.value if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._tx() as s:
            row = s.get(m.SyncState, key)
            if row is None:
                s.add(m.SyncState(key=key, value=value))
            else:
                row.value = value

    def claim_event(self, event_id: str, command_room: str | None = None) -> bool:
        """Record that we act on ``event_id``; False if it was acted on before.

        A command (``command_room`` given) is claimed unfinished until :meth:`finish_event`;
        one left unfinished by a crash is found by :meth:`unfinished_commands`."""
        try:
            with self._own_tx("claim_event") as s:
                s.add(m.HandledEvent(event_id=event_id, done=command_room is None, room_id=command_room))
            return True
        except IntegrityError:
            return False

    def finish_event(self, event_id: str) -> None:
        with self._tx() as s:
            row = s.get(m.HandledEvent, event_id)
            if row is not None:
                row.done = True

    def unfinished_commands(self) -> list[tuple[str, str]]:
        """(event id, room id) of commands claimed but never finished: cut off by a crash."""
        with self._tx() as s:
            rows = s.exec(select(m.HandledEvent).where(m.HandledEvent.done == False)  # noqa: E712
                          .order_by(m.HandledEvent.handled_at)).all()
            return [(r.event_id, r.room_id or "") for r in rows]

    def prune_handled(self, older_than: datetime) -> int:
        """Forget handled event ids older than ``older_than`` (no sync returns them again)."""
        with self._tx() as s:
            res = s.exec(delete(m.HandledEvent).where(m.HandledEvent.handled_at < older_than))
            return res.rowcount or 0

    def record_join(self, room_id: str, ts: int, dm_user_id: str | None = None) -> None:
        with self._tx() as s:
            row = s.get(m.RoomJoin, room_id)
            if row is None:
                s.add(m.RoomJoin(room_id=room_id, joined_ts=ts, dm_user_id=dm_user_id))
            else:
                if ts and (not row.joined_ts or ts > row.joined_ts):
                    row.joined_ts = ts
                if dm_user_id:
                    row.dm_user_id = dm_user_id

    def join_ts(self, room_id: str) -> int | None:
        with self._tx() as s:
            row = s.get(m.RoomJoin, room_id)
            return row.joined_ts if row else None

    def dm_room(self, user_id: str) -> str | None:
        with self._tx() as s:
            row = s.exec(select(m.RoomJoin).where(m.RoomJoin.dm_user_id == user_id)).first()
            return row.room_id if row else None

    # ------------------------------------------------------------ users and follows

    def user(self, user_id: str) -> m.User:
        with self._tx() as s:
            return _user_row(s, user_id)

    def banned_users(self) -> frozenset[str]:
        with self._tx() as s:
            return frozenset(s.exec(select(m.User.user_id).where(m.User.banned)).all())

    def update_user(self, user_id: str, **fields) -> m.User:
        with self._tx() as s:
            row = _user_row(s, user_id)
            for k, v in fields.items():
                setattr(row, k, v)
            return row

    def follow(self, follower: str, followee: str) -> bool:
        try:
            with self._own_tx("follow") as s:
                s.add(m.Follow(follower_id=follower, followee_id=followee))
            return True
        except IntegrityError:
            return False

    def unfollow(self, follower: str, followee: str) -> bool:
        with self._tx() as s:
            res = s.exec(delete(m.Follow).where(
                m.Follow.follower_id == follower, m.Follow.followee_id == followee))
            return res.rowcount > 0

    def follows(self, follower: str, followee: str) -> bool:
        with self._tx() as s:
            return s.get(m.Follow, (follower, followee)) is not None

    def follower_count(self, user_id: str) -> int:
        with self._tx() as s:
            return s.exec(select(func.count()).select_from(m.Follow)
                          .where(m.Follow.followee_id == user_id)).one()

    def following_count(self, user_id: str) -> int:
        with self._tx() as s:
            return s.exec(select(func.count()).select_from(m.Follow)
                          .where(m.Follow.follower_id == user_id)).one()

    def followers(self, user_id: str, limit: int = 10) -> list[str]:
        with self._tx() as s:
            return list(s.exec(select(m.Follow.follower_id).where(m.Follow.followee_id == user_id)
                               .order_by(col(m.Follow.created_at).desc()).limit(limit)))

    def following(self, user_id: str, limit: int = 10) -> list[str]:
        with self._tx() as s:
            return list(s.exec(select(m.Follow.followee_id).where(m.Follow.follower_id == user_id)
                               .order_by(col(m.Follow.created_at).desc()).limit(limit)))

    def followers_to_notify(self, user_id: str) -> list[str]:
        """Followers of ``user_id`` who asked (!notify on) to hear when they go live."""
        with self._tx() as s:
            return list(s.exec(
                select(m.Follow.follower_id).join(m.User, m.User.user_id == m.Follow.follower_id)
                .where(m.Follow.followee_id == user_id, m.User.notify_golive == True)  # noqa: E712
                .order_by(m.Follow.created_at)).all())

    def import_follower_counts(self, counts: dict[str, int]) -> int:
        with self._tx() as s:
            for user_id, n in counts.items():
                row = s.get(m.User, user_id)
                if row is None:
                    s.add(m.User(user_id=user_id, imported_followers=n))
                else:
                    row.imported_followers = n
        return len(counts)

    def actor(self, user_id: str, *, is_moderator: bool, host: str | None = None) -> Actor:
        """The facts about ``user_id`` that the rules need."""
        row = self.user(user_id)
        followers = max(self.follower_count(user_id), row.imported_followers)
        return Actor(
            user_id=user_id, is_moderator=is_moderator, banned=row.banned, followers=followers,
            host_override=row.host_override,
            followed_by_host=bool(host) and self.follows(host, user_id),
        )

    # ------------------------------------------------------------ spaces

    def load_space(self, space_id: str) -> SpaceRecord | None:
        with self._tx() as s:
            row = s.get(m.Space, space_id)
            if row is None:
                return None
            parts = s.exec(select(m.Participant).where(m.Participant.space_id == space_id)).all()
            reqs = s.exec(select(m.SpeakRequest).where(m.SpeakRequest.space_id == space_id)
                          .order_by(m.SpeakRequest.requested_at)).all()
            invs = s.exec(select(m.Invitation).where(m.Invitation.space_id == space_id)).all()
        space = Space(
            id=row.id, host=row.host_id, title=row.title, visibility=Visibility(row.visibility),
            state=State(row.state),
            people=_frozen({p.user_id: Role(p.role) for p in parts if p.status == "present"}),
            requests=tuple(r.user_id for r in reqs),
            invited=_frozen({i.user_id: Role(i.role) for i in invs}),
            removed=frozenset(p.user_id for p in parts if p.status == "removed"),
            scheduled_for=row.scheduled_for, captions=row.captions, recording=row.recording,
        )
        return SpaceRecord(space, row)

    def room_of(self, space_id: str) -> str | None:
        """The room of a space (None: no such space, or no room yet)."""
        with self._tx() as s:
            return s.exec(select(m.Space.room_id).where(m.Space.id == space_id)).first()

    def space_state(self, space_id: str) -> str | None:
        with self._tx() as s:
            return s.exec(select(m.Space.state).where(m.Space.id == space_id)).first()

    def space_by_room(self, room_id: str) -> str | None:
        with self._tx() as s:
            row = s.exec(select(m.Space).where(m.Space.room_id == room_id)).first()
            return row.id if row else None

    def save_space(self, space: Space, **row_fields) -> m.Space:
        """Write ``space`` (and any extra row fields) in one transaction."""
        with self._tx() as s:
            row = s.get(m.Space, space.id)
            if row is None:
                row = m.Space(id=space.id, host_id=space.host, title=space.title,
                              visibility=space.visibility.value, state=space.state.value)
                s.add(row)
            row.title = space.title
            row.visibility = space.visibility.value
            row.state = space.state.value
            row.scheduled_for = space.scheduled_for
            row.captions = space.captions
            row.recording = space.recording
            for k, v in row_fields.items():
                setattr(row, k, v)
            speakers = [u for u, r in space.people.items() if r is not Role.LISTENER]
            seen = speakers_of(row)
            row.speakers_seen = " ".join(seen + [u for u in speakers if u not in seen])
            s.flush()
            existing = {p.user_id: p for p in s.exec(
                select(m.Participant).where(m.Participant.space_id == space.id)).all()}
            for user, role in space.people.items():
                p = existing.get(user)
                if p is None:
                    s.add(m.Participant(space_id=space.id, user_id=user, role=role.value))
                else:
                    p.role, p.status = role.value, "present"
            for user, p in existing.items():
                if user in space.removed:
                    p.status = "removed"
                elif user not in space.people:
                    p.status = "left"
            for user in space.removed - existing.keys():
                s.add(m.Participant(space_id=space.id, user_id=user, role="listener", status="removed"))
            s.exec(delete(m.SpeakRequest).where(m.SpeakRequest.space_id == space.id,
                                                col(m.SpeakRequest.user_id).not_in(space.requests)))
            have = set(s.exec(select(m.SpeakRequest.user_id)
                              .where(m.SpeakRequest.space_id == space.id)).all())
            for user in space.requests:
                if user not in have:
                    s.add(m.SpeakRequest(space_id=space.id, user_id=user))
            s.exec(delete(m.Invitation).where(m.Invitation.space_id == space.id))
            s.flush()
            for user, role in space.invited.items():
                s.add(m.Invitation(space_id=space.id, user_id=user, role=role.value,
                                   invited_by=space.host))
            return row

    def update_space_row(self, space_id: str, **fields) -> None:
        with self._tx() as s:
            row = s.get(m.Space, space_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    def raise_peak_listeners(self, space_id: str, listeners: int) -> None:
        """Keep ``listeners`` as the space's peak if it is more than the peak so far (in one
        statement: two at once cannot lower it)."""
        with self._tx() as s:
            s.exec(update(m.Space).where(m.Space.id == space_id, m.Space.peak_listeners < listeners)
                   .values(peak_listeners=listeners))

    def spaces_in_state(self, *states: State) -> list[m.Space]:
        with self._tx() as s:
            return list(s.exec(select(m.Space).where(
                col(m.Space.state).in_([st.value for st in states]))
                .order_by(m.Space.created_at)).all())

    def live_space_of_host(self, host: str) -> str | None:
        with self._tx() as s:
            row = s.exec(select(m.Space).where(m.Space.host_id == host,
                                               m.Space.state == State.LIVE.value)).first()
            return row.id if row else None

    def spaces_of_participant(self, user_id: str) -> list[str]:
        with self._tx() as s:
            return list(s.exec(
                select(m.Participant.space_id).join(m.Space)
                .where(m.Participant.user_id == user_id, m.Participant.status == "present",
                       m.Space.state == State.LIVE.value)).all())

    # ------------------------------------------------------------ reactions, refs, tips

    def add_reaction(self, space_id: str, user_id: str, key: str) -> None:
        with self._tx() as s:
            s.add(m.Reaction(space_id=space_id, user_id=user_id, key=key))

    def top_reactions(self, space_id: str, n: int = 5) -> list[tuple[str, int]]:
        with self._tx() as s:
            keys = s.exec(select(m.Reaction.key).where(m.Reaction.space_id == space_id)).all()
        return Counter(keys).most_common(n)

    def add_space_file(self, space_id: str, name: str, kind: str, seconds: float | None = None,
                       transcript: str | None = None) -> bool:
        """Keep a recording or transcript of a space; False if it was kept already (the
        bridge says a file again to a bot that restarted before it was posted)."""
        with self._tx() as s:
            if s.get(m.SpaceFile, (space_id, name)) is not None:
                return False
            s.add(m.SpaceFile(space_id=space_id, name=name, kind=kind, seconds=seconds,
                              transcript=transcript))
            return True

    def space_files(self, space_id: str) -> list[m.SpaceFile]:
        with self._tx() as s:
            return list(s.exec(select(m.SpaceFile).where(m.SpaceFile.space_id == space_id)
                               .order_by(m.SpaceFile.created_at, m.SpaceFile.name)).all())

    def spaces_with_pages(self, since: datetime, limit: int) -> list[str]:
        """The spaces whose pages the bridge should have: the scheduled ones (soonest
        first; one whose time passed before ``since`` was never started and is left
        out), then those that ended or were cancelled since ``since``, the newest first;
        at most ``limit``."""
        with self._tx() as s:
            scheduled = s.exec(select(m.Space.id).where(
                (m.Space.state == State.SCHEDULED.value) & (col(m.Space.scheduled_for) >= since))
                .order_by(m.Space.scheduled_for).limit(limit)).all()
            when = func.coalesce(m.Space.ended_at, m.Space.scheduled_for)
            finished = s.exec(select(m.Space.id).where(
                col(m.Space.state).in_([State.ENDED.value, State.CANCELLED.value]) & (when >= since))
                .order_by(when.desc(), m.Space.id).limit(max(0, limit - len(scheduled)))).all()
        return [*scheduled, *finished]

    def add_ref(self, event_id: str, room_id: str, space_id: str, kind: str,
                subject: str | None = None) -> None:
        with self._tx() as s:
            s.merge(m.MessageRef(event_id=event_id, room_id=room_id, space_id=space_id,
                                 kind=kind, subject_user_id=subject))

    def ref(self, event_id: str) -> m.MessageRef | None:
        with self._tx() as s:
            return s.get(m.MessageRef, event_id)

    def refs(self, space_id: str, kind: str, subject: str | None = None) -> list[m.MessageRef]:
        with self._tx() as s:
            q = select(m.MessageRef).where(m.MessageRef.space_id == space_id, m.MessageRef.kind == kind)
            if subject is not None:
                q = q.where(m.MessageRef.subject_user_id == subject)
            return list(s.exec(q).all())

    def drop_refs(self, space_id: str, kind: str, subject: str | None = None) -> None:
        with self._tx() as s:
            q = delete(m.MessageRef).where(m.MessageRef.space_id == space_id, m.MessageRef.kind == kind)
            if subject is not None:
                q = q.where(m.MessageRef.subject_user_id == subject)
            s.exec(q)

    def tip_jar(self, user_id: str) -> dict[str, str]:
        with self._tx() as s:
            rows = s.exec(select(m.TipJar).where(m.TipJar.user_id == user_id)
                          .order_by(m.TipJar.provider)).all()
            return {r.provider: r.handle for r in rows}

    def set_tip(self, user_id: str, provider: str, handle: str) -> None:
        with self._tx() as s:
            s.merge(m.TipJar(user_id=user_id, provider=provider, handle=handle))

    def remove_tip(self, user_id: str, provider: str) -> bool:
        with self._tx() as s:
            res = s.exec(delete(m.TipJar).where(m.TipJar.user_id == user_id,
                                                 m.TipJar.provider == provider))
            return res.rowcount > 0

    # ------------------------------------------------------------ reminders

    def set_reminder(self, space_id: str, user_id: str, on: bool) -> bool:
        """Subscribe or unsubscribe; False if nothing changed."""
        try:
            with self._own_tx("set_reminder") as s:
                row = s.get(m.ReminderSubscription, (space_id, user_id))
                if on and row is None:
                    s.add(m.ReminderSubscription(space_id=space_id, user_id=user_id))
                    return True
                if not on and row is not None:
                    s.delete(row)
                    return True
                return False
        except IntegrityError:
            return False

    def reminder_users(self, space_id: str) -> list[str]:
        with self._tx() as s:
            return list(s.exec(select(m.ReminderSubscription.user_id)
                               .where(m.ReminderSubscription.space_id == space_id)).all())

    # ------------------------------------------------------------ announcements

    def add_announcement(self, **fields) -> m.Announcement:
        with self._tx() as s:
            row = m.Announcement(**fields)
            s.add(row)
            s.flush()
            return row

    def announcement(self, ann_id: int) -> m.Announcement | None:
        with self._tx() as s:
            return s.get(m.Announcement, ann_id)

    def announcements(self, owner: str | None = None) -> list[m.Announcement]:
        with self._tx() as s:
            q = select(m.Announcement).where(m.Announcement.active == True)  # noqa: E712
            if owner:
                q = q.where(m.Announcement.owner_id == owner)
            return list(s.exec(q.order_by(m.Announcement.id)).all())

    def update_announcement(self, ann_id: int, **fields) -> None:
        with self._tx() as s:
            row = s.get(m.Announcement, ann_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    # ------------------------------------------------------------ the scheduler's jobs

    def scheduled_job_count(self) -> int:
        """Jobs in the scheduler's store, counted in SQL (not through APScheduler, whose lock
        its own thread holds while it works the store)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(m.apscheduler_jobs)).scalar_one()

    # ------------------------------------------------------------ audit

    def audit(self, actor: str, action: str, space_id: str | None = None,
              target: str | None = None, detail: str = "") -> None:
        with self._tx() as s:
            s.add(m.AuditEntry(actor_id=actor, action=action, space_id=space_id,
                               target_id=target, detail=detail))

    def audit_log(self, n: int = 20) -> list[m.AuditEntry]:
        with self._tx() as s:
            return list(s.exec(select(m.AuditEntry).order_by(col(m.AuditEntry.id).desc())
                               .limit(n)).all())


def _user_row(s: Session, user_id: str) -> m.User:
    """The user's row, made if missing. Made with INSERT … ON CONFLICT DO NOTHING: two
    transactions at once (PostgreSQL, two threads) may each find it missing."""
    row = s.get(m.User, user_id)
    if row is not None:
        return row
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    s.exec(insert(m.User).values(**m.User(user_id=user_id).model_dump()).on_conflict_do_nothing())
    row = s.get(m.User, user_id)
    assert row is not None
    return row


#: errors that mean "the database cannot be reached right now", not "this is a bug"
_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def database_unavailable(exc: BaseException) -> bool:
    """Is ``exc`` the database being unreachable (a blip to wait out), rather than a bug?"""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE)


def speakers_of(row: m.Space) -> list[str]:
    """Everyone who was on stage in a space, in the order they first were."""
    return [u for u in row.speakers_seen.split() if u]


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they were written as UTC."""
    from datetime import UTC

    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)
