"""bot/bridge_http.py's HttpBridge against a real bridge: the BridgeControl contract."""

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from bot.bridge_api import BridgeError, BridgeUnavailable, StageMissing, StageStats
from bot.bridge_http import BridgeAuthError, HttpBridge, describe
from bridge import tokens
from bridge.app import STAGES
from bridge.client import SpaceClient

from .conftest import SECRET, make_settings, run_bridge, sine


@pytest.fixture
async def http_bridge(bridge):
    hb = HttpBridge(bridge.url, "https://chorus.example.org/", SECRET, token_ttl=120)
    events: asyncio.Queue = asyncio.Queue()
    hb.on_event(events.put)
    await hb.start()
    await asyncio.wait_for(hb.connected.wait(), 5)
    hb.events = events  # type: ignore[attr-defined]
    yield hb
    await hb.close()


async def next_event(hb, kind, timeout=5.0):
    while True:
        event = await asyncio.wait_for(hb.events.get(), timeout)
        if event["type"] == kind:
            return event


async def test_stage_lifecycle_through_http(bridge, http_bridge):
    hb = http_bridge
    await hb.open_stage("sp1", "Gardening", public=True, captions=True)
    await hb.open_stage("sp1", "Gardening", public=True, captions=True)  # idempotent
    await hb.set_roles("sp1", {"@h:x": "host", "@s:x": "speaker", "@l:x": "listener"})
    assert bridge.stage("sp1").roles["@s:x"] == "speaker"
    await hb.set_options("sp1", record=True)
    stats = await hb.stats("sp1")
    assert stats == StageStats("sp1", True, 0, 0, 0, True, True)
    closed = await hb.close_stage("sp1")
    assert closed.open is False and closed.space_id == "sp1"
    assert (await hb.stats("sp1")).open is False
    assert (await hb.close_stage("sp1")).open is False
    with pytest.raises(BridgeError, match="404"):
        await hb.set_roles("sp1", {"@h:x": "host"})
    with pytest.raises(BridgeError, match="unknown role"):
        await hb.set_roles("sp1", {"@h:x": "king"})


async def test_a_bridge_that_refuses_the_secret_stops_start_up_with_one_clear_line(bridge, caplog):
    """Finding 5 of issue 13: a wrong secret used to be logged (in the request's repr) every
    few seconds while the bot ran on; now start() refuses, and no log line holds the secret."""
    wrong = "wrong-secret-wrong-secret"
    hb = HttpBridge(bridge.url, bridge.url, wrong)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(BridgeAuthError, match="refused the bot's shared secret") as err:
            await hb.start()
    assert wrong not in str(err.value) and "\n" not in str(err.value)
    assert hb._events_task is None and hb._session is None
    assert all(wrong not in r.getMessage() for r in caplog.records)


async def test_client_errors_are_described_without_their_headers(bridge):
    wrong = "wrong-secret-wrong-secret"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {wrong}"}) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(f"{bridge.url}/control/v1/events")
    assert wrong in repr(err.value)  # the hazard: aiohttp's repr carries the request headers
    assert wrong not in describe(err.value) and "401" in describe(err.value)


async def test_unreachable_bridge_raises_bridge_error():
    hb = HttpBridge("http://127.0.0.1:9", "http://127.0.0.1:9", SECRET, request_timeout=2)
    await hb.start()
    try:
        with pytest.raises(BridgeError, match="unreachable"):
            await hb.stats("x")
    finally:
        await hb.close()


async def test_mint_token_and_page_url(http_bridge):
    tok = http_bridge.mint_token("sp1", "@a:x", "speaker")
    claims = tokens.verify(SECRET, tok, "sp1")
    assert (claims.user, claims.role) == ("@a:x", "speaker")
    assert http_bridge.page_url("sp1") == "https://chorus.example.org/spaces/sp1"
    assert http_bridge.page_url("sp1", tok).endswith(f"/spaces/sp1?token={tok}")


