"""The cluster bus's publisher (cluster/bus.py ``_publish_batch``) on a fake JetStream: a
partner's event another node already published on some of its groups' subjects (a lease holder
that died before acknowledging it to the partner) is distributed here only to the subscribers
who did not have it from that node's copies."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from liaison.cluster.bus import ClusterSettings, NatsBus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.protocol import cluster_wire
from liaison.router import AcceptedEvent, Router
from tests.unit.core.test_router import NOW, Sub, event, user

pytest.importorskip("nats", reason="nats-py is not installed (the cluster extra)")


class FakeJs:
    """JetStream's publish: a copy whose subject is in ``held`` was stored before (duplicate)."""

    def __init__(self, held: set[str]) -> None:
        self.held = held

    async def publish(self, subject: str, payload: bytes, **kw: Any) -> Any:
        return SimpleNamespace(duplicate=subject in self.held)


@dataclass
class PartnerSource:
    """A partner link's source as the router sees it (federation/link.py), with its dedup id."""

    principal: Principal
    bus_dedup: str | None = "fed/ukr/1"
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Any] = field(default_factory=list)


def setup(held_groups: set[str]) -> tuple[NatsBus, Router, dict[str, Sub]]:
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    settings = ClusterSettings(servers=("nats://127.0.0.1:1",), node="n1", prefix="p")
    bus = NatsBus(settings, router, Metrics())
    bus._js = FakeJs({cluster_wire.subject_for("p", g) for g in held_groups})
    readers = {
        "a": Sub(user("reads-a", "A")),
        "b": Sub(user("reads-b", "B")),
        "ab": Sub(user("reads-ab", "A", "B")),
    }
    for r in readers.values():
        router.attach(r)
    return bus, router, readers


async def publish(bus: NatsBus, router: Router) -> None:
    source = PartnerSource(user("ukr", "A", "B"))
    accepted = router.accept(event("x"), source)  # type: ignore[arg-type]
    assert isinstance(accepted, AcceptedEvent)
    bus.submit(accepted)
    assert await bus._publish_batch() is True


async def test_a_partner_event_published_before_on_every_group_is_not_distributed_again() -> None:
    bus, router, readers = setup({"A", "B"})
    await publish(bus, router)
    assert all(r.got == [] for r in readers.values())
    assert bus.m_dropped.get("republished") == 1


async def test_one_published_before_on_some_groups_reaches_only_the_readers_of_the_others() -> None:
    bus, router, readers = setup({"A"})  # the dead holder got as far as A
    await publish(bus, router)
    assert [e.uid for e in readers["b"].got] == ["x"]  # reads B only: had no copy
    assert readers["a"].got == [] and readers["ab"].got == []  # had A's copy from the bus
    assert bus.m_dropped.get("republished") == 0


async def test_a_partner_event_never_published_before_reaches_everyone_once() -> None:
    bus, router, readers = setup(set())
    await publish(bus, router)
    assert all([e.uid for e in r.got] == ["x"] for r in readers.values())
