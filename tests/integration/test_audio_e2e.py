"""The whole product on real parts: a real Synapse, the bot, the real bridge over its
control API, WebSocket clients speaking festival speech; the recording ends up in the
space's room as m.audio."""

from __future__ import annotations

import asyncio

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient, load_audio
from tests.bridge.conftest import (
    SECRET,
    SENTENCE_A,
    SENTENCE_B,
    best_correlation,
    make_settings,
    rms,
    run_bridge,
    synthesise,
)
from tests.integration.helpers import ask, personal_token, room_with_bot, space_id_in


async def test_two_speakers_heard_by_a_listener_and_the_recording_is_posted(
        chorus_factory, make_user, tmp_path) -> None:
    speech_a, speech_b = synthesise(SENTENCE_A), synthesise(SENTENCE_B)
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    clients: list[SpaceClient] = []
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host, guest = await make_user("host"), await make_user("guest")
        room = await room_with_bot(host, chorus.user_id, guest)
        sid = space_id_in(await ask(host, room, "!space start Garden talk"))
        space_room = await host.accept_invite(inviter=chorus.user_id)
        assert "Recording is on" in await ask(host, room, f"!space record {sid} on")
        host_token = await personal_token(host, chorus.user_id, sid)
        await ask(guest, room, f"!space join {sid}")
        guest_token = await personal_token(guest, chorus.user_id, sid)
        await ask(guest, room, f"!space request {sid}")
        assert "can speak now" in await ask(host, room, f"!space approve {sid} {guest.user_id}")

        speaker_a = SpaceClient(running.url, sid, host_token)
        speaker_b = SpaceClient(running.url, sid, guest_token)
        ear = SpaceClient(running.url, sid)  # anonymous: the space is public
        clients += [speaker_a, speaker_b, ear]
        for c in clients:
            await c.connect()
            await c.wait_type("hello")
        await asyncio.gather(speaker_a.speak_wav(speech_a), speaker_b.speak_wav(speech_b))
        await ear.wait_frames(ear.frames_received + 25)
        heard = ear.heard()
        assert rms(heard) > 300
        assert best_correlation(heard, load_audio(speech_a)) > 0.5
        assert best_correlation(heard, load_audio(speech_b)) > 0.5

        assert "has ended" in await ask(host, room, f"!space end {sid}")
        audio = await host.wait_for_event(
            lambda r, e: r == space_room and e.sender == chorus.user_id
            and e.source.get("content", {}).get("msgtype") == "m.audio", timeout=60)
        content = audio.source["content"]
        assert content["url"].startswith("mxc://")
        assert content["info"]["mimetype"] == "audio/ogg"
        assert content["info"]["duration"] > 5000
    finally:
        for c in clients:
            await c.close()
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()


async def test_a_speakers_voice_message_is_played_into_the_space(chorus_factory, make_user, tmp_path) -> None:
    import subprocess

    wav = synthesise(SENTENCE_B)
    ogg = tmp_path / "voice.ogg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "libopus", str(ogg)], check=True)
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    ear = None
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host, fan = await make_user("host"), await make_user("fan")
        room = await room_with_bot(host, chorus.user_id, fan)
        sid = space_id_in(await ask(host, room, "!space start Voice notes"))
        space_room = await host.accept_invite(inviter=chorus.user_id)
        await fan.join(space_room)
        ear = SpaceClient(running.url, sid)
        await ear.connect()
        await ear.wait_type("hello")

        async def post_voice(user) -> str:
            upload, _ = await user.client.upload(ogg.open("rb"), content_type="audio/ogg", filename="voice.ogg",
                                                 filesize=ogg.stat().st_size)
            return await user.send(space_room, {"msgtype": "m.audio", "body": "voice.ogg", "url": upload.content_uri,
                                                "info": {"mimetype": "audio/ogg", "size": ogg.stat().st_size}})

        # a listener's voice message is refused with a reply
        refused = await post_voice(fan)
        reply = await fan.wait_for_reply(space_room, refused)
        assert "Only the space's speakers" in reply.source["content"]["body"]
        # the host's is played: the bot marks it 🔊 and the listener hears it
        before = ear.frames_received
        played = await post_voice(host)
        await host.wait_for_event(lambda r, e: e.source.get("type") == "m.reaction" and e.sender == chorus.user_id
                                  and e.source["content"]["m.relates_to"]["event_id"] == played
                                  and e.source["content"]["m.relates_to"]["key"] == "🔊")
        await ear.wait_frames(before + int(len(load_audio(wav)) / 960) + 50, timeout=60)
        assert best_correlation(ear.heard(), load_audio(wav)) > 0.5
    finally:
        if ear:
            await ear.close()
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()
