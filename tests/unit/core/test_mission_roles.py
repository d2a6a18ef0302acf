"""Mission roles, invitations, passwords, notices, catch-up, back-pressure and the mission-item
label check: the pure rules (protocol/mission_roles.py), the mission service over in-memory
subscribers, and both mission stores."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from liaison import missions as missions_module
from liaison.metrics import Metrics
from liaison.missions import MissionError, Missions
from liaison.model import labels
from liaison.model.event import Event
from liaison.protocol import cot_xml
from liaison.protocol import mission_roles as mr
from liaison.storage.missions import (
    InvitationRecord,
    MemoryMissionStore,
    MissionRecord,
    MissionStore,
    SqliteMissionStore,
    SubscriptionRecord,
)
from tests.unit.core.test_missions import service, to_mission
from tests.unit.core.test_router import NOW, Sub, sa, user


def test_roles_resolve_as_tak_server_resolves_them() -> None:
    assert mr.PERMISSIONS[mr.READONLY] == ("MISSION_READ",)
    assert mr.PERMISSIONS[mr.SUBSCRIBER] == ("MISSION_READ", "MISSION_WRITE")
    assert len(mr.PERMISSIONS[mr.OWNER]) == 8
    public = {"default_role": mr.SUBSCRIBER, "password_protected": False, "invite_only": False}
    assert mr.resolve_role(None, **public) == mr.SUBSCRIBER  # type: ignore[arg-type]
    assert mr.resolve_role(mr.OWNER, **public) == mr.OWNER  # type: ignore[arg-type]
    for locked in ({"password_protected": True}, {"invite_only": True}):
        rules = {**public, **locked}
        assert mr.resolve_role(None, **rules) is None  # type: ignore[arg-type]
    assert mr.higher(mr.READONLY, mr.OWNER) == mr.OWNER == mr.higher(mr.OWNER, mr.SUBSCRIBER)


def test_role_assignment_needs_the_permissions_and_respects_the_default() -> None:
    def refusal(caller: str | None, granted: str, password: bool = False) -> str | None:
        return mr.assignment_refusal(
            caller, granted, default_role=mr.SUBSCRIBER, password_protected=password
        )

    assert refusal(mr.OWNER, mr.OWNER) is None
    assert refusal(mr.SUBSCRIBER, mr.SUBSCRIBER) is None
    assert refusal(mr.SUBSCRIBER, mr.OWNER) is not None
    assert refusal(None, mr.READONLY, True) is not None
    assert refusal(mr.OWNER, mr.READONLY) is not None  # less than the default, no password
    assert refusal(mr.OWNER, mr.READONLY, True) is None
    assert refusal(mr.OWNER, "MISSION_KING") is not None


def test_notices_follow_taks_template() -> None:
    xml = mr.mission_notice(
        event_type="t-x-m-r",
        mission_type="INVITE",
        name="a&b",
        guid="g",
        tool="public",
        author_uid=None,
        now_ms=NOW,
        uid="u1",
        role=mr.READONLY,
    )
    event = cot_xml.parse_event(xml)  # our own parser accepts it
    assert event.type == "t-x-m-r" and event.how == "h-g-i-g-o"
    assert event.stale - event.time == 20_000 and (event.lat, event.lon) == (0.0, 0.0)
    root = ET.fromstring(xml)
    mission = root.find("detail/mission")
    assert mission is not None and mission.get("name") == "a&b"
    assert mission.get("type") == "INVITE" and "authorUid" not in mission.attrib
    assert [p.get("type") for p in mission.iter("permission")] == ["MISSION_READ"]
    point = root.find("point")
    assert point is not None and point.get("ce") == "9999999" and point.get("le") == "9999999"
    xml = mr.mission_notice(
        event_type="t-x-m-i",
        mission_type="INVITE",
        name="n",
        guid="g",
        tool="public",
        author_uid="A",
        now_ms=NOW,
        uid="u2",
        token="t.o.k",
        role=mr.SUBSCRIBER,
    )
    mission = ET.fromstring(xml).find("detail/mission")
    assert mission is not None
    assert (mission.get("token"), mission.get("authorUid")) == ("t.o.k", "A")


def create(m: Missions, who: str, name: str = "ops", **kw: object) -> str:
    _, token = m.create(
        user(who),
        name,
        creator_uid=who.upper(),
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
        **kw,  # type: ignore[arg-type]
    )
    assert token is not None
    return token


async def test_owner_sets_roles_and_the_subscriber_hears_t_x_m_r() -> None:
    r, m, _ = await service()
    a, b = Sub(user("alice"), "ALICE"), Sub(user("bob"), "BOB")
    for s in (a, b):
        r.attach(s)
    owner = create(m, "alice", password_hash="scrypt$stub")
    sub = m.subscribe(user("bob"), "ops", "BOB", None, password_ok=True)
    assert sub.role == mr.SUBSCRIBER
    with pytest.raises(MissionError) as no:
        m.set_role(user("bob"), "ops", sub.token, role=mr.OWNER, client_uid="BOB")
    assert no.value.status == 403
    b.got.clear()
    m.set_role(user("alice"), "ops", owner, role=mr.READONLY, client_uid="BOB")
    [notice] = b.got
    assert notice.type == "t-x-m-r"
    assert m.role_of(user("bob"), "ops", sub.token) == mr.READONLY
    # A read-only subscriber's CoT to the mission is ignored; its REST write is 403.
    r.publish(to_mission("m1", "ops"), b)
    assert m.items(user("alice"), "ops") == []
    with pytest.raises(MissionError) as ro:
        m.add_uids(user("bob"), "ops", ["BOB"], creator_uid="BOB", token=sub.token)
    assert ro.value.status == 403
    # Without a token a password-protected mission gives no role.
    assert m.role_of(user("carol"), "ops", None) is None
    with pytest.raises(MissionError):
        m.require_read(user("carol"), "ops", None)


async def test_invitations_open_invite_only_missions() -> None:
    r, m, _ = await service()
    a, c = Sub(user("alice"), "ALICE"), Sub(user("carol"), "CAROL", callsign="Crow")
    for s in (a, c):
        r.attach(s)
    owner = create(m, "alice", invite_only=True)
    assert c.got == []  # an invite-only mission is not announced
    assert m.list_for(user("carol")) == []
    with pytest.raises(MissionError) as shut:
        m.subscribe(user("carol"), "ops", "CAROL", None)
    assert shut.value.status == 403
    inv = m.invite(
        user("alice"),
        "ops",
        owner,
        type_="callsign",
        invitee="Crow",
        creator_uid="ALICE",
        role=None,
    )
    [notice] = c.got
    assert notice.type == "t-x-m-i" and inv.token in cot_xml.render_xml(notice).decode()
    assert m.invited_missions(user("carol"), "CAROL") == ["ops"]
    assert m.invited_missions(user("dave"), "DAVE") == []
    sub = m.subscribe(user("carol"), "ops", "CAROL", inv.token)
    assert sub.role == mr.SUBSCRIBER
    assert m.invited_missions(user("carol"), "CAROL") == []  # used by subscribing
    with pytest.raises(MissionError):
        m.invite(
            user("carol"),
            "ops",
            sub.token,
            type_="userName",
            invitee="x",
            creator_uid="C",
            role=mr.OWNER,
        )
    with pytest.raises(MissionError) as bad:
        m.invite(user("alice"), "ops", owner, type_="Team", invitee="x", creator_uid="A", role=None)
    assert bad.value.status == 400


async def test_a_stray_or_wrong_password_is_refused() -> None:
    _, m, _ = await service()
    create(m, "alice")
    create(m, "alice", name="locked", password_hash="scrypt$stub")
    with pytest.raises(MissionError):
        m.subscribe(user("bob"), "ops", "BOB", None, password_ok=False)  # trap 3
    with pytest.raises(MissionError):
        m.subscribe(user("bob"), "locked", "BOB", None, password_ok=False)
    with pytest.raises(MissionError):
        m.subscribe(user("bob"), "locked", "BOB", None)
    access = m.access_token(user("bob"), "locked")
    assert m.role_of(user("bob"), "locked", access) == mr.SUBSCRIBER
    # A token of another mission (or of a deleted mission of the same name) gives nothing.
    assert m.role_of(user("bob"), "ops", access) == mr.SUBSCRIBER  # ops is public: default
    assert m.subscribe(user("bob"), "locked", "BOB", access).role == mr.SUBSCRIBER
    assert [x.name for x in m.list_for(user("bob"))] == ["ops"]
    assert {x.name for x in m.list_for(user("bob"), password_protected=True)} == {"ops", "locked"}


async def test_catch_up_is_bounded_and_sends_the_most_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(missions_module, "MAX_CATCHUP_EVENTS", 4)
    r, m, _ = await service()
    a, b = Sub(user("alice"), "ALICE"), Sub(user("bob"), "BOB")
    for s in (a, b):
        r.attach(s)
    create(m, "alice")
    m.subscribe(user("bob"), "ops", "BOB", None)
    r.detach(b)
    for uid in ("x1", "x2", "x3"):
        r.publish(to_mission(uid, "ops"), a)
    back = Sub(user("bob"))
    r.attach(back)
    r.publish(sa("BOB", "bob"), back)  # the device makes its uid known: catch-up
    # Budget 4: the two newest changes (item + notice each), oldest first; x1 is cut.
    assert [(e.type, e.uid) for e in back.got if e.type != "t-x-m-c"] == [
        ("b-m-p-s-m", "x2"),
        ("b-m-p-s-m", "x3"),
    ]
    assert sum(1 for e in back.got if e.type == "t-x-m-c") == 2
    assert m.m_catchup.get("truncated") == 1
    # Nothing is sent twice: a second reconnect without changes sends nothing.
    r.detach(back)
    again = Sub(user("bob"))
    r.attach(again)
    r.publish(sa("BOB", "bob"), again)
    assert not [e for e in again.got if e.type.startswith("t-x-m") or e.uid.startswith("x")]


async def test_mission_notices_missed_while_away_are_sent_on_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """t-x-m-n, -d, -r and -i sent while a device was away reach it when it returns, oldest
    first, each through the decision for it now (a mission it may not see is not announced),
    an invitation only while it stands, at most MAX_CATCHUP_NOTICES, and only once."""
    r, m, _ = await service()
    a, b = Sub(user("alice"), "ALICE"), Sub(user("bob"), "BOB")
    for s in (a, b):
        r.attach(s)
    owner = create(m, "alice")
    m.subscribe(user("bob"), "ops", "BOB", None)
    r.detach(b)
    two_owner = create(m, "alice", name="two")  # t-x-m-n
    gone_owner = create(m, "alice", name="gone")  # t-x-m-n
    m.delete(user("alice"), "gone", gone_owner)  # t-x-m-d
    m.create(  # a mission bob may not see: never announced to him
        user("alice", "x"),
        "secret",
        creator_uid="ALICE",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    m.set_role(user("alice"), "ops", owner, client_uid="BOB", role=mr.OWNER)  # t-x-m-r
    for who in ("bob", "carol"):  # t-x-m-i to bob only
        m.invite(
            user("alice"),
            "two",
            two_owner,
            type_="userName",
            invitee=who,
            creator_uid="ALICE",
            role=None,
        )
    m.invite(  # withdrawn before bob returns: not sent
        user("alice"), "ops", owner, type_="clientUid", invitee="BOB", creator_uid="A", role=None
    )
    m.uninvite(user("alice"), "ops", owner, type_="clientUid", invitee="BOB")
    back = Sub(user("bob"))
    r.attach(back)
    r.publish(sa("BOB", "bob"), back)  # the device makes its uid known: catch-up

    def notices(sub: Sub) -> list[tuple[str, str | None]]:
        out = []
        for e in sub.got:
            if e.type.startswith("t-x-m-") and e.detail is not None:
                mission = e.detail.find("mission")
                out.append((e.type, mission.get("name") if mission is not None else None))
        return out

    assert notices(back) == [
        ("t-x-m-n", "two"),
        ("t-x-m-n", "gone"),
        ("t-x-m-d", "gone"),
        ("t-x-m-r", "ops"),
        ("t-x-m-i", "two"),
    ]
    assert m.m_catchup.get("notice") == 5
    assert not any(b"secret" in (e.xml or b"") for e in back.got)
    # Only once: returning again without news sends nothing.
    r.detach(back)
    again = Sub(user("bob"))
    r.attach(again)
    r.publish(sa("BOB", "bob"), again)
    assert notices(again) == []
    # Bounded: the most recent MAX_CATCHUP_NOTICES.
    monkeypatch.setattr(missions_module, "MAX_CATCHUP_NOTICES", 2)
    r.detach(again)
    for name in ("n1", "n2", "n3"):
        create(m, "alice", name=name)
    last = Sub(user("bob"))
    r.attach(last)
    r.publish(sa("BOB", "bob"), last)
    assert notices(last) == [("t-x-m-n", "n2"), ("t-x-m-n", "n3")]
    assert m.m_catchup.get("truncated") == 1


async def test_notices_caught_up_on_return_keep_each_organisation_to_its_own() -> None:
    """Two organisations, labels on: while UKR's device is away USA creates a mission shared
    with UKR and a USA-only one (the canary); on return UKR is announced only the shared one,
    with a release record; the USA-only mission's name reaches it nowhere."""
    from tests.unit.core import test_gate as g

    router, gate, audit = g.setup()
    m = Missions(router=router, store=MemoryMissionStore(), metrics=Metrics(), clock_ms=lambda: NOW)
    await m.load()
    router.set_missions(m)
    usa_p = g.person(gate, "usa", "USA", "usa-secret")
    ukr_p = g.person(gate, "ukr", "UKR", "ukr-secret")
    usa, ukr = g.Sub(usa_p, client_uid="U"), g.Sub(ukr_p, client_uid="K")
    router.attach(usa)
    router.attach(ukr)
    router.detach(ukr)  # away
    for name, banner in (
        ("joint", "SECRET//REL TO USA, UKR"),
        ("CANARY-usa-only", "SECRET//REL TO USA"),
    ):
        m.create(
            usa_p,
            name,
            creator_uid="U",
            groups=(),
            tool="public",
            description=None,
            chat_room=None,
            token=None,
            classification=banner,
        )
    back = g.Sub(ukr_p)
    router.attach(back)
    router.publish(sa("K", "ukr"), back)  # the device makes its uid known: catch-up
    assert back.client_uid == "K"
    announced = [
        (e.type, mission.get("name"))
        for e in back.got
        if e.type.startswith("t-x-m-") and e.detail is not None
        for mission in [e.detail.find("mission")]
        if mission is not None
    ]
    assert announced == [("t-x-m-n", "joint")]
    assert not any(b"CANARY" in (e.xml or cot_xml.render_xml(e)) for e in back.got)
    releases = [r for kind, r in audit.records if kind == "release"]
    assert any(r.get("path") == "mission-notice" and r.get("to_org") == "UKR" for r in releases)


