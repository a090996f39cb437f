"""The bot's side of the page's faces (bot/profiles.py), with the homeserver and the bridge
stood in for: calls are split to fit the bridge's body limit, long names are cut, one
person's failure costs only their face, and a bridge older than 1.4 is asked once."""

from __future__ import annotations

import json

from bot.bridge_api import BridgeError, InMemoryBridge
from bot.matrix.client import MatrixError
from bot.profiles import PER_CALL, PER_CALL_BYTES, PageProfiles, batches
from tests.support.images import face_png


class Homeserver:
    """Profiles by user id: (name, mxc) or an exception to raise."""

    def __init__(self, profiles: dict) -> None:
        self.profiles = profiles
        self.reads: list[str] = []

    async def profile(self, user_id: str):
        self.reads.append(user_id)
        found = self.profiles[user_id]
        if isinstance(found, Exception):
            raise found
        return found

    async def thumbnail(self, mxc: str, size: int) -> bytes:
        return face_png((10, 200, 90), 32)


class OldBridge(InMemoryBridge):
    """A 1.3 bridge: it has no such routes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def set_people(self, space_id, people):
        self.calls += 1
        raise BridgeError("bridge refused PUT: 404 Not Found", "Not Found", status=404)

    async def put_avatar(self, avatar_id, data):
        self.calls += 1
        raise BridgeError("bridge refused PUT: 404 Not Found", "Not Found", status=404)


def test_calls_are_split_by_count_and_by_size() -> None:
    few = {f"@u{i}:x": {"name": "A", "avatar": None} for i in range(PER_CALL * 2 + 1)}
    assert [len(b) for b in batches(few)] == [PER_CALL, PER_CALL, 1]
    wide = {f"@w{i}:x": {"name": "名" * 256, "avatar": "a" * 64} for i in range(60)}
    split = batches(wide)
    assert sum(len(b) for b in split) == 60 and len(split) > 1
    assert all(len(json.dumps({"people": b})) <= PER_CALL_BYTES + 100 for b in split)
    assert batches({}) == []


async def test_names_are_cut_and_a_failed_read_costs_only_that_face() -> None:
    bridge = InMemoryBridge()
    await bridge.open_stage("s", "t", public=True)
    home = Homeserver({"@long:x": (" " + "n" * 400 + " ", "mxc://x/face"),
                       "@gone:x": MatrixError("404 no such user"),
                       "@broken:x": ConnectionResetError("reset by peer"),
                       "@ok:x": ("Ok", None)})
    profiles = PageProfiles(home, bridge)
    profiles.want("s", ["@long:x", "@gone:x", "@broken:x", "@ok:x", "@" + "x" * 300])
    await profiles.idle()
    people = bridge.stages["s"].people
    assert people["@long:x"]["name"] == "n" * 256 and people["@long:x"]["avatar"] in bridge.avatars
    assert people["@gone:x"] == {"name": None, "avatar": None}
    assert people["@broken:x"] == {"name": None, "avatar": None}
    assert people["@ok:x"] == {"name": "Ok", "avatar": None}
    assert len(people) == 4  # the over-long user id is not sent
    # fresh profiles are not read again; the task is gone once done
    profiles.want("s", ["@ok:x"])
    await profiles.idle()
    assert home.reads.count("@ok:x") == 1 and not profiles._tasks


async def test_a_bridge_older_than_1_4_is_asked_once_until_it_restarts() -> None:
    bridge = OldBridge()
    home = Homeserver({"@a:x": ("A", "mxc://x/a"), "@b:x": ("B", None)})
    profiles = PageProfiles(home, bridge)
    profiles.want("s", ["@a:x"])
    await profiles.idle()
    asked = bridge.calls
    assert asked == 1  # the avatar's 404 says it all: no people call after it
    profiles.want("s", ["@b:x"])
    await profiles.idle()
    assert bridge.calls == asked
    profiles.bridge_restarted()
    profiles.want("s", ["@b:x"])
    await profiles.idle()
    assert bridge.calls == asked + 1
