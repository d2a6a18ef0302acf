"""The feeds' pending table, adaptive thinning and TCP line splitting (feeds/pending.py,
feeds/runner.py), on a fake clock: every time is an argument."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from liaison.feeds.config import FeedConfig, parse_feeds
from liaison.feeds.pending import (
    COALESCED,
    EVICTED,
    NARROW_DIVISOR,
    OLD,
    THINNED,
    WIDEN,
    Pace,
    PendingTracks,
    Thinning,
)
from liaison.feeds.runner import MAX_DELIVERIES_PER_TURN, Feeds, LineSplitter
from liaison.gate import load_gate_config
from liaison.metrics import Metrics
from liaison.model.event import Event
from liaison.protocol.feed_tracks import TrackReport
from liaison.router import Published, Router
from tests.unit.feeds.test_tracks_and_config import POLICY

ONE_S = Pace(base_ms=1000, cap_ms=30_000)
NOW = 1_800_000_000_000


def table(max_tracks: int = 100) -> tuple[PendingTracks[str], Counter[str]]:
    drops: Counter[str] = Counter()

    def drop(reason: str, n: int) -> None:
        drops[reason] += n

    return PendingTracks(max_tracks=max_tracks, drop=drop), drops


def drain(t: PendingTracks[str], now_ms: int, factor: float = 1.0) -> list[tuple[str, str]]:
    out = []
    for _ in range(1000):  # bounded
        due = t.take_due(now_ms, factor)
        if due is None:
            return out
        out.append(due)
    raise AssertionError("more than 1000 fixes due")


def test_newest_fix_wins_and_old_ones_are_dropped() -> None:
    t, drops = table()
    assert t.offer("a", 100, "a@100", ONE_S, now_ms=10_000)
    assert not t.offer("a", 100, "a@100 again", ONE_S, now_ms=10_001)  # a second receiver
    assert not t.offer("a", 50, "a@50", ONE_S, now_ms=10_002)  # out of order
    assert t.offer("a", 120, "a@120", ONE_S, now_ms=10_003)  # newer: replaces the waiting one
    assert drops == {OLD: 2, THINNED: 1}  # never published: it was due, not held by the interval
    assert len(t) == 1 and t.pending == 1
    assert drain(t, 10_003) == [("a", "a@120")]  # a new track is due at once, its newest fix
    assert t.pending == 0
    assert not t.offer("a", 110, "a@110", ONE_S, now_ms=10_004)  # older than the published one
    assert drops[OLD] == 3


def test_at_most_one_fix_per_interval_the_newest() -> None:
    t, drops = table()
    t.offer("a", 0, "a@0", ONE_S, now_ms=0)
    assert drain(t, 0) == [("a", "a@0")]
    for k in range(1, 10):  # ten fixes a second
        t.offer("a", k * 100, f"a@{k * 100}", ONE_S, now_ms=k * 100)
        assert drain(t, k * 100) == []  # within the interval: waits
    assert drops[COALESCED] == 8  # each replaced by the next, within the track's interval
    assert t.next_due_ms(1.0) == 1000
    assert drain(t, 999) == []
    assert drain(t, 1000) == [("a", "a@900")]  # the newest, once, at the interval
    assert drain(t, 5000) == []  # nothing new: nothing sent


def test_widened_interval_and_fairness_between_tracks() -> None:
    t, drops = table()
    for uid in "abc":
        t.offer(uid, 0, f"{uid}@0", ONE_S, now_ms=0)
    assert [u for u, _ in drain(t, 0)] == ["a", "b", "c"]
    # Every track reports each 100 ms; at factor 4 each goes out at most every 4 s.
    for now in range(100, 4001, 100):
        for uid in "abc":
            t.offer(uid, now, f"{uid}@{now}", ONE_S, now_ms=now)
        sent = drain(t, now, factor=4.0)
        if now < 4000:
            assert sent == []
    assert sent == [("a", "a@4000"), ("b", "b@4000"), ("c", "c@4000")]
    # Per track 39 replaced (200 to 4000 ms): 8 within its own 1 s interval (200 to 900), the
    # other 31 held only by the widening.
    assert drops[COALESCED] == 3 * 8 and drops[THINNED] == 3 * 31


def test_widening_is_capped_per_feed() -> None:
    assert ONE_S.interval_ms(1.0) == 1000
    assert ONE_S.interval_ms(0.5) == 1000
    assert ONE_S.interval_ms(4.0) == 4000
    assert ONE_S.interval_ms(64.0) == 30_000  # never past the cap (half the feed's stale_s)
    assert Pace(base_ms=5000, cap_ms=1000).interval_ms(8.0) == 5000  # never below its base


def test_the_table_is_bounded_and_counts_what_it_forgets() -> None:
    t, drops = table(max_tracks=2)
    t.offer("a", 1, "a", ONE_S, now_ms=0)
    t.offer("b", 1, "b", ONE_S, now_ms=0)
    t.offer("c", 1, "c", ONE_S, now_ms=0)  # "a", heard from least recently, is forgotten
    assert len(t) == 2 and t.pending == 2 and drops == {EVICTED: 1}
    assert [u for u, _ in drain(t, 0)] == ["b", "c"]
    t.offer("d", 1, "d", ONE_S, now_ms=1)  # "b" forgotten, nothing of it waited
    assert drops == {EVICTED: 1}
    assert t.offer("a", 1, "a again", ONE_S, now_ms=2)  # forgotten: a new track again
    assert [u for u, _ in drain(t, 2)] == ["d", "a"]


def test_stale_heap_entries_stay_bounded() -> None:
    t, _ = table(max_tracks=10)
    for i in range(10_000):  # every offer evicts a waiting track: 9,990 stale entries made
        t.offer(f"u{i}", 1, "x", ONE_S, now_ms=i)
    assert len(t._due) <= 2 * t.pending + 64 + 1
    assert len(drain(t, 10_000)) == 10


def test_thinning_widens_fast_and_narrows_slowly() -> None:
    th = Thinning(max_factor=8.0)
    assert th.factor == 1.0
    assert th.update([]) == "narrowed"  # not behind: stays at 1
    assert th.factor == 1.0
    steps = 0
    while th.factor < 8.0 and steps < 100:
        assert th.update(["overdue"]) == "widened"
        steps += 1
    assert th.factor == 8.0 and steps == 10  # 1.25 ** 10 > 8: capped
    th.update(["loop_lag", "writer_queue"])
    assert th.factor == 8.0
    assert th.update([], clear=False) == "held"  # catching up: neither wider nor narrower
    assert th.factor == 8.0
    th.update([])
    assert th.factor == pytest.approx(8.0 / NARROW_DIVISOR)
    back = 0
    while th.factor > 1.0 and back < 100:
        th.update([])
        back += 1
    assert th.factor == 1.0 and back > steps  # slower back than out
    assert WIDEN > NARROW_DIVISOR


def test_line_splitter_any_cut_and_overlong_lines() -> None:
    stream = b"MSG,3,a\nMSG,3,b\r\n" + b"x" * 50 + b"\nMSG,3,c\nrest"
    for cut in range(1, len(stream)):
        s = LineSplitter(max_bytes=20)
        lines = s.feed(stream[:cut]) + s.feed(stream[cut:])
        assert lines == [b"MSG,3,a\n", b"MSG,3,b\r\n", b"MSG,3,c\n"], cut
        assert s.overlong == 1, cut
        assert s.finish() == b"rest"
    s = LineSplitter(max_bytes=20)
    chunks = [b"y" * 15, b"y" * 15, b"y" * 15, b"\nok\n"]  # one long line over three chunks
    got = [line for chunk in chunks for line in s.feed(chunk)]
    assert got == [b"ok\n"] and s.overlong == 1


class FakeRouter:
    """What the feeds' publisher reads of the router: congestion, the writer queue, the
    subscribers' outbound depth; each publication reaches ``clients`` subscribers."""

    def __init__(self, clients: int) -> None:
        self.congested = False
        self.store_backlog = 0.0
        self.subscribers: list[object] = []
        self.clients = clients
        self.published: list[str] = []

    def publish_checked(self, event: Event, source: object) -> Published:
        self.published.append(event.uid)
        return Published(self.clients, (), event)


