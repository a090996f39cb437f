"""The bot's client for the bridge's control API (docs/protocol.md, version 1).

:class:`HttpBridge` satisfies :class:`bot.bridge_api.BridgeControl`: requests go over
HTTP with ``Authorization: Bearer <shared_secret>``; bridge → bot events arrive on a
WebSocket to ``/control/v1/events`` that is held open and re-opened with backoff.
Tokens are minted locally with :mod:`bridge.tokens` (pure, stdlib).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.bridge_api import ROLES, BridgeError, BridgeEventHandler, StageStats
from bridge import tokens

log = logging.getLogger(__name__)

API = "/control/v1"
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


def _stats(space_id: str, data: dict[str, Any]) -> StageStats:
    return StageStats(space_id, bool(data.get("open", False)),
                      **{k: data[k] for k in _STATS_FIELDS if k in data})


class HttpBridge:
    def __init__(self, control_url: str, public_url: str, shared_secret: str,
                 token_ttl: int = 3600, *, request_timeout: float = 10.0,
                 max_backoff: float = 30.0) -> None:
        if not shared_secret:
            raise ValueError("shared_secret must not be empty")
        self.control_url = control_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self._secret = shared_secret
        self.token_ttl = token_ttl
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._handlers: list[BridgeEventHandler] = []
        self._events_task: asyncio.Task[None] | None = None
        #: set while the events WebSocket is open (tests and health checks wait on it)
        self.connected = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the session, check that the bridge takes our secret, start the events link.

        A bridge that refuses the secret stops start-up (BridgeAuthError, one clear line); a
        bridge that cannot be reached yet is only logged: the events link keeps trying."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._secret}"}, timeout=self._timeout)
        try:
            await self._request("GET", f"{self.control_url}{API}/spaces")
        except BridgeAuthError:
            await self.close()
            raise
        except BridgeError as exc:
            log.warning("%s; carrying on, the bot retries the bridge in the background", exc)
        if self._events_task is None:
            self._events_task = asyncio.create_task(self._events_loop(),
                                                    name="bridge-events")

    async def close(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_task
            self._events_task = None
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
                    try:
                        reason = json.loads(text).get("error", text)
                    except (json.JSONDecodeError, AttributeError):
                        reason = text[:200]
                    raise BridgeError(f"bridge refused {method} {url}: {resp.status} {reason}", str(reason))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BridgeError(f"bridge unreachable at {self.control_url}: {describe(exc)}") from None

    async def open_stage(self, space_id: str, title: str, *, public: bool,
                         record: bool = False, captions: bool = False) -> None:
        await self._request("POST", self._url(space_id), {
            "title": title, "public": public, "record": record, "captions": captions})

    async def set_roles(self, space_id: str, roles: dict[str, str]) -> None:
        unknown = set(roles.values()) - ROLES
        if unknown:
            raise BridgeError(f"unknown role(s) {sorted(unknown)} for space {space_id}")
        await self._request("PUT", self._url(space_id, "/roles"), {"roles": dict(roles)})

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

    async def clip(self, space_id: str, seconds: float | None = None) -> dict[str, Any]:
        """Write the last ``seconds`` (default 30) of the mix to an Ogg file on the bridge."""
        body = {} if seconds is None else {"seconds": seconds}
        data = await self._request("POST", self._url(space_id, "/clip"), body)
        assert data is not None
        return data

    async def play(self, space_id: str, data: bytes, content_type: str, user_id: str) -> float:
        """Play a voice message (the audio file's bytes) into the space's live mix, as
        ``user_id``, who must hold an audio role; returns its duration in seconds."""
        if self._session is None:
            raise BridgeError("HttpBridge.start() has not been called")
        url = self._url(space_id, "/play")
        # uploading up to 20 MB and decoding it takes longer than a control call
        timeout = aiohttp.ClientTimeout(total=max(self._timeout.total or 0, 120.0))
        try:
            async with self._session.post(
                url, data=data, params={"user_id": user_id}, timeout=timeout,
                headers={"Content-Type": content_type or "application/octet-stream"},
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    try:
                        reason = json.loads(text).get("error", text)
                    except (json.JSONDecodeError, AttributeError):
                        reason = text[:200]
                    raise BridgeError(f"bridge refused POST {url}: {resp.status} {reason}",
                                      str(reason))
                return float(json.loads(text)["duration_seconds"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BridgeError(f"bridge unreachable at {self.control_url}: {describe(exc)}") from None

    # -- local -------------------------------------------------------------------

    def page_url(self, space_id: str, token: str | None = None) -> str:
        url = f"{self.public_url}/spaces/{quote(space_id, safe='')}"
        return f"{url}?token={token}" if token else url

    def mint_token(self, space_id: str, user_id: str, role: str) -> str:
        return tokens.mint(self._secret, space_id, user_id, role, self.token_ttl)

    def on_event(self, handler: BridgeEventHandler) -> None:
        self._handlers.append(handler)

    # -- events ------------------------------------------------------------------

    async def _events_loop(self) -> None:
        backoff = 0.5
        refused_logged = False
        while True:
            try:
                assert self._session is not None
                async with self._session.ws_connect(f"{self.control_url}{API}/events",
                                                    heartbeat=20.0) as ws:
                    self.connected.set()
                    backoff = 0.5
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        try:
                            event = json.loads(msg.data)
                        except json.JSONDecodeError:
                            log.warning("bridge sent a non-JSON event: %.100s", msg.data)
                            continue
                        if event.get("type") == "hello":
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
                log.warning("bridge events connection failed: %s; retrying in %.1fs",
                            describe(exc), backoff)
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _dispatch(self, event: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            try:
                await handler(event)
            except Exception:  # one bad handler must not kill the connection
                log.exception("bridge event handler failed on %s", event.get("type"))
