"""The mission share messages between cluster nodes (protocol/mission_share.py) and the
missions' side of them (liaison.missions: change numbers that never collide across nodes,
reading back what another node changed, notices told only after their writes)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.missions import MissionError, Missions
from liaison.protocol import mission_share
from liaison.protocol.mission_share import MissionShare, SharedNotice, ShareError
from liaison.router import Router
from liaison.storage.postgresql_missions import NODE_BITS, PostgresMissionStore
from tests.unit.core.test_router import NOW, user
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema


def test_a_message_round_trips() -> None:
    notice = SharedNotice(
        b'<event uid="n"/>', frozenset({"Blue"}), '{"c":"U"}', frozenset({("ANDROID-1", "bob")})
    )
    to_all = SharedNotice(b"<e/>", frozenset(), None, frozenset(), "mission-notice", ("all", "A"))
    msg = MissionShare("node0", ("ops",), ("log-1",), (notice, to_all))
    assert mission_share.decode(mission_share.encode(msg)) == msg


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"v": 2, "node": "x"}',
        b'{"v": 1}',
        b'{"v": 1, "node": "x", "missions": "ops"}',
        b'{"v": 1, "node": "x", "missions": [1]}',
        b'{"v": 1, "node": "x", "notices": [{"xml": "<e/>", "groups": [], "clients": [["a"]]}]}',
        b'{"v": 1, "node": "x", "notices": [{"xml": "<e/>", "groups": [], "clients": [],'
        b' "path": "latest"}]}',
        b'{"v": 1, "node": "x", "notices": [{"xml": "<e/>", "groups": [], "clients": [],'
        b' "to": ["group", "Blue"]}]}',
        json.dumps({"v": 1, "node": "x", "missions": ["m"] * 1001}).encode(),
        json.dumps({"v": 1, "node": "x" * 2000}).encode(),
        b" " * (mission_share.MAX_MESSAGE_BYTES + 1),
        # Found by review: each of these raised something other than ShareError.
        b'{"v": 1, "node": "x", "notices": [{"xml": "<e/>", "groups": [], "clients": [],'
        b' "to": [["group"], "Blue"]}]}',
        b'{"v": 1, "node": "x", "notices": [{"xml": "\\ud800", "groups": [], "clients": []}]}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_hostile_messages_are_refused(payload: bytes) -> None:
    with pytest.raises(ShareError):
        mission_share.decode(payload)


@given(st.binary(max_size=300))
def test_decode_is_total(payload: bytes) -> None:
    with contextlib.suppress(ShareError):
        mission_share.decode(payload)


ARGS: dict[str, Any] = {
    "creator_uid": "A",
    "groups": (),
    "tool": "public",
    "description": None,
    "chat_room": None,
    "token": None,
}


async def _service(store: PostgresMissionStore) -> tuple[Router, Missions]:
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    missions = Missions(router=router, store=store, metrics=Metrics(), clock_ms=lambda: NOW)
    await missions.load()
    router.set_missions(missions)
    return router, missions


async def test_two_nodes_on_one_store_number_changes_apart_and_read_each_other(
    tmp_path: Path,
) -> None:
    """Two mission services on one PostgreSQL store: each change number carries its node's
    number (never the same on both), a node reads back what the other changed when told, and
    the message is made only once the writes are in the database."""
    async with postgresql_schema() as schema:
        s1 = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        s2 = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        try:
            _, m1 = await _service(s1)
            _, m2 = await _service(s2)
            told: list[MissionShare] = []
            m1.share = told.append
            alice = user("alice")
            _, token = m1.create(alice, "ops", **ARGS)
            assert told == []  # not before the write is in the database
            await m1.flush()
            assert [t.missions for t in told] == [("ops",)]
            with pytest.raises(MissionError):  # 404: node 2 has not read it yet
                m2.get(alice, "ops")
            await m2.apply_shared(["ops"], [])
            assert m2.get(alice, "ops").name == "ops"
            m2.create(alice, "ops2", **ARGS)
            await m2.flush()
            await m1.apply_shared(["ops2"], [])
            seqs = [c.seq for c in m1.changes(alice, "ops", squashed=False)] + [
                c.seq for c in m1.changes(alice, "ops2", squashed=False)
            ]
            assert len(set(seqs)) == 2
            nodes = {seq & ((1 << NODE_BITS) - 1) for seq in seqs}
            assert len(nodes) == 2  # one from each node
            # A Lamport clock: node 2 had seen node 1's change, so its number is larger.
            assert seqs[1] > seqs[0]
            # A node that keeps writing while it reads does not replace what it holds with a
            # read that may miss its own write: it says the mission is to be read again.
            real = s2.load_mission
            n = 0

            async def busy(name: str, max_changes: int) -> Any:
                nonlocal n
                n += 1
                m2.create(alice, f"busy{n}", **ARGS)  # a write queued during the read
                return await real(name, max_changes)

            s2.load_mission = busy  # type: ignore[method-assign]
            assert await m2.apply_shared(["ops"], []) == ["ops"]
            assert n == 3  # RELOAD_ATTEMPTS
            s2.load_mission = real  # type: ignore[method-assign]
            assert await m2.apply_shared(["ops"], []) == []
            # Deleted on one node: gone on the other once told.
            m1.delete(alice, "ops", token)
            await m1.flush()
            await m2.apply_shared(["ops"], [])
            assert m2.mission_record("ops") is None
            await m1.close()
            await m2.close()
        finally:
            await s1.close()
            await s2.close()


async def test_the_sharing_refuses_counts_and_splits() -> None:
    """What arrives not well formed is refused and counted; a node's own message is ignored;
    what goes out is split to the wire's limits, missions before notices."""
    from liaison.cluster.missions_share import MissionSharing
    from liaison.storage.missions import MemoryMissionStore

    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    missions = Missions(
        router=router, store=MemoryMissionStore(), metrics=Metrics(), clock_ms=lambda: NOW
    )
    bus: Any = SimpleNamespace(settings=SimpleNamespace(node="node0", prefix="p"))
    sharing = MissionSharing(bus, missions, Metrics())
    assert not sharing.receive(b"not json")
    assert sharing.m_refused.get() == 1
    assert not sharing.receive(mission_share.encode(MissionShare("node0", ("ops",))))
    assert sharing.receive(mission_share.encode(MissionShare("node1", ("ops",))))
    notice = SharedNotice(b"<e/>" * 1000, frozenset(), None, frozenset({("A", "a")}))
    parts = sharing._payloads(MissionShare("", ("ops",), (), (notice,) * 500))
    decoded = [mission_share.decode(p) for p in parts]
    assert decoded[0].missions == ("ops",) and not decoded[0].notices
    assert sum(len(d.notices) for d in decoded) == 500
    assert all(len(p) <= mission_share.MAX_MESSAGE_BYTES for p in parts)


