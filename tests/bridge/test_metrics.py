"""The bridge's /metrics and /healthz on [bridge] metrics_listen, read by Prometheus' own
text parser, against a real bridge with real clients."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bridge.app import INSTANCE, METRICS_PORT
from bridge.client import SpaceClient
from bridge.settings import SettingsError, settings_from_mapping
from bridge.status_server import start_status_server
from tests.support.prometheus import healthz, scrape, value

from .conftest import SECRET, make_settings, raw_ws_that_never_reads, run_bridge
from .test_live_ogg import Stream


async def until(predicate, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def measured(tmp_path):
    running = await run_bridge(make_settings(tmp_path, metrics_listen="127.0.0.1:0", listener_queue_frames=8,
                                             opus_bitrate=256000))
    try:
        yield running
    finally:
        await running.session.close()
        await running.runner.cleanup()



async def test_a_tick_held_up_by_a_busy_event_loop_is_counted_late(measured) -> None:
    """The loop blocked for 300 ms (as a synchronous database call would block it in embedded
    mode): the tick that was due meanwhile started at least 250 ms late, and /metrics says so."""
    await measured.open("held")
    stage = measured.stage("held")
    await until(lambda: stage.tick_count > 10)
    time.sleep(0.3)  # blocks the loop, on purpose
    ticks = stage.tick_count
    await until(lambda: stage.tick_count > ticks + 5)
    assert stage.stats()["tick_late_ms_max"] >= 250
    live = await scrape(measured.app[METRICS_PORT])
    assert value(live, "chorus_bridge_tick_late_seconds_bucket", le="0.25") < \
        value(live, "chorus_bridge_tick_late_seconds_count")

async def test_metrics_count_stages_people_ticks_bytes_and_refused_frames(measured) -> None:
    port = measured.app[METRICS_PORT]
    assert port > 0
    before = await scrape(port)
    assert value(before, "chorus_bridge_stages") == 0
    assert value(before, "chorus_bridge_info", role="origin", instance_id=measured.app[INSTANCE]) == 1
    assert value(before, "chorus_bridge_frames_refused_total") == 0

    await measured.open("m1", roles={"@a:x": "speaker"})
    stage = measured.stage("m1")
    noise = np.random.default_rng(3).integers(-8000, 8000, 48000 * 2).astype(np.int16)
    stream = await Stream(measured.url, "m1").start()
    try:
        async with SpaceClient(measured.url, "m1", measured.token("m1", "@a:x", "speaker")) as speaker, \
                SpaceClient(measured.url, "m1") as listener:
            await speaker.wait_type("hello")
            assert speaker.ws is not None
            for bad in (b"\x11\x00", bytes([0x21]) + b"\x00" * 20):
                await speaker.ws.send_bytes(bad)
            await speaker.speak(noise)
            await listener.wait_frames(50)
            await stream.wait_pages(5)
            await until(lambda: sum(c.frames_refused for c in stage.clients.values()) == 2)
            live = await scrape(port)
            assert value(live, "chorus_bridge_stages") == 1
            assert value(live, "chorus_bridge_listeners", space_id="m1") == 3  # two WebSockets, one stream
            assert value(live, "chorus_bridge_speakers", space_id="m1") == 1
            assert value(live, "chorus_bridge_edge_listeners", space_id="m1") == 0
            assert value(live, "chorus_bridge_frames_refused_total") == 2
            assert 0 < value(live, "chorus_bridge_tick_seconds_count") <= stage.tick_count
            ticks = value(live, "chorus_bridge_tick_seconds_count")
            assert value(live, "chorus_bridge_tick_late_seconds_count") == ticks
            assert value(live, "chorus_bridge_bytes_out_total", transport="ogg") >= len(stream.body) > 0
            ws_bytes = value(live, "chorus_bridge_bytes_out_total", transport="websocket")
            assert ws_bytes > 0
    finally:
        await stream.close()
    await until(lambda: not stage.clients and not stage.ogg_listeners)
    after = await scrape(port)
    # the connections ended: what they were sent stays counted (a counter never goes down)
    assert value(after, "chorus_bridge_bytes_out_total", transport="websocket") >= ws_bytes
    assert value(after, "chorus_bridge_frames_refused_total") == 2
    assert value(after, "chorus_bridge_listeners", space_id="m1") == 0
    # a listener that hung up is not counted as dropped for being too slow
    for transport in ("websocket", "ogg"):
        for reason in ("behind", "not_reading"):
            assert value(after, "chorus_bridge_listeners_dropped_total", transport=transport, reason=reason) == 0
    assert value(after, "process_open_fds") > 0

    status, _ = await measured.control("DELETE", "/spaces/m1")
    assert status == 200
    assert value(await scrape(port), "chorus_bridge_stages") == 0


async def test_a_listener_too_slow_for_the_audio_is_counted_as_dropped(measured) -> None:
    port = measured.app[METRICS_PORT]
    await measured.open("slow", roles={"@a:x": "speaker"})
    stage = measured.stage("slow")
    noise = np.random.default_rng(1).integers(-20000, 20000, 48000 * 60).astype(np.int16)
    async with SpaceClient(measured.url, "slow", measured.token("slow", "@a:x", "speaker")) as speaker:
        slow = await raw_ws_that_never_reads(measured.url, "/spaces/slow/ws", receive_buffer=4096)
        speaking = asyncio.create_task(speaker.speak(noise))
        try:
            await until(lambda: len(stage.clients) == 2, 10)
            await until(lambda: len(stage.clients) == 1, 60)
        finally:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)
            slow.close()
    samples = await scrape(port)
    assert value(samples, "chorus_bridge_listeners_dropped_total", transport="websocket", reason="behind") == 1
    assert value(samples, "chorus_bridge_listeners_dropped_total", transport="ogg", reason="behind") == 0


async def test_healthz_on_the_metrics_port_and_nothing_on_the_public_one(measured) -> None:
    status, body = await healthz(measured.app[METRICS_PORT])
    assert status == 200 and body["ok"] is True and body["role"] == "origin" and body["stages"] == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{measured.url}/metrics") as resp:
            assert resp.status == 404  # the public port shows no figures


async def test_no_metrics_server_unless_asked(bridge) -> None:
    assert bridge.app[METRICS_PORT] == 0


@pytest.mark.parametrize("given", ["9108", "localhost", "127.0.0.1:99999", "http://127.0.0.1:9108", ":9108", 9108,
                                   "[:::::]:9108", "[1.2.3.4]:9108", "999.1.1.1:9108", "::1:9108"])
def test_a_bad_metrics_listen_is_refused_naming_the_key(given) -> None:
    with pytest.raises(SettingsError, match=r"^bridge\.metrics_listen: expected \"\" \(off\) or \"host:port\""):
        settings_from_mapping({"bridge": {"shared_secret": SECRET, "metrics_listen": given}})


@pytest.mark.parametrize("given", ["", "127.0.0.1:0", "[::1]:9108", "metrics.internal:9108"])
def test_good_metrics_listen_values_are_taken(given) -> None:
    assert settings_from_mapping({"bridge": {"shared_secret": SECRET, "metrics_listen": given}}).metrics_listen == given


async def test_a_metrics_port_in_use_says_which_setting() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]

        async def health():
            return True, {}

        with pytest.raises(OSError, match=rf"cannot serve /metrics on 127\.0\.0\.1:{port} \(metrics_listen\)"):
            await start_status_server(f"127.0.0.1:{port}", CollectorRegistry(), health, name="bridge")
    finally:
        taken.close()
