"""The router's two steps, each on its own: ``accept`` (ingest rules, labelling, the ingest
record, storing, the latest state) and ``distribute`` (decisions, release and deny records,
delivery), with in-memory subscribers, audit and store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from liaison.gate import Gate, load_gate_config
from liaison.latest import LatestEntry, LatestState, MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.router import AcceptedEvent, Refusal, Router
from liaison.storage.base import StoreWriter
from liaison.storage.memory import MemoryStore
from tests.unit.core.test_gate import POLICY, FakeAudit, Sub, delete, event, label, person

NOW = 1_700_000_000_000


class BatchAudit(FakeAudit):
    """Counts the batches (one write and one fsync each in the real log)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> object:
        result = super().append_many(entries)
        self.batches += 1
        return result


def setup(latest: LatestState | None = None) -> tuple[Router, Gate, BatchAudit, StoreWriter]:
    audit = BatchAudit()
    gate = Gate(load_gate_config(POLICY), audit=audit, clock_ms=lambda: NOW)
    writer = StoreWriter(MemoryStore())
    router = Router(
        metrics=Metrics(),
        clock_ms=lambda: NOW,
        writer=writer,
        latest=latest if latest is not None else MemoryLatestState(),
        gate=gate,
    )
    return router, gate, audit, writer


def kinds(audit: FakeAudit) -> list[str]:
    return [k for k, _ in audit.records]


def test_accept_records_stores_and_remembers_but_delivers_nothing() -> None:
    router, gate, audit, writer = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    accepted = router.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert isinstance(accepted, AcceptedEvent)
    assert accepted.event.releasable_to == "REL TO USA, UKR" and accepted.source is sender
    assert kinds(audit) == ["ingest"] and audit.records[0][1]["accepted"] is True
    assert writer.pending == 1
    assert [e.event for e in router.latest_entries()] == [accepted.event]
    assert ukr.got == []


def test_distribute_decides_records_then_delivers() -> None:
    router, gate, audit, writer = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    ukr_u = Sub(person(gate, "ukr-u", "UKR", "ukr-unclass"))
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    for s in (ukr, ukr_u, sender):
        router.attach(s)
    accepted = router.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert isinstance(accepted, AcceptedEvent)
    assert router.distribute(accepted) == 1
    assert ukr.got == [accepted.event] and ukr_u.got == [] and sender.got == []
    assert kinds(audit) == ["ingest", "release", "deny"]
    assert writer.pending == 1  # distributing stores nothing


def test_accept_refuses_by_the_ingest_rules_and_keeps_nothing() -> None:
    router, gate, audit, writer = setup()
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    for s in (usa, ukr):
        router.attach(s)
    router.publish(event("x", label(gate, "SECRET", "USA"), gate), usa)
    kept = router.latest_entries()
    refused = router.accept(delete("d", "x"), ukr)
    assert refused == Refusal(("prior_not_visible",))
    assert audit.records[-1][0] == "ingest" and audit.records[-1][1]["accepted"] is False
    assert router.latest_entries() == kept and writer.pending == 1


def test_accept_of_a_delete_forgets_the_target() -> None:
    router, gate, _, _ = setup()
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    deleted: list[str] = []
    router.on_delete(deleted.append)
    router.publish(event("x", label(gate, "SECRET", "USA"), gate), usa)
    accepted = router.accept(delete("d", "x"), usa)
    assert isinstance(accepted, AcceptedEvent) and accepted.event.releasable_to == "REL TO USA"
    assert deleted == ["x"] and router.latest_entries() == []


def test_publish_checked_writes_one_audit_batch_per_event() -> None:
    router, gate, audit, _ = setup()
    router.attach(Sub(person(gate, "ukr", "UKR", "ukr-secret")))
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    published = router.publish_checked(
        event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender
    )
    assert published.delivered == 1
    assert kinds(audit) == ["ingest", "release"] and audit.batches == 1


def test_accept_is_held_while_the_audit_log_fails_then_accepted_and_distributed() -> None:
    router, gate, audit, writer = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    audit.fail = True
    held = router.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert held == Refusal((), held=True)
    assert writer.pending == 0 and router.latest_entries() == []
    audit.fail = False
    gate.recovered(audit)
    assert router.audit_recovered() == 1
    assert [e.uid for e in ukr.got] == ["m"] and writer.pending == 1
    assert kinds(audit) == ["ingest", "release"]


