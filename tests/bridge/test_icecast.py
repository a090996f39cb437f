"""The Icecast tier: the origin feeds every public live space's stream to a real Icecast
(Debian's icecast2) as a source; a player on Icecast hears the space; private spaces are
not mounted; Icecast down, slow to answer or refusing the password never holds the space,
and the source comes back by itself. The URL's rules and LiveOgg's relays as pure logic."""

from __future__ import annotations

import asyncio
import logging
import subprocess

import numpy as np
import pytest

from bridge import icecast
from bridge.client import SpaceClient
from bridge.icecast import IcecastTarget, stream_url
from bridge.ogg import FLAG_BOS, FLAG_EOS
from bridge.oggstream import LiveOgg, OggListener
from bridge.schema import Bad, mask_url
from bridge.settings import BridgeSettings, SettingsError
from tests.support.icecast import PASSWORD, IcecastServer

from .conftest import SECRET, make_settings, run_bridge, sine
from .test_live_ogg import FakeTransport, Stream, parse_pages

# -- the URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "want"), [
    ("icecast://source:pw@ice.example.org:8000/chorus",
     ("ice.example.org", 8000, "source", "pw", "/chorus")),
    ("icecast://:pw@ice.example.org", ("ice.example.org", 8000, "source", "pw", "")),
    ("icecast://relay:p%40ss%3Aw@10.0.0.5:8443/", ("10.0.0.5", 8443, "relay", "p@ss:w", "")),
    ("ICECAST://source:pw@[::1]:9000/a/b-c_d.e/", ("::1", 9000, "source", "pw", "/a/b-c_d.e")),
])
def test_an_icecast_url_names_the_server_login_and_mount_prefix(url, want) -> None:
    target = IcecastTarget.parse(url)
    assert (target.host, target.port, target.user, target.password, target.prefix) == want


@pytest.mark.parametrize(("url", "says"), [
    ("http://source:hunter2@ice:8000/x", "the scheme must be icecast://"),
    ("icecast://ice:8000/x", "no source password"),
    ("icecast://source@ice:8000/x", "no source password"),
    ("icecast://source:hunter2@:8000/x", "no host"),
    ("icecast://source:hunter2@ice:99999/x", "expected an icecast://"),
    ("icecast://source:hunter2@ice:8000/x?a=1", "no query or fragment"),
    ("icecast://source:hunter2@ice:8000/x#f", "no query or fragment"),
    ("icecast://source:hunter2@ice:8000/a b", "a space or a control character"),
    ("icecast://source:hunter2@ice:8000/a/../b", "no empty or dot segments"),
    ("icecast://source:hunter2@ice:8000/a%2Fb", "may hold only letters"),
    ("icecast://source:hunter2@ice:0/x", "port 0"),
    ("icecast://source:hun#ter2@ice:8000/x", "expected an icecast://"),  # unencoded # in it
    ("icecast://source:hun/ter2@ice:8000/x", "expected an icecast://"),
    ("icecast://source:hun?ter2@ice:8000/x", "expected an icecast://"),
])
def test_a_bad_icecast_url_says_why_and_never_shows_the_password(url, says) -> None:
    with pytest.raises(Bad) as caught:
        IcecastTarget.parse(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value) and "hun" not in str(caught.value)
    assert "hunter2" not in repr(IcecastTarget("ice", 8000, "source", "hunter2"))


def test_the_settings_refuse_a_bad_icecast_url_in_one_line_and_mask_a_good_one() -> None:
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, icecast_url="icecast://source@ice:8000/x")
    assert str(caught.value).startswith("bridge.icecast_url: expected an icecast://")
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, icecast_url=8000)
    assert "bridge.icecast_url" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        BridgeSettings(shared_secret=SECRET, icecast_listen_url="https://u:hunter2@cdn/x")
    assert "bridge.icecast_listen_url" in str(caught.value) and "hunter2" not in str(caught.value)
    good = BridgeSettings(shared_secret=SECRET, icecast_url="icecast://source:hunter2@ice/x",
                          icecast_listen_url="https://radio.example.org/chorus/")
    assert "hunter2" not in repr(good) and "icecast://source:***@ice/x" in repr(good)
    assert good.icecast_listen_url == "https://radio.example.org/chorus"


