"""The bridge's aiohttp application: routes, handlers, lifecycle.

Routes (all registered in :func:`create_app`):

- ``/control/v1/...``: the bot's authenticated control API (docs/protocol.md)
- ``GET /spaces/{space_id}/ws``: WebSocket for listeners and speakers
- ``GET /spaces/{space_id}/live.ogg``: Ogg/Opus stream for any player
- ``GET /``, ``GET /spaces/{space_id}``, ``GET /api/spaces``: the web page
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import socket
import stat
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, hdrs, web

from . import avatars, jsonsafe, openid, recording, tokens, voice
from .captions import CaptionPool, CaptionsError
from .connection import (
    CLOSE_BAD_TOKEN,
    CLOSE_FORBIDDEN,
    CLOSE_NO_SPACE,
    CLOSE_SHUTDOWN,
    CLOSE_TOO_MANY,
    CLOSE_TOO_SLOW,
    Client,
    audio_backlog_limit,
)
from .edge import EdgeFeed
from .events import EventBus
from .guard import ConnectionGuard, GuardedSite, PathOnlyAccessLogger, address_key
from .limits import RateLimiter, Slots, Throttle
from .listings import Listing, ListingBook, parse_listing
from .metrics import BridgeMetrics, redis_up
from .oggstream import OggListener
from .origin_feed import OriginFeed
from .page_headers import security_headers
from .page_info import AVATAR_ID, InfoError, PageInfo, parse_people
from .roles import ROLES
from .settings import BridgeSettings, HomeserverMapError, homeserver_map, resolved_public_url
from .stage import REMOVED_REASON, Stage
from .status_server import start_status_server

log = logging.getLogger(__name__)

API = "/control/v1"
PROTOCOL_VERSION = 1
#: 1.1: POST .../play (voice messages); 1.2: instance ids, GET .../files/{name}, roles
#: pushes with "removed", tokens that end and their renewal; 1.3: PUT .../openid/homeservers;
#: 1.4: what the page shows (host, room link, tip jar, names and avatars, answers to hands);
#: 1.5: the pages of scheduled, ended and cancelled spaces (PUT/DELETE .../listings/{id})
PROTOCOL_MINOR = 5
MAX_SPACE_ID = 255
STATIC_DIR = Path(__file__).parent / "static"

SETTINGS: web.AppKey[BridgeSettings] = web.AppKey("settings", BridgeSettings)
STAGES: web.AppKey[dict[str, Stage]] = web.AppKey("stages", dict)
HTTP: web.AppKey[openid.Sessions] = web.AppKey("http", openid.Sessions)
EVENTS: web.AppKey[EventBus] = web.AppKey("events", EventBus)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("control_sockets", set)
BACKGROUND: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("background", set)
CAPTIONS: web.AppKey[CaptionPool] = web.AppKey("captions", CaptionPool)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard", ConnectionGuard)
OPENID_LIMIT: web.AppKey[RateLimiter] = web.AppKey("openid_limit", RateLimiter)
OPENID_LOG: web.AppKey[Throttle] = web.AppKey("openid_log", Throttle)
OPENID_SLOTS: web.AppKey[Slots] = web.AppKey("openid_slots", Slots)
#: this start of the bridge: new on every start, so the bot can tell a restart
INSTANCE: web.AppKey[str] = web.AppKey("instance", str)
HOMESERVERS: web.AppKey[openid.Homeservers] = web.AppKey("homeservers", openid.Homeservers)
#: the Redis feed: an origin's to its edges, or an edge's from its origin (None: no Redis)
FEED: web.AppKey[OriginFeed | EdgeFeed | None] = web.AppKey("feed", object)
#: what GET /metrics shows (bridge/metrics.py), and the port it is served on (0: not served)
METRICS: web.AppKey[BridgeMetrics] = web.AppKey("metrics", BridgeMetrics)
METRICS_PORT: web.AppKey[int] = web.AppKey("metrics_port", int)
#: the avatars the bot put, served to the pages (bridge/avatars.py)
AVATARS: web.AppKey[avatars.AvatarStore] = web.AppKey("avatars", avatars.AvatarStore)
#: the pages of spaces that are not live, as the bot gave them (bridge/listings.py)
LISTINGS: web.AppKey[ListingBook] = web.AppKey("listings", ListingBook)
#: how long an edge's client waits for a space the edge has not heard of yet (it may
#: have just started: the origin names its spaces every second)
EDGE_WAIT_SECONDS = 2.0


# -- helpers ---------------------------------------------------------------------


def _json_error(cls: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    body = {"error": message, **extra}
    return cls(text=json.dumps(body), content_type="application/json")


def _check_secret(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise _json_error(web.HTTPUnauthorized, "missing bearer token")
    if not hmac.compare_digest(given.strip().encode(), settings.shared_secret.encode()):
        raise _json_error(web.HTTPUnauthorized, "wrong shared secret")
    request.app[GUARD].trust(request)  # the bot's connection: no header timeout, no cap


def _space_id(request: web.Request) -> str:
    space_id = request.match_info["space_id"]
    if not space_id or len(space_id) > MAX_SPACE_ID:
        raise _json_error(web.HTTPBadRequest, "bad space id", field="space_id")
    return space_id


def _stage(request: web.Request) -> Stage:
    space_id = _space_id(request)
    stage = request.app[STAGES].get(space_id)
    if stage is None:
        raise _json_error(web.HTTPNotFound, f"no open stage for space {space_id}")
    return stage


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body, bounded in size and nesting (bridge/jsonsafe.py)."""
    try:
        return jsonsafe.loads_object(await request.read())
    except jsonsafe.JsonRefused as exc:
        raise _json_error(web.HTTPBadRequest, f"body refused: {exc}", field="body") from None


