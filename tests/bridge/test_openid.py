"""Element widget sign-in: an OpenID token from the user's real homeserver becomes a bridge
token for that user with the role the bot pushed; anything else is refused."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest

from bridge import tokens
from tests.support.matrix_user import unique_localpart
from tests.support.web import openid_token, serve_on_loopback

from .conftest import SECRET, make_settings, run_bridge
from .test_web_page import CHROMIUM, browser  # noqa: F401 - the Chromium fixture


@pytest.fixture
async def widget_bridge(homeserver, tmp_path):
    running = await run_bridge(make_settings(
        tmp_path, openid_homeservers=((homeserver.server_name, homeserver.base_url),)))
    yield running
    await running.session.close()
    await running.runner.cleanup()


async def _login(bridge, space_id: str, body) -> tuple[int, dict]:
    async with bridge.session.post(f"{bridge.url}/spaces/{space_id}/openid", json=body) as resp:
        return resp.status, await resp.json()


async def test_a_real_openid_token_signs_the_user_in_with_their_role(homeserver, widget_bridge) -> None:
    speaker = homeserver.register(unique_localpart("speaker"), secrets.token_urlsafe(12))
    listener = homeserver.register(unique_localpart("listener"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid", public=True, roles={speaker.user_id: "speaker"})
    for user, role in ((speaker, "speaker"), (listener, "listener")):
        oid = await openid_token(homeserver, user)
        status, body = await _login(widget_bridge, "wid", {"access_token": oid["access_token"],
                                                         "matrix_server_name": oid["matrix_server_name"]})
        assert status == 200, body
        assert (body["user_id"], body["role"]) == (user.user_id, role)
        claims = tokens.verify(SECRET, body["token"], "wid")
        assert (claims.user, claims.role) == (user.user_id, role)


async def test_forged_mismatched_and_unknown_are_refused(homeserver, widget_bridge) -> None:
    user = homeserver.register(unique_localpart("user"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid2", public=True)
    oid = await openid_token(homeserver, user)
    status, body = await _login(widget_bridge, "wid2", {"access_token": "forged",
                                                       "matrix_server_name": homeserver.server_name})
    assert status == 401 and "could not verify your Matrix identity" in body["error"]
    status, body = await _login(widget_bridge, "wid2", {"access_token": oid["access_token"],
                                                       "matrix_server_name": "example.org:1"})
    assert status == 401
    status, body = await _login(widget_bridge, "nope", {"access_token": oid["access_token"],
                                                       "matrix_server_name": homeserver.server_name})
    assert status == 404
    status, body = await _login(widget_bridge, "wid2", {"access_token": oid["access_token"]})
    assert status == 400 and body["field"] == "matrix_server_name"


async def test_a_private_space_needs_a_role(homeserver, widget_bridge) -> None:
    member = homeserver.register(unique_localpart("member"), secrets.token_urlsafe(12))
    outsider = homeserver.register(unique_localpart("outsider"), secrets.token_urlsafe(12))
    await widget_bridge.open("priv", public=False, roles={member.user_id: "listener"})
    oid = await openid_token(homeserver, outsider)
    status, body = await _login(widget_bridge, "priv", {"access_token": oid["access_token"],
                                                       "matrix_server_name": oid["matrix_server_name"]})
    assert status == 403 and outsider.user_id in body["error"]
    oid = await openid_token(homeserver, member)
    status, body = await _login(widget_bridge, "priv", {"access_token": oid["access_token"],
                                                       "matrix_server_name": oid["matrix_server_name"]})
    assert status == 200 and body["role"] == "listener"


async def test_a_user_a_moderator_removed_cannot_sign_in(homeserver, widget_bridge) -> None:
    removed = homeserver.register(unique_localpart("removed"), secrets.token_urlsafe(12))
    await widget_bridge.open("rm", public=True)
    status, _ = await widget_bridge.control("PUT", "/spaces/rm/roles",
                                            {"roles": {}, "removed": [removed.user_id]})
    assert status == 200
    oid = await openid_token(homeserver, removed)
    status, body = await _login(widget_bridge, "rm", {"access_token": oid["access_token"],
                                                     "matrix_server_name": oid["matrix_server_name"]})
    assert status == 403 and body["error"] == "removed from this space by a moderator"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_the_page_signs_in_inside_a_widget_host(homeserver, widget_bridge, browser) -> None:  # noqa: F811
    """A stand-in for Element: a parent page that embeds the space page as a widget and
    answers its widget-API requests with a real OpenID token from Synapse."""
    import asyncio
    import json

    from aiohttp import web

    user = homeserver.register(unique_localpart("widget"), secrets.token_urlsafe(12))
    await widget_bridge.open("wid3", public=True, roles={user.user_id: "speaker"})
    creds = await openid_token(homeserver, user)

    async def parent(request: web.Request) -> web.Response:
        page = f"""<!doctype html><iframe id="w" allow="microphone"
          src="{widget_bridge.url}/spaces/wid3?widget=1&widgetId=w1&parentUrl={request.url}"></iframe>
          <script>
          const creds = {json.dumps(creds)};
          window.addEventListener("message", (ev) => {{
            const m = ev.data || {{}};
            if (m.api === "fromWidget" && m.action === "get_openid") {{
              ev.source.postMessage({{...m, response: {{state: "allowed", ...creds}}}}, "*");
            }}
          }});
          document.getElementById("w").onload = () => document.getElementById("w").contentWindow
            .postMessage({{api: "toWidget", widgetId: "w1", requestId: "cap1", action: "capabilities",
                          data: {{}}}}, "*");
          </script>"""
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", parent)
    runner, port = await serve_on_loopback(app)
    try:
        await browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        stage = widget_bridge.stage("wid3")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(c.user_id == user.user_id for c in stage.clients.values()):
            assert loop.time() < deadline, "the widget page never connected as the Matrix user"
            await asyncio.sleep(0.1)
        client = next(c for c in stage.clients.values() if c.user_id == user.user_id)
        assert stage.role_of(client) == "speaker"
    finally:
        await runner.cleanup()


# -- the endpoint is anonymous: it must not become a network scanner ---------------------


async def _bridge(tmp_path, **options):
    return await run_bridge(make_settings(tmp_path, **options))


async def _stop(running) -> None:
    await running.session.close()
    await running.runner.cleanup()


async def test_every_failed_check_gets_the_same_answer_and_the_log_says_why(tmp_path, caplog) -> None:
    """IP literals, names that resolve to loopback, closed ports, plain-HTTP ports and a
    service that accepts but never answers: one status and one body for the caller; the
    reasons (naming the space) only in the log."""
    import logging

    from aiohttp import web

    from bridge import openid

    async def userinfo(request: web.Request) -> web.Response:
        return web.json_response({"sub": "@x:localhost"})

    plain = web.Application()  # a plain-HTTP service on loopback that would say yes
    plain.router.add_get("/{tail:.*}", userinfo)
    runner, plain_port = await serve_on_loopback(plain)
    silent_peers: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_peers.append(writer)  # held open, never answered

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    caplog.set_level(logging.INFO, logger="bridge.app")
    strict = await _bridge(tmp_path / "strict")
    lenient = await _bridge(tmp_path / "lenient", openid_allow_private_networks=True,
                            openid_timeout_seconds=1.0)
    answers = []
    try:
        for running in (strict, lenient):
            await running.open("scan", public=True)
        cases = [(strict, name) for name in ("127.0.0.1", "127.0.0.1:8008", "[::1]:8448", "8.8.8.8",
                                               "localhost", "localhost:1", f"localhost:{plain_port}")]
        cases += [(lenient, "localhost:1"), (lenient, f"localhost:{plain_port}"), (lenient, "127.0.0.1"),
                  (lenient, f"localhost:{silent_port}")]
        for running, name in cases:
            status, body = await _login(running, "scan", {"access_token": "a-token-from-a-stranger",
                                                           "matrix_server_name": name})
            answers.append((name, status, body))
    finally:
        await _stop(strict)
        await _stop(lenient)
        await runner.cleanup()
        for writer in silent_peers:
            writer.transport.abort()
        silent.close()
    assert silent_peers, "the silent service was reached"
    assert {(status, body["error"]) for _, status, body in answers} == {(401, openid.GENERIC_ERROR)}, answers
    assert all(set(body) == {"error"} for _, _, body in answers)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(answers) and all(line.startswith("space scan:") for line in refusals)
    assert any("IP literal" in line for line in refusals)
    assert any("not a public address" in line for line in refusals)
    assert any("ClientConnectorError" in line for line in refusals)  # the closed port, when allowed
    assert any("no answer within 1s" in line for line in refusals)  # the silent service
    assert not any("a-token-from-a-stranger" in line for line in refusals)


async def test_a_real_token_for_an_unmapped_loopback_server_is_refused(homeserver, tmp_path) -> None:
    """Without the bot's openid_homeservers mapping, "localhost" is just a name that
    resolves to loopback: not reachable through /openid."""
    user = homeserver.register(unique_localpart("unmapped"), secrets.token_urlsafe(12))
    oid = await openid_token(homeserver, user)
    running = await _bridge(tmp_path)
    try:
        await running.open("unmapped", public=True)
        status, body = await _login(running, "unmapped", {"access_token": oid["access_token"],
                                                         "matrix_server_name": oid["matrix_server_name"]})
    finally:
        await _stop(running)
    assert status == 401 and body == {"error": "could not verify your Matrix identity"}


@pytest.mark.parametrize("name", ["", "a b", "x" * 300, "host:99999", "[::1", "-bad-.org"])
async def test_a_malformed_server_name_is_400_naming_the_field(bridge, name) -> None:
    await bridge.open("malformed", public=True)
    status, body = await _login(bridge, "malformed", {"access_token": "t", "matrix_server_name": name})
    assert status == 400 and body["field"] == "matrix_server_name"


async def test_sign_ins_are_rate_limited_per_address_and_overall(tmp_path) -> None:
    running = await _bridge(tmp_path, openid_attempts_per_address_per_minute=2, openid_attempts_per_minute=3)
    body = {"access_token": "t", "matrix_server_name": "127.0.0.1"}
    try:
        await running.open("busy", public=True)
        statuses = [(await _login(running, "busy", body))[0] for _ in range(3)]
        assert statuses == [401, 401, 429]
        async with running.session.post(f"{running.url}/spaces/busy/openid", json=body) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"] == "too many sign-in attempts; try again later"
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as http:  # another address: one left overall
            for expected in (401, 429):
                async with http.post(f"{running.url}/spaces/busy/openid", json=body) as resp:
                    assert resp.status == expected
    finally:
        await _stop(running)


def test_server_names_and_public_addresses() -> None:
    import ipaddress

    from bridge.openid import ServerNameError, is_public, parse_server_name

    assert parse_server_name("matrix.org") == ("matrix.org", None, None)
    assert parse_server_name("example.org:8448") == ("example.org", 8448, None)
    assert parse_server_name("1.2.3.4:80")[2] == ipaddress.IPv4Address("1.2.3.4")
    assert parse_server_name("[2001:db8::1]:8448")[1:] == (8448, ipaddress.IPv6Address("2001:db8::1"))
    for bad in ("", "exa mple.org", "example.org:0", "example.org:", "a..b", "[zz]", "x" * 256, "a_b.org"):
        with pytest.raises(ServerNameError):
            parse_server_name(bad)
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "100.64.0.1",
                    "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"):
        assert not is_public(ipaddress.ip_address(private)), private
    for public in ("8.8.8.8", "2606:4700:4700::1111"):
        assert is_public(ipaddress.ip_address(public))


async def test_the_bot_tells_the_bridge_its_homeserver(homeserver, tmp_path) -> None:
    """PUT /control/v1/openid/homeservers: after it, the bot's users sign in; bad maps and
    callers without the secret are refused and change nothing."""
    user = homeserver.register(unique_localpart("told"), secrets.token_urlsafe(12))
    running = await _bridge(tmp_path)
    try:
        await running.open("told", public=True)

        async def sign_in() -> tuple[int, dict]:
            oid = await openid_token(homeserver, user)
            return await _login(running, "told", {"access_token": oid["access_token"],
                                                  "matrix_server_name": oid["matrix_server_name"]})

        assert (await sign_in())[0] == 401
        mapping = {homeserver.server_name: homeserver.base_url}
        status, body = await running.control("PUT", "/openid/homeservers", {"homeservers": mapping})
        assert (status, body) == (200, {"homeservers": mapping})
        status, body = await sign_in()
        assert status == 200 and body["user_id"] == user.user_id
        for bad in ({"homeservers": {"a b": "https://x.org"}}, {"homeservers": {"x.org": "gopher://x"}},
                    {"homeservers": "x.org"}, {}):
            status, body = await running.control("PUT", "/openid/homeservers", bad)
            assert status == 400 and body["field"] == "homeservers", (bad, body)
        status, _ = await running.control("PUT", "/openid/homeservers", {"homeservers": {}}, secret=None)
        assert status == 401
        status, body = await sign_in()
        assert status == 200 and body["user_id"] == user.user_id
    finally:
        await _stop(running)


async def test_the_operators_entry_wins_over_the_bots(homeserver, tmp_path) -> None:
    user = homeserver.register(unique_localpart("op"), secrets.token_urlsafe(12))
    running = await _bridge(tmp_path, openid_homeservers=((homeserver.server_name, "http://127.0.0.1:1"),))
    try:
        await running.open("op", public=True)
        status, body = await running.control("PUT", "/openid/homeservers",
                                             {"homeservers": {homeserver.server_name: homeserver.base_url}})
        assert status == 200 and body["homeservers"] == {homeserver.server_name: "http://127.0.0.1:1"}
        oid = await openid_token(homeserver, user)
        status, _ = await _login(running, "op", {"access_token": oid["access_token"],
                                                 "matrix_server_name": oid["matrix_server_name"]})
        assert status == 401  # checked at the operator's (here, wrong) URL, not the bot's
    finally:
        await _stop(running)


async def test_a_known_homeserver_opens_no_door_to_its_host_for_anyone_else(homeserver, tmp_path, caplog) -> None:
    """Knowing example.org's homeserver at http://localhost:PORT lets tokens of example.org
    be checked there, and nothing more: a caller naming "localhost:<another port>" (or
    any name) still goes through discovery's public-only fence, so the plain service on
    loopback that would say yes is never reached. A known URL that fails falls back to
    discovery, and the log says both."""
    import logging

    from aiohttp import web

    asked: list[str] = []

    async def userinfo(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"sub": "@x:localhost"})

    plain = web.Application()
    plain.router.add_get("/{tail:.*}", userinfo)
    runner, plain_port = await serve_on_loopback(plain)
    caplog.set_level(logging.INFO, logger="bridge.app")
    running = await _bridge(tmp_path, openid_homeservers=(
        ("example.org", homeserver.base_url.replace("127.0.0.1", "localhost")),
        ("gone.example.org", "http://127.0.0.1:1"), ("127.0.0.1:9", "http://127.0.0.1:1")))
    try:
        await running.open("door", public=True)
        for name in (f"localhost:{plain_port}", "localhost", "gone.example.org", "127.0.0.1:9"):
            status, body = await _login(running, "door", {"access_token": "a-stranger's-token",
                                                         "matrix_server_name": name})
            assert (status, body) == (401, {"error": "could not verify your Matrix identity"}), name
    finally:
        await _stop(running)
        await runner.cleanup()
    assert asked == []
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    for name in (f"localhost:{plain_port}", "localhost"):
        said = [line for line in refusals if f"(server {name})" in line]
        assert len(said) == 1 and "not a public address" in said[0], said  # fenced, not connected
    fell_back = [line for line in refusals if "gone.example.org" in line]
    assert fell_back and "http://127.0.0.1:1 could not be reached" in fell_back[0]
    assert "then by discovery" in fell_back[0]
    literal = [line for line in refusals if "(server 127.0.0.1:9)" in line]
    assert len(literal) == 1 and literal[0].count("then by discovery") == 1 and "IP literal" in literal[0]
