"""The mission stores keep log entries (memory, SQLite and PostgreSQL), and missions.db files
written before log entries existed are migrated on open; a file from a newer Liaison is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.storage.storage_support import MISSION_STORE_KINDS, opened_mission_store

from liaison.errors import StorageError
from liaison.storage.missions import (
    LogEntryRecord,
    MissionStore,
    SqliteMissionStore,
)

ENTRY = LogEntryRecord(
    id="e-1",
    content="bridge out",
    creator_uid="ANDROID-1",
    entry_uid=None,
    mission_names=("a", "b"),
    servertime=2_000,
    dtg=1_500,
    created=1_000,
    content_hashes=("ab" * 32,),
    keywords=("k",),
    creator="alice",
    sender_groups=frozenset({"Blue", "Red"}),
    label='{"c":"U"}',
)


@pytest.fixture(params=MISSION_STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MissionStore]:
    async with opened_mission_store(request.param, tmp_path) as s:
        yield s


async def test_log_entries_are_kept_replaced_and_deleted(store: MissionStore) -> None:
    await store.put_log(ENTRY)
    assert await store.load_logs() == [ENTRY]
    newer = replace(ENTRY, content="bridge repaired", servertime=3_000)
    await store.put_log(newer)
    assert await store.load_logs() == [newer]
    await store.delete_log("e-1")
    assert await store.load_logs() == []
    await store.close()
    with pytest.raises(StorageError):
        await store.load_logs()


async def test_an_older_file_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "missions.db"
    # A missions.db as the release before log entries wrote it: no logs table, no migrations.
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE missions (name TEXT PRIMARY KEY, record TEXT NOT NULL)")
    conn.commit()
    conn.close()
    store = await SqliteMissionStore.open(path)
    await store.put_log(ENTRY)
    await store.close()
    store = await SqliteMissionStore.open(path)
    assert await store.load_logs() == [ENTRY]
    await store.close()
    conn = sqlite3.connect(path)
    keys = {r[0] for r in conn.execute("SELECT key FROM meta")}
    assert {"migration:1-contents", "migration:2-logs"} <= keys
    conn.execute("INSERT INTO meta (key, value) VALUES ('migration:99-future', x'31')")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        await SqliteMissionStore.open(path)