def _field(body: dict[str, Any], name: str, kind: type, *, default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise _json_error(web.HTTPBadRequest, f"missing field {name!r}", field=name)
        return default
    value = body[name]
    if kind is bool and not isinstance(value, bool):
        raise _json_error(web.HTTPBadRequest, f"field {name!r} must be true or false",
                          field=name)
    if kind is str and not isinstance(value, str):
        raise _json_error(web.HTTPBadRequest, f"field {name!r} must be a string", field=name)
    return value


# -- control API -----------------------------------------------------------------


async def open_space(request: web.Request) -> web.Response:
    _check_secret(request)
    space_id = _space_id(request)
    body = await _body(request)
    title = _field(body, "title", str)
    if len(title) > 300:
        raise _json_error(web.HTTPBadRequest, "field 'title' is too long", field="title")
    public = _field(body, "public", bool)
    record = _field(body, "record", bool, default=False)
    captions = _field(body, "captions", bool,
                      default=request.app[SETTINGS].captions_by_default)
    if captions:
        await _captions_ready(request)
    stages = request.app[STAGES]
    stage = stages.get(space_id)
    info = _page_info(body, stage.info if stage is not None else PageInfo())
    if stage is None:
        feed = request.app[FEED]
        stage = Stage(space_id, title, public=public, record=record, captions=captions,
                      settings=request.app[SETTINGS], emit=request.app[EVENTS].emit,
                      captions_pool=request.app[CAPTIONS],
                      mirror=feed if isinstance(feed, OriginFeed) else None,
                      tick_timer=request.app[METRICS].observe_tick)
        stages[space_id] = stage
        stage.set_info(info)
        stage.start()
        request.app[LISTINGS].drop(space_id)  # live now: the stage is its page
        status = 201
    else:  # idempotent: same call again updates what it names
        stage.retitle(title)
        stage.set_public(public)
        stage.set_record(record)
        if captions != stage.captions:
            stage.set_captions(captions)
        stage.set_info(info)
        status = 200
    return web.json_response(stage.stats(), status=status)


async def put_roles(request: web.Request) -> web.Response:
    _check_secret(request)
    stage = _stage(request)
    body = await _body(request)
    roles = _field(body, "roles", dict)
    if not isinstance(roles, dict):
        raise _json_error(web.HTTPBadRequest, "field 'roles' must be an object", field="roles")
    for user, role in roles.items():
        if role not in ROLES:
            raise _json_error(web.HTTPBadRequest,
                              f"role {role!r} for {user} is not one of {sorted(ROLES)}",
                              field=f"roles.{user}")
    removed = body.get("removed")
    if removed is not None and not (isinstance(removed, list)
                                    and all(isinstance(u, str) for u in removed)):
        raise _json_error(web.HTTPBadRequest, "field 'removed' must be a list of user ids",
                          field="removed")
    stage.set_roles(roles)
    if removed is not None:
        stage.set_removed(frozenset(removed))
    return web.json_response(stage.stats())


def _page_info(body: dict[str, Any], info: PageInfo) -> PageInfo:
    """``info`` with the page's fields the body names (host, room_url, tips), checked."""
    try:
        return info.updated(body)
    except InfoError as exc:
        raise _json_error(web.HTTPBadRequest, str(exc), field=exc.field) from None


async def put_people(request: web.Request) -> web.Response:
    """Names and avatars for the page (1.4): merged into what the stage knows."""
    _check_secret(request)
    stage = _stage(request)
    body = await _body(request)
    try:
        people = parse_people(body.get("people"))
    except InfoError as exc:
        raise _json_error(web.HTTPBadRequest, str(exc), field=exc.field) from None
    stage.set_people(people)
    return web.json_response({"people": len(stage.profiles)})


#: the answers to a raised hand the bot may give (a yes is a roles push)
HAND_ANSWERS = frozenset({"declined"})


async def answer_hand(request: web.Request) -> web.Response:
    """The host's no to a raised hand (1.4): the hand comes down, the person's pages say so."""
    _check_secret(request)
    stage = _stage(request)
    body = await _body(request)
    user_id = _field(body, "user_id", str)
    answer = _field(body, "answer", str)
    if answer not in HAND_ANSWERS:
        raise _json_error(web.HTTPBadRequest, f"answer must be one of {sorted(HAND_ANSWERS)}",
                          field="answer")
    stage.answer_hand(user_id, answer)
    return web.json_response(stage.stats())


async def put_avatar(request: web.Request) -> web.Response:
    """An avatar image, named by its SHA-256 (1.4); the pages load it from /avatars/."""
    _check_secret(request)
    avatar_id = request.match_info["avatar_id"]
    if not AVATAR_ID.fullmatch(avatar_id):
        raise _json_error(web.HTTPBadRequest, "an avatar is named by its SHA-256 (64 lowercase hex digits)",
                          field="avatar_id")
    data = await _raw_body(request, avatars.MAX_AVATAR_BYTES, "avatar")
    try:
        new = request.app[AVATARS].put(avatar_id, data)
    except avatars.AvatarError as exc:
        raise _json_error(web.HTTPBadRequest, f"avatar refused: {exc}", field="body") from None
    return web.json_response({"avatar": avatar_id, "bytes": len(data)}, status=201 if new else 200)


async def get_avatar(request: web.Request) -> web.Response:
    found = request.app[AVATARS].get(request.match_info["avatar_id"])
    if found is None:
        raise _json_error(web.HTTPNotFound, "no such avatar")
    kind, data = found
    return web.Response(body=data, content_type=kind,
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


async def patch_space(request: web.Request) -> web.Response:
    _check_secret(request)
    stage = _stage(request)
    body = await _body(request)
    unknown = set(body) - {"record", "captions"}
    if unknown:
        name = sorted(unknown)[0]
        raise _json_error(web.HTTPBadRequest, f"unknown field {name!r}", field=name)
    record = _field(body, "record", bool, default=None)
    captions = _field(body, "captions", bool, default=None)
    if captions:
        await _captions_ready(request)
    if record is not None:
        stage.set_record(record)
    if captions is not None:
        stage.set_captions(captions)
    return web.json_response(stage.stats())


async def _captions_ready(request: web.Request) -> None:
    """Start the recognisers if needed; 503 naming the problem if they cannot run."""
    try:
        await request.app[CAPTIONS].start()
    except CaptionsError as exc:
        raise _json_error(web.HTTPServiceUnavailable, f"captions unavailable: {exc}",
                          field="captions") from None


async def get_space(request: web.Request) -> web.Response:
    _check_secret(request)
    return web.json_response(_stage(request).stats())


async def delete_space(request: web.Request) -> web.Response:
    _check_secret(request)
    stage = _stage(request)
    request.app[STAGES].pop(stage.space_id, None)
    await stage.close(wait=False)
    # converting the recording may take a while: answer now, keep the task owned
    background = request.app[BACKGROUND]
    task = asyncio.create_task(stage.drain(), name=f"stage-drain:{stage.space_id}")
    background.add(task)
    task.add_done_callback(background.discard)
    stats = stage.stats()
    stats.update(open=False, listeners=0, speakers_connected=0, recording=False)
    return web.json_response(stats)


async def clip_space(request: web.Request) -> web.Response:
    _check_secret(request)
    stage = _stage(request)
    body = await _body(request) if request.can_read_body else {}
    seconds = body.get("seconds")
    if seconds is not None and (
        not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0
    ):
        raise _json_error(web.HTTPBadRequest, "field 'seconds' must be a positive number",
                          field="seconds")
    try:
        return web.json_response(await stage.clip(seconds))
    except ValueError as exc:
        raise _json_error(web.HTTPConflict, str(exc)) from None


async def play_voice(request: web.Request) -> web.Response:
    """A voice message into the live mix; the body is the audio file (bridge/voice.py)."""
    _check_secret(request)
    stage = _stage(request)
    user_id = request.query.get("user_id", "")
    if not user_id:
        raise _json_error(web.HTTPBadRequest, "missing query parameter 'user_id'",
                          field="user_id")
    if not stage.may_speak(user_id):
        raise _json_error(web.HTTPForbidden,
                          f"{user_id} is not a host, co-host or speaker of this space",
                          field="user_id")
    data = await _raw_body(request, voice.MAX_BYTES, "audio file")
    try:  # ffmpeg, off the event loop
        pcm = await asyncio.get_running_loop().run_in_executor(
            voice.EXECUTOR, voice.decode, data, voice.MAX_SECONDS)
    except voice.VoiceError as exc:
        raise _json_error(web.HTTPBadRequest, str(exc), field="body") from None
    # the space may have ended, or the user lost the mic, while ffmpeg ran
    if request.app[STAGES].get(stage.space_id) is not stage or not stage.open:
        raise _json_error(web.HTTPNotFound, f"no open stage for space {stage.space_id}")
    if not stage.may_speak(user_id):
        raise _json_error(web.HTTPForbidden,
                          f"{user_id} is not a host, co-host or speaker of this space",
                          field="user_id")
    try:
        starts_in = stage.voice.add(user_id, pcm)
    except voice.VoiceError as exc:
        raise _json_error(web.HTTPTooManyRequests, str(exc)) from None
    return web.json_response({"duration_seconds": round(pcm.size / voice.SAMPLE_RATE, 3),
                              "starts_in_seconds": round(starts_in, 3)})


async def _raw_body(request: web.Request, limit: int, what: str) -> bytes:
    """The body as bytes (an audio file, an avatar), at most ``limit``: 413 beyond it, 400
    if empty."""
    def too_large(size: int) -> web.HTTPException:
        return web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=size, content_type="application/json",
            text=json.dumps({"error": f"{what} is larger than {limit} bytes",
                             "field": "body"}))

    if request.content_length is not None and request.content_length > limit:
        raise too_large(request.content_length)
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            raise too_large(len(data))
    if not data:
        raise _json_error(web.HTTPBadRequest, f"empty body: send the {what} as the body",
                          field="body")
    return bytes(data)


async def get_file(request: web.Request) -> web.StreamResponse:
    """A recording, clip or transcript, streamed to the bot (it never reads our disk)."""
    _check_secret(request)
    name = request.match_info["name"]
    match = recording.FILE_NAME.fullmatch(name)
    if match is None:
        raise _json_error(web.HTTPBadRequest, "not a file name of this bridge", field="name")
    folder = Path(request.app[SETTINGS].recordings_dir)
    try:  # the name itself, never a link (checked on what was opened, not before)
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise _json_error(web.HTTPNotFound, f"no file {name}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _json_error(web.HTTPNotFound, f"no file {name}")
        log.info("sending %s (%d bytes) to the bot", name, info.st_size)
        resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: recording.FILE_TYPES[match[1]]})
        resp.content_length = info.st_size
        await resp.prepare(request)
        while chunk := await asyncio.to_thread(file.read, 1 << 18):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def put_homeservers(request: web.Request) -> web.Response:
    """The bot's own homeserver (server name -> the URL the bot uses), so widget sign-ins
    of its users are checked there rather than through federation discovery. Replaces
    what the bot said before; ``[bridge.openid_homeservers]`` entries still win."""
    _check_secret(request)
    body = await _body(request)
    try:
        pairs = homeserver_map(body.get("homeservers"))
    except HomeserverMapError as exc:
        raise _json_error(web.HTTPBadRequest, f"homeservers{exc.where}: {exc}", field="homeservers") from None
    book = request.app[HOMESERVERS]
    if dict(pairs) != book.from_bot:
        log.info("widget sign-ins of %s are checked at %s (the bot's homeserver)",
                 ", ".join(name for name, _ in pairs) or "no server", ", ".join(url for _, url in pairs) or "-")
    book.set_from_bot(dict(pairs))
    return web.json_response({"homeservers": book.as_dict()})


