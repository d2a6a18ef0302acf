"""The LatestState contract, run against every implementation in IMPLEMENTATIONS.

A new implementation (one shared by several nodes, say) adds a factory below and must pass
every test here unchanged: the router relies on exactly these rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from liaison.cluster.bus import ClusterSettings
from liaison.cluster.latest_kv import SharedLatestState
from liaison.latest import LatestEntry, LatestState, MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import make_event

NOW = 1_700_000_000_000

# name -> factory(max_uids); each call must return an empty, independent table.
IMPLEMENTATIONS: dict[str, Callable[[int], LatestState]] = {
    "memory": lambda max_uids: MemoryLatestState(max_uids),
    # A cluster node's table (its bucket is not reached here: tests/unit/cluster/
    # test_latest_kv.py and tests/integration/test_cluster.py cover that side).
    "shared": lambda max_uids: SharedLatestState(
        ClusterSettings(servers=("nats://127.0.0.1:1",), node="n0"),
        None,
        Metrics(),
        MemoryLatestState(max_uids),
    ),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest) -> Callable[[int], LatestState]:
    return IMPLEMENTATIONS[request.param]


def entry(uid: str, *, time: int = NOW, stale: int = 60_000, group: str = "g") -> LatestEntry:
    event = make_event(
        uid=uid,
        type="a-f-G",
        how="m-g",
        time=time,
        start=time,
        stale=time + stale,
        lat=1.0,
        lon=2.0,
    )
    return LatestEntry(event, frozenset({group}))


def uids(state: LatestState) -> list[str]:
    return [e.event.uid for e in state.entries()]


def test_put_get_remove_and_size(make: Callable[[int], LatestState]) -> None:
    state = make(10)
    assert state.get("a") is None and len(state) == 0 and uids(state) == []
    a = entry("a")
    assert state.put(a) is True
    assert state.get("a") == a and len(state) == 1
    assert state.remove("a") == a
    assert state.get("a") is None and len(state) == 0
    assert state.remove("a") is None


def test_a_later_report_replaces_an_older_one_never_the_reverse(
    make: Callable[[int], LatestState],
) -> None:
    state = make(10)
    state.put(entry("u", time=NOW))
    late = entry("u", time=NOW - 5000)
    assert state.put(late) is False
    got = state.get("u")
    assert got is not None and got.event.time == NOW
    # The same time replaces (a relabelled item is a new version of the same report).
    relabelled = entry("u", time=NOW, group="h")
    assert state.put(relabelled) is True and state.get("u") == relabelled
    newer = entry("u", time=NOW + 1)
    assert state.put(newer) is True and state.get("u") == newer and len(state) == 1


def test_entries_oldest_update_first_stale_included(make: Callable[[int], LatestState]) -> None:
    state = make(10)
    for uid in ("a", "b", "c"):
        state.put(entry(uid, stale=-1 if uid == "b" else 60_000))
    state.put(entry("a", time=NOW + 1))
    assert uids(state) == ["b", "c", "a"]


def test_entries_may_be_iterated_while_the_table_changes(
    make: Callable[[int], LatestState],
) -> None:
    state = make(10)
    for uid in ("a", "b", "c"):
        state.put(entry(uid))
    for e in state.entries():
        state.remove(e.event.uid)
        state.put(entry(e.event.uid + "2"))
    assert sorted(uids(state)) == ["a2", "b2", "c2"]


def test_bounded_evicting_the_entry_updated_longest_ago(
    make: Callable[[int], LatestState],
) -> None:
    state = make(3)
    for uid in ("a", "b", "c"):
        state.put(entry(uid))
    state.put(entry("a", time=NOW + 1))  # an update at the limit evicts nothing
    assert len(state) == 3
    state.put(entry("d"))
    assert sorted(uids(state)) == ["a", "c", "d"] and state.get("b") is None


def test_expire_drops_what_is_stale_at_the_given_time(make: Callable[[int], LatestState]) -> None:
    state = make(10)
    for i in range(4):
        state.put(entry(f"u{i}", stale=1000 * (i + 1)))
    assert state.expire(NOW + 2500) == 2
    assert sorted(uids(state)) == ["u2", "u3"] and len(state) == 2
    assert state.expire(NOW + 2500) == 0


def test_memory_latest_state_is_a_latest_state() -> None:
    state: LatestState = MemoryLatestState()
    assert isinstance(state, MemoryLatestState) and len(state) == 0