def test_distribute_is_held_while_the_audit_log_fails_and_not_accepted_twice() -> None:
    router, gate, audit, writer = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    accepted = router.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert isinstance(accepted, AcceptedEvent)
    audit.fail = True
    assert router.distribute(accepted) == 0 and ukr.got == [] and router.congested
    audit.fail = False
    gate.recovered(audit)
    assert router.audit_recovered() == 1
    assert ukr.got == [accepted.event]
    assert kinds(audit) == ["ingest", "release"] and writer.pending == 1


def test_a_second_router_on_the_same_latest_state_distributes_what_the_first_accepted() -> None:
    # What a second node will do: one accepts, each distributes to its own subscribers, and
    # replay on either reads the one latest state.
    shared = MemoryLatestState()
    first, gate, _, _ = setup(shared)
    second, gate2, audit2, _ = setup(shared)
    here = Sub(person(gate, "usa-here", "USA", "usa-secret"))
    there = Sub(person(gate2, "ukr-there", "UKR", "ukr-secret"))
    first.attach(here)
    second.attach(there)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    accepted = first.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert isinstance(accepted, AcceptedEvent)
    assert first.distribute(accepted) == 1 and second.distribute(accepted) == 1
    assert here.got == [accepted.event] and there.got == [accepted.event]
    assert kinds(audit2) == ["release"]  # the ingest record is the accepting router's
    late = Sub(person(gate2, "ukr-late", "UKR", "ukr-secret"))
    assert second.replay_to(late) == 1
    assert shared.get("m") == LatestEntry(
        accepted.event, sender.principal.in_groups, accepted.label
    )


def test_without_labels_accept_and_distribute_need_no_gate() -> None:
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    a, b = Sub(person_plain("a")), Sub(person_plain("b"))
    for s in (a, b):
        router.attach(s)
    accepted = router.accept(event("m"), a)
    assert isinstance(accepted, AcceptedEvent) and accepted.label is None
    assert router.distribute(accepted) == 1 and b.got == [accepted.event] and a.got == []


def person_plain(name: str) -> Principal:
    return Principal(name=name)


class HeldBus:
    """A cluster bus that keeps what it is given until the test acknowledges it."""

    def __init__(self) -> None:
        self.submitted: list[AcceptedEvent] = []
        self.groups: dict[str, int] = {}

    def submit(self, accepted: AcceptedEvent) -> None:
        self.submitted.append(accepted)

    def interest(self, groups: frozenset[str], delta: int) -> None:
        for g in groups:
            self.groups[g] = self.groups.get(g, 0) + delta

    @property
    def congested(self) -> bool:
        return False


def test_with_a_bus_the_latest_state_takes_an_event_only_on_the_buss_acknowledgement() -> None:
    # Found by tests/integration/test_cluster_failover.py: a client connecting between the
    # acceptance and the acknowledgement was replayed the event, then sent it live (twice), and
    # replayed an event the bus might never hold (its node killed before the acknowledgement).
    router, gate, _audit, writer = setup()
    bus = HeldBus()
    router.set_bus(bus)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    router.attach(sender)
    router.publish(event("m", label(gate, "SECRET", "USA"), gate), sender)
    (accepted,) = bus.submitted
    assert writer.pending == 1  # stored at once (the node's own history)
    assert router.latest_entries() == []  # nothing to replay yet
    late = Sub(person(gate, "usa-2", "USA", "usa-secret"))
    router.attach(late)  # connects before the acknowledgement: replayed nothing
    assert router.distribute_acknowledged(accepted) == 1
    assert late.got == [accepted.event]  # live, once
    assert [e.event for e in router.latest_entries()] == [accepted.event]
    # A delete forgets its target on the acknowledgement too.
    router.publish(delete("d1", "m", label(gate, "SECRET", "USA"), gate), sender)
    assert [e.event.uid for e in router.latest_entries()] == ["m"]
    router.distribute_acknowledged(bus.submitted[1])
    assert router.latest_entries() == []


