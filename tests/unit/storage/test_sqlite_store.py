"""What only the SQLite store promises: durability across restarts, WAL, errors, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_support import T0, make

from liaison.errors import StorageError
from liaison.storage import MemoryStore, Query, SqliteStore, StoredEvent
from liaison.storage.sqlite import SCHEMA_VERSION

TIMEOUT_S = 10


async def test_restart_keeps_latest_history_and_seq(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    await store.put_many(
        [
            make(uid="a", time=T0, label='{"c":"OFFICIAL"}'),
            make(uid="a", time=T0 + 1000, lat=1.0),
            make(uid="b", time=T0 + 500),
        ]
    )
    await store.delete_uid("b")
    latest_before = await store.latest(T0)
    history_before = await store.history(Query())
    await store.close()

    store = await SqliteStore.open(path)
    try:
        assert await store.latest(T0) == latest_before
        assert await store.history(Query()) == history_before
        assert await store.latest_by_uid("b") is None  # the delete is durable too
        await store.put_many([make(uid="c", time=T0)])
        c = await store.latest_by_uid("c")
        assert c is not None and c.seq == 4
    finally:
        await store.close()


async def test_seq_is_never_reused_after_prune_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    # Old and stale: prune removes them from history and from latest, leaving both tables empty.
    old = [make(uid=f"u{i}", time=T0 - 100_000, stale=T0 - 90_000) for i in range(3)]
    await store.put_many(old)
    assert await store.prune(T0) == 3
    await store.close()

    store = await SqliteStore.open(path)
    try:
        await store.put_many([make(uid="new")])
        got = await store.latest_by_uid("new")
        assert got is not None and got.seq == 4
    finally:
        await store.close()


async def test_database_is_in_wal_mode_and_checkpointed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    await store.put_many([make()])
    with sqlite3.connect(path) as probe:
        assert probe.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    probe.close()
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()  # writes go to the WAL while the store is open
    await store.close()
    # close() folds the WAL into the database: nothing is left in (or of) the -wal file.
    assert not wal.exists() or wal.stat().st_size == 0


async def test_schema_is_created_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    await store.close()
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"history", "latest", "schema_version"} <= tables
        indexed = {
            r[2]
            for name in ("history_uid", "history_time", "history_type")
            for r in probe.execute(f"PRAGMA index_info({name})")
        }
        assert {"uid", "time", "type"} <= indexed
        columns = {r[1]: r[2] for r in probe.execute("PRAGMA table_info(history)")}
        assert columns["xml"] == "BLOB" and columns["label"] == "TEXT"
    finally:
        probe.close()


async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    await store.close()
    probe = sqlite3.connect(path)
    with probe:
        probe.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    probe.close()
    with pytest.raises(StorageError, match="newer"):
        await SqliteStore.open(path)


async def test_a_corrupt_file_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    path.write_bytes(b"this is not a database, just some text that is long enough" * 100)
    with pytest.raises(StorageError, match=str(path)):
        await SqliteStore.open(path)


@pytest.mark.parametrize("where", ["missing-dir/liaison.db", "."])
async def test_an_unusable_path_raises_storage_error(tmp_path: Path, where: str) -> None:
    with pytest.raises(StorageError):
        await SqliteStore.open(tmp_path / where)


async def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(StorageError):
        await SqliteStore.open(tmp_path / "missing-dir" / "liaison.db")
    new = [t for t in threading.enumerate() if t.ident not in before]
    for t in new:  # the worker exits once it has closed the half-opened connection
        await asyncio.to_thread(t.join, TIMEOUT_S)
        assert not t.is_alive(), t.name


async def test_close_stops_the_store_thread(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "liaison.db")
    ours = [t for t in threading.enumerate() if t.name.startswith("liaison-sqlite")]
    assert len(ours) == 1
    await store.close()
    assert not ours[0].is_alive()


async def test_a_failing_batch_is_rolled_back_whole(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "liaison.db")
    try:
        # 2**63 does not fit SQLite's 64-bit INTEGER: the second row fails after the first went in.
        with pytest.raises(StorageError):
            await store.put_many([make(uid="good"), make(uid="bad", stale=2**63)])
        assert await store.history(Query()) == []
        assert await store.latest_by_uid("good") is None
        await store.put_many([make(uid="next")])
        got = await store.latest_by_uid("next")
        assert got is not None and got.seq == 1  # the failed batch used no seq numbers
    finally:
        await store.close()


async def test_large_batches_are_split_but_all_written(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "liaison.db", batch_max=4)
    try:
        await store.put_many([make(uid=f"u{i}", time=T0 + i) for i in range(10)])
        got = await store.history(Query())
        assert [e.seq for e in got] == list(range(10, 0, -1))
    finally:
        await store.close()


async def test_a_cancelled_put_many_still_writes_the_whole_batch(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "liaison.db", batch_max=5)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            task = asyncio.create_task(
                store.put_many([make(uid=f"u{i}", time=T0 + i) for i in range(50)])
            )
            await asyncio.sleep(0)  # the first chunk is on the store's thread now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(await store.history(Query())) == 50
    finally:
        await store.close()


async def test_prune_works_in_chunks(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "liaison.db", prune_chunk=3)
    try:
        await store.put_many([make(uid=f"u{i}", received=T0 - 1000) for i in range(10)])
        await store.put_many([make(uid="fresh", received=T0)])
        assert await store.prune(T0) == 10
        assert [e.uid for e in await store.history(Query())] == ["fresh"]
    finally:
        await store.close()


async def test_concurrent_put_many_calls_are_all_persisted(tmp_path: Path) -> None:
    path = tmp_path / "liaison.db"
    store = await SqliteStore.open(path)
    tasks_n, per_task = 40, 25

    async def producer(t: int) -> None:
        for i in range(0, per_task, 5):
            await store.put_many(
                [make(uid=f"t{t}-{j}", time=T0 + j) for j in range(i, min(i + 5, per_task))]
            )

    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        for t in range(tasks_n):
            tg.create_task(producer(t))
    await store.close()

    store = await SqliteStore.open(path)
    try:
        rows = await store.history(Query(limit=10_000))
        assert len(rows) == tasks_n * per_task
        assert sorted(e.seq for e in rows) == list(range(1, tasks_n * per_task + 1))
        assert len(await store.latest(T0)) == tasks_n * per_task
    finally:
        await store.close()


def test_open_rejects_nonsense_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_max"):
        asyncio.run(SqliteStore.open(tmp_path / "x.db", batch_max=0))
    assert not (tmp_path / "x.db").exists()


# --- the SQL matches the reference semantics ------------------------------------------------

UIDS = ["a", "b", "c"]
TYPES = ["a-f-G-U-C", "a-h-G", "A-f-G", "b-m-p-s-m", "b-t-f"]

stored_events = st.builds(
    make,
    uid=st.sampled_from(UIDS),
    type=st.sampled_from(TYPES),
    callsign=st.sampled_from([None, "ALPHA", "BRAVO"]),
    time=st.integers(T0 - 5, T0 + 5),
    stale=st.integers(T0 - 5, T0 + 5),
    received=st.integers(T0 - 5, T0 + 5),
    lat=st.sampled_from([-90.0, -10.0, 0.0, 10.0, 90.0]),
    lon=st.sampled_from([-180.0, -179.5, 0.0, 20.0, 179.5, 180.0]),
    label=st.sampled_from([None, '{"c":"OFFICIAL"}']),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(stored_events, max_size=6)),
        st.tuples(st.just("delete"), st.sampled_from(UIDS)),
        st.tuples(st.just("prune"), st.integers(T0 - 6, T0 + 6)),
    ),
    max_size=8,
)
optional_time = st.none() | st.integers(T0 - 6, T0 + 6)
queries = st.builds(
    Query,
    uid=st.none() | st.sampled_from(UIDS),
    type_prefix=st.sampled_from([None, "", "a", "a-", "a-f", "b-t", "A"]),
    callsign=st.sampled_from([None, "ALPHA"]),
    since=optional_time,
    until=optional_time,
    bbox=st.none()
    | st.tuples(
        st.sampled_from([-180.0, -179.0, 0.0, 179.0]),
        st.sampled_from([-90.0, -10.0, 0.0]),
        st.sampled_from([-179.0, 0.0, 20.0, 180.0]),
        st.sampled_from([10.0, 90.0]),
    ),
    limit=st.integers(1, 20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, query=queries, now=st.integers(T0 - 6, T0 + 6))
async def test_sqlite_answers_exactly_like_the_memory_reference(
    ops: list[tuple[str, object]], query: Query, now: int
) -> None:
    memory = MemoryStore()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await SqliteStore.open(Path(tmp) / "liaison.db")
        try:
            for op, arg in ops:
                if op == "put":
                    assert isinstance(arg, list)
                    batch: list[StoredEvent] = arg
                    await memory.put_many(batch)
                    await sqlite.put_many(batch)
                elif op == "delete":
                    assert isinstance(arg, str)
                    await memory.delete_uid(arg)
                    await sqlite.delete_uid(arg)
                else:
                    assert isinstance(arg, int)
                    assert await memory.prune(arg) == await sqlite.prune(arg)
            assert await sqlite.latest(now) == await memory.latest(now)
            for uid in UIDS:
                assert await sqlite.latest_by_uid(uid) == await memory.latest_by_uid(uid)
            assert await sqlite.history(query) == await memory.history(query)
        finally:
            await sqlite.close()
