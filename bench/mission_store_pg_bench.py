"""Mission store write benchmark: SQLite vs PostgreSQL (docs/storage.md, "Missions and files in
PostgreSQL").

The mission service writes what a burst of mission CoT makes: per event one ``put_item`` (an
item with ~500 bytes of XML) and one ``add_change``. This writes a mission and 10 batches of
1,000 such writes (500 items, 500 changes) through ``write_batch`` into each store and reports
wall time and this process's CPU time (the driver's share of the work; PostgreSQL's own CPU is
in its server process). PostgreSQL runs in a schema made for the run and dropped after it.

    .venv/bin/python bench/mission_store_pg_bench.py
    LIAISON_TEST_POSTGRESQL=postgresql://u@host/db .venv/bin/python bench/mission_store_pg_bench.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import asyncpg

from liaison.storage.base import StoredEvent
from liaison.storage.missions import (
    MissionChangeRecord,
    MissionItem,
    MissionRecord,
    MissionStore,
    MissionWrite,
    SqliteMissionStore,
)
from liaison.storage.postgresql_missions import PostgresMissionStore

URL = os.environ.get("LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
BATCHES = 10
EVENTS_PER_BATCH = 500


def _event(uid: str) -> StoredEvent:
    return StoredEvent(
        seq=0,
        uid=uid,
        type="a-f-G",
        how="m-g",
        time=1,
        start=1,
        stale=2,
        lat=1.0,
        lon=2.0,
        hae=0.0,
        callsign="C",
        sender="a",
        sender_groups=frozenset({"g"}),
        received=1,
        xml=b"<event/>" * 60,
        label=None,
    )


def _batches() -> list[list[MissionWrite]]:
    rec = MissionRecord(
        name="m", guid="g", creator="a", creator_uid="A", groups=frozenset(), label=None
    )
    out = [[MissionWrite("put_mission", (rec,))]]
    seq = 0
    for _ in range(BATCHES):
        batch: list[MissionWrite] = []
        for i in range(EVENTS_PER_BATCH):
            seq += 1
            item = MissionItem(
                mission="m", uid=f"u{i}", creator_uid="A", timestamp=seq, event=_event(f"u{i}")
            )
            change = MissionChangeRecord(
                mission="m",
                type="ADD_CONTENT",
                creator_uid="A",
                timestamp=seq,
                content_uid=f"u{i}",
                seq=seq,
            )
            batch += [MissionWrite("put_item", (item,)), MissionWrite("add_change", (change,))]
        out.append(batch)
    return out


async def _run(store: MissionStore, label: str) -> None:
    batches = _batches()
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        await store.write_batch(batch)
    n = sum(len(b) for b in batches)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"{label}: {n} writes in {len(batches)} batches: {wall * 1000:.0f} ms wall,"
        f" {cpu * 1000:.0f} ms CPU here ({cpu / n * 1e6:.1f} us/write)"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        sqlite = await SqliteMissionStore.open(Path(d) / "missions.db")
        await _run(sqlite, "sqlite")
        await sqlite.close()
    schema = f"liaison_bench_{secrets.token_hex(4)}"
    pg = await PostgresMissionStore.open(URL, schema=schema)
    try:
        await _run(pg, "postgresql")
    finally:
        await pg.close()
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
