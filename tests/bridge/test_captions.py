"""Live captions through real WebSocket connections, with festival's HTS voice."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

from bridge.app import CAPTIONS
from bridge.client import SpaceClient, load_audio

from .conftest import SECRET, SENTENCE_A, make_settings, run_bridge

pytest.importorskip("pocketsphinx")

VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"
CUE_TIMING = re.compile(rf"^{VTT_TIME} --> {VTT_TIME}$")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """Check the WebVTT structure strictly; return (start, end, payload) per cue."""
    lines = text.split("\n")
    assert lines[0] == "WEBVTT" or lines[0].startswith("WEBVTT "), lines[0]
    assert lines[1] == ""
    cues = []
    blocks = [b for b in "\n".join(lines[2:]).split("\n\n") if b.strip()]
    for block in blocks:
        rows = block.strip("\n").split("\n")
        if not CUE_TIMING.match(rows[0]):
            rows = rows[1:]  # an identifier line
        m = CUE_TIMING.match(rows[0])
        assert m, f"bad cue timing line {rows[0]!r}"
        start, end = seconds(*m.groups()[:4]), seconds(*m.groups()[4:])
        assert end > start
        assert len(rows) >= 2 and "-->" not in "".join(rows[1:])
        cues.append((start, end, "\n".join(rows[1:])))
    starts = [c[0] for c in cues]
    assert starts == sorted(starts), "cues are not in order"
    return cues


async def wait_until(predicate, timeout: float = 20.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


class ControlEvents:
    """The bot's side of the control events WebSocket."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.events: list[dict] = []
        self._task: asyncio.Task | None = None
        self._new = asyncio.Event()

    async def __aenter__(self):
        self.ws = await self.bridge.session.ws_connect(
            f"{self.bridge.url}/control/v1/events",
            headers={"Authorization": f"Bearer {SECRET}"})
        first = await self.ws.receive_json()
        assert first["type"] == "hello"
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self):
        async for msg in self.ws:
            self.events.append(json.loads(msg.data))
            self._new.set()

    async def wait(self, kind: str, timeout: float = 30.0) -> dict:
        async def find():
            while True:
                for e in self.events:
                    if e["type"] == kind:
                        return e
                self._new.clear()
                await self._new.wait()
        return await asyncio.wait_for(find(), timeout)

    async def __aexit__(self, *exc):
        await self.ws.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def caption_messages(client: SpaceClient, user: str | None = None) -> list[dict]:
    return [m for m in client.messages
            if m["type"] == "caption" and (user is None or m["user_id"] == user)]


async def test_speaker_is_captioned_and_silent_speaker_costs_nothing(bridge, speech_a):
    pcm = load_audio(speech_a)
    async with ControlEvents(bridge) as bot:
        await bridge.open("cap", roles={"@alice:x": "host", "@bob:x": "speaker"},
                          captions=True)
        stage = bridge.stage("cap")
        async with SpaceClient(bridge.url, "cap") as listener, \
                SpaceClient(bridge.url, "cap", bridge.token("cap", "@alice:x", "host")) as a, \
                SpaceClient(bridge.url, "cap", bridge.token("cap", "@bob:x", "speaker")) as b:
            hello = await listener.wait_type("hello")
            assert hello["captions"] is True
            await a.wait_type("hello")
            await b.wait_type("hello")
            began = stage.tick_count * 0.02
            # bob is connected and sends audio the whole time, but it is silence
            await asyncio.gather(a.speak(pcm), b.speak(np.zeros_like(pcm)))
            await wait_until(lambda: not stage.captioner.busy)
            n_finals = len(stage.captioner.finals)
            assert n_finals >= 1
            await listener.wait_for(
                lambda m: len(caption_messages(listener, "@alice:x")) >= 1 and sum(
                    1 for c in caption_messages(listener, "@alice:x") if c["final"]
                    and c["text"]) >= n_finals, timeout=10)
            captions = caption_messages(listener)
            bob_in_mix = stage.mixer.speakers

        finals = [c for c in captions if c["final"] and c["text"]]
        said = " ".join(c["text"] for c in finals)
        print("captions:", said)
        expected = set(words(SENTENCE_A))
        heard = set(words(said))
        assert len(expected & heard) >= 0.6 * len(expected), said
        assert all(c["user_id"] == "@alice:x" and c["space_id"] == "cap" for c in captions)
        # partial captions came before the final one
        assert any(not c["final"] for c in captions)
        # timing: on the stage clock, where the speech was
        duration = len(pcm) / 48000
        first, last = finals[0], finals[-1]
        assert began - 0.5 <= first["start"] <= began + 1.5, (began, first)
        assert all(c["start"] < c["end"] for c in finals)
        assert abs((last["end"] - first["start"]) - duration) < 1.5, (first, last, duration)
        # bob was mixed (he sent frames) but never reached the recogniser
        assert len(bob_in_mix) == 2
        assert stage.captioner.chunks_sent["@bob:x"] == 0
        assert stage.captioner.chunks_sent["@alice:x"] > 0
        assert bridge.app[CAPTIONS].chunks_sent == stage.captioner.chunks_sent["@alice:x"]
        # the bot got the final captions over the control events socket
        event = await bot.wait("caption")
        assert event["final"] is True and event["user_id"] == "@alice:x"
        assert event["text"] == finals[0]["text"]
        # captions without a recording: a transcript on its own at the end
        status, _ = await bridge.control("DELETE", "/spaces/cap")
        assert status == 200
        ready = await bot.wait("transcript_ready")
        assert ready["space_id"] == "cap" and ready["cues"] == len(finals)
        cues = parse_vtt(open(ready["path"], encoding="utf-8").read())
        assert [c[2] for c in cues] == [f"<v @alice:x>{c['text']}" for c in finals]


