"""Running the rules of a space against the world: load, decide, save, carry out effects.

The decision (``bot.core.rules``) is pure; this module does the I/O around it. State is
saved before any effect runs, so the database stays the truth even when Matrix or the
bridge fails halfway: a failed effect is logged with the space, user and room, the
reply says that the audio side did not take it, and the bridge is brought up to date by
:meth:`SpaceService.resync` as soon as it answers again (bot/bridge_http.py decides when).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot import cards
from bot.bridge_api import BridgeControl, BridgeError, BridgeUnavailable, StageMissing
from bot.core import effects as fx
from bot.core import rules
from bot.core.model import Limits, Role, Space, State, Visibility
from bot.db.database import Database
from bot.db.store import SpaceRecord, Store, as_utc, new_space_id, speakers_of
from bot.matrix.client import MatrixError, MatrixIO
from bot.matrix.messages import matrix_to
from bot.page_listings import PageListings
from bot.profiles import PageProfiles
from bot.reactions import ReactionBatcher

log = logging.getLogger(__name__)

THRESHOLD_KEY = "hosting.min_followers"


def bridge_note(failures: list[BridgeError]) -> str:
    """What a reply adds when the audio side did not take part of a command."""
    if not failures:
        return ""
    if any(isinstance(f, BridgeUnavailable) for f in failures):
        reason = next(f.reason for f in failures if isinstance(f, BridgeUnavailable))
        return (f" ⚠ The audio side did not take this yet ({reason}); Chorus brings it up to "
                "date by itself as soon as the bridge answers.")
    return f" ⚠ The audio bridge refused part of this: {failures[0].reason}."


@dataclass
class SpaceSettings:
    limits: Limits
    moderators: frozenset[str]
    announcement_rooms: tuple[str, ...] = ()
    prefix: str = "!"
    captions_by_default: bool = False
    record_by_default: bool = False
    notify_batch_size: int = 20
    notify_interval_seconds: float = 1.0


@dataclass
class SpaceService:
    #: the store, off the event loop (bot/db/database.py)
    db: Database
    matrix: MatrixIO
    bridge: BridgeControl
    settings: SpaceSettings
    #: called with (space_id) when reminders must be (re)planned or dropped; set by the scheduler
    on_schedule: Callable[[str, bool], Awaitable[None]] | None = None
    #: counts reactions and posts them to the room in batches (bot/reactions.py); None posts each one
    reactions: ReactionBatcher | None = None
    #: gives the bridge the names and avatars its pages show (bot/profiles.py); None: none
    profiles: PageProfiles | None = None
    #: gives the bridge the pages of scheduled and ended spaces (bot/page_listings.py)
    listings: PageListings | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _background: set[asyncio.Task] = field(default_factory=set)
    #: live spaces the bridge had lost whose rooms are yet to hear that the audio is back
    _lost_stages: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ facts

    def _limits(self, st: Store) -> Limits:
        """The limits, with a moderator's threshold override (read in ``st``'s transaction)."""
        override = st.get_state(THRESHOLD_KEY)
        base = self.settings.limits
        if override is None:
            return base
        return Limits(int(override), base.max_speakers, base.max_cohosts, base.max_days_ahead)

    async def limits(self) -> Limits:
        return await self.db.unit(self._limits)

    def is_moderator(self, user_id: str) -> bool:
        return user_id in self.settings.moderators

    def _actor(self, st: Store, user_id: str, host: str | None = None):
        return st.actor(user_id, is_moderator=self.is_moderator(user_id), host=host)

    async def actor(self, user_id: str, host: str | None = None):
        return await self.db.unit(lambda st: self._actor(st, user_id, host))

    def lock(self, space_id: str) -> asyncio.Lock:
        return self._locks.setdefault(space_id, asyncio.Lock())

    # ------------------------------------------------------------ commands

    async def start(self, user_id: str, title: str, visibility: Visibility, origin_room: str | None,
                    scheduled_for: datetime | None = None, autostart: bool = False) -> rules.Outcome:
        space_id = new_space_id()
        async with self.lock(space_id):  # a resync does not take its stage for a stale one
            outcome = await self.db.unit(lambda st: self._start(
                st, space_id, user_id, title, visibility, origin_room, scheduled_for, autostart))
            failures = await self.run_effects(outcome.space, outcome.effects)
            return _noted(outcome, failures)

    def _start(self, st: Store, space_id: str, user_id: str, title: str, visibility: Visibility,
               origin_room: str | None, scheduled_for: datetime | None, autostart: bool) -> rules.Outcome:
        """Check, decide and save a new space: one transaction (in the database's thread)."""
        live = st.live_space_of_host(user_id)
        if live and scheduled_for is None:
            raise rules.Refused(f"You already host a live space ({live}); end it with !space end {live} first.")
        outcome = rules.start_space(
            space_id, self._actor(st, user_id), title, visibility, self._limits(st),
            scheduled_for=scheduled_for, captions=self.settings.captions_by_default,
            recording=self.settings.record_by_default)
        st.save_space(outcome.space, origin_room_id=origin_room, autostart=autostart,
                      started_at=None if scheduled_for else datetime.now(UTC))
        return outcome

    async def act(self, space_id: str, user_id: str, command: rules.Command) -> rules.Outcome:
        async with self.lock(space_id):
            # load, decide and (unless the bridge must be asked first) save: one transaction
            record, outcome, unsaved = await self.db.unit(
                lambda st: self._decide(st, space_id, user_id, command))
            # the bridge may refuse an option (e.g. no captions model): it is asked before
            # saving, so that a refusal changes nothing
            effects = outcome.effects
            for effect in [e for e in effects if isinstance(e, fx.StageOptions)]:
                try:
                    await self._do_StageOptions(outcome.space, effect)
                except StageMissing as exc:
                    if record.space.state is State.LIVE:  # lost by a restart: put it back
                        self.bridge.mark_stale(f"space {space_id} has no stage on the bridge")
                        raise rules.Refused("The audio bridge had lost this space's stage; it is "
                                            "being put back. Nothing was changed: try again in a "
                                            "few seconds.") from None
                    raise rules.Refused(f"The audio bridge refused: {exc.reason}") from None
                except BridgeUnavailable as exc:
                    raise rules.Refused(f"The audio side did not take this ({exc.reason}). "
                                        "Nothing was changed: try again shortly.") from None
                except BridgeError as exc:
                    raise rules.Refused(f"The audio bridge refused: {exc.reason}") from None
            effects = tuple(e for e in effects if not isinstance(e, fx.StageOptions))
            if unsaved is not None:
                await self.db.save_space(outcome.space, **unsaved)
            failures = await self.run_effects(outcome.space, effects)
            return _noted(outcome, failures)

    def _decide(self, st: Store, space_id: str, user_id: str, command: rules.Command,
                ) -> tuple[SpaceRecord, rules.Outcome, dict[str, datetime] | None]:
        """Load the space and the actor, apply the rules and save what they decided, in
        ``st``'s one transaction; not the save when the bridge must first take an option
        (StageOptions). (record, outcome, the row fields of a save still to be made: None
        if it was made or there is nothing to save)."""
        record = st.load_space(space_id)
        if record is None:
            raise rules.Refused(f"There is no space with id “{space_id}”. Type !spaces to see them.")
        actor = self._actor(st, user_id, host=record.space.host)
        outcome = rules.apply(record.space, command, actor, self._limits(st))
        extra = _saved_with(command)
        if outcome.space is record.space and not extra:  # e.g. a reaction: nothing to save
            return record, outcome, None
        if any(isinstance(e, fx.StageOptions) for e in outcome.effects):
            return record, outcome, extra
        st.save_space(outcome.space, **extra)
        return record, outcome, None

    async def welcome(self, space_id: str, user_id: str) -> str | None:
        """After a join: invite to the room, DM the personal listening link. The room id."""
        rec = await self.db.load_space(space_id)
        room = rec.row.room_id
        if room and user_id not in self.matrix.members(room):
            await self.matrix.invite(room, user_id)
        role = rec.space.people.get(user_id, Role.LISTENER)
        token = self.bridge.mint_token(space_id, user_id, role.value)
        await self.matrix.dm(user_id, f"Your personal link to “{rec.space.title}” ({space_id}): "
                             f"{self.bridge.page_url(space_id, token)}")
        return room

    async def post_audio(self, space_id: str, name: str, duration: float, what: str) -> str | None:
        """Fetch a recording or a clip from the bridge (by the file name its event gives)
        and post it in the space's room. If it cannot be fetched the room is told why."""
        rec = await self.db.load_space(space_id)
        room = rec.row.room_id if rec else None
        if not room:
            log.error("space %s: %s %s has no room to go to", space_id, what, name)
            return None
        minutes, seconds = divmod(int(duration), 60)
        body = f"{what.capitalize()}: {rec.space.title} ({minutes}:{seconds:02d}).ogg"
        try:
            async with _fetched(self.bridge, name) as file:
                event_id = await self.matrix.send_audio(room, file, duration, body)
        except BridgeError as exc:
            log.error("space %s: %s %s could not be fetched from the bridge for room %s: %s",
                      space_id, what, name, room, exc)
            await self.matrix.notice(room, f"The {what} of this space could not be posted: "
                                     f"{exc.reason}.")
            return None
        log.info("space %s: %s posted in room %s (%s, %.1f s)", space_id, what, room, name, duration)
        return event_id

    async def post_transcript_file(self, space_id: str, name: str) -> str | None:
        """Fetch the space's WebVTT transcript from the bridge and attach it to its room."""
        rec = await self.db.load_space(space_id)
        if not rec or not rec.row.room_id:
            log.error("space %s: transcript %s has no room to go to", space_id, name)
            return None
        try:
            async with _fetched(self.bridge, name) as file:
                return await self.matrix.send_file(rec.row.room_id, file,
                                                   f"Transcript: {rec.space.title}.vtt", "text/vtt")
        except BridgeError as exc:
            log.error("space %s: transcript %s could not be fetched from the bridge for room %s: %s",
                      space_id, name, rec.row.room_id, exc)
            await self.matrix.notice(rec.row.room_id, "The transcript of this space could not be "
                                     f"posted: {exc.reason}.")
            return None

    async def keep_file(self, space_id: str, name: str, kind: str, seconds: float | None = None,
                        transcript: str | None = None) -> None:
        """A recording or transcript the bridge made: kept, and played on the space's page.
        A database error costs the page its file, never the room its post."""
        try:
            if await self.db.add_space_file(space_id, name, kind, seconds, transcript):
                log.info("space %s: its %s %s is kept for its page", space_id, kind, name)
        except Exception:  # noqa: BLE001 - the file still goes to the room
            log.exception("space %s: its %s %s could not be kept for its page", space_id, kind, name)
            return
        if self.listings is not None:
            self.listings.changed(space_id)

    async def recording_failed(self, space_id: str, reason: str, recovered: bool) -> None:
        """The bridge could not finish a recording: say so in the space's room."""
        room = await self._room(space_id)
        log.error("space %s: the bridge could not finish a recording%s (room %s): %s", space_id,
                  " left by its restart" if recovered else "", room, reason)
        if room:
            when = " cut off by the audio bridge's restart" if recovered else ""
            await self.matrix.notice(room, f"The recording{when} could not be finished: {reason}")

    async def remind(self, space_id: str, user_id: str, on: bool) -> str:
        rec = await self.db.load_space(space_id)
        if rec is None:
            raise rules.Refused(f"There is no space with id “{space_id}”.")
        if rec.space.state is not State.SCHEDULED:
            raise rules.Refused(f"Space {space_id} is {rec.space.state.value}, not scheduled; "
                                "reminders are for upcoming spaces.")
        changed = await self.db.set_reminder(space_id, user_id, on)
        if on:
            return ("I'll remind you when “%s” starts." if changed else
                    "You had already asked to be reminded of “%s”.") % rec.space.title
        return ("You won't be reminded of “%s”." if changed else
                "You had not asked to be reminded of “%s”.") % rec.space.title

    # ------------------------------------------------------------ effects

    async def run_effects(self, space: Space, effects: tuple[fx.Effect, ...]) -> list[BridgeError]:
        """Carry out ``effects`` in order; one that fails is logged and the rest still run.
        Returns what the bridge refused or could not be told, for the reply to say."""
        failures: list[BridgeError] = []
        for effect in effects:
            handler = getattr(self, "_do_" + type(effect).__name__, None)
            if handler is None:  # pragma: no cover - programming error
                raise TypeError(f"no handler for effect {type(effect).__name__}")
            try:
                await handler(space, effect)
            except Exception as exc:  # noqa: BLE001 - one failed effect must not stop the others
                if isinstance(exc, StageMissing) and await self._is_live(space.id):
                    # the bridge lost a stage the database holds live (it restarted)
                    self.bridge.mark_stale(f"space {space.id} has no stage on the bridge")
                    exc = BridgeUnavailable(str(exc), "the audio bridge had lost this space's "
                                            "stage; it is being put back")
                if isinstance(exc, BridgeError):
                    failures.append(exc)
                log.error("space %s: %s failed (room %s, user %s): %s", space.id, type(effect).__name__,
                          await self._room(space.id), getattr(effect, "user_id", "-"), exc)
        return failures

    async def _is_live(self, space_id: str) -> bool:
        return await self.db.space_state(space_id) == State.LIVE.value

    async def _room(self, space_id: str) -> str | None:
        return await self.db.room_of(space_id)

    def page_url(self, space_id: str) -> str:
        return self.bridge.page_url(space_id)

    async def _do_CreateRoom(self, space: Space, e: fx.CreateRoom) -> None:
        vis = space.visibility.value
        room_id = await self.matrix.create_room(
            name=f"🎙 {space.title}",
            topic=f"Live audio space hosted by {space.host} · id {space.id} · {self.page_url(space.id)}",
            join_rule=cards.join_rule_for(vis),
            invite=[space.host],
            power_levels=cards.power_levels(self.matrix.user_id, space),
            initial_state=[
                {"type": cards.ROLES_STATE_EVENT, "state_key": "", "content": cards.roles_state(space)},
                {"type": cards.WIDGET_STATE_EVENT, "state_key": f"chorus-{space.id}",
                 "content": cards.widget_state(space, self.page_url(space.id))},
            ],
        )
        await self.db.unit(lambda st: (st.update_space_row(space.id, room_id=room_id),
                                       st.record_join(room_id, 0)))
        log.info("space %s: room %s created for host %s", space.id, room_id, space.host)
        for user, _role in space.invited.items():
            await self.matrix.invite(room_id, user)

    async def _do_OpenStage(self, space: Space, e: fx.OpenStage) -> None:
        await self.bridge.open_stage(space.id, space.title, public=space.visibility is Visibility.EVERYONE,
                                     record=space.recording, captions=space.captions,
                                     page=await self._page_facts(space.id, space.host))

    async def _page_facts(self, space_id: str, host: str) -> dict:
        """What the space's page shows besides audio: the host, the room's matrix.to link
        and the host's tip jar."""
        room_id, tips = await self.db.unit(lambda st: (st.room_of(space_id), st.tip_jar(host)))
        return {"host": host, "room_url": matrix_to(room_id) if room_id else None,
                "tips": [{"label": name, "url": url} for name, _, url in cards.tip_urls(tips)]}

    async def _reopen(self, row, *, captions: bool) -> None:
        """Open (or update) a live space's stage from its row, with its page's facts."""
        await self.bridge.open_stage(row.id, row.title, public=row.visibility == "everyone",
                                     record=row.recording, captions=captions,
                                     page=await self._page_facts(row.id, row.host_id))

    async def tip_jar_changed(self, host: str) -> None:
        """The host's tip jar changed: the pages of their live spaces show the new one."""
        if not self.bridge.available:
            return  # the resync that comes when it answers again pushes the new one
        for live in await self.db.spaces_in_state(State.LIVE):
            if live.host_id != host:
                continue
            async with self.lock(live.id):  # not a space that ended meanwhile
                rec = await self.db.load_space(live.id)
                if rec is None or rec.space.state is not State.LIVE:
                    continue
                try:
                    await self._reopen(rec.row, captions=rec.row.captions)
                except BridgeError as exc:  # the next resync pushes it again
                    log.warning("space %s: the page did not get %s's new tip jar: %s", live.id, host, exc)

    async def _do_HandDeclined(self, space: Space, e: fx.HandDeclined) -> None:
        try:
            await self.bridge.answer_hand(space.id, e.user_id, "declined")
        except BridgeError as exc:  # the DM says it; the page keeps the hand up (a 1.3 bridge)
            log.warning("space %s: the bridge did not take the host's no to %s's hand: %s",
                        space.id, e.user_id, exc)

    async def _do_RolesChanged(self, space: Space, e: fx.RolesChanged) -> None:
        failed: BridgeError | None = None
        try:
            await self._push_roles(space)
        except BridgeError as exc:  # the room still shows the roles the database holds
            failed = exc
        room_id = await self._room(space.id)
        if room_id:
            await self.matrix.put_state(room_id, "m.room.power_levels",
                                        cards.power_levels(self.matrix.user_id, space))
            await self.matrix.put_state(room_id, cards.ROLES_STATE_EVENT, cards.roles_state(space))
        if failed is not None:
            raise failed

    async def _do_UpdateCard(self, space: Space, e: fx.UpdateCard) -> None:
        if self.listings is not None and space.state is not State.LIVE:
            self.listings.changed(space.id)  # scheduled, rescheduled, cancelled or ended
        listeners = len(space.listeners)
        found = await self.db.unit(lambda st: _card_facts(st, space.id, space.host, listeners))
        if found is None:
            return
        rec, tips, existing = found
        facts = cards.CardFacts(space, rec.row.room_id, self.page_url(space.id), tips, listeners,
                                self.settings.prefix)
        plain, rich = cards.card(facts)
        from bot.matrix.messages import notice

        content = notice(plain, rich)
        if not existing:
            rooms = [r for r in (rec.row.origin_room_id, *self.settings.announcement_rooms) if r]
            for room in dict.fromkeys(rooms):
                try:
                    room = await self.matrix.resolve_room(room)
                    event_id = await self.matrix.send(room, content)
                except MatrixError as exc:
                    log.error("space %s: could not post its card in room %s: %s", space.id, room, exc)
                    continue
                await self.db.add_ref(event_id, room, space.id, "card")
                keys = ("🎧", "✋") if space.state is State.LIVE else ("🔔",)
                for key in keys:
                    await self.matrix.react(room, event_id, key)
            return
        for ref in existing:
            await self.matrix.edit(ref.room_id, ref.event_id, content)

    async def _do_InviteToRoom(self, space: Space, e: fx.InviteToRoom) -> None:
        room_id = await self._room(space.id)
        if room_id:
            await self.matrix.invite(room_id, e.user_id)
        link = f"\nRoom: https://matrix.to/#/{room_id}" if room_id else ""
        await self.matrix.dm(e.user_id, (
            f"{space.host} invites you to the space “{space.title}” as {e.role}.{link}\n"
            f"Join with {self.settings.prefix}space join {space.id} or open {self.page_url(space.id)}"))

    async def _do_AskToSpeak(self, space: Space, e: fx.AskToSpeak) -> None:
        room_id = await self._room(space.id)
        if not room_id:
            return
        managers = [u for u, r in space.people.items() if r in (Role.HOST, Role.COHOST)]
        from bot.matrix.messages import pill

        plain = (f"✋ {e.user_id} asks to speak. {', '.join(managers)}: react ✅ to approve or ❌ to deny "
                 f"(or {self.settings.prefix}space approve {e.user_id}).")
        rich = (f"✋ {pill(e.user_id)} asks to speak. {', '.join(pill(u) for u in managers)}: react ✅ "
                f"to approve or ❌ to deny (or <code>{self.settings.prefix}space approve {e.user_id}</code>).")
        event_id = await self.matrix.notice(room_id, plain, rich)
        await self.db.add_ref(event_id, room_id, space.id, "speak_request", e.user_id)
        await self.matrix.react(room_id, event_id, "✅")
        await self.matrix.react(room_id, event_id, "❌")

    async def _do_HandClosed(self, space: Space, e: fx.HandClosed) -> None:
        await self.db.drop_refs(space.id, "speak_request", e.user_id)

    async def _do_Announce(self, space: Space, e: fx.Announce) -> None:
        room_id = await self._room(space.id)
        if room_id:
            await self.matrix.notice(room_id, e.text)

    async def _do_DirectMessage(self, space: Space, e: fx.DirectMessage) -> None:
        await self.matrix.dm(e.user_id, e.text)

    async def _do_Kick(self, space: Space, e: fx.Kick) -> None:
        failed: BridgeError | None = None
        if space.state is State.LIVE:  # the bridge closes their connections at once
            try:
                await self._push_roles(space)
            except BridgeError as exc:
                failed = exc
        room_id = await self._room(space.id)
        if room_id and e.user_id in self.matrix.members(room_id):
            await self.matrix.kick(room_id, e.user_id, e.reason)
        if failed is not None:
            raise failed

    async def _push_roles(self, space: Space) -> None:
        """Who is who, as a whole: the roles, and who may not be there at all (removed from
        this space, or banned from Chorus)."""
        await self.bridge.set_roles(space.id, {u: r.value for u, r in space.people.items()},
                                    removed=space.removed | await self.db.banned_users())
        if self.profiles is not None:  # their faces, in the background
            self.profiles.want(space.id, [space.host, *(u for u, r in space.people.items()
                                                        if r is not Role.LISTENER), *space.requests])

    async def push_access(self) -> list[str]:
        """Push who is who to every live space (after a ban or an unban); the spaces the
        bridge did not take (logged; a resync pushes them again)."""
        failed = []
        for row in await self.db.spaces_in_state(State.LIVE):
            async with self.lock(row.id):
                rec = await self.db.load_space(row.id)
                if rec is None or rec.space.state is not State.LIVE:
                    continue
                try:
                    await self._push_roles(rec.space)
                except StageMissing:
                    self.bridge.mark_stale(f"space {row.id} has no stage on the bridge")
                    failed.append(row.id)
                except BridgeError as exc:
                    log.error("space %s: could not push who may be there to the bridge: %s",
                              row.id, exc)
                    failed.append(row.id)
        return failed

    async def _do_ReactionAdded(self, space: Space, e: fx.ReactionAdded) -> None:
        if self.reactions is not None:
            if self.reactions.add(space.id, e.user_id, e.key):
                await self.db.add_reaction(space.id, e.user_id, e.key)
            return
        await self.db.add_reaction(space.id, e.user_id, e.key)
        room_id = await self._room(space.id)
        if room_id:
            await self.matrix.notice(room_id, f"{e.key} from {e.user_id}")

    async def post_reactions(self, space_id: str, text: str) -> None:
        """One batch of reactions (from the batcher) into the space's room."""
        room_id = await self._room(space_id)
        if room_id:
            await self.matrix.notice(room_id, text)

    async def _do_StageOptions(self, space: Space, e: fx.StageOptions) -> None:
        await self.bridge.set_options(space.id, record=e.recording, captions=e.captions)

    async def _do_CloseSpace(self, space: Space, e: fx.CloseSpace) -> None:
        if self.reactions is not None:  # the last reactions go in before the summary
            await self.reactions.flush(space.id)
        rec = await self.db.load_space(space.id)
        failed: BridgeError | None = None
        try:
            stats = await self.bridge.close_stage(space.id)
        except BridgeError as exc:  # the space ends anyway; a resync closes the stage later
            failed, stats = exc, None
        peak = max(rec.row.peak_listeners, stats.peak_listeners if stats else 0)
        await self.db.update_space_row(space.id, peak_listeners=peak)
        room_id = rec.row.room_id
        await self.db.drop_refs(space.id, "speak_request")
        if not room_id:
            if failed is not None:
                raise failed
            return
        speakers = speakers_of(rec.row)
        plain, rich = cards.summary(space, as_utc(rec.row.started_at),
                                    as_utc(rec.row.ended_at) or datetime.now(UTC), peak, speakers,
                                    await self.db.top_reactions(space.id))
        await self.matrix.notice(room_id, plain + f" ({e.reason})", rich)
        await self.matrix.put_state(room_id, "m.room.join_rules", {"join_rule": "invite"})
        await self.matrix.put_state(room_id, cards.WIDGET_STATE_EVENT, {}, f"chorus-{space.id}")
        await self.matrix.put_state(room_id, cards.ROLES_STATE_EVENT, cards.roles_state(space))
        log.info("space %s: ended (%s), room %s closed", space.id, e.reason, room_id)
        if failed is not None:
            raise failed

    async def _do_ScheduleReminders(self, space: Space, e: fx.ScheduleReminders) -> None:
        if self.on_schedule:
            await self.on_schedule(space.id, True)

    async def _do_CancelReminders(self, space: Space, e: fx.CancelReminders) -> None:
        if self.on_schedule:
            await self.on_schedule(space.id, False)

    async def _do_NotifyFollowers(self, space: Space, e: fx.NotifyFollowers) -> None:
        task = asyncio.create_task(self._notify_followers(space))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify_followers(self, space: Space) -> None:
        """Tell opted-in followers the host is live, a batch at a time, so that a host with
        10,000 followers does not flood the homeserver."""
        followers = await self.db.followers_to_notify(space.host)
        if space.visibility is Visibility.FOLLOWING:
            followers = await self.db.unit(lambda st: [u for u in followers if st.follows(space.host, u)])
        elif space.visibility is Visibility.INVITED:
            followers = [u for u in followers if u in space.invited]
        batch = max(1, self.settings.notify_batch_size)
        text = (f"{space.host} is live now: “{space.title}”. Join with "
                f"{self.settings.prefix}space join {space.id} or listen at {self.page_url(space.id)}")
        sent = 0
        for i in range(0, len(followers), batch):
            for user in followers[i:i + batch]:
                try:
                    await self.matrix.dm(user, text)
                    sent += 1
                except MatrixError as exc:
                    log.warning("space %s: could not tell follower %s it is live: %s", space.id, user, exc)
            if i + batch < len(followers):
                await asyncio.sleep(self.settings.notify_interval_seconds)
        if followers:
            log.info("space %s: told %d of %d opted-in followers of %s that it is live",
                     space.id, sent, len(followers), space.host)

    async def close(self) -> None:
        if self.profiles is not None:
            await self.profiles.close()
        if self.listings is not None:
            await self.listings.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _do_Audit(self, space: Space, e: fx.Audit) -> None:
        await self.db.audit(e.actor, e.action, space.id, e.target, e.detail)

    # ------------------------------------------------------------ keeping the bridge in step

    async def resync(self, why: str) -> None:
        """Push every live space to the bridge again (stage, title, visibility, recording,
        captions, roles) and close the stages of spaces that are no longer live.

        Called at start and whenever the bridge may have lost what it was told: it
        restarted, or a push failed (``why``: "start", "restart", "recovered"). Raises
        BridgeUnavailable if the bridge stops answering, so that it is tried again; a
        refusal for one space is logged and the others still go through. Each live space
        that the bridge did not hold is told in its room, once it is there, that its audio
        is back (not at start: nobody was listening to the bot then)."""
        live = await self.db.spaces_in_state(State.LIVE)
        held = set(await self.bridge.stage_ids())
        if self.profiles is not None:  # a new bridge has none of the avatars
            self.profiles.bridge_restarted()
        if why != "start":  # kept across failed attempts until the room is told
            self._lost_stages.update(row.id for row in live if row.id not in held)
        pushed = []
        for row in live:
            async with self.lock(row.id):  # not between a command's save and its push
                rec = await self._push_stage(row.id)
            if rec is not None:
                pushed.append(rec)
        for stale in sorted(held - {row.id for row in live}):
            async with self.lock(stale):  # a space started meanwhile is live by now
                rec = await self.db.load_space(stale)
                if rec is not None and rec.space.state is State.LIVE:
                    continue
                log.warning("space %s: the bridge still had a stage for it although it is not "
                            "live; closing it", stale)
                await self.bridge.close_stage(stale)
        if pushed:
            log.info("pushed %d live stage(s) to the bridge (%s): %s", len(pushed), why,
                     ", ".join(r.space.id for r in pushed))
        if self.listings is not None:  # the pages of scheduled and ended spaces, in the background
            await self.listings.resync()
        for rec in pushed:
            if rec.space.id not in self._lost_stages:
                continue
            self._lost_stages.discard(rec.space.id)
            if rec.row.room_id:
                text = ("🔊 The audio bridge is back and this space is on it. Pages reconnect by "
                        "themselves; reload yours if it does not.")
                try:
                    await self.matrix.notice(rec.row.room_id, text)
                except MatrixError as exc:
                    log.warning("space %s: could not tell room %s the audio is back: %s",
                                rec.space.id, rec.row.room_id, exc)

    async def _push_stage(self, space_id: str):
        """Open (or update) one live space's stage and push its roles; the record, or None
        if the bridge refused it (logged). BridgeUnavailable goes up."""
        rec = await self.db.load_space(space_id)
        if rec is None or rec.space.state is not State.LIVE:
            return None  # ended meanwhile
        row = rec.row
        try:
            try:
                await self._reopen(row, captions=row.captions)
            except BridgeUnavailable:
                raise
            except BridgeError as exc:
                if not row.captions:
                    raise
                # e.g. a bridge restarted without its captions model: the audio first
                await self._reopen(row, captions=False)
                await self._captions_lost(rec, exc.reason)
                rec = await self.db.load_space(space_id)
            await self._push_roles(rec.space)
        except BridgeUnavailable:
            raise
        except BridgeError as exc:
            log.error("space %s: the bridge refused its stage (room %s): %s", row.id,
                      row.room_id, exc)
            return None
        return rec

    async def _captions_lost(self, rec, reason: str) -> None:
        """The bridge took the stage back but not its captions: the database and the room
        say captions are off, so that the host can turn them on again later."""
        log.error("space %s: the bridge refused captions on its restored stage (%s); restored "
                  "without captions (room %s)", rec.space.id, reason, rec.row.room_id)
        await self.db.save_space(dataclasses.replace(rec.space, captions=False))
        if rec.row.room_id:
            try:
                await self.matrix.notice(rec.row.room_id, (
                    f"Captions are off: the audio bridge could not turn them back on ({reason}). "
                    f"Turn them on again with {self.settings.prefix}space captions {rec.space.id} on "
                    "once it can."))
            except MatrixError as exc:
                log.warning("space %s: could not tell room %s captions are off: %s",
                            rec.space.id, rec.row.room_id, exc)


@contextlib.asynccontextmanager
async def _fetched(bridge: BridgeControl, name: str) -> AsyncIterator[Path]:
    """One of the bridge's files, downloaded into a private temporary folder (in TMPDIR)
    that is removed afterwards; the disk work is done off the event loop."""
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="chorus-"))
    try:
        yield await bridge.fetch(name, folder)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _card_facts(st: Store, space_id: str, host: str, listeners: int):
    """What a space's card needs, in one transaction, with its peak of listeners kept:
    (record, the host's tip jar, the cards posted so far), or None if there is no such space."""
    rec = st.load_space(space_id)
    if rec is None:
        return None
    st.raise_peak_listeners(space_id, listeners)
    return rec, st.tip_jar(host), st.refs(space_id, "card")


def _saved_with(command: rules.Command) -> dict[str, datetime]:
    """The row fields a command sets besides the space itself."""
    if isinstance(command, rules.End):
        return {"ended_at": datetime.now(UTC)}
    if isinstance(command, rules.GoLive):
        return {"started_at": datetime.now(UTC)}
    return {}


def _noted(outcome: rules.Outcome, failures: list[BridgeError]) -> rules.Outcome:
    note = bridge_note(failures)
    return dataclasses.replace(outcome, reply=outcome.reply + note) if note else outcome
