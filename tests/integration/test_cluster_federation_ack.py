"""In a cluster, a partner link acknowledges an event from its peer only once the bus has it
(docs/deployment.md "What the cluster receives from a partner"): a real NatsBus on NATS
JetStream, a PeerLink whose ``bus`` is it. Skipped without NATS, failed under
LIAISON_REQUIRE_SERVICES=1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liaison.cluster.bus import ClusterSettings, NatsBus
from liaison.errors import PeerError
from liaison.federation import link as link_mod
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outbox
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.router import Router
from tests.unit.core.test_router import Sub, user
from tests.unit.federation.fed_support import POLICY, UKR_ORIG, cot, fed_config, peer_table
from tests.unit.federation.test_peer_link import MemoryAudit

NATS_URL = os.environ.get("LIAISON_TEST_NATS", "nats://127.0.0.1:4222")
WAIT_S = 10.0
PROV = '<__federation origin="ukr-srv" hops="1"/>'
CONTACT = '<contact callsign="ALPHA" endpoint="*:-1:stcp"/><__group name="Cyan"/>'


def inbound(uid: str) -> bytes:
    return cot(uid=uid, label=UKR_ORIG, detail=CONTACT + PROV)


@pytest.fixture
async def bus() -> AsyncIterator[tuple[NatsBus, Router]]:
    tag = secrets.token_hex(4)
    router = Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState())
    settings = ClusterSettings(
        servers=(NATS_URL,), node="me", prefix=f"lt{tag}", stream=f"LIAISON_TEST_{tag}"
    )
    b = NatsBus(settings, router, Metrics())
    try:
        async with asyncio.timeout(5):
            await b.bind()
    except Exception as exc:
        reason = f"NATS JetStream at {NATS_URL} is unavailable: {exc!r}"
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"cluster tests required but {reason}")
        pytest.skip(reason)
    router.set_bus(b)
    try:
        yield b, router
    finally:
        with contextlib.suppress(Exception):
            await b.jetstream.delete_stream(settings.stream)
        await b.close()


def make_link(tmp_path: Path, router: Router, bus: NatsBus, **peer: Any) -> PeerLink:
    fed = fed_config(peers=[peer_table(**peer)])
    link = PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=router,
        audit=MemoryAudit(),
        outbox=Outbox.open(tmp_path / "ukr.db", durable=False),
        status=FederationStatus("usa-srv").add("ukr", None),
        clock_ms=lambda: 1_764_072_000_000,
    )
    link.bus = bus
    return link


async def stream_uids(bus: NatsBus) -> int:
    info = await bus.jetstream.stream_info(bus.settings.stream)
    return int(info.state.messages)


async def test_the_ack_waits_for_the_bus_and_a_resend_is_not_applied_again(
    tmp_path: Path, bus: tuple[NatsBus, Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, router = bus
    link = make_link(tmp_path, router, b)
    validator = link.peer_identified("ukr-srv")
    monkeypatch.setattr(link_mod, "BUS_WAIT_S", 0.3)
    # The bus's publisher is not running: the events are accepted, not in the stream.
    with pytest.raises(PeerError) as refused:
        await link.receive([(1, inbound("a")), (2, inbound("b"))], validator)
    assert refused.value.reason == "bus_wait"
    assert link.outbox.last_applied == 0 and link.last_applied == 0  # no RESUME covers them
    assert b.pending() == 2 and await stream_uids(b) == 0
    # The peer sends them again after it reconnects: dropped (applied here, waiting for the
    # bus), still not acknowledged while the bus has not taken them.
    with pytest.raises(PeerError):
        await link.receive([(1, inbound("a")), (2, inbound("b"))], validator)
    assert link.status.counts["duplicates"] == 2 and b.pending() == 2
    # The bus takes them: the next batch's acknowledgement covers all three, once published.
    monkeypatch.setattr(link_mod, "BUS_WAIT_S", WAIT_S)
    publisher = asyncio.create_task(b.run())
    try:
        async with asyncio.timeout(WAIT_S):
            assert await link.receive([(3, inbound("c"))], validator) == 3
        assert link.outbox.last_applied == 3 and b.pending() == 0
        assert await stream_uids(b) == 3 * len(link.source.principal.in_groups)  # a copy a group
        # A batch of duplicates only is acknowledged at once.
        async with asyncio.timeout(WAIT_S):
            assert await link.receive([(3, inbound("c"))], validator) == 3
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        link.outbox.close()


async def test_events_distributed_unshared_are_not_acknowledged(
    tmp_path: Path, bus: tuple[NatsBus, Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, router = bus
    link = make_link(tmp_path, router, b)
    validator = link.peer_identified("ukr-srv")
    monkeypatch.setattr("liaison.cluster.bus.MAX_PENDING", 1)
    with pytest.raises(PeerError) as refused:
        await link.receive([(1, inbound("a")), (2, inbound("b"))], validator)
    assert refused.value.reason == "bus_full" and b.unshared == 1
    assert link.outbox.last_applied == 0
    link.outbox.close()


async def test_an_event_applied_again_by_the_next_holder_is_distributed_once(
    tmp_path: Path, bus: tuple[NatsBus, Router]
) -> None:
    """The holder applied and published the peer's event 1 and died before acknowledging it;
    the peer sends it again to the next holder, which applies it again: JetStream knows it by
    the peer and its number (``fed/ukr/1``), so it is stored once and the next holder's own
    clients, which had it from the first holder, do not get it twice."""
    first_bus, first_router = bus
    settings = first_bus.settings
    second_router = Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState())
    second_bus = NatsBus(
        ClusterSettings(
            servers=settings.servers, node="other", prefix=settings.prefix, stream=settings.stream
        ),
        second_router,
        Metrics(),
    )
    await second_bus.bind()
    second_router.set_bus(second_bus)
    reader = Sub(user("usa-s"))  # a client of the next holder reading the peer's group
    second_router.attach(reader)
    tasks = [asyncio.create_task(first_bus.run()), asyncio.create_task(second_bus.run())]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = make_link(tmp_path / "first", first_router, first_bus)
    second = make_link(tmp_path / "second", second_router, second_bus)
    try:
        await asyncio.sleep(0.5)  # the second node subscribes to the group of its reader
        v1, v2 = first.peer_identified("ukr-srv"), second.peer_identified("ukr-srv")
        async with asyncio.timeout(WAIT_S):
            assert await first.receive([(1, inbound("x"))], v1) == 1
            for _ in range(100):  # bounded: 10 s
                if reader.got:
                    break
                await asyncio.sleep(0.1)
        assert [e.uid for e in reader.got] == ["x"]
        stored = await stream_uids(first_bus)
        # The next holder never saw the ACK go out: the peer sends event 1 again.
        async with asyncio.timeout(WAIT_S):
            assert await second.receive([(1, inbound("x"))], v2) == 1
        await asyncio.sleep(0.5)
        assert [e.uid for e in reader.got] == ["x"]  # not twice
        assert await stream_uids(first_bus) == stored
        assert second_bus.m_dropped.get("republished") == 1
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await second_bus.close()
        first.outbox.close()
        second.outbox.close()


async def test_a_tak_peers_events_wait_for_the_bus_but_are_not_named_by_their_number(
    tmp_path: Path, bus: tuple[NatsBus, Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TAK wire numbers what it receives from last_applied (fig_link.apply_inbound): the
    numbers name nothing for good, so they neither name the event on the bus nor make a later
    event a duplicate."""
    b, router = bus
    link = make_link(tmp_path, router, b, protocol="tak-v1")
    validator = link.peer_identified("ukr-srv")
    monkeypatch.setattr(link_mod, "BUS_WAIT_S", 0.3)
    with pytest.raises(PeerError):
        await link.receive([(1, inbound("a"))], validator)
    assert link.outbox.last_applied == 0 and b.pending() == 1
    # After the reconnect the wire numbers the next event 1 again: another event, applied.
    with pytest.raises(PeerError):
        await link.receive([(1, inbound("b"))], validator)
    assert b.pending() == 2 and link.status.counts["duplicates"] == 0
    assert [w.wire.dedup for w in b._pending] == [None, None]
    link.outbox.close()