async def list_control(request: web.Request) -> web.Response:
    _check_secret(request)
    return web.json_response({"version": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR,
                              "instance": request.app[INSTANCE], "redis": _feed_status(request.app),
                              "spaces": [s.stats() for s in request.app[STAGES].values()]})


def _feed_status(app: web.Application) -> dict[str, Any] | None:
    feed = app[FEED]
    return feed.status() if feed is not None else None


async def edge_has_no_control(request: web.Request) -> web.Response:
    raise _json_error(web.HTTPNotFound, "this bridge is an edge: the control API is on the origin")


async def _known_stage(request: web.Request, space_id: str) -> Stage | None:
    """The open stage of ``space_id``; an edge waits a moment for one it has not heard of."""
    stage = request.app[STAGES].get(space_id)
    feed = request.app[FEED]
    if stage is None and isinstance(feed, EdgeFeed):
        stage = await feed.wait_for(space_id, EDGE_WAIT_SECONDS)
    return stage


async def control_events(request: web.Request) -> web.WebSocketResponse:
    _check_secret(request)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, timeout=2.0)
    await ws.prepare(request)
    bus = request.app[EVENTS]
    queue = bus.subscribe()
    sockets = request.app[SOCKETS]
    sockets.add(ws)

    async def pump() -> None:
        while True:
            event = await queue.get()
            await ws.send_str(json.dumps(event))
            queue.task_done()

    pump_task = asyncio.create_task(pump())
    try:
        await ws.send_str(json.dumps({"type": "hello", "version": PROTOCOL_VERSION,
                                     "minor": PROTOCOL_MINOR, "instance": request.app[INSTANCE],
                                     "spaces": sorted(request.app[STAGES])}))
        async for _msg in ws:  # the bot sends nothing but pings; just keep reading
            if pump_task.done():
                break
    finally:
        bus.unsubscribe(queue)
        sockets.discard(ws)
        pump_task.cancel()
        await asyncio.gather(pump_task, return_exceptions=True)
    return ws


