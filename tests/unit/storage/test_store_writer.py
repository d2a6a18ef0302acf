"""StoreWriter, the router's bounded write queue, against every Store implementation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from storage_support import T0, make

from liaison.errors import StorageError
from liaison.storage import Query, Store, StoredEvent, StoreWriter

# Upper bound for any one test's waiting; the work itself takes milliseconds.
TIMEOUT_S = 10


class Recording:
    """A Store that remembers each put_many batch size and can be made to hold or fail writes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batches: list[int] = []
        self.started = asyncio.Event()  # set when a put_many begins
        self.gate: asyncio.Event | None = None  # when set to an unset Event, writes wait for it
        self.fail = False

    async def put_many(self, events: Sequence[StoredEvent]) -> None:
        self.batches.append(len(events))
        self.started.set()
        if self.fail:
            raise StorageError("disk on fire")
        if self.gate is not None:
            await self.gate.wait()
        await self.inner.put_many(events)

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        return await self.inner.latest(now_ms)

    async def latest_by_uid(self, uid: str) -> StoredEvent | None:
        return await self.inner.latest_by_uid(uid)

    async def history(self, query: Query) -> list[StoredEvent]:
        return await self.inner.history(query)

    async def delete_uid(self, uid: str) -> None:
        await self.inner.delete_uid(uid)

    async def prune(self, older_than_ms: int) -> int:
        return await self.inner.prune(older_than_ms)

    async def close(self) -> None:
        await self.inner.close()


def events(n: int, prefix: str = "e") -> list[StoredEvent]:
    return [make(uid=f"{prefix}{i}", time=T0 + i) for i in range(n)]


async def stored_uids(store: Store) -> list[str]:
    return sorted(e.uid for e in await store.history(Query(limit=10_000)))


async def test_writer_writes_in_batches_of_at_most_max_batch(store: Store) -> None:
    rec = Recording(store)
    writer = StoreWriter(rec, max_batch=10)
    assert all(writer.submit(ev) for ev in events(25))
    assert writer.pending == 25
    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        await writer.flush()
        assert rec.batches == [10, 10, 5]
        assert writer.pending == 0
        assert len(await stored_uids(store)) == 25
        task.cancel()
    assert writer.dropped == 0


async def test_events_queued_during_a_write_form_the_next_batch(store: Store) -> None:
    rec = Recording(store)
    rec.gate = asyncio.Event()
    writer = StoreWriter(rec, max_batch=100)
    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        writer.submit(make(uid="first"))
        await rec.started.wait()  # the lone event went out at once, alone
        for ev in events(7):
            writer.submit(ev)
        rec.gate.set()
        await writer.flush()
        assert rec.batches == [1, 7]
        task.cancel()
    assert len(await stored_uids(store)) == 8


async def test_flush_returns_at_once_when_nothing_is_pending(store: Store) -> None:
    writer = StoreWriter(store)
    async with asyncio.timeout(TIMEOUT_S):
        await writer.flush()  # run() not even started: nothing to wait for
    assert writer.pending == 0


async def test_cancelling_run_flushes_what_is_queued(store: Store) -> None:
    rec = Recording(store)
    writer = StoreWriter(rec, max_batch=10)
    async with asyncio.timeout(TIMEOUT_S):
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0)  # one loop turn: run() starts and waits for work
        for ev in events(30):
            assert writer.submit(ev)
        task.cancel()  # before run() could take anything from the queue
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rec.batches == [10, 10, 10]
    assert len(await stored_uids(store)) == 30
    assert writer.pending == 0 and writer.dropped == 0
    # A stopped writer keeps nothing more: submit refuses and counts, flush does not hang.
    assert writer.submit(make(uid="late")) is False
    assert writer.dropped == 1
    async with asyncio.timeout(TIMEOUT_S):
        await writer.flush()


async def test_cancelling_during_a_write_keeps_every_event_exactly_once(store: Store) -> None:
    rec = Recording(store)
    writer = StoreWriter(rec, max_batch=10)
    async with asyncio.timeout(TIMEOUT_S):
        task = asyncio.create_task(writer.run())
        for ev in events(50):
            writer.submit(ev)
        await rec.started.wait()  # a batch is being written now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await stored_uids(store) == sorted(f"e{i}" for i in range(50))
    assert sum(rec.batches) == 50
    assert writer.pending == 0 and writer.dropped == 0


async def test_a_full_queue_refuses_and_counts_drops(store: Store) -> None:
    drops: list[int] = []
    writer = StoreWriter(store, max_pending=5, on_drop=drops.append)
    accepted = [writer.submit(ev) for ev in events(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert writer.dropped == 3
    assert drops == [1, 1, 1]
    assert writer.pending == 5 == writer.max_pending
    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        await writer.flush()
        assert writer.submit(make(uid="room-again"))  # the queue drained: accepted again
        await writer.flush()
        task.cancel()
    assert await stored_uids(store) == ["e0", "e1", "e2", "e3", "e4", "room-again"]


async def test_store_failures_are_counted_logged_once_and_survived(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recording(store)
    rec.fail = True
    drops: list[int] = []
    writer = StoreWriter(rec, on_drop=drops.append)
    caplog.set_level(logging.INFO, logger="liaison.storage.base")
    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        for ev in events(3):
            writer.submit(ev)
        await writer.flush()  # returns: the batch is done with, though lost
        writer.submit(make(uid="also-lost"))
        await writer.flush()
        assert writer.dropped == 4
        assert drops == [3, 1]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1  # once per episode, not once per batch
        assert "disk on fire" in errors[0].getMessage()

        rec.fail = False
        writer.submit(make(uid="kept"))
        await writer.flush()
        assert any("recovered" in r.getMessage() for r in caplog.records)
        task.cancel()
    assert await stored_uids(store) == ["kept"]


async def test_run_cannot_be_started_twice(store: Store) -> None:
    writer = StoreWriter(store)
    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await writer.run()
        task.cancel()


def test_writer_limits_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        StoreWriter(store, max_pending=0)
    with pytest.raises(ValueError, match="max_batch"):
        StoreWriter(store, max_batch=0)