async def test_client_events_reach_the_bot(bridge, http_bridge):
    hb = http_bridge
    await hb.open_stage("sp1", "Events", public=True)
    await hb.set_roles("sp1", {"@h:x": "host"})
    tok = hb.mint_token("sp1", "@l:x", "listener")
    async with SpaceClient(bridge.url, "sp1", tok) as lis:
        joined = await next_event(hb, "listener_joined")
        assert joined == {"type": "listener_joined", "space_id": "sp1", "user_id": "@l:x",
                          "listeners": 1}
        await lis.raise_hand()
        assert await next_event(hb, "hand_raised") == {
            "type": "hand_raised", "space_id": "sp1", "user_id": "@l:x"}
        await lis.react("🔥")
        assert await next_event(hb, "reaction") == {
            "type": "reaction", "space_id": "sp1", "user_id": "@l:x", "key": "🔥"}
    left = await next_event(hb, "listener_left")
    assert left["listeners"] == 0 and left["user_id"] == "@l:x"


async def test_recording_ready_event_after_close(bridge, http_bridge):
    hb = http_bridge
    await hb.open_stage("rec", "Recorded", public=True, record=True)
    await hb.set_roles("rec", {"@h:x": "host"})
    async with SpaceClient(bridge.url, "rec", hb.mint_token("rec", "@h:x", "host")) as h:
        await h.wait_type("hello")
        await h.speak(sine(440, 1.0))
        clip = await hb.clip("rec", seconds=0.5)
        assert clip["duration"] == pytest.approx(0.5, abs=0.05)
    stats = await hb.close_stage("rec")
    assert stats.open is False
    ready = await next_event(hb, "recording_ready", timeout=30)
    assert ready["space_id"] == "rec" and ready["path"].endswith(".ogg")
    assert ready["duration"] > 0.9
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
        ready["path"], stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert out.decode().strip() == "opus"


async def test_events_reconnect_after_bridge_restart(tmp_path):
    first = await run_bridge(make_settings(tmp_path))
    port = int(first.url.rsplit(":", 1)[1])
    hb = HttpBridge(first.url, first.url, SECRET, max_backoff=0.5)
    events: asyncio.Queue = asyncio.Queue()
    hb.on_event(events.put)
    await hb.start()
    second = None
    try:
        await asyncio.wait_for(hb.connected.wait(), 5)
        await first.session.close()
        await first.runner.cleanup()

        async def disconnected():
            while hb.connected.is_set():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(disconnected(), 5)
        second = await run_bridge(make_settings(tmp_path, listen_port=port))
        await asyncio.wait_for(hb.connected.wait(), 10)
        await hb.open_stage("again", "Back", public=True)
        async with SpaceClient(second.url, "again"):
            event = await asyncio.wait_for(events.get(), 5)
        assert event["type"] == "listener_joined" and event["space_id"] == "again"
    finally:
        await hb.close()
        if second is not None:
            await second.session.close()
            await second.runner.cleanup()


