"""What the PostgreSQL store does beyond the contract suite (which it also passes): migrations,
the spatial and time indexes the planner really uses, exact bounding boxes, retention batches,
failures as StorageError, and that the default path never imports asyncpg.

Against the real server (storage_support: skipped with the reason when it is unreachable, failed
under LIAISON_REQUIRE_SERVICES=1), each test in a schema of its own.
"""

from __future__ import annotations

import math
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from storage_support import POSTGRESQL_URL, T0, make, postgresql_schema

from liaison.errors import StorageError
from liaison.storage import MemoryStore, Query, StoredEvent


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with postgresql_schema() as name:
        yield name


async def _explain(schema: str, sql: str, params: list[object]) -> str:
    import asyncpg

    conn = await asyncpg.connect(
        POSTGRESQL_URL, server_settings={"search_path": f"{schema}, public"}
    )
    try:
        await conn.execute("ANALYZE history")
        rows = await conn.fetch("EXPLAIN " + sql, *params)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


async def test_migration_records_the_version_and_reopening_keeps_the_data(schema: str) -> None:
    import asyncpg

    from liaison.storage.postgresql import SCHEMA_VERSION, PostgresStore

    store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
    await store.put_many([make(uid="kept")])
    await store.close()
    again = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
    try:
        assert await again.latest_by_uid("kept") is not None
        # seq continues after the rows already there: it comes from a sequence, never reused.
        await again.put_many([make(uid="next")])
        got = await again.history(Query())
        assert [e.uid for e in got] == ["next", "kept"]
        assert got[0].seq > got[1].seq
    finally:
        await again.close()
    conn = await asyncpg.connect(POSTGRESQL_URL)
    try:
        version = await conn.fetchval(f"SELECT version FROM {schema}.schema_version")
        assert version == SCHEMA_VERSION
        # A database written by a newer Liaison is refused, not misread.
        await conn.execute(f"UPDATE {schema}.schema_version SET version = $1", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="newer"):
        await PostgresStore.open(POSTGRESQL_URL, schema=schema)


async def test_processes_opening_one_database_at_once_migrate_it_once(schema: str) -> None:
    """The migration holds an advisory lock: three stores opened together (as three nodes would
    at start) all succeed, and share one schema."""
    import asyncio

    from liaison.storage.postgresql import PostgresStore

    stores = await asyncio.gather(
        *(PostgresStore.open(POSTGRESQL_URL, schema=schema, pool_max=1) for _ in range(3))
    )
    try:
        await stores[0].put_many([make(uid="shared")])
        for s in stores:
            assert await s.latest_by_uid("shared") is not None
    finally:
        for s in stores:
            await s.close()


async def test_bbox_and_time_queries_use_the_gist_and_time_indexes(schema: str) -> None:
    from liaison.storage.postgresql import PostgresStore, history_sql

    store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
    try:
        rnd = random.Random(14)
        await store.put_many(
            [
                make(
                    uid=f"u{i % 500}",
                    time=T0 + i * 1000,
                    lat=rnd.uniform(-80, 80),
                    lon=rnd.uniform(-179, 179),
                )
                for i in range(20_000)
            ]
        )
        plan = await _explain(schema, *history_sql(Query(bbox=(10.0, 10.0, 11.0, 11.0))))
        assert "history_position" in plan, plan
        # Across the antimeridian: both halves of the box go through the GiST index.
        plan = await _explain(schema, *history_sql(Query(bbox=(179.0, 0.0, -179.0, 1.0))))
        assert plan.count("history_position") == 2, plan
        plan = await _explain(
            schema, *history_sql(Query(since=T0 + 5_000_000, until=T0 + 5_010_000))
        )
        assert "history_time" in plan, plan
        # The answers are the reference's (Query.matches), newest first.
        q = Query(bbox=(10.0, 10.0, 20.0, 20.0), since=T0 + 2_000_000, limit=50)
        got = await store.history(q)
        assert got and all(q.matches(e) for e in got)
        assert [e.time for e in got] == sorted((e.time for e in got), reverse=True)
    finally:
        await store.close()


