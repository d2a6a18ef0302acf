"""A cluster node's latest state (cluster/latest_kv.py) without NATS: what it queues for the
bucket, and how it applies the bucket's values (hostile ones refused and counted). The bucket
itself, on a real NATS JetStream, is tests/integration/test_cluster.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from liaison.cluster import latest_kv
from liaison.cluster.bus import ClusterSettings
from liaison.cluster.latest_kv import SharedLatestState
from liaison.latest import LatestEntry, MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import make_event
from liaison.protocol import cluster_wire, cot_xml

NOW = 1_700_000_000_000


def state() -> SharedLatestState:
    return SharedLatestState(
        ClusterSettings(servers=("nats://127.0.0.1:1",), node="n0"),
        None,
        Metrics(),
        MemoryLatestState(),
    )


def entry(uid: str, *, time: int = NOW, group: str = "g") -> LatestEntry:
    event = make_event(
        uid=uid, type="a-f-G", how="m-g", time=time, start=time, stale=time + 60_000, lat=1, lon=2
    )
    return LatestEntry(event, frozenset({group}))


def value(
    e: LatestEntry, *, node: str = "n1", label: str | None = None, origin: str | None = None
) -> bytes:
    return cluster_wire.encode_latest(
        cluster_wire.LatestValue(node, e.sender_groups, label, cot_xml.render_xml(e.event), origin)
    )


def dropped(s: SharedLatestState, reason: str) -> int:
    return s.m_dropped.get(reason)


def test_changes_made_here_wait_for_the_bucket_one_per_uid_in_order() -> None:
    s = state()
    s.put(entry("a"))
    s.put(entry("b"))
    s.put(entry("a", time=NOW + 1000))  # only a's newest waits, now after b
    s.remove("c")
    assert list(s._pending) == ["b", "a", "c"]
    assert s._pending["c"] is None  # a delete
    waiting = s._pending["a"]
    assert waiting is not None
    written = cluster_wire.decode_latest(s.encode(waiting))  # rendered when written
    assert written.node == "n0" and written.sender_groups == frozenset({"g"})
    assert written.origin is None
    fed = entry("f")
    s.put(LatestEntry(dataclasses.replace(fed.event, origin="feed:adsb"), fed.sender_groups))
    assert cluster_wire.decode_latest(s.encode(s._pending["f"])).origin == "feed:adsb"  # type: ignore[arg-type]
    assert cot_xml.parse_event(written.xml).time == NOW + 1000


def test_changes_from_elsewhere_and_refused_puts_are_not_written() -> None:
    s = state()
    s.put(entry("a", time=NOW + 1000), shared=False)  # another node's, or the store's
    s.remove("b", shared=False)
    assert s._pending == {}
    assert s.put(entry("a", time=NOW)) is False  # older than what is held: kept out, not written
    assert s._pending == {}


def test_the_queue_is_bounded_oldest_change_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(latest_kv, "MAX_PENDING_WRITES", 3)
    s = state()
    for uid in "abcd":
        s.put(entry(uid))
    assert list(s._pending) == ["b", "c", "d"]
    assert dropped(s, "queue_full") == 1
    assert len(s) == 4  # the table itself keeps them all


def test_values_of_other_nodes_are_applied_newest_wins_deletes_forget() -> None:
    s = state()
    key = cluster_wire.latest_key("a")
    assert s.apply(key, value(entry("a", time=NOW + 1000), origin="partner"), None) == 1
    held = s.get("a")
    assert held is not None and held.event.time == NOW + 1000
    assert held.event.origin == "partner"  # the web map's Partner items layer holds it
    assert s.apply(key, value(entry("a", time=NOW)), None) == 1  # read, but older: not kept
    held = s.get("a")
    assert held is not None and held.event.time == NOW + 1000
    assert s.apply(key, None, "DEL") == 1
    assert s.get("a") is None
    assert s._pending == {}  # nothing read from the bucket is written back


def test_hostile_values_are_refused_and_counted_never_applied() -> None:
    s = state()
    good = value(entry("a"))
    assert s.apply("not-ours", good, None) == 0
    assert s.apply(cluster_wire.latest_key("a"), b"garbage", None) == 0
    # The key names another uid than the event it holds.
    assert s.apply(cluster_wire.latest_key("b"), good, None) == 0
    # XML that is not an event.
    bad_xml = json.dumps(
        {"v": 1, "node": "n1", "groups": [], "label": None, "xml": "<event><!DOCTYPE x></event>"}
    ).encode()
    assert s.apply(cluster_wire.latest_key("a"), bad_xml, None) == 0
    assert dropped(s, "unreadable") == 4
    # A label on a node without a policy cannot be read: deny.
    assert s.apply(cluster_wire.latest_key("a"), value(entry("a"), label='{"v":1}'), None) == 0
    assert dropped(s, "label") == 1
    assert len(s) == 0


class _Bucket:
    """An in-memory stand-in for nats-py's KeyValue (put, delete), failing while ``down``."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False

    async def put(self, key: str, value: bytes) -> int:
        if self.down:
            raise TimeoutError("nats: timeout")
        self.values[key] = value
        return len(self.values)

    async def delete(self, key: str) -> bool:
        if self.down:
            raise TimeoutError("nats: timeout")
        self.values.pop(key, None)
        return True


