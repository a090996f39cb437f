"""One WebSocket connection as the stage's tick sees it: what waits for it, how each
tick's audio is written to it, and when it is too slow or not reading.

The tick writes straight to the connection's transport (no queue and no task per
connection): see :class:`Client`. The request handler (bridge/app.py) attaches the
transport, reads the client's messages and closes the connection when it is kicked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from . import opus, wsframe
from .activity import Budget, TokenBucket
from .outbox import Outbox
from .settings import BridgeSettings

log = logging.getLogger(__name__)

# WebSocket close codes sent to clients (see docs/protocol.md)
CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NO_SPACE = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_SPACE_ENDED = 4410
CLOSE_TOO_MANY = 4429
CLOSE_SHUTDOWN = 1001
CLOSE_POLICY = 1008
#: the reasons a connection is closed with CLOSE_TOO_SLOW (/metrics counts them apart)
BEHIND_REASON = "too slow: fell behind the live audio"
NOT_READING_REASON = "too slow: not reading (no answer to ping)"
#: control bytes that may be unsent in a client's transport before its further control
#: messages wait in its outbox (coalescing) instead of being written
CONTROL_UNSENT_LIMIT = 64 * 1024
#: control messages whose newest version is all a client needs (see Outbox)
STATE_MESSAGES = frozenset({"levels", "participants", "roles", "you", "captions", "pong",
                            "people", "info"})
#: WebSocket liveness: ping every so often; a client that has not answered a ping within
#: the deadline is not reading (its data sits in kernel buffers) and is closed as too slow
PING_EVERY_SECONDS = 2.0
PONG_DEADLINE_SECONDS = 4.0
STALL_SECONDS = 1.0
#: how fast one connection's messages are read: JSON 20/s (burst 60), audio 75/s (burst
#: 150; a speaker sends 50/s). Beyond that the connection is read more slowly (TCP pushes
#: back on the sender), so no client can keep the event loop busy with messages.
INBOUND_TEXT_BURST, INBOUND_TEXT_RATE = 60, 20.0
INBOUND_AUDIO_BURST, INBOUND_AUDIO_RATE = 150, 75.0
#: one tick's frame, in milliseconds (ogg_page_ms is a whole number of these)
FRAME_MS = 20


class Transport(Protocol):
    """What a client's connection is to the tick: asyncio's transport, or a test's."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


def state_key(obj: dict[str, Any]) -> Hashable | None:
    """Messages that carry a state (a newer one makes an unsent older one useless) get a
    key; events (errors, activity batches, closing) get None and are all delivered."""
    kind = obj.get("type")
    if kind in STATE_MESSAGES:
        return kind
    if kind == "caption":  # partials of one utterance replace each other, then the final
        return ("caption", obj.get("utterance"))
    return None


