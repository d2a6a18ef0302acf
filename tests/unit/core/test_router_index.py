"""The router's index of live subscribers by client uid and callsign (explicit routing).

The index must give exactly what a scan of every subscriber gives, after any sequence of
connects, disconnects and renames."""

from __future__ import annotations

import itertools
import random

from liaison.model.event import Event
from liaison.model.principal import Principal, PrincipalKind
from liaison.router import Router, Subscriber
from tests.unit.core.test_router import Sub, event, router, sa, user

_msgs = itertools.count()


def chat(uid: str, *dests: str) -> Event:
    marti = "".join(f"<dest {d}/>" for d in dests)
    return event(uid, "b-t-f", detail=f"<remarks>hi</remarks><marti>{marti}</marti>")


def dm(r: Router, sender: Sub, *dests: str) -> int:
    """A directed chat from ``sender``; returns the deliveries."""
    return r.publish(chat(f"dm-{next(_msgs)}", *dests), sender)


def scan(r: Router, uids: set[str], callsigns: set[str]) -> list[Subscriber]:
    """What the router found before the index: every attached subscriber, tested one by one."""
    return [s for s in r.subscribers if s.client_uid in uids or s.callsign in callsigns]


def assert_index_exact(r: Router) -> None:
    subs = list(r.subscribers)
    uids = {s.client_uid for s in subs if s.client_uid}
    calls = {s.callsign for s in subs if s.callsign}
    for u in uids:
        assert r._addressees({u}, set()) == scan(r, {u}, set())
    for c in calls:
        assert r._addressees(set(), {c}) == scan(r, set(), {c})
    assert r._addressees(uids, calls) == scan(r, uids, calls)
    # Bounded by the sessions: nothing is kept for a subscriber that left.
    assert len(r._indexed) == len(subs)
    assert sum(len(b) for b in r._by_uid.values()) == len(subs)
    assert sum(len(b) for b in r._by_callsign.values()) == sum(1 for s in subs if s.callsign)
    assert all(r._by_uid.values()) and all(r._by_callsign.values())


def test_connect_disconnect_and_rename_keep_routing_exact() -> None:
    r = router()
    a, b, c = Sub(user("a")), Sub(user("b")), Sub(user("c"))
    for s in (a, b, c):
        r.attach(s)
    r.publish(sa("UA", "ALPHA"), a)
    r.publish(sa("UB", "BRAVO"), b)
    assert_index_exact(r)
    assert dm(r, c, 'uid="UB"') == 1 and b.got[-1].type == "b-t-f"
    assert dm(r, c, 'callsign="ALPHA"') == 1 and a.got[-1].type == "b-t-f"
    # Rename: the old callsign reaches nobody, the new one reaches the client.
    r.publish(sa("UA", "ALPHA-2"), a)
    assert a.callsign == "ALPHA-2"
    assert_index_exact(r)
    before = len(a.got)
    assert dm(r, c, 'callsign="ALPHA"') == 0 and len(a.got) == before
    assert r.m_unrouted.get("offline") == 1
    assert dm(r, c, 'callsign="ALPHA-2"') == 1 and len(a.got) == before + 1
    # A report with another uid does not change who the session is.
    r.publish(sa("OTHER", "ZULU"), a)
    assert (a.client_uid, a.callsign) == ("UA", "ALPHA-2")
    assert dm(r, c, 'callsign="ZULU"') == 0
    # Disconnect: gone from the index, counted as offline.
    r.detach(b)
    assert_index_exact(r)
    assert dm(r, c, 'uid="UB"') == 0
    assert r.m_unrouted.get("offline") == 3
    for s in (a, c):
        r.detach(s)
    assert_index_exact(r)
    assert r._by_uid == {} and r._by_callsign == {} and r._order == {}


