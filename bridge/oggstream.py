"""One space's ``live.ogg``: every page built once and written, as the same bytes, to every
listener's socket.

A space has one Ogg/Opus logical stream (one serial number). The tick hands it each
encoded packet; every ``page_packets`` packets (``[bridge] ogg_page_ms`` / 20 ms), or
sooner if the page's segment table would overflow, it builds one page and writes it
straight to each listener's transport: no queue, no task and no page-building per
listener. A listener that joins gets the header pages (OpusHead, OpusTags) and then joins
at the next page, as with Icecast; players start from the first granule they see.

HTTP/1.1 responses are chunked, so each page is also framed as one chunk, once, for all
chunked listeners. A listener whose unsent bytes (the transport's buffer, above the
kernel's) pass ``buffer_limit`` has fallen behind and is kicked as too slow (4408); the
request handler (bridge/app.py) then cuts its connection.
"""

from __future__ import annotations

import asyncio
import logging
import random

from .ogg import OggOpusWriter, lacing_values

log = logging.getLogger(__name__)

#: an Ogg page's segment table holds at most this many lacing values
MAX_LACING = 255
#: the packet a last page carries when no audio is pending: 20 ms of CELT silence
SILENT_PACKET = b"\xf8\xff\xfe"
#: why a listener whose connection closed is let go (not too slow: just gone)
GONE_REASON = "gone: the connection closed"


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class OggListener:
    """One HTTP stream: the transport its pages go to, and why it ended (if it has)."""

    def __init__(self, transport: asyncio.Transport, chunked: bool, space_id: str = "") -> None:
        self.transport = transport
        self.chunked = chunked
        self.space_id = space_id
        self.kicked: tuple[int, str] | None = None
        self.kick_event = asyncio.Event()
        #: who signed in with a token, and when it ends (None: anonymous)
        self.user_id: str | None = None
        self.expires_at: float | None = None
        #: bytes written to it (the request handler counts the header pages it wrote)
        self.sent = 0

    def __repr__(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return f"<OggListener {self.space_id} {peer}>"

    def kick(self, code: int, reason: str) -> None:
        if self.kicked is None:
            self.kicked = (code, reason)
            self.kick_event.set()


class LiveOgg:
    """The shared stream of one space and the listeners it writes to."""

    def __init__(self, *, pre_skip: int, title: str | None, page_packets: int,
                 buffer_limit: int, too_slow: tuple[int, str], space_id: str = "") -> None:
        if page_packets < 1:
            raise ValueError("page_packets must be at least 1")
        self.writer = OggOpusWriter(random.getrandbits(32), pre_skip=pre_skip, title=title)
        self.page_packets = page_packets
        self.buffer_limit = buffer_limit
        self.too_slow = too_slow
        self.space_id = space_id
        self.listeners: set[OggListener] = set()
        #: other writers of the stream that are not an audience: Icecast sources
        #: (bridge/icecast.py); written like listeners, counted nowhere
        self.relays: set[OggListener] = set()
        self.pages = 0
        self._packets: list[bytes] = []
        self._lacing = 0
        self._headers = self.writer.headers()
        self.ended = False

    # -- listeners -------------------------------------------------------------------

    def retitle(self, title: str | None) -> None:
        """New listeners' OpusTags carry ``title``; those already listening keep theirs."""
        self.writer.title = title
        self._headers = self.writer.headers()

    def headers(self) -> bytes:
        """What a new listener is sent first (by the request handler, through aiohttp,
        which sends the HTTP response head with it)."""
        return self._headers

    def add(self, listener: OggListener) -> None:
        self.listeners.add(listener)

    def discard(self, listener: OggListener) -> None:
        self.listeners.discard(listener)

    def add_relay(self, relay: OggListener) -> None:
        """A writer that gets every page from the next one on (its headers are the
        caller's to send first), and is no listener."""
        self.relays.add(relay)

    def discard_relay(self, relay: OggListener) -> None:
        self.relays.discard(relay)

    # -- pages -----------------------------------------------------------------------

    def push(self, packet: bytes) -> None:
        """One tick's packet; writes a page when one is full."""
        need = lacing_values(packet)
        if self._packets and self._lacing + need > MAX_LACING:
            self._flush()
        self._packets.append(packet)
        self._lacing += need
        if len(self._packets) >= self.page_packets:
            self._flush()

    def end(self, code: int, reason: str) -> None:
        """The space ended: what is pending goes out in a last page with the end-of-stream
        flag, then every listener is kicked with ``code`` (the handler finishes the
        response)."""
        if self.ended:
            return
        self.ended = True
        if not self._packets:
            self._packets.append(SILENT_PACKET)
        self._flush(last=True)
        for listener in (*self.listeners, *self.relays):
            listener.kick(code, reason)

    def _flush(self, last: bool = False) -> None:
        if not self._packets:
            return
        packets, self._packets, self._lacing = self._packets, [], 0
        self.pages += 1
        if not self.listeners and not self.relays:
            self.writer.skip_page(len(packets))  # nobody to build it for
            return
        data = self.writer.audio_page(packets, last=last)
        self._write(self.listeners, data)
        if self.relays:
            self._write(self.relays, data)

    def _write(self, listeners: set[OggListener], data: bytes) -> None:
        framed: bytes | None = None
        # no copy of the set: kicking only flags a listener; its handler removes it later
        for listener in listeners:
            if listener.kicked is not None:
                continue
            transport = listener.transport
            if transport.is_closing():  # the listener went away
                listener.kick(self.too_slow[0], GONE_REASON)
                continue
            if listener.chunked:
                if framed is None:
                    framed = chunk(data)
                transport.write(framed)
                listener.sent += len(framed)
            else:
                transport.write(data)
                listener.sent += len(data)
            if transport.get_write_buffer_size() > self.buffer_limit:
                log.info("space %s: disconnecting %r: %d bytes unsent", self.space_id, listener,
                         transport.get_write_buffer_size())
                listener.kick(*self.too_slow)
