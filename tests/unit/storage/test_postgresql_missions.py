"""What only the PostgreSQL mission and file stores promise (storage/postgresql_missions.py):
several processes opening one database at once migrate it once, a newer schema is refused,
what is stored survives a reopen, one token secret and distinct node numbers for all."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from storage_support import POSTGRESQL_URL, postgresql_schema

from liaison.errors import StorageError
from liaison.storage.files import FileStore
from liaison.storage.missions import MissionRecord
from liaison.storage.postgresql_missions import PostgresFileIndex, PostgresMissionStore

REC = MissionRecord(
    name="ops", guid="g", creator="alice", creator_uid="A", groups=frozenset({"g"}), label=None
)


async def test_three_processes_opening_at_once_migrate_once_and_share_everything() -> None:
    async with postgresql_schema() as schema:
        stores = await asyncio.gather(
            *(PostgresMissionStore.open(POSTGRESQL_URL, schema=schema) for _ in range(3))
        )
        files = await asyncio.gather(
            *(PostgresFileIndex.open(POSTGRESQL_URL, schema=schema) for _ in range(3))
        )
        try:
            secrets = {await s.token_secret() for s in stores}
            assert len(secrets) == 1 and len(next(iter(secrets))) == 32
            numbers = [await s.node_number() for s in stores]
            assert len(set(numbers)) == 3
            await stores[0].put_mission(REC)
            assert [m.name for m in (await stores[2].load()).missions] == ["ops"]
            got = await stores[1].load_mission("ops", 10)
            assert got is not None and got[0].missions == [REC]
            assert await stores[1].load_mission("nope", 10) is None
        finally:
            for s in stores:
                await s.close()
            for f in files:
                await f.close()
        # Reopened: everything kept, migrations not run again.
        again = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        try:
            assert (await again.load()).missions == [REC]
            assert await again.token_secret() in secrets
        finally:
            await again.close()
        with pytest.raises(StorageError):
            await again.load()  # closed


async def test_a_newer_schema_is_refused() -> None:
    async with postgresql_schema() as schema:
        store = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        await store.close()
        index = await PostgresFileIndex.open(POSTGRESQL_URL, schema=schema)
        await index.close()
        conn = await asyncpg.connect(POSTGRESQL_URL)
        try:
            await conn.execute(f"UPDATE {schema}.mission_schema_version SET version = 99")
            await conn.execute(f"UPDATE {schema}.file_schema_version SET version = 99")
        finally:
            await conn.close()
        with pytest.raises(StorageError, match="mission schema version 99 is newer"):
            await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        with pytest.raises(StorageError, match="file schema version 99 is newer"):
            await FileStore.open_postgresql(POSTGRESQL_URL, schema=schema)


async def test_an_unreachable_server_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as info:
        await PostgresMissionStore.open("postgresql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)


async def test_a_large_file_is_read_back_with_bounded_memory() -> None:
    """A download from PostgreSQL holds a few chunks whatever the file's size: tracemalloc's
    peak while streaming a 20 MiB content stays under four chunks (measured: 3.6 MB, the chunk
    handed out, asyncpg's read buffer and the row it decodes)."""
    import hashlib
    import tracemalloc

    from liaison.storage.postgresql_missions import CHUNK_BYTES

    size = 20 * CHUNK_BYTES
    async with postgresql_schema() as schema:
        index = await PostgresFileIndex.open(POSTGRESQL_URL, schema=schema)
        try:
            data = bytes(range(256)) * (size // 256)
            digest = hashlib.sha256(data).hexdigest()
            await index.contents.put(digest, data)
            del data
            h = hashlib.sha256()
            tracemalloc.start()
            try:
                async for chunk in index.contents.chunks(digest):
                    h.update(chunk)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert h.hexdigest() == digest
            assert peak < 4 * CHUNK_BYTES, peak
        finally:
            await index.close()
