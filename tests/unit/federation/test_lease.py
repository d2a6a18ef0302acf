"""The federation lease and its fencing, on a real PostgreSQL (federation/lease.py, pg_outbox.py).

Skipped without PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest

from liaison.federation.lease import FencedError, Lease
from liaison.federation.outbox import QueuedRelease
from liaison.federation.pg_outbox import PgOutbox
from tests.unit.federation.pg_support import LEASE, pg_pool


def item(uid: str) -> QueuedRelease:
    return QueuedRelease(
        payload=f"<event uid='{uid}'/>".encode(),
        sha256="0" * 64,
        label_id="sha256:x",
        uid=uid,
        type="b-t-f",
        priority=2,
        coalesce_key=None,
        queued_ms=0,
    )


async def expire(pool: Any) -> None:
    """What the TTL does to a holder that stopped renewing (a pause, a partition, kill -9)."""
    await pool.execute(
        "UPDATE federation_lease SET expires_at = now() - interval '1 second' WHERE name = $1",
        LEASE,
    )


async def test_one_holder_at_a_time_and_a_release_hands_over_at_once() -> None:
    async with pg_pool() as pool:
        a, b = Lease(pool, LEASE, "node-a", 30.0), Lease(pool, LEASE, "node-b", 30.0)
        assert await a.try_acquire() == 1
        assert await b.try_acquire() is None  # held, not expired
        assert await a.try_acquire() is None  # not even by the holder: only renew extends
        assert await a.renew(1) and not await b.renew(1)
        info = await b.info()
        assert info is not None and info.holder == "node-a" and info.epoch == 1
        assert 25 < info.expires_in_s <= 30
        await a.release(1)
        assert await b.try_acquire() == 2  # released: no TTL to wait for
        assert not await a.renew(1)
        await expire(pool)
        assert not await b.renew(2)  # expired: renewing is not taking it back
        assert await a.try_acquire() == 3


async def test_a_holder_that_lost_the_lease_cannot_write_take_or_ack() -> None:
    async with pg_pool() as pool:
        a, b = Lease(pool, LEASE, "node-a", 30.0), Lease(pool, LEASE, "node-b", 30.0)
        epoch_a = await a.try_acquire()
        assert epoch_a == 1
        old = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch_a)
        old.put_many([item("u1"), item("u2"), item("u3")], 10)
        old.start_connection(0)
        assert [r.seq for r in old.take(1)] == [1]
        await old.sync()

        # node-a pauses past the TTL; node-b takes over and continues the numbers.
        await expire(pool)
        epoch_b = await b.try_acquire()
        assert epoch_b == 2
        new = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch_b)
        assert new.last_seq == 1 and new.backlog == 3 and new.stream_seq == 10

        # node-a wakes up: whatever it does with its stale epoch never reaches the database,
        # and it is told before sending (sync is what the link awaits before writing rows).
        old.put_many([item("stale")], 99)
        rows = old.take(10)
        assert [r.seq for r in rows] == [2, 3, 4]  # numbered in its memory only
        old.ack(4)
        with pytest.raises(FencedError):
            async with asyncio.timeout(10):
                await old.sync()
        assert old.fenced is not None
        with pytest.raises(FencedError):
            old.put_many([item("later")])
        with pytest.raises(FencedError):
            old.record_applied(3)
        assert not await a.renew(epoch_a)
        await a.release(epoch_a)  # a no-op: node-b holds it
        info = await a.info()
        assert info is not None and info.holder == "node-b"

        # The database holds what node-a committed before it lost the lease, nothing after.
        again = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch_b)
        assert again.last_seq == 1 and again.last_acked == 0 and again.stream_seq == 10
        assert again.pending_uids() == ["u1", "u2", "u3"]
        new.start_connection(0)
        assert [(r.uid, r.seq) for r in new.take(10)] == [("u1", 1), ("u2", 2), ("u3", 3)]
        await new.sync()
        for box in (old, new, again):
            await box.aclose()


async def test_an_acquisition_waits_for_a_commit_of_the_old_epoch_in_progress() -> None:
    """The fence is the lease row read FOR SHARE: a takeover cannot slip in between the epoch
    check and the commit of the old holder's transaction."""
    async with pg_pool() as pool:
        a, b = Lease(pool, LEASE, "node-a", 30.0), Lease(pool, LEASE, "node-b", 30.0)
        assert await a.try_acquire() == 1
        await expire(pool)
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT epoch FROM federation_lease WHERE name = $1 FOR SHARE", LEASE
            )
            assert row["epoch"] == 1
            taking = asyncio.create_task(b.try_acquire())
            await asyncio.sleep(0.3)
            assert not taking.done()  # blocked on the old holder's transaction
        async with asyncio.timeout(10):
            assert await taking == 2


async def test_a_refused_journal_write_changes_nothing_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """put_many and take write the journal before memory: a refusal (journal full, or fenced)
    numbers nothing and queues nothing, so the next take cannot give one number twice."""
    from liaison.errors import StorageError
    from liaison.federation import pg_outbox

    async with pg_pool() as pool:
        lease = Lease(pool, LEASE, "node-a", 30.0)
        epoch = await lease.try_acquire()
        assert epoch == 1
        box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch)
        pos = QueuedRelease(
            payload=b"<event uid='p'/>",
            sha256="1" * 64,
            label_id="sha256:x",
            uid="p",
            type="a-f-G",
            priority=2,
            coalesce_key="p",
            queued_ms=0,
        )
        box.put_many([item("u1"), pos, item("u2")], 5)
        box.start_connection(0)
        monkeypatch.setattr(pg_outbox, "MAX_JOURNAL", len(box._journal))
        with pytest.raises(StorageError):
            box.take(2)
        with pytest.raises(StorageError):
            box.put_many([item("lost"), pos], 9)  # would coalesce "p" away
        assert box.last_seq == 0 and box.backlog == 3 and box.stream_seq == 5
        assert box.pending_uids() == ["u1", "p", "u2"]
        monkeypatch.setattr(pg_outbox, "MAX_JOURNAL", 100_000)
        rows = box.take(10)
        assert [(r.uid, r.seq) for r in rows] == [("u1", 1), ("p", 2), ("u2", 3)]
        await box.sync()
        again = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch)
        assert again.last_seq == 3 and again.pending_uids() == ["u1", "p", "u2"]
        for b in (box, again):
            await b.aclose()


