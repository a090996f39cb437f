"""A bridge killed mid-space comes back with everything the bot knows: real Synapse, the
bot in this process, ``python -m bridge`` in another, killed with SIGKILL and started
again on the same address. The speaker and the listener come back by themselves and hear
each other again; the stage is back with its roles (one changed while the bridge was
down), its recording on; what was recorded before the crash is posted; the bot tells the
truth while the audio side is gone, and a space started meanwhile opens there too."""

from __future__ import annotations

import aiohttp
import numpy as np

from bot.bridge_http import HttpBridge
from bridge.client import SpaceClient, load_audio
from tests.bridge.conftest import SECRET, SENTENCE_A, SENTENCE_B, best_correlation, synthesise
from tests.integration.helpers import ask, body, personal_token, room_with_bot, space_id_in, wait_until
from tests.support.bridge_process import BridgeProcess


def _audio_from(bot_id: str, room: str, prefix: str):
    def match(r, e) -> bool:
        content = e.source.get("content", {})
        return (r == room and e.sender == bot_id and content.get("msgtype") == "m.audio"
                and content.get("body", "").startswith(prefix))
    return match


async def _stage_stats(url: str, space_id: str) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {SECRET}"}) as s:
        async with s.get(f"{url}/control/v1/spaces/{space_id}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_a_bridge_killed_mid_space_comes_back_and_people_hear_each_other_again(
        chorus_factory, make_user, tmp_path) -> None:
    speech_a, speech_b = synthesise(SENTENCE_A), synthesise(SENTENCE_B)
    proc = BridgeProcess(tmp_path / "bridge", SECRET)
    bridge = HttpBridge(proc.url, proc.url, SECRET)
    clients: list[SpaceClient] = []
    try:
        await proc.start()
        chorus = await chorus_factory(bridge=bridge, hosting={"min_followers": 0})
        host, guest, late = await make_user("host"), await make_user("guest"), await make_user("late")
        other = await make_user("other")
        room = await room_with_bot(host, chorus.user_id, guest, late, other)
        sid = space_id_in(await ask(host, room, "!space start Restart drill"))
        space_room = await host.accept_invite(inviter=chorus.user_id)
        assert "Recording is on" in await ask(host, room, f"!space record {sid} on")
        await ask(guest, room, f"!space join {sid}")
        guest_token = await personal_token(guest, chorus.user_id, sid)
        await ask(guest, room, f"!space request {sid}")
        assert "can speak now" in await ask(host, room, f"!space approve {sid} {guest.user_id}")
        await ask(late, room, f"!space join {sid}")
        await ask(late, room, f"!space request {sid}")

        speaker = SpaceClient(proc.url, sid, guest_token, reconnect=True)
        ear = SpaceClient(proc.url, sid, reconnect=True)  # anonymous: the space is public
        clients += [speaker, ear]
        for c in clients:
            await c.connect()
            await c.wait_type("hello")
        await speaker.speak_wav(speech_a)
        await ear.wait_frames(ear.frames_received + 25)
        assert best_correlation(ear.heard(), load_audio(speech_a)) > 0.5
        first_instance = bridge.instance
        assert first_instance and bridge.available

        before_kill = len(speaker.messages)
        await proc.kill()
        await wait_until(lambda: not bridge.connected.is_set(), 15, "the bot to see the bridge gone")
        (crashed,) = proc.recordings.glob("*.wav")  # the recording the crash cut off
        # while it is down the bot says so, and keeps the approval for later
        reply = await ask(host, room, f"!space approve {sid} {late.user_id}")
        assert "can speak now" in reply and "did not take this yet" in reply, reply
        info = await ask(host, room, f"!space info {sid}")
        assert "audio bridge is unavailable" in info, info
        started = await ask(other, room, "!space start Started in the dark")
        assert "is live" in started and "did not take this yet" in started, started
        dark = space_id_in(started)

        await proc.start()
        assert await bridge.wait_synced(60), "the bot did not push its stages to the new bridge"
        assert bridge.instance != first_instance
        stats = await _stage_stats(proc.url, sid)
        assert stats["open"] and stats["recording"] and stats["title"] == "Restart drill"
        assert (await _stage_stats(proc.url, dark))["title"] == "Started in the dark"

        # both clients come back by themselves, with the roles the bot holds
        await speaker.wait_reconnected(1, timeout=60)
        await ear.wait_reconnected(1, timeout=60)
        roles = await ear.wait_for(lambda m: m.get("type") in ("hello", "roles")
                                   and m.get("roles", {}).get(late.user_id) == "speaker", timeout=30)
        assert roles["roles"] == {host.user_id: "host", guest.user_id: "speaker",
                                  late.user_id: "speaker"}
        await speaker.wait_for(lambda m: any(  # its hello, or the roles pushed just after
            x.get("type") in ("hello", "you") and x.get("may_speak")
            for x in speaker.messages[before_kill:]), timeout=30)

        mark = len(ear.audio)
        await speaker.speak_wav(speech_b)
        await ear.wait_frames(ear.frames_received + 25)
        after = np.concatenate(ear.audio[mark:])
        assert best_correlation(after, load_audio(speech_b)) > 0.5

        # the room hears it is back, and gets what was recorded up to the crash
        await host.wait_for_event(
            lambda r, e: r == space_room and e.sender == chorus.user_id
            and "audio bridge is back" in e.source.get("content", {}).get("body", ""), timeout=30,
            description="the notice that the audio is back")
        recovered = await host.wait_for_event(
            _audio_from(chorus.user_id, space_room, "Recording up to the audio bridge's restart"),
            timeout=60, description="the recording cut off by the crash")
        assert recovered.source["content"]["info"]["duration"] > 3000
        assert not crashed.exists() and crashed.with_suffix(".ogg").is_file()

        assert "has ended" in await ask(host, room, f"!space end {sid}")
        rest = await host.wait_for_event(_audio_from(chorus.user_id, space_room, "Recording: "),
                                         timeout=60, description="the recording after the restart")
        assert rest.source["content"]["info"]["duration"] > 3000
        assert body(rest).startswith("Recording: Restart drill")
    finally:
        for c in clients:
            await c.close()
        await bridge.close()
        await proc.stop()
