"""PeerLink as the router sees it: deliver never blocks, every decision is audited before the
outbox gets anything, and no audit record means no release."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from liaison.errors import StorageError
from liaison.federation.link import LISTENER, MAX_UNFLUSHED, PeerLink
from liaison.federation.outbox import Outbox
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal, PrincipalKind
from liaison.router import Outgoing, Router
from tests.unit.federation.fed_support import POLICY, REL_BOTH, USA_ONLY, event, fed_config

Entries = Sequence[tuple[str, Mapping[str, object]]]


class MemoryAudit:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[str, Mapping[str, object]]] = []
        self.fail = fail

    def append_many(self, entries: Entries) -> Sequence[object]:
        if self.fail:
            raise StorageError("disk full")
        self.records.extend(entries)
        return ()


def make_link(tmp_path: Path, audit: MemoryAudit) -> PeerLink:
    fed = fed_config()
    return PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState()),
        audit=audit,
        outbox=Outbox.open(tmp_path / "ukr.db", durable=False),
        status=FederationStatus("usa-srv").add("ukr", None),
        clock_ms=lambda: 1_764_072_000_000,
    )


def test_principals_are_federates_with_ceiling_and_originate_authority(tmp_path: Path) -> None:
    link = make_link(tmp_path, MemoryAudit())
    p, s = link.principal, link.source.principal
    assert isinstance(p, Principal) and p.kind is PrincipalKind.FEDERATE
    assert p.org == "UKR" and p.listener == LISTENER and s.listener == LISTENER
    assert p.auths == link.peer.release_ceiling and s.auths == link.peer.originate_ceiling
    assert link.client_uid is None and link.callsign is None
    link.outbox.close()


async def test_every_decision_is_audited_before_anything_is_queued(tmp_path: Path) -> None:
    audit = MemoryAudit()
    link = make_link(tmp_path, audit)
    link.deliver(Outgoing(event(label=REL_BOTH, uid="ok")))
    link.deliver(Outgoing(event(label=USA_ONLY, uid="secret")))
    link.deliver(Outgoing(event(label=None, uid="unlabelled")))
    # deliver only queues; the batch is decided on the next loop turn (or by flush()).
    assert link.outbox.backlog == 0 and audit.records == []
    link.flush()
    kinds = [(k, f["uid"]) for k, f in audit.records]
    assert kinds == [("release", "ok"), ("deny", "secret"), ("deny", "unlabelled")]
    release = audit.records[0][1]
    link.outbox.start_connection(0)
    (row,) = link.outbox.take(10)
    assert release["sha256"] == hashlib.sha256(row.payload).hexdigest() == row.sha256
    assert link.status.counts["releases"] == 1 and link.status.counts["denials"] == 2
    link.outbox.close()


async def test_no_audit_record_no_release(tmp_path: Path) -> None:
    audit = MemoryAudit(fail=True)
    link = make_link(tmp_path, audit)
    link.deliver(Outgoing(event(label=REL_BOTH)))
    link.flush()
    assert link.outbox.backlog == 0
    assert link.status.counts["audit_failures"] == 1 and link.status.counts["releases"] == 0
    link.outbox.close()


async def test_delivered_events_wait_in_the_outbound_queue_uncoalesced(tmp_path: Path) -> None:
    """Before the guard, position reports of one uid do not coalesce: each one gets its own
    audited decision (the outbox coalesces afterwards). The queue's statistics are the link's,
    and the status file's."""
    audit = MemoryAudit()
    link = make_link(tmp_path, audit)
    for _ in range(3):
        link.deliver(Outgoing(event(label=REL_BOTH, uid="same")))
    stats = link.statistics()
    assert (stats.depth, stats.queued, stats.coalesced, stats.taken) == (3, 3, 0, 0)
    link.flush()
    assert [f["uid"] for _k, f in audit.records] == ["same"] * 3
    stats = link.statistics()
    assert (stats.depth, stats.peak, stats.taken, stats.dropped) == (0, 3, 3, 0)
    assert link.status.to_json()["queue"] == {
        "depth": 0,
        "bytes": 0,
        "peak": 3,
        "queued": 3,
        "coalesced": 0,
        "taken": 3,
        "dropped": 0,
        "overflowed": False,
        "paused": False,
        "pauses": 0,
    }
    link.outbox.close()


async def test_a_burst_is_flushed_at_the_queue_limit_and_never_overflows(tmp_path: Path) -> None:
    audit = MemoryAudit()
    link = make_link(tmp_path, audit)
    assert link.statistics().depth == 0
    one = event(label=REL_BOTH, uid="burst")
    for _ in range(2 * MAX_UNFLUSHED + 5):
        link.deliver(Outgoing(one))
    stats = link.statistics()
    # Two flushes ran inside deliver, each when MAX_UNFLUSHED waited; five wait for the loop turn.
    assert (stats.depth, stats.peak, stats.taken) == (5, MAX_UNFLUSHED, 2 * MAX_UNFLUSHED)
    assert not stats.overflowed and stats.dropped == 0
    assert len(audit.records) == 2 * MAX_UNFLUSHED
    link.flush()
    assert len(audit.records) == link.status.counts["releases"] == 2 * MAX_UNFLUSHED + 5
    link.outbox.close()


def test_status_without_a_link_has_no_queue() -> None:
    assert FederationStatus("usa-srv").add("ukr", None).to_json()["queue"] is None
