"""The bot's client for the bridge's control API (docs/protocol.md, version 1).

:class:`HttpBridge` satisfies :class:`bot.bridge_api.BridgeControl`: requests go over
HTTP with ``Authorization: Bearer <shared_secret>``; bridge → bot events arrive on a
WebSocket to ``/control/v1/events`` that is held open and re-opened with backoff.
Tokens are minted locally with :mod:`bridge.tokens` (pure, stdlib).

The events link is also how the bot knows the bridge still holds what it pushed. Its
``hello`` names the bridge's instance, new on every start of the bridge. Whenever the
instance is one the bot has not pushed its stages to, or a push failed because the
bridge was unreachable or had lost the stage, the ``on_resync`` handlers run (they
push every live stage again), retried with backoff until they succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.bridge_api import (
    FILE_NAME,
    ROLES,
    BridgeError,
    BridgeEventHandler,
    BridgeUnavailable,
    ResyncHandler,
    StageMissing,
    StageStats,
    forget_handler,
)
from bridge import tokens

log = logging.getLogger(__name__)

API = "/control/v1"
#: the largest recording, clip or transcript the bot downloads from the bridge (a
#: 48 kbit/s recording of 24 hours is about 520 MB)
MAX_FILE_BYTES = 1 << 30
#: a download may take long in all, but never sits silent longer than this
FILE_READ_TIMEOUT = 60.0
_STATS_FIELDS = ("listeners", "peak_listeners", "speakers_connected", "recording",
                 "captions")


class BridgeAuthError(BridgeError):
    """The bridge refused the bot's shared secret: the two are configured differently."""


def _secret_refused(control_url: str) -> str:
    return (f"the bridge at {control_url} refused the bot's shared secret: set the same "
            "bridge.shared_secret in the bot's and the bridge's config")


def describe(exc: BaseException) -> str:
    """A client error in a few words, for logs and messages. Never ``repr(exc)``: aiohttp's
    errors carry the request's headers, and so the Authorization header with the secret."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: HTTP {exc.status} {exc.message}".strip()
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    text = str(exc).split("\n", 1)[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(text: str) -> str:
    """The bridge's own words from an error body ({"error": ...}), else its first bytes."""
    try:
        return str(json.loads(text).get("error", text))
    except (json.JSONDecodeError, AttributeError):
        return text[:200]


def _stats(space_id: str, data: dict[str, Any]) -> StageStats:
    return StageStats(space_id, bool(data.get("open", False)),
                      **{k: data[k] for k in _STATS_FIELDS if k in data})