async def test_bbox_answers_exactly_as_the_reference_on_odd_positions(schema: str) -> None:
    """NaN and off-globe positions have no PostGIS point; boxes on and off the globe, across the
    antimeridian, with edges: the PostgreSQL answer equals the in-memory reference every time."""
    from liaison.storage.postgresql import PostgresStore

    rnd = random.Random(1414)
    special = [math.nan, 90.0, -90.0, 180.0, -180.0, 0.0, 95.0, -200.0, math.inf, -math.inf, 1e200]
    events: list[StoredEvent] = []
    for i in range(400):
        lat = rnd.choice(special) if i % 7 == 0 else round(rnd.uniform(-90, 90), 1)
        lon = rnd.choice(special) if i % 5 == 0 else round(rnd.uniform(-180, 180), 1)
        events.append(make(uid=f"p{i}", time=T0 + i, lat=lat, lon=lon))
    reference = MemoryStore()
    await reference.put_many(events)
    store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
    try:
        await store.put_many(events)
        boxes: list[tuple[float, float, float, float]] = [
            (-180.0, -90.0, 180.0, 90.0),
            (170.0, -90.0, -170.0, 90.0),
            (-250.0, -100.0, 250.0, 100.0),  # off the globe: the exact test alone decides
            (0.0, 0.0, 0.0, 0.0),
            (180.0, 90.0, 180.0, 90.0),
            (-math.inf, -math.inf, math.inf, math.inf),  # infinite bounds: exact test alone
            (0.0, -1e300, 1e300, 1e300),  # beyond the index's float32 range: the same
            (100.0, -90.0, -1e39, 90.0),  # across the antimeridian, far west bound
        ]
        for _ in range(60):
            lat_a, lat_b = sorted((round(rnd.uniform(-95, 95), 1), round(rnd.uniform(-95, 95), 1)))
            lon_a, lon_b = round(rnd.uniform(-185, 185), 1), round(rnd.uniform(-185, 185), 1)
            boxes.append((lon_a, lat_a, lon_b, lat_b))
        for box in boxes:
            q = Query(bbox=box, limit=1000)
            want = [e.uid for e in await reference.history(q)]
            assert [e.uid for e in await store.history(q)] == want, box
    finally:
        await store.close()


@pytest.mark.parametrize("old", [10, 9])  # not a multiple of the batch, and one
async def test_prune_deletes_in_batches_until_done(schema: str, old: int) -> None:
    from liaison.storage.postgresql import PostgresStore

    store = await PostgresStore.open(POSTGRESQL_URL, schema=schema, prune_batch=3)
    try:
        await store.put_many([make(uid=f"o{i}", time=T0 - 10_000 + i) for i in range(old)])
        await store.put_many([make(uid="new", time=T0)])
        assert await store.prune(T0 - 1000) == old
        assert [e.uid for e in await store.history(Query())] == ["new"]
        assert await store.prune(T0 - 1000) == 0
    finally:
        await store.close()


async def test_an_unreachable_server_is_a_storage_error() -> None:
    from liaison.storage.postgresql import PostgresStore

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageError, match=r"postgresql postgresql://u:\*\*\*@127\.0\.0\.1"):
        await PostgresStore.open(f"postgresql://u:secret@127.0.0.1:{port}/x", connect_timeout_s=5)


async def test_values_postgresql_cannot_hold_fail_as_storage_error(schema: str) -> None:
    from liaison.storage.postgresql import PostgresStore

    store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
    try:
        with pytest.raises(StorageError):
            await store.put_many([make(uid="nul\x00inside")])  # text cannot hold NUL
        with pytest.raises(StorageError):
            await store.put_many([make(uid="big", time=2**63)])
        # The failed batches left nothing behind, and the store still works.
        assert await store.history(Query()) == []
        await store.put_many([make(uid="fine")])
        assert await store.latest_by_uid("fine") is not None
    finally:
        await store.close()


def test_the_default_path_does_not_import_asyncpg() -> None:
    code = (
        "import sys, liaison.app, liaison.cli, liaison.storage\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
