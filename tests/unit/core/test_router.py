"""The router's decisions, with in-memory subscribers (no sockets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from liaison import router as router_module
from liaison.latest import LatestEntry, MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router

NOW = 1_700_000_000_000


@dataclass(eq=False)
class Sub:
    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Event] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out.event)


def user(name: str, *groups: str, out: tuple[str, ...] | None = None) -> Principal:
    g = frozenset(groups or ("__ANON__",))
    return Principal(name=name, in_groups=g, out_groups=frozenset(out) if out else g)


def event(
    uid: str, cot_type: str = "a-f-G-U-C", *, detail: str = "", stale: int = 60_000, time: int = NOW
) -> Event:
    d = ET.fromstring(f"<detail>{detail}</detail>")
    return make_event(
        uid=uid,
        type=cot_type,
        how="m-g",
        time=time,
        start=time,
        stale=time + stale,
        lat=1.0,
        lon=2.0,
        detail=d,
    )


def sa(uid: str, callsign: str) -> Event:
    return event(uid, detail=f'<contact callsign="{callsign}" endpoint="*:-1:stcp"/>')


def router() -> Router:
    return Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())


def test_implicit_routing_reaches_everyone_else_once() -> None:
    r = router()
    a, b, c = Sub(user("a")), Sub(user("b")), Sub(user("c"))
    for s in (a, b, c):
        r.attach(s)
    assert r.publish(sa("A", "ALPHA"), a) == 2
    assert [e.uid for e in b.got] == ["A"] and [e.uid for e in c.got] == ["A"]
    assert a.got == []
    assert a.client_uid == "A" and a.callsign == "ALPHA"


def test_groups_in_to_out() -> None:
    r = router()
    red, blue = Sub(user("r", "red")), Sub(user("b", "blue"))
    hq = Sub(user("hq", "hq", out=("red", "blue")))
    for s in (red, blue, hq):
        r.attach(s)
    r.publish(sa("R", "RED1"), red)
    r.publish(sa("H", "HQ1"), hq)
    assert [e.uid for e in hq.got] == ["R"]
    assert blue.got == [] and red.got == []


def test_explicit_routing_strips_dest_and_reaches_only_addressees() -> None:
    r = router()
    a, b, c = Sub(user("a")), Sub(user("b")), Sub(user("c"))
    for s, uid, cs in ((a, "A", "AL"), (b, "B", "BR"), (c, "C", "CH")):
        r.attach(s)
        r.publish(sa(uid, cs), s)
    for s in (a, b, c):
        s.got.clear()
    chat = event(
        "GeoChat.A.x.1",
        "b-t-f",
        detail='<remarks>hi</remarks><marti><dest uid="B"/><dest callsign="CH"/></marti>',
    )
    assert r.publish(chat, a) == 2
    assert len(b.got) == 1 and len(c.got) == 1 and a.got == []
    delivered = b.got[0]
    assert delivered.dests == ()
    assert delivered.detail is not None and delivered.detail.find("marti") is None
    # The original event is untouched (frozen; its detail was copied).
    assert chat.detail is not None and chat.detail.find("marti/dest") is not None


def test_all_streaming_dest_is_a_broadcast() -> None:
    r = router()
    a, b = Sub(user("a")), Sub(user("b"))
    r.attach(a)
    r.attach(b)
    chat = event("c1", "b-t-f", detail='<marti><dest callsign="All Streaming"/></marti>')
    assert r.publish(chat, a) == 1
    assert b.got[0].dests == ()


def test_group_dest_only_within_senders_groups() -> None:
    r = router()
    a = Sub(user("a", "red", "blue"))
    red, blue = Sub(user("r", "red")), Sub(user("b", "blue"))
    for s in (a, red, blue):
        r.attach(s)
    r.publish(event("m1", "b-m-p-s-m", detail='<marti><dest group="red"/></marti>'), a)
    assert [len(red.got), len(blue.got)] == [1, 0]
    r.publish(event("m2", "b-m-p-s-m", detail='<marti><dest group="green"/></marti>'), a)
    assert [len(red.got), len(blue.got)] == [1, 0]


def test_replay_contacts_first_without_stale_or_directed() -> None:
    r = router()
    a = Sub(user("a"))
    r.attach(a)
    r.publish(event("marker", "b-m-p-s-m", time=NOW - 10), a)
    r.publish(sa("A", "AL"), a)
    r.publish(event("old", "b-m-p-s-m", stale=-1), a)
    r.publish(event("dm", "b-t-f", detail='<marti><dest uid="Z"/></marti>'), a)
    late = Sub(user("late"))
    r.attach(late)
    assert r.replay_to(late) == 2
    assert [e.uid for e in late.got] == ["A", "marker"]
    other = Sub(user("other", "blue"))
    assert r.replay_to(other) == 0  # replay passes the same decision as live delivery


@dataclass(eq=False)
class Outs:
    """A subscriber keeping the Outgoing objects it is handed."""

    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Outgoing] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out)


def test_replay_renders_each_entry_once_until_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    r = router()
    a = Sub(user("a"))
    r.attach(a)
    r.publish(sa("A", "AL"), a)
    r.publish(event("m", "b-m-p-s-m", time=NOW - 10), a)
    first, second = Outs(user("first")), Outs(user("second"))
    for sub in (first, second):
        r.attach(sub)
        assert r.replay_to(sub) == 2
    # The second client is handed the very renderings the first was: rendered once.
    assert [id(o) for o in second.got] == [id(o) for o in first.got]
    first.got[0].xml()
    assert second.got[0].xml_ready is not None
    # A new report replaces the entry: the next replay renders it anew, the other stays shared.
    r.publish(event("A", detail='<contact callsign="AL2" endpoint="*:-1:stcp"/>', time=NOW + 1), a)
    third = Outs(user("third"))
    r.attach(third)
    r.replay_to(third)
    by_uid = {o.event.uid: o for o in third.got}
    assert by_uid["A"] is not first.got[0] and by_uid["A"].event.callsign == "AL2"
    assert by_uid["m"] is first.got[1]
    # Bounded: past the limit the table starts again (and the replay is still complete).
    monkeypatch.setattr(router_module, "MAX_REPLAY_RENDERINGS", 1)
    r.publish(event("m", "b-m-p-s-m", time=NOW + 5), a)
    fourth = Outs(user("fourth"))
    r.attach(fourth)
    assert r.replay_to(fourth) == 2
    assert len(r._replayed) == 1


def test_older_report_does_not_replace_newer_state() -> None:
    r = router()
    a = Sub(user("a"))
    r.publish(event("u", time=NOW), a)
    r.publish(event("u", time=NOW - 5000), a)
    assert [e.time for e in r.visible(user("v"), r.latest_entries())] == [NOW]


def test_delete_removes_state_and_is_relayed() -> None:
    r = router()
    a, b = Sub(user("a")), Sub(user("b"))
    r.attach(a)
    r.attach(b)
    deleted: list[str] = []
    r.on_delete(deleted.append)
    r.publish(event("marker", "b-m-p-s-m"), a)
    r.publish(event("d1", "t-x-d-d", detail='<link uid="marker"/><__forcedelete/>'), a)
    assert deleted == ["marker"]
    assert [e.type for e in b.got] == ["b-m-p-s-m", "t-x-d-d"]
    assert r.latest_entries() == []


def test_latest_table_is_bounded_and_expires() -> None:
    clock = [NOW]
    r = Router(metrics=Metrics(), clock_ms=lambda: clock[0], latest=MemoryLatestState(3))
    a = Sub(user("a"))
    for i in range(5):
        r.publish(event(f"u{i}", stale=1000 * (i + 1)), a)
    assert [e.event.uid for e in r.latest_entries()] == ["u2", "u3", "u4"]
    clock[0] = NOW + 3500
    assert r.expire() == 1  # u2 went stale at NOW + 3000
    r.load_latest([LatestEntry(event("seed", stale=10_000_000), frozenset({"__ANON__"}))])
    assert {e.event.uid for e in r.latest_entries()} == {"u3", "u4", "seed"}


def test_one_decision_per_access_key() -> None:
    import liaison.router as router_mod

    calls = 0
    real = router_mod.can_see

    def counting(**kw: object) -> object:
        nonlocal calls
        calls += 1
        return real(**kw)  # type: ignore[arg-type]

    r = router()
    subs = [Sub(user(f"u{i}", "blue" if i % 2 else "red")) for i in range(50)]
    for s in subs:
        r.attach(s)
    router_mod.can_see = counting  # type: ignore[assignment]
    try:
        r.publish(sa("X", "X"), Sub(user("src", "red")))
    finally:
        router_mod.can_see = real
    assert calls == 2  # two distinct access keys among 50 recipients
    assert sum(len(s.got) for s in subs) == 25


def test_events_from_a_partner_never_reach_another_partner_unless_configured() -> None:
    from liaison.model.principal import PrincipalKind

    def peer(name: str) -> Sub:
        return Sub(Principal(name=name, kind=PrincipalKind.FEDERATE))

    r = router()
    p1, p2, local = peer("p1"), peer("p2"), Sub(user("local"))
    for s in (p1, p2, local):
        r.attach(s)
    assert r.publish(event("from-p1"), p1) == 1
    assert [len(p2.got), len(local.got)] == [0, 1]
    assert r.publish(event("from-local"), local) == 2  # local events go to both partners
    r.relay_between_peers = True
    assert r.publish(event("relayed"), p1) == 2


def test_history_shows_directed_messages_to_sender_and_addressees_only() -> None:
    from liaison.protocol import cot_xml
    from liaison.storage.base import StoredEvent

    r = router()
    bob = Sub(user("bob"))
    r.attach(bob)
    r.publish(sa("uid-bob", "BOB"), bob)  # bob's client is known as uid-bob / BOB

    def record(uid: str, sender: str, dest: str) -> StoredEvent:
        ev = event(uid, "b-t-f", detail=f"<marti><dest {dest}/></marti>")
        return StoredEvent(
            uid=uid,
            type="b-t-f",
            how="h-e",
            time=NOW,
            start=NOW,
            stale=NOW + 1,
            lat=0.0,
            lon=0.0,
            hae=0.0,
            callsign=None,
            sender=sender,
            sender_groups=frozenset({"__ANON__"}),
            received=NOW,
            xml=cot_xml.render_xml(ev),
        )

    recs = [
        record("to-bob-uid", "alice", 'uid="uid-bob"'),
        record("to-bob-cs", "alice", 'callsign="BOB"'),
        record("to-web", "alice", 'uid="liaison-web-bob"'),
        record("to-carol", "alice", 'callsign="CAROL"'),
        record("from-bob", "bob", 'callsign="CAROL"'),
    ]
    seen = [x.uid for x in r.filter_records(user("bob"), recs, known_as=("liaison-web-bob",))]
    assert seen == ["to-bob-uid", "to-bob-cs", "to-web", "from-bob"]
    assert [x.uid for x in r.filter_records(user("carol"), recs)] == []


def test_directed_messages_for_partner_users_go_to_the_link_serving_them() -> None:
    from liaison.model.event import Dest
    from liaison.model.principal import PrincipalKind

    @dataclass(eq=False)
    class Link(Sub):
        remote: frozenset[str] = frozenset()

        def serves(self, d: Dest) -> bool:
            return d.uid in self.remote or d.callsign in self.remote

    r = router()
    local = Sub(user("local"))
    link = Link(Principal(name="ukr", kind=PrincipalKind.FEDERATE), remote=frozenset({"K1"}))
    other = Link(Principal(name="fra", kind=PrincipalKind.FEDERATE), remote=frozenset({"F1"}))
    for s in (local, link, other):
        r.attach(s)
    r.publish(sa("L", "LOCAL"), local)
    local.got.clear()
    link.got.clear()
    other.got.clear()
    chat = event("dm", "b-t-f", detail='<marti><dest uid="K1"/><dest callsign="LOCAL"/></marti>')
    assert r.publish(chat, Sub(user("sender"))) == 2
    [sent] = link.got
    assert [d.uid for d in sent.dests] == ["K1"]  # only the partner's own recipient travels
    assert sent.detail is not None and len(sent.detail.findall("marti/dest")) == 1
    assert local.got[0].dests == () and other.got == []
