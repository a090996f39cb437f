"""One open stage: its connections, its roles, its 20 ms tick, its recording.

Everything here runs on the event loop; nothing blocks it except the numpy/Opus work
of one tick. Each tick's audio is encoded once and framed once; the same bytes are
written to every listener's transport (bridge/connection.py), or, for listen-only
clients that asked for them, gathered into one bundle every ``listener_bundle_ms``.
Speakers get their own mix-minus, frame by frame. A connection whose unsent audio passes
its bound is kicked; control messages wait, bounded and coalesced, for the next audio
write. Reactions and hand changes are rate-limited and sent in batches
(bridge/activity.py), so what one person does costs every listener at most one message
per flush.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import feed, jsonsafe, opus, tokens, wire, wsframe
from .activity import ActivityBatch, ActivityLimits
from .bundles import BundleGroups
from .captions import CaptionPool, CaptionsError, StageCaptions
from .connection import (
    BEHIND_REASON,
    CLOSE_BAD_TOKEN,
    CLOSE_FORBIDDEN,
    CLOSE_SPACE_ENDED,
    CLOSE_TOO_SLOW,
    FRAME_MS,
    Client,
    state_key,
)
from .icecast import IcecastSource, IcecastTarget, stream_url
from .mixer import FRAME_SAMPLES, FRAME_SECONDS, SILENCE_DBFS, Mixer, TickResult
from .oggstream import LiveOgg, OggListener
from .page_info import PageInfo, Profile, ProfileBook
from .recording import Recorder, safe_name, write_clip
from .roles import AUDIO_ROLES
from .settings import BridgeSettings
from .voice import VoiceQueue

log = logging.getLogger(__name__)


LEVELS_EVERY_TICKS = 5
PARTICIPANTS_EVERY_TICKS = 10
#: reactions and hand changes go out as one ``activity`` message this often (200 ms)
ACTIVITY_EVERY_TICKS = 10
#: forget the rate-limit budgets of users who left, this often (10 s)
FORGET_BUDGETS_EVERY_TICKS = 500
#: close connections whose token has ended, this often (1 s)
EXPIRY_EVERY_TICKS = 50
REMOVED_REASON = "removed from this space by a moderator"
#: a client's JSON messages are tiny; anything larger or deeper is refused unparsed
MAX_CLIENT_JSON_BYTES = 4096
MAX_CLIENT_JSON_DEPTH = 4
Emit = Callable[[dict[str, Any]], None]


class Mirror(Protocol):
    """Where an origin's stage sends its frames, broadcasts and state for the edges
    (bridge/origin_feed.py); every call returns at once."""

    origin_url: str

    def publish(self, space_id: str, data: bytes) -> None: ...
    def urls(self) -> list[str]: ...
    def hand_out(self) -> str | None: ...


def _seconds_left(expires_at: float | None) -> float | None:
    """How long a token has left by the bridge's clock (a browser's may be wrong)."""
    return None if expires_at is None else round(max(0.0, expires_at - time.time()), 3)


def ogg_buffer_limit(settings: BridgeSettings) -> int:
    """Unsent bytes a live.ogg listener may have before it counts as too slow: the audio
    of ``listener_queue_frames`` frames plus two pages, at the mix's bitrate (a packet is
    at most bitrate/400 bytes; 32 more for page and chunk framing)."""
    per_packet = settings.opus_bitrate // 400 + 32
    return (settings.listener_queue_frames + 2 * (settings.ogg_page_ms // FRAME_MS)) * per_packet


@dataclass
class TickTiming:
    samples: deque

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        return float(np.percentile(np.fromiter(self.samples, float), q))


class Stage:
    def __init__(
        self,
        space_id: str,
        title: str,
        *,
        public: bool,
        record: bool,
        captions: bool,
        settings: BridgeSettings,
        emit: Emit,
        captions_pool: CaptionPool | None = None,
        mirror: Mirror | None = None,
        tick_timer: Callable[[float, float], None] | None = None,
    ) -> None:
        self.space_id = space_id
        #: told each tick's duration and how late it started, in seconds (the bridge's /metrics)
        self.tick_timer = tick_timer
        #: the Redis feed to the edges, if this origin has one
        self.mirror = mirror
        #: listeners of this space on edges, as their last heartbeats said
        self.edge_listeners = 0
        self.title = title
        self.public = public
        self.captions = False
        self.captions_pool = captions_pool
        #: created when captions are first turned on; keeps the finals for the transcript
        self.captioner: StageCaptions | None = None
        self.settings = settings
        self._emit = emit
        self.roles: dict[str, str] = {}
        #: the host, the room's link and the tip jar, for the page (bridge/page_info.py)
        self.info = PageInfo()
        #: display names and avatars the bot gave (the page shows them; protocol 1.4)
        self.profiles = ProfileBook()
        #: users a moderator removed: cut off, and refused until the bot says otherwise
        self.removed: frozenset[str] = frozenset()
        self.mixer = Mixer(settings.jitter_frames, 1)
        #: voice messages played into the mix (bridge/voice.py)
        self.voice = VoiceQueue(self.mixer)
        self.clients: dict[int, Client] = {}
        #: how the tick reaches them: frame by frame, or a bundle every ``bundle_ticks``
        self._per_frame: dict[int, Client] = {}
        self.bundle_ticks = settings.listener_bundle_ms // FRAME_MS
        self.bundles: BundleGroups[Client] | None = (
            BundleGroups(self.bundle_ticks) if self.bundle_ticks > 1 else None)
        self.encoder = opus.Encoder(settings.opus_bitrate)
        self.pre_skip = self.encoder.lookahead
        #: the live.ogg stream, shared by all its listeners (bridge/oggstream.py)
        self.ogg = LiveOgg(pre_skip=self.pre_skip, title=title,
                           page_packets=settings.ogg_page_ms // FRAME_MS,
                           buffer_limit=ogg_buffer_limit(settings),
                           too_slow=(CLOSE_TOO_SLOW, BEHIND_REASON),
                           space_id=space_id)
        #: feeds live.ogg to Icecast while the space is public and icecast_url is set
        self.icecast: IcecastSource | None = None
        self._icecast_stopping: asyncio.Task[Any] | None = None
        self.peak_listeners = 0
        self.tick_count = 0
        self.clock_resyncs = 0
        self.tick_seconds: deque[float] = deque(maxlen=3000)
        #: the mixing part of each tick: decode, mix, the shared and mix-minus encodes
        self.mix_seconds: deque[float] = deque(maxlen=3000)
        #: how late each tick started against its 20 ms clock: what the listeners feel when
        #: the event loop is held by other work (the bot's, in embedded mode)
        self.tick_late_seconds: deque[float] = deque(maxlen=3000)
        self.clip_ring: deque[np.ndarray] = deque(
            maxlen=max(1, int(settings.clip_seconds / FRAME_SECONDS))
        )
        self.recorder: Recorder | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self.open = True
        self._participants_dirty = False
        #: signed-in users whose hand is up (one state per user, whatever their sockets)
        self.hands: set[str] = set()
        #: of those, the ones raised on an edge, and which (bridge/origin_feed.py)
        self.hands_on_edges: dict[str, str] = {}
        self.limits = ActivityLimits()
        self.activity = ActivityBatch()
        #: what was accepted and refused from clients (tests, bench, logs)
        self.counters = {"reactions_accepted": 0, "reactions_refused": 0, "hands_accepted": 0,
                         "hands_refused": 0, "bad_messages": 0, "activity_messages": 0}
        #: called after each tick (tests, bench); must not block
        self.tick_hooks: list[Callable[[TickResult], None]] = []
        if captions:
            self.set_captions(True)
        if record:
            self.set_record(True)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"stage-tick:{self.space_id}")
        self._sync_icecast()
        self.publish_state()

    def retitle(self, title: str) -> None:
        """New listeners of live.ogg, and Icecast's next mount, carry the new title."""
        self.title = title
        self.ogg.retitle(title)
        if self.icecast is not None:
            self.icecast.title = title
        self.publish_state()

    def set_public(self, public: bool) -> None:
        """Public or not; only a public space is fed to Icecast (bridge/icecast.py)."""
        self.public = public
        self._sync_icecast()
        self.publish_state()

    def feed_state(self) -> feed.SpaceState:
        return feed.SpaceState(self.title, self.public, dict(self.roles), self.removed,
                               self.captions, self.is_recording(),
                               self.mirror.origin_url if self.mirror is not None else "",
                               people=self.stage_people(), info=self.info.as_json())

    # -- what the page shows besides audio (protocol 1.4) ------------------------------

    def on_stage(self) -> list[str]:
        """The host, co-hosts and speakers, in that order (then by user id)."""
        order = {"host": 0, "cohost": 1, "speaker": 2}
        return sorted((u for u, r in self.roles.items() if r in AUDIO_ROLES),
                      key=lambda u: (order.get(self.roles[u], 3), u))

    def stage_people(self) -> dict[str, dict[str, Any]]:
        """The names and avatars of the people on stage (host, co-hosts, speakers): every
        page gets them with its hello and after each change. Listeners' come inline in
        ``participants``."""
        return self.profiles.of(self.on_stage())

    def profile_of(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def set_info(self, info: PageInfo) -> None:
        if info != self.info:
            self.info = info
            self._broadcast_json({"type": "info", **info.as_json()})
            self.publish_state()

    def set_people(self, people: dict[str, Profile]) -> None:
        """Names and avatars from the bot; the pages hear of a change to someone on stage
        at once, of a listener's with the next participants list."""
        changed = self.profiles.update(people)
        if not changed:
            return
        if any(self.roles.get(u) in AUDIO_ROLES for u in changed):
            self._broadcast_stage_people()
            self.publish_state()
        connected = {c.user_id for c in self.clients.values()}
        if any(u in self.hands or u in connected for u in changed if self.roles.get(u) not in AUDIO_ROLES):
            self._broadcast_participants()

    def _broadcast_stage_people(self) -> None:
        self._broadcast_json({"type": "people", "people": self.stage_people()})

    def answer_hand(self, user_id: str, answer: str) -> None:
        """The host's answer to a raised hand, other than a yes (a yes is a roles push):
        the hand comes down and that person's pages are told (``answer``)."""
        if user_id in self.hands:
            self.hands.discard(user_id)
            self.hands_on_edges.pop(user_id, None)
            self.activity.set_hand(user_id, False)
            self._broadcast_participants()
        message = {"type": "answer", "answer": answer}
        for client in self.clients.values():
            if client.user_id == user_id:
                client.send_json(message)
        if self.mirror is not None:  # the person may be listening on an edge
            self.mirror.publish(self.space_id, feed.to_user(user_id, message))

    def publish_state(self) -> None:
        """The state, to the edges (on every change, and each second from the feed)."""
        if self.mirror is not None and self.open:
            self.mirror.publish(self.space_id, self.feed_state().encode())

    def set_edge_listeners(self, count: int) -> None:
        if count != self.edge_listeners:
            self.edge_listeners = count
            self.peak_listeners = max(self.peak_listeners, self.listeners)
            self._broadcast_participants()  # the anonymous count

    def _sync_icecast(self) -> None:
        wanted = self.open and self.public and bool(self.settings.icecast_url)
        if wanted and self.icecast is None:
            # an earlier source of this mount (the space was private for a moment) lets go
            # of it first, or Icecast would refuse the new one (403)
            self.icecast = IcecastSource(IcecastTarget.parse(self.settings.icecast_url), self.ogg,
                                         self.space_id, title=self.title,
                                         page_url=self.page_url(), bitrate=self.settings.opus_bitrate,
                                         after=self._icecast_stopping)
            self.icecast.start()
        elif not wanted and self.icecast is not None:
            source, self.icecast = self.icecast, None
            log.info("space %s: no longer public; unmounting it from Icecast (%s)", self.space_id,
                     source.where)
            self._icecast_stopping = self._spawn(source.stop())

    def page_url(self) -> str:
        """The space's page, when the bridge's public address is configured."""
        base = self.settings.public_url
        return f"{base}/spaces/{self.space_id}" if base else ""

    def stream_url(self) -> str | None:
        """Where any player hears this space through the Icecast tier: only while it is
        mounted there (otherwise players are better off at the bridge's own live.ogg)."""
        base = self.settings.icecast_listen_url
        if self.icecast is None or self.icecast.state != "live" or not base:
            return None
        return stream_url(base, self.space_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def close(self, code: int = CLOSE_SPACE_ENDED, reason: str = "space ended",
                    *, wait: bool = True) -> None:
        """Stop the tick, disconnect everyone with ``reason``, finish the recording.

        With ``wait=False`` the recording's conversion is left running; await
        :meth:`drain` for it.
        """
        if not self.open:
            return
        self.open = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for client in list(self.clients.values()):
            client.send_json({"type": "closing", "reason": reason})
            client.flush()
            client.kick(code, reason)
        self.ogg.end(code, reason)
        if self.mirror is not None:  # 1001: the origin is going away, the space may come back
            self.mirror.publish(self.space_id, feed.ended(reason, code))
        if self.icecast is not None:  # the last page is written; it goes out, then the close
            source, self.icecast = self.icecast, None
            await source.stop()
        if self.captioner is not None and self.recorder is None:
            self._spawn(self._finish_transcript())
        self.voice.clear()
        self.set_record(False)
        self.encoder.close()
        if wait:
            await self.drain()

    async def drain(self) -> None:
        """Wait for background work (recording conversion, clips) to finish."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- state -------------------------------------------------------------------

    @property
    def ogg_listeners(self) -> set[OggListener]:
        return self.ogg.listeners

    @property
    def listeners(self) -> int:
        return len(self.clients) + len(self.ogg_listeners) + self.edge_listeners

    def speakers_connected(self) -> int:
        users = {c.user_id for c in self.clients.values() if self.may_speak(c.user_id)}
        return len(users)

    def is_recording(self) -> bool:
        return self.recorder is not None

    def may_speak(self, user_id: str | None) -> bool:
        return user_id is not None and self.roles.get(user_id) in AUDIO_ROLES

    def stats(self) -> dict[str, Any]:
        return {
            "space_id": self.space_id,
            "open": self.open,
            "listeners": self.listeners,
            "edge_listeners": self.edge_listeners,
            "peak_listeners": self.peak_listeners,
            "speakers_connected": self.speakers_connected(),
            "recording": self.is_recording(),
            "captions": self.captions,
            "title": self.title,
            "public": self.public,
            "icecast": self.icecast.status() if self.icecast is not None else None,
            "ticks": self.tick_count,
            "clock_resyncs": self.clock_resyncs,
            "tick_ms_p50": round(TickTiming(self.tick_seconds).percentile(50) * 1000, 3),
            "tick_ms_p99": round(TickTiming(self.tick_seconds).percentile(99) * 1000, 3),
            "mix_ms_p50": round(TickTiming(self.mix_seconds).percentile(50) * 1000, 3),
            "mix_ms_p99": round(TickTiming(self.mix_seconds).percentile(99) * 1000, 3),
            "tick_late_ms_p50": round(TickTiming(self.tick_late_seconds).percentile(50) * 1000, 3),
            "tick_late_ms_p99": round(TickTiming(self.tick_late_seconds).percentile(99) * 1000, 3),
            "tick_late_ms_max": round(max(self.tick_late_seconds, default=0.0) * 1000, 3),
        }

    def may_join(self, user_id: str | None) -> bool:
        """Whether this user may connect (anonymous listeners are the app's to judge)."""
        return user_id not in self.removed

    def set_removed(self, removed: frozenset[str]) -> None:
        """Who a moderator removed; their connections are closed now (4403)."""
        self.removed = frozenset(removed)
        for conn in [*self.clients.values(), *self.ogg_listeners]:
            if conn.user_id is not None and conn.user_id in self.removed:
                log.info("space %s: %s removed by a moderator; connection closed",
                         self.space_id, conn.user_id)
                conn.kick(CLOSE_FORBIDDEN, REMOVED_REASON)
        self.publish_state()

    def set_roles(self, roles: dict[str, str]) -> None:
        """Replace the role map; anyone who may no longer speak is cut from the next tick."""
        self.roles = dict(roles)
        self.voice.drop_unless(self.may_speak)
        for client in self.clients.values():
            if not self.may_speak(client.user_id):
                self.mixer.remove_speaker(client.id)
                client.decoder = None
                client.encoder = None
            self._place(client)
        for user_id in [u for u in self.hands if self.may_speak(u)]:
            self.hands.discard(user_id)  # on stage now: the hand has done its job
            self.hands_on_edges.pop(user_id, None)
            self.activity.set_hand(user_id, False)
        self._broadcast_json({"type": "roles", "roles": self.roles})
        self._broadcast_stage_people()
        for client in self.clients.values():
            client.send_json({"type": "you", "role": self.role_of(client),
                              "may_speak": self.may_speak(client.user_id)})
        self._broadcast_participants()
        self.publish_state()

    def role_of(self, client: Client) -> str:
        if client.user_id is None:
            return "listener"
        return self.roles.get(client.user_id, "listener")

    def set_captions(self, on: bool) -> None:
        """Captions on or off; on needs a started caption pool (else CaptionsError)."""
        if on and self.captioner is None:
            if self.captions_pool is None or not self.captions_pool.ready:
                raise CaptionsError("captions are not running on this bridge")
            self.captioner = StageCaptions(self.captions_pool, self.space_id,
                                           broadcast=self._broadcast_json, emit=self._emit)
        if self.captioner is not None:
            self.captioner.enable() if on else self.captioner.disable()
        self.captions = on
        self._broadcast_json({"type": "captions", "enabled": on})
        self.publish_state()

    def set_record(self, on: bool) -> None:
        if on and self.recorder is None:
            self.recorder = Recorder(Path(self.settings.recordings_dir), self.space_id,
                                     self.title)
            self.recorder.started_at = self.tick_count * FRAME_SECONDS
        elif not on and self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()
            self._spawn(self._finish_recording(recorder))
        else:
            return
        self.publish_state()

    async def _finish_recording(self, recorder: Recorder) -> None:
        ogg_path = recorder.wav_path.with_suffix(".ogg")
        try:
            duration = await asyncio.to_thread(recorder.convert, ogg_path)
        except Exception as exc:  # ffmpeg missing, disk full...
            log.exception("recording conversion failed for %s", self.space_id)
            self._emit({"type": "recording_failed", "space_id": self.space_id,
                        "path": str(recorder.wav_path), "reason": str(exc)})
            return
        event = {"type": "recording_ready", "space_id": self.space_id,
                 "path": str(ogg_path.resolve()), "file": ogg_path.name,
                 "duration": round(duration, 3)}
        if self.captioner is not None:  # the captions said during the recording
            event["transcript_path"], event["transcript_cues"] = (
                await self.captioner.finish_transcript(
                    ogg_path.with_suffix(".vtt"), self.title, since=recorder.started_at,
                    until=recorder.started_at + recorder.duration, closing=not self.open))
            event["transcript_file"] = Path(event["transcript_path"]).name
        self._emit(event)

    async def _finish_transcript(self) -> None:
        """The stage ended with captions used but no recording: a transcript alone."""
        assert self.captioner is not None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = (Path(self.settings.recordings_dir)
                / f"{safe_name(self.space_id)}-{stamp}-{time.monotonic_ns()}.vtt")
        written, cues = await self.captioner.finish_transcript(path, self.title, closing=True)
        self._emit({"type": "transcript_ready", "space_id": self.space_id, "path": written,
                    "file": Path(written).name, "cues": cues})

    async def clip(self, seconds: float | None = None) -> dict[str, Any]:
        frames = list(self.clip_ring)
        if seconds is not None:
            frames = frames[-max(1, int(seconds / FRAME_SECONDS)):]
        if not frames:
            raise ValueError("nothing to clip yet")
        pcm = np.concatenate(frames)
        directory = Path(self.settings.recordings_dir)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = directory / f"{safe_name(self.space_id)}-clip-{stamp}-{time.monotonic_ns()}.ogg"
        duration = await asyncio.to_thread(write_clip, pcm, path)
        event = {"type": "clip_ready", "space_id": self.space_id,
                 "path": str(path.resolve()), "file": path.name, "duration": round(duration, 3)}
        self._emit(event)
        return event

    # -- connections -------------------------------------------------------------

    def _count_changed(self, kind: str, user_id: str | None) -> None:
        self.peak_listeners = max(self.peak_listeners, self.listeners)
        self._emit({"type": kind, "space_id": self.space_id, "user_id": user_id,
                    "listeners": self.listeners})

    def _place(self, client: Client) -> None:
        """Bundles for a client that asked for them and may not speak, frames otherwise.
        One joining bundles gets frames until the end of the next tick; one leaving them
        (given the mic) gets the frames since its last bundle at once, then frames."""
        if self.bundles is None:
            return
        if client.wants_bundles and not self.may_speak(client.user_id):
            self.bundles.join(client.id, client)
            return
        was_bundled = client.id in self.bundles
        missed = self.bundles.leave(client.id)
        if was_bundled:
            self._per_frame[client.id] = client
            if missed:
                client.deliver(b"".join(map(wsframe.binary, missed)), time.monotonic())

    def add_client(self, client: Client) -> None:
        if not self.may_join(client.user_id):  # removed while it was connecting
            client.kick(CLOSE_FORBIDDEN, REMOVED_REASON)
            return
        self.clients[client.id] = client
        self._per_frame[client.id] = client
        self._place(client)
        client.send_json({
            "type": "hello", "protocol": 1, "space_id": self.space_id, "title": self.title,
            "user_id": client.user_id, "role": self.role_of(client),
            "may_speak": self.may_speak(client.user_id), "captions": self.captions,
            "recording": self.is_recording(), "roles": self.roles,
            "frame_samples": FRAME_SAMPLES, "sample_rate": 48000,
            "bundle_ms": self.bundle_ticks * FRAME_MS if client.wants_bundles else FRAME_MS,
            "expires_at": client.expires_at, "expires_in": _seconds_left(client.expires_at),
            "stream_url": self.stream_url(),
            "people": self.stage_people(), "info": self.info.as_json(),
            **self.where_to_listen(client),
        })
        self._count_changed("listener_joined", client.user_id)
        self._broadcast_participants()

    def where_to_listen(self, client: Client) -> dict[str, Any]:
        """For the page: the edges, least loaded first, and this origin's address. A
        listener's page moves to the first edge; it is counted there at once, so that a
        burst of joins spreads before the next heartbeats."""
        if self.mirror is None:
            return {"edges": [], "origin_url": None}
        edges = self.mirror.urls()
        if edges and not self.may_speak(client.user_id):
            first = self.mirror.hand_out()
            edges = [first, *(u for u in edges if u != first)]
        return {"edges": edges, "origin_url": self.mirror.origin_url or None}

    def remote_hand(self, user_id: str, raised: bool, edge_id: str = "") -> None:
        """A hand raised or lowered by a listener on an edge (checked and rate-limited there)."""
        if raised and (self.may_speak(user_id) or not self.may_join(user_id)):
            return
        if (user_id in self.hands) == raised:
            return
        self.counters["hands_accepted"] += 1
        if raised:
            self.hands.add(user_id)
            self.hands_on_edges[user_id] = edge_id
        else:
            self.hands.discard(user_id)
            self.hands_on_edges.pop(user_id, None)
        self.activity.set_hand(user_id, raised)
        self._emit({"type": "hand_raised" if raised else "hand_lowered",
                    "space_id": self.space_id, "user_id": user_id})
        self._broadcast_participants()

    def edges_alive(self, edge_ids: set[str]) -> None:
        """The edges whose heartbeats were just read: hands raised on any other edge come
        down (it is gone, even if it went while Redis was out of our reach)."""
        for user_id, edge_id in list(self.hands_on_edges.items()):
            if user_id not in self.hands:  # lowered since
                del self.hands_on_edges[user_id]
            elif edge_id not in edge_ids:
                self.remote_hand(user_id, False)

    def remote_reaction(self, user_id: str | None, key: str) -> None:
        """A reaction from a listener on an edge (rate-limited there)."""
        if not self.activity.has_room_for(key):
            self.counters["reactions_refused"] += 1
            return
        self.counters["reactions_accepted"] += 1
        self.activity.add_reaction(key, user_id if self.may_speak(user_id) else None)
        self._emit({"type": "reaction", "space_id": self.space_id, "user_id": user_id, "key": key})

    def remove_client(self, client: Client) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        self._per_frame.pop(client.id, None)
        if self.bundles is not None:
            self.bundles.leave(client.id)
        self.mixer.remove_speaker(client.id)
        client.decoder = client.encoder = None
        user_id = client.user_id
        if user_id in self.hands and not any(c.user_id == user_id for c in self.clients.values()):
            self.hands.discard(user_id)  # their last connection left: the hand goes with it
            self.activity.set_hand(user_id, False)
        if self.open:
            self._count_changed("listener_left", client.user_id)
            self._broadcast_participants()

    def add_ogg(self, listener: OggListener) -> None:
        if not self.may_join(listener.user_id):  # removed while it was connecting
            listener.kick(CLOSE_FORBIDDEN, REMOVED_REASON)
            return
        self.ogg.add(listener)
        self._count_changed("listener_joined", None)

    def remove_ogg(self, listener: OggListener) -> None:
        if listener in self.ogg.listeners:
            self.ogg.discard(listener)
            if self.open:
                self._count_changed("listener_left", None)

    def participants(self) -> list[dict[str, Any]]:
        """Everyone signed in and connected here, and every raised hand (some may be on
        edges), with their name and avatar when the bot gave them."""
        seen: dict[str, dict[str, Any]] = {}
        for c in self.clients.values():
            if c.user_id is not None and c.user_id not in seen:
                seen[c.user_id] = {"user_id": c.user_id, "role": self.role_of(c),
                                   "hand_raised": c.user_id in self.hands}
        for user_id in self.hands - seen.keys():  # listening on an edge, hand up
            seen[user_id] = {"user_id": user_id, "role": "listener", "hand_raised": True}
        for user_id, entry in seen.items():
            profile = self.profiles.get(user_id)
            if profile is not None:
                entry.update(profile.as_json())
        return sorted(seen.values(), key=lambda e: (e["role"] == "listener", e["user_id"]))

    def _broadcast_participants(self) -> None:
        """Coalesced: sent by the next tick that is a multiple of PARTICIPANTS_EVERY_TICKS,
        so a burst of joins costs each client one message, not one per join."""
        self._participants_dirty = True

    def _send_participants(self) -> None:
        self._participants_dirty = False
        anonymous = sum(1 for c in self.clients.values() if c.user_id is None)
        # listeners on edges are counted, not named (an edge does not say who they are),
        # but for those whose hand is up: they are in the list, so not in the count
        here = {c.user_id for c in self.clients.values()}
        named_on_edges = sum(1 for u in self.hands if u not in here)
        self._broadcast_json({"type": "participants", "participants": self.participants(),
                              "anonymous": anonymous + len(self.ogg_listeners)
                              + max(0, self.edge_listeners - named_on_edges)})

    def _broadcast_json(self, obj: dict[str, Any]) -> None:
        """One encode, the same text to every client's control queue (never its audio)."""
        text = json.dumps(obj, separators=(",", ":"))
        if self.mirror is not None:  # the edges' clients get it too
            self.mirror.publish(self.space_id, feed.broadcast(text))
        frame = wsframe.text(text)
        key = state_key(obj)
        for client in self.clients.values():
            client.send_control(frame, key)

    # -- from clients ------------------------------------------------------------

    def on_audio(self, client: Client, data: bytes) -> bool:
        """Check one binary frame from ``client``; queue it for the mix if allowed."""
        client.frames_in += 1
        if not self.may_speak(client.user_id):
            client.frames_refused += 1
            client.error("not_allowed", "you may not send audio in this space")
            return False
        try:
            frame = wire.unpack(data)
            if opus.packet_samples(frame.payload) != FRAME_SAMPLES:
                raise wire.FrameError("opus packet must hold exactly 20 ms")
        except (wire.FrameError, opus.OpusError) as exc:
            client.frames_refused += 1
            client.error("bad_frame", str(exc))
            return False
        if client.id not in self.mixer:
            client.decoder = opus.Decoder()
            client.encoder = opus.Encoder(self.settings.opus_bitrate)
            self.mixer.add_speaker(client.id, decode=self._decoder_for(client))
        return self.mixer.push(client.id, frame.seq, frame.payload)

    @staticmethod
    def _decoder_for(client: Client) -> Callable[[bytes], np.ndarray | None]:
        def decode(packet: bytes) -> np.ndarray | None:
            if client.decoder is None:
                return None
            try:
                return client.decoder.decode(packet)
            except opus.OpusError:
                return None

        return decode

    def on_json(self, client: Client, text: str | bytes) -> None:
        """One text message from ``client``: checked (size, depth, shape), then done or
        refused with an ``error`` to that client alone."""
        try:
            msg = jsonsafe.loads(text, max_bytes=MAX_CLIENT_JSON_BYTES,
                                 max_depth=MAX_CLIENT_JSON_DEPTH)
        except jsonsafe.JsonRefused as exc:
            self._refuse(client, "bad_message", f"bad message: {exc}")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._refuse(client, "bad_message", "expected an object with a string 'type'")
            return
        kind = msg["type"]
        if kind == "ping":
            ping_id = msg.get("id")
            if not (ping_id is None or isinstance(ping_id, int | str) and len(str(ping_id)) <= 64):
                self._refuse(client, "bad_message", "ping 'id' must be a short string or number")
                return
            client.send_json({"type": "pong", "id": ping_id})
        elif kind in ("raise_hand", "lower_hand"):
            self._on_hand(client, kind == "raise_hand")
        elif kind == "reaction":
            self._on_reaction(client, msg.get("key"))
        elif kind == "renew":
            self._on_renew(client, msg.get("token"))
        else:
            self._refuse(client, "bad_message", f"unknown message type {kind[:32]!r}")

    def _refuse(self, client: Client, code: str, reason: str) -> None:
        self.counters["bad_messages"] += code == "bad_message"
        client.error(code, reason)

    def _on_hand(self, client: Client, raised: bool) -> None:
        user_id = client.user_id
        if user_id is None:
            client.error("not_allowed", "sign in to raise your hand")
            return
        if raised and self.may_speak(user_id):
            client.error("not_allowed", "you can already speak")
            return
        if (user_id in self.hands) == raised:
            return  # already so: nothing changes, nothing is spent
        if not self.limits.allow_hand(client.budget, user_id, time.monotonic()):
            self.counters["hands_refused"] += 1
            client.error("rate_limited", "too many hand changes; wait a few seconds")
            return
        self.counters["hands_accepted"] += 1
        if raised:
            self.hands.add(user_id)
        else:
            self.hands.discard(user_id)
        self.hands_on_edges.pop(user_id, None)  # raised or lowered here now
        self.activity.set_hand(user_id, raised)
        self._emit({"type": "hand_raised" if raised else "hand_lowered",
                    "space_id": self.space_id, "user_id": user_id})
        self._broadcast_participants()

    def _on_renew(self, client: Client, given: Any) -> None:
        """A fresh token before the connection's ends: the one given (minted by the bot,
        for the same user and space), or one minted here for the user's current role."""
        user_id = client.user_id
        if user_id is None:
            client.error("not_allowed", "anonymous listeners have no token to renew")
            return
        if not self.may_join(user_id):
            client.error("not_allowed", REMOVED_REASON)
            return
        if not self.public and user_id not in self.roles:
            client.error("not_allowed", f"{user_id} is not in this space any more")
            return
        secret = self.settings.shared_secret
        if given is None:
            role = self.roles.get(user_id, "listener")
            token = tokens.mint(secret, self.space_id, user_id, role, self.settings.token_ttl_seconds)
            expires_at = float(tokens.verify(secret, token, self.space_id).exp)
        elif isinstance(given, str) and len(given) <= 4096:
            try:
                claims = tokens.verify(secret, given, self.space_id)
            except tokens.TokenError as exc:
                client.error("bad_token", f"token refused: {exc.reason}")
                return
            if claims.user != user_id:
                client.error("not_allowed", "that token is for another user")
                return
            token, expires_at = given, float(claims.exp)
        else:
            self._refuse(client, "bad_message", "renew 'token' must be a token string")
            return
        client.expires_at = expires_at
        client.send_json({"type": "token", "token": token, "expires_at": expires_at,
                          "expires_in": _seconds_left(expires_at)})

    def _close_expired(self, now: float) -> None:
        for conn in [*self.clients.values(), *self.ogg_listeners]:
            if conn.expires_at is not None and conn.expires_at <= now and conn.kicked is None:
                log.info("space %s: the token of %s ended; connection closed", self.space_id,
                         conn.user_id)
                conn.kick(CLOSE_BAD_TOKEN, "token expired")

    def _on_reaction(self, client: Client, key: Any) -> None:
        if not isinstance(key, str) or not 0 < len(key) <= 16 or not key.isprintable():
            self._refuse(client, "bad_message", "reaction needs a short printable 'key'")
            return
        if not self.activity.has_room_for(key):
            self.counters["reactions_refused"] += 1
            client.error("rate_limited", "too many different reactions right now; try again")
            return
        if not self.limits.allow_reaction(client.budget, client.user_id, time.monotonic()):
            self.counters["reactions_refused"] += 1
            why = ("too many reactions; slow down" if client.user_id is not None else
                   "too many reactions (anonymous listeners share a limit); slow down")
            client.error("rate_limited", why)
            return
        self.counters["reactions_accepted"] += 1
        self.activity.add_reaction(key, client.user_id if self.may_speak(client.user_id) else None)
        self._emit({"type": "reaction", "space_id": self.space_id,
                    "user_id": client.user_id, "key": key})

    def _flush_activity(self) -> None:
        message = self.activity.flush()
        if message is not None:
            self.counters["activity_messages"] += 1
            self._broadcast_json(message)

    # -- the tick ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            n += 1
            delay = start + n * FRAME_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # behind: still let the readers and requests run
            late = max(0.0, loop.time() - (start + n * FRAME_SECONDS))
            self.tick_late_seconds.append(late)
            if delay < -0.2:
                # more than 10 frames behind (machine stalled): restart the clock
                # rather than bursting to catch up.
                self.clock_resyncs += 1
                start = loop.time() - n * FRAME_SECONDS
            t0 = time.perf_counter()
            try:
                self.tick()
            except Exception:  # one bad tick must not end the stage
                log.exception("tick failed in %s", self.space_id)
            took = time.perf_counter() - t0
            self.tick_seconds.append(took)
            if self.tick_timer is not None:
                self.tick_timer(took, late)

    def tick(self) -> TickResult:
        t0 = time.perf_counter()
        self.voice.feed()
        result = self.mixer.tick()
        self.tick_count += 1
        seq = self.tick_count
        ts = seq * FRAME_SAMPLES
        packet = self.encoder.encode(result.mix)
        own: dict[Any, bytes] = {}  # each speaker in the mix: the mix without them
        for client_id, pcm in result.minus.items():
            client = self.clients.get(client_id)
            if client is not None and client.encoder is not None:
                own[client_id] = wsframe.binary(wire.pack(seq, ts, client.encoder.encode(pcm)))
        self.mix_seconds.append(time.perf_counter() - t0)
        try:  # control messages first: they go out in the same write as this tick's audio
            self._queue_control(seq, result)
        except Exception:  # a fault there must not cost anyone this tick's audio
            log.exception("space %s: control messages of tick %d failed", self.space_id, seq)
        shared = wire.pack(seq, ts, packet)
        self._fan_out(seq, shared, own)
        if self.mirror is not None:
            self.mirror.publish(self.space_id, shared)
        self.ogg.push(packet)
        self.clip_ring.append(result.mix)
        if self.recorder is not None:
            try:
                self.recorder.write(result.mix)
            except OSError:
                log.exception("recording write failed for %s; recording stopped",
                              self.space_id)
                self.set_record(False)
        for hook in self.tick_hooks:
            hook(result)
        return result

    def _queue_control(self, seq: int, result: TickResult) -> None:
        """This tick's broadcasts (activity, participants, levels, captions), queued."""
        if seq % ACTIVITY_EVERY_TICKS == 0:
            self._flush_activity()
        if self._participants_dirty and seq % PARTICIPANTS_EVERY_TICKS == 0:
            self._send_participants()
        self._keep_house(seq)
        if seq % LEVELS_EVERY_TICKS == 0 and result.levels:
            self._broadcast_levels(result)
        if self.captioner is not None and self.captioner.enabled:
            self.captioner.feed(seq, result.frames, result.levels, self._user_of)

    def _keep_house(self, n: int) -> None:
        """Every so many ticks (or, on an edge, frames): close the connections whose token
        has ended, and forget the rate-limit budgets of users who left."""
        if n % EXPIRY_EVERY_TICKS == 0:
            self._close_expired(time.time())
        if n % FORGET_BUDGETS_EVERY_TICKS == 0 and len(self.limits):
            self.limits.forget_idle(time.monotonic(),
                                    {c.user_id for c in self.clients.values() if c.user_id})

    def _fan_out(self, seq: int, shared: bytes, own: dict[Any, bytes]) -> None:
        """This tick's audio to every client: its own mix-minus to a speaker in the mix,
        the same framed bytes to every other per-frame client, and the same bundle to the
        bundled clients whose bundle is due this tick (bridge/bundles.py). Kicking only
        flags a client (its handler removes it later), so nothing is copied."""
        now = time.monotonic()
        framed = wsframe.binary(shared)
        for client in self._per_frame.values():
            client.deliver(own.get(client.id, framed) if own else framed, now)
        if self.bundles is None:
            return
        due, bundle = self.bundles.push(seq, shared)
        if bundle is not None:
            framed_bundle = wsframe.binary(bundle)
            for client in due.values():
                client.deliver(framed_bundle, now)
        for client_id in self.bundles.settle():  # they had every frame up to this one
            del self._per_frame[client_id]

    def _user_of(self, client_id: Any) -> str | None:
        client = self.clients.get(client_id)
        return client.user_id if client is not None else self.voice.user_of(client_id)

    def _broadcast_levels(self, result: TickResult) -> None:
        levels: dict[str, float] = {}
        for client in self.clients.values():
            if client.user_id is None or client.id not in result.levels:
                continue
            level = result.levels[client.id]
            levels[client.user_id] = max(levels.get(client.user_id, SILENCE_DBFS), level)
        self._broadcast_json({"type": "levels",
                              "levels": {u: round(v, 1) for u, v in levels.items()}})