async def test_a_busy_store_refuses_rest_writes_and_stream_writes() -> None:
    r, m, _ = await service()
    a = Sub(user("alice"), "ALICE")
    r.attach(a)
    create(m, "alice")

    async def never() -> None:
        raise AssertionError("not written in this test")

    for _ in range(missions_module.MAX_PENDING_WRITES):
        m._writes.append(never)
    with pytest.raises(MissionError) as busy:
        create(m, "alice", name="two")
    assert busy.value.status == 503 and m.m_refused.get("store_busy") == 1
    r.publish(to_mission("m1", "ops"), a)
    assert m.items(user("alice"), "ops") == [] and m.m_refused.get("store_busy") == 2
    assert m.m_write_failed.get("queue_full") == 0  # nothing dropped
    m._writes.clear()


async def test_a_mission_item_and_a_picture_item_of_one_uid_need_one_label() -> None:
    """The mission keeps ``x`` as USA-only; the picture holds ``x`` as shared: an unlabelled
    update to the mission cannot keep both labels, a labelled one passes both checks."""
    from tests.unit.core import test_gate as g

    router, gate, _ = g.setup()
    missions = Missions(
        router=router,
        store=MemoryMissionStore(),
        metrics=Metrics(),
        clock_ms=lambda: NOW,
        strict_membership=False,  # the picture's x updated without the mission's dest
    )
    await missions.load()
    router.set_missions(missions)
    usa = g.Sub(g.person(gate, "usa", "USA", "usa-secret"), client_uid="U")
    router.attach(usa)
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

    def sent(lab: labels.Label | None, mission: str | None) -> Event:
        seclabel = labels.label_to_seclabel(gate.policy, lab) if lab is not None else None
        mark = ET.tostring(seclabel, encoding="unicode") if seclabel is not None else ""
        return to_mission("x", mission, mark) if mission else to_mission("x", "none", mark)

    shared = g.label(gate, "SECRET", "USA", "UKR")
    usa_only = g.label(gate, "SECRET", "USA")
    assert router.publish_checked(sent(usa_only, "ops"), usa).event is not None
    plain = g.event("x", shared, gate)
    assert router.publish_checked(plain, usa).event is not None  # the picture's x
    refused = router.publish_checked(sent(None, "ops"), usa)
    assert refused.event is None and refused.refused == ("mission_item_label_differs",)
    kept = missions.items(usa.principal, "ops")[0].event.label
    assert router.load_label(kept) == usa_only  # unchanged
    # Labelled, it passes both checks (a raise over the picture's, the same as the kept one).
    assert router.publish_checked(sent(usa_only, "ops"), usa).event is not None


