"""The bot: log in, sync, route events to commands and reactions, never act twice.

Sync tokens and the ids of handled events live in the database, so a restart resumes
where it stopped and an event is acted on at most once, even if the bot was killed
between acting and saving the token. Events from before the bot joined a room are
never acted on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from nio import (
    AsyncClientConfig,
    ErrorResponse,
    InviteMemberEvent,
    LoginResponse,
    MessageDirection,
    ReactionEvent,
    RoomMemberEvent,
    RoomMessageAudio,
    RoomMessageText,
    SyncResponse,
)

from bot.bridge_api import BridgeControl, BridgeError
from bot.commands import registry as default_registry
from bot.commands.context import Ctx, Services
from bot.commands.registry import Registry, UsageError, parse, split_args
from bot.core import rules
from bot.core.bounds import clip
from bot.core.flood import CommandLimiter, Verdict
from bot.core.model import Role, State
from bot.core.words import plural, prefixer
from bot.db.database import Database
from bot.db.store import Store, database_unavailable
from bot.matrix.client import GatedClient, MatrixError, MatrixIO
from bot.matrix.direct import DirectRooms
from bot.matrix.messages import command_text, pills_in, server_of
from bot.matrix.send_gate import SYNC_LOOP, acting_for
from bot.metrics import UNKNOWN, BotMetrics, BotSnapshot
from bot.page_listings import PageListings
from bot.profiles import PageProfiles
from bot.reactions import ReactionBatcher
from bot.scheduler import Scheduler
from bot.scheduling import ScheduleService, ScheduleSettings
from bot.spaces import SpaceService, SpaceSettings
from bot.transcript import TranscriptBatcher

log = logging.getLogger(__name__)

TOKEN_KEY = "sync.next_batch"
#: events per room per sync; a busier room's gap is filled from /messages
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
#: at most this many pages of 100 events are fetched to fill one gap
MAX_GAP_PAGES = 50
#: how long ids of handled events are kept (a sync never returns events that old again)
HANDLED_EVENTS_KEPT = timedelta(days=30)
#: the largest voice message the bot downloads to play into a space
MAX_VOICE_BYTES = 20 * 1024 * 1024
#: the longest command the bot reads, in characters (an announcement is at most 4,000; a
#: followers import of a few hundred lines fits)
MAX_COMMAND_CHARS = 16_384
#: the longest reply the bot sends, in characters (an event may be at most 64 KiB)
MAX_REPLY_CHARS = 8_000
#: an event waits for the events before it (from anyone) to finish, but for no longer than
#: this once the one before it has started: a slow command is overtaken, never waited out
HEAD_START_SECONDS = 2.0
#: events of one sender waiting or running at once; more are skipped (a flood)
MAX_PENDING_PER_SENDER = 1000
#: of one person's commands waiting or running at once, this many hold up the next person's
#: events; the rest of a burst runs beside them
BURST_HOLDS_OTHERS = 2
#: the longest wait between two tries while the database is unreachable
MAX_DB_RETRY_SECONDS = 30.0
#: how long /healthz and /metrics wait for the database to answer
DATABASE_CHECK_SECONDS = 5.0
#: matrix-nio retries a request that timed out or lost its connection this many times, then
#: raises; each try lasts at most REQUEST_TIMEOUT_SECONDS (a long-poll sync gets its own)
MATRIX_RETRIES = 2
REQUEST_TIMEOUT_SECONDS = 30.0
#: errors that mean the homeserver did not answer (matrix-nio raises them once its retries are spent)
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
DB_WAIT_NOTICE = ("⏳ Chorus's database is unreachable right now. I will run this command as soon as it is "
                  "back; no need to send it again.")
DB_DOWN_REPLY = "Chorus's database is unavailable right now, so that did not complete. Try again in a minute."
CRASH_REPLY = ("⚠ I was restarted while handling this command, so it may not have completed. Check (for "
               "example with !spaces or !space info) and send it again if needed.")


@dataclass
class BotOptions:
    homeserver: str
    user_id: str
    password: str = ""
    access_token: str = ""
    device_id: str = ""
    device_name: str = "Chorus bot"
    store_path: str = "var/nio-store"
    prefix: str = "!"
    sync_timeout_ms: int = 30000
    allowed_homeservers: tuple[str, ...] = ()
    encryption: bool = False
    misfire_grace_minutes: int = 30
    #: post final captions to the space's room as a live transcript
    captions_to_room: bool = False
    transcript_interval_seconds: float = 10.0
    #: reactions are posted to a space's room at most once per this many seconds
    reaction_interval_seconds: float = 10.0
    #: a command (and everything it asks of Matrix and the bridge) is stopped after this long
    command_deadline_seconds: float = 60.0
    #: per person: this many commands at once, coming back at commands_per_minute; past
    #: them one notice, then silence until all have come back
    command_burst: int = 10
    commands_per_minute: int = 30


class Chorus:
    def __init__(self, options: BotOptions, store: Store, bridge: BridgeControl,
                 space_settings: SpaceSettings, schedule_settings: ScheduleSettings | None = None,
                 registry: Registry = default_registry) -> None:
        self.options = options
        #: the store itself (tests and start-up repair) and, for everything else, the store
        #: off the event loop (bot/db/database.py): an embedded bridge's tick shares this loop
        self.store = store
        self.db = Database(store)
        self.bridge = bridge
        #: recordings and transcripts on their way from the bridge to a room
        self._posting: set[asyncio.Task[None]] = set()
        if options.encryption:
            Path(options.store_path).mkdir(parents=True, exist_ok=True)
        # every request bounded: a few tries, each with a time limit, then an exception the
        # caller handles (never matrix-nio's default of retrying forever); a 429 is handed
        # to the client's gate, which waits as the homeserver asks and lets the least-served
        # person's request go first (bot/matrix/send_gate.py)
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=options.encryption,
                                   max_timeouts=MATRIX_RETRIES, max_timeout_retry_wait_time=5,
                                   request_timeout=REQUEST_TIMEOUT_SECONDS, max_limit_exceeded=0)
        self.client = GatedClient(options.homeserver, options.user_id, device_id=options.device_id or None,
                                  store_path=options.store_path if options.encryption else "", config=config)
        self.limiter = CommandLimiter(options.command_burst, options.commands_per_minute)
        #: verdicts of the limiter on recent commands (a batch handled again is not charged twice)
        self._judged: dict[str, Verdict] = {}
        #: "slow down" notices on their way
        self._notices: set[asyncio.Task[None]] = set()
        self.matrix = MatrixIO(self.client, DirectRooms(self.client, self.db.dm_room, self._remember_dm))
        self.matrix.wording = prefixer(options.prefix, [spec.name for spec in registry.commands.values()])
        self.spaces = SpaceService(self.db, self.matrix, bridge, space_settings)
        self.spaces.profiles = PageProfiles(self.matrix, bridge)
        self.spaces.listings = PageListings(self.db, bridge, self.spaces.profiles, page_url=self.spaces.page_url,
                                            prefix=options.prefix, domain=server_of(options.user_id))
        self.scheduler = Scheduler(store.engine, misfire_grace=timedelta(minutes=options.misfire_grace_minutes),
                                   key=f"{store.engine.url.render_as_string(hide_password=True)}#{options.user_id}")
        self.schedule = ScheduleService(self.scheduler, self.db, self.matrix, self.spaces,
                                        schedule_settings or ScheduleSettings(), options.prefix)
        self.services = Services(self.db, self.matrix, self.spaces, registry, options.prefix,
                                 server_of(options.user_id), scheduler=self.schedule)
        self.transcript = TranscriptBatcher(self._post_transcript, options.transcript_interval_seconds)
        self.reactions = ReactionBatcher(self.spaces.post_reactions, options.reaction_interval_seconds)
        self.spaces.reactions = self.reactions
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        #: commands told "the database is unreachable, I'll run it later" (told once each)
        self._told_waiting: set[str] = set()
        #: commands claimed by this process lately (newest last): never told to wait
        self._claimed_lately: dict[str, None] = {}
        #: commands answered while the database was down, to be marked done when it is back
        self._finish_later: set[str] = set()
        self.db_down_since: float | None = None
        #: when the bot joined each room (a cache of the database's room_joins; read every sync)
        self._join_ts: dict[str, int] = {}
        #: per sender: the last task of their lane, and how many of their events wait or run
        self._lanes: dict[str, asyncio.Task] = {}
        #: the newest event's task and its "started" flag: the next event waits for it
        self._tail: tuple[asyncio.Task, asyncio.Event] | None = None
        self._pending: dict[str, int] = {}
        self._lane_tasks: set[asyncio.Task] = set()
        #: unix time of the last /sync the homeserver answered, and of this bot's start
        self.last_sync_at: float | None = None
        self.started_at = time.time()
        #: what /metrics shows (bot/metrics.py; served by bot/runner.py on [bot] metrics_listen)
        self.metrics = BotMetrics()
        self.metrics.watch(self.snapshot)
        self.metrics.expect_commands(sorted({spec.name for spec in registry.commands.values()}))
        self._database_check: asyncio.Future[int] | None = None

    async def _remember_dm(self, user_id: str, room_id: str) -> None:
        await self.db.record_join(room_id, 0, dm_user_id=user_id)

    # ------------------------------------------------------------------ lifecycle

    async def login(self) -> None:
        o = self.options
        token = o.access_token or await self.db.get_state(f"auth.{o.user_id}.token")
        if token:
            self.client.access_token = token
            self.client.user_id = o.user_id
            resp = await self.client.whoami()
            if not isinstance(resp, ErrorResponse):
                self.client.device_id = resp.device_id or o.device_id or self.client.device_id
                if o.encryption and self.client.device_id:
                    self.client.restore_login(o.user_id, self.client.device_id, token)
                log.info("logged in to %s as %s with an access token", o.homeserver, o.user_id)
                return
            if o.access_token:
                raise MatrixError(f"the access token for {o.user_id} was refused: {resp.message}")
        if not o.password:
            raise MatrixError(f"no password or access token to log in as {o.user_id}")
        resp = await self.client.login(o.password, device_name=o.device_name)
        if not isinstance(resp, LoginResponse):
            raise MatrixError(f"login as {o.user_id} on {o.homeserver} failed: {resp.message}")
        await self.db.set_state(f"auth.{o.user_id}.token", resp.access_token)
        log.info("logged in to %s as %s (device %s)", o.homeserver, o.user_id, resp.device_id)

    async def run(self) -> None:
        """Sync until :meth:`stop`; each batch is handled, then its token is saved."""
        await self.login()
        self.bridge.on_event(self.on_bridge_event)
        # every live stage is pushed now (if the bridge answers) and again whenever the
        # bridge may have lost it (bot/bridge_http.py)
        self.bridge.on_resync(self.spaces.resync)
        await self.bridge.start()
        pruned = await self.db.prune_handled(datetime.now(UTC) - HANDLED_EVENTS_KEPT)
        if pruned:
            log.info("forgot %d handled event ids older than %s", pruned, HANDLED_EVENTS_KEPT)
        self.scheduler.start(paused=True)  # no job runs while the jobs are being repaired
        await self.db.run(self.schedule.repair)
        self.scheduler.resume()
        self.transcript.start()
        self.reactions.start()
        # from here on this task is the sync loop: its requests go before everyone's while
        # the homeserver rate-limits the bot (the tasks started above do not inherit this)
        acting_for.set(SYNC_LOOP)
        await self._answer_cut_off_commands()
        token = await self.db.get_state(TOKEN_KEY)
        if token is None:
            await self._first_sync()
        else:
            self.client.next_batch = token
        self.ready.set()
        backoff = 1.0
        while not self._stopping.is_set():
            since = self.client.next_batch
            sync_task = asyncio.ensure_future(self.client.sync(
                timeout=self.options.sync_timeout_ms, since=since, sync_filter=SYNC_FILTER))
            stop_task = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({sync_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if sync_task not in done:
                sync_task.cancel()
                break
            stop_task.cancel()
            try:
                resp = sync_task.result()
            except NETWORK_ERRORS as exc:  # matrix-nio gave up after its retries
                resp = exc
            if not isinstance(resp, SyncResponse):
                log.warning("sync failed: %s; retrying in %.0f s", getattr(resp, "message", None) or
                            type(resp).__name__, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 60)
                continue
            backoff = 1.0
            self.last_sync_at = time.time()
            await self._handle_batch(resp, since)
            await self._crypto_housekeeping()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until :meth:`stop`."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _handle_batch(self, resp: SyncResponse, since: str | None) -> None:
        """Handle one sync batch, then save its token. While the database is unreachable the
        same batch is handled again with backoff: events already claimed are skipped, so each
        is acted on once, and the token moves on only when the whole batch is done."""
        delay = 1.0
        peek = resp.next_batch
        while True:
            try:
                await self.handle_sync(resp, since)
                await self.db.set_state(TOKEN_KEY, resp.next_batch)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                if self.db_down_since is None:
                    self.db_down_since = time.monotonic()
                log.warning("database unreachable (%s); this sync batch is handled again in %.0f s",
                            _brief(exc), delay)
                # its own commands too: the batch may have failed before reaching them
                await self._tell_commands_to_wait(resp)
                peek = await self._peek_for_commands(peek, delay)
                self.client.next_batch = resp.next_batch  # peeked events come again in the next sync
                if self._stopping.is_set():
                    return
                delay = min(delay * 2, MAX_DB_RETRY_SECONDS)
                continue
            if self.db_down_since is not None:
                log.info("database reachable again after %.0f s; carried on where it stopped",
                         time.monotonic() - self.db_down_since)
                self.db_down_since = None
            await self._finish_pending()
            return

    async def _peek_for_commands(self, since: str, seconds: float) -> str:
        """While the database is down: wait up to ``seconds`` for new events (a sync that saves
        nothing and claims nothing) and tell the sender of each new command that it will run
        when the database is back. Returns the token to peek from next time."""
        sync = asyncio.ensure_future(self.client.sync(timeout=int(seconds * 1000), since=since,
                                                      sync_filter=SYNC_FILTER))
        stop = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({sync, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if sync not in done:
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            return since
        try:
            resp = sync.result()
        except NETWORK_ERRORS:
            return since
        if not isinstance(resp, SyncResponse):
            await self._pause(seconds)
            return since
        self.last_sync_at = time.time()  # the homeserver answers; the database is what is down
        await self._tell_commands_to_wait(resp)
        return resp.next_batch

    async def _tell_commands_to_wait(self, resp: SyncResponse) -> None:
        """Tell the sender of each command in this sync that it runs when the database is back."""
        for room_id, info in resp.rooms.join.items():
            join_ts = self._join_ts.get(room_id)
            for event in info.timeline.events:
                if (not isinstance(event, RoomMessageText) or event.sender == self.client.user_id
                        or join_ts is None or event.server_timestamp < join_ts
                        or not command_text(event.source.get("content", {})).startswith(self.options.prefix)):
                    continue
                if event.event_id not in self._claimed_lately and self._admit(room_id, event):
                    await self._tell_to_wait(room_id, event)

    async def _tell_to_wait(self, room_id: str, event) -> None:
        """Tell a command's sender, once, that it runs when the database is back."""
        if event.event_id in self._told_waiting:
            return
        self._told_waiting.add(event.event_id)
        log.warning("room %s: command %s from %s waits for the database", room_id, event.event_id, event.sender)
        try:
            await self.matrix.reply(room_id, event.event_id, DB_WAIT_NOTICE)
        except (MatrixError, *NETWORK_ERRORS) as exc:
            log.error("room %s: could not tell %s to wait: %s", room_id, event.sender, _brief(exc))

    async def _finish_pending(self) -> None:
        for event_id in list(self._finish_later):
            try:
                await self.db.finish_event(event_id)
            except Exception as exc:  # noqa: BLE001 - tried again after the next batch
                log.warning("could not mark command %s done yet: %s", event_id, _brief(exc))
                return
            self._finish_later.discard(event_id)
        self._told_waiting.clear()

    async def _answer_cut_off_commands(self) -> None:
        """Commands a crash cut off (claimed, never finished) are answered as failed."""
        for event_id, room_id in await self.db.unfinished_commands():
            if room_id:
                log.warning("room %s: command %s was cut off by a restart; telling its sender", room_id, event_id)
                try:
                    await self.matrix.reply(room_id, event_id, CRASH_REPLY)
                except (MatrixError, *NETWORK_ERRORS) as exc:
                    log.error("room %s: could not answer cut-off command %s: %s", room_id, event_id, exc)
            await self.db.finish_event(event_id)

    def stop(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------------ metrics and health

    def _bridge_connected(self) -> bool:
        connected = getattr(self.bridge, "connected", None)  # an in-process bridge has no link
        return connected is None or connected.is_set()

    def snapshot(self) -> BotSnapshot:
        gate = self.client.gate
        return BotSnapshot(
            last_sync_at=self.last_sync_at if self.last_sync_at is not None else self.started_at,
            bridge_connected=self._bridge_connected(),
            database_failing_seconds=(time.monotonic() - self.db_down_since) if self.db_down_since else 0.0,
            jobs_missed=self.scheduler.missed_count, jobs_failed=self.scheduler.failed_count,
            homeserver_429s=gate.limited_count, requests_queued=gate.queued_count,
            events_waiting=sum(self._pending.values()))

    async def check_database(self) -> int | None:
        """The number of scheduled jobs, read off the event loop; None if the database does
        not answer within DATABASE_CHECK_SECONDS. Sets the database gauges of /metrics."""
        if self._database_check is None or self._database_check.done():  # one at a time, however many ask
            self._database_check = asyncio.ensure_future(self._count_jobs())
        try:
            jobs = await asyncio.wait_for(asyncio.shield(self._database_check), DATABASE_CHECK_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "down" here
            if not (isinstance(exc, TimeoutError) or database_unavailable(exc)):
                log.exception("counting the scheduled jobs for /metrics and /healthz failed")
            self.metrics.database_up.set(0)
            self.metrics.scheduler_jobs.set(math.nan)
            return None
        self.metrics.database_up.set(1)
        self.metrics.scheduler_jobs.set(jobs)
        return jobs

    async def _count_jobs(self) -> int:
        return await self.db.run_apart(self.store.scheduled_job_count)  # not behind commands' work

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy: the first sync is done, the homeserver answered a /sync lately and the
        database answers. The bridge link is reported, not judged (the bot still answers
        commands without it)."""
        jobs = await self.check_database()
        age = time.time() - self.last_sync_at if self.last_sync_at is not None else None
        syncing = self.ready.is_set() and age is not None and age < self._sync_stale_after()
        report = {"syncing": syncing, "seconds_since_sync": round(age, 1) if age is not None else None,
                  "database": "up" if jobs is not None else "down",
                  "bridge": "connected" if self._bridge_connected() else "unreachable",
                  "scheduled_jobs": jobs, "user_id": self.options.user_id}
        return syncing and jobs is not None, report

    def _sync_stale_after(self) -> float:
        """A /sync older than this means the loop is stuck or the homeserver is away: a long
        poll takes sync_timeout_ms, a failing one backs off up to a minute."""
        return self.options.sync_timeout_ms / 1000 + REQUEST_TIMEOUT_SECONDS + 60

    async def close(self) -> None:
        await self._drain_lanes(timeout=10.0)
        if self._notices:
            _, late = await asyncio.wait(set(self._notices), timeout=5.0)
            for task in late:
                task.cancel()
        if self._posting:  # recordings being posted: finished if they can be, soon
            _, late = await asyncio.wait(set(self._posting), timeout=30.0)
            for task in late:
                log.warning("stopping while still posting %s; it is left unposted", task.get_name())
                task.cancel()
        await self.transcript.close()
        await self.reactions.close()
        await asyncio.to_thread(self.scheduler.shutdown)  # joins APScheduler's thread
        await self.spaces.close()
        self.bridge.forget(self.on_bridge_event)  # a bot started after this one gets them
        self.bridge.forget(self.spaces.resync)
        await self.bridge.close()
        await self.client.close()
        await asyncio.to_thread(self.db.close)  # the calls under way finish

    async def _first_sync(self) -> None:
        """The first sync ever: learn the rooms, accept invites, act on no old message."""
        resp = await self.client.sync(timeout=0, full_state=True)
        if not isinstance(resp, SyncResponse):
            raise MatrixError(f"first sync failed: {resp.message}")
        self.last_sync_at = time.time()
        now_ms = int(time.time() * 1000)
        for room_id in resp.rooms.join:
            if await self.db.join_ts(room_id) is None:
                await self.db.record_join(room_id, now_ms)
        for room_id, info in resp.rooms.invite.items():
            await self.on_invite(room_id, info.invite_state)
        await self.db.set_state(TOKEN_KEY, resp.next_batch)
        log.info("first sync done: %d rooms joined, %d invites", len(resp.rooms.join), len(resp.rooms.invite))

    async def _crypto_housekeeping(self) -> None:
        if not self.client.olm:
            return
        try:
            if self.client.should_upload_keys:
                await self.client.keys_upload()
            if self.client.should_query_keys:
                await self.client.keys_query()
            if self.client.should_claim_keys:
                await self.client.keys_claim(self.client.get_users_for_key_claiming())
            await self.client.send_to_device_messages()
        except Exception as exc:  # noqa: BLE001
            log.warning("encryption key upkeep failed: %s", exc)

    # ------------------------------------------------------------------ routing

    async def handle_sync(self, resp: SyncResponse, since: str | None = None) -> None:
        """Claim the events of a sync batch and hand each to its sender's lane.

        Claiming happens here, in order, so the batch's token is saved only once every event
        in it is claimed (a command claimed but not finished when the bot dies is answered as
        failed at the next start). The work runs in lanes: one sender's events in order,
        different senders side by side once one is slow, so one person's slow command never holds up another's.
        Raises when the database is unreachable (the caller handles the batch again)."""
        for room_id, info in resp.rooms.invite.items():
            try:
                await self.on_invite(room_id, info.invite_state)
            except NETWORK_ERRORS as exc:
                log.error("room %s: could not answer an invite: %s", room_id, _brief(exc))
        for room_id, info in resp.rooms.join.items():
            join_ts = self._join_ts.get(room_id)
            if join_ts is None:
                join_ts = await self.db.join_ts(room_id)
                if join_ts is not None:
                    self._join_ts[room_id] = join_ts
            events = info.timeline.events
            if info.timeline.limited and since:
                events = await self._fill_gap(room_id, info.timeline.prev_batch, since) + events
            if join_ts is None:
                own = [i for i, e in enumerate(events) if isinstance(e, RoomMemberEvent)
                       and e.state_key == self.client.user_id and e.membership == "join"]
                if own:
                    join_ts = events[own[-1]].server_timestamp
                    await self.db.record_join(room_id, join_ts)
                    events = events[own[-1] + 1:]
                else:
                    join_ts = 0
                    await self.db.record_join(room_id, 0)
                # cached at once: were the database to go before this room's next batch, the
                # commands in it could not be told to wait (their room's join time unknown)
                self._join_ts[room_id] = join_ts
            for event in events:
                if event.sender == self.client.user_id or event.server_timestamp < join_ts:
                    continue
                if self._pending.get(event.sender, 0) >= MAX_PENDING_PER_SENDER:
                    log.warning("room %s: %s has %d events waiting; event %s is skipped", room_id, event.sender,
                                MAX_PENDING_PER_SENDER, event.event_id)
                    continue
                if not self._admit(room_id, event):
                    continue
                work = await self._claim(room_id, event)
                if work is not None:
                    self._enqueue(event.sender, work, is_command=isinstance(event, RoomMessageText))

    def _admit(self, room_id: str, event) -> bool:
        """Whether a command is within its sender's rate (bot/core/flood.py); anything else is.
        A command past it is dropped before it is claimed, so a flood costs no database
        write; the first one dropped is answered with a notice, the rest are not."""
        if not (isinstance(event, RoomMessageText)
                and command_text(event.source.get("content", {})).startswith(self.options.prefix)):
            return True
        verdict = self._judged.get(event.event_id)
        if verdict is None:
            verdict = self._judged[event.event_id] = self.limiter.take(event.sender, _sent_at(event))
            if len(self._judged) > 2000:
                del self._judged[next(iter(self._judged))]
            self.metrics.command_read(time.time() - event.server_timestamp / 1000)
            if verdict is not Verdict.RUN:
                self.metrics.command_done(UNKNOWN, "rate_limited")
            if verdict is Verdict.WARN:
                self._warn_flooder(room_id, event)
        return verdict is Verdict.RUN

    def _warn_flooder(self, room_id: str, event) -> None:
        wait = self.limiter.silenced_for(event.sender, time.time())
        o = self.options
        log.warning("room %s: %s sent more than %d commands in a short time; their commands are dropped for "
                    "%.0f s", room_id, event.sender, o.command_burst, wait)
        text = (f"⏳ Slow down: you sent more than {plural(o.command_burst, 'command')} in a short time, so I am not "
                f"reading your commands for the next {plural(max(1, round(wait)), 'second')} (commands sent until then "
                f"are dropped; send them again after). Everyone may send {o.command_burst} at once and "
                f"{o.commands_per_minute:g} a minute.")

        async def tell() -> None:
            acting_for.set(event.sender)
            try:
                await self.matrix.reply(room_id, event.event_id, text)
            except (MatrixError, *NETWORK_ERRORS) as exc:
                log.error("room %s: could not tell %s to slow down: %s", room_id, event.sender, _brief(exc))

        task = asyncio.create_task(tell(), name=f"slow down {event.sender}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _claim(self, room_id: str, event) -> Coroutine[Any, Any, None] | None:
        """Claim ``event`` if the bot acts on it; the work to do, or None."""
        deadline = self.options.command_deadline_seconds
        if isinstance(event, RoomMessageText):
            text = command_text(event.source.get("content", {}))
            if text.startswith(self.options.prefix) and await self._claim_command(room_id, event):
                return self._command(room_id, event, text[len(self.options.prefix):])
        elif isinstance(event, ReactionEvent):
            if await self.db.claim_event(event.event_id):
                return self._bounded(self.on_reaction(room_id, event), deadline, room_id, event)
        elif isinstance(event, RoomMemberEvent):
            if await self.db.space_by_room(room_id) and await self.db.claim_event(event.event_id):
                return self._bounded(self.on_member(room_id, event), deadline, room_id, event)
        elif isinstance(event, RoomMessageAudio):
            if await self.db.space_by_room(room_id) and await self.db.claim_event(event.event_id):
                # downloading and decoding a voice message takes longer than a command
                return self._bounded(self.on_voice_message(room_id, event), max(deadline, 180.0), room_id, event)
        return None

    # ------------------------------------------------------------------ lanes

    def _enqueue(self, sender: str, work: Coroutine[Any, Any, None], is_command: bool = False) -> None:
        """Run ``work`` after the sender's earlier events, and after everyone's earlier events
        unless one of those has run for HEAD_START_SECONDS: events are handled in the order
        they came (an invitation before the join it allows), but a slow one is overtaken.
        A burst of one person's commands holds up no one else past its first
        BURST_HOLDS_OTHERS: the next person's command or join waits for those, never for all
        of it (any other event, such as an invitation or a join, always holds up the next)."""
        self._pending[sender] = self._pending.get(sender, 0) + 1
        started = asyncio.Event()
        task = asyncio.create_task(self._lane_step(self._tail, self._lanes.get(sender), work, sender, started),
                                   name=f"lane {sender}")
        if not is_command or self._pending[sender] <= BURST_HOLDS_OTHERS:
            self._tail = (task, started)
        self._lanes[sender] = task
        self._lane_tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._lane_tasks.discard(t)
            if self._lanes.get(sender) is t:
                del self._lanes[sender]
            if self._tail is not None and self._tail[0] is t:
                self._tail = None

        task.add_done_callback(done)

    async def _lane_step(self, before: tuple[asyncio.Task, asyncio.Event] | None, same_sender: asyncio.Task | None,
                         work: Coroutine[Any, Any, None], sender: str, started: asyncio.Event) -> None:
        begun = False
        try:
            if same_sender is not None:
                await asyncio.wait({same_sender})  # its own errors were handled (and logged) in it
            if before is not None and not before[0].done():
                previous, previous_started = before
                waiter = asyncio.ensure_future(previous_started.wait())
                try:
                    await asyncio.wait({previous, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                await asyncio.wait({previous}, timeout=HEAD_START_SECONDS)
            begun = True
            started.set()
            acting_for.set(sender)  # the requests it makes are this person's (send_gate.py)
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad event must not stop the lane
            log.exception("an event from %s failed", sender)
        finally:
            started.set()
            if not begun:
                work.close()
            left = self._pending.get(sender, 1) - 1
            if left > 0:
                self._pending[sender] = left
            else:
                self._pending.pop(sender, None)

    async def _drain_lanes(self, timeout: float) -> None:
        """Let running work finish (up to ``timeout``), then cut off the rest: commands cut
        off stay unfinished and are answered as failed at the next start."""
        tasks = set(self._lane_tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _command(self, room_id: str, event: RoomMessageText, text: str) -> None:
        try:
            await self.on_command(room_id, event, text)
        except asyncio.CancelledError:
            raise  # cut off (shutdown): stays unfinished, answered as failed at the next start
        except BaseException:
            await self._finish(event.event_id)
            raise
        await self._finish(event.event_id)

    async def _fill_gap(self, room_id: str, prev_batch: str, since: str) -> list:
        """The events a limited sync left out, oldest first (from /messages, back to ``since``)."""
        gathered: list = []
        token = prev_batch
        for _ in range(MAX_GAP_PAGES):
            try:
                resp = await self.client.room_messages(room_id, start=token, end=since,
                                                       direction=MessageDirection.back, limit=100)
            except NETWORK_ERRORS as exc:
                log.error("room %s: could not fetch the events a sync left out: %s", room_id, _brief(exc))
                break
            if isinstance(resp, ErrorResponse):
                log.error("room %s: could not fetch the events a sync left out: %s", room_id, resp.message)
                break
            gathered.extend(resp.chunk)
            if not resp.chunk or not resp.end or resp.end == token:
                break
            token = resp.end
        else:
            log.warning("room %s: more than %d events arrived between two syncs; older ones were skipped",
                        room_id, MAX_GAP_PAGES * 100)
        if gathered:
            log.info("room %s: fetched %d events a sync left out", room_id, len(gathered))
        gathered.reverse()
        return gathered

    async def _bounded(self, work: Awaitable[None], deadline: float, room_id: str, event) -> None:
        try:
            await asyncio.wait_for(work, deadline)
        except TimeoutError:
            log.warning("room %s: %s from %s stopped after %.0f s (event %s)", room_id, type(event).__name__,
                        event.sender, deadline, event.event_id)
        except NETWORK_ERRORS as exc:
            log.warning("room %s: %s from %s not carried out, the homeserver did not answer: %s", room_id,
                        type(event).__name__, event.sender, _brief(exc))

    async def _claim_command(self, room_id: str, event) -> bool:
        """Claim a command (unfinished until answered). If the database is unreachable, say
        once that it will run when the database is back, and raise."""
        try:
            claimed = await self.db.claim_event(event.event_id, room_id)
        except Exception as exc:
            if database_unavailable(exc):
                await self._tell_to_wait(room_id, event)
            raise
        self._claimed_lately[event.event_id] = None
        if len(self._claimed_lately) > 1000:
            del self._claimed_lately[next(iter(self._claimed_lately))]
        return claimed

    async def _finish(self, event_id: str) -> None:
        try:
            await self.db.finish_event(event_id)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._finish_later.add(event_id)

    async def on_invite(self, room_id: str, invite_state) -> None:
        inviter, is_direct = None, False
        for ev in invite_state:
            if isinstance(ev, InviteMemberEvent) and ev.state_key == self.client.user_id:
                inviter = ev.sender
                is_direct = (ev.content or {}).get("is_direct") is True
        allowed = self.options.allowed_homeservers
        if allowed and (inviter is None or server_of(inviter) not in allowed):
            log.info("room %s: ignoring invite from %s (server not in allowed_homeservers)", room_id, inviter)
            await self.client.room_leave(room_id)
            return
        resp = await self.client.join(room_id)
        if isinstance(resp, ErrorResponse):
            log.warning("room %s: could not accept invite from %s: %s", room_id, inviter, resp.message)
        else:
            log.info("room %s: joined on invite from %s%s", room_id, inviter, " (a direct message)" * is_direct)
            if is_direct and inviter and inviter != self.client.user_id:
                # as Element does for the one invited: their DM, where the bot writes to them
                await self.matrix.direct.mark(inviter, room_id)

    # ------------------------------------------------------------------ commands

    async def on_command(self, room_id: str, event: RoomMessageText, text: str) -> None:
        """Run one command; counted and timed for /metrics by its name and how it ended."""
        record = CommandRecord()
        started = time.perf_counter()
        try:
            await self._run_command(room_id, event, text, record)
        except asyncio.CancelledError:
            record.outcome = "cut_off"
            raise
        finally:
            self.metrics.command_done(record.command, record.outcome, time.perf_counter() - started)

    async def _run_command(self, room_id: str, event: RoomMessageText, text: str, record: CommandRecord) -> None:
        content = event.source.get("content", {})
        ctx = Ctx(self.services, event.sender, room_id, event.event_id, content)
        if len(text) > MAX_COMMAND_CHARS:
            record.outcome = "too_long"
            log.info("room %s: ignored a %d-character command from %s", room_id, len(text), event.sender)
            await self._safe_reply(ctx, f"That is too long for a command ({len(text)} characters; at most "
                                   f"{MAX_COMMAND_CHARS}). Type {self.options.prefix}help to see the commands.")
            return
        for user_id, label in pills_in(content.get("formatted_body")):
            if label and label in text:
                text = text.replace(label, user_id, 1)
        tokens = split_args(text)
        if not tokens:
            record.outcome = "unknown"
            return
        registry = self.services.registry
        name = clip(" ".join(tokens[:2]), 40)
        deadline = self.options.command_deadline_seconds
        try:
            spec, rest = registry.find(tokens, self.options.prefix)
            name = record.command = spec.name
            values = parse(spec, rest, self.options.prefix)
            log.info("room %s: %s runs %s", room_id, event.sender, name)
            await asyncio.wait_for(spec.handler(ctx, **values), deadline)
            record.outcome = "ok"
        except (UsageError, rules.Refused) as exc:
            record.outcome = "refused" if record.command != UNKNOWN else "unknown"  # not found: find() said so
            await self._safe_reply(ctx, str(exc))
        except MatrixError as exc:
            record.outcome = "matrix_error"
            log.error("room %s: command %s from %s failed on Matrix: %s", room_id, name, event.sender, exc)
            await self._safe_reply(ctx, f"Something went wrong talking to the homeserver: {exc}")
        except TimeoutError:
            record.outcome = "timeout"
            log.warning("room %s: command %s from %s stopped at its deadline of %.0f s", room_id, name,
                        event.sender, deadline)
            await self._safe_reply(ctx, f"That took longer than {deadline:.0f} seconds and was stopped: the "
                                   "homeserver or the audio bridge did not answer in time. Part of it may have "
                                   "happened; check, then try again.")
        except NETWORK_ERRORS as exc:
            record.outcome = "homeserver_unreachable"
            log.error("room %s: command %s from %s: the homeserver did not answer: %s", room_id, name,
                      event.sender, _brief(exc))
            await self._safe_reply(ctx, "The homeserver did not answer in time, so that did not complete. "
                                   "Try again in a minute.")
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            record.outcome = "database_down"
            log.error("room %s: command %s from %s: database unreachable: %s", room_id, name, event.sender,
                      _brief(exc))
            await self._safe_reply(ctx, DB_DOWN_REPLY)

    async def _safe_reply(self, ctx: Ctx, text: str) -> None:
        if len(text) > MAX_REPLY_CHARS:
            text = text[: MAX_REPLY_CHARS - 1] + "…"
        try:
            await ctx.reply(text)
        except (MatrixError, *NETWORK_ERRORS) as exc:
            log.error("room %s: could not reply to %s: %s", ctx.room_id, ctx.sender, _brief(exc))

    # ------------------------------------------------------------------ reactions

    async def on_reaction(self, room_id: str, event: ReactionEvent) -> None:
        ref = await self.db.ref(event.reacts_to)
        if ref is None:
            return
        key = event.key.replace("\ufe0f", "")
        user = event.sender
        ctx = Ctx(self.services, user, room_id, event.reacts_to, event.source.get("content", {}))
        try:
            if ref.kind == "speak_request" and ref.subject_user_id:
                if key in ("✅", "✔"):
                    await self.spaces.act(ref.space_id, user, rules.Approve(ref.subject_user_id))
                elif key in ("❌", "✖"):
                    await self.spaces.act(ref.space_id, user, rules.Deny(ref.subject_user_id))
            elif ref.kind == "card":
                if key == "🎧":
                    await self.spaces.act(ref.space_id, user, rules.Join())
                    await self.spaces.welcome(ref.space_id, user)
                elif key == "✋":
                    rec = await self.db.load_space(ref.space_id)
                    if rec and user not in rec.space.people:
                        await self.spaces.act(ref.space_id, user, rules.Join())
                        await self.spaces.welcome(ref.space_id, user)
                    await self.spaces.act(ref.space_id, user, rules.RaiseHand())
                elif key == "🔔":
                    await self.matrix.dm(user, await self.spaces.remind(ref.space_id, user, True))
                else:
                    rec = await self.db.load_space(ref.space_id)
                    if rec and user in rec.space.people and rules.is_reaction_key(key):
                        await self.spaces.act(ref.space_id, user, rules.React(key))
        except rules.Refused as exc:
            await self._safe_reply(ctx, f"{user}: {exc}")

    # ------------------------------------------------------------------ membership

    async def on_member(self, room_id: str, event: RoomMemberEvent) -> None:
        rec = await self.db.unit(lambda st: _space_of_room(st, room_id))
        if rec is None or rec.space.state is not State.LIVE:
            return
        space_id = rec.space.id
        user = event.state_key
        if user == self.client.user_id:
            return
        space = rec.space
        try:
            if event.membership == "join" and user not in space.people and event.prev_membership != "join":
                await self.spaces.act(space_id, user, rules.Join())
            elif event.membership == "leave" and event.sender == user and user in space.people:
                if user != space.host:
                    await self.spaces.act(space_id, user, rules.Leave())
            elif event.membership == "invite" and event.sender in (
                    u for u, r in space.people.items() if r in (Role.HOST, Role.COHOST)):
                if user not in space.invited:
                    await self.spaces.act(space_id, event.sender, rules.Invite(user))
            elif event.membership == "knock":
                await self._answer_knock(space_id, room_id, user)
        except rules.Refused as exc:
            if event.membership == "join":
                log.info("space %s: %s joined room %s but may not be in the space: %s",
                         space_id, user, room_id, exc)
                await self.matrix.kick(room_id, user, str(exc))

    async def _answer_knock(self, space_id: str, room_id: str, user: str) -> None:
        rec = await self.db.load_space(space_id)
        space = rec.space
        actor = await self.spaces.actor(user, host=space.host)
        if user in space.removed or actor.banned:
            await self.matrix.kick(room_id, user, "You may not join this space.")
        elif actor.followed_by_host or user in space.invited or actor.is_moderator:
            log.info("space %s: letting in %s's knock", space_id, user)
            await self.matrix.invite(room_id, user)
        else:
            log.info("space %s: refusing %s's knock (not followed by host %s)", space_id, user, space.host)
            await self.matrix.kick(room_id, user,
                                   f"This space is open to people {space.host} follows. "
                                   "Ask the host to follow or invite you.")

    async def _post_transcript(self, space_id: str, plain: str, rich: str) -> None:
        rec = await self.db.load_space(space_id)
        if rec and rec.row.room_id:
            await self.matrix.notice(rec.row.room_id, plain, rich)

    # ------------------------------------------------------------------ voice messages

    async def on_voice_message(self, room_id: str, event: RoomMessageAudio) -> None:
        """A speaker's voice message in the space's room is played into the live mix."""
        rec = await self.db.unit(lambda st: _space_of_room(st, room_id))
        if rec is None or rec.space.state is not State.LIVE:
            return
        space_id = rec.space.id
        role = rec.space.people.get(event.sender)
        if role not in (Role.HOST, Role.COHOST, Role.SPEAKER):
            await self.matrix.reply(room_id, event.event_id,
                                    "Only the space's speakers can play voice messages into it.")
            return
        try:
            data, content_type = await self.matrix.download(event.url, MAX_VOICE_BYTES)
            duration = await self.bridge.play(space_id, data, content_type or "audio/ogg", event.sender)
        except (MatrixError, BridgeError) as exc:
            log.warning("space %s: voice message %s from %s in room %s not played: %s",
                        space_id, event.event_id, event.sender, room_id, exc)
            await self.matrix.reply(room_id, event.event_id, f"I could not play that voice message: {exc}")
            return
        log.info("space %s: playing a %.1f s voice message from %s", space_id, duration, event.sender)
        await self.matrix.react(room_id, event.event_id, "🔊")

    # ------------------------------------------------------------------ bridge

    async def _post_files(self, event: dict) -> None:
        """A recording (with its transcript, if any) or a transcript alone, from the bridge
        to the space's room."""
        space_id = event["space_id"]
        try:
            await self.transcript.flush(space_id)
            name = _file_name(event, "file", "path")
            if event["type"] == "transcript_ready":
                await self.spaces.keep_file(space_id, name, "transcript")
                await self.spaces.post_transcript_file(space_id, name)
                return
            transcript = None
            if event.get("transcript_file") or event.get("transcript_path"):
                transcript = _file_name(event, "transcript_file", "transcript_path")
            await self.spaces.keep_file(space_id, name, "recording", float(event.get("duration") or 0),
                                        transcript)
            what = "recording"
            if event.get("recovered"):  # what was recorded before the bridge died
                what = "recording up to the audio bridge's restart"
            await self.spaces.post_audio(space_id, name, float(event.get("duration") or 0), what)
            if transcript:
                await self.spaces.post_transcript_file(space_id, transcript)
        except MatrixError as exc:
            log.error("space %s: the %s could not be posted on Matrix: %s", space_id,
                      event["type"].removesuffix("_ready"), exc)
        except Exception:  # noqa: BLE001 - a task of its own: nothing else would log it
            log.exception("space %s: posting the %s failed", space_id, event["type"])

    async def on_bridge_event(self, event: dict) -> None:
        kind, space_id, user = event.get("type"), event.get("space_id"), event.get("user_id")
        try:
            if kind == "hand_raised" and space_id and user:
                await self.spaces.act(space_id, user, rules.RaiseHand())
            elif kind == "reaction" and space_id and user and event.get("key"):
                await self.spaces.act(space_id, user, rules.React(event["key"]))
            elif kind in ("recording_ready", "transcript_ready") and space_id and (
                    event.get("file") or event.get("path")):
                # a download and an upload: off the events link, so hands and reactions
                # do not wait behind a long recording (a clip_ready is not posted here:
                # !space clip posts the clip it asked for)
                task = asyncio.create_task(self._post_files(event), name=f"post-files:{space_id}")
                self._posting.add(task)
                task.add_done_callback(self._posting.discard)
            elif kind == "recording_failed" and space_id:
                await self.spaces.recording_failed(space_id, str(event.get("reason") or "unknown error"),
                                                   bool(event.get("recovered")))
            elif kind == "caption" and space_id and user and event.get("final"):
                if self.options.captions_to_room:
                    self.transcript.add(space_id, user, str(event.get("text") or ""), float(event.get("start") or 0))
            elif kind in ("listener_joined", "listener_left") and space_id:
                n = int(event.get("listeners") or 0)
                await self.db.raise_peak_listeners(space_id, n)
                if kind == "listener_joined" and user and self.spaces.profiles is not None:
                    self.spaces.profiles.want(space_id, [user])  # their face in the audience row
        except rules.Refused as exc:
            log.info("space %s: bridge event %s from %s refused: %s", space_id, kind, user, exc)
        except MatrixError as exc:
            log.error("space %s: bridge event %s could not be carried out on Matrix: %s", space_id, kind, exc)



@dataclass
class CommandRecord:
    """What /metrics learns of one command: its name (UNKNOWN until it is found) and how it
    ended (``error`` unless something else is said)."""

    command: str = UNKNOWN
    outcome: str = "error"


def _space_of_room(st: Store, room_id: str):
    """The space whose room this is (its record), or None."""
    space_id = st.space_by_room(room_id)
    return st.load_space(space_id) if space_id else None


def _file_name(event: dict, name_key: str, path_key: str) -> str:
    """The bridge's name for a file in an event (its path's last part, for a bridge that
    gives only the path); the bot fetches it by that name, never from the path."""
    return str(event.get(name_key) or PurePosixPath(str(event.get(path_key) or "")).name)


def _sent_at(event) -> float:
    """When ``event`` was sent (the homeserver's clock, in seconds), never later than now: a
    backlog (after a restart or a database outage) is charged to the limiter as it was sent,
    and a forged timestamp cannot put an event in the future."""
    return min(time.time(), (getattr(event, "server_timestamp", 0) or 0) / 1000 or time.time())


def _brief(exc: BaseException) -> str:
    """An exception in a few words for a log line: its type and first line, never a repr
    that could carry a request's headers."""
    text = str(exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {clip(text, 200)}" if text else type(exc).__name__
