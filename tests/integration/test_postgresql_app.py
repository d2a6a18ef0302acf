"""`liaison serve --storage postgresql://...` end to end: a real server on a fresh PostgreSQL
database (created and dropped here; the store's migration creates PostGIS in it), real TAK
clients, a restart. Skipped with the reason without PostgreSQL, failed under
LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from liaison.storage.base import Query
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, connect_tcp, sa_event

POSTGRESQL_URL = os.environ.get(
    "LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a database made for the block, dropped after it (skips without PostgreSQL)."""
    try:
        import asyncpg

        admin = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
    except (ImportError, OSError, TimeoutError) as exc:
        reason = f"PostgreSQL at {POSTGRESQL_URL} is unavailable: {exc!r}"
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL tests required but {reason}")
        pytest.skip(reason)
    name = f"liaison_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        parts = urlsplit(POSTGRESQL_URL)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """The URL of a database made for this test, dropped after it."""
    async with fresh_database() as url:
        yield url


async def test_serve_on_postgresql_keeps_latest_state_and_history(
    start_server: ServerFactory, database_url: str
) -> None:
    async with start_server(storage=database_url) as server:
        assert type(server.store).__name__ == "PostgresStore"
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        async with clients(a):
            await a.send(sa_event("uid-pg", "KEEP", lat=10.5, lon=20.5))
            await a.send(sa_event("uid-pg", "KEEP", lat=48.5, lon=2.5))
            await a.send(sa_event("uid-elsewhere", "AWAY", lat=-30.0, lon=150.0))
            for _ in range(50):  # the writer is asynchronous: bounded wait for the rows
                if len(await server.store.history(Query())) == 3:
                    break
                await asyncio.sleep(0.1)
    # No SQLite event database was made: the events went to PostgreSQL only.
    assert not (server.config.data_dir / "liaison.db").exists()
    async with start_server(storage=database_url) as server:
        assert server.tcp is not None
        late = await connect_tcp(server.tcp.port, "after-restart")
        async with clients(late):
            got = await late.wait_for(b'uid="uid-pg"')
            assert b'lat="48.5"' in got
        assert len(await server.store.history(Query(uid="uid-pg"))) == 2
        in_box = await server.store.history(Query(bbox=(0.0, 40.0, 5.0, 50.0)))
        assert [e.uid for e in in_box] == ["uid-pg"]
        assert in_box[0].lat == 48.5
