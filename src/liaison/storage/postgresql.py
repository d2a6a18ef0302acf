"""A Store in PostgreSQL with PostGIS, through asyncpg (``liaison serve --storage postgresql://...``).

The same contract as the SQLite store (storage/base.py; tests/unit/storage/test_store_contract.py
runs against both). What differs is where the rows live and how they are found:

- positions also go into a PostGIS ``geometry(Point, 4326)`` column with a GiST index, so a
  history query by bounding box reads only the rows near the box; ``time`` has a b-tree index
  that serves both time ranges and the newest-first order;
- the schema is versioned (``schema_version``) and migrated on open under an advisory lock, so
  several processes opening one database at once migrate it once;
- retention deletes history in batches of ``prune_batch`` rows, one transaction each.

asyncpg is an optional dependency (the ``postgresql`` extra): this module is imported only when
the configured storage is a ``postgresql://`` URL, so the default SQLite path never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from liaison import pg_locks
from liaison.config import redacted_url
from liaison.errors import StorageError
from liaison.storage.base import (
    DEFAULT_MAX_BATCH,
    EVENT_COLUMNS,
    Query,
    StoredEvent,
    event_row,
    prefix_upper_bound,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise StorageError(
        "the PostgreSQL store needs asyncpg: pip install 'liaison[postgresql]'"
    ) from exc

T = TypeVar("T")

# The schema this code writes. _MIGRATIONS[v] upgrades a database from version v to v + 1; a
# database with a newer version is refused, as in the SQLite store.
SCHEMA_VERSION = 3

# URL schemes that select this store (libpq accepts both spellings).
URL_SCHEMES = ("postgresql://", "postgres://")

# Rows per transaction in put_many, as in the SQLite store (storage.base.DEFAULT_MAX_BATCH).
DEFAULT_BATCH_MAX = DEFAULT_MAX_BATCH

# History rows deleted per transaction by prune. Retention after a long outage may remove millions
# of rows; one DELETE of all of them would hold its locks and grow the WAL for the whole run,
# 10,000 at a time (tens of milliseconds) lets writes and queries interleave.
DEFAULT_PRUNE_BATCH = 10_000

# Connections in the pool. The writer uses one, HTTP history queries and replay the others; more
# would only queue inside PostgreSQL on a small server.
DEFAULT_POOL_MAX = 4

# Seconds to establish a connection, and the most one statement may run, before the call fails
# with StorageError. A stalled server must not hang the writer (whose queue is bounded anyway) or
# an HTTP request forever.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 30.0

# pg_advisory_xact_lock key held while migrating (pg_locks.py), so two processes opening
# the same database at once do not both run a migration.
_MIGRATION_LOCK = pg_locks.EVENT_MIGRATION

# Coordinates beyond +-_FAR get no PostGIS point: PostGIS keeps index boxes in float32 (largest
# about 3.4e38), and a box across the antimeridian reaches out to _FAR on either side.
_FAR = "1e38"
_FAR_FLOAT = float(_FAR)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Columns of both tables after seq, in the order of StoredEvent's fields.
_COLUMNS = EVENT_COLUMNS
_ALL = ", ".join(("seq", *_COLUMNS))
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 2))

# uid, type and callsign compare by code point (COLLATE "C"), as in Python and SQLite: a type
# prefix query is a range on the b-tree index, whatever the database's default collation. NaN
# coordinates are stored as NaN (PostgreSQL's double precision has it).
_COLUMN_DEFS = """
    uid text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL,
    how text NOT NULL,
    time bigint NOT NULL,
    start bigint NOT NULL,
    stale bigint NOT NULL,
    lat double precision NOT NULL,
    lon double precision NOT NULL,
    hae double precision NOT NULL,
    callsign text COLLATE "C",
    sender text NOT NULL,
    sender_groups text[] NOT NULL,
    received bigint NOT NULL,
    xml bytea NOT NULL,
    label text
