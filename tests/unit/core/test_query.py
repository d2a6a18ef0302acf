"""The router's query side (``liaison.query``): stored history paged for a viewer through the
router's decision, with one ``release`` record per row handed over; files listed through the
decision (no record) and released with one. In-memory store, file index and audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison import query as query_module
from liaison.gate import Gate
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.query import FileQuery, FileRecord, Files, HistoryQuery, Query
from liaison.storage.base import StoredEvent
from liaison.storage.files import FileStore, MemoryFileIndex
from liaison.storage.memory import MemoryStore
from tests.unit.core.test_gate import NOW, event, label, person, setup


def stored(ev: Event, sender: Principal, lab: labels.Label, gate: Gate, at: int) -> StoredEvent:
    return StoredEvent(
        uid=ev.uid,
        type=ev.type,
        how=ev.how,
        time=at,
        start=at,
        stale=at + 60_000,
        lat=ev.lat,
        lon=ev.lon,
        hae=ev.hae,
        callsign=ev.callsign,
        sender=sender.name,
        sender_groups=sender.in_groups,
        received=at,
        xml=cot_xml.render_xml(ev),
        label=labels.label_to_json(lab),
    )


def no_files() -> FileStore:
    raise AssertionError("not opened in this test")


async def test_history_reads_past_rows_the_viewer_may_not_see_and_releases_each_row() -> None:
    router, gate, audit = setup()
    usa = person(gate, "usa", "USA", "usa-secret")
    ukr = person(gate, "ukr", "UKR", "ukr-secret")
    usa_only, shared = label(gate, "SECRET", "USA"), label(gate, "SECRET", "USA", "UKR")
    store = MemoryStore()
    # Three shared rows, then (newer) more USA-only rows than one page: a plain query for the
    # newest 3 would find nothing UKR may see.
    rows = [stored(event(f"s{i}", shared, gate), usa, shared, gate, NOW + i) for i in range(3)]
    rows += [
        stored(event(f"u{i}", usa_only, gate), usa, usa_only, gate, NOW + 10 + i)
        for i in range(450)
    ]
    await store.put_many(rows)

    async def opener() -> FileStore:
        return no_files()

    query = Query(router, store, opener)
    found = await query.history(ukr, HistoryQuery(limit=3))
    assert [ev.uid for _, ev in found] == ["s2", "s1", "s0"]
    releases = [f for k, f in audit.records if k == "release"]
    assert [f["uid"] for f in releases] == ["s2", "s1", "s0"]
    assert {f["to_org"] for f in releases} == {"UKR"} and {f["path"] for f in releases} == {"http"}
    # Its own organisation's rows: handed over, but a release is only across organisations.
    audit.records.clear()
    mine = await query.history(usa, HistoryQuery(limit=2), keep=lambda ev: ev.uid != "u449")
    assert [ev.uid for _, ev in mine] == ["u448", "u447"]
    assert [k for k, _ in audit.records] == []


async def test_history_stops_at_the_scan_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 1_000
    monkeypatch.setattr(query_module, "HISTORY_SCAN_BUDGET", budget)
    router, gate, audit = setup()
    usa = person(gate, "usa", "USA", "usa-secret")
    ukr = person(gate, "ukr", "UKR", "ukr-secret")
    usa_only = label(gate, "SECRET", "USA")
    store = MemoryStore()
    reads: list[int] = []
    history = store.history

    async def counting(q: HistoryQuery) -> list[StoredEvent]:
        rows = await history(q)
        reads.append(len(rows))
        return rows

    store.history = counting  # type: ignore[method-assign]
    one = stored(event("u", usa_only, gate), usa, usa_only, gate, NOW)
    await store.put_many(
        [StoredEvent(**{**_fields(one), "time": NOW + i, "seq": 0}) for i in range(3 * budget)]
    )

    async def opener() -> FileStore:
        return no_files()

    found = await Query(router, store, opener).history(ukr, HistoryQuery(limit=10))
    # Pages overlap by one row (equal times are not skipped); past the budget, no more pages.
    assert found == [] and budget <= sum(reads) - (len(reads) - 1) < budget + max(reads)
    assert audit.records == []


def _fields(rec: StoredEvent) -> dict[str, object]:
    return {name: getattr(rec, name) for name in StoredEvent.__dataclass_fields__}


async def put(shelf: Files, who: Principal, data: bytes, uid: str, lab: str) -> FileRecord:
    return await shelf.put(
        who,
        data,
        uid=uid,
        name=f"{uid}.txt",
        mime="text/plain",
        submitted=NOW,
        keywords=("missionpackage",),
        tool="public",
        creator_uid=None,
        expected_hash=None,
        label=lab,
    )


async def test_files_are_listed_through_the_decision_and_released_with_a_record(
    tmp_path: Path,
) -> None:
    router, gate, audit = setup()
    fstore = FileStore(tmp_path / "files", MemoryFileIndex())

    async def opener() -> FileStore:
        return fstore

    shelf = await Query(router, MemoryStore(), opener).open_files()
    usa = person(gate, "usa", "USA", "usa-secret")
    ukr = person(gate, "ukr", "UKR", "ukr-secret")
    secret = labels.label_to_json(label(gate, "SECRET", "USA"))
    shared = labels.label_to_json(label(gate, "SECRET", "USA", "UKR"))
    hidden = await put(shelf, usa, b"usa only", "f1", secret)
    both = await put(shelf, usa, b"for both", "f2", shared)
    assert hidden.uploader == "usa" and hidden.uploader_groups == usa.in_groups
    # Listings: what UKR may see only, and nothing recorded (names are not released).
    audit.records.clear()
    assert [r.uid for r in await shelf.search(ukr, FileQuery())] == ["f2"]
    assert await shelf.by_hash(ukr, hidden.hash.upper()) == []
    assert await shelf.by_uid(ukr, "f1") is None
    assert (await shelf.by_uid(ukr, "f2")) == both
    assert [r.uid for r in await shelf.search(usa, FileQuery())] == ["f2", "f1"]
    assert audit.records == []
    # Content: one release record, written before the caller sends a byte.
    assert shelf.content_path(both).read_bytes() == b"for both"
    assert shelf.release(ukr, both)
    assert [k for k, _ in audit.records] == ["release"]
    record = audit.records[0][1]
    assert record["path"] == "file" and record["uid"] == "f2" and record["sha256"] == both.hash
    assert record["to_org"] == "UKR" and record["recipients"] == ["ukr"]
    # Refused: no record; the audit log failing: not released.
    assert not shelf.release(ukr, hidden)
    assert len(audit.records) == 1
    audit.fail = True
    assert not shelf.release(ukr, both)
    # The uploader's own tool setting.
    assert await shelf.set_tool("f1", "private")
    assert (await shelf.by_uid(usa, "f1")).tool == "private"  # type: ignore[union-attr]
    await shelf.close()
