"""Missions and files in PostgreSQL, for servers whose event store is a ``postgresql://`` URL
(docs/storage.md "Missions and files in PostgreSQL"), so that every node of a cluster sharing
the database sees the same missions, data packages and file contents.

- :class:`PostgresMissionStore` is a :class:`~liaison.storage.missions.MissionStore` with the
  same JSON records as ``missions.db`` in tables prefixed ``mission_``; it also reads one
  mission back (:meth:`PostgresMissionStore.load_mission`) when another node changed it, and
  hands out node numbers that keep change sequence numbers apart across nodes.
- :class:`PostgresFileIndex` is a :class:`~liaison.storage.files.FileIndex` (table
  ``file_records``) and :class:`PostgresContents` keeps file contents by SHA-256 as ``bytea``
  chunks of ``CHUNK_BYTES`` (``file_contents``, ``file_chunks``), read back one chunk at a time.

Each has its own versioned schema (``mission_schema_version``, ``file_schema_version``) migrated
on open under an advisory lock of its own, like ``storage/postgresql.py``'s ``schema_version``.
asyncpg is imported only when this module is (a ``postgresql://`` storage URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from liaison import pg_locks
from liaison.config import redacted_url
from liaison.errors import StorageError, UnreadableRecord
from liaison.storage.files import MAX_INDEX_SCAN, FileQuery, FileRecord
from liaison.storage.missions import (
    TOKEN_SECRET_BYTES,
    InvitationRecord,
    LogEntryRecord,
    MissionData,
    MissionWrite,
    SingleWrites,
    _change_from,
    _content_from,
    _dump,
    _item_from,
    _log_from,
    _mission_from,
    _sub_from,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise StorageError(
        "the PostgreSQL store needs asyncpg: pip install 'liaison[postgresql]'"
    ) from exc

T = TypeVar("T")

log = logging.getLogger(__name__)

# Connections per pool: the mission writer and a reader (a node reloading a mission another node
# changed); the file side: an upload and a download or two. Small: every node opens these beside
# the event store's pool (DEFAULT_POOL_MAX there).
MISSION_POOL_MAX = 2
FILE_POOL_MAX = 3
CONNECT_TIMEOUT_S = 10.0
# The most one statement may run (a chunk of CHUNK_BYTES, a batch of mission writes).
COMMAND_TIMEOUT_S = 30.0

# Bytes per row of file_chunks: what a download holds in memory at once, and what one upload
# statement sends. 1 MiB keeps a 100 MiB file (files.MAX_FILE_BYTES) at 100 rows.
CHUNK_BYTES = 1024 * 1024

# pg_advisory_xact_lock keys held while migrating (pg_locks.py), so two processes opening
# the same database at once migrate each schema once.
_MISSION_LOCK = pg_locks.MISSION_MIGRATION
_FILE_LOCK = pg_locks.FILE_MIGRATION

# Bits of a change sequence number that hold the node number in a cluster (missions.py
# Missions._next_seq): 65,536 node numbers before they repeat.
NODE_BITS = 16

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    UnicodeError,
    OverflowError,
    ValueError,
)

# Mission schema: _MISSION_MIGRATIONS[v] upgrades version v to v + 1. Records are the JSON text
# of storage/missions.py (the same as missions.db), keys as columns. COLLATE "C": names compare
# by code point, as in SQLite.
MISSION_SCHEMA_VERSION = 1
_MISSION_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        'CREATE TABLE mission_meta (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)',
        'CREATE TABLE mission_missions (name text COLLATE "C" PRIMARY KEY, record text NOT NULL)',
        'CREATE TABLE mission_items (mission text COLLATE "C" NOT NULL,'
        ' uid text COLLATE "C" NOT NULL, record text NOT NULL, PRIMARY KEY (mission, uid))',
        'CREATE TABLE mission_changes (seq bigint PRIMARY KEY, mission text COLLATE "C" NOT NULL,'
        " record text NOT NULL)",
        "CREATE INDEX mission_changes_mission ON mission_changes (mission, seq)",
        'CREATE TABLE mission_subscriptions (mission text COLLATE "C" NOT NULL,'
        ' client_uid text COLLATE "C" NOT NULL, record text NOT NULL,'
        " PRIMARY KEY (mission, client_uid))",
        'CREATE TABLE mission_contents (mission text COLLATE "C" NOT NULL,'
        ' hash text COLLATE "C" NOT NULL, record text NOT NULL, PRIMARY KEY (mission, hash))',
        'CREATE TABLE mission_logs (id text COLLATE "C" PRIMARY KEY, created bigint NOT NULL,'
        " record text NOT NULL)",
        'CREATE TABLE mission_invitations (mission text COLLATE "C" NOT NULL,'
        ' type text COLLATE "C" NOT NULL, invitee text COLLATE "C" NOT NULL,'
        " record text NOT NULL, PRIMARY KEY (mission, type, invitee))",
        # One number per process that opens the store in a cluster (node_number).
        "CREATE SEQUENCE mission_node_seq AS bigint",
    ),
)
assert len(_MISSION_MIGRATIONS) == MISSION_SCHEMA_VERSION

FILE_SCHEMA_VERSION = 1
_FILE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE file_records (seq bigserial PRIMARY KEY,"
        ' uid text COLLATE "C" NOT NULL UNIQUE, hash text COLLATE "C" NOT NULL,'
        " name text NOT NULL, mime text NOT NULL, size bigint NOT NULL,"
        ' keywords text[] NOT NULL, tool text COLLATE "C" NOT NULL,'
        ' creator_uid text COLLATE "C", uploader text NOT NULL,'
        " uploader_groups text[] NOT NULL, label text, submitted bigint NOT NULL)",
        "CREATE INDEX file_records_hash ON file_records (hash)",
        "CREATE INDEX file_records_submitted ON file_records (submitted DESC, seq DESC)",
        # A content is complete once its file_contents row exists (inserted in the transaction
        # that wrote its last chunk).
        'CREATE TABLE file_contents (hash text COLLATE "C" PRIMARY KEY, size bigint NOT NULL,'
        " chunks integer NOT NULL)",
        'CREATE TABLE file_chunks (hash text COLLATE "C" NOT NULL, n integer NOT NULL,'
        " data bytea NOT NULL, PRIMARY KEY (hash, n))",
    ),
)
assert len(_FILE_MIGRATIONS) == FILE_SCHEMA_VERSION


class _Pg:
    """A small asyncpg pool with the event store's conventions: driver errors become
    StorageError naming the URL without its password; writes finish even if the caller is
    cancelled; the schema is migrated on open under an advisory lock."""

    def __init__(self, pool: Any, where: str) -> None:
        self._pool = pool
        self.where = where
        self.closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None,
        pool_max: int,
        what: str,
        lock: int,
        migrations: tuple[tuple[str, ...], ...],
    ) -> _Pg:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        where = redacted_url(url) + (f" schema {schema}" if schema else "")
        settings = {"search_path": f"{schema}, public"} if schema else {}
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_max,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings=settings,
            )
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {where}: {exc}") from exc
        except TimeoutError as exc:
            raise StorageError(f"postgresql {where}: no connection within timeout") from exc
        pg = cls(pool, where)

        async def migrate(conn: Any) -> None:
            version_table = f"{what}_schema_version"
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
                if schema is not None:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {version_table}"
                    " (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
                )
                found = await conn.fetchval(f"SELECT version FROM {version_table} WHERE id = 1")
                version = 0 if found is None else int(found)
                if version > len(migrations):
                    raise StorageError(
                        f"postgresql {where}: {what} schema version {version} is newer than this"
                        f" Liaison understands ({len(migrations)})"
                    )
                for step in migrations[version:]:
                    for statement in step:
                        await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {version_table} (id, version) VALUES (1, $1)"
                    " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    len(migrations),
                )

        try:
            await pg.call(migrate)
        except BaseException:
            pg.closed = True
            pool.terminate()
            raise
        return pg

    async def call(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.closed:
            raise StorageError(f"postgresql {self.where} is closed")
        try:
            async with self._pool.acquire() as conn:
                return await job(conn, *args)
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {self.where}: {exc}") from exc
        except TimeoutError as exc:
            raise StorageError(f"postgresql {self.where}: statement timed out") from exc

    async def write(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like :meth:`call`; a cancelled caller waits for the write to end, then sees the
        cancellation (what was handed over is not half-written nor lost)."""
        task = asyncio.ensure_future(self.call(job, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([task])
            if not task.cancelled():
                task.exception()
            raise

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._pool.close()
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {self.where}: {exc}") from exc


# --- missions -----------------------------------------------------------------------------------

# Each write's statement and row (delete_mission is several statements, see _apply).
_MISSION_SQL: dict[str, tuple[str, Callable[..., tuple[object, ...]]]] = {
    "put_mission": (
        "INSERT INTO mission_missions (name, record) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET record = excluded.record",
        lambda m: (m.name, _dump(m)),
    ),
    "put_item": (
        "INSERT INTO mission_items (mission, uid, record) VALUES ($1, $2, $3)"
        " ON CONFLICT (mission, uid) DO UPDATE SET record = excluded.record",
        lambda i: (i.mission, i.uid, _dump(i)),
    ),
    "remove_item": (
        "DELETE FROM mission_items WHERE mission = $1 AND uid = $2",
        lambda mission, uid: (mission, uid),
    ),
    # A plain INSERT: a change's seq is never written twice (the batch fails instead).
    "add_change": (
        "INSERT INTO mission_changes (seq, mission, record) VALUES ($1, $2, $3)",
        lambda ch: (ch.seq, ch.mission, _dump(ch)),
    ),
    "put_subscription": (
        "INSERT INTO mission_subscriptions (mission, client_uid, record) VALUES ($1, $2, $3)"
        " ON CONFLICT (mission, client_uid) DO UPDATE SET record = excluded.record",
        lambda s: (s.mission, s.client_uid, _dump(s)),
    ),
    "put_content": (
        "INSERT INTO mission_contents (mission, hash, record) VALUES ($1, $2, $3)"
        " ON CONFLICT (mission, hash) DO UPDATE SET record = excluded.record",
        lambda c: (c.mission, c.hash, _dump(c)),
    ),
    "remove_content": (
        "DELETE FROM mission_contents WHERE mission = $1 AND hash = $2",
        lambda mission, h: (mission, h),
    ),
    "put_log": (
        "INSERT INTO mission_logs (id, created, record) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET created = excluded.created, record = excluded.record",
        lambda e: (e.id, e.created, _dump(e)),
    ),
    "delete_log": ("DELETE FROM mission_logs WHERE id = $1", lambda entry_id: (entry_id,)),
    "put_invitation": (
        "INSERT INTO mission_invitations (mission, type, invitee, record)"
        " VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (mission, type, invitee) DO UPDATE SET record = excluded.record",
        lambda i: (i.mission, i.type, i.invitee, _dump(i)),
    ),
    "delete_invitation": (
        "DELETE FROM mission_invitations WHERE mission = $1 AND type = $2 AND invitee = $3",
        lambda mission, t, invitee: (mission, t, invitee),
    ),
}
# The table each write (but delete_mission) changes.
_TABLE_OF = {
    "put_mission": "mission_missions",
    "put_item": "mission_items",
    "remove_item": "mission_items",
    "add_change": "mission_changes",
    "put_subscription": "mission_subscriptions",
    "put_content": "mission_contents",
    "remove_content": "mission_contents",
    "put_log": "mission_logs",
    "delete_log": "mission_logs",
    "put_invitation": "mission_invitations",
    "delete_invitation": "mission_invitations",
}
_MISSION_TABLES = (
    "mission_items",
    "mission_changes",
    "mission_subscriptions",
    "mission_contents",
    "mission_invitations",
)


class PostgresMissionStore(SingleWrites):
    """A :class:`~liaison.storage.missions.MissionStore` in PostgreSQL (tables ``mission_*``).

    Create with :meth:`open`. A batch is one transaction, its writes applied in order.
    """

    def __init__(self, pg: _Pg) -> None:
        """Private: use :meth:`open`."""
        self._pg = pg

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> PostgresMissionStore:
        pg = await _Pg.open(
            url,
            schema=schema,
            pool_max=MISSION_POOL_MAX,
            what="mission",
            lock=_MISSION_LOCK,
            migrations=_MISSION_MIGRATIONS,
        )
        return cls(pg)

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        if writes:
            await self._pg.write(self._apply, writes)

    @staticmethod
    async def _apply(conn: Any, writes: Sequence[MissionWrite]) -> None:
        """One transaction. As in the SQLite store, each table's writes keep their order and a
        run of one kind of write to a table is one ``executemany`` (one round trip): writes to
        different tables do not depend on each other, and a mission's deletion, which touches
        every table, is applied after everything before it (measured: 10,000 mission writes in
        1.4-1.7 s instead of 4.9-5.2 s with a round trip per write; docs/storage.md)."""
        by_table: dict[str, list[MissionWrite]] = {}

        async def flush() -> None:
            for pending in by_table.values():
                i = 0
                while i < len(pending):
                    j = i
                    while j < len(pending) and pending[j].op == pending[i].op:
                        j += 1
                    sql, row = _MISSION_SQL[pending[i].op]
                    await conn.executemany(sql, [row(*w.args) for w in pending[i:j]])
                    i = j
            by_table.clear()

        async with conn.transaction():
            for w in writes:
                if w.op == "delete_mission":
                    await flush()
                    (name,) = w.args
                    for table in _MISSION_TABLES:
                        await conn.execute(f"DELETE FROM {table} WHERE mission = $1", name)
                    await conn.execute("DELETE FROM mission_missions WHERE name = $1", name)
                    continue
                by_table.setdefault(_TABLE_OF[w.op], []).append(w)
            await flush()

    async def load(self) -> MissionData:
        async def job(conn: Any) -> MissionData:
            missions = [_mission_from(r[0]) for r in await conn.fetch(_SELECT_MISSIONS)]
            items = [_item_from(r[0]) for r in await conn.fetch("SELECT record FROM mission_items")]
            changes = [
                _change_from(r[0], r[1])
                for r in await conn.fetch("SELECT seq, record FROM mission_changes ORDER BY seq")
            ]
            subs = [
                _sub_from(r[0])
                for r in await conn.fetch("SELECT record FROM mission_subscriptions")
            ]
            contents = [
                _content_from(r[0]) for r in await conn.fetch("SELECT record FROM mission_contents")
            ]
            return MissionData(missions, items, changes, subs, contents)

        return await self._pg.call(job)

    async def load_mission(
        self, name: str, max_changes: int
    ) -> tuple[MissionData, list[InvitationRecord]] | None:
        """One mission as stored now, with its items, its newest ``max_changes`` changes (oldest
        first), subscriptions, contents and invitations, read in one transaction (a consistent
        snapshot); None if it is gone. What a node reads when another node changed it."""

        async def job(conn: Any) -> tuple[MissionData, list[InvitationRecord]] | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rec = await conn.fetchval(
                    "SELECT record FROM mission_missions WHERE name = $1", name
                )
                if rec is None:
                    return None

                async def rows(sql: str) -> list[Any]:
                    found: list[Any] = await conn.fetch(sql, name)
                    return found

                items = await rows(_ONE["items"])
                changes = await conn.fetch(_ONE["changes"], name, max_changes)
                subs = await rows(_ONE["subscriptions"])
                contents = await rows(_ONE["contents"])
                invitations = await rows(_ONE["invitations"])
            # Rows another node wrote: parsed here, and a row that does not parse (another
            # version's record, a damaged one) is this mission's refusal, not the node's end.
            try:
                data = MissionData(
                    [_mission_from(rec)],
                    [_item_from(r[0]) for r in items],
                    [_change_from(r[0], r[1]) for r in reversed(changes)],
                    [_sub_from(r[0]) for r in subs],
                    [_content_from(r[0]) for r in contents],
                )
                invites = [InvitationRecord(**_json(r[0])) for r in invitations]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise UnreadableRecord(f"mission {name!r}: a stored record: {exc!r}") from exc
            return data, invites

        return await self._pg.call(job)

    async def load_log_entries(self, ids: Sequence[str]) -> dict[str, LogEntryRecord | None]:
        """The log entries ``ids`` as stored now (None: deleted)."""

        async def job(conn: Any) -> dict[str, LogEntryRecord | None]:
            found = await conn.fetch(
                "SELECT id, record FROM mission_logs WHERE id = ANY($1::text[])", list(ids)
            )
            out: dict[str, LogEntryRecord | None] = dict.fromkeys(ids)
            for entry_id, record in found:
                try:
                    out[entry_id] = _log_from(record)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    del out[entry_id]  # not read: this node keeps what it holds of it
                    log.warning("mission log entry %r: stored record unreadable: %r", entry_id, exc)
            return out

        return await self._pg.call(job)

    async def node_number(self) -> int:
        """A number no other process that opened this database got (the sequence
        ``mission_node_seq``; numbers repeat modulo 2**NODE_BITS)."""

        async def job(conn: Any) -> int:
            value: int = await conn.fetchval("SELECT nextval('mission_node_seq')")
            return value

        return await self._pg.write(job) % (1 << NODE_BITS)

    async def token_secret(self) -> bytes:
        async def job(conn: Any) -> bytes:
            # Two nodes starting at once: the first insert wins, both read the winner's.
            await conn.execute(
                "INSERT INTO mission_meta (key, value) VALUES ('token_secret', $1)"
                " ON CONFLICT (key) DO NOTHING",
                secrets.token_bytes(TOKEN_SECRET_BYTES),
            )
            value = await conn.fetchval("SELECT value FROM mission_meta WHERE key = 'token_secret'")
            return bytes(value)

        return await self._pg.write(job)

    async def load_logs(self) -> list[LogEntryRecord]:
        async def job(conn: Any) -> list[LogEntryRecord]:
            rows = await conn.fetch("SELECT record FROM mission_logs ORDER BY created, id")
            return [_log_from(r[0]) for r in rows]

        return await self._pg.call(job)

    async def load_invitations(self) -> list[InvitationRecord]:
        async def job(conn: Any) -> list[InvitationRecord]:
            rows = await conn.fetch("SELECT record FROM mission_invitations")
            return [InvitationRecord(**_json(r[0])) for r in rows]

        return await self._pg.call(job)

    async def close(self) -> None:
        await self._pg.close()


_SELECT_MISSIONS = "SELECT record FROM mission_missions"
_ALL_SUBSCRIPTIONS = "SELECT record FROM mission_subscriptions"
_ONE = {
    "items": "SELECT record FROM mission_items WHERE mission = $1",
    "changes": "SELECT seq, record FROM mission_changes WHERE mission = $1"
    " ORDER BY seq DESC LIMIT $2",
    "subscriptions": "SELECT record FROM mission_subscriptions WHERE mission = $1",
    "contents": "SELECT record FROM mission_contents WHERE mission = $1",
    "invitations": "SELECT record FROM mission_invitations WHERE mission = $1",
}


def _json(text: str) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(text)
    return value


# --- files --------------------------------------------------------------------------------------

_FILE_COLUMNS = (
    "uid, hash, name, mime, size, keywords, tool, creator_uid, uploader, uploader_groups,"
    " label, submitted"
)
_FILE_SELECT = f"SELECT {_FILE_COLUMNS} FROM file_records"
_FILE_ORDER = " ORDER BY submitted DESC, seq DESC"


def _file_from(row: Any) -> FileRecord:
    return FileRecord(
        uid=row[0],
        hash=row[1],
        name=row[2],
        mime=row[3],
        size=row[4],
        keywords=tuple(row[5]),
        tool=row[6],
        creator_uid=row[7],
        uploader=row[8],
        uploader_groups=frozenset(row[9]),
        label=row[10],
        submitted=row[11],
    )


class PostgresFileIndex:
    """A :class:`~liaison.storage.files.FileIndex` in the table ``file_records``, plus the file
    contents (:class:`PostgresContents`) in the same database. Create with :meth:`open`."""

    def __init__(self, pg: _Pg) -> None:
        """Private: use :meth:`open`."""
        self._pg = pg
        self.contents = PostgresContents(pg)

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> PostgresFileIndex:
        pg = await _Pg.open(
            url,
            schema=schema,
            pool_max=FILE_POOL_MAX,
            what="file",
            lock=_FILE_LOCK,
            migrations=_FILE_MIGRATIONS,
        )
        return cls(pg)

    async def add(self, rec: FileRecord) -> None:
        async def job(conn: Any) -> None:
            try:
                await conn.execute(
                    f"INSERT INTO file_records ({_FILE_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    rec.uid,
                    rec.hash,
                    rec.name,
                    rec.mime,
                    rec.size,
                    list(rec.keywords),
                    rec.tool,
                    rec.creator_uid,
                    rec.uploader,
                    sorted(rec.uploader_groups),
                    rec.label,
                    rec.submitted,
                )
            except asyncpg.UniqueViolationError as exc:
                raise StorageError(f"file record {rec.uid} exists") from exc

        await self._pg.write(job)

    async def _select(self, sql: str, *params: object) -> list[FileRecord]:
        async def job(conn: Any) -> list[FileRecord]:
            return [_file_from(r) for r in await conn.fetch(sql, *params)]

        return await self._pg.call(job)

    async def by_uid(self, uid: str) -> FileRecord | None:
        found = await self._select(f"{_FILE_SELECT} WHERE uid = $1", uid)
        return found[0] if found else None

    async def by_hash(self, hash: str) -> list[FileRecord]:
        return await self._select(f"{_FILE_SELECT} WHERE hash = $1{_FILE_ORDER}", hash)

    async def search(self, query: FileQuery, limit: int = MAX_INDEX_SCAN) -> list[FileRecord]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("tool", query.tool),
            ("creator_uid", query.creator_uid),
            ("hash", query.hash),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        if query.keyword is not None:
            params.append(query.keyword)
            where.append(f"${len(params)} = ANY(keywords)")
        sql = _FILE_SELECT + (" WHERE " + " AND ".join(where) if where else "") + _FILE_ORDER
        if query.name_contains is None:
            params.append(limit)
            return await self._select(sql + f" LIMIT ${len(params)}", *params)
        # The case-insensitive substring with Python's meaning (FileQuery.matches), over a
        # bounded scan, as in the SQLite index.
        params.append(MAX_INDEX_SCAN)
        rows = await self._select(sql + f" LIMIT ${len(params)}", *params)
        return [r for r in rows if query.matches(r)][:limit]

    async def set_tool(self, uid: str, tool: str) -> bool:
        async def job(conn: Any) -> bool:
            status: str = await conn.execute(
                "UPDATE file_records SET tool = $1 WHERE uid = $2", tool, uid
            )
            return status != "UPDATE 0"

        return await self._pg.write(job)

    async def close(self) -> None:
        await self._pg.close()


class PostgresContents:
    """File contents by SHA-256 in ``file_chunks`` (``CHUNK_BYTES`` each) and ``file_contents``
    (one row once every chunk is in, written in the same transaction)."""

    def __init__(self, pg: _Pg) -> None:
        self._pg = pg

    async def put(self, hash: str, data: bytes) -> None:
        """Store ``data`` under ``hash`` unless it is there already (the same hash is the same
        content). Two nodes storing the same content at once: one transaction wins, the other
        finds it done."""

        async def job(conn: Any) -> None:
            if await conn.fetchval("SELECT 1 FROM file_contents WHERE hash = $1", hash):
                return
            view = memoryview(data)
            chunks = max(1, -(-len(data) // CHUNK_BYTES))
            async with conn.transaction():
                # Serialises two writers of one hash (the second waits, then finds it done).
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", hash)
                if await conn.fetchval("SELECT 1 FROM file_contents WHERE hash = $1", hash):
                    return
                for n in range(chunks):
                    await conn.execute(
                        "INSERT INTO file_chunks (hash, n, data) VALUES ($1, $2, $3)",
                        hash,
                        n,
                        bytes(view[n * CHUNK_BYTES : (n + 1) * CHUNK_BYTES]),
                    )
                await conn.execute(
                    "INSERT INTO file_contents (hash, size, chunks) VALUES ($1, $2, $3)",
                    hash,
                    len(data),
                    chunks,
                )

        await self._pg.write(job)

    async def size(self, hash: str) -> int | None:
        """The stored content's size, or None when it is not (completely) stored."""

        async def job(conn: Any) -> int | None:
            value: int | None = await conn.fetchval(
                "SELECT size FROM file_contents WHERE hash = $1", hash
            )
            return value

        return await self._pg.call(job)

    async def chunks(self, hash: str) -> AsyncIterator[bytes]:
        """The content, one chunk (at most CHUNK_BYTES) at a time, each its own query: a
        download holds one chunk in memory however large the file. Nothing when it is not
        stored."""

        async def count(conn: Any) -> int | None:
            value: int | None = await conn.fetchval(
                "SELECT chunks FROM file_contents WHERE hash = $1", hash
            )
            return value

        total = await self._pg.call(count)
        for n in range(total or 0):

            async def one(conn: Any, n: int = n) -> bytes:
                value = await conn.fetchval(
                    "SELECT data FROM file_chunks WHERE hash = $1 AND n = $2", hash, n
                )
                if value is None:
                    raise StorageError(f"file {hash}: chunk {n} is missing")
                return bytes(value)

            yield await self._pg.call(one)

    async def read(self, hash: str, limit: int) -> bytes | None:
        """The whole content (for archives), refused past ``limit`` bytes; None if missing."""
        size = await self.size(hash)
        if size is None:
            return None
        if size > limit:
            raise StorageError(f"file {hash} of {size} bytes exceeds {limit}")
        parts = [c async for c in self.chunks(hash)]
        return b"".join(parts)
