"""Helpers shared by the storage tests: a fixed clock, an event factory, store construction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from liaison.storage import MemoryStore, SqliteStore, Store, StoredEvent

# 2026-01-01T00:00:00Z in ms: a fixed "now" so tests never read the clock.
T0 = 1_767_225_600_000

_BASE = StoredEvent(
    uid="uid-1",
    type="a-f-G-U-C",
    how="m-g",
    time=T0,
    start=T0,
    stale=T0 + 60_000,
    lat=51.5,
    lon=-0.12,
    hae=12.0,
    callsign="ALPHA",
    sender="alice",
    sender_groups=frozenset({"Cyan"}),
    received=T0,
    xml=b'<event version="2.0" uid="uid-1" type="a-f-G-U-C"><point/><detail/></event>',
)

Make = Callable[..., StoredEvent]


def make(**fields: object) -> StoredEvent:
    """A StoredEvent with defaults; ``time`` also sets start, stale and received unless given."""
    if "time" in fields:
        t = fields["time"]
        assert isinstance(t, int)
        fields.setdefault("start", t)
        fields.setdefault("stale", t + 60_000)
        fields.setdefault("received", t)
    if "uid" in fields and "xml" not in fields:
        fields["xml"] = f'<event uid="{fields["uid"]}"/>'.encode()
    return replace(_BASE, **fields)  # type: ignore[arg-type]


STORE_KINDS = ["memory", "sqlite"]


async def open_store(kind: str, directory: Path) -> Store:
    """A fresh store of ``kind``; a SQLite one lives in ``directory``."""
    if kind == "memory":
        return MemoryStore()
    return await SqliteStore.open(directory / "liaison.db")
