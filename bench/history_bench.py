"""History query benchmark: bounding-box and time-range queries on 100,000 rows, SQLite vs
PostgreSQL/PostGIS (docs/storage.md, "PostgreSQL").

Both stores get the same N position reports (2,000 uids, one report each 1 s over the run,
positions uniform over a 20 x 20 degree area), written through ``put_many`` in batches of 500.
Then each query is run ``--repeat`` times and its median and p95 wall time reported:

- ``bbox``: a 1 x 1 degree box (about 0.25 % of the rows), newest 1,000;
- ``bbox+time``: the same box in one hour of the run;
- ``time``: one hour of the run, newest 1,000;
- ``bbox-wide``: a 10 x 10 degree box (about 25 %), newest 1,000.

PostgreSQL runs in a schema made for the run and dropped after it; SQLite in a temporary file.

    .venv/bin/python bench/history_bench.py                      # 100,000 rows
    .venv/bin/python bench/history_bench.py --rows 20000 --json
    LIAISON_TEST_POSTGRESQL=postgresql://u@host/db .venv/bin/python bench/history_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from liaison.storage import Query, SqliteStore, Store, StoredEvent  # noqa: E402

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
URL = os.environ.get("LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")


def events(n: int) -> list[StoredEvent]:
    rnd = random.Random(14)
    out = []
    for i in range(n):
        uid = f"uid-{i % 2000}"
        t = T0 + i * 1000
        out.append(
            StoredEvent(
                uid=uid,
                type="a-f-G-U-C",
                how="m-g",
                time=t,
                start=t,
                stale=t + 60_000,
                lat=rnd.uniform(40.0, 60.0),
                lon=rnd.uniform(0.0, 20.0),
                hae=10.0,
                callsign=uid.upper(),
                sender="bench",
                sender_groups=frozenset({"Cyan"}),
                received=t,
                xml=(f'<event version="2.0" uid="{uid}" type="a-f-G-U-C">' + "x" * 400).encode()
                + b"</event>",
            )
        )
    return out


def queries(n: int) -> dict[str, Query]:
    mid = T0 + (n // 2) * 1000
    return {
        "bbox": Query(bbox=(10.0, 50.0, 11.0, 51.0), limit=1000),
        "bbox+time": Query(bbox=(10.0, 50.0, 11.0, 51.0), since=mid, until=mid + HOUR_MS),
        "time": Query(since=mid, until=mid + HOUR_MS, limit=1000),
        "bbox-wide": Query(bbox=(5.0, 45.0, 15.0, 55.0), limit=1000),
    }


async def measure(
    store: Store, rows: list[StoredEvent], repeat: int, analyze: tuple[Any, str] | None = None
) -> dict[str, Any]:
    start = time.perf_counter()
    for i in range(0, len(rows), 500):
        await store.put_many(rows[i : i + 500])
    result: dict[str, Any] = {"insert_rows_per_s": round(len(rows) / (time.perf_counter() - start))}
    if analyze is not None:
        # What autovacuum would soon do after a bulk load: give the planner its statistics.
        conn, schema = analyze
        await conn.execute(f"ANALYZE {schema}.history")
    for name, q in queries(len(rows)).items():
        times = []
        found = 0
        for _ in range(repeat):
            t = time.perf_counter()
            found = len(await store.history(q))
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        result[name] = {
            "rows": found,
            "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
        }
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = events(args.rows)
    report: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await SqliteStore.open(Path(tmp) / "bench.db")
        try:
            report["sqlite"] = await measure(sqlite, rows, args.repeat)
        finally:
            await sqlite.close()

    import asyncpg

    from liaison.storage.postgresql import PostgresStore

    schema = f"liaison_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
        pg = await PostgresStore.open(URL, schema=schema)
        try:
            report["postgresql"] = await measure(pg, rows, args.repeat, analyze=(conn, schema))
        finally:
            await pg.close()
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.rows} rows, each query {args.repeat} times (ms: median / p95)")
    print(f"{'':12}{'SQLite':>24}{'PostgreSQL':>24}")
    for name in ["insert_rows_per_s", *queries(args.rows)]:
        s, p = report["sqlite"][name], report["postgresql"][name]
        if isinstance(s, int):
            print(f"{'insert/s':12}{s:>24}{p:>24}")
            continue
        cell_s = f"{s['median_ms']} / {s['p95_ms']} ({s['rows']})"
        cell_p = f"{p['median_ms']} / {p['p95_ms']} ({p['rows']})"
        print(f"{name:12}{cell_s:>24}{cell_p:>24}")


if __name__ == "__main__":
    asyncio.run(main())
