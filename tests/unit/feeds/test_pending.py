"""The feeds' pending table, adaptive thinning and TCP line splitting (feeds/pending.py,
feeds/runner.py), on a fake clock: every time is an argument."""

from __future__ import annotations

from collections import Counter

import pytest

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
from liaison.feeds.runner import LineSplitter

ONE_S = Pace(base_ms=1000, cap_ms=30_000)


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