# -- clients ---------------------------------------------------------------------


def _given_token(request: web.Request) -> str | None:
    """The personal token a page or player gives: ``?token=``, else ``Authorization: Bearer``."""
    token = request.query.get("token")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    return token or None


def _claims(request: web.Request, stage: Stage) -> tokens.TokenClaims | None:
    """Token claims, None for an anonymous listener; raises TokenError/PermissionError."""
    token = _given_token(request)
    if not token:
        if not stage.public:
            raise PermissionError("this space is not public; a token is needed")
        return None
    return tokens.verify(request.app[SETTINGS].shared_secret, token, stage.space_id)


#: what a listener connection over its address's cap hears (close 4429 / HTTP 429)
TOO_MANY_LISTENERS = "too many listener connections from your network address; try again later"


def _admit_listener(request: web.Request, claims: tokens.TokenClaims | None) -> bool:
    """Count a listener connection against its address's cap (max_streams_per_address).
    Speakers, co-hosts and hosts (signed in with such a role) are never refused, so a
    space can always be run from a crowded network."""
    if claims is not None and claims.role != "listener":
        return True
    return request.app[GUARD].admit_stream(request)


def _limit_buffers(request: web.Request, settings: BridgeSettings) -> None:
    """Keep per-client buffering small so a stalled client shows up as a full queue."""
    transport = request.transport
    if transport is None or settings.client_sndbuf_bytes <= 0:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.client_sndbuf_bytes)
    with contextlib.suppress(AttributeError, NotImplementedError):
        transport.set_write_buffer_limits(high=settings.client_sndbuf_bytes)


def _close_reason(reason: str) -> bytes:
    """A close reason within the 123 bytes a close frame allows, still valid UTF-8."""
    return reason.encode()[:120].decode(errors="ignore").encode()


async def _close_or_abort(ws: web.WebSocketResponse, request: web.Request, code: int,
                          reason: str, seconds: float = 2.5) -> None:
    """Close gracefully if the peer lets us within ``seconds``; else (or if data is still
    stuck in our buffer) abort the TCP connection, so its file descriptor is freed now."""
    transport = request.transport
    timed_out = False
    try:
        await asyncio.wait_for(ws.close(code=code, message=_close_reason(reason)), seconds)
    except (TimeoutError, ConnectionError):
        timed_out = True
    if transport is not None and (timed_out or transport.get_write_buffer_size() > 0):
        transport.abort()


