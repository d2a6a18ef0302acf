"""The links' router of a cluster's lease holder resolves mission destinations as a single node
does (federation/links_missions.py, docs/deployment.md "Partner links", Missions): real
Router and Missions over the memory store; events come as the stream feed hands them
(``Router.distribute_feed``) from a sender connected to another node."""

from __future__ import annotations

from collections.abc import Callable

from liaison.cluster.bus import RemoteSource
from liaison.federation.links_missions import LinksMissions
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.missions import Missions
from liaison.router import Router
from tests.unit.core.test_missions import NOW, service, to_mission
from tests.unit.core.test_missions_federation import Link, link
from tests.unit.core.test_router import user


def links_router(m: Missions, *links: Link, relay: bool = False) -> Router:
    lr = Router(
        metrics=Metrics(),
        clock_ms=lambda: NOW,
        latest=MemoryLatestState(),
        relay_between_peers=relay,
    )
    by_sender: dict[str, Callable[[str], bool]] = {
        k.principal.name: k.federates_mission for k in links
    }
    lr.set_missions(LinksMissions(m, by_sender.get))
    for k in links:
        lr.attach(k)
    return lr


def make(m: Missions, name: str) -> None:
    m.create(
        user("alice"),
        name,
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )


async def test_a_mission_event_from_another_node_reaches_the_links_that_federate_it() -> None:
    _, m, _ = await service()
    make(m, "ops")
    make(m, "other")
    ukr, pol = link("ukr", "ops"), link("pol", "other")
    lr = links_router(m, ukr, pol)
    alice = RemoteSource(user("alice"))  # subscribed (she made both missions), on another node
    assert lr.distribute_feed(to_mission("k1", "ops"), None, alice) == 1
    assert [(e.uid, [d.mission for d in e.dests]) for e in ukr.got] == [("k1", ["ops"])]
    assert pol.got == []
    # Not a writer of the mission, or an unknown mission: the target does not stand, as on the
    # node that accepted it; nothing reaches a link as a mission item.
    assert lr.distribute_feed(to_mission("k2", "ops"), None, RemoteSource(user("bob"))) == 0
    assert lr.distribute_feed(to_mission("k3", "nope"), None, alice) == 0
    assert [e.uid for e in ukr.got] == ["k1"]
    # The accepting node keeps the item: the links' router adds nothing to the mission.
    assert m.items(user("alice"), "ops") == []
    await m.flush()


async def test_a_partners_mission_event_is_relayed_only_where_its_link_federates_it() -> None:
    _, m, _ = await service()
    make(m, "ops")
    ukr, pol, fra = link("ukr", "ops"), link("pol", "ops"), link("fra")
    lr = links_router(m, ukr, pol, fra, relay=True)
    # From ukr (its link federates ops): relayed to pol, which federates it too, not to fra.
    # (ukr is offered its own event here; a PeerLink drops it: feed_next names the sender.)
    lr.distribute_feed(to_mission("r1", "ops"), None, RemoteSource(ukr.principal))
    assert [e.uid for e in pol.got] == ["r1"] and fra.got == []
    # From fra, whose link does not federate ops: the target does not stand.
    assert lr.distribute_feed(to_mission("r2", "ops"), None, RemoteSource(fra.principal)) == 0
    await m.flush()
