"""Files and folders only the bot's own account may read.

The SQLite database holds the bot's access token, the nio store its encryption keys, the
log what people typed, the recordings what they said. ``python -m bot`` sets the umask to
0o077 so that everything it creates is private; these helpers make the important paths
private also when Chorus is embedded in another program (whose umask may be 0o022), and
tighten files an older version left world-readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
#: what ``python -m bot`` and ``python -m bridge`` set first: new files 0600, new folders 0700
PRIVATE_UMASK = 0o077


def _chmod(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except OSError as exc:  # someone else's file, a read-only mount…: say so, carry on
        log.warning("could not make %s private (mode %o): %s", path, mode, exc.strerror or exc)


def private_dir(path: str | os.PathLike, *, tighten: bool = True) -> Path:
    """Create the folder ``path`` (and any missing parents) with mode 0700.

    With ``tighten`` (for folders that are Chorus's own: the nio store, recordings) an
    existing folder is set to 0700 too; without it (the folder a database or log file is
    in, which may be a home folder or /tmp) only the folders created here are.
    """
    p = Path(path)
    missing: list[Path] = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        d.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        _chmod(d, PRIVATE_DIR)  # mkdir's mode is cut by the umask only, but be sure
    if tighten and not missing and p.is_dir():
        _chmod(p, PRIVATE_DIR)
    return p


def private_file(path: str | os.PathLike) -> Path:
    """Make ``path`` a 0600 file: created empty when missing (its missing folders 0700),
    tightened when it exists. Its content is never touched."""
    p = Path(path)
    private_dir(p.parent, tighten=False)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    os.close(fd)
    _chmod(p, PRIVATE_FILE)
    return p


def tighten_file(path: str | os.PathLike) -> None:
    """Set an existing file to 0600; nothing when it does not exist."""
    p = Path(path)
    if p.exists():
        _chmod(p, PRIVATE_FILE)