def test_a_report_replayed_from_the_clusters_bucket_is_not_sent_again_live() -> None:
    """The cluster's bucket and its bus are two streams: another node's report can reach this
    node's latest state (an ``early`` entry, cluster/latest_kv.py) before the bus brings it. A
    client replayed it meanwhile must not get the same report again live (found by
    tests/integration/test_cluster_failover.py: a reconnected client got one event twice)."""
    import dataclasses

    from liaison.cluster.bus import RemoteSource

    router, gate, _, _ = setup()
    remote = RemoteSource(person(gate, "usa-far", "USA", "usa-secret"))
    lab = label(gate, "SECRET", "USA")
    reported = event("far", lab, gate)
    groups = remote.principal.in_groups
    before = Sub(person(gate, "usa-1", "USA", "usa-secret"))
    router.attach(before)  # attached before the bucket's value: not replayed it
    router._latest.put(LatestEntry(reported, groups, lab, early=True), shared=False)
    late = Sub(person(gate, "usa-2", "USA", "usa-secret"))
    router.attach(late)
    assert router.replay_to(late) == 1
    assert router.distribute_remote(reported, lab, remote) == 1  # to `before` only
    assert [e.uid for e in before.got] == ["far"]
    assert [e.uid for e in late.got] == ["far"]
    assert not router._latest.get("far").early  # type: ignore[union-attr]
    # The next report of that uid reaches both, as any live event.
    newer = dataclasses.replace(reported, time=NOW + 1000)
    assert router.distribute_remote(newer, lab, remote) == 2
    assert router._early_replays == {}
    # An early entry replayed, then a newer report arrives first: delivered (not the replayed
    # one), and the memory of the replay goes.
    router._latest.put(LatestEntry(event("far2", lab, gate), groups, lab, early=True))
    third = Sub(person(gate, "usa-3", "USA", "usa-secret"))
    router.attach(third)
    router.replay_to(third)
    assert "far2" in router._early_replays
    later = dataclasses.replace(event("far2", lab, gate), time=NOW + 5)
    assert router.distribute_remote(later, lab, remote) == 3
    assert "far2" not in router._early_replays
    assert [e.time for e in third.got if e.uid == "far2"] == [NOW, NOW + 5]


def test_early_replays_are_remembered_for_a_bounded_number_of_uids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import liaison.router as router_module

    monkeypatch.setattr(router_module, "MAX_EARLY_REPLAYS", 3)
    router, gate, _, _ = setup()
    lab = label(gate, "SECRET", "USA")
    sender = person(gate, "usa-far", "USA", "usa-secret")
    for i in range(5):
        router._latest.put(
            LatestEntry(event(f"u{i}", lab, gate), sender.in_groups, lab, early=True)
        )
    sub = Sub(person(gate, "usa-1", "USA", "usa-secret"))
    router.attach(sub)
    assert router.replay_to(sub) == 5
    assert list(router._early_replays) == ["u2", "u3", "u4"]


def test_after_the_audit_log_recovers_the_partner_links_router_releases_too(
    tmp_path: Path,
) -> None:
    """On a cluster's lease holder the partner links have a router of their own
    (federation/leased.py); what it held while the audit log failed is released with the
    node's router's (app.py _release_held)."""
    from liaison.app import _release_held
    from liaison.federation.leased import LeasedFederation
    from tests.unit.federation.fed_support import fed_config

    router, gate, audit, _writer = setup()
    links = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState(), gate=gate)
    leased = LeasedFederation(
        config=fed_config(),
        storage_url="postgresql://127.0.0.1/test",
        node="n1",
        bus=cast(Any, None),  # not used before run()
        router=router,
        gate=gate,
        audit=cast(Any, audit),
        data_dir=tmp_path,
        server_cert=tmp_path / "cert.pem",
        server_key=tmp_path / "key.pem",
        clock_ms=lambda: NOW,
        metrics=Metrics(),
        links_router=lambda: links,
    )
    leased.links_router = links  # what _hold sets while this node holds the lease
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    links.attach(ukr)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    audit.fail = True
    held = links.accept(event("m", label(gate, "SECRET", "USA", "UKR"), gate), sender)
    assert held == Refusal((), held=True) and ukr.got == []
    audit.fail = False
    gate.recovered(audit)
    assert _release_held(router, leased) == 1
    assert [e.uid for e in ukr.got] == ["m"]
    leased.links_router = None  # not holding the lease: nothing of the links to release
    assert _release_held(router, leased) == 0 and _release_held(router, None) == 0
