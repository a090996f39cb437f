"""Files with secrets are the bot's alone (issue 13, finding 9): the SQLite database (it
holds the bot's access token) and its -wal/-shm, the log file, and the folders made for
them, are 0600/0700, whether Chorus runs as ``python -m bot`` or embedded in a program
whose umask lets everyone read."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.db.engine import make_engine, upgrade
from bot.files import private_dir, private_file
from bot.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a program that embeds Chorus and lets everyone read what it writes."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_sqlite_database_its_side_files_and_new_folder_are_private(tmp_path, open_umask) -> None:
    db = tmp_path / "var" / "chorus.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        upgrade(engine)  # writes: SQLite makes the -wal and -shm files
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sync_state").scalar()
            side = [Path(f"{db}{s}") for s in ("-wal", "-shm")]
            assert all(p.exists() for p in side), "WAL mode keeps -wal and -shm while connected"
            assert {p.name: mode(p) for p in side} == {p.name: 0o600 for p in side}
        assert mode(db) == 0o600
        assert mode(db.parent) == 0o700
    finally:
        engine.dispose()


def test_an_existing_world_readable_database_is_tightened(tmp_path, open_umask) -> None:
    db = tmp_path / "chorus.db"
    first = make_engine(f"sqlite:///{db}")
    upgrade(first)
    first.dispose()
    db.chmod(0o644)
    folder = mode(tmp_path)
    engine = make_engine(f"sqlite:///{db}")
    try:
        assert mode(db) == 0o600
        with engine.connect() as conn:  # and it still opens, with its tables
            assert conn.exec_driver_sql("SELECT count(*) FROM sync_state").scalar() == 0
        assert mode(tmp_path) == folder
    finally:
        engine.dispose()


def test_the_log_file_is_private(tmp_path, open_umask, restore_logging) -> None:
    log_file = tmp_path / "logs" / "chorus.log"
    configure_logging("INFO", "text", str(log_file))
    logging.getLogger("bot.test").warning("room !r:x: @alice:x did something")
    for h in logging.getLogger().handlers:
        h.flush()
    assert "@alice:x did something" in log_file.read_text(encoding="utf-8")
    assert mode(log_file) == 0o600
    assert mode(log_file.parent) == 0o700


def test_an_existing_log_keeps_its_lines_and_loses_its_readers(tmp_path, open_umask, restore_logging) -> None:
    log_file = tmp_path / "chorus.log"
    log_file.write_text("yesterday\n", encoding="utf-8")
    log_file.chmod(0o644)
    configure_logging("INFO", "json", str(log_file))
    logging.getLogger("bot.test").warning("today")
    for h in logging.getLogger().handlers:
        h.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "yesterday" and '"msg": "today"' in lines[1]
    assert mode(log_file) == 0o600


def test_private_dir_tightens_chorus_own_folders_only_when_asked(tmp_path, open_umask) -> None:
    store = tmp_path / "nio-store"
    store.mkdir(mode=0o755)
    assert mode(private_dir(store)) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    private_dir(shared, tighten=False)
    assert mode(shared) == 0o755
    deep = private_dir(tmp_path / "a" / "b" / "c", tighten=False)
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", deep)] == [0o700] * 3
    f = private_file(shared / "token")
    assert mode(f) == 0o600 and f.read_bytes() == b""


def test_python_m_bot_migrate_writes_a_private_database_and_log(tmp_path) -> None:
    db = tmp_path / "var" / "chorus.db"
    log_file = tmp_path / "var" / "log" / "chorus.log"
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n\n[logging]\nfile = "{log_file}"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "migrate"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "newest schema" in out
    assert mode(db) == 0o600
    assert mode(db.parent) == 0o700
    assert mode(log_file) == 0o600 and mode(log_file.parent) == 0o700
    assert "database schema at head" in log_file.read_text(encoding="utf-8")
