"""The mission service over the in-memory mission store and a router with in-memory
subscribers (no sockets), and the two mission stores against one contract."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from liaison.errors import StorageError
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.missions import (
    CLOSE_WRITE_ATTEMPTS,
    MAX_MISSION_ITEMS,
    MAX_WRITE_BATCH,
    MissionError,
    Missions,
    make_token,
    resource_hash,
    token_claims,
    unpadded_time,
)
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.router import Router
from liaison.storage.base import StoredEvent
from liaison.storage.files import FileRecord
from liaison.storage.missions import (
    MemoryMissionStore,
    MissionChangeRecord,
    MissionContent,
    MissionItem,
    MissionRecord,
    MissionStore,
    MissionWrite,
    SqliteMissionStore,
    SubscriptionRecord,
)
from tests.unit.core.test_router import NOW, Sub, event, sa, user
from tests.unit.storage.storage_support import MISSION_STORE_KINDS, opened_mission_store


async def service() -> tuple[Router, Missions, MemoryMissionStore]:
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    store = MemoryMissionStore()
    m = Missions(router=r, store=store, metrics=Metrics(), clock_ms=lambda: NOW)
    await m.load()
    r.set_missions(m)
    return r, m, store


def to_mission(uid: str, mission: str, groups: str = "") -> Event:
    return event(uid, "b-m-p-s-m", detail=f'<marti><dest mission="{mission}"/></marti>{groups}')


def test_the_item_limit_is_taks_default() -> None:
    assert MAX_MISSION_ITEMS == 8_192  # CoreConfig.xsd missionUidLimit


def test_unpadded_time_is_the_millisecond_count() -> None:
    # Java's S: 5 ms prints .5, 50 ms .50 (tak-missions.md 2.4).
    assert unpadded_time(1_700_000_000_005) == "2023-11-14T22:13:20.5Z"
    assert unpadded_time(1_700_000_000_050) == "2023-11-14T22:13:20.50Z"


def test_tokens_are_checked_and_bound_to_their_secret() -> None:
    rec = MissionRecord(
        name="m", guid="g", creator="a", creator_uid="u", groups=frozenset({"x"}), label=None
    )
    token = make_token(b"k" * 32, kind="SUBSCRIPTION", mission=rec, now_ms=NOW)
    claims = token_claims(b"k" * 32, token)
    assert claims is not None and claims["MISSION_NAME"] == "m" and claims["sub"] == "SUBSCRIPTION"
    assert token_claims(b"j" * 32, token) is None
    assert token_claims(b"k" * 32, token[:-2] + "AA") is None
    assert token_claims(b"k" * 32, "not a token") is None


async def test_mission_cot_reaches_live_subscribers_only_and_is_kept() -> None:
    r, m, store = await service()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    a, b, c = Sub(alice, "A"), Sub(bob, "B"), Sub(carol, "C")
    for s in (a, b, c):
        r.attach(s)
    _, owner_token = m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    assert owner_token is not None
    m.subscribe(bob, "ops", "B", None)
    r.publish(to_mission("m1", "ops"), a)
    assert [e.uid for e in b.got if e.type == "b-m-p-s-m"] == ["m1"]
    assert all(not e.dests for e in b.got)
    assert [e.type for e in a.got] == ["t-x-m-c"]  # the author gets the notice only
    assert [e.type for e in c.got] == ["t-x-m-n"]  # carol: only the new mission's announcement
    assert [i.uid for i in m.items(bob, "ops")] == ["m1"]
    await m.flush()
    assert [i.uid for i in (await store.load()).items] == ["m1"]
    # A sender without a subscription is ignored (trap 9): nothing delivered, nothing kept.
    r.publish(to_mission("m2", "ops"), c)
    assert [i.uid for i in m.items(bob, "ops")] == ["m1"]
    assert not any(e.uid == "m2" for e in b.got)


async def test_the_kept_squash_follows_every_change_and_is_not_shared() -> None:
    """The squash of the whole change list is kept between calls; a new change or an item
    leaving makes a fresh one, and a caller changing its list does not change the next."""
    r, m, _ = await service()
    alice = user("alice")
    a = Sub(alice, "A")
    r.attach(a)
    create_ops(m, alice)
    for uid in ("m1", "m2"):
        r.publish(to_mission(uid, "ops"), a)

    def squashed() -> list[tuple[str, str | None]]:
        return [(c.type, c.content_uid) for c in m.changes(alice, "ops")]

    assert squashed() == [("CREATE_MISSION", None), ("ADD_CONTENT", "m1"), ("ADD_CONTENT", "m2")]
    _, found = m.select_changes(alice, "ops")
    found.clear()  # the caller's copy
    assert len(squashed()) == 3
    assert m.remove_uid(alice, "ops", "m1", creator_uid="A", token=None)
    assert squashed() == [
        ("CREATE_MISSION", None),
        ("ADD_CONTENT", "m2"),
        ("REMOVE_CONTENT", "m1"),
    ]
    # A time range that leaves changes out is squashed on its own, not from the kept list.
    assert [c.content_uid for c in m.changes(alice, "ops", since=NOW + 1)] == []


async def test_strict_membership_keeps_an_item_in_its_mission() -> None:
    """tak-missions.md 7.1 (strict membership, TAK's default): once m1 is an item of ops, an
    event of m1 without ops' dest is dropped whole, and m1 cannot join another mission, by CoT
    or by PUT contents; removed from ops, it is free again. Off, both are allowed."""
    r, m, _ = await service()
    alice, bob = user("alice"), user("bob")
    a, b = Sub(alice, "A"), Sub(bob, "B")
    r.attach(a)
    r.attach(b)
    create_ops(m, alice)
    m.create(
        alice,
        "two",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    m.subscribe(alice, "two", "A", None)
    r.publish(to_mission("m1", "ops"), a)
    b.got.clear()
    dropped = r.publish_checked(event("m1", "b-m-p-s-m"), a)
    assert dropped.refused == ("mission_membership",) and dropped.delivered == 0
    assert b.got == [] and m.m_refused.get("strict_membership") == 1
    assert r.publish_checked(to_mission("m1", "ops"), a).event is not None  # with its dest
    r.publish(to_mission("m1", "two"), a)  # another mission: not taken there
    assert m.items(alice, "two") == [] and m.m_refused.get("strict_membership") == 2
    r.publish(to_mission("m9", "two"), a)  # a plain AND a mission uid elsewhere: unaffected
    assert [i.uid for i in m.items(alice, "two")] == ["m9"]
    assert r.publish_checked(event("other"), a).event is not None
    assert m.remove_uid(alice, "ops", "m1", creator_uid="A", token=None)
    assert r.publish_checked(event("m1", "b-m-p-s-m"), a).event is not None  # free again

    r2, m2, _ = await service()
    m2._strict = False
    a2 = Sub(alice, "A")
    r2.attach(a2)
    create_ops(m2, alice)
    r2.publish(to_mission("m1", "ops"), a2)
    assert r2.publish_checked(event("m1", "b-m-p-s-m"), a2).event is not None
    assert m2.m_refused.get("strict_membership") == 0


async def test_strict_membership_refuses_a_uid_of_another_mission_by_put_contents() -> None:
    r, m, _ = await service()
    alice = user("alice")
    a = Sub(alice, "A")
    r.attach(a)
    create_ops(m, alice)
    m.create(
        alice,
        "two",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    r.publish(to_mission("m1", "ops"), a)
    r.publish(event("p1"), a)  # a plain item of the picture
    missing = m.add_uids(alice, "two", ["m1", "p1"], creator_uid="A", token=None)
    assert missing == ["m1"] and [i.uid for i in m.items(alice, "two")] == ["p1"]


CHAT = (
    '<__chat parent="RootContactGroup" groupOwner="false" chatroom="All Chat Rooms"'
    ' id="All Chat Rooms" senderCallsign="ALPHA"><chatgrp uid0="A" uid1="All Chat Rooms"'
    ' id="All Chat Rooms"/></__chat><remarks source="A">hello</remarks>'
)


def test_a_chat_is_put_in_the_mission_room_and_nothing_else_is_touched() -> None:
    from liaison.protocol import mission_roles as mr

    room = mr.mission_chat_room("tak.example", "ops")
    assert room == "tak.example-8443-ssl-ops"
    chat = event("GeoChat.A.All.1", "b-t-f", detail=CHAT)
    moved = mr.chat_in_mission_room(chat, room)
    assert moved.detail is not None and chat.detail is not None
    c = moved.detail.find("__chat")
    assert c is not None and c.get("id") == room and c.get("chatroom") == "All Chat Rooms"
    g = c.find("chatgrp")
    assert g is not None and (g.get("uid1"), g.get("id"), g.get("uid0")) == (room, room, "A")
    original = chat.detail.find("__chat")
    assert original is not None and original.get("id") == "All Chat Rooms"  # not mutated
    marker = event("m1", "b-m-p-s-m", detail=CHAT)
    assert mr.chat_in_mission_room(marker, room) is marker  # not a chat
    plain = event("GeoChat.A.All.2", "b-t-f", detail="<remarks>x</remarks>")
    assert mr.chat_in_mission_room(plain, room) is plain  # no __chat


async def test_with_a_chat_host_mission_subscribers_get_the_chat_in_the_mission_room() -> None:
    """tak-missions.md 7.1 rule 4: with missions.chat_host set, a chat sent to a mission reaches
    its subscribers in the room HOST-8443-ssl-NAME; the mission keeps the chat as sent, and a
    direct recipient outside the mission gets it unchanged. Unset, unchanged (TAK's default)."""
    for host in ("tak.example", None):
        r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
        m = Missions(
            router=r,
            store=MemoryMissionStore(),
            metrics=Metrics(),
            clock_ms=lambda: NOW,
            chat_host=host,
        )
        await m.load()
        r.set_missions(m)
        alice, bob, dan = user("alice"), user("bob"), user("dan")
        a, b, d = Sub(alice, "A"), Sub(bob, "B"), Sub(dan, "D")
        for sub in (a, b, d):
            r.attach(sub)
        create_ops(m, alice)
        m.subscribe(bob, "ops", "B", None)
        b.got.clear()
        chat = event(
            "GeoChat.A.ops.1",
            "b-t-f",
            detail=CHAT + '<marti><dest mission="ops"/><dest uid="D"/></marti>',
        )
        r.publish(chat, a)
        [got] = [e for e in b.got if e.type == "b-t-f"]
        [direct] = [e for e in d.got if e.type == "b-t-f"]
        assert got.detail is not None and direct.detail is not None
        c = got.detail.find("__chat")
        assert c is not None
        want = "tak.example-8443-ssl-ops" if host else "All Chat Rooms"
        assert c.get("id") == want and got.dests == ()
        dc = direct.detail.find("__chat")
        assert dc is not None and dc.get("id") == "All Chat Rooms"
        [kept] = m.items(alice, "ops")
        assert b'id="All Chat Rooms"' in kept.event.xml


async def test_a_device_uid_belongs_to_the_user_who_subscribed_it() -> None:
    r, m, _ = await service()
    alice, bob, mallory = user("alice"), user("bob"), user("mallory")
    a, b = Sub(alice, "A"), Sub(bob, "B")
    r.attach(a)
    r.attach(b)
    _, owner = m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    # Another user cannot take over alice's subscription (nor its owner token).
    with pytest.raises(MissionError) as taken:
        m.subscribe(mallory, "ops", "A", None)
    assert taken.value.status == 403 and m.m_refused.get("uid_taken") == 1
    # A subscription mallory makes for bob's device uid does not make bob's device receive.
    m.subscribe(mallory, "ops", "B", None)
    r.publish(to_mission("m1", "ops"), a)
    assert [e.type for e in b.got] == ["t-x-m-n"]  # the announcement only
    assert owner is not None and m.role_of(alice, "ops", owner) == "MISSION_OWNER"


async def test_roles_come_from_tokens_and_deleting_needs_the_owner() -> None:
    _, m, _ = await service()
    alice, bob = user("alice"), user("bob")
    _, owner = m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    sub = m.subscribe(bob, "ops", "B", None)
    assert sub.role == "MISSION_SUBSCRIBER"
    assert m.role_of(alice, "ops", owner) == "MISSION_OWNER"
    assert m.role_of(alice, "ops", None) == "MISSION_SUBSCRIBER"  # no token: the default
    with pytest.raises(MissionError) as refused:
        m.delete(bob, "ops", sub.token)
    assert refused.value.status == 403
    # A token of another mission gives nothing.
    m.create(
        bob,
        "other",
        creator_uid="B",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    assert m.role_of(bob, "other", owner) == "MISSION_SUBSCRIBER"
    m.delete(alice, "ops", owner)
    with pytest.raises(MissionError) as gone:
        m.get(alice, "ops")
    assert gone.value.status == 404


async def test_a_mission_of_other_groups_is_missing_for_the_caller() -> None:
    _, m, _ = await service()
    red, blue = user("red", "red"), user("blue", "blue")
    m.create(
        red,
        "red-ops",
        creator_uid="R",
        groups=("red",),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    assert m.list_for(blue) == [] and [x.name for x in m.list_for(red)] == ["red-ops"]
    for call in (lambda: m.get(blue, "red-ops"), lambda: m.subscribe(blue, "red-ops", "B", None)):
        with pytest.raises(MissionError) as missing:
            call()
        assert missing.value.status == 404
    # The name is taken without saying by whom.
    with pytest.raises(MissionError) as taken:
        m.create(
            blue,
            "red-ops",
            creator_uid="B",
            groups=(),
            tool="public",
            description=None,
            chat_room=None,
            token=None,
        )
    assert taken.value.status == 403


async def test_items_are_bounded_per_mission(monkeypatch: pytest.MonkeyPatch) -> None:
    import liaison.missions as missions_mod

    monkeypatch.setattr(missions_mod, "MAX_MISSION_ITEMS", 2)
    r, m, _ = await service()
    alice = user("alice")
    a = Sub(alice, "A")
    r.attach(a)
    m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    for uid in ("i1", "i2", "i3"):
        r.publish(to_mission(uid, "ops"), a)
    assert [i.uid for i in m.items(alice, "ops")] == ["i1", "i2"]
    assert m.m_refused.get("too_many_items") == 1


async def test_itak_adds_a_plain_item_by_uid() -> None:
    r, m, _ = await service()
    alice, bob = user("alice"), user("bob")
    a, b = Sub(alice, "A"), Sub(bob, "B")
    r.attach(a)
    r.attach(b)
    m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    m.subscribe(bob, "ops", "B", None)
    r.publish(sa("P1", "PLAIN"), a)
    b.got.clear()
    assert m.add_uids(alice, "ops", ["P1", "unknown"], creator_uid="A", token=None) == ["unknown"]
    assert [e.uid for e in b.got if not e.type.startswith("t-x-m")] == ["P1"]
    changes = m.changes(bob, "ops")
    assert [(c.type, c.content_uid) for c in changes] == [
        ("CREATE_MISSION", None),
        ("ADD_CONTENT", "P1"),
    ]
    assert m.remove_uid(bob, "ops", "P1", creator_uid="B", token=None)
    assert [(c.type, c.content_uid) for c in m.changes(bob, "ops")][-1] == ("REMOVE_CONTENT", "P1")


def _event(uid: str) -> StoredEvent:
    return StoredEvent(
        uid=uid,
        type="a-f-G",
        how="m-g",
        time=NOW,
        start=NOW,
        stale=NOW + 1,
        lat=1.0,
        lon=2.0,
        hae=0.0,
        callsign="C",
        sender="a",
        sender_groups=frozenset({"g"}),
        received=NOW,
        xml=b"<event/>",
        label='{"x":1}',
    )


@pytest.fixture(params=MISSION_STORE_KINDS)
async def mission_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MissionStore]:
    async with opened_mission_store(request.param, tmp_path) as s:
        yield s


async def test_the_mission_stores_keep_what_they_are_given(mission_store: MissionStore) -> None:
    s = mission_store
    rec = MissionRecord(
        name="ops",
        guid="g",
        creator="a",
        creator_uid="A",
        groups=frozenset({"g"}),
        label=None,
        keywords=("k",),
        create_time=NOW,
        last_edited=NOW,
    )
    await s.put_mission(rec)
    await s.put_item(
        MissionItem(mission="ops", uid="i1", creator_uid="A", timestamp=NOW, event=_event("i1"))
    )
    await s.put_item(
        MissionItem(mission="ops", uid="i2", creator_uid="A", timestamp=NOW, event=_event("i2"))
    )
    await s.remove_item("ops", "i2")
    change = MissionChangeRecord(
        mission="ops",
        type="ADD_CONTENT",
        creator_uid="A",
        timestamp=NOW,
        content_uid="i1",
        sender_groups=frozenset({"g"}),
        label='{"x":1}',
        details='{"type":"a"}',
        seq=7,
    )
    await s.add_change(change)
    sub = SubscriptionRecord(
        mission="ops",
        client_uid="A",
        username="a",
        role="MISSION_OWNER",
        token="t",
        create_time=NOW,
    )
    await s.put_subscription(sub)
    secret = await s.token_secret()
    assert len(secret) == 32 and await s.token_secret() == secret
    data = await s.load()
    assert data.missions == [rec]
    assert [i.event for i in data.items] == [_event("i1")]
    assert data.changes == [change] and data.subscriptions == [sub]
    await s.delete_mission("ops")
    data = await s.load()
    assert (data.missions, data.items, data.changes, data.subscriptions) == ([], [], [], [])
    await s.close()
    with pytest.raises(StorageError):
        await s.load()


async def test_a_mission_item_is_changed_only_under_the_ingest_rules() -> None:
    """A mission-only item (not in the latest state) is protected like any other: an event sent
    to the mission under its uid keeps its label when unlabelled, and a partner who cannot see
    it, or (by default) one of another organisation, cannot replace it."""
    from tests.unit.core import test_gate as g

    router, gate, audit = g.setup()
    missions = Missions(
        router=router, store=MemoryMissionStore(), metrics=Metrics(), clock_ms=lambda: NOW
    )
    await missions.load()
    router.set_missions(missions)
    usa = g.Sub(g.person(gate, "usa", "USA", "usa-secret"), client_uid="U")
    ukr = g.Sub(g.person(gate, "ukr", "UKR", "ukr-secret"), client_uid="K")
    for s in (usa, ukr):
        router.attach(s)
    missions.create(
        usa.principal,
        "ops",
        creator_uid="U",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
        classification="SECRET//REL TO USA, UKR",
    )
    missions.subscribe(ukr.principal, "ops", "K", None)

    def sent(uid: str, lab: labels.Label | None) -> Event:
        seclabel = labels.label_to_seclabel(gate.policy, lab) if lab is not None else None
        mark = ET.tostring(seclabel, encoding="unicode") if seclabel is not None else ""
        return to_mission(uid, "ops", mark)

    secret_usa = g.label(gate, "SECRET", "USA")
    assert router.publish_checked(sent("x", secret_usa), usa).event is not None
    shared = g.label(gate, "SECRET", "USA", "UKR")
    assert router.publish_checked(sent("both", shared), usa).event is not None
    # UKR cannot replace an item it cannot see, nor (by default) a USA item it sees.
    for uid, reason in (("x", "prior_not_visible"), ("both", "other_org_item")):
        refused = router.publish_checked(sent(uid, None), ukr)
        assert refused.event is None and refused.refused == (reason,), uid
        kind, fields = audit.records[-1]
        assert kind == "ingest" and fields["accepted"] is False
    kept = {i.uid: i.event.label for i in missions.items(usa.principal, "ops")}
    assert router.load_label(kept["x"]) == secret_usa
    assert router.load_label(kept["both"]) == shared
    # The USA author moves it from ATAK (no label): the mission keeps the item's label.
    moved = router.publish_checked(sent("x", None), usa)
    assert moved.event is not None and moved.event.access == "SECRET"
    assert moved.event.releasable_to == "REL TO USA"


class FlakyStore(MemoryMissionStore):
    """A mission store whose disk refuses the next ``failures`` batches holding a mission."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.batches: list[int] = []  # the size of each batch written

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        if self.failures > 0 and any(w.op == "put_mission" for w in writes):
            self.failures -= 1
            raise StorageError("disk full")
        await super().write_batch(writes)
        self.batches.append(len(writes))


def create_ops(m: Missions, who: Principal) -> None:
    m.create(
        who,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )


async def test_a_refused_mission_write_is_retried_not_dropped() -> None:
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    store = FlakyStore(failures=2)
    metrics = Metrics()
    m = Missions(router=r, store=store, metrics=metrics, clock_ms=lambda: NOW)
    await m.load()
    create_ops(m, user("alice"))
    async with asyncio.timeout(10):
        await m.flush()  # two refusals, then written (0.1 s and 0.2 s apart)
    assert [rec.name for rec in (await store.load()).missions] == ["ops"]
    assert m.m_write_failed.get("storage") == 2 and m.m_write_failed.get("lost_at_shutdown") == 0


async def test_at_shutdown_a_store_that_stays_down_is_given_up_and_counted() -> None:
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    store = FlakyStore(failures=1_000)
    m = Missions(router=r, store=store, metrics=Metrics(), clock_ms=lambda: NOW)
    await m.load()
    create_ops(m, user("alice"))
    async with asyncio.timeout(10):
        await m.close()  # bounded: CLOSE_WRITE_ATTEMPTS tries, then the rest is counted
    assert m.m_write_failed.get("storage") == CLOSE_WRITE_ATTEMPTS
    assert m.m_write_failed.get("lost_at_shutdown") >= 1


class SlowStore(MemoryMissionStore):
    """A mission store whose batches wait for ``release`` (a disk under load) and, like the
    SQLite store's thread, go on when the caller is cancelled (shielded)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        self.started.set()
        await asyncio.shield(self._slow(writes))

    async def _slow(self, writes: Sequence[MissionWrite]) -> None:
        await self.release.wait()
        await super().write_batch(writes)


async def test_a_batch_in_flight_when_the_writer_stops_is_written_once_not_lost() -> None:
    """At shutdown the writer task is cancelled while the store writes a batch (in its own
    thread, shielded), then close() drains: that batch must be awaited, not written again
    (SQLite refuses a change's seq twice, and everything queued behind it was given up as
    lost) nor dropped."""
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    store = SlowStore()
    m = Missions(router=r, store=store, metrics=Metrics(), clock_ms=lambda: NOW)
    await m.load()
    writer = asyncio.create_task(m.run())
    create_ops(m, user("alice"))
    async with asyncio.timeout(10):
        await store.started.wait()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        m.create(
            user("alice"),
            "later",
            creator_uid="A",
            groups=(),
            tool="public",
            description=None,
            chat_room=None,
            token=None,
        )
        store.release.set()
        await m.flush()  # as close() drains
        data = await store.load()
        await m.close()
    assert sorted(rec.name for rec in data.missions) == ["later", "ops"]
    seqs = [c.seq for c in data.changes]
    assert len(seqs) == len(set(seqs)) == 2
    assert m.m_write_failed.get("lost_at_shutdown") == 0 and m.m_write_failed.get("storage") == 0


async def test_a_burst_of_mission_cot_is_written_in_batches_and_all_kept(tmp_path: Path) -> None:
    """Mission CoT at stream speed: the writer takes what waits (at most MAX_WRITE_BATCH) into one
    transaction, so 3,000 items (6,000 writes) queue well below MAX_PENDING_WRITES, nothing is
    dropped, and every item and change is there, in order, after a restart."""
    path = tmp_path / "missions.db"
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    store = await SqliteMissionStore.open(path)
    m = Missions(router=r, store=store, metrics=Metrics(), clock_ms=lambda: NOW)
    await m.load()
    r.set_missions(m)
    writer = asyncio.create_task(m.run())
    alice = user("alice")
    a = Sub(alice, "A")
    r.attach(a)
    create_ops(m, alice)
    n = 3_000
    for i in range(n):  # all queued before the writer runs once: one burst
        r.publish(to_mission(f"u{i}", "ops"), a)
    assert m._store_busy() is False  # 6,001 writes wait, below MAX_PENDING_WRITES
    async with asyncio.timeout(60):
        await m.flush()
    writer.cancel()
    await m.close()
    assert m.m_write_failed.get("queue_full") == 0 and m.m_write_failed.get("storage") == 0
    # 6,001 writes (the mission, then an item and a change per CoT) in a few transactions.
    assert 2 * n // MAX_WRITE_BATCH <= m.m_write_batches.get() <= 2 * n // MAX_WRITE_BATCH + 3
    store2 = await SqliteMissionStore.open(path)
    data = await store2.load()
    await store2.close()
    assert sorted(i.uid for i in data.items) == sorted(f"u{i}" for i in range(n))
    added = [c.content_uid for c in data.changes if c.type == "ADD_CONTENT"]
    assert added == [f"u{i}" for i in range(n)]
    assert [c.seq for c in data.changes] == sorted(c.seq for c in data.changes)


async def test_a_mixed_batch_ends_as_its_writes_one_by_one(mission_store: MissionStore) -> None:
    """SQLite groups a batch's rows by table into multi-row statements: the result must be
    what the writes give applied one at a time in order (the memory store), with stores,
    removals and a mission's deletion interleaved, and more rows than one statement takes."""
    from liaison.storage import missions as storage

    def rec(name: str) -> MissionRecord:
        return MissionRecord(
            name=name, guid=name, creator="a", creator_uid="A", groups=frozenset(), label=None
        )

    def item(mission: str, uid: str, n: int) -> MissionItem:
        return MissionItem(
            mission=mission, uid=uid, creator_uid="A", timestamp=NOW + n, event=_event(uid)
        )

    writes = [MissionWrite("put_mission", (rec("a"),)), MissionWrite("put_mission", (rec("b"),))]
    for n in range(storage.ROWS_PER_STATEMENT + 20):
        writes.append(MissionWrite("put_item", (item("a", f"u{n % 50}", n),)))
        writes.append(
            MissionWrite(
                "add_change",
                (
                    MissionChangeRecord(
                        mission="a",
                        type="ADD_CONTENT",
                        creator_uid="A",
                        timestamp=NOW + n,
                        content_uid=f"u{n % 50}",
                        seq=n + 1,
                    ),
                ),
            )
        )
        if n % 7 == 0:
            writes.append(MissionWrite("remove_item", ("a", f"u{n % 50}")))
    writes += [
        MissionWrite("put_item", (item("b", "x", 1),)),
        MissionWrite("delete_mission", ("b",)),
        MissionWrite("put_item", (item("b", "y", 2),)),  # after the deletion: kept
        MissionWrite("put_mission", (rec("b"),)),
    ]
    memory = MemoryMissionStore()
    for store in (memory, mission_store):
        await store.write_batch(writes)
    mine, theirs = await memory.load(), await mission_store.load()
    assert sorted(m.name for m in theirs.missions) == ["a", "b"]
    assert sorted((i.mission, i.uid, i.timestamp) for i in theirs.items) == sorted(
        (i.mission, i.uid, i.timestamp) for i in mine.items
    )
    assert ("b", "y") in {(i.mission, i.uid) for i in theirs.items}
    assert ("b", "x") not in {(i.mission, i.uid) for i in theirs.items}
    assert theirs.changes == mine.changes and len(theirs.changes) > storage.ROWS_PER_STATEMENT


async def test_a_refused_batch_keeps_nothing_of_it(mission_store: MissionStore) -> None:
    """All or none: a batch whose last write fails leaves none of its writes in the store, so
    the writer can try the same batch again without writing a change twice."""
    store = mission_store
    if isinstance(store, MemoryMissionStore):
        pytest.skip("the memory store does not refuse a change's seq twice")
    rec = MissionRecord(
        name="ops", guid="g", creator="a", creator_uid="A", groups=frozenset(), label=None
    )
    change = MissionChangeRecord(
        mission="ops",
        type="CREATE_MISSION",
        creator_uid="A",
        timestamp=NOW,
        content_uid=None,
        sender_groups=frozenset(),
        label=None,
        seq=1,
    )
    await store.add_change(change)
    batch = [MissionWrite("put_mission", (rec,)), MissionWrite("add_change", (change,))]
    with pytest.raises(StorageError):  # seq 1 is taken: the second write fails
        await store.write_batch(batch)
    data = await store.load()
    assert data.missions == [] and data.changes == [change]
    await store.write_batch(batch[:1])
    assert (await store.load()).missions == [rec]
    await store.close()
    with pytest.raises(ValueError):
        MissionWrite("drop_table", ())


# --- files and keywords in missions ---------------------------------------------------------


def _file(hash_char: str, groups: frozenset[str]) -> FileRecord:
    return FileRecord(
        uid=f"file-{hash_char}",
        hash=hash_char * 64,
        name=f"{hash_char}.png",
        mime="image/png",
        size=3,
        uploader="alice",
        uploader_groups=groups,
        submitted=NOW - 5,
    )


async def test_the_mission_stores_keep_files_and_migrate_an_old_file(tmp_path: Path) -> None:
    # A missions.db written before files existed: opening it adds the table, once.
    path = tmp_path / "missions.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    for store in (MemoryMissionStore(), await SqliteMissionStore.open(path)):
        content = MissionContent(
            mission="ops",
            hash="a" * 64,
            file_uid="f",
            name="a.png",
            mime="image/png",
            size=3,
            file_keywords=("x",),
            submitter="alice",
            submitted=NOW,
            uploader_groups=frozenset({"g"}),
            label='{"l":1}',
            creator_uid="A",
            timestamp=NOW,
            keywords=("k",),
        )
        await store.put_content(content)
        await store.put_content(replace(content, hash="b" * 64))
        await store.remove_content("ops", "b" * 64)
        assert (await store.load()).contents == [content]
        await store.delete_mission("ops")
        assert (await store.load()).contents == []
        await store.close()
    store2 = await SqliteMissionStore.open(path)  # migrations already applied: no error
    await store2.close()
    with sqlite3.connect(path) as db:
        keys = [r[0] for r in db.execute("SELECT key FROM meta WHERE key LIKE 'migration:%'")]
    assert keys == ["migration:1-contents", "migration:2-logs", "migration:3-invitations"]


async def test_a_file_in_a_mission_is_shown_only_to_who_may_see_the_file() -> None:
    r, m, _ = await service()
    alice, bob = user("alice", "g", "x"), user("bob", "g")
    a, b = Sub(alice, "A"), Sub(bob, "B")
    for s in (a, b):
        r.attach(s)
    m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=["g"],
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    m.subscribe(bob, "ops", "B", None)
    m.add_files(
        alice,
        "ops",
        [_file("a", frozenset({"x"})), _file("b", frozenset({"g"}))],
        creator_uid="A",
        token=None,
    )
    assert [c.hash for c in m.contents(alice, "ops")] == ["a" * 64, "b" * 64]
    assert [c.hash for c in m.contents(bob, "ops")] == ["b" * 64]
    assert [resource_hash(c) for c in m.changes(bob, "ops")] == [None, "b" * 64]
    notices = [e for e in b.got if e.type == "t-x-m-c"]
    assert len(notices) == 1 and notices[0].detail is not None
    assert ET.tostring(notices[0].detail).count(b"<contentResource>") == 1
    assert b"b" * 64 in ET.tostring(notices[0].detail)
    assert len([e for e in a.got if e.type == "t-x-m-c"]) == 2
    # Bob can neither remove nor tag the file he cannot see; alice removes it.
    assert not m.remove_file(bob, "ops", "a" * 64, creator_uid="B", token=None)
    assert not m.set_content_keywords(bob, "ops", "a" * 64, ["k"], creator_uid="B", token=None)
    assert m.remove_file(alice, "ops", "a" * 64, creator_uid="A", token=None)
    squashed = [(c.type, resource_hash(c)) for c in m.changes(alice, "ops")]
    assert squashed == [
        ("CREATE_MISSION", None),
        ("ADD_CONTENT", "b" * 64),
        ("REMOVE_CONTENT", "a" * 64),
    ]
    assert [c.hash for c in m.contents(bob, "ops")] == ["b" * 64]


async def test_a_package_import_waits_for_a_busy_store_then_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between chunks an import waits while MAX_PENDING_WRITES writes wait for the store (no
    writer runs here), then refuses with 503; the chunks before are taken, and subscribers
    other than the importing device got those items."""
    import liaison.missions as missions_mod
    from liaison.missions import MissionError, PackageOp, package_event

    monkeypatch.setattr(missions_mod, "PACKAGE_CHUNK", 2)
    monkeypatch.setattr(missions_mod, "PACKAGE_STORE_WAIT_S", 0.2)
    r, m, _ = await service()
    alice, bob = user("alice"), user("bob")
    a, b = Sub(alice, "A"), Sub(bob, "B")
    r.attach(a)
    r.attach(b)
    m.create(
        alice,
        "ops",
        creator_uid="A",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    m.subscribe(bob, "ops", "B", None)
    ops = [PackageOp(event=package_event(event(f"p{i}", "b-m-p-s-m"), "ops")) for i in range(4)]
    # The two creation writes and the subscription wait; with the limit at their count the
    # store is "busy" as soon as the first chunk's writes join them.
    monkeypatch.setattr(missions_mod, "MAX_PENDING_WRITES", len(m._writes) + 4)
    with pytest.raises(MissionError) as refused:
        async with asyncio.timeout(10):
            await m.import_package(alice, "ops", ops, creator_uid="A", token=None)
    assert refused.value.status == 503 and m.m_refused.get("store_busy") == 1
    assert [i.uid for i in m.items(alice, "ops")] == ["p0", "p1"]
    assert [i.creator_uid for i in m.items(alice, "ops")] == ["A", "A"]
    got_b = [e.uid for e in b.got]
    assert "p0" in got_b and "p1" in got_b
    assert not [e for e in a.got if e.uid in ("p0", "p1")]  # the importing device