class HttpBridge:
    def __init__(self, control_url: str, public_url: str, shared_secret: str,
                 token_ttl: int = 3600, *, request_timeout: float = 10.0,
                 max_backoff: float = 5.0, homeservers: dict[str, str] | None = None) -> None:
        if not shared_secret:
            raise ValueError("shared_secret must not be empty")
        self.control_url = control_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self._secret = shared_secret
        self.token_ttl = token_ttl
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.max_file_bytes = MAX_FILE_BYTES
        self._max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._handlers: list[BridgeEventHandler] = []
        self._events_task: asyncio.Task[None] | None = None
        #: set while the events WebSocket is open (tests and health checks wait on it)
        self.connected = asyncio.Event()
        #: the bridge instance the events link is connected to (its hello says)
        self.instance: str | None = None
        #: the instance every live stage was last pushed to in full
        self.synced_instance: str | None = None
        #: a push failed since: push everything again when the bridge answers
        self._stale = False
        self._resync_handlers: list[ResyncHandler] = []
        self._resync_task: asyncio.Task[None] | None = None
        #: completed resyncs (tests wait on the count)
        self.resyncs = 0
        self._resynced = asyncio.Condition()
        #: the bot's own homeserver (server name -> the URL the bot uses): told to the bridge
        #: with every full push, so widget sign-ins of its users are checked there
        self.homeservers = dict(homeservers or {})
        self._homeservers_refused = False

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the session, check that the bridge takes our secret, start the events link
        and, if the bridge answers, wait (bounded) for the first push of every live stage.

        A bridge that refuses the secret stops start-up (BridgeAuthError, one clear line); a
        bridge that cannot be reached yet is only logged: the events link keeps trying."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._secret}"}, timeout=self._timeout)
        reached = False
        try:
            await self._request("GET", f"{self.control_url}{API}/spaces")
            reached = True
        except BridgeAuthError:
            await self.close()
            raise
        except BridgeError as exc:
            log.warning("%s; carrying on, the bot retries the bridge in the background", exc)
        if self._events_task is None:
            self._events_task = asyncio.create_task(self._events_loop(),
                                                    name="bridge-events")
        if reached and self._has_pushes() and not await self.wait_synced(
                self._timeout.total or 10.0):
            log.warning("the live stages are not on the bridge yet; still trying in the background")

    async def close(self) -> None:
        if self._events_task is not None:  # first: no hello starts a resync after this
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_task
            self._events_task = None
        self.connected.clear()  # nor does a failing request
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
            self._resync_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.connected.clear()

    # -- requests ----------------------------------------------------------------

    def _url(self, space_id: str, suffix: str = "") -> str:
        return f"{self.control_url}{API}/spaces/{quote(space_id, safe='')}{suffix}"

    async def _request(self, method: str, url: str, body: dict[str, Any] | None = None,
                       *, allow_404: bool = False) -> dict[str, Any] | None:
        if self._session is None:
            raise BridgeError("HttpBridge.start() has not been called")
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                if resp.status == 404 and allow_404:
                    return None
                if resp.status == 401:
                    raise BridgeAuthError(_secret_refused(self.control_url))
                if resp.status >= 400:
                    reason = _reason(text)
                    if resp.status == 404 and "no open stage" in reason:
                        raise StageMissing(f"bridge refused {method} {url}: {resp.status} {reason}",
                                           reason)
                    raise BridgeError(f"bridge refused {method} {url}: {resp.status} {reason}", reason,
                                      status=resp.status)
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.mark_stale(f"{method} {url} failed")
            raise BridgeUnavailable(f"bridge unreachable at {self.control_url}: {describe(exc)}",
                                    "the audio bridge cannot be reached") from None

    async def open_stage(self, space_id: str, title: str, *, public: bool,
                         record: bool = False, captions: bool = False,
                         page: dict[str, Any] | None = None) -> None:
        await self._request("POST", self._url(space_id), {
            **(page or {}), "title": title, "public": public, "record": record, "captions": captions})

    async def set_people(self, space_id: str, people: dict[str, dict[str, Any]]) -> None:
        await self._request("PUT", self._url(space_id, "/people"), {"people": people})

    async def answer_hand(self, space_id: str, user_id: str, answer: str) -> None:
        await self._request("POST", self._url(space_id, "/answer"), {"user_id": user_id, "answer": answer})

    async def put_listing(self, space_id: str, listing: dict[str, Any]) -> list[str]:
        answer = await self._request("PUT", f"{self.control_url}{API}/listings/{quote(space_id, safe='')}",
                                     listing)
        missing = answer.get("missing") if isinstance(answer, dict) else None
        return [str(m) for m in missing] if isinstance(missing, list) else []

    async def put_avatar(self, avatar_id: str, data: bytes) -> None:
        await self._send_bytes("PUT", f"{self.control_url}{API}/avatars/{avatar_id}", data, "")

    async def set_roles(self, space_id: str, roles: dict[str, str],
                        removed: Iterable[str] = ()) -> None:
        unknown = set(roles.values()) - ROLES
        if unknown:
            raise BridgeError(f"unknown role(s) {sorted(unknown)} for space {space_id}")
        await self._request("PUT", self._url(space_id, "/roles"),
                            {"roles": dict(roles), "removed": sorted(removed)})

    async def set_options(self, space_id: str, *, record: bool | None = None,
                          captions: bool | None = None) -> None:
        body: dict[str, Any] = {}
        if record is not None:
            body["record"] = record
        if captions is not None:
            body["captions"] = captions
        await self._request("PATCH", self._url(space_id), body)

    async def close_stage(self, space_id: str) -> StageStats:
        data = await self._request("DELETE", self._url(space_id), allow_404=True)
        if data is None:
            return StageStats(space_id, False)
        return _stats(space_id, {**data, "open": False})

    async def stats(self, space_id: str) -> StageStats:
        data = await self._request("GET", self._url(space_id), allow_404=True)
        return StageStats(space_id, False) if data is None else _stats(space_id, data)

    async def stage_ids(self) -> list[str]:
        data = await self._request("GET", f"{self.control_url}{API}/spaces")
        assert data is not None
        return [str(s["space_id"]) for s in data.get("spaces", []) if isinstance(s, dict)]

    async def clip(self, space_id: str, seconds: float | None = None) -> dict[str, Any]:
        """Write the last ``seconds`` (default 30) of the mix to an Ogg file on the bridge."""
        body = {} if seconds is None else {"seconds": seconds}
        data = await self._request("POST", self._url(space_id, "/clip"), body)
        assert data is not None
        return data

    async def play(self, space_id: str, data: bytes, content_type: str, user_id: str) -> float:
        """Play a voice message (the audio file's bytes) into the space's live mix, as
        ``user_id``, who must hold an audio role; returns its duration in seconds."""
        # uploading up to 20 MB and decoding it takes longer than a control call
        timeout = aiohttp.ClientTimeout(total=max(self._timeout.total or 0, 120.0))
        text = await self._send_bytes("POST", self._url(space_id, "/play"), data, content_type,
                                      params={"user_id": user_id}, timeout=timeout)
        return float(json.loads(text)["duration_seconds"])

    async def _send_bytes(self, method: str, url: str, data: bytes, content_type: str, *,
                          params: dict[str, str] | None = None,
                          timeout: aiohttp.ClientTimeout | None = None) -> str:
        """A call whose body is a file (a voice message, an avatar); the answer's text.
        BridgeError if refused, BridgeUnavailable if the bridge cannot be reached."""
        if self._session is None:
            raise BridgeError("HttpBridge.start() has not been called")
        try:
            async with self._session.request(
                method, url, data=data, params=params, timeout=timeout or self._timeout,
                headers={"Content-Type": content_type or "application/octet-stream"},
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    reason = _reason(text)
                    raise BridgeError(f"bridge refused {method} {url}: {resp.status} {reason}", reason,
                                      status=resp.status)
                return text
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.mark_stale(f"{method} {url} failed")
            raise BridgeUnavailable(f"bridge unreachable at {self.control_url}: {describe(exc)}",
                                    "the audio bridge cannot be reached") from None

    async def fetch(self, name: str, into: Path) -> Path:
        """Stream one of the bridge's files (``GET /control/v1/files/{name}``) to
        ``into/name``, at most ``max_file_bytes``; nothing is left behind on failure."""
        if self._session is None:
            raise BridgeError("HttpBridge.start() has not been called")
        if not FILE_NAME.fullmatch(name):
            raise BridgeError(f"{name!r} is not a file name the bridge gives")
        url = f"{self.control_url}{API}/files/{quote(name, safe='')}"
        dest = into / name
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout.total,
                                        sock_read=FILE_READ_TIMEOUT)
        limit = self.max_file_bytes
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    reason = _reason(await resp.text())
                    raise BridgeError(f"bridge refused GET {url}: {resp.status} {reason}", reason)
                if resp.content_length is not None and resp.content_length > limit:
                    raise BridgeError(f"{name} is {resp.content_length} bytes, more than {limit}",
                                      f"the file is larger than {limit} bytes")
                size = 0
                with dest.open("wb") as out:  # written off the event loop, a chunk at a time
                    async for chunk in resp.content.iter_chunked(1 << 18):
                        size += len(chunk)
                        if size > limit:
                            raise BridgeError(f"{name} is more than {limit} bytes",
                                              f"the file is larger than {limit} bytes")
                        await asyncio.to_thread(out.write, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            dest.unlink(missing_ok=True)
            raise BridgeUnavailable(f"could not download {name} from {self.control_url}: "
                                    f"{describe(exc)}", "the audio bridge cannot be reached") from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        log.info("downloaded %s from the bridge (%d bytes)", name, size)
        return dest

    # -- local -------------------------------------------------------------------

    def page_url(self, space_id: str, token: str | None = None) -> str:
        url = f"{self.public_url}/spaces/{quote(space_id, safe='')}"
        return f"{url}?token={token}" if token else url

    def mint_token(self, space_id: str, user_id: str, role: str) -> str:
        return tokens.mint(self._secret, space_id, user_id, role, self.token_ttl)

    def on_event(self, handler: BridgeEventHandler) -> None:
        self._handlers.append(handler)

    # -- keeping the bridge in step ----------------------------------------------

    def on_resync(self, handler: ResyncHandler) -> None:
        self._resync_handlers.append(handler)

    def forget(self, handler) -> None:
        forget_handler(handler, self._handlers, self._resync_handlers)

    @property
    def available(self) -> bool:
        return (self.connected.is_set() and self.instance is not None
                and self.instance == self.synced_instance and not self._stale)

    def mark_stale(self, why: str) -> None:
        """A push may not have reached the bridge: push everything again once it answers."""
        if not self._stale:
            log.info("bridge at %s is behind (%s); every live stage is pushed again once it "
                     "answers", self.control_url, why)
        self._stale = True
        self._kick_resync()

    def _kick_resync(self) -> None:
        needed = self._stale or self.instance != self.synced_instance
        if (needed and self.connected.is_set() and self._has_pushes()
                and (self._resync_task is None or self._resync_task.done())):
            self._resync_task = asyncio.create_task(self._resync_loop(), name="bridge-resync")

    async def _resync_loop(self) -> None:
        delay = 0.5
        while self.connected.is_set() and (self._stale or self.instance != self.synced_instance):
            instance = self.instance
            if self.synced_instance is None:
                why = "start"
            elif instance != self.synced_instance:
                why = "restart"
            else:
                why = "recovered"
            self._stale = False
            try:
                await self._push_homeservers()
                for handler in list(self._resync_handlers):
                    await handler(why)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried below
                self._stale = True
                log.warning("could not push the live stages to the bridge at %s (instance %s): "
                            "%s; trying again in %.1fs", self.control_url, instance,
                            exc if isinstance(exc, BridgeError) else describe(exc), delay)
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, 10.0)
                continue
            if instance == self.instance:
                self.synced_instance = instance
            self.resyncs += 1
            async with self._resynced:
                self._resynced.notify_all()

    def _has_pushes(self) -> bool:
        return bool(self._resync_handlers or self.homeservers)

    async def _push_homeservers(self) -> None:
        """Tell the bridge the bot's homeserver. Unreachable: raised, so the push is retried;
        refused (an older bridge, or a URL it will not take): said once in the log, and the
        live stages are pushed all the same."""
        if not self.homeservers:
            return
        try:
            answer = await self._request("PUT", f"{self.control_url}{API}/openid/homeservers",
                                         {"homeservers": self.homeservers}, allow_404=True)
        except BridgeError as exc:  # unreachable, secret refused (no status) or 5xx: tried again
            if exc.status is None or exc.status >= 500:
                raise
            refused = exc.reason
        else:
            refused = "it is older than protocol 1.3" if answer is None else ""
        if refused and not self._homeservers_refused:
            log.warning("the bridge at %s did not take the bot's homeserver (%s): widget sign-ins "
                        "of %s go through federation discovery unless the bridge's "
                        "[bridge.openid_homeservers] lists it", self.control_url, refused,
                        ", ".join(self.homeservers))
        self._homeservers_refused = bool(refused)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the bridge holds every live stage (False on timeout)."""
        async def synced() -> None:
            async with self._resynced:
                await self._resynced.wait_for(lambda: self.available)

        try:
            await asyncio.wait_for(synced(), timeout)
        except TimeoutError:
            return False
        return True

    # -- events ------------------------------------------------------------------

    async def _events_loop(self) -> None:
        backoff = 0.5
        refused_logged = False
        down_since: float | None = None  # while failing: one warning, then one a minute
        last_warning = 0.0
        while True:
            try:
                assert self._session is not None
                async with self._session.ws_connect(f"{self.control_url}{API}/events",
                                                    heartbeat=20.0) as ws:
                    backoff = 0.5
                    if down_since is not None:
                        log.warning("bridge events connection back after %.0fs",
                                    time.monotonic() - down_since)
                        down_since = None
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        try:
                            event = json.loads(msg.data)
                        except json.JSONDecodeError:
                            log.warning("bridge sent a non-JSON event: %.100s", msg.data)
                            continue
                        if event.get("type") == "hello":
                            self._on_hello(event)
                            continue
                        await self._dispatch(event)
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    if not refused_logged:  # once, not every few seconds
                        log.error("%s", _secret_refused(self.control_url))
                        refused_logged = True
                    backoff = self._max_backoff
                else:
                    log.warning("bridge events connection refused: %s; retrying in %.1fs",
                                describe(exc), backoff)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                if now - last_warning >= 60.0:
                    log.warning("bridge events connection failed: %s; retrying every %.0fs or less",
                                describe(exc), self._max_backoff)
                    last_warning = now
            finally:
                if self.connected.is_set() and down_since is None:
                    down_since = time.monotonic()
                self.connected.clear()
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    def _on_hello(self, hello: dict[str, Any]) -> None:
        instance = str(hello.get("instance") or "")
        if not instance:  # a bridge older than instance ids: every connection may be new
            instance = f"unnamed-{time.monotonic_ns()}"
        if self.instance is not None and instance != self.instance:
            log.warning("the bridge at %s restarted (instance %s, was %s); pushing every live "
                        "stage to it again", self.control_url, instance, self.instance)
        self.instance = instance
        self.connected.set()
        self._kick_resync()

    async def _dispatch(self, event: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            try:
                await handler(event)
            except Exception:  # one bad handler must not kill the connection
                log.exception("bridge event handler failed on %s", event.get("type"))