async def test_a_mission_whose_stored_record_does_not_parse_is_refused_not_the_node() -> None:
    """Another node's row this node cannot parse (another version's record, a damaged one):
    that mission is refused and counted, this node keeps what it held, the others are read."""
    async with postgresql_schema() as schema:
        s1 = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        s2 = await PostgresMissionStore.open(POSTGRESQL_URL, schema=schema)
        try:
            _, m1 = await _service(s1)
            _, m2 = await _service(s2)
            alice = user("alice")
            m1.create(alice, "ops", **ARGS)
            m1.create(alice, "ops2", **ARGS)
            await m1.flush()
            await m2.apply_shared(["ops", "ops2"], [])
            # ops's record loses its keys, as a record of another version might.
            await s1._pg.call(
                lambda conn: conn.execute(
                    "UPDATE mission_missions SET record = '{\"v\": 99}' WHERE name = 'ops'"
                )
            )
            assert await m2.apply_shared(["ops", "ops2"], []) == []  # nothing left to retry
            assert m2.m_share_refused.get() == 1
            assert m2.get(alice, "ops").name == "ops"  # what it held, kept
            assert m2.get(alice, "ops2").name == "ops2"
            await m1.close()
            await m2.close()
        finally:
            await s1.close()
            await s2.close()


async def test_an_unexpected_fault_applying_shared_missions_is_counted_not_fatal() -> None:
    from liaison.cluster.missions_share import MissionSharing
    from liaison.storage.missions import MemoryMissionStore

    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    missions = Missions(
        router=router, store=MemoryMissionStore(), metrics=Metrics(), clock_ms=lambda: NOW
    )

    async def broken(names: Any, logs: Any) -> list[str]:
        raise KeyError("created")

    missions.apply_shared = broken  # type: ignore[method-assign]
    bus: Any = SimpleNamespace(settings=SimpleNamespace(node="node0", prefix="p"))
    sharing = MissionSharing(bus, missions, Metrics())
    assert sharing.receive(mission_share.encode(MissionShare("node1", ("ops",))))
    await sharing._apply()  # does not raise
    assert sharing.m_refused.get() == 1
    assert sharing._retry == {}  # not retried: it would fail the same way