class Queued:
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def outbound_depth(self) -> int:
        return self.depth


SBS_FEED = """
[feeds.rx]
kind = "sbs1-tcp"
connect = "127.0.0.1:30003"
org = "USA"
ceiling = { classification = "RESTRICTED", REL = "*" }
default_classification = "RESTRICTED"
min_interval_s = 1
stale_s = 60
"""


def feeds_with(router: FakeRouter, clock: list[int], tmp_path: Path) -> tuple[Feeds, FeedConfig]:
    text = POLICY + SBS_FEED
    policy = load_gate_config(text).policy
    (config,) = parse_feeds(text, policy, base_dir=tmp_path)
    feeds = Feeds([config], cast(Router, router), Metrics(), lambda: clock[0], tmp_path, policy)
    return feeds, config


def fix(i: int, t: int) -> TrackReport:
    return TrackReport(
        kind="aircraft",
        ident=f"{i:06x}",
        uid=f"ICAO-{i:06x}",
        cot_type="a-?-A",
        time_ms=t,
        lat=1.0,
        lon=2.0,
    )


def test_one_turn_is_bounded_by_deliveries_and_the_rest_waits(tmp_path: Path) -> None:
    clock = [NOW]
    router = FakeRouter(clients=200)  # each event is 200 deliveries
    feeds, config = feeds_with(router, clock, tmp_path)
    feeds.offer(config, [fix(i, NOW) for i in range(100)])
    assert feeds.tracks.pending == 100
    per_turn = MAX_DELIVERIES_PER_TURN // 200  # 50 events, then it yields
    assert feeds.publish_due(NOW) == per_turn
    assert len(router.published) == per_turn
    turns = 1
    while feeds.publish_due(NOW) and turns < 100:
        turns += 1
    assert turns == 100 // per_turn and len(set(router.published)) == 100  # every track once
    router.congested = True  # the store's queue is full: nothing goes, the fixes wait
    feeds.offer(config, [fix(i, NOW + 2000) for i in range(100)])
    clock[0] = NOW + 2000
    assert feeds.publish_due(NOW + 2000) == 0 and feeds.tracks.pending == 100
    assert feeds.m_dropped.values == {}  # waiting is not dropping


