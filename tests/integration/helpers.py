"""Small steps the integration tests share: a room with the bot, a command and its reply."""

from __future__ import annotations

import re

from tests.support.matrix_user import MatrixTestUser


def body(event) -> str:
    return event.source["content"]["body"]


async def room_with_bot(owner: MatrixTestUser, bot_user_id: str, *others: MatrixTestUser) -> str:
    """A public room where ``owner``, the bot and ``others`` are joined."""
    room = await owner.create_room(name="community", invite=[bot_user_id], preset="public_chat")
    await owner.wait_for_event(lambda r, e: r == room and getattr(e, "membership", None) == "join"
                               and e.state_key == bot_user_id, description="the bot joining")
    for other in others:
        await other.join(room)
    return room


async def ask(user: MatrixTestUser, room: str, text: str, timeout: float = 30.0) -> str:
    """Send a command and return the body of the bot's reply to it."""
    sent = await user.send_text(room, text)
    return body(await user.wait_for_reply(room, sent, timeout=timeout))


def space_id_in(text: str) -> str:
    m = re.search(r"[Ii]ts id is ([a-z2-9]{6})", text)
    assert m, f"no space id in {text!r}"
    return m.group(1)


def state_event(user: MatrixTestUser, room: str, event_type: str, state_key: str = ""):
    return user.client.room_get_state_event(room, event_type, state_key)


async def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` (e.g. the bot's database; a coroutine function is awaited) until it
    holds, or fail after ``timeout``."""
    import asyncio
    import inspect

    async def holds() -> bool:
        result = condition()
        return await result if inspect.isawaitable(result) else result

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await holds():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def wait_for_dm(user: MatrixTestUser, bot_id: str, predicate, timeout: float = 30.0):
    """A message from the bot whose body satisfies ``predicate``, accepting the invite to the
    direct-message room when it comes."""
    return (await wait_for_dm_in(user, bot_id, predicate, timeout=timeout))[1]


async def wait_for_dm_in(user: MatrixTestUser, bot_id: str, predicate, room: str | None = None,
                         timeout: float = 30.0):
    """As :func:`wait_for_dm`, in ``room`` (or any room): (the room it came in, the message)."""
    import asyncio

    found: list[str] = []

    def matches(r: str, e) -> bool:
        if ((room is None or r == room) and e.sender == bot_id and e.source.get("type") == "m.room.message"
                and predicate(e.source["content"].get("body", ""))):
            found.append(r)
            return True
        return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            event = await user.wait_for_event(matches, timeout=1)
            return found[-1], event
        except AssertionError:
            await user.accept_invites()
            if loop.time() > deadline:
                raise


async def personal_token(user: MatrixTestUser, bot_id: str, space_id: str, timeout: float = 60) -> str:
    """The token in the personal link the bot sends by direct message."""
    event = await wait_for_dm(user, bot_id, lambda b: f"/spaces/{space_id}?token=" in b, timeout)
    return re.search(r"token=([A-Za-z0-9_.\-]+)", event.source["content"]["body"]).group(1)
