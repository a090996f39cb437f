"""The bot's tables. The database is the truth: everything a restart must keep is here.

Every schema change is an Alembic migration under ``migrations/``; the app never calls
``create_all`` (tests compare these models with the migrated schema).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, LargeBinary, Table, Text, Unicode, true
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Column:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class User(SQLModel, table=True):
    """A Matrix user the bot has met, with their settings and moderation state."""

    __tablename__ = "users"
    user_id: str = Field(primary_key=True, max_length=255)
    display_name: str | None = Field(default=None, max_length=255)
    timezone: str | None = Field(default=None, max_length=64)
    notify_golive: bool = Field(default=False)
    #: "allow" or "deny" set by a moderator; None means the follower threshold decides
    host_override: str | None = Field(default=None, max_length=8)
    banned: bool = Field(default=False)
    #: follower count imported from another network (the gate uses the larger count)
    imported_followers: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Follow(SQLModel, table=True):
    __tablename__ = "follows"
    __table_args__ = (Index("ix_follows_followee", "followee_id"),)
    follower_id: str = Field(primary_key=True, max_length=255)
    followee_id: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Space(SQLModel, table=True):
    __tablename__ = "spaces"
    __table_args__ = (
        Index("ix_spaces_state_scheduled", "state", "scheduled_for"),
        Index("ix_spaces_host_state", "host_id", "state"),
    )
    id: str = Field(primary_key=True, max_length=16)
    host_id: str = Field(max_length=255)
    title: str = Field(max_length=200)
    visibility: str = Field(max_length=16)
    state: str = Field(max_length=16)
    room_id: str | None = Field(default=None, max_length=255, unique=True)
    #: the room where the host typed the command (the card is posted there)
    origin_room_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    scheduled_for: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    started_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    ended_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    autostart: bool = Field(default=False)
    captions: bool = Field(default=False)
    recording: bool = Field(default=False)
    peak_listeners: int = Field(default=0)
    speakers_seen: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Participant(SQLModel, table=True):
    """Someone in a live space. ``status`` is present, left or removed (by a moderator)."""

    __tablename__ = "participants"
    __table_args__ = (Index("ix_participants_space_status", "space_id", "status"),)
    space_id: str = Field(primary_key=True, foreign_key="spaces.id", max_length=16)
    user_id: str = Field(primary_key=True, max_length=255)
    role: str = Field(max_length=16)
    status: str = Field(default="present", max_length=16)
    joined_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SpeakRequest(SQLModel, table=True):
    __tablename__ = "speak_requests"
    space_id: str = Field(primary_key=True, foreign_key="spaces.id", max_length=16)
    user_id: str = Field(primary_key=True, max_length=255)
    requested_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Invitation(SQLModel, table=True):
    __tablename__ = "invitations"
    space_id: str = Field(primary_key=True, foreign_key="spaces.id", max_length=16)
    user_id: str = Field(primary_key=True, max_length=255)
    role: str = Field(max_length=16)
    invited_by: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SpaceFile(SQLModel, table=True):
    """A recording or a transcript the bridge made of a space: the space's page after its
    end plays the recording with its transcript as captions (the bridge keeps the files)."""

    __tablename__ = "space_files"
    space_id: str = Field(primary_key=True, foreign_key="spaces.id", max_length=16)
    name: str = Field(primary_key=True, max_length=200)
    #: "recording" (Ogg/Opus) or "transcript" (WebVTT, made without a recording)
    kind: str = Field(max_length=16)
    seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    #: a recording's transcript, the .vtt of the same stretch of the space
    transcript: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ReminderSubscription(SQLModel, table=True):
    """A user who asked to be reminded when a scheduled space starts (🔔 / !space remind)."""

    __tablename__ = "reminders"
    space_id: str = Field(primary_key=True, foreign_key="spaces.id", max_length=16)
    user_id: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class TipJar(SQLModel, table=True):
    __tablename__ = "tip_jars"
    user_id: str = Field(primary_key=True, max_length=255)
    provider: str = Field(primary_key=True, max_length=16)
    handle: str = Field(max_length=100)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Reaction(SQLModel, table=True):
    __tablename__ = "reactions"
    __table_args__ = (Index("ix_reactions_space", "space_id"),)
    id: int | None = Field(default=None, primary_key=True)
    space_id: str = Field(foreign_key="spaces.id", max_length=16)
    user_id: str = Field(max_length=255)
    key: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class MessageRef(SQLModel, table=True):
    """A message the bot posted that people act on with reactions (a card, a raised hand)."""

    __tablename__ = "message_refs"
    __table_args__ = (Index("ix_message_refs_space_kind", "space_id", "kind"),)
    event_id: str = Field(primary_key=True, max_length=255)
    room_id: str = Field(max_length=255)
    space_id: str = Field(foreign_key="spaces.id", max_length=16)
    #: "card" or "speak_request"
    kind: str = Field(max_length=16)
    subject_user_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Announcement(SQLModel, table=True):
    """A one-off or recurring announcement a moderator scheduled into a room."""

    __tablename__ = "announcements"
    id: int | None = Field(default=None, primary_key=True)
    room_id: str = Field(max_length=255)
    owner_id: str = Field(max_length=255)
    text: str = Field(sa_column=Column(Text, nullable=False))
    #: what was typed after "at"/"every", and the zone it was read in
    schedule: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    recurring: bool = Field(default=False)
    active: bool = Field(default=True, index=True)
    fired: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))
    actor_id: str = Field(max_length=255)
    action: str = Field(max_length=64)
    space_id: str | None = Field(default=None, max_length=16)
    target_id: str | None = Field(default=None, max_length=255)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class SyncState(SQLModel, table=True):
    """Small key/value state of the bot: the sync token, the bot's own user id."""

    __tablename__ = "sync_state"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))


class HandledEvent(SQLModel, table=True):
    """Events the bot acted on, so that nothing is acted on twice across restarts."""

    __tablename__ = "handled_events"
    event_id: str = Field(primary_key=True, max_length=255)
    handled_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))
    #: a command is claimed unfinished and marked done when answered; one still unfinished at
    #: start-up was cut off by a crash, and its sender is told so in ``room_id``
    done: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    room_id: str | None = Field(default=None, max_length=255)


class RoomJoin(SQLModel, table=True):
    """When the bot joined a room: events from before that are never acted on."""

    __tablename__ = "room_joins"
    room_id: str = Field(primary_key=True, max_length=255)
    #: origin_server_ts (milliseconds) of the bot's own join event
    joined_ts: int = Field(default=0, sa_type=BigInteger)
    #: a direct-message room with this user (None for other rooms)
    dm_user_id: str | None = Field(default=None, max_length=255, index=True)


#: APScheduler's job store table (the same columns its SQLAlchemyJobStore defines), kept
#: here so that Alembic creates it like every other table and the schema check covers it.
apscheduler_jobs = Table(
    "apscheduler_jobs", SQLModel.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
