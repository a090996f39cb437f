"""With matrix-nio's e2e extra (vodozemac) installed, the bot works in encrypted rooms:
it decrypts a command and answers with an encrypted reply."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from nio import AsyncClient, AsyncClientConfig, LoginResponse, MegolmEvent, RoomMessageNotice, SyncResponse

from tests.support.matrix_user import unique_localpart

pytest.importorskip("vodozemac")


async def _e2e_client(homeserver, tmp_path) -> AsyncClient:
    password = secrets.token_urlsafe(12)
    user = homeserver.register(unique_localpart("crypto"), password)
    store = tmp_path / "alice-store"
    store.mkdir()
    client = AsyncClient(homeserver.base_url, user.user_id, store_path=str(store),
                         config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))
    assert isinstance(await client.login(password, device_name="test"), LoginResponse)
    await _sync(client)
    return client


async def _sync(client: AsyncClient, timeout_ms: int = 0) -> SyncResponse:
    resp = await client.sync(timeout=timeout_ms)
    assert isinstance(resp, SyncResponse), resp
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()
    return resp


async def test_ping_in_an_encrypted_room(chorus, homeserver, tmp_path) -> None:
    assert chorus.bot.client.olm is not None, "the bot should run with encryption when vodozemac is installed"
    alice = await _e2e_client(homeserver, tmp_path)
    try:
        resp = await alice.room_create(name="secret", invite=[chorus.user_id], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        room_id = resp.room_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        def bot_joined() -> bool:
            room = alice.rooms.get(room_id)
            return bool(room) and chorus.user_id in room.users and chorus.user_id not in room.invited_users

        while not bot_joined():
            assert loop.time() < deadline, "the bot did not join the encrypted room"
            await _sync(alice, 500)
        await _sync(alice)  # learn the bot's device keys
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "!ping"},
                                     ignore_unverified_devices=True)
        reply = None
        undecrypted = 0
        while reply is None:
            assert loop.time() < deadline + 30, f"no decryptable reply (undecryptable events: {undecrypted})"
            r = await _sync(alice, 500)
            info = r.rooms.join.get(room_id)
            for event in info.timeline.events if info else []:
                if isinstance(event, MegolmEvent):
                    undecrypted += 1
                if isinstance(event, RoomMessageNotice) and event.sender == chorus.user_id:
                    reply = event
        assert reply.body == "pong"
        assert reply.decrypted, "the reply should have been encrypted"
        relates = reply.source["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
        assert relates == sent.event_id
    finally:
        await alice.close()
