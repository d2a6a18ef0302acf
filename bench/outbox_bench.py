"""In-process benchmark: the cost of a partner link's outbox, SQLite (one node) or PostgreSQL
(a cluster's lease holder, federation/pg_outbox.py).

The link's cycle for N releases, in batches of B: ``put_many`` (one batch), ``take`` (numbers
them), ``sync`` (what the link awaits before rows leave), ``ack``. Printed: this process's CPU
per release (``time.process_time``: the event loop's share, PostgreSQL's own work is not in it)
and the wall time per release (includes the database's commits; the machine is shared).

    .venv/bin/python bench/outbox_bench.py --kind sqlite --releases 20000 --batch 100
    .venv/bin/python bench/outbox_bench.py --kind postgresql --releases 20000 --batch 100

PostgreSQL: LIAISON_TEST_POSTGRESQL (default postgresql://postgres@127.0.0.1:5432/test), in a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from liaison.federation.lease import ensure_schema
from liaison.federation.outbox import Outbox, QueuedRelease
from liaison.federation.pg_outbox import PgOutbox

URL = os.environ.get("LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")


def release(i: int) -> QueuedRelease:
    return QueuedRelease(
        payload=(f"<event uid='u{i}' type='b-m-p-s-m'>" + "x" * 600 + "</event>").encode(),
        sha256=f"{i:064x}",
        label_id="sha256:" + "0" * 64,
        uid=f"u{i}",
        type="b-m-p-s-m",
        priority=2,
        coalesce_key=None,
        queued_ms=i,
    )


async def cycle(box: Outbox | PgOutbox, releases: int, batch: int) -> tuple[float, float]:
    box.start_connection(0)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, releases, batch):
        box.put_many([release(i) for i in range(start, min(releases, start + batch))])
        rows = box.take(batch)
        await box.sync()
        box.ack(rows[-1].seq)
    await box.sync()
    return time.process_time() - cpu, time.perf_counter() - wall


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kind", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--releases", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    if args.kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            box = Outbox.open(Path(tmp) / "ukr.db", durable=True)
            cpu, wall = await cycle(box, args.releases, args.batch)
            box.close()
    else:
        import asyncpg

        schema = f"liaison_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(URL)
        await admin.execute(f"CREATE SCHEMA {schema}")
        pool: Any = await asyncpg.create_pool(
            URL, min_size=1, max_size=2, server_settings={"search_path": schema}
        )
        try:
            await ensure_schema(pool)
            await pool.execute(
                "INSERT INTO federation_lease VALUES ('federation', 'bench', 1,"
                " now() + interval '1 hour', now())"
            )
            box = await PgOutbox.open(pool, "ukr", lease="federation", epoch=1)
            cpu, wall = await cycle(box, args.releases, args.batch)
            await box.aclose()
        finally:
            await pool.close()
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.close()
    n = args.releases
    print(
        f"{args.kind}: {n} releases in batches of {args.batch}:"
        f" CPU {cpu / n * 1e6:.1f} us/release, wall {wall / n * 1e6:.1f} us/release"
        f" (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    asyncio.run(main())
