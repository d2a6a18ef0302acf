"""The persistent outbox: order, priority, coalescing, ack, resume and dedupe across reopens.

Every contract test runs against both implementations: the SQLite file of a single node
(federation/outbox.py) and the PostgreSQL tables of a cluster's lease holder
(federation/pg_outbox.py; skipped without PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liaison.errors import StorageError
from liaison.federation.outbox import Outbox, QueuedRelease
from liaison.federation.pg_outbox import PgOutbox
from tests.unit.federation.pg_support import Boxes, boxes_of


def item(uid: str, *, priority: int = 2, coalesce: bool = False, n: int = 0) -> QueuedRelease:
    payload = f"<event uid='{uid}' n='{n}'/>".encode()
    return QueuedRelease(
        payload=payload,
        sha256=f"{n:064x}",
        label_id="sha256:x",
        uid=uid,
        type="a-f-G" if coalesce else "b-t-f",
        priority=priority,
        coalesce_key=uid if coalesce else None,
        queued_ms=n,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "federation" / "ukr.db"


@pytest.fixture(params=["sqlite", "postgresql"])
async def boxes(request: Any, path: Path) -> AsyncIterator[Boxes]:
    async with boxes_of(request.param, path) as made:
        yield made


async def test_fifo_within_a_class_and_urgent_classes_first(boxes: Boxes) -> None:
    with_box = await boxes.open()
    with_box.put_many([item("r1"), item("c1", priority=1), item("r2"), item("e1", priority=0)])
    with_box.put_many([item("c2", priority=1)])
    with_box.start_connection(0)
    rows = with_box.take(10)
    assert [r.uid for r in rows] == ["e1", "c1", "c2", "r1", "r2"]
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    await boxes.close(with_box)


async def test_numbers_are_given_when_sent_so_they_rise_in_sending_order(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item("r1"), item("r2")])
    box.start_connection(0)
    assert [r.seq for r in box.take(1)] == [1]
    box.put_many([item("e1", priority=0)])  # jumps ahead of r2, which has no number yet
    assert [(r.uid, r.seq) for r in box.take(10)] == [("e1", 2), ("r2", 3)]
    await boxes.close(box)


async def test_coalescing_replaces_an_unsent_position_and_moves_it_back(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item("p", coalesce=True, n=1), item("del-p", n=2)])
    box.put_many([item("p", coalesce=True, n=3)])
    assert box.backlog == 2 and box.coalesced == 1
    box.start_connection(0)
    rows = box.take(10)
    assert [r.uid for r in rows] == ["del-p", "p"]
    assert rows[1].payload.endswith(b"n='3'/>")
    # Once sent, a position is never replaced: the next one queues behind it.
    box.put_many([item("p", coalesce=True, n=4)])
    assert box.backlog == 3 and box.coalesced == 1
    await boxes.close(box)


async def test_chats_never_coalesce(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item("c", n=1), item("c", n=2), item("c", n=3)])
    assert box.backlog == 3
    await boxes.close(box)


async def test_ack_deletes_and_a_reconnect_resends_unacked_with_same_numbers(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item(f"u{i}") for i in range(6)])
    box.start_connection(0)
    assert [r.seq for r in box.take(4)] == [1, 2, 3, 4]
    assert box.ack(2) == 2 and box.backlog == 4 and box.in_flight == 2
    # The connection drops; the peer had applied up to 3 (its ACK was lost).
    box.start_connection(3)
    assert box.backlog == 3
    rows = box.take(10)
    assert [(r.uid, r.seq) for r in rows] == [("u3", 4), ("u4", 5), ("u5", 6)]
    await boxes.close(box)


async def test_restart_keeps_queue_numbers_and_applied_state(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item(f"u{i}") for i in range(5)] + [item("e", priority=0)])
    box.start_connection(0)
    box.take(3)  # e, u0, u1 numbered 1..3
    box.ack(1)
    box.record_applied(41)
    await boxes.close(box)

    box = await boxes.open()
    assert box.last_seq == 3 and box.last_acked == 1 and box.last_applied == 41
    assert box.backlog == 5
    assert box.is_duplicate(41) and not box.is_duplicate(42)
    box.start_connection(1)
    assert [(r.uid, r.seq) for r in box.take(10)] == [
        ("u0", 2),
        ("u1", 3),
        ("u2", 4),
        ("u3", 5),
        ("u4", 6),
    ]
    await boxes.close(box)


async def test_peer_ahead_of_us_keeps_numbering_after_its_value(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item("a")])
    box.start_connection(500)  # our file was replaced; the peer has applied up to 500
    assert [r.seq for r in box.take(10)] == [501]
    await boxes.close(box)


async def test_rows_failing_the_send_check_are_dropped_not_sent(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item("ok1"), item("bad"), item("ok2")])
    box.start_connection(0)

    def check(payload: bytes, label_id: str, uid: str, type: str) -> bool:
        return uid != "bad"

    rows = box.take(10, check=check)
    assert [(r.uid, r.seq) for r in rows] == [("ok1", 1), ("ok2", 2)]
    assert box.dropped == 1 and box.backlog == 2
    await boxes.close(box)


async def test_take_is_bounded_by_the_window(boxes: Boxes) -> None:
    box = await boxes.open()
    box.put_many([item(f"u{i}") for i in range(20)])
    box.start_connection(0)
    assert len(box.take(7)) == 7
    assert len(box.take(0)) == 0
    assert [r.seq for r in box.take(100)] == list(range(8, 21))
    assert box.take(100) == []
    await boxes.close(box)


def test_meta_survives_reopen_and_a_foreign_file_is_refused(path: Path, tmp_path: Path) -> None:
    box = Outbox.open(path, durable=True)
    box.set_meta("peer_server_id", "ukr-srv")
    box.close()
    again = Outbox.open(path)
    assert again.meta("peer_server_id") == "ukr-srv"
    again.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        Outbox.open(junk)


async def test_meta_survives_reopen(boxes: Boxes) -> None:
    box = await boxes.open()
    box.set_meta("peer_server_id", "ukr-srv")
    await box.sync()
    await boxes.close(box)
    again = await boxes.open()
    assert again.meta("peer_server_id") == "ukr-srv"
    await boxes.close(again)


async def test_a_synced_change_is_there_after_a_crash(boxes: Boxes) -> None:
    """What sync() returned for survives the process (no close: the next holder just opens)."""
    box = await boxes.open()
    box.put_many([item("a"), item("b")])
    box.start_connection(0)
    assert [r.seq for r in box.take(1)] == [1]
    box.record_applied(7)
    await box.sync()
    again = await boxes.open()  # the first one is left as a crash would leave it
    assert again.last_seq == 1 and again.last_applied == 7 and again.backlog == 2
    again.start_connection(0)
    assert [(r.uid, r.seq) for r in again.take(10)] == [("a", 1), ("b", 2)]
    await boxes.close(again)
    await boxes.close(box)


async def test_the_stream_position_is_committed_with_the_releases(path: Path) -> None:
    async with boxes_of("postgresql", path) as made:
        box = await made.open()
        assert isinstance(box, PgOutbox) and box.stream_seq == -1  # never read
        box.put_many([item("a")], 41)
        box.set_stream_seq(45)
        box.put_many([item("b")], 44)  # never backwards
        await box.sync()
        again = await made.open()
        assert isinstance(again, PgOutbox)
        assert again.stream_seq == 45 and again.backlog == 2
        await made.close(again)
        await made.close(box)
