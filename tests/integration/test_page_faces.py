"""The space page's faces come from Matrix: the bot reads each person's display name and
avatar on the real Synapse (the avatar as a thumbnail, through the authenticated media API
a page could not use) and gives them to the real bridge, with the host, the room's link
and the tip jar; the host's no to a raised hand reaches the person's page."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from bot.bridge_http import HttpBridge
from bot.matrix.messages import matrix_to
from bridge.client import SpaceClient
from tests.bridge.conftest import SECRET, make_settings, run_bridge
from tests.integration.helpers import ask, personal_token, room_with_bot, space_id_in, wait_until
from tests.support.images import face_png


async def test_names_avatars_tip_jar_and_answers_reach_the_page(chorus_factory, make_user, tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    ear = None
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host, lis = await make_user("hana"), await make_user("lis")
        picture = face_png((200, 90, 40), 256)
        upload, _ = await host.client.upload(io.BytesIO(picture), content_type="image/png",
                                             filename="hana.png", filesize=len(picture))
        await host.client.set_avatar(upload.content_uri)
        await host.client.set_displayname("Hana Host")
        await lis.client.set_displayname("Lis Listener")
        room = await room_with_bot(host, chorus.user_id, lis)
        assert "PayPal" in await ask(host, room, "!tipjar set paypal HanaHost")
        sid = space_id_in(await ask(host, room, "!space start Garden talk"))
        stage = running.stage(sid)

        # the host's face: a name, and a thumbnail the bridge serves as an image
        await wait_until(lambda: (p := stage.profile_of(host.user_id)) and p.avatar,
                         what="the host's name and avatar on the bridge")
        profile = stage.profile_of(host.user_id)
        assert profile.name == "Hana Host"
        async with running.session.get(f"{running.url}/avatars/{profile.avatar}") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("image/")
            thumb = Image.open(io.BytesIO(await resp.read()))
            assert thumb.size[0] <= 256 and thumb.size[0] == thumb.size[1]  # a square thumbnail
        # the page's facts: host, the room's link, the tip jar
        space_room = await chorus.bot.db.room_of(sid)
        assert stage.info.host == host.user_id and stage.info.room_url == matrix_to(space_room)
        assert [(t.label, t.url) for t in stage.info.tips] == [("PayPal", "https://paypal.me/HanaHost")]

        # a listener who connects gets a face too (no avatar: initials on the page)
        await ask(lis, room, f"!space join {sid}")
        ear = SpaceClient(running.url, sid, await personal_token(lis, chorus.user_id, sid))
        await ear.connect()
        hello = await ear.wait_type("hello")
        assert hello["people"][host.user_id] == {"name": "Hana Host", "avatar": profile.avatar}
        await wait_until(lambda: (p := stage.profile_of(lis.user_id)) and p.name == "Lis Listener",
                         what="the listener's name on the bridge")
        await ear.wait_type("participants", timeout=15, where=lambda m: any(
            p.get("name") == "Lis Listener" for p in m["participants"]))

        # the hand goes up on the page, the host says no in chat: the page is told
        await ear.raise_hand()
        await wait_until(lambda: lis.user_id in stage.hands, what="the hand on the bridge")
        reply = await _until_reply(host, room, f"!space deny {sid} {lis.user_id}")
        assert "Declined" in reply
        assert (await ear.wait_type("answer", timeout=15))["answer"] == "declined"
        assert lis.user_id not in stage.hands

        # a new tip jar shows on the live page at once
        await ask(host, room, "!tipjar set cashapp $HanaCash")
        await wait_until(lambda: any(t.label == "Cash App" for t in stage.info.tips),
                         what="the new tip jar on the page")
    finally:
        if ear is not None:
            await ear.close()
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()


async def _until_reply(user, room: str, command: str, seconds: float = 30.0) -> str:
    """The bot's answer to ``command``, asked again until the hand has reached the bot (the
    bridge tells it through its events link)."""
    async with asyncio.timeout(seconds):
        while True:
            reply = await ask(user, room, command)
            if "has no raised hand" not in reply:
                return reply
            await asyncio.sleep(0.2)
