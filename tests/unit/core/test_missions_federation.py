"""The router's mission side with partner links (docs/protocol.md "Missions across the link"):
which link is handed a mission item, with which dests, and what a link may put into a local
mission. Real Router and Missions over the memory store; the links are plain subscribers."""

from __future__ import annotations

from dataclasses import dataclass, field

from liaison.model.event import Event
from liaison.model.principal import Principal, PrincipalKind
from liaison.router import Outgoing
from tests.unit.core.test_missions import service, to_mission
from tests.unit.core.test_router import Sub, event, user


@dataclass
class Link:
    """A partner link as the router sees it: a FEDERATE subscriber and the source of what the
    partner sends, federating the missions named in ``missions``."""

    principal: Principal
    missions: frozenset[str]
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Event] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out.event)

    def federates_mission(self, name: str) -> bool:
        return name in self.missions


def link(name: str, *missions: str) -> Link:
    p = Principal(
        name=f"federation:{name}",
        kind=PrincipalKind.FEDERATE,
        in_groups=frozenset({"__ANON__"}),
        out_groups=frozenset({"__ANON__"}),
    )
    return Link(p, frozenset(missions))


async def test_a_mission_item_goes_only_to_links_that_federate_its_mission() -> None:
    r, m, _ = await service()
    alice = user("alice")
    a = Sub(alice, "A")
    ukr, pol = link("ukr", "ops"), link("pol", "other")
    for s in (a, ukr, pol):
        r.attach(s)
    for name in ("ops", "other"):
        m.create(
            alice,
            name,
            creator_uid="A",
            groups=(),
            tool="public",
            description=None,
            chat_room=None,
            token=None,
        )
    # Two missions in one event: each link gets it with only the dests it federates.
    both = event(
        "m1",
        "b-m-p-s-m",
        detail='<marti><dest mission="ops"/><dest mission="other"/><dest uid="X"/></marti>',
    )
    r.publish(both, a)
    assert [[d.mission for d in e.dests] for e in ukr.got] == [["ops"]]
    assert [[d.mission for d in e.dests] for e in pol.got] == [["other"]]
    # A mission target that does not stand here (not subscribed, unknown) is not federated.
    bob = Sub(user("bob"), "B")
    r.attach(bob)
    r.publish(to_mission("m2", "ops"), bob)
    r.publish(to_mission("m3", "nope"), a)
    assert [e.uid for e in ukr.got] == ["m1"]


async def test_a_link_fills_a_local_mission_only_where_it_federates_it() -> None:
    r, m, _ = await service()
    alice = user("alice")
    a = Sub(alice, "A")
    ukr = link("ukr", "ops")
    for s in (a, ukr):
        r.attach(s)
    for name in ("ops", "other"):
        m.create(
            alice,
            name,
            creator_uid="A",
            groups=(),
            tool="public",
            description=None,
            chat_room=None,
            token=None,
        )
    r.publish(to_mission("k1", "ops"), ukr)
    r.publish(to_mission("k2", "other"), ukr)
    assert [e.uid for e in a.got if e.type == "b-m-p-s-m"] == ["k1"]
    assert [i.uid for i in m.items(alice, "ops")] == ["k1"]
    assert m.items(alice, "other") == []
    [change] = [c for c in m.changes(alice, "ops") if c.content_uid == "k1"]
    assert change.federated and change.creator_uid == "federation:ukr"
    # Never handed back to the link it came from (nor its notices: those are for clients).
    assert ukr.got == []
    assert m.m_refused.get("mission_not_federated") == 1
    await m.flush()