async def test_a_permanent_commit_error_stops_the_outbox_at_once() -> None:
    """Only connection and timeout errors are tried again; anything else stops the outbox as
    fenced, so the lease holder stops the links (leased.py _watch_fence)."""
    from liaison.errors import StorageError

    async with pg_pool() as pool:
        lease = Lease(pool, LEASE, "node-a", 30.0)
        epoch = await lease.try_acquire()
        assert epoch == 1
        retried: list[int] = []
        box = await PgOutbox.open(
            pool, "ukr", lease=LEASE, epoch=epoch, on_retry=lambda: retried.append(1)
        )
        await pool.execute("ALTER TABLE federation_outbox RENAME COLUMN uid TO uid_gone")
        box.put_many([item("u1")])
        with pytest.raises(StorageError, match="commit failed"):
            async with asyncio.timeout(3):  # not SYNC_TIMEOUT_S: no attempt is repeated
                await box.sync()
        assert box.fenced is not None and retried == []
        with pytest.raises(StorageError):
            box.put_many([item("u2")])
        await box.aclose()


async def test_timeouts_are_tried_again_counted_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from liaison.errors import StorageError
    from liaison.federation import pg_outbox

    monkeypatch.setattr(pg_outbox, "RETRY_S", 0.01)
    monkeypatch.setattr(pg_outbox, "MAX_RETRIES", 3)
    async with pg_pool() as pool:
        lease = Lease(pool, LEASE, "node-a", 30.0)
        epoch = await lease.try_acquire()
        assert epoch == 1
        retried: list[int] = []
        box = await PgOutbox.open(
            pool,
            "ukr",
            lease=LEASE,
            epoch=epoch,
            tx_timeout=0.000001,  # every transaction times out
            on_retry=lambda: retried.append(1),
        )
        box.put_many([item("u1")])
        with pytest.raises(StorageError, match="4 times in a row"):
            async with asyncio.timeout(5):
                await box.sync()
        assert len(retried) == 3 and box.retries == 3 and box.fenced is not None
        await box.aclose()


def test_a_transaction_ends_well_before_the_renewal_gives_up() -> None:
    """An outbox transaction holds the lease row FOR SHARE, which the renewal waits for: the
    renewal due lease_renew_s after the last one must still succeed before lease_ttl_s -
    lease_renew_s, so a transaction is limited below lease_ttl_s - 2 * lease_renew_s."""
    from liaison.federation.config import DEFAULT_LEASE_RENEW_S, DEFAULT_LEASE_TTL_S
    from liaison.federation.pg_outbox import tx_timeout_s

    for ttl, renew in [(DEFAULT_LEASE_TTL_S, DEFAULT_LEASE_RENEW_S), (30.0, 5.0), (60.0, 1.0)]:
        limit = tx_timeout_s(ttl, renew)
        assert 0 < limit <= (ttl - 2 * renew) / 2
    assert tx_timeout_s(DEFAULT_LEASE_TTL_S, DEFAULT_LEASE_RENEW_S) == 2.5


async def test_stopping_the_links_runs_every_step_and_releases_the_lease_last(
    tmp_path: Path,
) -> None:
    """A step of stopping that fails (here the links' close) is logged and counted; the
    outboxes still commit and stop, the status is written and the lease released."""
    from liaison.federation.leased import LEASE_NAME, LeasedFederation
    from liaison.federation.status import status_path
    from liaison.metrics import Metrics
    from tests.unit.federation.fed_support import fed_config

    class FailingClose:
        async def close(self) -> None:
            raise RuntimeError("the links' close failed")

    assert LEASE_NAME == LEASE
    async with pg_pool() as pool:
        leased = LeasedFederation(
            config=fed_config(),
            storage_url="postgresql://127.0.0.1/test",
            node="node-a",
            bus=cast(Any, None),  # not used by the stop
            router=cast(Any, None),
            gate=cast(Any, None),
            audit=cast(Any, None),
            data_dir=tmp_path,
            server_cert=tmp_path / "cert.pem",
            server_key=tmp_path / "key.pem",
            clock_ms=lambda: 1_000,
            metrics=Metrics(),
            links_router=lambda: cast(Any, None),
        )
        leased._pool = pool
        leased._lease = lease = Lease(pool, LEASE, "node-a", 30.0)
        epoch = await lease.try_acquire()
        assert epoch == 1
        box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=epoch)
        box.put_many([item("u1")], 7)
        async with asyncio.timeout(20):
            await leased._stop_links(epoch, None, cast(Any, FailingClose()), {"ukr": box})
        assert leased.m_cleanup.get("links") == 1 and leased.m_cleanup.total() == 1
        assert not box.unsynced  # aclose committed it
        again = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=2)
        assert again.pending_uids() == ["u1"] and again.stream_seq == 7
        again.close()
        info = await lease.info()
        assert info is not None and info.holder is None  # released
        doc = json.loads(status_path(tmp_path).read_text())
        assert doc["lease"]["held_here"] is False and leased.epoch is None
