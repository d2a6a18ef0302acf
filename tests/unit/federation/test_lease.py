"""The federation lease and its fencing, on a real PostgreSQL (federation/lease.py, pg_outbox.py).

Skipped without PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
