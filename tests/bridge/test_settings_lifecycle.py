import asyncio

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


@pytest.mark.parametrize("body,message", [
    ('[bridge]\nlisten_port = "x"\nshared_secret = "0123456789abcdef"',
     "bridge.listen_port: must be an integer"),
    ('[bridge]\nshared_secret = "short"', "bridge.shared_secret"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nbogus = 1', "bridge.bogus: unknown"),
    ("[bot]\n", "missing [bridge] section"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nheader_timeout_seconds = 0',
     "bridge.header_timeout_seconds: must be a number of seconds from 0.1"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nheader_timeout_seconds = "10"',
     "bridge.header_timeout_seconds: must be a number"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nmax_pending_connections_per_address = -1',
     "bridge.max_pending_connections_per_address: must be 0"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nmax_streams_per_address = -3',
     "bridge.max_streams_per_address: must be 0"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_timeout_seconds = 0',
     "bridge.openid_timeout_seconds: must be a number of seconds from 0.1 to 300"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_timeout_seconds = 301',
     "bridge.openid_timeout_seconds: must be a number of seconds from 0.1 to 300"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_attempts_per_minute = 0',
     "bridge.openid_attempts_per_minute: must be at least 1"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_allow_private_networks = "yes"',
     "bridge.openid_allow_private_networks: must be true or false"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nlistener_bundle_ms = 90',
     "bridge.listener_bundle_ms: must be a multiple of 20 from 20 to 500, got 90"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nlistener_bundle_ms = 520',
     "bridge.listener_bundle_ms: must be a multiple of 20 from 20 to 500, got 520"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nogg_page_ms = 30',
     "bridge.ogg_page_ms: must be a multiple of 20 from 20 to 1000, got 30"),
    ("[bridge\n", "not valid TOML"),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_homeservers = { "a b" = "https://x.org" }',
     'bridge.openid_homeservers."a b": expected a Matrix server name'),
    ('[bridge]\nshared_secret = "0123456789abcdef"\n[bridge.openid_homeservers]\n"x.org" = "x.org"',
     'bridge.openid_homeservers."x.org": expected an http:// or https:// URL'),
    ('[bridge]\nshared_secret = "0123456789abcdef"\nopenid_homeservers = ["x.org"]',
     "bridge.openid_homeservers: expected a table of server names to URLs"),
])
def test_bad_settings_name_the_key(tmp_path, body, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(body)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")):
        load_settings(cfg)


def test_openid_homeservers_are_read_from_the_bridge_section(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\n[bridge.openid_homeservers]\n'
                   '"example.org" = "https://matrix.example.org/"\n')
    assert load_settings(cfg).openid_homeservers == (("example.org", "https://matrix.example.org"),)
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