@pytest.fixture(params=["memory", "sqlite"])
async def mission_store(request: pytest.FixtureRequest, tmp_path: Path) -> MissionStore:
    if request.param == "memory":
        return MemoryMissionStore()
    return await SqliteMissionStore.open(tmp_path / "missions.db")


async def test_the_stores_keep_invitations_roles_and_password_hashes(
    mission_store: MissionStore,
) -> None:
    s = mission_store
    rec = MissionRecord(
        name="ops",
        guid="g",
        creator="a",
        creator_uid="A",
        groups=frozenset({"g"}),
        label=None,
        password_hash="scrypt$1$8$1$c2FsdA==$aGFzaA==",
        invite_only=True,
        default_role=mr.READONLY,
    )
    await s.put_mission(rec)
    sub = SubscriptionRecord(
        mission="ops",
        client_uid="B",
        username="b",
        role=mr.OWNER,
        token="t",
        create_time=1,
        away_seq=7,
    )
    await s.put_subscription(sub)
    inv = InvitationRecord(
        mission="ops",
        type="userName",
        invitee="c",
        creator_uid="A",
        create_time=2,
        role=mr.SUBSCRIBER,
        token="i",
    )
    other = InvitationRecord(
        mission="ops",
        type="clientUid",
        invitee="D",
        creator_uid="A",
        create_time=3,
        role=mr.READONLY,
        token="j",
    )
    await s.put_invitation(inv)
    await s.put_invitation(other)
    await s.delete_invitation("ops", "clientUid", "D")
    data = await s.load()
    assert data.missions == [rec] and data.subscriptions == [sub]
    assert await s.load_invitations() == [inv]
    await s.delete_mission("ops")
    assert await s.load_invitations() == []
    await s.close()


async def test_a_missions_db_from_before_invitations_is_upgraded_once(tmp_path: Path) -> None:
    path = tmp_path / "missions.db"
    s = await SqliteMissionStore.open(path)
    await s.close()
    with sqlite3.connect(path) as conn:  # as a file of the release before invitations
        conn.execute("DROP TABLE invitations")
        conn.execute("DELETE FROM meta WHERE key = 'migration:3-invitations'")
    s = await SqliteMissionStore.open(path)
    inv = InvitationRecord(
        mission="ops",
        type="group",
        invitee="g",
        creator_uid="A",
        create_time=2,
        role=mr.SUBSCRIBER,
        token="i",
    )
    await s.put_invitation(inv)
    await s.close()
    s = await SqliteMissionStore.open(path)  # reopened: nothing re-created, nothing lost
    assert await s.load_invitations() == [inv]
    await s.close()
    with sqlite3.connect(path) as conn:
        keys = [r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'migration:%'")]
    assert keys == ["migration:1-contents", "migration:2-logs", "migration:3-invitations"]