def audio_backlog_limit(settings: BridgeSettings) -> int:
    """Unsent audio bytes a WebSocket client may have before it counts as too slow:
    ``listener_queue_frames`` frames, or two bundles and a frame if that is more. A frame
    is at most 1.5 × bitrate/400 bytes of Opus (VBR) plus 16 of wire and WebSocket
    framing."""
    per_frame = settings.opus_bitrate * 3 // 800 + 16
    frames = max(settings.listener_queue_frames, 2 * (settings.listener_bundle_ms // FRAME_MS) + 1)
    return frames * per_frame


class Backlog:
    """Which of a transport's unsent bytes are audio.

    Each write is recorded as its end offset in the stream and the audio bytes at its end
    (audio is always last in a write). A transport sends bytes in order, so from its
    unsent byte count the writes wholly sent are dropped and the audio still unsent is
    exact. Bytes written by others (aiohttp's pongs and close frame) are few; they only
    make the audio look larger until the transport's buffer is next empty."""

    def __init__(self) -> None:
        self.written = 0
        #: (end offset, audio bytes) of each write not known to be wholly sent
        self._writes: deque[tuple[int, int]] = deque()
        self._audio = 0

    def wrote(self, size: int, audio: int) -> None:
        self.written += size
        self._writes.append((self.written, audio))
        self._audio += audio

    def unsent(self, unsent: int) -> tuple[int, int]:
        """(audio, other) bytes among the ``unsent`` bytes the transport holds."""
        writes = self._writes
        if unsent <= 0:
            writes.clear()
            self._audio = 0
            return 0, 0
        sent = self.written - unsent
        while writes and writes[0][0] <= sent:
            self._audio -= writes.popleft()[1]
        if not writes:
            return 0, unsent
        end, first_audio = writes[0]
        audio = self._audio - first_audio + min(first_audio, end - sent)
        return audio, unsent - audio


class Client:
    """A WebSocket connection to a stage, as the tick sees it.

    Nothing is queued per connection but its control messages (:class:`Outbox`): each
    tick the stage calls :meth:`deliver` with the tick's audio frame (or, for a
    listen-only client that asked for bundles, every ``bundle`` ticks with a bundle), and
    that writes, in one ``transport.write``, the control messages waiting, a ping when one
    is due, and the audio: the same bytes object for every listener.

    Only audio decides "too slow": a client whose unsent *audio* (:class:`Backlog`; control
    bytes are never counted as audio) passes ``audio_limit`` bytes is kicked with 4408.
    Control messages stop being written while more than CONTROL_UNSENT_LIMIT bytes of
    them are still unsent, and wait (coalesced, bounded) in the outbox meanwhile.
    """

    _next_id = 0

    def __init__(self, user_id: str | None, token_role: str, audio_limit: int,
                 *, bundles: bool = False) -> None:
        Client._next_id += 1
        self.id = Client._next_id
        self.user_id = user_id
        self.token_role = token_role
        #: when its token ends (unix seconds); None for an anonymous listener. The stage
        #: closes the connection then (4401 "token expired") unless it was renewed.
        self.expires_at: float | None = None
        self.audio_limit = audio_limit
        #: the client asked for bundles (it gets them while it may not speak; whether it
        #: gets them now is the stage's to say: ``client.id in stage.bundles``)
        self.wants_bundles = bundles
        self.outbox = Outbox()
        self.transport: Transport | None = None
        self._is_open: Callable[[], bool] = lambda: True
        #: which of the transport's unsent bytes are audio
        self.backlog = Backlog()
        self.kicked: tuple[int, str] | None = None
        self.kick_event = asyncio.Event()
        self.decoder: opus.Decoder | None = None
        self.encoder: opus.Encoder | None = None
        self.errors = 0
        self.frames_in = 0
        self.frames_refused = 0
        #: this connection's own reaction and hand budget (bridge/activity.py)
        self.budget = Budget()
        #: liveness: when the unanswered WebSocket ping was sent (None: none outstanding)
        self.ping_sent_at: float | None = None
        self.last_ping_at = 0.0
        self._liveness_checked_at = 0.0
        self._inbound = {True: TokenBucket(INBOUND_AUDIO_BURST, INBOUND_AUDIO_RATE),
                         False: TokenBucket(INBOUND_TEXT_BURST, INBOUND_TEXT_RATE)}
        #: seconds this connection's reads were held back by the pacing above, and when
        self.paced_seconds = 0.0
        self.paced_at = 0.0

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.user_id or 'anonymous'}>"

    def attach(self, transport: Transport, is_open: Callable[[], bool]) -> None:
        """The connection to write to; ``is_open`` is False once a close frame went out
        (after which not a byte more may be written)."""
        self.transport = transport
        self._is_open = is_open
        self._liveness_checked_at = self.last_ping_at = time.monotonic()

    # -- writing -----------------------------------------------------------------------

    def _writable(self) -> Transport | None:
        transport = self.transport
        if (self.kicked is not None or transport is None or transport.is_closing()
                or not self._is_open()):
            return None
        return transport

    def _take_control(self, transport: Transport) -> list[bytes]:
        """The control messages to write now: all that wait, unless more than
        CONTROL_UNSENT_LIMIT bytes of earlier ones are still unsent."""
        if not self.outbox.control:
            return []
        _audio, other = self.backlog.unsent(transport.get_write_buffer_size())
        return self.outbox.take() if other <= CONTROL_UNSENT_LIMIT else []

    def deliver(self, audio: bytes, now: float) -> None:
        """One write: the control messages waiting, a ping if due, then ``audio`` (one
        framed frame or bundle); then kick the client if its audio backlog is too big."""
        transport = self._writable()
        if transport is None:
            return
        liveness = self.liveness(now)
        if liveness == "dead":
            log.info("closing %r: no answer to a ping (not reading)", self)
            self.kick_unresponsive()
            return
        parts = self._take_control(transport)
        if liveness == "ping":
            parts.append(wsframe.PING)
        if parts:
            parts.append(audio)
            data = b"".join(parts)
        else:
            data = audio
        transport.write(data)
        self.backlog.wrote(len(data), len(audio))
        unsent_audio, _other = self.backlog.unsent(transport.get_write_buffer_size())
        if unsent_audio > self.audio_limit:
            log.info("disconnecting %r: %d bytes of audio unsent", self, unsent_audio)
            self.kick(CLOSE_TOO_SLOW, BEHIND_REASON)

    def flush(self) -> None:
        """Write the control messages waiting now, without audio (the space is ending)."""
        transport = self._writable()
        if transport is None:
            return
        data = b"".join(self._take_control(transport))
        if data:  # none waiting, or held back behind unsent control
            transport.write(data)
            self.backlog.wrote(len(data), 0)

    def send_control(self, frame: bytes, key: Hashable | None = None) -> None:
        """Queue a framed JSON text for the next write; with ``key`` it replaces an unsent
        one with the same key."""
        if self.kicked is None:
            self.outbox.put(frame, key)

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send_control(wsframe.text(json.dumps(obj, separators=(",", ":"))), state_key(obj))

    def kick(self, code: int, reason: str) -> None:
        if self.kicked is None:
            self.kicked = (code, reason)
            self.kick_event.set()

    def error(self, code: str, reason: str) -> None:
        """Tell the client something was refused (1st, 2nd, 4th, 8th... time only)."""
        self.errors += 1
        if self.errors & (self.errors - 1) == 0:
            self.send_json({"type": "error", "code": code, "reason": reason,
                            "count": self.errors})

    # -- liveness: a reader answers WebSocket pings; one that never reads does not ------

    def liveness(self, now: float) -> str | None:
        """Called at each write: ``"ping"`` when a ping is due (the caller sends it),
        ``"dead"`` when one has gone unanswered for PONG_DEADLINE_SECONDS.

        A gap of more than STALL_SECONDS since the previous call (the event loop was busy)
        restarts an outstanding ping's deadline: the pong may be waiting unread in our own
        socket."""
        stalled = now - self._liveness_checked_at > STALL_SECONDS
        self._liveness_checked_at = now
        if self.ping_sent_at is None:
            if now - self.last_ping_at >= PING_EVERY_SECONDS:
                self.ping_sent_at = self.last_ping_at = now
                return "ping"
            return None
        if stalled:
            self.ping_sent_at = now
            return None
        return "dead" if now - self.ping_sent_at > PONG_DEADLINE_SECONDS else None

    def read_pause(self, now: float, binary: bool) -> float:
        """After reading one message: seconds to wait before reading the next (0 within
        the connection's budget). The message itself is always handled."""
        bucket = self._inbound[binary]
        bucket.take(now)
        if bucket.tokens >= 0:
            return 0.0
        pause = -bucket.tokens / bucket.rate
        self.paced_seconds += pause
        self.paced_at = now
        return pause

    def pong_received(self) -> None:
        self.ping_sent_at = None

    def kick_unresponsive(self) -> None:
        if self.ping_sent_at is not None and self.paced_at >= self.ping_sent_at:
            # its pong is stuck behind its own flood of messages, read at the paced rate
            self.kick(CLOSE_POLICY, "too many messages: slow down")
        else:
            self.kick(CLOSE_TOO_SLOW, NOT_READING_REASON)
