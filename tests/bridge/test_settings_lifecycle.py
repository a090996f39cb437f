import asyncio
import re

import pytest

from bridge.__main__ import main as bridge_main
from bridge.client import SpaceClient
from bridge.settings import BridgeSettings, SettingsError, load_settings

from .conftest import SECRET, make_settings, run_bridge


def test_load_settings_from_bridge_section(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bot]\nprefix = "!"\n[bridge]\nlisten_port = 9100\n'
                   f'shared_secret = "{SECRET}"\nredis_url = ""\n')
    s = load_settings(cfg)
    assert s.listen_port == 9100 and s.shared_secret == SECRET
    assert s.listen_host == BridgeSettings.listen_host


OK = f'[bridge]\nshared_secret = "{SECRET}"\n'


@pytest.mark.parametrize("body,message", [
    (OK + 'listen_port = "x"', 'bridge.listen_port: expected an integer from 0 to 65535, got "x" (string)'),
    ('[bridge]\nshared_secret = "0123456789abcdef"', "bridge.shared_secret: expected \"\" or at least 32 characters"),
    ("[bridge]\nlisten_port = 9000", "bridge.shared_secret: required: at least 32 characters"),
    (OK + "bogus = 1", "unknown key bridge.bogus"),
    (OK + "listen_prot = 1", "unknown key bridge.listen_prot (did you mean bridge.listen_port?)"),
    (OK + 'captions_engine = "vosk"', "unknown key bridge.captions_engine (it is captions.engine now)"),
    (OK + '"a\\nb" = 1', "unknown key bridge.a\\nb"),
    (OK + 'mode = "remot"', 'bridge.mode: expected one of "embedded", "remote"'),
    ('captions = "vosk"\n' + OK, "captions: expected a table (a [captions] section)"),
    (OK + 'redis_url = "redis://u:hunter2@[::1/0"', "bridge.redis_url: expected a redis://"),
    ("[bot]\n", "missing [bridge] section"),
    (OK + "header_timeout_seconds = 0", "bridge.header_timeout_seconds: expected a number from 0.1 to 86400"),
    (OK + 'header_timeout_seconds = "10"', "bridge.header_timeout_seconds: expected a number"),
    (OK + "max_pending_connections_per_address = -1",
     "bridge.max_pending_connections_per_address: expected an integer ≥ 0"),
    (OK + "max_streams_per_address = -3", "bridge.max_streams_per_address: expected an integer ≥ 0"),
    (OK + "openid_timeout_seconds = 0", "bridge.openid_timeout_seconds: expected a number from 0.1 to 300"),
    (OK + "openid_timeout_seconds = 301", "bridge.openid_timeout_seconds: expected a number from 0.1 to 300"),
    (OK + "openid_attempts_per_minute = 0", "bridge.openid_attempts_per_minute: expected an integer ≥ 1"),
    (OK + 'openid_allow_private_networks = "yes"', "bridge.openid_allow_private_networks: expected true or false"),
    (OK + "listener_bundle_ms = 90", "bridge.listener_bundle_ms: expected a multiple of 20 (ms), got 90"),
    (OK + "listener_bundle_ms = 520", "bridge.listener_bundle_ms: expected an integer from 20 to 500, got 520"),
    (OK + "ogg_page_ms = 30", "bridge.ogg_page_ms: expected a multiple of 20 (ms), got 30"),
    (OK + "captions_workers = 0", "bridge.captions_workers: expected an integer from 1 to 64"),
    (OK + "client_sndbuf_bytes = -1", "bridge.client_sndbuf_bytes: expected an integer from 0 to"),
    (OK + 'redis_url = "http://x"', "bridge.redis_url: expected a redis://, rediss:// or unix:// URL"),
    (OK + '[captions]\nengine = "whisper"', 'captions.engine: expected one of "pocketsphinx", "vosk"'),
    (OK + '[captions]\nengine = "vosk"', 'captions.model_path: required when captions.engine = "vosk"'),
    ("[bridge\n", "not valid TOML"),
    (OK + 'openid_homeservers = { "a b" = "https://x.org" }',
     'bridge.openid_homeservers."a b": expected a Matrix server name'),
    (OK + '[bridge.openid_homeservers]\n"x.org" = "x.org"',
     'bridge.openid_homeservers."x.org": expected an http:// or https:// URL'),
    (OK + 'openid_homeservers = ["x.org"]', "bridge.openid_homeservers: expected a table of server names to URLs"),
])
def test_bad_settings_name_the_key(tmp_path, body, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(body)
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        load_settings(cfg)
    assert "\n" not in str(refused.value) and "hunter2" not in str(refused.value)
    assert str(refused.value).startswith(f"{cfg}: ")


def test_the_bridges_settings_show_no_secret(tmp_path):
    shown = repr(BridgeSettings(shared_secret=SECRET, redis_url="redis://u:hunter2@h:6379/0"))
    assert SECRET not in shown and "hunter2" not in shown and "redis://u:***@h:6379/0" in shown


def test_openid_homeservers_are_read_from_the_bridge_section(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\n[bridge.openid_homeservers]\n'
                   '"example.org" = "https://matrix.example.org/"\n')
    assert load_settings(cfg).openid_homeservers == {"example.org": "https://matrix.example.org"}
    with pytest.raises(SettingsError, match="openid_homeservers"):
        BridgeSettings(shared_secret=SECRET, openid_homeservers=(("example.org", "example.org"),))


def test_hardening_settings_are_read(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\nheader_timeout_seconds = 3\n'
                   "max_pending_connections_per_address = 0\nopenid_attempts_per_minute = 5\n"
                   "openid_allow_private_networks = true\nmax_streams_per_address = 7\n"
                   "openid_timeout_seconds = 2\n")
    s = load_settings(cfg)
    assert (s.max_streams_per_address, s.openid_timeout_seconds) == (7, 2.0)
    assert s.header_timeout_seconds == 3.0 and isinstance(s.header_timeout_seconds, float)
    assert (s.max_pending_connections_per_address, s.openid_attempts_per_minute) == (0, 5)
    assert s.openid_allow_private_networks is True
    assert BridgeSettings(shared_secret=SECRET).openid_allow_private_networks is False


def test_main_reports_bad_config_in_one_line(tmp_path, capsys):
    assert bridge_main([str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such config file" in err


async def test_shutdown_disconnects_clients_and_stops_every_task(tmp_path):
    running = await run_bridge(make_settings(tmp_path))
    await running.open("s1", record=True)
    await running.open("s2")
    client = SpaceClient(running.url, "s1")
    await client.connect()
    await client.wait_type("hello")
    await running.session.close()
    await running.runner.cleanup()
    assert await client.wait_closed() == 1001
    assert client.close_reason == "bridge shutting down"
    await client.close()
    leftovers = [t for t in asyncio.all_tasks()
                 if t is not asyncio.current_task() and not t.done()
                 and ("stage-tick" in t.get_name() or "bridge" in repr(t.get_coro()))]
    assert leftovers == []
    assert list((tmp_path / "recordings").glob("*.ogg"))  # the recording was finished


async def test_python_m_bridge_runs_on_the_projects_own_config_file(tmp_path):
    """cp config.example.toml, set a secret and a port: the bridge starts on the very file
    the bot reads, passing over the bot's sections and keys (mode, control_url, [matrix]…)."""
    import aiohttp

    from tests.support.bridge_process import ROOT, BridgeProcess

    proc = BridgeProcess(tmp_path / "bridge", SECRET)
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    for old, new in (("listen_port = 8089", f"listen_port = {proc.port}"),
                     ('shared_secret = ""', f'shared_secret = "{SECRET}"'),
                     ('recordings_dir = "var/recordings"', f'recordings_dir = "{proc.recordings}"')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    proc.config.write_text(text, encoding="utf-8")
    try:
        await proc.start()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{proc.url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 200
    finally:
        await proc.stop()
