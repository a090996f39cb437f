"""Pytest plugin: a real local Synapse homeserver and Matrix test users.

Load it from the root conftest with ``pytest_plugins = ["tests.support.synapse"]``.

Fixtures:
- ``homeserver`` (session): a started ``LocalHomeserver``; its log is
  ``homeserver.data_dir / "homeserver.log"``.
- ``make_user`` (function): ``alice = await make_user("alice")`` registers a user with a
  unique localpart (``alice_3f9a1c``) and returns a synced ``MatrixTestUser``; clients
  are closed at teardown.

Tests that use ``homeserver`` (directly or through ``make_user``) are marked ``synapse``
automatically, so ``-m "not synapse"`` leaves them out.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from bot.local_homeserver import LocalHomeserver
from tests.support.matrix_user import MatrixTestUser, unique_localpart

MakeUser = Callable[..., Awaitable[MatrixTestUser]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "homeserver" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.synapse)


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHomeserver]:
    if importlib.util.find_spec("synapse") is None:
        pytest.skip("matrix-synapse is not installed (pip install -e '.[dev]')")
    server = LocalHomeserver(tmp_path_factory.mktemp("synapse"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_user(homeserver: LocalHomeserver) -> AsyncIterator[MakeUser]:
    users: list[MatrixTestUser] = []

    async def make(name: str = "user", *, admin: bool = False, displayname: str | None = None) -> MatrixTestUser:
        registered = homeserver.register(
            unique_localpart(name),
            secrets.token_urlsafe(12),
            admin=admin,
            displayname=displayname,
        )
        user = await MatrixTestUser.connect(
            homeserver.base_url,
            registered.user_id,
            registered.access_token,
            registered.device_id,
        )
        user.password = registered.password
        users.append(user)
        return user

    yield make
    for user in users:
        await user.close()