def test_two_sessions_with_one_callsign_both_receive() -> None:
    r = router()
    a1, a2, c = Sub(user("a")), Sub(user("a2")), Sub(user("c"))
    for s in (a1, a2, c):
        r.attach(s)
    r.publish(sa("U1", "SAME"), a1)
    r.publish(sa("U2", "SAME"), a2)
    assert_index_exact(r)
    assert dm(r, c, 'callsign="SAME"') == 2
    # Named twice (by uid and callsign), a recipient still gets the message once.
    n1 = len(a1.got)
    assert dm(r, c, 'callsign="SAME"', 'uid="U1"') == 2 and len(a1.got) == n1 + 1
    r.detach(a1)
    assert_index_exact(r)
    assert dm(r, c, 'callsign="SAME"') == 1 and a2.got[-1].type == "b-t-f"
    # The sender is never its own recipient, even when it names itself.
    assert dm(r, a2, 'callsign="SAME"') == 0


def test_client_reconnecting_with_the_same_uid() -> None:
    r = router()
    old, c = Sub(user("a")), Sub(user("c"))
    r.attach(old)
    r.attach(c)
    r.publish(sa("UA", "ALPHA"), old)
    # The device reconnects before the old session is noticed gone: both hold the uid.
    new = Sub(user("a"))
    r.attach(new)
    r.publish(sa("UA", "ALPHA"), new)
    assert_index_exact(r)
    assert dm(r, c, 'uid="UA"') == 2
    r.detach(old)
    assert_index_exact(r)
    assert dm(r, c, 'uid="UA"') == 1 and new.got[-1].type == "b-t-f"
    # The old session got the chat sent while it was attached, and nothing after.
    assert [e.type for e in old.got if e.type == "b-t-f"] == ["b-t-f"]


def test_partner_links_and_mission_clients_found_through_the_index() -> None:
    r = router()
    fed = Principal(name="partner", kind=PrincipalKind.FEDERATE, in_groups=frozenset({"x"}))
    link = Sub(fed, client_uid="LINK-UID", callsign="LINK")
    unknown = Sub(user("m"))  # no client uid yet: named ("", "m")
    known = Sub(user("m"))
    for s in (link, unknown, known):
        r.attach(s)
    r.publish(sa("UK", "KNOWN"), known)
    assert_index_exact(r)
    # A partner link is never an explicit local addressee, even under its own uid.
    assert dm(r, known, 'uid="LINK-UID"') == 0
    # Server-made events to clients named by (uid, user): the unidentified session too.
    n = r.deliver_to_clients(
        event("notice", "t-x-m-c"),
        sender_groups=frozenset({"__ANON__"}),
        label=None,
        clients=[("", "m"), ("UK", "m"), ("UK", "nobody"), ("LINK-UID", "partner")],
        path="mission",
    )
    assert n == 2 and unknown.got[-1].uid == "notice" and known.got[-1].uid == "notice"
    assert [e.type for e in link.got] == ["a-f-G-U-C"]  # the implicit report only


def test_index_matches_a_full_scan_after_random_churn() -> None:
    rnd = random.Random(11)
    r = router()
    live: list[Sub] = []
    for step in range(600):
        op = rnd.random()
        if op < 0.35 or not live:
            s = Sub(user(f"u{step}"))
            r.attach(s)
            live.append(s)
        elif op < 0.5:
            s = live.pop(rnd.randrange(len(live)))
            r.detach(s)
        else:
            s = rnd.choice(live)
            r.publish(sa(f"UID{rnd.randrange(20)}", f"CS{rnd.randrange(15)}"), s)
        if step % 50 == 0:
            assert_index_exact(r)
    assert_index_exact(r)
    sender = Sub(user("sender"))
    r.attach(sender)
    for i in range(20):
        uids, calls = {f"UID{i}"}, {f"CS{i % 15}"}
        want = [s for s in scan(r, uids, calls) if s is not sender]
        before = {id(s): len(s.got) for s in want}
        assert dm(r, sender, f'uid="UID{i}"', f'callsign="CS{i % 15}"') == len(want)
        assert all(len(s.got) == before[id(s)] + 1 for s in want)