async def test_recording_is_written_while_the_space_runs(bridge):
    await bridge.open("grow", record=True)
    stage = bridge.stage("grow")
    assert stage.recorder is not None
    path = stage.recorder.wav_path

    async def grown(size):
        while not path.exists() or path.stat().st_size < size:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(grown(48000 * 2 // 2), 10)  # half a second of audio on disk
    first = path.stat().st_size
    await asyncio.wait_for(grown(first + 48000), 10)  # and still growing
    status, stats = await bridge.control("PATCH", "/spaces/grow", {"record": False})
    assert status == 200 and stats["recording"] is False


# -- keeping the bridge in step: instance ids and resyncs ---------------------------------


class Pusher:
    """A resync handler that opens one stage with its roles, as the bot's SpaceService
    does for every live space, and notes why it was called."""

    def __init__(self, hb: HttpBridge, space_id: str = "kept") -> None:
        self.hb, self.space_id, self.calls = hb, space_id, []
        self.fail_next = 0

    async def __call__(self, why: str) -> None:
        self.calls.append(why)
        await self.hb.open_stage(self.space_id, "Kept", public=True, record=False)
        await self.hb.set_roles(self.space_id, {"@h:x": "host", "@s:x": "speaker"})


async def test_the_bridge_names_its_instance_in_hello_list_and_health(bridge, tmp_path):
    _, listing = await bridge.control("GET", "/spaces")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{bridge.url}/healthz") as resp:
            health = await resp.json()
        async with s.ws_connect(f"{bridge.url}/control/v1/events",
                                headers={"Authorization": f"Bearer {SECRET}"}) as ws:
            hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello" and len(hello["instance"]) == 16
    assert listing["instance"] == health["instance"] == hello["instance"]
    other = await run_bridge(make_settings(tmp_path / "other"))
    try:
        _, second = await other.control("GET", "/spaces")
        assert second["instance"] != listing["instance"]
    finally:
        await other.session.close()
        await other.runner.cleanup()


async def test_a_restarted_bridge_gets_every_stage_pushed_again(tmp_path):
    first = await run_bridge(make_settings(tmp_path))
    port = int(first.url.rsplit(":", 1)[1])
    hb = HttpBridge(first.url, first.url, SECRET, max_backoff=0.5)
    pusher = Pusher(hb)
    hb.on_resync(pusher)
    second = None
    try:
        await hb.start()  # waits for the first push when the bridge answers
        assert pusher.calls == ["start"] and hb.available
        assert first.stage("kept").roles == {"@h:x": "host", "@s:x": "speaker"}
        instance = hb.instance
        await first.session.close()
        await first.runner.cleanup()
        async with asyncio.timeout(10):
            while hb.connected.is_set():
                await asyncio.sleep(0.01)
        assert not hb.available
        with pytest.raises(BridgeUnavailable):
            await hb.set_roles("kept", {"@h:x": "host"})
        second = await run_bridge(make_settings(tmp_path, listen_port=port))
        assert await hb.wait_synced(30)
        assert hb.instance != instance and pusher.calls[-1] == "restart"
        assert second.stage("kept").roles == {"@h:x": "host", "@s:x": "speaker"}
    finally:
        await hb.close()
        if not first.session.closed:
            await first.session.close()
            await first.runner.cleanup()
        if second is not None:
            await second.session.close()
            await second.runner.cleanup()


async def test_a_lost_stage_is_pushed_again_and_a_failed_push_is_retried(bridge):
    hb = HttpBridge(bridge.url, bridge.url, SECRET)
    pusher = Pusher(hb)
    hb.on_resync(pusher)
    try:
        await hb.start()
        assert pusher.calls == ["start"]
        # the bridge loses the stage behind the bot's back: the next push says so; the bot
        # (which knows the space is live) marks it stale, and a resync on the same
        # instance puts the stage back
        status, _ = await bridge.control("DELETE", "/spaces/kept")
        assert status == 200
        with pytest.raises(StageMissing) as refused:
            await hb.set_roles("kept", {"@h:x": "host"})
        assert refused.value.reason == "no open stage for space kept"
        assert hb.resyncs == 1  # a missing stage alone (the space may have ended) is no resync
        hb.mark_stale("space kept has no stage")
        async with asyncio.timeout(10):
            while "kept" not in bridge.app[STAGES] or hb.resyncs < 2:
                await asyncio.sleep(0.01)
        assert pusher.calls == ["start", "recovered"]
        # a push that fails is tried again, with backoff, until it goes through
        original = pusher.__call__
        failures = []

        async def flaky(why: str) -> None:
            if len(failures) < 2:
                failures.append(why)
                raise BridgeUnavailable("down", "the audio bridge cannot be reached")
            await original(why)

        hb._resync_handlers[:] = [flaky]
        hb.mark_stale("test")
        assert await hb.wait_synced(20)
        assert failures == ["recovered", "recovered"] and hb.resyncs == 3
    finally:
        await hb.close()


async def test_the_bots_homeserver_goes_with_every_full_push_and_a_refusal_blocks_nothing(bridge, caplog):
    from bridge.app import HOMESERVERS

    good = HttpBridge(bridge.url, bridge.url, SECRET, homeservers={"example.org": "https://hs.example.org/"})
    try:
        await good.start()
        assert good.available  # start() waited for the push
        assert bridge.app[HOMESERVERS].as_dict() == {"example.org": "https://hs.example.org"}
    finally:
        await good.close()
    # a URL the bridge will not take (a password in it): said once, and the stages still go
    refused = HttpBridge(bridge.url, bridge.url, SECRET,
                         homeservers={"example.org": "https://user:pw@hs.example.org"})
    pusher = Pusher(refused)
    refused.on_resync(pusher)
    caplog.set_level(logging.WARNING, logger="bot.bridge_http")
    try:
        await refused.start()
        assert refused.available and pusher.calls == ["start"] and "kept" in bridge.app[STAGES]
        refused.mark_stale("test")  # pushed again: refused again, said no more
        assert await refused.wait_synced(10)
        async with asyncio.timeout(10):
            while refused.resyncs < 2:
                await asyncio.sleep(0.01)
        assert pusher.calls == ["start", "recovered"]
        said = [r.getMessage() for r in caplog.records if "did not take the bot's homeserver" in r.getMessage()]
        assert len(said) == 1 and "example.org" in said[0] and "pw" not in said[0]
        assert bridge.app[HOMESERVERS].as_dict() == {"example.org": "https://hs.example.org"}  # unchanged
    finally:
        await refused.close()


# -- files over the control API -------------------------------------------------------


async def test_files_are_served_to_the_bot_by_name_only(bridge, http_bridge, tmp_path):
    hb = http_bridge
    folder = Path(bridge.settings.recordings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sp-clip-1.ogg").write_bytes(b"OggS" + bytes(5000))
    (folder / "sp-1.vtt").write_text("WEBVTT\n")
    (folder / "sp-1.wav").write_bytes(b"RIFF")
    outside = tmp_path / "secret.ogg"
    outside.write_bytes(b"not yours")
    (folder / "link.ogg").symlink_to(outside)
    got = await hb.fetch("sp-clip-1.ogg", tmp_path)
    assert got == tmp_path / "sp-clip-1.ogg" and got.read_bytes() == b"OggS" + bytes(5000)
    assert (await hb.fetch("sp-1.vtt", tmp_path)).read_text() == "WEBVTT\n"
    async with aiohttp.ClientSession() as s:
        async def status(name: str, secret: str | None = SECRET) -> int:
            headers = {"Authorization": f"Bearer {secret}"} if secret else {}
            async with s.get(f"{bridge.url}/control/v1/files/{name}", headers=headers) as resp:
                return resp.status
        assert await status("sp-clip-1.ogg", secret=None) == 401
        assert await status("sp-clip-1.ogg", secret="wrong-secret-0123456789") == 401
        for bad in ("sp-1.wav", ".hidden.ogg", "-x.ogg", "sp-1.wav.json", "%2e%2e%2fsecret.ogg"):
            assert await status(bad) in (400, 404), bad
        assert await status("missing.ogg") == 404
        assert await status("link.ogg") == 404  # a link out of the folder is not followed
    with pytest.raises(BridgeError, match="not a file name"):
        await hb.fetch("../secret.ogg", tmp_path)
    with pytest.raises(BridgeError) as missing:
        await hb.fetch("missing.ogg", tmp_path)
    assert missing.value.reason == "no file missing.ogg"
    assert not (tmp_path / "missing.ogg").exists()


async def test_a_file_over_the_bots_limit_is_refused_and_nothing_is_left(bridge, http_bridge, tmp_path):
    folder = Path(bridge.settings.recordings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "big.ogg").write_bytes(bytes(300_000))
    http_bridge.max_file_bytes = 100_000
    into = tmp_path / "in"
    into.mkdir()
    with pytest.raises(BridgeError) as refused:
        await http_bridge.fetch("big.ogg", into)
    assert refused.value.reason == "the file is larger than 100000 bytes"
    assert list(into.iterdir()) == []


async def test_fetching_from_a_bridge_that_is_gone_says_it_cannot_be_reached(tmp_path):
    hb = HttpBridge("http://127.0.0.1:9", "http://127.0.0.1:9", SECRET, request_timeout=2)
    await hb.start()
    try:
        with pytest.raises(BridgeUnavailable):
            await hb.fetch("x.ogg", tmp_path)
        assert list(tmp_path.iterdir()) == []
    finally:
        await hb.close()