def test_mounts_and_listening_addresses_are_made_from_the_space_id() -> None:
    target = IcecastTarget.parse("icecast://source:pw@ice/chorus")
    assert target.mount("abc123") == "/chorus/abc123.ogg"
    assert target.mount("a b/c") == "/chorus/a%20b%2Fc.ogg"
    assert stream_url("https://radio.example.org/live", "abc123") == \
        "https://radio.example.org/live/abc123.ogg"


# -- LiveOgg's relays (pure) --------------------------------------------------------------


def test_a_relay_gets_every_page_counts_as_no_listener_and_is_cut_when_it_falls_behind() -> None:
    ogg = LiveOgg(pre_skip=312, title="t", page_packets=2, buffer_limit=1000,
                  too_slow=(4408, "too slow"), space_id="s")
    relay_transport = FakeTransport()
    relay = OggListener(relay_transport, chunked=False, space_id="s")  # type: ignore[arg-type]
    ogg.add_relay(relay)
    assert ogg.listeners == set()
    for _ in range(4):
        ogg.push(b"\xfc" + b"x" * 50)
    pages = parse_pages(bytes(relay_transport.data))
    assert len(pages) == 2  # built for the relay alone: nobody else listens
    relay_transport.stuck = 5000
    ogg.push(b"\xfc" + b"x" * 50)
    ogg.push(b"\xfc" + b"x" * 50)
    assert relay.kicked == (4408, "too slow")
    listener_transport = FakeTransport()
    listener = OggListener(listener_transport, chunked=True, space_id="s")  # type: ignore[arg-type]
    ogg.add(listener)
    ogg.end(4410, "space ended")
    assert listener.kicked == (4410, "space ended")


# -- a real Icecast -----------------------------------------------------------------------


@pytest.fixture
async def icecast_server():
    server = IcecastServer()
    try:
        await server.start()
        yield server
    finally:
        server.close()


async def _stopped(running) -> None:
    await running.session.close()
    await running.runner.cleanup()


def _decode(data: bytes, tmp_path) -> np.ndarray:
    path = tmp_path / "heard.ogg"
    path.write_bytes(data)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True, timeout=60)
    assert out.stderr == b"", out.stderr
    return np.frombuffer(out.stdout, dtype="<i2")


async def test_a_player_on_icecast_hears_a_public_space_until_it_ends(tmp_path, icecast_server) -> None:
    running = await run_bridge(make_settings(
        tmp_path, ogg_page_ms=20, icecast_url=icecast_server.url("/chorus"),
        icecast_listen_url="https://radio.example.org/chorus"))
    player = None
    try:
        await running.open("tone", roles={"@a:x": "speaker"})
        # (Icecast knows the codec once it has read the header pages)
        mounts = await icecast_server.wait_sources(
            lambda s: s.get("/chorus/tone.ogg", {}).get("subtype"))
        info = mounts["/chorus/tone.ogg"]
        assert info["server_name"] == "Test tone" and info["server_type"] == "audio/ogg"
        assert info["server_url"] == "http://127.0.0.1:8089/spaces/tone"
        assert info["subtype"] == "Opus"
        player = await Stream(f"http://127.0.0.1:{icecast_server.port}", "tone", version="1.0",
                              path="/chorus/tone.ogg").start()
        await player.wait_pages(2)
        async with SpaceClient(running.url, "tone", running.token("tone", "@a:x", "speaker")) as a:
            hello = await a.wait_type("hello")
            assert hello["stream_url"] == "https://radio.example.org/chorus/tone.ogg"
            await a.speak(sine(440, 3.0))
        stage = running.stage("tone")
        assert stage.stats()["icecast"] == {"mount": "/chorus/tone.ogg", "state": "live",
                                            "mounts": 1, "last_error": None}
        assert stage.listeners == 0  # Icecast is not counted as a listener
        status, _ = await running.control("DELETE", "/spaces/tone")
        assert status == 200
        async with asyncio.timeout(15):  # Icecast ends the player's response when the source goes
            await player.done.wait()
        await icecast_server.wait_sources(lambda s: "/chorus/tone.ogg" not in s)
    finally:
        if player is not None:
            await player.close()
        await _stopped(running)
    pages = player.pages()
    assert player.head.startswith(b"HTTP/1.0 200") and b"audio/ogg" in player.head
    head, tags = pages[0], pages[1]
    assert head.flags & FLAG_BOS and head.packets[0].startswith(b"OpusHead")
    assert tags.packets[0].startswith(b"OpusTags") and b"TITLE=Test tone" in tags.packets[0]
    assert pages[-1].flags & FLAG_EOS  # the space's last page reached the player
    assert [p.seq for p in pages[2:]] == list(range(pages[2].seq, pages[2].seq + len(pages) - 2))
    pcm = _decode(player.body, tmp_path)
    loud = max(range(0, len(pcm) - 48000, 4800), key=lambda s: np.abs(pcm[s:s + 48000]).mean())
    spectrum = np.abs(np.fft.rfft(pcm[loud:loud + 48000].astype(np.float64)))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2


