"""The bot and the bridge apart: ``python -m bridge`` in its own working directory, its
recordings folder on a tmpfs mounted in a mount namespace of its own (so the bot's process
cannot see a byte of it), the bot in this process. A recording, a clip and a transcript
still reach the space's room: they travel over the authenticated control API."""

from __future__ import annotations

import warnings

import numpy as np

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient
from tests.bridge.conftest import SECRET, SENTENCE_A, synthesise
from tests.integration.helpers import ask, personal_token, room_with_bot, space_id_in
from tests.support.bridge_process import BridgeProcess


def _from_bot(bot_id: str, room: str, msgtype: str, prefix: str):
    def match(r, e) -> bool:
        content = e.source.get("content", {})
        return (r == room and e.sender == bot_id and content.get("msgtype") == msgtype
                and content.get("body", "").startswith(prefix))
    return match


async def test_recording_clip_and_transcript_reach_the_room_from_a_bridge_on_another_disk(
        chorus_factory, make_user, tmp_path) -> None:
    speech = synthesise(SENTENCE_A)
    proc = BridgeProcess(tmp_path / "bridge-machine", SECRET, private_recordings=True)
    bridge = HttpBridge(proc.url, proc.url, SECRET)
    speaker = None
    try:
        await proc.start()
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host = await make_user("host")
        room = await room_with_bot(host, chorus.user_id)
        sid = space_id_in(await ask(host, room, "!space start Split talk"))
        space_room = await host.accept_invite(inviter=chorus.user_id)
        assert "Recording is on" in await ask(host, room, f"!space record {sid} on")
        assert "Captions are on" in await ask(host, room, f"!space captions {sid} on")
        speaker = SpaceClient(proc.url, sid, await personal_token(host, chorus.user_id, sid))
        await speaker.connect()
        await speaker.wait_type("hello")
        await speaker.speak_wav(speech)
        await speaker.speak(np.zeros(48000 * 2, dtype=np.int16))  # the utterance ends

        assert "Posted the last" in await ask(host, room, f"!space clip {sid}", timeout=60)
        clip = await host.wait_for_event(_from_bot(chorus.user_id, space_room, "m.audio", "Clip: Split talk"),
                                         timeout=60, description="the clip")
        assert "has ended" in await ask(host, room, f"!space end {sid}")
        recording = await host.wait_for_event(
            _from_bot(chorus.user_id, space_room, "m.audio", "Recording: Split talk"), timeout=60,
            description="the recording")
        transcript = await host.wait_for_event(
            _from_bot(chorus.user_id, space_room, "m.file", "Transcript: Split talk"), timeout=60,
            description="the transcript")
        for event, mime in ((clip, "audio/ogg"), (recording, "audio/ogg"), (transcript, "text/vtt")):
            content = event.source["content"]
            assert content["url"].startswith("mxc://") and content["info"]["mimetype"] == mime
            assert content["info"]["size"] > 100
        assert recording.source["content"]["info"]["duration"] > 5000
        # each went over the control API ...
        downloads = [line for line in proc.lines if "GET /control/v1/files/" in line]
        assert len(downloads) >= 3, "".join(proc.lines[-30:])
        # ... and this process, the bot's, could not have read them from the disk
        if proc.private_recordings:
            assert list(proc.recordings.iterdir()) == []
        else:
            warnings.warn("no mount namespace here: the bridge's recordings were visible to the "
                          "bot's process; only the downloads in the bridge's log were checked",
                          stacklevel=1)
    finally:
        if speaker is not None:
            await speaker.close()
        await bridge.close()
        await proc.stop()
