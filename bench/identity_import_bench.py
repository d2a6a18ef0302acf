"""How long the one-time import of a data folder into PostgreSQL takes (identity/db_import.py,
identity/shared_db.py): N users and N issued certificates written as the file backend writes
them (synthetic, cheap scrypt hashes), read and checked, then imported by IdentityDb.open into a
fresh schema. Prints wall time and this process's CPU time.

Command: .venv/bin/python bench/identity_import_bench.py [N]   (LIAISON_TEST_POSTGRESQL, default
postgresql://postgres@127.0.0.1:5432/test)
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from liaison.identity.db_import import read_local_identity
from liaison.identity.shared_db import IdentityDb
from liaison.identity.users import ScryptParams, hash_password
from liaison.storage.postgresql import PostgresStore

URL = os.environ.get("LIAISON_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = "2026-01-01T00:00:00+00:00"


def write_folder(d: Path, n: int) -> None:
    pw = hash_password("x" * 12, params=ScryptParams(n=2**4))  # cheap: the import never hashes
    users = [
        {
            "name": f"user{i}",
            "org": "Blue",
            "profile": None,
            "in_groups": ["A"],
            "out_groups": ["A"],
            "password_hash": pw,
            "tokens": [],
            "cert_serials": [format(i + 1, "x")],
            "revoked": False,
            "created_at": T0,
        }
        for i in range(n)
    ]
    (d / "users.json").write_text(json.dumps({"version": 1, "users": users}))
    certs = [
        {
            "serial": format(i + 1, "x"),
            "cn": f"user{i}",
            "fingerprint_sha256": secrets.token_hex(32),
            "issuer_sha256": "a" * 64,
            "not_before": T0,
            "not_after": "2027-01-01T00:00:00+00:00",
            "revoked_at": T0 if i % 10 == 0 else None,
        }
        for i in range(n)
    ]
    (d / "pki").mkdir()
    index = {"version": 1, "crl_number": 0, "certs": certs}
    (d / "pki" / "issued.json").write_text(json.dumps(index))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(n: int) -> None:
    schema = f"liaison_bench_{secrets.token_hex(4)}"

    async def migrate() -> None:
        store = await PostgresStore.open(URL, schema=schema)
        await store.close()

    async def drop() -> None:
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    asyncio.run(migrate())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_folder(folder, n)
            c0, t0 = cpu(), time.perf_counter()
            local = read_local_identity(folder / "users.json", folder / "pki")
            c1, t1 = cpu(), time.perf_counter()
            db = IdentityDb.open(URL, where="bench", schema=schema, local=local)
            c2, t2 = cpu(), time.perf_counter()
            report = db.imported
            db.close()
        assert report is not None and report.users == n and report.certs == n
        print(
            f"{n} users + {n} certificates: read and check {t1 - t0:.2f} s wall"
            f" ({c1 - c0:.2f} s CPU); open and import {t2 - t1:.2f} s wall"
            f" ({c2 - c1:.2f} s CPU in this process)"
        )
    finally:
        asyncio.run(drop())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
