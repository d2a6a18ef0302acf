"""The seam between a PeerLink and its wire, and the outbox's fsync off the event loop: nothing
is sent or acknowledged before the fsync that makes it durable has completed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from liaison.errors import StorageError
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outbox, QueuedRelease
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.router import Outgoing, Router
from tests.unit.federation.fed_support import POLICY, REL_BOTH, event, fed_config
from tests.unit.federation.test_peer_link import MemoryAudit

WAIT_S = 5.0


class GatedFsync:
    """Stands in for the outbox's fsync: runs in the worker thread, blocks until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()
        self.fail: OSError | None = None

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.get_ident())
        try:
            if not self.opened.wait(WAIT_S):
                raise AssertionError("fsync gate never opened")
            if self.fail is not None:
                raise self.fail
        finally:
            with self._lock:
                self.running -= 1


def gated_outbox(path: Path) -> tuple[Outbox, GatedFsync]:
    box = Outbox.open(path, durable=True)
    gate = GatedFsync()
    box._fsync_files = gate  # type: ignore[method-assign]
    return box, gate


def release(uid: str) -> QueuedRelease:
    return QueuedRelease(
        payload=f"<event uid='{uid}'/>".encode(),
        sha256="0" * 64,
        label_id="sha256:x",
        uid=uid,
        type="b-t-f",
        priority=2,
        coalesce_key=None,
        queued_ms=0,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


async def test_sync_runs_in_a_worker_thread_one_at_a_time_and_groups_commits(
    tmp_path: Path,
) -> None:
    box, gate = gated_outbox(tmp_path / "ukr.db")
    box.put_many([release("a")])
    first = asyncio.create_task(box.sync())
    await settle()
    # A commit made while the fsync runs is not covered by it: its caller waits for the next.
    box.put_many([release("b")])
    second = [asyncio.create_task(box.sync()) for _ in range(5)]
    await settle()
    assert not first.done() and gate.calls == 1 and box.unsynced
    gate.opened.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(first, *second)
    # Six callers, two fsyncs, never two at once, never on the event loop's thread.
    assert gate.calls == 2 and gate.most_at_once == 1
    assert threading.get_ident() not in gate.threads
    assert not box.unsynced
    await box.sync()  # nothing new committed: no fsync at all
    assert gate.calls == 2
    box.close()


async def test_a_cancelled_caller_does_not_cancel_the_fsync(tmp_path: Path) -> None:
    box, gate = gated_outbox(tmp_path / "ukr.db")
    box.put_many([release("a")])
    impatient = asyncio.create_task(box.sync())
    patient = asyncio.create_task(box.sync())
    await settle()
    impatient.cancel()
    gate.opened.set()
    async with asyncio.timeout(WAIT_S):
        await patient
    assert gate.calls == 1 and not box.unsynced
    box.close()


async def test_a_failed_fsync_is_a_storage_error_and_nothing_counts_as_synced(
    tmp_path: Path,
) -> None:
    box, gate = gated_outbox(tmp_path / "ukr.db")
    box.put_many([release("a")])
    gate.fail = OSError(5, "I/O error")
    gate.opened.set()
    with pytest.raises(StorageError, match="fsync"):
        await box.sync()
    assert box.unsynced
    gate.fail = None
    await box.sync()
    assert not box.unsynced
    box.close()


async def test_a_caller_that_finds_a_finished_fsync_settles_it_instead_of_spinning(
    tmp_path: Path,
) -> None:
    """The fsync's future can be done while nothing has yet recorded what it covered (its
    completion callbacks run in a later turn of the loop). A caller arriving then must settle it
    itself: awaiting a done future does not yield, so waiting for a callback would spin forever
    at full CPU (seen once in six runs of the two-server federation test)."""
    box, gate = gated_outbox(tmp_path / "ukr.db")
    box.put_many([release("a")])
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    box._fsync = (finished, box._commits)  # done, and not yet recorded as synced
    assert box.unsynced
    async with asyncio.timeout(WAIT_S):
        await box.sync()
    assert not box.unsynced and gate.calls == 0  # settled from the finished fsync, no new one
    box.close()


async def test_the_real_fsync_and_a_not_durable_outbox(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "real.db", durable=True)
    box.put_many([release("a")])
    assert box.unsynced
    await box.sync()
    assert not box.unsynced
    box.put_many([release("b")])
    box.close()  # what was not synced yet is synced on close
    again = Outbox.open(tmp_path / "real.db", durable=False)
    again.put_many([release("c")])
    assert not again.unsynced
    await again.sync()
    assert again.backlog == 3
    again.close()


class FakeSession:
    """A WireSession that remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[OutboxRow] = []
        self.arrived = asyncio.Event()

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        self.sent.extend(rows)
        self.arrived.set()


def make_link(box: Outbox) -> PeerLink:
    fed = fed_config()
    return PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState()),
        audit=MemoryAudit(),
        outbox=box,
        status=FederationStatus("usa-srv").add("ukr", None),
        clock_ms=lambda: 1_764_072_000_000,
    )


async def test_the_sender_writes_nothing_before_its_fsync(tmp_path: Path) -> None:
    box, gate = gated_outbox(tmp_path / "ukr.db")
    link = make_link(box)
    link.peer_identified("ukr-srv")
    link.deliver(Outgoing(event(label=REL_BOTH, uid="ok")))
    link.flush()
    link.connection_up(0)
    session = FakeSession()
    sender = asyncio.create_task(link.send_loop(session))
    await settle()
    assert session.sent == [] and box.in_flight == 1  # numbered, not yet durable, not sent
    gate.opened.set()
    async with asyncio.timeout(WAIT_S):
        await session.arrived.wait()
    assert [(r.uid, r.seq) for r in session.sent] == [("ok", 1)]
    assert link.status.counts["sent"] == 1
    link.acked(1)
    assert box.backlog == 0 and link.status.counts["acked"] == 1
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    box.close()


async def test_received_events_are_acknowledged_only_after_their_fsync(tmp_path: Path) -> None:
    box, gate = gated_outbox(tmp_path / "ukr.db")
    link = make_link(box)
    validator = link.peer_identified("ukr-srv")
    receiving = asyncio.create_task(link.receive([(4, b"<junk/>"), (5, b"<junk/>")], validator))
    await settle()
    assert not receiving.done() and box.last_applied == 5
    gate.opened.set()
    async with asyncio.timeout(WAIT_S):
        assert await receiving == 5
    # A resend of what was applied is dropped as a duplicate and acknowledged again.
    assert await link.receive([(5, b"<junk/>")], validator) == 5
    assert link.status.counts["duplicates"] == 1
    box.close()


async def test_a_new_connection_replaces_the_old_one(tmp_path: Path) -> None:
    link = make_link(Outbox.open(tmp_path / "ukr.db", durable=False))
    started = asyncio.Event()

    async def connection() -> None:
        link.begin_connection()
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            link.end_connection()

    old = asyncio.create_task(connection())
    await started.wait()
    started.clear()
    new = asyncio.create_task(connection())
    await started.wait()
    await asyncio.sleep(0)
    assert old.cancelled() and not new.done()
    new.cancel()
    with pytest.raises(asyncio.CancelledError):
        await new
    link.outbox.close()