async def test_only_public_spaces_are_mounted_and_a_change_of_mind_follows(tmp_path, icecast_server) -> None:
    running = await run_bridge(make_settings(tmp_path, icecast_url=icecast_server.url("/c")))
    try:
        await running.open("shut", public=False)
        await running.open("open")
        mounts = await icecast_server.wait_sources(lambda s: "/c/open.ogg" in s)
        assert "/c/shut.ogg" not in mounts
        assert running.stage("shut").stats()["icecast"] is None
        async with SpaceClient(running.url, "open") as anonymous:  # no listen URL configured
            assert (await anonymous.wait_type("hello"))["stream_url"] is None
        await running.open("shut", public=True)
        await running.open("open", public=False)
        await icecast_server.wait_sources(lambda s: set(s) == {"/c/shut.ogg"})
        assert running.stage("open").stats()["icecast"] is None
    finally:
        await _stopped(running)


async def test_icecast_killed_and_started_again_costs_the_space_nothing(
        tmp_path, icecast_server, monkeypatch) -> None:
    monkeypatch.setattr(icecast, "RETRY_MAX_SECONDS", 2.0)
    running = await run_bridge(make_settings(tmp_path, ogg_page_ms=20,
                                             icecast_url=icecast_server.url("/c")))
    own = None
    try:
        await running.open("crash")
        stage = running.stage("crash")
        await icecast_server.wait_sources(lambda s: "/c/crash.ogg" in s)
        own = await Stream(running.url, "crash").start()  # a listener of the bridge itself
        await own.wait_pages(2 + 5)
        icecast_server.kill()
        async with asyncio.timeout(15):
            while stage.stats()["icecast"]["state"] == "live":
                await asyncio.sleep(0.02)
        ticks, pages = stage.tick_count, len(own.pages())
        await own.wait_pages(pages + 25)  # the space goes on: its own listener keeps hearing it
        assert stage.tick_count > ticks
        assert stage.stats()["icecast"]["last_error"] is not None
        await icecast_server.start()  # same port
        await icecast_server.wait_sources(lambda s: "/c/crash.ogg" in s, seconds=60)
        async with asyncio.timeout(10):
            while stage.stats()["icecast"]["state"] != "live":
                await asyncio.sleep(0.02)
        assert stage.stats()["icecast"]["mounts"] == 2
        assert stage.stats()["icecast"]["last_error"] is None
        assert len(stage.ogg_listeners) == 1
    finally:
        if own is not None:
            await own.close()
        await _stopped(running)


