"""A Matrix user for end-to-end tests, driven with matrix-nio.

Every event the user receives by sync is kept in a buffer until a ``wait_for_*`` call
returns it, so events that arrive while a test waits for something else are not lost.
Do not call ``client.sync`` yourself: events from such a sync bypass the buffer.

When the user joins a room, the server sends the room's recent history with it; those
events enter the buffer too (as a person sees history on joining), and so does each event
at most once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    RoomPreset,
    SyncResponse,
)

__all__ = [
    "EventTimeout",
    "MatrixTestError",
    "MatrixTestUser",
    "describe_event",
    "unique_localpart",
]

EventPredicate = Callable[[str, Event], bool]

# Ask for long timelines, so that a burst of events between two syncs is not cut short.
SYNC_FILTER: dict[str, Any] = {
    "room": {"timeline": {"limit": 500}},
    "presence": {"not_types": ["*"]},
}
SYNC_TIMEOUT_MS = 1000


class MatrixTestError(AssertionError):
    """The homeserver refused a request that the test expected to succeed."""


class EventTimeout(AssertionError, TimeoutError):
    """No matching event arrived in time (both an AssertionError and a TimeoutError)."""


def describe_event(room_id: str, event: Event) -> str:
    """One line for an event, for failure messages."""
    src = getattr(event, "source", {}) or {}
    content = src.get("content") or {}
    parts = [room_id, src.get("type", type(event).__name__), f"from {src.get('sender')}"]
    if "state_key" in src:
        parts.append(f"state_key={src['state_key']!r}")
    if "msgtype" in content:
        parts.append(content["msgtype"])
    if "body" in content:
        body = str(content["body"])
        parts.append(repr(body if len(body) <= 80 else body[:77] + "..."))
    if "membership" in content:
        parts.append(f"membership={content['membership']}")
    relates = content.get("m.relates_to") or {}
    if relates.get("rel_type") == "m.annotation":
        parts.append(f"reaction {relates.get('key')!r} to {relates.get('event_id')}")
    elif "m.in_reply_to" in relates:
        parts.append(f"reply to {relates['m.in_reply_to'].get('event_id')}")
    if src.get("event_id"):
        parts.append(src["event_id"])
    return " ".join(parts)


def _check(response: Any, what: str) -> Any:
    if isinstance(response, ErrorResponse):
        raise MatrixTestError(f"{what} failed: {response.status_code or ''} {response.message}".rstrip())
    return response


class MatrixTestUser:
    """A logged-in Matrix user. Create with ``await MatrixTestUser.connect(...)``."""

    def __init__(self, homeserver_url: str, user_id: str, access_token: str, device_id: str) -> None:
        self.user_id = user_id
        self.homeserver_url = homeserver_url
        self.password: str | None = None  # set by the make_user fixture
        self.client = AsyncClient(
            homeserver_url,
            user=user_id,
            device_id=device_id,
            config=AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False),
        )
        # Set directly rather than restore_login(), which would open an e2e store.
        self.client.user_id = user_id
        self.client.access_token = access_token
        self.client.device_id = device_id
        self._events: list[tuple[str, Event]] = []
        self._invites: dict[str, list[Event]] = {}
        self._seen_ids: set[str] = set()

    @classmethod
    async def connect(cls, homeserver_url: str, user_id: str, access_token: str, device_id: str) -> MatrixTestUser:
        """Make the client and do the initial sync; its room history is not buffered."""
        user = cls(homeserver_url, user_id, access_token, device_id)
        try:
            response = _check(
                await user.client.sync(timeout=0, sync_filter=SYNC_FILTER),
                f"initial sync of {user_id}",
            )
        except BaseException:
            await user.close()
            raise
        for room in response.rooms.join.values():
            for event in room.timeline.events:
                if event_id := event.source.get("event_id"):
                    user._seen_ids.add(event_id)
        for room_id, info in response.rooms.invite.items():
            user._invites[room_id] = list(info.invite_state)
        return user

    def __repr__(self) -> str:
        return f"<MatrixTestUser {self.user_id}>"

    async def close(self) -> None:
        await self.client.close()

    # -- actions ----------------------------------------------------------------------

    async def create_room(
        self,
        name: str | None = None,
        invite: Iterable[str] = (),
        is_direct: bool = False,
        preset: RoomPreset | str = RoomPreset.private_chat,
        **kwargs: Any,
    ) -> str:
        """Create a room; extra keyword arguments go to ``AsyncClient.room_create``."""
        if isinstance(preset, str):
            preset = RoomPreset(preset)
        response = _check(
            await self.client.room_create(name=name, invite=list(invite), is_direct=is_direct, preset=preset, **kwargs),
            f"{self.user_id} creating room {name!r}",
        )
        return response.room_id

    async def join(self, room_id_or_alias: str) -> None:
        _check(
            await self.client.join(room_id_or_alias),
            f"{self.user_id} joining {room_id_or_alias}",
        )

    async def leave(self, room_id: str) -> None:
        _check(await self.client.room_leave(room_id), f"{self.user_id} leaving {room_id}")

    async def invite(self, room_id: str, user_id: str) -> None:
        _check(
            await self.client.room_invite(room_id, user_id),
            f"{self.user_id} inviting {user_id} to {room_id}",
        )

    async def knock(self, room_id: str, reason: str | None = None) -> None:
        _check(
            await self.client.room_knock(room_id, reason),
            f"{self.user_id} knocking on {room_id}",
        )

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        """Send any event; returns its event id."""
        response = _check(
            await self.client.room_send(
                room_id,
                event_type,
                content,
                tx_id=secrets.token_hex(8),
                ignore_unverified_devices=True,
            ),
            f"{self.user_id} sending {event_type} to {room_id}",
        )
        return response.event_id

    async def send_text(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body})

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send(room_id, content, "m.reaction")

    # -- syncing ----------------------------------------------------------------------

    async def _sync_once(self, timeout_ms: int = SYNC_TIMEOUT_MS) -> list[tuple[str, Event]]:
        """One incremental sync; returns the new timeline events (also buffered)."""
        response = await self.client.sync(timeout=max(timeout_ms, 0), sync_filter=SYNC_FILTER)
        if not isinstance(response, SyncResponse):
            raise MatrixTestError(f"sync of {self.user_id} failed: {response}")
        new: list[tuple[str, Event]] = []
        for section in (response.rooms.join, response.rooms.leave):
            for room_id, info in section.items():
                for event in info.timeline.events:
                    event_id = event.source.get("event_id")
                    if event_id:
                        if event_id in self._seen_ids:
                            continue
                        self._seen_ids.add(event_id)
                    new.append((room_id, event))
        for room_id, info in response.rooms.invite.items():
            self._invites[room_id] = list(info.invite_state)
        self._events.extend(new)
        return new

    def _take(self, predicate: EventPredicate) -> Event | None:
        for i, (room_id, event) in enumerate(self._events):
            if predicate(room_id, event):
                del self._events[i]
                return event
        return None

    def _seen_report(self, seen: list[tuple[str, Event]], limit: int = 40) -> str:
        if not seen:
            return "  (no events at all)"
        lines = [f"  {describe_event(r, e)}" for r, e in seen[-limit:]]
        if len(seen) > limit:
            lines.insert(0, f"  ... {len(seen) - limit} earlier events not shown")
        return "\n".join(lines)

    async def wait_for_event(
        self,
        predicate: EventPredicate,
        timeout: float = 30.0,
        description: str | None = None,
    ) -> Event:
        """Return (and remove from the buffer) the first event where predicate(room_id, event).

        Raises EventTimeout listing the events seen if none arrives within ``timeout`` s.
        """
        event = self._take(predicate)
        if event is not None:
            return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = description or getattr(predicate, "__name__", repr(predicate))
                raise EventTimeout(
                    f"{self.user_id}: no event matching {what} within {timeout:g} s; "
                    f"unclaimed events in the buffer:\n{self._seen_report(self._events)}"
                )
            new = await self._sync_once(min(SYNC_TIMEOUT_MS, int(remaining * 1000)))
            if any(predicate(r, e) for r, e in new):
                event = self._take(predicate)
                assert event is not None
                return event

    async def wait_for_message(
        self,
        room_id: str,
        body: str | Callable[[str], bool] | None = None,
        sender: str | None = None,
        msgtype: str | None = None,
        timeout: float = 30.0,
    ) -> Event:
        """Wait for an m.room.message in a room, by exact body or body predicate, sender, msgtype."""

        def matches(r: str, e: Event) -> bool:
            src = e.source
            content = src.get("content") or {}
            if r != room_id or src.get("type") != "m.room.message":
                return False
            if sender is not None and src.get("sender") != sender:
                return False
            if msgtype is not None and content.get("msgtype") != msgtype:
                return False
            if body is None:
                return True
            text = content.get("body", "")
            return body(text) if callable(body) else text == body

        what = f"message in {room_id} body={body!r} sender={sender} msgtype={msgtype}"
        return await self.wait_for_event(matches, timeout, description=what)

    async def wait_for_reply(self, room_id: str, to_event_id: str, timeout: float = 30.0) -> Event:
        """Wait for an m.notice in ``room_id`` that replies to ``to_event_id``."""

        def is_reply(r: str, e: Event) -> bool:
            content = e.source.get("content") or {}
            reply_to = (content.get("m.relates_to") or {}).get("m.in_reply_to") or {}
            return (
                r == room_id
                and e.source.get("type") == "m.room.message"
                and content.get("msgtype") == "m.notice"
                and reply_to.get("event_id") == to_event_id
            )

        return await self.wait_for_event(
            is_reply, timeout, description=f"m.notice replying to {to_event_id} in {room_id}"
        )

    async def wait_for_invite(self, timeout: float = 30.0, inviter: str | None = None, join: bool = False) -> str:
        """Wait for a pending invite (optionally from ``inviter``); return its room id.

        The invite is consumed. With ``join=True`` the user also joins the room.
        """

        def pick() -> str | None:
            for room_id, state in self._invites.items():
                if inviter is None or any(
                    e.source.get("type") == "m.room.member"
                    and e.source.get("state_key") == self.user_id
                    and e.source.get("sender") == inviter
                    for e in state
                ):
                    return room_id
            return None

        deadline = time.monotonic() + timeout
        while (room_id := pick()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pending = ", ".join(self._invites) or "none"
                raise EventTimeout(
                    f"{self.user_id}: no invite{f' from {inviter}' if inviter else ''} "
                    f"within {timeout:g} s (pending invites: {pending})"
                )
            await self._sync_once(min(SYNC_TIMEOUT_MS, int(remaining * 1000)))
        del self._invites[room_id]
        if join:
            await self.join(room_id)
        return room_id

    async def accept_invite(self, timeout: float = 30.0, inviter: str | None = None) -> str:
        """Wait for an invite, join the room, return its id."""
        return await self.wait_for_invite(timeout, inviter=inviter, join=True)

    async def accept_invites(self) -> list[str]:
        """Sync once, then join every pending invite; returns the room ids joined."""
        await self._sync_once(0)
        room_ids = list(self._invites)
        self._invites.clear()
        for room_id in room_ids:
            await self.join(room_id)
        return room_ids

    async def expect_no_event(self, predicate: EventPredicate, within: float, description: str | None = None) -> None:
        """Sync for ``within`` seconds and fail if a matching event is (or was) received.

        Events already in the buffer count. Non-matching events stay buffered.
        """
        what = description or getattr(predicate, "__name__", repr(predicate))
        deadline = time.monotonic() + within
        while True:
            for room_id, event in self._events:
                if predicate(room_id, event):
                    raise AssertionError(
                        f"{self.user_id}: expected no event matching {what}, got {describe_event(room_id, event)}"
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._sync_once(min(SYNC_TIMEOUT_MS, int(remaining * 1000)))

    def clear_events(self) -> None:
        """Forget buffered events that no wait has claimed."""
        self._events.clear()

    async def settle(self) -> None:
        """Sync once without waiting, to buffer whatever has arrived so far."""
        await self._sync_once(0)

    async def __aenter__(self) -> MatrixTestUser:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def unique_localpart(name: str) -> str:
    """``alice`` -> ``alice_3f9a1c``: unique per call, valid as a Matrix localpart."""
    return f"{name.lower()}_{secrets.token_hex(3)}"
