"""``/metrics`` for every worker of ``liaison serve --workers N`` (docs/deployment.md).

The workers share the HTTP port (SO_REUSEPORT), so a scrape reaches whichever worker the kernel
picks. Each worker therefore also serves its own metrics text on a Unix stream socket,
``DATA_DIR/run/metrics-wI.sock`` (the folder 0700, the socket 0600): on connect it writes the
text its ``/metrics`` renders for itself and closes. The worker a scrape reaches reads every
other worker's socket (each found by listing ``DATA_DIR/run/metrics-w*.sock``), all at once,
each within :data:`READ_S` seconds (connect and read) and :data:`MAX_BYTES` bytes, and answers
with :func:`liaison.metrics_merge.merge_worker_texts`: every sample labelled ``worker="wI"``,
and ``liaison_worker_up{worker="wI"}`` 0 for a worker that did not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from liaison.errors import StorageError
from liaison.metrics_merge import merge_worker_texts

log = logging.getLogger(__name__)

RUN_DIR = "run"
SOCKET_GLOB = "metrics-w*.sock"
_SOCKET_NAME = re.compile(r"metrics-w([1-9][0-9]{0,5})\.sock")
# Seconds a scrape waits for one other worker (connect and read); the workers are read at once.
READ_S = 2.0
# Most bytes read from one worker: past it, that worker is reported down.
MAX_BYTES = 16 * 1024 * 1024
# Seconds a worker gives a reader to take its text before it closes the connection.
WRITE_S = 2.0
# The longest path a Unix socket may bind to on Linux (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
_DIR_MODE = 0o700
_SOCKET_MODE = 0o600


def worker_name(worker: int) -> str:
    return f"w{worker}"


def socket_path(data_dir: Path, worker: int) -> Path:
    return data_dir / RUN_DIR / f"metrics-w{worker}.sock"


def socket_path_problem(data_dir: Path, workers: int) -> str | None:
    """Why the workers' sockets cannot be bound under ``data_dir``, or None (the path as the
    workers bind it: relative when ``data_dir`` is)."""
    longest = socket_path(data_dir, workers)
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
        return (
            f"the metrics socket {longest} is longer than the {MAX_SOCKET_PATH} bytes a Unix "
            "socket path may have: choose a shorter server.data_dir"
        )
    return None


def remove_sockets(data_dir: Path) -> int:
    """Remove every ``metrics-w*.sock`` left under ``DATA_DIR/run`` (the supervisor, before it
    starts the workers: a socket of a worker that no longer exists would be reported down on
    every scrape). Returns how many were removed."""
    removed = 0
    folder = data_dir / RUN_DIR
    if not folder.is_dir():
        return 0
    for path in folder.glob(SOCKET_GLOB):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
                removed += 1
    return removed


class MetricsSocket:
    """A worker's own metrics on ``DATA_DIR/run/metrics-wI.sock`` (a lifetimes Component)."""

    name = "metrics-socket"

    def __init__(self, data_dir: Path, worker: int, render: Callable[[], str]) -> None:
        self.path = socket_path(data_dir, worker)
        self._render = render
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def bind(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(mode=_DIR_MODE, exist_ok=True)
            os.chmod(folder, _DIR_MODE)
            with contextlib.suppress(FileNotFoundError):
                # A socket left by this worker's previous run (killed, say): nobody serves it.
                if stat.S_ISSOCK(self.path.lstat().st_mode):
                    self.path.unlink()
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            self._inode = self.path.stat().st_ino
            # The folder is 0700 already; the socket's own mode says the same.
            os.chmod(self.path, _SOCKET_MODE)
        except OSError as exc:
            await self.close()
            raise StorageError(f"metrics socket {self.path}: {exc.strerror or exc}") from exc

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        inode, self._inode = self._inode, None
        if inode is not None:
            # Only our own socket: never one a later run of this worker has bound since.
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_ino == inode:
                    self.path.unlink()

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WRITE_S):
                writer.write(self._render().encode("utf-8"))
                await writer.drain()
        except (TimeoutError, OSError) as exc:
            log.debug("metrics socket: reader went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def read_worker(path: Path, *, within: float = READ_S, limit: int = MAX_BYTES) -> str | None:
    """The text a worker's socket writes, or None when it did not answer within ``within``
    seconds, wrote more than ``limit`` bytes or text that is not UTF-8."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(str(path))
            chunks: list[bytes] = []
            size = 0
            while chunk := await reader.read(65536):
                size += len(chunk)
                if size > limit:
                    log.warning("metrics socket %s: more than %d bytes, left out", path, limit)
                    return None
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8")
    except TimeoutError:
        log.warning("metrics socket %s: no answer within %.1f s, left out", path, within)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("metrics socket %s: %s, left out", path, exc)
        return None
    finally:
        if writer is not None:
            writer.close()


async def scrape_workers(
    data_dir: Path,
    worker: int,
    own_text: str,
    *,
    within: float = READ_S,
    limit: int = MAX_BYTES,
) -> str:
    """Every worker's metrics as one text: ``own_text`` for ``worker`` and each other worker's
    read from its socket under ``DATA_DIR/run`` (see the module's docstring)."""
    others: dict[str, Path] = {}
    folder = data_dir / RUN_DIR
    for path in folder.glob(SOCKET_GLOB) if folder.is_dir() else ():
        found = _SOCKET_NAME.fullmatch(path.name)
        if found is not None and int(found[1]) != worker:
            others[worker_name(int(found[1]))] = path
    read = await asyncio.gather(
        *(read_worker(p, within=within, limit=limit) for p in others.values())
    )
    texts: dict[str, str | None] = dict(zip(others, read, strict=True))
    texts[worker_name(worker)] = own_text
    # Parsing and rendering several workers' texts is CPU work: off the event loop.
    return await asyncio.to_thread(merge_worker_texts, texts)
