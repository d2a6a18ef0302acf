"""A Store in one SQLite file (WAL mode), driven from one dedicated thread off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from liaison.errors import StorageError
from liaison.storage.base import (
    DEFAULT_MAX_BATCH,
    EVENT_COLUMNS,
    Query,
    StoredEvent,
    event_row,
    prefix_upper_bound,
)
from liaison.storage.permissions import create_private_file

T = TypeVar("T")

# The schema this code writes. _MIGRATIONS[v] upgrades a database from version v to v + 1, so a
# file from any older release is brought up to date on open; a newer file is refused.
SCHEMA_VERSION = 1

# Rows per transaction. put_many splits larger batches into transactions of this many rows, each
# its own job on the store's thread, so a query queued meanwhile runs between them. Same value and
# reasoning as the writer's batch (storage.base.DEFAULT_MAX_BATCH).
DEFAULT_BATCH_MAX = DEFAULT_MAX_BATCH

# How long a statement waits for a lock held by another process (a backup, an admin command
# reading the file) before failing. Our own access is serialised on one thread and never waits.
DEFAULT_BUSY_TIMEOUT_MS = 5_000

# History rows deleted per transaction by prune. Retention after a long outage may remove
# millions of rows; 10,000 at a time (tens of milliseconds) lets writes and queries interleave.
DEFAULT_PRUNE_CHUNK = 10_000

# Columns of both tables after seq, in the order of StoredEvent's fields. lat, lon and hae may be
# NULL: SQLite stores a NaN float as NULL, and we read NULL back as NaN.
_COLUMNS = EVENT_COLUMNS
_ALL = ", ".join(("seq", *_COLUMNS))
_PLACEHOLDERS = ", ".join("?" for _ in range(len(_COLUMNS) + 1))

_COLUMN_DEFS = """
    uid TEXT NOT NULL,
    type TEXT NOT NULL,
    how TEXT NOT NULL,
    time INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stale INTEGER NOT NULL,
    lat REAL,
    lon REAL,
    hae REAL,
    callsign TEXT,
    sender TEXT NOT NULL,
    sender_groups TEXT NOT NULL,
    received INTEGER NOT NULL,
    xml BLOB NOT NULL,
    label TEXT
