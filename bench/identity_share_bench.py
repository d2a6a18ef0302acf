"""How long a user added on one node takes to be seen by another through PostgreSQL
(identity/shared_db.py): two IdentityDb connections on one fresh schema, N users added through
node A's UserDirectory, each timed until node B's directory has it (polled every 1 ms).

Command: .venv/bin/python bench/identity_share_bench.py [N]   (LIAISON_TEST_POSTGRESQL, default
postgresql://postgres@127.0.0.1:5432/test)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time

import asyncpg

from liaison.identity.shared_db import IdentityDb
from liaison.identity.users import UserDirectory
from liaison.storage.postgresql import PostgresStore

URL = os.environ.get("LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")


def main(n: int) -> None:
    schema = f"liaison_bench_{secrets.token_hex(4)}"

    async def migrate() -> None:
        store = await PostgresStore.open(URL, schema=schema)
        await store.close()

    async def drop() -> None:
        conn = await asyncpg.connect(URL)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()

    asyncio.run(migrate())
    a = IdentityDb.open(URL, where="a", schema=schema)
    b = IdentityDb.open(URL, where="b", schema=schema)
    try:
        users_a, users_b = UserDirectory.in_database(a), UserDirectory.in_database(b)
        write_s, seen_s = [], []
        for i in range(n):
            t0 = time.perf_counter()
            users_a.add_user(f"user{i}", "Blue", groups=["Cyan"])
            t1 = time.perf_counter()
            for _ in range(5000):  # bounded: at most 5 s
                if users_b.get(f"user{i}") is not None:
                    break
                time.sleep(0.001)
            else:
                raise SystemExit(f"user{i} not seen on B within 5 s")
            write_s.append(t1 - t0)
            seen_s.append(time.perf_counter() - t0)
        ms = [x * 1000 for x in seen_s]
        print(f"{n} users: write on A median {statistics.median(write_s) * 1000:.1f} ms;")
        print(f"seen on B after median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms")
    finally:
        a.close()
        b.close()
        asyncio.run(drop())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
