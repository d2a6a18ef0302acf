"""The PostgreSQL advisory lock keys Liaison holds (``pg_advisory_xact_lock``), in one place so
that no two subsystems share one by mistake: a shared key made an identity import (up to 60 s)
block the mission schema's migration and the partner links' table creation.

Each key is ``"liaison\\0"`` as 6 bytes and a 2-byte number.
"""

from __future__ import annotations

_BASE = 0x6C6961697300_0000

# The event store's schema migrations (storage/postgresql.py).
EVENT_MIGRATION = _BASE | 0x0001
# The mission store's and the file store's schema migrations (storage/postgresql_missions.py).
MISSION_MIGRATION = _BASE | 0x0002
FILE_MIGRATION = _BASE | 0x0003
# Every write to the shared identity tables, and their one-time import (identity/shared_db.py).
IDENTITY = _BASE | 0x0004
# Creating the partner links' lease and outbox tables (federation/lease.py).
FEDERATION_SCHEMA = _BASE | 0x0005

ALL = (EVENT_MIGRATION, MISSION_MIGRATION, FILE_MIGRATION, IDENTITY, FEDERATION_SCHEMA)
