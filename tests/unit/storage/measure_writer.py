"""Run by hand: how many events per second StoreWriter + SqliteStore persist (not a test).

    .venv/bin/python tests/unit/storage/measure_writer.py [events] [max_batch]

Submits ``events`` realistic records (~600 bytes of XML each, 200 uids) in bursts of 1,000 as fast
as the queue accepts them, lets the writer drain in batches, and reports the rate, the final file
size and the longest the event loop was kept from running meanwhile.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from liaison.storage import SqliteStore, StoredEvent, StoreWriter

T0 = 1_767_225_600_000


def record(i: int) -> StoredEvent:
    uid = f"ANDROID-{i % 200:04d}"
    xml = (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="2026-01-01T00:00:00Z"'
        ' start="2026-01-01T00:00:00Z" stale="2026-01-01T00:05:00Z"><point lat="51.5" lon="-0.1"'
        ' hae="12" ce="9999999" le="9999999"/><detail><contact callsign="UNIT-'
        f'{i % 200}" endpoint="*:-1:stcp"/><__group name="Cyan" role="Team Member"/>'
        '<status battery="88"/><takv device="Pixel" platform="ATAK-CIV" os="34" version="5.2"/>'
        '<track course="90" speed="1.2"/><precisionlocation altsrc="GPS" geopointsrc="GPS"/>'
        "</detail></event>"
    ).encode()
    return StoredEvent(
        uid=uid,
        type="a-f-G-U-C",
        how="m-g",
        time=T0 + i,
        start=T0 + i,
        stale=T0 + i + 300_000,
        lat=51.5,
        lon=-0.1,
        hae=12.0,
        callsign=f"UNIT-{i % 200}",
        sender=f"user{i % 200}",
        sender_groups=frozenset({"Cyan"}),
        received=T0 + i,
        xml=xml,
    )


async def measure(total: int, max_batch: int) -> None:
    records = [record(i) for i in range(total)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "liaison.db"
        store = await SqliteStore.open(path, batch_max=max_batch)
        writer = StoreWriter(store, max_pending=total, max_batch=max_batch)
        worst_stall = 0.0

        async def probe() -> None:
            # The longest the event loop went without running us: shows it never waits on disk.
            nonlocal worst_stall
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                worst_stall = max(worst_stall, time.perf_counter() - before - 0.001)

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(writer.run())
            prober = tg.create_task(probe())
            await asyncio.sleep(0)
            start = time.perf_counter()
            for i in range(0, total, 1000):  # arrive in bursts, yielding between them
                for rec in records[i : i + 1000]:
                    writer.submit(rec)
                await asyncio.sleep(0)
            await writer.flush()
            elapsed = time.perf_counter() - start
            task.cancel()
            prober.cancel()
        await store.close()
        size = path.stat().st_size
    print(
        f"{total} events, max_batch {max_batch}: {elapsed:.2f} s, {total / elapsed:,.0f} events/s,"
        f" dropped {writer.dropped}, database {size / 1e6:.1f} MB,"
        f" worst event-loop stall {worst_stall * 1000:.1f} ms"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(measure(args[0] if args else 50_000, args[1] if len(args) > 1 else 500))