async def test_turning_captions_off_stops_recognition_and_events(bridge, speech_b):
    pcm = load_audio(speech_b)
    await bridge.open("off", roles={"@alice:x": "host"}, captions=True)
    stage = bridge.stage("off")
    async with SpaceClient(bridge.url, "off") as listener, \
            SpaceClient(bridge.url, "off", bridge.token("off", "@alice:x", "host")) as a:
        await listener.wait_type("hello")
        speaking = asyncio.create_task(a.speak(pcm))
        # captions work...
        await listener.wait_type("caption", timeout=20)
        status, body = await bridge.control("PATCH", "/spaces/off", {"captions": False})
        assert status == 200 and body["captions"] is False
        await listener.wait_type("captions", where=lambda m: m["enabled"] is False)
        sent = stage.captioner.chunks_sent["@alice:x"]
        seen = len(listener.messages)
        await speaking
        # ...and after "off" the rest of the sentence (and its silence) is not captioned
        end = listener.frames_received + 60
        await listener.wait_frames(end)
        after = [m for m in listener.messages[seen:] if m["type"] == "caption"]
        assert after == []
        assert stage.captioner.chunks_sent["@alice:x"] == sent
        assert not stage.captioner.busy
    status, _ = await bridge.control("PATCH", "/spaces/off", {"captions": True})
    assert status == 200 and stage.captions is True


async def test_recording_gets_a_webvtt_transcript(bridge, speech_a):
    pcm = load_audio(speech_a)
    async with ControlEvents(bridge) as bot:
        await bridge.open("rec", roles={"@alice:x": "host"}, captions=True, record=True)
        stage = bridge.stage("rec")
        async with SpaceClient(bridge.url, "rec", bridge.token("rec", "@alice:x", "host")) as a:
            await a.wait_type("hello")
            await a.speak(pcm)
            await bot.wait("caption")
        status, _ = await bridge.control("DELETE", "/spaces/rec")
        assert status == 200
        ready = await bot.wait("recording_ready")
    assert ready["transcript_path"].endswith(".vtt")
    assert ready["transcript_path"][:-4] == ready["path"][:-4]  # next to the recording
    text = open(ready["transcript_path"], encoding="utf-8").read()
    cues = parse_vtt(text)
    assert len(cues) == ready["transcript_cues"] == len(stage.captioner.finals) >= 1
    assert all(c[2].startswith("<v @alice:x>") for c in cues)
    assert cues[-1][1] <= ready["duration"] + 1.0
    assert len(set(words(" ".join(c[2] for c in cues))) & set(words(SENTENCE_A))) >= 8


async def test_bad_engine_is_refused_clearly(tmp_path):
    running = await run_bridge(make_settings(tmp_path, captions_engine="vosk",
                                             captions_model_path=str(tmp_path)))
    try:
        status, body = await running.control("POST", "/spaces/v", {
            "title": "t", "public": True, "captions": True})
        assert status == 503 and body["field"] == "captions"
        assert "vosk" in body["error"] and "pip install vosk" in body["error"]
        status, _ = await running.control("GET", "/spaces/v")
        assert status == 404  # nothing was opened
        await running.open("v")
        status, body = await running.control("PATCH", "/spaces/v", {"captions": True})
        assert status == 503 and "vosk" in body["error"]
        assert running.stage("v").captions is False
    finally:
        await running.session.close()
        await running.runner.cleanup()


async def test_broken_model_stops_start_up_when_captions_are_on_by_default(tmp_path):
    model = tmp_path / "model"
    (model / "hmm").mkdir(parents=True)
    (model / "hmm" / "mdef").write_text("not a model\n")
    (model / "x.lm.bin").write_bytes(b"\0garbage")
    (model / "x.dict").write_text("hello HH AH L OW\n")
    settings = make_settings(tmp_path, captions_model_path=str(model),
                             captions_by_default=True)
    from bridge.app import start_embedded
    from bridge.captions import CaptionsError

    with pytest.raises(CaptionsError) as err:
        runner, _ = await start_embedded(settings)
        await runner.cleanup()
    message = str(err.value)
    print(message)
    assert "pocketsphinx" in message and "could not load model" in message
    assert str(model) in message and "mdef" in message  # the engine's own reason
