"""The one outbound queue: coalescing, limits, priorities, statistics, water marks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.transports.outbound import (
    OutboundLimits,
    OutboundQueue,
    OutboundStatistics,
    Put,
    WaterMarks,
)


def queue(max_items: int = 10, **kw: object) -> OutboundQueue[str]:
    in_place = bool(kw.pop("coalesce_in_place", True))
    return OutboundQueue(OutboundLimits(max_items=max_items, **kw), coalesce_in_place=in_place)  # type: ignore[arg-type]


def test_positions_coalesce_in_place_and_order_is_kept() -> None:
    q = queue()
    assert q.put("a1", "a") is Put.QUEUED
    assert q.put("chat") is Put.QUEUED
    assert q.put("b1", "b") is Put.QUEUED
    assert q.put("a2", "a") is Put.COALESCED
    assert len(q) == 3
    assert q.take() == ["a2", "chat", "b1"]  # a2 took a1's place
    assert not q and q.take() == []
    s = q.statistics()
    assert (s.depth, s.peak, s.queued, s.coalesced, s.taken, s.dropped) == (0, 3, 4, 1, 3, 0)


def test_coalescing_to_the_back_keeps_order_relative_to_what_came_between() -> None:
    q = queue(coalesce_in_place=False)
    q.put("a1", "a")
    q.put("delete-a")
    q.put("a2", "a")
    assert q.take() == ["delete-a", "a2"]


def test_items_without_a_key_never_coalesce() -> None:
    q = queue()
    for i in range(5):
        q.put(f"chat{i}")
    assert q.take() == [f"chat{i}" for i in range(5)]


def test_overflow_past_max_items_drops_everything_and_refuses_later_items() -> None:
    q = queue(max_items=3)
    for i in range(3):
        assert q.put(f"c{i}") is Put.QUEUED
    assert q.put("a", "a") is Put.OVERFLOW
    assert q.overflowed and len(q) == 0
    assert q.put("late") is Put.DROPPED
    s = q.statistics()
    assert (s.depth, s.peak, s.dropped, s.overflowed) == (0, 4, 5, True)


def test_coalescing_does_not_count_against_the_limit() -> None:
    q = queue(max_items=2)
    q.put("x")
    for i in range(100):
        assert q.put(f"a{i}", "a") is (Put.QUEUED if i == 0 else Put.COALESCED)
    assert not q.overflowed and q.take() == ["x", "a99"]


def test_max_bytes() -> None:
    q = queue(max_items=100, max_bytes=10)
    q.put("a1", "a", size=4)
    q.put("b", size=4)
    assert q.statistics().bytes == 8
    assert q.put("a2", "a", size=6) is Put.COALESCED
    assert q.statistics().bytes == 10
    assert q.take() == ["a2", "b"] and q.statistics().bytes == 0
    q.put("big", size=11)
    assert q.overflowed and q.statistics().bytes == 0


def test_max_bytes_with_coalescing_to_the_back() -> None:
    q = queue(max_items=100, max_bytes=10, coalesce_in_place=False)
    q.put("a1", "a", size=9)
    assert q.put("a2", "a", size=9) is Put.COALESCED
    assert q.statistics().bytes == 9 and not q.overflowed


def test_priorities_take_lower_classes_first_each_in_arrival_order() -> None:
    q = queue(priorities=3)
    q.put("pos-a", "a", priority=2)
    q.put("chat1", priority=1)
    q.put("alert", priority=0)
    q.put("pos-b", "b", priority=2)
    q.put("chat2", priority=1)
    q.put("other", priority=9)  # past the last class: the last class
    assert q.take() == ["alert", "chat1", "chat2", "pos-a", "pos-b", "other"]


def test_priorities_take_at_most_max_items() -> None:
    q = queue(priorities=2)
    for i in range(3):
        q.put(f"low{i}", priority=1)
        q.put(f"high{i}", priority=0)
    assert q.take(4) == ["high0", "high1", "high2", "low0"]
    assert len(q) == 2
    assert q.take(10) == ["low1", "low2"]


def test_a_key_that_changes_class_moves() -> None:
    q = queue(priorities=2)
    q.put("a1", "a", priority=1)
    q.put("x", priority=1)
    assert q.put("a2", "a", priority=0) is Put.COALESCED
    assert len(q) == 2
    assert q.take() == ["a2", "x"]
    q.put("a3", "a", priority=1)  # taken: a new item, not a replacement
    assert q.statistics().coalesced == 1


def test_single_class_take_with_a_limit() -> None:
    q = queue()
    for i in range(4):
        q.put(str(i))
    assert q.take(3) == ["0", "1", "2"] and q.take() == ["3"]


def test_pause_resume_and_close() -> None:
    q = queue()
    q.pause()
    q.pause()
    assert q.paused
    q.put("x", "x")  # still queued and coalescing while paused
    assert q.put("y", "x") is Put.COALESCED
    q.resume()
    q.pause()
    s = q.statistics()
    assert (s.paused, s.pauses, s.depth) == (True, 2, 1)
    q.close()
    assert q.put("z") is Put.DROPPED
    assert q.statistics() == OutboundStatistics(
        depth=0,
        bytes=0,
        peak=1,
        queued=2,
        coalesced=1,
        taken=0,
        dropped=2,
        overflowed=False,
        paused=True,
        pauses=2,
    )


@pytest.mark.parametrize(
    "kw", [{"max_items": 0}, {"max_items": 1, "max_bytes": 0}, {"max_items": 1, "priorities": 0}]
)
def test_limits_are_checked(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        OutboundLimits(**kw)


def test_water_marks() -> None:
    marks = WaterMarks(high=100, low=50)
    assert not marks.should_pause(100) and marks.should_pause(101)
    assert not marks.may_resume(51) and marks.may_resume(50)
    with pytest.raises(ValueError):
        WaterMarks(high=10, low=11)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None, None]), st.integers(0, 2)), max_size=60
    ),
    st.booleans(),
)
def test_the_queue_matches_a_plain_model(ops: list[tuple[str | None, int]], in_place: bool) -> None:
    """Against a list model: one item per key at most, lower class first, arrival order."""
    q: OutboundQueue[int] = OutboundQueue(
        OutboundLimits(max_items=1000, priorities=3), coalesce_in_place=in_place
    )
    model: list[tuple[int, str | None, int]] = []  # (class, key, item)
    for n, (key, cls) in enumerate(ops):
        q.put(n, key, priority=cls)
        at = next((i for i, m in enumerate(model) if key is not None and m[1] == key), None)
        if at is not None and in_place and model[at][0] == cls:
            model[at] = (cls, key, n)
        else:
            if at is not None:
                del model[at]
            model.append((cls, key, n))
    expected = [item for _, _, item in sorted(model, key=lambda m: m[0])]
    assert len(q) == len(model)
    assert q.take() == expected
    assert q.statistics().peak <= len(ops)
