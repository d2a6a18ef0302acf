"""Every PostgreSQL advisory lock key is distinct, and each module holds the one named for it."""

from __future__ import annotations

from liaison import pg_locks
from liaison.federation import lease
from liaison.identity import shared_db
from liaison.storage import postgresql, postgresql_missions


def test_every_subsystem_holds_its_own_lock_key() -> None:
    assert len(set(pg_locks.ALL)) == len(pg_locks.ALL)
    held = {
        postgresql._MIGRATION_LOCK,
        postgresql_missions._MISSION_LOCK,
        postgresql_missions._FILE_LOCK,
        shared_db._LOCK,
        lease._SCHEMA_LOCK,
    }
    assert held == set(pg_locks.ALL)
    assert all(0 < k < 2**63 for k in held)  # a bigint key