async def test_writes_wait_while_the_bucket_is_away_and_go_when_it_is_back() -> None:
    s = state()
    bucket = _Bucket()
    s._kv = bucket
    s.put(entry("a"))
    s.put(entry("b"))
    bucket.down = True
    assert await s._write_batch() is False
    assert list(s._pending) == ["a", "b"] and s.m_errors.get() == 1
    s.remove("b")  # changed while waiting: only the delete is written for b
    bucket.down = False
    assert await s._write_batch() is True
    assert s._pending == {} and s.m_written.get() == 2
    assert set(bucket.values) == {cluster_wire.latest_key("a")}


def test_another_nodes_value_ahead_of_the_bus_is_early_the_same_report_held_is_kept() -> None:
    s = state()
    ahead = entry("a")
    assert s.apply(cluster_wire.latest_key("a"), value(ahead, node="n1"), "PUT") == 1
    assert s.get("a").early  # type: ignore[union-attr]  # the bus has not brought it here yet
    # The bus brings it: the router puts it (shared=False), no longer early.
    s.put(ahead, shared=False)
    assert not s.get("a").early  # type: ignore[union-attr]
    # The same report read from the bucket again (a watch restarted) leaves it as it is.
    s.apply(cluster_wire.latest_key("a"), value(ahead, node="n1"), "PUT")
    assert not s.get("a").early  # type: ignore[union-attr]
    # This node's own value coming back from the bucket is never early.
    own = entry("b")
    s.apply(cluster_wire.latest_key("b"), value(own, node="n0"), "PUT")
    assert not s.get("b").early  # type: ignore[union-attr]


async def test_a_uid_reported_again_before_the_write_is_rendered_once_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = state()
    bucket = _Bucket()
    s._kv = bucket
    rendered: list[int] = []
    real = cot_xml.render_xml

    def counting(event: object) -> bytes:
        rendered.append(event.time)  # type: ignore[attr-defined]
        return real(event)  # type: ignore[arg-type]

    monkeypatch.setattr(latest_kv.cot_xml, "render_xml", counting)
    for k in range(5):
        s.put(entry("a", time=NOW + k))
    assert rendered == []  # nothing rendered on the accept path
    assert await s._write_batch() is True
    assert rendered == [NOW + 4]
    held = cluster_wire.decode_latest(bucket.values[cluster_wire.latest_key("a")])
    assert cot_xml.parse_event(held.xml).time == NOW + 4


async def test_a_change_that_cannot_be_encoded_is_dropped_and_counted_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = state()
    bucket = _Bucket()
    s._kv = bucket

    def broken(event: object) -> bytes:
        raise ValueError("cannot render")

    s.put(entry("a"))
    s.put(entry("b"))
    monkeypatch.setattr(latest_kv.cot_xml, "render_xml", broken)
    assert await s._write_batch() is True
    assert s._pending == {} and dropped(s, "unwritable") == 2
    assert bucket.values == {}
