"""Owner-only permissions for the data folder and everything in it.

The data folder holds the event database (directed chat text included), uploaded files, users'
password hashes, the CA key and the audit log: no other local user may read any of it, whatever
the umask the server was started with. Three measures, each enough on its own for new files:

- the ``liaison`` command sets the process umask to :data:`PRIVATE_UMASK` before anything else;
- :func:`secure_data_dir` makes the folder 0700 and, for an install made by an older version or
  under a permissive umask, removes group and other bits from everything already in it (run at
  every start of ``liaison serve`` and by the commands that write into the folder);
- SQLite databases are created 0600 before SQLite opens them (:func:`create_private_file`):
  SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file
  (sqlite.org/src/file/src/os_unix.c, ``findCreateFileMode``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from liaison.errors import StorageError

log = logging.getLogger(__name__)

# The umask the CLI runs under: new files 0600, new folders 0700.
PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
# Bits nobody but the owner may have on anything under the data folder.
_OTHERS = 0o077
# Most entries secure_data_dir visits in one call: a bound on the walk of a huge folder (the
# entries past it keep their mode; the folder itself is 0700, which already keeps others out).
MAX_ENTRIES_FIXED = 1_000_000


def secure_data_dir(data_dir: Path, *, create: bool = True) -> int:
    """Make ``data_dir`` 0700 (creating it when ``create``) and strip group/other permissions
    from everything under it. Symbolic links are not followed. Returns how many entries were
    changed (0 on a folder that was already private)."""
    if not data_dir.exists():
        if not create:
            return 0
        data_dir.mkdir(parents=True, mode=DIR_MODE)
    changed = 0
    if _tighten(data_dir):
        changed += 1
    visited = 0
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            visited += 1
            if visited > MAX_ENTRIES_FIXED:
                log.warning("data folder %s: stopped fixing modes after %d", data_dir, visited)
                return changed
            if _tighten(Path(root) / name):
                changed += 1
    if changed:
        log.warning(
            "data folder %s: removed group/other permissions from %d entries", data_dir, changed
        )
    return changed


def _tighten(path: Path) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _OTHERS:
        return False
    try:
        os.chmod(path, mode & ~_OTHERS)
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc)
        return False
    return True


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist, so whatever opens it next
    (SQLite) keeps it private. An existing file is made 0600. Its folder must exist. Raises
    StorageError when it cannot."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