async def test_a_wrong_password_is_logged_once_with_no_secret_and_the_space_goes_on(
        tmp_path, icecast_server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.icecast")
    url = icecast_server.url("/c", password="not-the-password")
    running = await run_bridge(make_settings(tmp_path, icecast_url=url,
                                             icecast_listen_url="https://radio.example.org/c"))
    try:
        await running.open("pw")
        stage = running.stage("pw")
        async with asyncio.timeout(20):  # refused, then tried again (and refused again)
            while stage.icecast is None or stage.icecast.failures < 2:
                await asyncio.sleep(0.02)
        status = stage.stats()["icecast"]
        assert status["state"] in ("waiting", "connecting") and status["mounts"] == 0
        assert "401" in status["last_error"] and "icecast_url" in status["last_error"]
        assert stage.tick_count > 0 and stage.open
        assert await icecast_server.sources() == {}
        # players are not sent to a mount that is not there
        async with running.session.get(f"{running.url}/api/spaces") as resp:
            assert (await resp.json())["spaces"][0]["stream_url"] is None
        async with SpaceClient(running.url, "pw") as anonymous:
            assert (await anonymous.wait_type("hello"))["stream_url"] is None
        source = stage.icecast
    finally:
        await _stopped(running)
    assert source.state == "stopped" and source._task.done()  # the bridge's shutdown ended it
    errors = [r for r in caplog.records
              if r.name == "bridge.icecast" and r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert errors[0].levelno == logging.ERROR
    assert "space pw" in message and f"127.0.0.1:{icecast_server.port}/c/pw.ogg" in message
    assert "goes on" in message
    assert all("not-the-password" not in r.getMessage() and PASSWORD not in r.getMessage()
               for r in caplog.records)


async def test_an_icecast_that_never_answers_holds_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(icecast, "HANDSHAKE_SECONDS", 0.5)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader, writer) -> None:  # takes the connection, never answers
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    running = await run_bridge(make_settings(
        tmp_path, icecast_url=f"icecast://source:pw@127.0.0.1:{port}/c"))
    try:
        await running.open("mute")
        stage = running.stage("mute")
        async with asyncio.timeout(20):
            while not accepted:
                await asyncio.sleep(0.01)
            ticks = stage.tick_count
            while stage.tick_count < ticks + 10:  # the tick runs while the source waits
                await asyncio.sleep(0.01)
            while stage.icecast.last_error is None:
                await asyncio.sleep(0.01)
        source = stage.icecast
        assert source.last_error == "no answer within 0.5 s"
        assert source.mounts == 0
        status, body = await running.control("DELETE", "/spaces/mute")
        assert status == 200 and body["icecast"] is None
        assert stage.icecast is None
        assert source.state == "stopped" and source._task.done()  # nothing left running
    finally:
        await _stopped(running)
        for writer in accepted:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_private_and_public_again_at_once_mounts_after_the_old_source_lets_go(
        tmp_path, icecast_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bridge.icecast")
    running = await run_bridge(make_settings(tmp_path, icecast_url=icecast_server.url("/c")))
    try:
        await running.open("flip")
        stage = running.stage("flip")
        await icecast_server.wait_sources(lambda s: "/c/flip.ogg" in s)
        first = stage.icecast
        await running.open("flip", public=False)
        await running.open("flip", public=True)  # before the first source has let go
        second = stage.icecast
        assert second is not first
        async with asyncio.timeout(20):
            while second.state != "live":
                await asyncio.sleep(0.02)
        assert first.state == "stopped" and second.failures == 0  # no 403 on the way
        assert set(await icecast_server.sources()) == {"/c/flip.ogg"}
    finally:
        await _stopped(running)
    assert not [r for r in caplog.records if r.name == "bridge.icecast" and r.levelno >= logging.WARNING]


async def test_a_fault_in_the_source_is_logged_and_tried_again_and_ends_cleanly(
        tmp_path, icecast_server, caplog, monkeypatch) -> None:
    request = icecast.IcecastSource._request
    calls = []

    def faulty(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return request(self)

    monkeypatch.setattr(icecast.IcecastSource, "_request", faulty)
    running = await run_bridge(make_settings(tmp_path, icecast_url=icecast_server.url("/c")))
    try:
        await running.open("oops")
        stage = running.stage("oops")
        await icecast_server.wait_sources(lambda s: "/c/oops.ogg" in s)
        source = stage.icecast
        assert source.state == "live" and source.mounts == 1 and len(calls) == 2
        status, body = await running.control("DELETE", "/spaces/oops")
        assert status == 200 and body["open"] is False
        assert source.state == "stopped" and source._task.done()
    finally:
        await _stopped(running)
    faults = [r for r in caplog.records if r.name == "bridge.icecast" and r.exc_info]
    assert len(faults) == 1 and "space oops" in faults[0].getMessage()
    assert "boom" in str(faults[0].exc_info[1])


@pytest.mark.parametrize("url", ["redis://u:hun/ter2@h:6379/0", "icecast://source:hun#ter2@ice/x",
                                 "https://u:hun?ter2@cdn/x"])
def test_every_url_setting_masks_a_password_that_holds_a_slash_question_mark_or_hash(url) -> None:
    assert "ter2" not in mask_url(url) and "hun" not in mask_url(url)
