"""Helpers shared by the storage tests: a fixed clock, an event factory, store construction.

The PostgreSQL store is tested against the real server named by ``LIAISON_TEST_POSTGRESQL``
(default ``postgresql://postgres@127.0.0.1:5432/test``), with PostGIS. Each test gets a schema of
its own, created here and dropped afterwards, so tests may run in parallel with others. If the
server, PostGIS or asyncpg is missing the PostgreSQL tests skip with the reason; under
``LIAISON_REQUIRE_SERVICES=1`` (CI) they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from liaison.storage import MemoryStore, SqliteStore, Store, StoredEvent

# 2026-01-01T00:00:00Z in ms: a fixed "now" so tests never read the clock.
T0 = 1_767_225_600_000

_BASE = StoredEvent(
    uid="uid-1",
    type="a-f-G-U-C",
    how="m-g",
    time=T0,
    start=T0,
    stale=T0 + 60_000,
    lat=51.5,
    lon=-0.12,
    hae=12.0,
    callsign="ALPHA",
    sender="alice",
    sender_groups=frozenset({"Cyan"}),
    received=T0,
    xml=b'<event version="2.0" uid="uid-1" type="a-f-G-U-C"><point/><detail/></event>',
)

Make = Callable[..., StoredEvent]


def make(**fields: object) -> StoredEvent:
    """A StoredEvent with defaults; ``time`` also sets start, stale and received unless given."""
    if "time" in fields:
        t = fields["time"]
        assert isinstance(t, int)
        fields.setdefault("start", t)
        fields.setdefault("stale", t + 60_000)
        fields.setdefault("received", t)
    if "uid" in fields and "xml" not in fields:
        fields["xml"] = f'<event uid="{fields["uid"]}"/>'.encode()
    return replace(_BASE, **fields)  # type: ignore[arg-type]


STORE_KINDS = ["memory", "sqlite", "postgresql"]

POSTGRESQL_URL = os.environ.get(
    "LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def postgresql_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None. Makes sure PostGIS is created."""
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed (pip install -e '.[test]')"
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {POSTGRESQL_URL} is unreachable: {exc}"
    try:
        # Created once in `public`, before any test schema exists: the store's migration would
        # otherwise create it in the test schema (first in its search_path) and drop it with it.
        # Two test processes doing this at once may race; the loser sees the extension exist.
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
        except asyncpg.UniqueViolationError:
            pass
        except asyncpg.PostgresError as exc:
            return f"PostGIS is not available in {POSTGRESQL_URL}: {exc}"
    finally:
        await conn.close()
    return None


@asynccontextmanager
async def postgresql_schema() -> AsyncIterator[str]:
    """A fresh schema name for one test; the schema (created by the store) is dropped after."""
    reason = await postgresql_unavailable()
    if reason is not None:
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL tests required but {reason}")
        pytest.skip(reason)
    import asyncpg

    schema = f"liaison_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@asynccontextmanager
async def opened_store(kind: str, directory: Path) -> AsyncIterator[Store]:
    """A fresh store of ``kind`` (a SQLite one lives in ``directory``), closed afterwards."""
    if kind == "postgresql":
        from liaison.storage.postgresql import PostgresStore

        async with postgresql_schema() as schema:
            pg = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
            try:
                yield pg
            finally:
                await pg.close()
        return
    s: Store = (
        MemoryStore() if kind == "memory" else await SqliteStore.open(directory / "liaison.db")
    )
    try:
        yield s
    finally:
        await s.close()


MISSION_STORE_KINDS = ["memory", "sqlite", "postgresql"]


@asynccontextmanager
async def opened_mission_store(kind: str, directory: Path) -> AsyncIterator[Any]:
    """A fresh MissionStore of ``kind`` (SQLite: ``directory/missions.db``; PostgreSQL: a schema
    of its own, dropped afterwards). Closed afterwards unless the test closed it."""
    from liaison.storage.missions import MemoryMissionStore, SqliteMissionStore

    if kind == "postgresql":
        from liaison.storage.postgresql_missions import PostgresMissionStore

        async with postgresql_schema() as schema:
            pg = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
            try:
                yield pg
            finally:
                await pg.close()
        return
    store: Any = (
        MemoryMissionStore()
        if kind == "memory"
        else await SqliteMissionStore.open(directory / "missions.db")
    )
    try:
        yield store
    finally:
        await store.close()


FILE_INDEX_KINDS = ["memory", "sqlite", "postgresql"]


@asynccontextmanager
async def opened_file_store(kind: str, directory: Path, **kwargs: Any) -> AsyncIterator[Any]:
    """A fresh FileStore whose index (and, for PostgreSQL, contents) is of ``kind``."""
    from liaison.storage.files import FileStore, MemoryFileIndex, SqliteFileIndex

    if kind == "postgresql":
        async with postgresql_schema() as schema:
            fs = await FileStore.open_postgresql(POSTGRESQL_URL, schema=schema, **kwargs)
            try:
                yield fs
            finally:
                await fs.close()
        return
    index: Any = (
        MemoryFileIndex()
        if kind == "memory"
        else await SqliteFileIndex.open(directory / "files" / "index.db")
    )
    fs = FileStore(directory / "files", index, **kwargs)
    try:
        yield fs
    finally:
        await fs.close()