async def _refuse_ws(request: web.Request, code: int, reason: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(timeout=2.0)
    await ws.prepare(request)
    await _close_or_abort(ws, request, code, reason)
    return ws


async def _wait_for_kick(client: Client, ws: web.WebSocketResponse,
                         request: web.Request) -> None:
    await client.kick_event.wait()
    assert client.kicked is not None
    code, reason = client.kicked
    # a peer that is not reading would keep a graceful close waiting for its send
    # buffer forever: _close_or_abort drops it outright after a few seconds.
    await _close_or_abort(ws, request, code, reason)


async def client_ws(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    space_id = _space_id(request)
    stage = await _known_stage(request, space_id)
    if stage is None:
        return await _refuse_ws(request, CLOSE_NO_SPACE, f"no live space {space_id}")
    try:
        claims = _claims(request, stage)
    except tokens.TokenError as exc:
        return await _refuse_ws(request, CLOSE_BAD_TOKEN, f"token refused: {exc.reason}")
    except PermissionError as exc:
        return await _refuse_ws(request, CLOSE_FORBIDDEN, str(exc))
    if claims is not None and not stage.may_join(claims.user):
        return await _refuse_ws(request, CLOSE_FORBIDDEN, REMOVED_REASON)
    if not _admit_listener(request, claims):
        return await _refuse_ws(request, CLOSE_TOO_MANY, TOO_MANY_LISTENERS)

    # Liveness is ours, not aiohttp's heartbeat (which never pings a client that keeps
    # sending): the tick pings every PING_EVERY_SECONDS and a client that has not answered
    # within PONG_DEADLINE_SECONDS is not reading, so it is closed as too slow even while
    # kernel buffers still swallow its audio. Audio and control messages are written by
    # the tick straight to the transport (bridge/connection.py); this handler only reads.
    ws = web.WebSocketResponse(max_msg_size=settings.max_msg_size, heartbeat=None,
                               autoping=False, timeout=2.0, compress=False,
                               writer_limit=max(1024, settings.client_sndbuf_bytes // 4))
    await ws.prepare(request)
    _limit_buffers(request, settings)
    transport = request.transport
    if transport is None or transport.is_closing():
        return ws  # gone during the upgrade
    client = Client(claims.user if claims else None, claims.role if claims else "listener",
                    audio_backlog_limit(settings),
                    bundles=request.query.get("bundles") == "1")
    client.expires_at = float(claims.exp) if claims else None
    client.attach(transport, lambda: not ws.closed)

    kicker = asyncio.create_task(_wait_for_kick(client, ws, request))
    stage.add_client(client)
    traffic = request.app[METRICS].traffic
    traffic.client_opened(client)
    try:
        async for msg in ws:
            if client.kicked is not None or not stage.open:
                break
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                binary = msg.type == WSMsgType.BINARY
                if binary:
                    stage.on_audio(client, msg.data)
                else:
                    stage.on_json(client, msg.data)
                pause = client.read_pause(time.monotonic(), binary)
                if pause > 0:  # over its message rate: read this client more slowly
                    await asyncio.sleep(pause)
            elif msg.type == WSMsgType.PONG:
                client.pong_received()
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.info("client %s in %s: %s", client.user_id, space_id, ws.exception())
                break
    finally:
        traffic.client_closed(client)
        stage.remove_client(client)
        if client.kicked is None:
            kicker.cancel()
        await asyncio.gather(kicker, return_exceptions=True)
    return ws


async def live_ogg(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    stage = await _known_stage(request, _space_id(request))
    if stage is None:
        raise _json_error(web.HTTPNotFound, f"no open stage for space {_space_id(request)}")
    try:
        claims = _claims(request, stage)
    except tokens.TokenError as exc:
        raise _json_error(web.HTTPUnauthorized, f"token refused: {exc.reason}") from None
    except PermissionError as exc:
        raise _json_error(web.HTTPForbidden, str(exc)) from None
    if claims is not None and not stage.may_join(claims.user):
        raise _json_error(web.HTTPForbidden, REMOVED_REASON)
    if not _admit_listener(request, None):
        raise web.HTTPTooManyRequests(text=json.dumps({"error": TOO_MANY_LISTENERS}),
                                      content_type="application/json", headers={"Retry-After": "30"})
    resp = web.StreamResponse(headers={
        "Content-Type": "audio/ogg; codecs=opus",
        "Cache-Control": "no-cache, no-store",
    })
    await resp.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return resp  # gone before the first byte
    _limit_buffers(request, settings)
    # the head and the header pages go through aiohttp (which frames them as it chose);
    # from then on the stage writes each page straight to the transport (bridge/oggstream.py)
    chunked = resp.headers.get(hdrs.TRANSFER_ENCODING, "").lower() == "chunked"
    headers = stage.ogg.headers()
    await resp.write(headers)
    listener = OggListener(transport, chunked, stage.space_id)
    listener.sent = len(headers)
    if claims is not None:  # the stream ends with its token (it cannot be renewed)
        listener.user_id, listener.expires_at = claims.user, float(claims.exp)
    stage.add_ogg(listener)
    traffic = request.app[METRICS].traffic
    traffic.stream_opened(listener)
    try:
        await listener.kick_event.wait()
    finally:
        traffic.stream_closed(listener)
        stage.remove_ogg(listener)
    if listener.kicked is not None and listener.kicked[0] != CLOSE_TOO_SLOW:
        try:  # the space ended: its last page is out; finish the response cleanly
            await asyncio.wait_for(resp.write_eof(), 1.0)
        except (TimeoutError, ConnectionError):
            transport.abort()
    else:
        transport.abort()  # too slow, or gone: cut it without draining
    return resp


# -- web page --------------------------------------------------------------------


async def public_spaces(request: web.Request) -> web.Response:
    """The live public spaces, as the index page's cards show them (busiest first), then
    the upcoming public ones (soonest first)."""
    stages = [s for s in request.app[STAGES].values() if s.public and s.open]
    stages.sort(key=lambda s: (-s.listeners, s.title))
    upcoming = [x for x in request.app[LISTINGS].upcoming(datetime.now(UTC))
                if x.space_id not in request.app[STAGES]]
    return web.json_response({"spaces": [_card(s) for s in stages],
                              "upcoming": [_upcoming_card(x) for x in upcoming]})


def _upcoming_card(listing: Listing) -> dict[str, Any]:
    page = listing.as_page()
    return {key: page[key] for key in ("space_id", "title", "host", "starts_at")} | {
        "people": {u: p for u, p in page["people"].items() if u == listing.host}}


#: faces on an index card
CARD_FACES = 6


def _card(stage: Stage) -> dict[str, Any]:
    on_stage = stage.on_stage()
    host = stage.info.host
    return {"space_id": stage.space_id, "title": stage.title, "listeners": stage.listeners,
            "speakers": stage.speakers_connected(), "stream_url": stage.stream_url(),
            "host": host, "on_stage": on_stage[:CARD_FACES], "on_stage_count": len(on_stage),
            "people": stage.profiles.of([*on_stage[:CARD_FACES], *([host] if host else [])])}


# -- the pages of spaces that are not live (1.5) ------------------------------------


async def put_listing(request: web.Request) -> web.Response:
    """A scheduled, ended or cancelled space's page, as the bot gives it. Files it names
    that this bridge does not have are left out and named in the answer."""
    _check_secret(request)
    space_id = _space_id(request)
    body = await _body(request)
    try:
        listing = parse_listing(space_id, body)
    except InfoError as exc:
        raise _json_error(web.HTTPBadRequest, str(exc), field=exc.field) from None
    stage = request.app[STAGES].get(space_id)
    if stage is not None and stage.open:  # a late push of a page from before it went live
        raise _json_error(web.HTTPConflict, f"space {space_id} is live: its stage is its page")
    folder = Path(request.app[SETTINGS].recordings_dir)
    missing = sorted(name for name in listing.files() if _own_file(folder, name) is None)
    if missing:
        log.warning("space %s: its page names files this bridge does not have: %s", space_id,
                    ", ".join(missing))
        listing = listing.without(set(missing))
    book = request.app[LISTINGS]
    new = book.get(space_id) is None
    book.put(listing)
    return web.json_response({"space_id": space_id, "state": listing.state, "missing": missing},
                             status=201 if new else 200)


async def delete_listing(request: web.Request) -> web.Response:
    _check_secret(request)
    return web.json_response({"dropped": request.app[LISTINGS].drop(_space_id(request))})


def _own_file(folder: Path, name: str) -> Path | None:
    """One of this bridge's recordings or transcripts, a plain file (never a link)."""
    path = folder / name
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return path if stat.S_ISREG(info.st_mode) else None


def _listing_for(request: web.Request) -> Listing:
    """The space's listing, if this page may see it: a public space's to anyone, another's
    with a valid link of that space (401 for a bad token, 403 with none)."""
    space_id = _space_id(request)
    listing = request.app[LISTINGS].get(space_id)
    if listing is None:
        raise _json_error(web.HTTPNotFound, f"no space {space_id} is known here")
    if listing.public:
        return listing
    token = _given_token(request)
    if not token:
        raise _json_error(web.HTTPForbidden, "this space is not public: its page opens with the "
                          "personal link the Chorus bot sends you (!space join while it is live); "
                          "its recording is posted in its Matrix room")
    try:
        claims = tokens.verify(request.app[SETTINGS].shared_secret, token, space_id)
    except tokens.TokenError as exc:
        raise _json_error(web.HTTPUnauthorized, f"your link was refused ({exc.reason}): while the "
                          "space is live, !space join gives you a new one; its recording is posted "
                          "in its Matrix room") from None
    if claims.user in listing.blocked:
        raise _json_error(web.HTTPForbidden, REMOVED_REASON)
    return listing


async def space_facts(request: web.Request) -> web.Response:
    """What a page shows of a space: "live" (the page connects for the rest), or its
    listing (scheduled, ended, cancelled)."""
    space_id = _space_id(request)
    stage = request.app[STAGES].get(space_id)
    headers = {"Cache-Control": "no-store"}
    if stage is not None and stage.open:
        return web.json_response({"space_id": space_id, "state": "live"}, headers=headers)
    return web.json_response(_listing_for(request).as_page(), headers=headers)


async def get_calendar(request: web.Request) -> web.Response:
    """A scheduled space's calendar file (the bot wrote it), to download."""
    listing = _listing_for(request)
    if listing.calendar is None:
        raise _json_error(web.HTTPNotFound, f"space {listing.space_id} has no calendar file")
    name = f"chorus-{recording.safe_name(listing.space_id)}.ics"
    return web.Response(body=listing.calendar.encode(), headers={
        hdrs.CONTENT_TYPE: "text/calendar; charset=utf-8",
        hdrs.CONTENT_DISPOSITION: f'attachment; filename="{name}"',
        "Cache-Control": "no-store"})


async def get_space_file(request: web.Request) -> web.StreamResponse:
    """A recording or transcript of an ended space, for its page's player (ranges
    answered, so the player can seek)."""
    listing = _listing_for(request)
    name = request.match_info["name"]
    match = recording.FILE_NAME.fullmatch(name)
    path = _own_file(Path(request.app[SETTINGS].recordings_dir), name) \
        if match and name in listing.files() else None
    if path is None:
        raise _json_error(web.HTTPNotFound, f"space {listing.space_id} has no file {name}")
    kind = recording.FILE_TYPES[match[1]]
    return web.FileResponse(path, headers={
        hdrs.CONTENT_TYPE: kind + ("; charset=utf-8" if kind.startswith("text/") else ""),
        "Cache-Control": ("public" if listing.public else "private") + ", max-age=3600"})


async def index_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def space_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "space.html")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no Referer leaves a page, only the bridge's own scripts run, only its
    own bridges are reached (bridge/page_headers.py)."""
    for name, value in security_headers(_other_bridges(request.app)).items():
        response.headers.setdefault(name, value)


def _other_bridges(app: web.Application) -> list[str]:
    """The addresses a page may reach besides the one it came from: the bridge's public URL,
    the edges known now and, on an edge, the origin."""
    own = [app[SETTINGS].public_url] if app[SETTINGS].public_url else []
    feed = app[FEED]
    if feed is None:
        return own
    urls = own + [beat.url for beat in feed.book.edges.values()]
    if isinstance(feed, EdgeFeed):
        urls += sorted({s.origin_url for s in app[STAGES].values() if getattr(s, "origin_url", "")})
    return urls


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, **_health_report(request.app)})


def _health_report(app: web.Application) -> dict[str, Any]:
    feed = app[FEED]
    return {"stages": len(app[STAGES]), "instance": app[INSTANCE], "role": app[SETTINGS].role,
            "redis": feed.out.health.state if feed is not None else None,
            "edges": len(feed.book.edges) if feed is not None else 0}


async def _metrics_server(app: web.Application):
    """GET /metrics and /healthz on [bridge] metrics_listen, apart from the public port.
    Its /healthz says 503 for an edge whose link to Redis is not up (it cannot serve)."""
    listen = app[SETTINGS].metrics_listen
    if not listen:
        yield
        return

    async def healthy() -> tuple[bool, dict[str, Any]]:
        feed = app[FEED]
        return not (isinstance(feed, EdgeFeed) and not redis_up(feed)), _health_report(app)

    runner, app[METRICS_PORT] = await start_status_server(listen, app[METRICS].registry, healthy,
                                                          name=f"bridge ({app[SETTINGS].role})")
    try:
        yield
    finally:
        await runner.cleanup()


# -- lifecycle -------------------------------------------------------------------


async def _on_shutdown(app: web.Application) -> None:
    feed = app[FEED]
    if isinstance(feed, EdgeFeed):  # first: no space is opened here after this
        feed.stop_taking_spaces()
    stages = app[STAGES]
    closing = list(stages.values())
    stages.clear()
    await asyncio.gather(*(s.close(CLOSE_SHUTDOWN, "bridge shutting down") for s in closing),
                         return_exceptions=True)
    background = list(app[BACKGROUND])
    if background:  # recordings being converted; events still reach a connected bot
        await asyncio.gather(*background, return_exceptions=True)
    if feed is not None:  # after the stages: their last words (ends, hands) go out
        await feed.close()
    await app[EVENTS].flush()
    for ws in list(app[SOCKETS]):
        await ws.close(code=CLOSE_SHUTDOWN, message=b"bridge shutting down")


async def _start_captions(app: web.Application) -> None:
    """With captions on by default, load the recogniser now: a broken engine or model
    stops start-up with the reason (CaptionsError), not a silent lack of captions."""
    if app[SETTINGS].captions_by_default:
        await app[CAPTIONS].start()


async def _stop_captions(app: web.Application) -> None:
    await app[CAPTIONS].close()


def create_app(settings: BridgeSettings) -> web.Application:
    guard = ConnectionGuard(settings.header_timeout_seconds, settings.max_pending_connections_per_address,
                            settings.max_streams_per_address)
    app = web.Application(client_max_size=64 * 1024, middlewares=[guard.middleware])
    app[SETTINGS] = settings
    app[GUARD] = guard
    app.on_response_prepare.append(guard.on_response_prepare)
    app.on_response_prepare.append(_security_headers)
    app[OPENID_LIMIT] = RateLimiter(settings.openid_attempts_per_address_per_minute,
                                    settings.openid_attempts_per_minute)
    app[OPENID_LOG] = Throttle(60.0)
    app[OPENID_SLOTS] = Slots(OPENID_CONCURRENT_CHECKS)
    app[STAGES] = {}
    app[EVENTS] = EventBus()
    app[SOCKETS] = set()
    app[BACKGROUND] = set()
    app[INSTANCE] = uuid.uuid4().hex[:16]
    app[HOMESERVERS] = openid.Homeservers(dict(settings.openid_homeservers))
    app[FEED] = None
    app[METRICS] = BridgeMetrics()
    app[METRICS].watch(app[STAGES], settings.role, app[INSTANCE], lambda: app[FEED])
    app[METRICS_PORT] = 0
    app[AVATARS] = avatars.AvatarStore()
    app[LISTINGS] = ListingBook()
    if settings.role == "edge":
        app[FEED] = EdgeFeed(settings, app[STAGES])
        app.router.add_route("*", f"{API}/{{tail:.*}}", edge_has_no_control)
    else:
        if settings.redis_url:
            app[FEED] = OriginFeed(settings, app[STAGES])
        app.router.add_get(f"{API}/events", control_events)
        app.router.add_get(f"{API}/spaces", list_control)
        app.router.add_get(f"{API}/files/{{name}}", get_file)
        app.router.add_put(f"{API}/openid/homeservers", put_homeservers)
        app.router.add_post(f"{API}/spaces/{{space_id}}", open_space)
        app.router.add_get(f"{API}/spaces/{{space_id}}", get_space)
        app.router.add_patch(f"{API}/spaces/{{space_id}}", patch_space)
        app.router.add_delete(f"{API}/spaces/{{space_id}}", delete_space)
        app.router.add_put(f"{API}/spaces/{{space_id}}/roles", put_roles)
        app.router.add_put(f"{API}/spaces/{{space_id}}/people", put_people)
        app.router.add_post(f"{API}/spaces/{{space_id}}/answer", answer_hand)
        app.router.add_put(f"{API}/avatars/{{avatar_id}}", put_avatar)
        app.router.add_post(f"{API}/spaces/{{space_id}}/clip", clip_space)
        app.router.add_post(f"{API}/spaces/{{space_id}}/play", play_voice)
        app.router.add_put(f"{API}/listings/{{space_id}}", put_listing)
        app.router.add_delete(f"{API}/listings/{{space_id}}", delete_listing)
    app.router.add_post("/spaces/{space_id}/openid", openid_login)
    app.router.add_get("/spaces/{space_id}/ws", client_ws)
    app.router.add_get("/spaces/{space_id}/live.ogg", live_ogg)
    app.router.add_get("/spaces/{space_id}", space_page)
    app.router.add_get("/spaces/{space_id}/calendar.ics", get_calendar)
    app.router.add_get("/spaces/{space_id}/files/{name}", get_space_file)
    app.router.add_get("/api/spaces", public_spaces)
    app.router.add_get("/api/spaces/{space_id}", space_facts)
    app.router.add_get("/avatars/{avatar_id}", get_avatar)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", index_page)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static", STATIC_DIR)
    app.on_shutdown.append(_on_shutdown)
    app[CAPTIONS] = CaptionPool(settings.captions_engine, settings.captions_model_path,
                                settings.captions_language, settings.captions_workers)
    app.on_startup.append(_start_captions)
    app.on_startup.append(_log_accept_errors)
    app.on_startup.append(_recover_recordings)
    app.on_cleanup.append(_stop_logging_accept_errors)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_metrics_server)
    app.on_cleanup.append(_stop_captions)
    return app


async def _recover_recordings(app: web.Application) -> None:
    """Convert, in the background, the recordings a crashed bridge left unfinished
    (bridge/recording.py); each is reported to the bot as ``recording_ready`` with
    ``recovered: true`` (kept until a bot connects), or ``recording_failed``."""
    found = recording.leftovers(Path(app[SETTINGS].recordings_dir))
    if not found:
        return
    log.warning("found %d recording(s) left unfinished by an earlier bridge; converting them",
                len(found))

    async def convert() -> None:
        for i, left in enumerate(found):
            try:
                done = await asyncio.to_thread(recording.recover, left)
            except asyncio.CancelledError:
                for rest in found[i + 1:]:
                    recording.release(rest)
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the others
                log.error("space %s: the recording %s left by an earlier bridge could not be "
                          "recovered (kept, its note renamed .failed): %s", left.space_id,
                          left.wav_path, exc)
                app[EVENTS].emit({"type": "recording_failed", "space_id": left.space_id,
                                  "path": str(left.wav_path), "reason": str(exc),
                                  "recovered": True})
                continue
            if done is None:
                log.info("space %s: the recording %s left by an earlier bridge held no audio; "
                         "removed", left.space_id, left.wav_path)
                continue
            ogg_path, duration = done
            log.warning("space %s: recovered %.1f s of recording cut off by a bridge restart: %s",
                        left.space_id, duration, ogg_path)
            app[EVENTS].emit({"type": "recording_ready", "space_id": left.space_id,
                              "path": str(ogg_path.resolve()), "file": ogg_path.name,
                              "duration": round(duration, 3),
                              "recovered": True})

    task = asyncio.create_task(convert(), name="recover-recordings")
    app[BACKGROUND].add(task)
    task.add_done_callback(app[BACKGROUND].discard)


async def _log_accept_errors(app: web.Application) -> None:
    app[GUARD].install_accept_error_log(asyncio.get_running_loop())


async def _stop_logging_accept_errors(app: web.Application) -> None:
    app[GUARD].uninstall_accept_error_log()


async def _http_session(app: web.Application):
    """The outgoing HTTP sessions of OpenID checks (bridge/openid.py), closed at cleanup."""
    async with openid.open_sessions(allow_private=app[SETTINGS].openid_allow_private_networks) as sessions:
        app[HTTP] = sessions
        yield


OPENID_BODY_BYTES = 16 * 1024
#: homeserver checks running at once (each may wait up to 10 s on DNS or a silent host)
OPENID_CONCURRENT_CHECKS = 32


async def _small_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The body, if it is at most ``limit`` bytes and arrives within ``seconds``."""
    if request.content_length is not None and request.content_length > limit:
        raise jsonsafe.JsonRefused(f"message too large (more than {limit} bytes)")
    data = bytearray()
    async with asyncio.timeout(seconds):
        while len(data) <= limit:
            chunk = await request.content.read(limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    if len(data) > limit:
        raise jsonsafe.JsonRefused(f"message too large (more than {limit} bytes)")
    return bytes(data)


async def openid_login(request: web.Request) -> web.Response:
    """Element widget sign-in: an OpenID token from the widget API -> a bridge token.

    Rate-limited per remote address and overall (429). Every failed check answers the
    same 401 (bridge/openid.py); the reason is logged with the space, never sent back.
    """
    settings = request.app[SETTINGS]
    remote = address_key(request.remote or "unknown")  # an IPv6 caller counts by its /64
    space_id = request.match_info["space_id"][:MAX_SPACE_ID]
    limiter = request.app[OPENID_LIMIT]
    if not limiter.allow(remote):
        held = request.app[OPENID_LOG].ready(("rate", remote))
        if held is not None:
            log.warning("space %s: Element sign-ins from %s are over the rate limit, refused with 429%s",
                        space_id, remote, f" ({held} more in the last minute)" if held else "")
        return web.json_response({"error": "too many sign-in attempts; try again later"}, status=429,
                                 headers={"Retry-After": str(max(1, math.ceil(limiter.retry_after(remote))))})
    stage = request.app[STAGES].get(space_id)
    if stage is None or not stage.open:
        return web.json_response({"error": "no such live space"}, status=404)
    try:
        body = jsonsafe.loads_object(await _small_body(request, OPENID_BODY_BYTES,
                                                       settings.header_timeout_seconds))
    except jsonsafe.JsonRefused as exc:
        return web.json_response({"error": f"body refused: {exc}", "field": "body"}, status=400)
    except TimeoutError:
        return web.json_response({"error": "the request body did not arrive in time", "field": "body"},
                                 status=408)
    for field in ("access_token", "matrix_server_name"):
        if not isinstance(body.get(field), str) or not body[field]:
            return web.json_response({"error": f"{field} must be a non-empty string", "field": field},
                                     status=400)
    server_name = body["matrix_server_name"]
    slots = request.app[OPENID_SLOTS]
    if not slots.try_take():
        held = request.app[OPENID_LOG].ready("slots")
        if held is not None:
            log.warning("space %s: Element sign-in from %s refused with 429: %d homeserver checks already "
                        "running%s", space_id, remote, slots.size, f" ({held} more in the last minute)" if held else "")
        return web.json_response({"error": "too many sign-in attempts; try again later"}, status=429,
                                 headers={"Retry-After": "5"})
    try:
        user_id = await openid.verify(request.app[HTTP], body["access_token"], server_name,
                                      request.app[HOMESERVERS],
                                      allow_private=settings.openid_allow_private_networks,
                                      timeout_s=settings.openid_timeout_seconds)
    except openid.ServerNameError as exc:
        return web.json_response({"error": f"matrix_server_name is not a Matrix server name: {exc}",
                                  "field": "matrix_server_name"}, status=400)
    except openid.OpenIdError as exc:
        log.info("space %s: Element sign-in from %s (server %s) refused: %s", stage.space_id, remote,
                 server_name[:255], exc)
        return web.json_response({"error": openid.GENERIC_ERROR}, status=401)
    finally:
        slots.give_back()
    if not stage.may_join(user_id):
        return web.json_response({"error": REMOVED_REASON}, status=403)
    role = stage.roles.get(user_id)
    if role is None and not stage.public:
        return web.json_response({"error": f"{user_id} is not in this space; ask the host to invite you"},
                                 status=403)
    role = role if role in tokens.VALID_ROLES else "listener"
    token = tokens.mint(settings.shared_secret, stage.space_id, user_id, role, settings.token_ttl_seconds)
    log.info("space %s: %s signed in through the Element widget as %s", stage.space_id, user_id, role)
    return web.json_response({"token": token, "user_id": user_id, "role": role})


async def start_embedded(settings: BridgeSettings) -> tuple[web.AppRunner, int]:
    """Run the bridge inside the caller's event loop; returns (runner, actual port).

    ``settings.listen_port`` 0 picks a free port. Stop with ``await runner.cleanup()``.
    Connections go through the app's ConnectionGuard (header timeout, per-address cap;
    bridge/guard.py) and the access log leaves query strings out. ``python -m bridge``
    runs the bridge through here too.
    """
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0,
                           access_log_class=PathOnlyAccessLogger)
    try:
        await runner.setup()
        site = GuardedSite(runner, settings.listen_host, settings.listen_port, app[GUARD])
        await site.start()
    except BaseException:  # e.g. the port taken: what started (the metrics server) stops
        await runner.cleanup()
        raise
    feed = app[FEED]
    if feed is not None:  # once the port is known: the feed names this bridge's address
        feed.start(resolved_public_url(settings.public_url, settings.listen_host, site.port))
    return runner, site.port
