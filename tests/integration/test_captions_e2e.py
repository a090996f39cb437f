"""Live captions through the bot: the host turns them on, a speaker talks, the room gets a
live transcript and, at the end, the WebVTT file; a missing engine is refused cleanly."""

from __future__ import annotations

import numpy as np

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient
from tests.bridge.conftest import SECRET, SENTENCE_A, make_settings, run_bridge, synthesise
from tests.integration.helpers import ask, personal_token, room_with_bot, space_id_in


async def test_captions_become_a_live_transcript_and_a_webvtt_file(chorus_factory, make_user, tmp_path) -> None:
    speech = synthesise(SENTENCE_A)
    running = await run_bridge(make_settings(tmp_path))
    bridge = HttpBridge(running.url, running.url, SECRET)
    client = None
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0},
                                      captions={"post_to_room": True})
        chorus.bot.transcript.interval = 1.0
        host = await make_user("host")
        room = await room_with_bot(host, chorus.user_id)
        sid = space_id_in(await ask(host, room, "!space start Captioned talk"))
        space_room = await host.accept_invite(inviter=chorus.user_id)
        assert "Captions are on" in await ask(host, room, f"!space captions {sid} on")
        client = SpaceClient(running.url, sid, await personal_token(host, chorus.user_id, sid))
        await client.connect()
        await client.wait_type("hello")
        await client.speak_wav(speech)
        await client.speak(np.zeros(48000 * 2, dtype=np.int16))  # trailing silence ends the utterance
        line = await host.wait_for_event(
            lambda r, e: r == space_room and e.sender == chorus.user_id
            and e.source.get("content", {}).get("body", "").startswith("🗒"), timeout=60)
        text = line.source["content"]["body"].lower()
        assert host.user_id.lower() in text
        words = [w for w in ("community", "gardens", "tomatoes", "weather", "spring") if w in text]
        assert len(words) >= 3, text
        assert "has ended" in await ask(host, room, f"!space end {sid}")
        vtt = await host.wait_for_event(
            lambda r, e: r == space_room and e.sender == chorus.user_id
            and e.source.get("content", {}).get("msgtype") == "m.file", timeout=60)
        assert vtt.source["content"]["info"]["mimetype"] == "text/vtt"
        assert vtt.source["content"]["body"].endswith(".vtt")
    finally:
        if client:
            await client.close()
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()


async def test_a_missing_caption_engine_is_refused_and_changes_nothing(chorus_factory, make_user, tmp_path) -> None:
    running = await run_bridge(make_settings(tmp_path, captions_engine="vosk", captions_model_path=str(tmp_path)))
    bridge = HttpBridge(running.url, running.url, SECRET)
    try:
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host = await make_user("host")
        room = await room_with_bot(host, chorus.user_id)
        sid = space_id_in(await ask(host, room, "!space start No captions here"))
        refused = await ask(host, room, f"!space captions {sid} on")
        assert "The audio bridge refused" in refused and "vosk" in refused
        assert chorus.store.load_space(sid).space.captions is False
        assert (await bridge.stats(sid)).captions is False
    finally:
        await bridge.close()
        await running.session.close()
        await running.runner.cleanup()