"""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema. seq is the history rowid; AUTOINCREMENT keeps it from ever being
    # reused after prune deletes the newest rows, so seq stays monotonic for the file's lifetime.
    # sender_groups is a JSON array of strings, sorted. latest keeps a full copy of each row
    # (not a pointer into history) so retention can prune history without touching the picture.
    (
        f"CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMN_DEFS})",
        "CREATE INDEX history_uid ON history (uid, time)",
        "CREATE INDEX history_time ON history (time)",
        "CREATE INDEX history_type ON history (type)",
        "CREATE INDEX history_received ON history (received)",
        f"CREATE TABLE latest (seq INTEGER NOT NULL, {_COLUMN_DEFS}, PRIMARY KEY (uid))",
        "CREATE INDEX latest_stale ON latest (stale)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_INSERT_HISTORY = f"INSERT INTO history ({_ALL}) VALUES ({_PLACEHOLDERS})"
# The upsert applies rows in order, so within one batch a newer event wins and an older one
# (by `time`) leaves the current latest alone; equal time counts as "not older" and replaces.
_UPSERT_LATEST = (
    f"INSERT INTO latest ({_ALL}) VALUES ({_PLACEHOLDERS}) ON CONFLICT (uid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ("seq", *_COLUMNS) if c != "uid")
    + " WHERE excluded.time >= latest.time"
)
# Contacts (a-* with a callsign) first, then oldest first. substr, not LIKE: LIKE ignores case.
_SELECT_LATEST = (
    f"SELECT {_ALL} FROM latest WHERE stale > ? "
    "ORDER BY (substr(type, 1, 2) = 'a-' AND callsign IS NOT NULL) DESC, time, seq"
)


class SqliteStore:
    """A :class:`~liaison.storage.base.Store` in a SQLite database file. Create with :meth:`open`.

    Every sqlite3 call runs on one thread owned by the store: a ThreadPoolExecutor with a single
    worker. We chose it over ``asyncio.to_thread`` plus a lock because a sqlite3 connection
    belongs to the thread that made it (``check_same_thread``), the single worker runs jobs in
    submission order (a query sent after a write sees the write, close runs after everything
    before it), and the store does not compete with other code for the loop's default executor.
    """

    def __init__(
        self,
        *,
        path: Path,
        executor: ThreadPoolExecutor,
        batch_max: int,
        prune_chunk: int,
    ) -> None:
        """Private: use :meth:`open`, which connects and migrates before handing the store out."""
        self._path = path
        self._executor = executor
        self._batch_max = batch_max
        self._prune_chunk = prune_chunk
        self._closed = False
        # Touched only on the store's thread.
        self._conn: sqlite3.Connection | None = None
        self._next_seq = 1

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        prune_chunk: int = DEFAULT_PRUNE_CHUNK,
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path``, in WAL mode, migrated to the
        current schema. Raises StorageError if it cannot be opened, read or written."""
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, got {batch_max}")
        if prune_chunk < 1:
            raise ValueError(f"prune_chunk must be at least 1, got {prune_chunk}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liaison-sqlite")
        store = cls(path=path, executor=executor, batch_max=batch_max, prune_chunk=prune_chunk)
        try:
            await store._run(store._open_sync, busy_timeout_ms)
        except BaseException:
            # Failed or cancelled: close the connection if it was made, on its own thread, and
            # let the worker exit once that is done.
            store._closed = True
            executor.submit(store._abandon_sync)
            executor.shutdown(wait=False)
            raise
        return store

    # --- the Store interface ---------------------------------------------------------------

    async def put_many(self, events: Sequence[StoredEvent]) -> None:
        self._check_open()
        cancelled: asyncio.CancelledError | None = None
        try:
            for i in range(0, len(events), self._batch_max):
                try:
                    await self._run(self._put_sync, events[i : i + self._batch_max])
                except asyncio.CancelledError as exc:
                    # A started put_many completes (the Store contract): write the remaining
                    # chunks, then let the cancellation go on. It is never swallowed, even if a
                    # later chunk fails.
                    cancelled = exc
        finally:
            if cancelled is not None:
                raise cancelled

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        return await self._run(self._select_sync, _SELECT_LATEST, (now_ms,))

    async def latest_by_uid(self, uid: str) -> StoredEvent | None:
        rows = await self._run(
            self._select_sync, f"SELECT {_ALL} FROM latest WHERE uid = ?", (uid,)
        )
        return rows[0] if rows else None

    async def history(self, query: Query) -> list[StoredEvent]:
        sql, params = _history_sql(query)
        return await self._run(self._select_sync, sql, params)

    async def delete_uid(self, uid: str) -> None:
        await self._run(self._write_sync, "DELETE FROM latest WHERE uid = ?", (uid,))

    async def prune(self, older_than_ms: int) -> int:
        total = 0
        while True:
            n = await self._run(
                self._write_sync,
                "DELETE FROM history WHERE seq IN "
                "(SELECT seq FROM history WHERE received < ? LIMIT ?)",
                (older_than_ms, self._prune_chunk),
            )
            total += n
            if n < self._prune_chunk:
                break
        await self._run(
            self._write_sync,
            "DELETE FROM latest WHERE received < ? AND stale <= ?",
            (older_than_ms, older_than_ms),
        )
        return total

    async def close(self) -> None:
        if self._closed:
            return
        # Refuse new work; jobs already submitted run first, since the worker is FIFO.
        self._closed = True
        try:
            await self._submit(self._close_sync)
        finally:
            # The worker is idle now (close was its last job), so this join is immediate.
            self._executor.shutdown(wait=True)

    # --- running jobs on the store's thread --------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"sqlite store {self._path} is closed")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return await self._submit(fn, *args)

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        fut = asyncio.wrap_future(self._executor.submit(self._translated, fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The job is already on the thread's queue and will run whatever we do. Wait for it,
            # so a caller that sees CancelledError knows the work is done (the Store contract for
            # put_many), then let the cancellation go on. The wait is one job long.
            while not fut.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([fut])
            raise

    def _translated(self, fn: Callable[..., T], *args: Any) -> T:
        # The boundary with the driver: sqlite3 errors become StorageError (errors.py). An int
        # beyond SQLite's 64 bits raises OverflowError while binding; that too is a failed write.
        try:
            return fn(*args)
        except (sqlite3.Error, OverflowError) as exc:
            raise StorageError(f"sqlite {self._path}: {exc}") from exc

    # --- jobs (run on the store's thread only) ------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"sqlite store {self._path} is not open")
        return self._conn

    def _open_sync(self, busy_timeout_ms: int) -> None:
        # 0600 before SQLite opens it: its -wal and -shm files take the same mode.
        create_private_file(self._path)
        # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves.
        conn = sqlite3.connect(self._path, timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"sqlite {self._path}: cannot use WAL mode (got {mode!r})")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a crash of the process
            # loses nothing, a power cut may lose the last commits but never corrupts the file
            # (https://www.sqlite.org/pragma.html#pragma_synchronous).
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(conn, self._path)
            row = conn.execute(
                "SELECT max(s) FROM ("
                " SELECT seq AS s FROM sqlite_sequence WHERE name = 'history'"
                " UNION ALL SELECT max(seq) FROM history"
                " UNION ALL SELECT max(seq) FROM latest)"
            ).fetchone()
            self._next_seq = (row[0] or 0) + 1
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _put_sync(self, events: Sequence[StoredEvent]) -> None:
        conn = self._connection()
        first = self._next_seq
        rows = [_to_row(first + i, ev) for i, ev in enumerate(events)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_HISTORY, rows)
            conn.executemany(_UPSERT_LATEST, rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._next_seq = first + len(rows)

    def _write_sync(self, sql: str, params: Sequence[object]) -> int:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = conn.execute(sql, params).rowcount
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return count

    def _select_sync(self, sql: str, params: Sequence[object]) -> list[StoredEvent]:
        return [_from_row(row) for row in self._connection().execute(sql, params)]

    def _close_sync(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        try:
            # Fold the WAL back into the database file and empty it, so the file on disk is
            # complete by itself (a copy taken after shutdown needs no -wal companion).
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def _abandon_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # Only if a transaction is open: a failed BEGIN opens none, and some errors (disk full, I/O)
    # make SQLite roll back by itself. A failed ROLLBACK must not hide the error that caused it.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"sqlite {path}: schema version {version} is newer than this Liaison "
                f"understands ({SCHEMA_VERSION})"
            )
        for step in _MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _to_row(seq: int, ev: StoredEvent) -> tuple[object, ...]:
    return event_row(seq, ev, json.dumps(sorted(ev.sender_groups)))


def _float(value: float | None) -> float:
    return math.nan if value is None else value


def _from_row(row: Any) -> StoredEvent:
    (seq, uid, type_, how, time, start, stale, lat, lon, hae) = row[:10]
    (callsign, sender, groups, received, xml, label) = row[10:]
    return StoredEvent(
        seq=seq,
        uid=uid,
        type=type_,
        how=how,
        time=time,
        start=start,
        stale=stale,
        lat=_float(lat),
        lon=_float(lon),
        hae=_float(hae),
        callsign=callsign,
        sender=sender,
        sender_groups=frozenset(json.loads(groups)),
        received=received,
        xml=xml,
        label=label,
    )


def _history_sql(query: Query) -> tuple[str, list[object]]:
    """SQL and parameters selecting exactly the rows :meth:`Query.matches` accepts."""
    where: list[str] = []
    params: list[object] = []
    if query.uid is not None:
        where.append("uid = ?")
        params.append(query.uid)
    if query.type_prefix:
        where.append("type >= ?")
        params.append(query.type_prefix)
        bound = prefix_upper_bound(query.type_prefix)
        if bound is not None:
            where.append("type < ?")
            params.append(bound)
    if query.callsign is not None:
        where.append("callsign = ?")
        params.append(query.callsign)
    if query.since is not None:
        where.append("time >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("time < ?")
        params.append(query.until)
    if query.bbox is not None:
        min_lon, min_lat, max_lon, max_lat = query.bbox
        where.append("lat BETWEEN ? AND ?")
        params += [min_lat, max_lat]
        if min_lon <= max_lon:
            where.append("lon BETWEEN ? AND ?")
            params += [min_lon, max_lon]
        else:  # the box crosses the antimeridian
            where.append("(lon >= ? OR lon <= ?)")
            params += [min_lon, max_lon]
    sql = f"SELECT {_ALL} FROM history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, seq DESC LIMIT ?"
    params.append(query.limit)
    return sql, params
