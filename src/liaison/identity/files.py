"""Files of the PKI folder: atomic writes, the folder's lock, owner-only modes.

Functions that change files take an exclusive ``flock`` on ``pki/.lock`` so the running server and
a ``liaison`` CLI command cannot interleave their read-modify-write of the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from liaison.errors import PkiError

KEY_FILE_MODE = 0o600

# Certificates and the CRL are not secret, but nothing in the data folder is for other local
# users (storage/permissions.py): owner-only like the rest.
_PUBLIC_FILE_MODE = 0o600

DIR_MODE = 0o700


def atomic_write(path: Path, data: bytes, *, mode: int = _PUBLIC_FILE_MODE) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix.

    The temporary file is created with ``mode`` (not widened by the umask later), fsynced, renamed
    over ``path``, and the directory is fsynced so the rename survives a power cut.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``lock_path`` for the duration of the block.

    Not re-entrant: a second acquisition from the same process on a new descriptor would block.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} is missing: {path}") from None
    except OSError as exc:
        raise PkiError(f"{what} cannot be read: {path}: {exc}") from exc