def test_the_publisher_widens_while_behind_and_narrows_once_clear(tmp_path: Path) -> None:
    clock = [NOW]
    router = FakeRouter(clients=1)
    feeds, config = feeds_with(router, clock, tmp_path)
    feeds.offer(config, [fix(i, NOW) for i in range(10)])
    assert feeds.behind(NOW) == []
    assert feeds.behind(NOW + 1_500) == ["overdue"]  # due at NOW, nobody published them
    feeds.adapt(NOW + 1_500)
    assert feeds.thinning.factor == pytest.approx(WIDEN)
    while feeds.publish_due(NOW + 1_500):
        pass
    router.store_backlog = 0.3  # the writer queue at 30 % of the congestion depth
    feeds.loop_lag_s = 0.3
    router.subscribers = [Queued(5_000), Queued(0)]  # half the sessions have a backlog
    assert feeds.behind(NOW + 1_600) == ["loop_lag", "writer_queue", "outbound"]
    router.congested = True
    assert "congested" in feeds.behind(NOW + 1_600)
    router.congested, router.store_backlog, feeds.loop_lag_s = False, 0.0, 0.0
    router.subscribers = [Queued(5_000), Queued(0), Queued(0)]  # a third: not behind
    assert feeds.behind(NOW + 1_600) == []
    feeds.adapt(NOW + 1_600)  # clear: narrowed
    assert feeds.thinning.factor == pytest.approx(WIDEN / NARROW_DIVISOR)
    assert feeds.m_behind.values == {"overdue": 1}
    # Every fix of each track, ten a second, while the factor is 4: each goes out every 4 s.
    feeds.thinning.factor = 4.0
    router.published.clear()
    for step in range(1, 81):
        t = NOW + 1_600 + step * 100
        clock[0] = t
        feeds.offer(config, [fix(i, t) for i in range(10)])
        while feeds.publish_due(t):
            pass
    assert len(router.published) == 2 * 10  # 8 s at one fix per track per 4 s
    assert feeds.tracks.pending == 10  # the newest of each, waiting for its turn
    assert feeds.m_dropped.get("thinned") + feeds.m_dropped.get("coalesced") == 800 - 20 - 10
    doc = feeds.snapshot()
    assert doc["tracks"] == 10 and doc["thinning"] == 4.0 and doc["behind"] == {"overdue": 1}
