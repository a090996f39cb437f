"""Following, tip jars and moderation from chat, on a real homeserver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.core.model import State
from tests.integration.helpers import ask, room_with_bot, space_id_in

ROOT = Path(__file__).resolve().parents[2]


async def test_follow_graph_commands(chorus, make_user) -> None:
    alice, bob = await make_user("alice", displayname="Alice Liddell"), await make_user("bob")
    room = await room_with_bot(alice, chorus.user_id, bob)
    assert "You now follow" in await ask(bob, room, f"!follow {alice.user_id}")
    assert "already follow" in await ask(bob, room, f"!follow {alice.user_id}")
    assert "can't follow yourself" in await ask(alice, room, f"!follow {alice.user_id}")
    followers = await ask(bob, room, f"!followers {alice.user_id}")
    assert "has 1 follower;" in followers and bob.user_id in followers and "hosting needs 600" in followers
    assert f"follows 1 person: {alice.user_id}" in await ask(alice, room, f"!following {bob.user_id}")
    # a display name works as well as an id
    assert "You no longer follow" in await ask(bob, room, "!unfollow Alice Liddell")
    assert "don't follow" in await ask(bob, room, f"!unfollow {alice.user_id}")
    unknown = await ask(bob, room, "!follow @nobody_here:localhost")
    assert "can't find the user @nobody_here:localhost" in unknown
    assert "is not a Matrix user" in await ask(bob, room, "!follow @@@")
    # upper case in a typed id is forgiven (Matrix ids are lower case)
    shouted = "@" + alice.user_id[1:].split(":")[0].upper() + ":" + alice.user_id.split(":", 1)[1]
    assert "You now follow" in await ask(bob, room, f"!follow {shouted}")
    assert "You no longer follow" in await ask(bob, room, f"!unfollow {alice.user_id}")
    assert chorus.store.follower_count(alice.user_id) == 0


async def test_tip_jar_shows_on_space_info(chorus_factory, make_user) -> None:
    chorus = await chorus_factory(hosting={"min_followers": 0})
    host, fan = await make_user("host"), await make_user("fan")
    room = await room_with_bot(host, chorus.user_id, fan)
    assert "Cash App" in await ask(host, room, "!tipjar set cashapp $JaneDoe")
    assert "not a valid Venmo handle" in await ask(host, room, "!tipjar set venmo ab")
    assert "is not one of" in await ask(host, room, "!tipjar set onlyfans x")
    assert chorus.store.tip_jar(host.user_id) == {"cashapp": "JaneDoe"}
    assert "Cash App JaneDoe" in await ask(fan, room, f"!tipjar {host.user_id}")
    sid = space_id_in(await ask(host, room, "!space start Tips welcome"))
    assert "Tip jar: Cash App JaneDoe" in await ask(fan, room, f"!space info {sid}")
    assert "Removed" in await ask(host, room, "!tipjar remove cashapp")
    assert "empty" in await ask(host, room, "!tipjar")


async def test_moderators_gate_hosting_and_police_spaces(chorus_factory, make_user) -> None:
    mod = await make_user("mod")
    chorus = await chorus_factory(moderation={"moderators": [mod.user_id]})
    host, troll = await make_user("host"), await make_user("troll")
    room = await room_with_bot(mod, chorus.user_id, host, troll)

    assert "Only moderators" in await ask(host, room, f"!mod allow-host {host.user_id}")
    assert "needs at least 600 followers" in await ask(host, room, "!space start Mine")
    assert "may host spaces now" in await ask(mod, room, f"!mod allow-host {host.user_id}")
    sid = space_id_in(await ask(host, room, "!space start Mine"))
    await ask(troll, room, f"!space join {sid}")

    assert "Removed" in await ask(mod, room, f"!mod remove {sid} {troll.user_id}")
    assert "cannot rejoin" in await ask(troll, room, f"!space join {sid}")
    assert troll.user_id not in chorus.store.load_space(sid).space.people

    assert "banned" in await ask(mod, room, f"!mod ban {troll.user_id}")
    assert "banned" in await ask(troll, room, "!space start Trolling")
    assert "no longer banned" in await ask(mod, room, f"!mod unban {troll.user_id}")

    assert "has ended" in await ask(mod, room, f"!mod end {sid}")
    assert chorus.store.load_space(sid).space.state is State.ENDED
    assert "Hosting now needs 5 followers (was 600)" in await ask(mod, room, "!mod threshold 5")
    assert "from 0 to 10000000" in await ask(mod, room, "!mod threshold -1")
    assert "may no longer host" in await ask(mod, room, f"!mod deny-host {host.user_id}")
    assert "turned off hosting" in await ask(host, room, "!space start Again")

    imported = await ask(mod, room, f"!mod import-followers {troll.user_id},7 @someone:localhost,3")
    assert "for 2 users" in imported
    assert "Nothing was imported" in await ask(mod, room, "!mod import-followers nobody,abc")
    # the gate uses the larger of the follow graph's count and the imported one
    assert "is live" in await ask(troll, room, "!space start Imported audience")

    audit = await ask(mod, room, "!mod audit 50")
    for action in ("mod.allow-host", "mod.remove", "mod.ban", "mod.unban", "space.end", "mod.threshold",
                   "mod.import-followers"):
        assert action in audit


def test_cli_imports_follower_counts(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    (tmp_path / "config.toml").write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    (tmp_path / "good.csv").write_text("user_id,count\n@a:x.org,900\n")
    (tmp_path / "bad.csv").write_text("@a:x.org,lots\n")
    run = [sys.executable, "-m", "bot", "--config", str(tmp_path / "config.toml"), "import-followers"]
    ok = subprocess.run([*run, str(tmp_path / "good.csv")], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "for 1 users" in ok.stdout
    bad = subprocess.run([*run, str(tmp_path / "bad.csv")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "line 1: count “lots” is not a whole number" in bad.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.csv")], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    from bot.db.engine import make_engine
    from bot.db.store import Store

    assert Store(make_engine(f"sqlite:///{db}")).user("@a:x.org").imported_followers == 900


def test_bad_config_stops_start_up_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[spaces]\nmax_speakerz = 3\n")
    res = subprocess.run([sys.executable, "-m", "bot", "--config", str(tmp_path / "config.toml"), "run"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().endswith("unknown key spaces.max_speakerz (did you mean spaces.max_speakers?)")
    assert len(res.stderr.strip().splitlines()) == 1