"""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema.
    (
        # Needs the right to create the extension (a superuser, or the database owner for a
        # trusted extension), unless an operator has created it beforehand (docs/storage.md).
        "CREATE EXTENSION IF NOT EXISTS postgis",
        # seq comes from a sequence, so it is never reused after prune deletes the newest rows.
        "CREATE SEQUENCE history_seq AS bigint",
        f"CREATE TABLE history (seq bigint PRIMARY KEY, {_COLUMN_DEFS},"
        # The point, for coordinates within +-1e38 (see _FAR; NaN sorts above every number in
        # PostgreSQL, so NaN, the infinities and absurd values have none). Generated, so no
        # writer can let it disagree with lat/lon.
        " position geometry(Point, 4326) GENERATED ALWAYS AS ("
        f"  CASE WHEN lat BETWEEN -{_FAR} AND {_FAR} AND lon BETWEEN -{_FAR} AND {_FAR}"
        "  THEN ST_SetSRID(ST_MakePoint(lon, lat), 4326) END) STORED)",
        "CREATE INDEX history_position ON history USING gist (position)",
        # The few rows without a point, which a box across the antimeridian may still select
        # (lon = Infinity is east of every bound).
        "CREATE INDEX history_no_position ON history (time) WHERE position IS NULL",
        "CREATE INDEX history_time ON history (time DESC, seq DESC)",
        "CREATE INDEX history_uid ON history (uid, time)",
        "CREATE INDEX history_type ON history (type)",
        "CREATE INDEX history_received ON history (received)",
        # latest keeps a full copy of each row, so retention can prune history freely.
        f"CREATE TABLE latest (seq bigint NOT NULL, {_COLUMN_DEFS}, PRIMARY KEY (uid))",
        "CREATE INDEX latest_stale ON latest (stale)",
    ),
    # 1 -> 2: users, the issued-certificate index, the CRL and web sign-ins, shared by every node
    # on this database (identity/shared_db.py, docs/deployment.md). seq orders changes for the
    # nodes' copies; it is taken only under identity/shared_db.py's advisory lock.
    (
        "CREATE SEQUENCE identity_seq AS bigint",
        # record: the user as identity/users.py writes it in users.json (JSON text)
        'CREATE TABLE identity_users (name text COLLATE "C" PRIMARY KEY, record text NOT NULL,'
        " seq bigint NOT NULL)",
        "CREATE INDEX identity_users_seq ON identity_users (seq)",
        # record: the index item as identity/issue.py writes it in issued.json; n: issue order
        'CREATE TABLE identity_certs (serial text COLLATE "C" PRIMARY KEY,'
        " n bigserial NOT NULL, record text NOT NULL, seq bigint NOT NULL)",
        "CREATE INDEX identity_certs_seq ON identity_certs (seq)",
        "CREATE TABLE identity_crl (id int PRIMARY KEY CHECK (id = 1), crl_number bigint NOT NULL,"
        " pem bytea NOT NULL, der bytea NOT NULL, seq bigint NOT NULL)",
        # key: SHA-256 of the sign-in cookie (hex); the cookie itself is never stored
        "CREATE TABLE identity_sessions (key text PRIMARY KEY, username text NOT NULL,"
        " csrf text NOT NULL, created timestamptz NOT NULL, seen timestamptz NOT NULL)",
        "CREATE INDEX identity_sessions_user ON identity_sessions (username)",
        "CREATE INDEX identity_sessions_created ON identity_sessions (created)",
    ),
    # 2 -> 3: the bearer token keyring and the redeemed refresh tokens, shared by every node on
    # this database (identity/shared_db.py, identity/tokens.py DbKeyring). Keys are replaced
    # under shared_db's advisory lock, seq from identity_seq; created/retired/exp: epoch seconds.
    (
        "CREATE TABLE identity_token_keys (kid text PRIMARY KEY, created bigint NOT NULL,"
        " retired bigint, pem text NOT NULL, seq bigint NOT NULL)",
        # A refresh token's jti is inserted when it is redeemed: a second insert finds the row
        # (single use across nodes); rows past exp are deleted in bounded batches.
        "CREATE TABLE identity_refresh_redeemed (jti text PRIMARY KEY, exp bigint NOT NULL)",
        "CREATE INDEX identity_refresh_redeemed_exp ON identity_refresh_redeemed (exp)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_INSERT_HISTORY = f"INSERT INTO history ({_ALL}) VALUES ({_PLACEHOLDERS})"
# One statement per row, in order (executemany): within one batch a newer event wins and an older
# one (by `time`) leaves the current latest alone; equal time counts as "not older".
_UPSERT_LATEST = (
    f"INSERT INTO latest ({_ALL}) VALUES ({_PLACEHOLDERS}) ON CONFLICT (uid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ("seq", *_COLUMNS) if c != "uid")
    + " WHERE excluded.time >= latest.time"
)
# Contacts (a-* with a callsign) first, then oldest first. left(), not LIKE: LIKE 'a-%' is fine
# for case but this keeps the rule identical to the other backends.
_SELECT_LATEST = (
    f"SELECT {_ALL} FROM latest WHERE stale > $1 "
    "ORDER BY (left(type, 2) = 'a-' AND callsign IS NOT NULL) DESC, time, seq"
)
_PRUNE_HISTORY = (
    "DELETE FROM history WHERE seq IN (SELECT seq FROM history WHERE received < $1 LIMIT $2)"
)
_PRUNE_LATEST = "DELETE FROM latest WHERE received < $1 AND stale <= $1"

# What a failing server, connection or value looks like from asyncpg: all become StorageError.
# DataError and friends (a value the column cannot hold) are asyncpg.InterfaceError or
# PostgresError subclasses; a str that is not UTF-8 or contains NUL fails on encoding.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    UnicodeError,
    OverflowError,
    ValueError,
)


async def migrate_database(url: str) -> None:
    """Bring the database at ``url`` to the current schema, as opening the store does: for a
    command (``liaison user ...``) that uses the identity tables without the store."""
    store = await PostgresStore.open(url, pool_max=1)
    await store.close()


def is_postgresql_url(storage: str) -> bool:
    """Whether a ``storage`` setting names a PostgreSQL database."""
    return storage.startswith(URL_SCHEMES)


class PostgresStore:
    """A :class:`~liaison.storage.base.Store` in a PostgreSQL database with PostGIS.

    Create with :meth:`open`. Every call borrows a connection from an asyncpg pool of at most
    ``pool_max`` connections; writes run in a task of their own, so a caller's cancellation never
    interrupts a transaction half-way (the Store contract for put_many).
    """

    def __init__(
        self, *, pool: Any, where: str, schema: str | None, batch_max: int, prune_batch: int
    ) -> None:
        """Private: use :meth:`open`, which connects and migrates before handing the store out."""
        self._pool = pool
        self._where = where
        self._schema = schema
        self._batch_max = batch_max
        self._prune_batch = prune_batch
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        batch_max: int = DEFAULT_BATCH_MAX,
        prune_batch: int = DEFAULT_PRUNE_BATCH,
        pool_max: int = DEFAULT_POOL_MAX,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> PostgresStore:
        """Connect to the database at ``url`` and migrate it to the current schema.

        ``schema``, if given, is a schema (created if missing) that holds the tables, searched
        before ``public`` where PostGIS normally lives; otherwise the tables go where the
        connection's search_path puts them. Raises StorageError if the database cannot be
        reached, migrated or is of a newer schema version.
        """
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, got {batch_max}")
        if prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, got {prune_batch}")
        if pool_max < 1:
            raise ValueError(f"pool_max must be at least 1, got {pool_max}")
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        where = redacted_url(url) + (f" schema {schema}" if schema else "")
        # asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared
        # statement to a generic plan that ignores the parameters, and a history query's best
        # plan depends on them (a small box: the GiST index; a box holding a quarter of the rows:
        # walk history_time newest first). Measured (bench/history_bench.py, docs/storage.md):
        # a wide-box query took 97 ms median with the generic plan, 10 ms with custom plans.
        # Planning one costs well under a millisecond.
        settings = {"plan_cache_mode": "force_custom_plan"}
        if schema:
            settings["search_path"] = f"{schema}, public"
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_max,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                server_settings=settings,
            )
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {where}: {exc}") from exc
        except TimeoutError as exc:
            raise StorageError(f"postgresql {where}: no connection within timeout") from exc
        store = cls(
            pool=pool, where=where, schema=schema, batch_max=batch_max, prune_batch=prune_batch
        )
        try:
            await store._call(store._migrate)
        except BaseException:
            store._closed = True
            pool.terminate()
            raise
        return store

    # --- the Store interface ---------------------------------------------------------------

    async def put_many(self, events: Sequence[StoredEvent]) -> None:
        self._check_open()
        for i in range(0, len(events), self._batch_max):
            await self._write(self._put_chunk, events[i : i + self._batch_max])

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        return await self._select(_SELECT_LATEST, now_ms)

    async def latest_by_uid(self, uid: str) -> StoredEvent | None:
        rows = await self._select(f"SELECT {_ALL} FROM latest WHERE uid = $1", uid)
        return rows[0] if rows else None

    async def history(self, query: Query) -> list[StoredEvent]:
        sql, params = history_sql(query)
        return await self._select(sql, *params)

    async def delete_uid(self, uid: str) -> None:
        await self._write(self._execute, "DELETE FROM latest WHERE uid = $1", uid)

    async def prune(self, older_than_ms: int) -> int:
        total = 0
        while True:
            n = await self._write(self._execute, _PRUNE_HISTORY, older_than_ms, self._prune_batch)
            total += n
            if n < self._prune_batch:
                break
        await self._write(self._execute, _PRUNE_LATEST, older_than_ms)
        return total

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._pool.close()
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {self._where}: {exc}") from exc

    # --- running statements ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"postgresql store {self._where} is closed")

    async def _call(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``job(connection, *args)`` on a pooled connection; driver errors -> StorageError."""
        self._check_open()
        try:
            async with self._pool.acquire() as conn:
                return await job(conn, *args)
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {self._where}: {exc}") from exc
        except TimeoutError as exc:
            raise StorageError(f"postgresql {self._where}: statement timed out") from exc

    async def _write(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like :meth:`_call`, but a cancelled caller still waits for the write to finish (so it
        can count it as done, the Store contract), then sees the cancellation."""
        task = asyncio.ensure_future(self._call(job, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved, so an error is not reported as never retrieved
            raise

    async def _select(self, sql: str, *params: object) -> list[StoredEvent]:
        rows = await self._call(_fetch, sql, *params)
        return [_from_row(row) for row in rows]

    # --- jobs (run with a pooled connection) ---------------------------------------------------

    async def _migrate(self, conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if self._schema is not None:
                # Under the lock: two CREATE SCHEMA IF NOT EXISTS at once can still collide.
                # The connections' search_path already names it (a missing schema is skipped).
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
            )
            version = await conn.fetchval("SELECT version FROM schema_version WHERE id = 1")
            version = 0 if version is None else int(version)
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"postgresql {self._where}: schema version {version} is newer than this "
                    f"Liaison understands ({SCHEMA_VERSION})"
                )
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                SCHEMA_VERSION,
            )

    async def _put_chunk(self, conn: Any, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        async with conn.transaction():
            seqs = await conn.fetchval(
                "SELECT array_agg(nextval('history_seq')) FROM generate_series(1, $1)",
                len(events),
            )
            rows = [_to_row(seq, ev) for seq, ev in zip(sorted(seqs), events, strict=True)]
            await conn.executemany(_INSERT_HISTORY, rows)
            await conn.executemany(_UPSERT_LATEST, rows)

    @staticmethod
    async def _execute(conn: Any, sql: str, *params: object) -> int:
        status: str = await conn.execute(sql, *params)
        # "DELETE 42": the command tag ends with the row count.
        return int(status.rsplit(" ", 1)[-1])


async def _fetch(conn: Any, sql: str, *params: object) -> list[Any]:
    rows: list[Any] = await conn.fetch(sql, *params)
    return rows


def _to_row(seq: int, ev: StoredEvent) -> tuple[object, ...]:
    return event_row(seq, ev, sorted(ev.sender_groups))


def _from_row(row: Any) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        uid=row["uid"],
        type=row["type"],
        how=row["how"],
        time=row["time"],
        start=row["start"],
        stale=row["stale"],
        lat=row["lat"],
        lon=row["lon"],
        hae=row["hae"],
        callsign=row["callsign"],
        sender=row["sender"],
        sender_groups=frozenset(row["sender_groups"]),
        received=row["received"],
        xml=bytes(row["xml"]),
        label=row["label"],
    )


def history_sql(query: Query) -> tuple[str, list[object]]:
    """SQL and parameters selecting exactly the rows :meth:`Query.matches` accepts.

    The exact test is always on the lat/lon columns. When the box's bounds are within +-_FAR, a
    test on the indexed ``position`` (``&&``, bounding boxes overlap) is added: it keeps every row
    the exact test keeps (such a row has coordinates inside the box, hence a position, and
    PostGIS rounds boxes outwards) and lets the planner read only the GiST index entries inside
    the box. A box across the antimeridian is open-ended in longitude, so its two envelopes reach
    out to +-_FAR and the rows without a position (an infinite longitude is east of every bound)
    are kept through their partial index.
    """
    where: list[str] = []
    params: list[object] = []

    def arg(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if query.uid is not None:
        where.append(f"uid = {arg(query.uid)}")
    if query.type_prefix:
        where.append(f"type >= {arg(query.type_prefix)}")
        bound = prefix_upper_bound(query.type_prefix)
        if bound is not None:
            where.append(f"type < {arg(bound)}")
    if query.callsign is not None:
        where.append(f"callsign = {arg(query.callsign)}")
    if query.since is not None:
        where.append(f"time >= {arg(query.since)}")
    if query.until is not None:
        where.append(f"time < {arg(query.until)}")
    if query.bbox is not None:
        min_lon, min_lat, max_lon, max_lat = query.bbox
        lo_lat, hi_lat = arg(float(min_lat)), arg(float(max_lat))
        lo_lon, hi_lon = arg(float(min_lon)), arg(float(max_lon))
        # PostgreSQL orders NaN above every number (Python compares it false with all), so NaN
        # fails BETWEEN with finite or infinite bounds alike, and is excluded by hand from the
        # one open-ended comparison below.
        where.append(f"lat BETWEEN {lo_lat} AND {hi_lat}")
        if min_lon <= max_lon:
            where.append(f"lon BETWEEN {lo_lon} AND {hi_lon}")
            # Any finite-bounds box: one envelope. Its edges are the query's own.
            near = [f"position && ST_MakeEnvelope({lo_lon}, {lo_lat}, {hi_lon}, {hi_lat}, 4326)"]
        else:  # the box crosses the antimeridian
            where.append(f"((lon >= {lo_lon} AND lon <> 'NaN') OR lon <= {hi_lon})")
            # Longitudes beyond +-180 can be stored (the contract does not forbid them), so the
            # envelopes reach as far as any stored point does.
            near = [
                f"position && ST_MakeEnvelope({lo_lon}, {lo_lat}, {_FAR}, {hi_lat}, 4326)",
                f"position && ST_MakeEnvelope(-{_FAR}, {lo_lat}, {hi_lon}, {hi_lat}, 4326)",
                "position IS NULL",
            ]
        if all(-_FAR_FLOAT <= v <= _FAR_FLOAT for v in query.bbox):
            where.append("(" + " OR ".join(near) + ")")
    sql = f"SELECT {_ALL} FROM history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY time DESC, seq DESC LIMIT {arg(query.limit)}"
    return sql, params
