"""Outboxes of either kind for the outbox contract tests, and a PostgreSQL pool on a fresh schema
(tests/unit/storage/storage_support.py: skipped without PostgreSQL, failed under
LIAISON_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from liaison.federation.lease import ensure_schema
from liaison.federation.outbox import Outbox
from liaison.federation.pg_outbox import PgOutbox
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema

LEASE = "federation"


@contextlib.asynccontextmanager
async def pg_pool() -> AsyncIterator[Any]:
    """A pool whose connections search a fresh schema (dropped after), the tables made."""
    async with postgresql_schema() as schema:
        import asyncpg

        conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            POSTGRESQL_URL,
            min_size=1,
            max_size=4,
            timeout=5,
            server_settings={"search_path": f"{schema}, public"},
        )
        try:
            await ensure_schema(pool)
            yield pool
        finally:
            await pool.close()


class Boxes:
    """Opens one peer's outbox of one kind again and again (a reopen, or the next holder)."""

    def __init__(self, kind: str, path: Path, pool: Any = None, epoch: int = 1) -> None:
        self.kind = kind
        self.path = path
        self.pool = pool
        self.epoch = epoch

    async def open(self) -> Outbox | PgOutbox:
        if self.kind == "postgresql":
            return await PgOutbox.open(self.pool, "ukr", lease=LEASE, epoch=self.epoch)
        return Outbox.open(self.path, durable=False)

    async def close(self, box: Outbox | PgOutbox) -> None:
        if isinstance(box, PgOutbox):
            await box.aclose()
        else:
            box.close()


@contextlib.asynccontextmanager
async def boxes_of(kind: str, path: Path) -> AsyncIterator[Boxes]:
    if kind != "postgresql":
        yield Boxes(kind, path)
        return
    async with pg_pool() as pool:
        # The outbox is written under a lease epoch (federation/lease.py): this test holds 1.
        await pool.execute(
            "INSERT INTO federation_lease (name, holder, epoch, expires_at, acquired_at)"
            " VALUES ($1, 'test', 1, now() + interval '1 hour', now())",
            LEASE,
        )
        yield Boxes(kind, path, pool)
