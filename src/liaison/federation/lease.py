"""The federation lease of a cluster: one node at a time runs the partner links.

In a cluster (docs/deployment.md, "Several nodes") every node has the same ``[federation]``
table; the node that holds the lease runs every partner link, the others wait and keep trying
to take it. The lease is one row of ``federation_lease`` in the cluster's PostgreSQL (the same
database as the event store and, in a cluster, the links' outboxes: federation/pg_outbox.py):

* ``holder`` (the node's name, NULL when released), ``epoch`` (the fencing token: raised by one
  at every acquisition) and ``expires_at``. Every time is the database's clock (``now()``): the
  nodes' clocks never decide who holds it.
* A node takes it when it is free (released, or expired by the database's clock), which raises
  the epoch; the holder renews it every ``lease_renew_s``, each renewal pushing ``expires_at`` to
  ``now() + lease_ttl_s``. A clean shutdown releases it (``holder = NULL``, expired now), so
  another node takes over at its next attempt instead of after the TTL.
* The holder stops its links at once when a renewal says it no longer holds the lease, and when
  it could not renew for ``lease_ttl_s - lease_renew_s`` seconds of its own monotonic clock
  counted from *before* the last successful renewal was sent (the database cannot have let it
  expire earlier, so the node stops before any other node can take over).
* Fencing: every write to an outbox happens in a transaction that first reads the lease row
  ``FOR SHARE`` and checks the epoch the outbox was opened with (pg_outbox.py). An acquisition
  updates that row, so it waits for such a transaction to end, and once it is committed no
  transaction of the old epoch can commit any more: a node that lost the lease (paused,
  partitioned) cannot write to an outbox, and, since rows are sent only after their write is
  committed, cannot send anything it numbered after another node took over.

One lease covers every peer of the federation (not one per peer): the federation listener, the
stream consumer that feeds the links and the relay between peers are one per federation, and
one node runs them all (docs/deployment.md explains the choice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from liaison import pg_locks
from liaison.errors import StorageError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key held while creating the federation tables (pg_locks.py), so
# nodes starting at once create them once.
_SCHEMA_LOCK = pg_locks.FEDERATION_SCHEMA

# The tables (created if missing; versioned by their own meta row, apart from the event store's
# schema_version so the store's migrations and these never interfere).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS federation_lease (
        name text PRIMARY KEY,
        holder text,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        acquired_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS federation_outbox (
        peer text NOT NULL,
        id bigint NOT NULL,
        seq bigint,
        priority integer NOT NULL,
        coalesce_key text,
        uid text NOT NULL,
        type text NOT NULL,
        label_id text NOT NULL,
        sha256 text NOT NULL,
        payload bytea NOT NULL,
        queued_ms bigint NOT NULL,
        fed_groups text,
        PRIMARY KEY (peer, id)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS federation_outbox_seq ON federation_outbox (peer, seq)"
    " WHERE seq IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS federation_state (
        peer text NOT NULL,
        key text NOT NULL,
        value bigint NOT NULL,
        PRIMARY KEY (peer, key)
    )""",
    """CREATE TABLE IF NOT EXISTS federation_meta (
        peer text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (peer, key)
    )""",
)


class FencedError(StorageError):
    """The lease this outbox was opened under is no longer this node's (another node took it)."""


async def ensure_schema(pool: Any) -> None:
    """Create the federation tables if missing (under an advisory lock)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        for statement in SCHEMA:
            await conn.execute(statement)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds the lease, as the database says (``liaison federation status``)."""

    holder: str | None
    epoch: int
    expires_in_s: float  # negative: expired


class Lease:
    """The lease ``name`` for the node ``node``; every call is one short statement."""

    def __init__(self, pool: Any, name: str, node: str, ttl_s: float) -> None:
        self._pool = pool
        self.name = name
        self.node = node
        self.ttl_s = ttl_s

    async def try_acquire(self) -> int | None:
        """Take the lease if it is free (released or expired by the database's clock); its new
        epoch, or None when another node holds it."""
        row = await self._pool.fetchrow(
            "INSERT INTO federation_lease AS l (name, holder, epoch, expires_at, acquired_at)"
            " VALUES ($1, $2, 1, now() + make_interval(secs => $3), now())"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1,"
            " expires_at = excluded.expires_at, acquired_at = now()"
            " WHERE l.holder IS NULL OR l.expires_at <= now()"
            " RETURNING epoch",
            self.name,
            self.node,
            self.ttl_s,
        )
        return None if row is None else int(row["epoch"])

    async def renew(self, epoch: int) -> bool:
        """Push the expiry to ``now() + ttl``; False when this node no longer holds ``epoch``."""
        row = await self._pool.fetchrow(
            "UPDATE federation_lease SET expires_at = now() + make_interval(secs => $4)"
            " WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()"
            " RETURNING epoch",
            self.name,
            self.node,
            epoch,
            self.ttl_s,
        )
        return row is not None

    async def release(self, epoch: int) -> None:
        """Give the lease up (clean shutdown): the next node's attempt takes it at once."""
        await self._pool.execute(
            "UPDATE federation_lease SET holder = NULL, expires_at = now()"
            " WHERE name = $1 AND holder = $2 AND epoch = $3",
            self.name,
            self.node,
            epoch,
        )

    async def info(self) -> LeaseInfo | None:
        row = await self._pool.fetchrow(
            "SELECT holder, epoch, EXTRACT(EPOCH FROM expires_at - now())::float8 AS left_s"
            " FROM federation_lease WHERE name = $1",
            self.name,
        )
        if row is None:
            return None
        holder = row["holder"] if row["left_s"] > 0 else None
        return LeaseInfo(holder=holder, epoch=int(row["epoch"]), expires_in_s=float(row["left_s"]))
