"""The Store contract: every test here runs against every Store implementation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from storage_support import T0, make

from liaison.errors import StorageError
from liaison.storage import MAX_QUERY_LIMIT, Query, Store, StoredEvent


def same_record(stored: StoredEvent | None, given: StoredEvent) -> bool:
    """Equal in every field except the seq the store assigned."""
    return stored is not None and replace(stored, seq=0) == given


async def test_put_then_latest_returns_every_field(store: Store) -> None:
    ev = make(label='{"classification":"OFFICIAL"}', sender_groups=frozenset({"Cyan", "Red"}))
    await store.put_many([ev])

    latest = await store.latest(T0)
    assert len(latest) == 1
    assert same_record(latest[0], ev)
    assert latest[0].seq > 0
    assert same_record(await store.latest_by_uid("uid-1"), ev)
    assert await store.latest_by_uid("nobody") is None


async def test_put_many_of_nothing_is_accepted(store: Store) -> None:
    await store.put_many([])
    assert await store.latest(T0) == []


async def test_newer_event_replaces_latest(store: Store) -> None:
    await store.put_many([make(time=T0, lat=1.0)])
    await store.put_many([make(time=T0 + 1000, lat=2.0)])
    got = await store.latest_by_uid("uid-1")
    assert got is not None and got.lat == 2.0


async def test_older_event_does_not_replace_latest_but_is_in_history(store: Store) -> None:
    await store.put_many([make(time=T0 + 1000, lat=2.0)])
    await store.put_many([make(time=T0, lat=1.0)])
    got = await store.latest_by_uid("uid-1")
    assert got is not None and got.lat == 2.0
    assert [e.lat for e in await store.history(Query(uid="uid-1"))] == [2.0, 1.0]


async def test_equal_time_is_not_older_and_replaces(store: Store) -> None:
    await store.put_many([make(time=T0, lat=1.0)])
    await store.put_many([make(time=T0, lat=3.0)])
    got = await store.latest_by_uid("uid-1")
    assert got is not None and got.lat == 3.0


async def test_within_one_batch_events_apply_in_order(store: Store) -> None:
    await store.put_many(
        [
            make(uid="a", time=T0 + 2000, lat=2.0),
            make(uid="a", time=T0 + 1000, lat=1.0),  # older: must not win
            make(uid="b", time=T0, lat=5.0),
            make(uid="b", time=T0 + 1, lat=6.0),  # newer: wins
        ]
    )
    a = await store.latest_by_uid("a")
    b = await store.latest_by_uid("b")
    assert a is not None and a.lat == 2.0
    assert b is not None and b.lat == 6.0


async def test_stale_events_are_not_in_latest(store: Store) -> None:
    await store.put_many(
        [
            make(uid="live", stale=T0 + 1),
            make(uid="edge", stale=T0),  # stale == now counts as stale
            make(uid="gone", stale=T0 - 1),
        ]
    )
    assert [e.uid for e in await store.latest(T0)] == ["live"]
    # Stale or not, the item can still be looked up by uid.
    assert await store.latest_by_uid("gone") is not None


async def test_latest_lists_contacts_first_then_oldest_first(store: Store) -> None:
    await store.put_many(
        [
            make(uid="marker-old", type="b-m-p-s-m", callsign="POINT", time=T0 - 5000),
            make(uid="contact-new", type="a-f-G-U-C", callsign="BRAVO", time=T0 - 1000),
            make(uid="atom-no-callsign", type="a-h-G", callsign=None, time=T0 - 9000),
            make(uid="contact-old", type="a-f-G-U-C", callsign="ALPHA", time=T0 - 3000),
            make(uid="chat", type="b-t-f", callsign="ALPHA", time=T0 - 2000),
        ]
    )
    order = [e.uid for e in await store.latest(T0)]
    assert order == ["contact-old", "contact-new", "atom-no-callsign", "marker-old", "chat"]


async def test_contact_type_is_case_sensitive(store: Store) -> None:
    await store.put_many(
        [
            make(uid="upper", type="A-f-G", callsign="X", time=T0 - 2000),
            make(uid="contact", type="a-f-G", callsign="Y", time=T0 - 1000),
        ]
    )
    assert [e.uid for e in await store.latest(T0)] == ["contact", "upper"]


async def test_delete_uid_removes_latest_but_keeps_history(store: Store) -> None:
    await store.put_many([make(uid="a"), make(uid="b")])
    await store.delete_uid("a")
    await store.delete_uid("never-seen")  # not an error

    assert await store.latest_by_uid("a") is None
    assert [e.uid for e in await store.latest(T0)] == ["b"]
    assert [e.uid for e in await store.history(Query(uid="a"))] == ["a"]

    # A later report brings the item back.
    await store.put_many([make(uid="a", time=T0 + 1)])
    assert await store.latest_by_uid("a") is not None


# --- history queries -----------------------------------------------------------------------


@pytest.fixture
async def track(store: Store) -> Store:
    """A small picture: two tracks, a marker and a chat, at known times and places."""
    await store.put_many(
        [
            make(uid="alpha", callsign="ALPHA", time=T0 + 0, lat=10.0, lon=20.0),
            make(uid="bravo", callsign="BRAVO", time=T0 + 1000, lat=-10.0, lon=179.5),
            make(uid="alpha", callsign="ALPHA", time=T0 + 2000, lat=11.0, lon=21.0),
            make(uid="mark", type="b-m-p-s-m", callsign=None, time=T0 + 3000, lat=0.0, lon=0.0),
            make(uid="bravo", callsign="BRAVO", time=T0 + 4000, lat=-11.0, lon=-179.5),
            make(uid="chat", type="b-t-f", callsign="ALPHA", time=T0 + 5000, lat=0.0, lon=0.0),
        ]
    )
    return store


def times(events: list[StoredEvent]) -> list[int]:
    return [e.time - T0 for e in events]


async def test_history_is_newest_first(track: Store) -> None:
    assert times(await track.history(Query())) == [5000, 4000, 3000, 2000, 1000, 0]


async def test_history_by_uid(track: Store) -> None:
    assert times(await track.history(Query(uid="alpha"))) == [2000, 0]


async def test_history_by_type_prefix(track: Store) -> None:
    assert times(await track.history(Query(type_prefix="a-f"))) == [4000, 2000, 1000, 0]
    assert times(await track.history(Query(type_prefix="b-"))) == [5000, 3000]
    assert times(await track.history(Query(type_prefix="b-t-f"))) == [5000]
    assert await track.history(Query(type_prefix="a-h")) == []
    # The prefix is a prefix, not a pattern: SQL wildcards match nothing special.
    assert await track.history(Query(type_prefix="a%")) == []
    assert await track.history(Query(type_prefix="a_f")) == []


async def test_history_by_callsign(track: Store) -> None:
    assert times(await track.history(Query(callsign="ALPHA"))) == [5000, 2000, 0]


async def test_history_time_range_is_since_inclusive_until_exclusive(track: Store) -> None:
    assert times(await track.history(Query(since=T0 + 1000, until=T0 + 4000))) == [
        3000,
        2000,
        1000,
    ]
    assert times(await track.history(Query(since=T0 + 4000))) == [5000, 4000]
    assert times(await track.history(Query(until=T0 + 1000))) == [0]


async def test_history_bbox(track: Store) -> None:
    # Edges are inside.
    assert times(await track.history(Query(bbox=(20.0, 10.0, 21.0, 11.0)))) == [2000, 0]
    assert times(await track.history(Query(bbox=(-1.0, -1.0, 1.0, 1.0)))) == [5000, 3000]
    # min_lon > max_lon: a box across the antimeridian holds both bravo reports, nothing else.
    assert times(await track.history(Query(bbox=(179.0, -12.0, -179.0, -9.0)))) == [4000, 1000]


async def test_history_limit_keeps_the_newest(track: Store) -> None:
    assert times(await track.history(Query(limit=2))) == [5000, 4000]
    assert times(await track.history(Query(uid="alpha", limit=1))) == [2000]


async def test_history_filters_combine(track: Store) -> None:
    q = Query(type_prefix="a-", callsign="BRAVO", since=T0 + 2000, bbox=(-180, -90, 0, 90))
    assert times(await track.history(q)) == [4000]


async def test_history_ties_on_time_are_newest_insert_first(store: Store) -> None:
    await store.put_many([make(uid="x", lat=1.0), make(uid="y", lat=2.0)])
    await store.put_many([make(uid="z", lat=3.0)])
    got = await store.history(Query())
    assert [e.uid for e in got] == ["z", "y", "x"]


def test_query_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="limit"):
        Query(limit=0)
    with pytest.raises(ValueError, match="limit"):
        Query(limit=MAX_QUERY_LIMIT + 1)
    with pytest.raises(ValueError, match="min_lat"):
        Query(bbox=(0.0, 10.0, 1.0, 5.0))
    with pytest.raises(ValueError, match="NaN"):
        Query(bbox=(0.0, math.nan, 1.0, 5.0))


# --- retention -----------------------------------------------------------------------------


async def test_prune_drops_history_received_before_the_cutoff(store: Store) -> None:
    await store.put_many(
        [
            make(uid="a", time=T0, received=T0 - 3000),
            make(uid="a", time=T0 + 1, received=T0 - 2000),
            make(uid="b", time=T0, received=T0 - 1000),
            make(uid="c", time=T0, received=T0),
        ]
    )
    assert await store.prune(T0 - 1000) == 2  # received == cutoff is kept
    assert sorted(e.received - T0 for e in await store.history(Query())) == [-1000, 0]
    assert await store.prune(T0 - 1000) == 0


async def test_prune_keeps_latest_that_can_still_be_replayed(store: Store) -> None:
    await store.put_many(
        [
            # Old but valid for another day (a route, a marker): stays in the picture.
            make(uid="keep", time=T0 - 10_000, stale=T0 + 86_400_000),
            # Old and long stale: can never be replayed, so the latest entry goes as well.
            make(uid="drop", time=T0 - 10_000, stale=T0 - 5_000),
            # Recent: untouched whatever its stale time.
            make(uid="recent", time=T0, stale=T0 - 1),
        ]
    )
    assert await store.prune(T0 - 1000) == 2
    assert await store.latest_by_uid("keep") is not None
    assert await store.latest_by_uid("drop") is None
    assert await store.latest_by_uid("recent") is not None
    assert [e.uid for e in await store.latest(T0)] == ["keep"]


# --- what is stored ------------------------------------------------------------------------


async def test_labels_are_stored_and_returned_as_given(store: Store) -> None:
    label = '{"policy":"NATO","classification":"RESTRICTED","releasable_to":["GBR","FRA"]}'
    await store.put_many([make(uid="labelled", label=label), make(uid="plain", label=None)])
    labelled = await store.latest_by_uid("labelled")
    plain = await store.latest_by_uid("plain")
    assert labelled is not None and labelled.label == label
    assert plain is not None and plain.label is None
    assert [e.label for e in await store.history(Query(uid="labelled"))] == [label]


async def test_odd_values_round_trip(store: Store) -> None:
    ev = make(
        uid="odd \u00e9\u4e2d",
        callsign=None,
        hae=math.nan,
        sender="CN=Alice,O=Example",
        sender_groups=frozenset(),
        xml=b"<event>\x00\xff\xfe not utf-8</event>",
    )
    other = make(uid="groups", sender_groups=frozenset({"a,b", '"quoted"', "\u00fcml", ""}))
    await store.put_many([ev, other])
    got = await store.latest_by_uid(ev.uid)
    assert got is not None
    assert math.isnan(got.hae)
    assert same_record(got, replace(ev, hae=got.hae))
    assert same_record(await store.latest_by_uid("groups"), other)


async def test_seq_is_assigned_and_strictly_increasing(store: Store) -> None:
    await store.put_many([make(uid=f"u{i}", time=T0 + i) for i in range(5)])
    await store.put_many([make(uid=f"u{i}", time=T0 + 10 + i) for i in range(3)])
    history = await store.history(Query())
    seqs = [e.seq for e in reversed(history)]  # oldest first == insertion order here
    assert len(seqs) == 8
    assert all(s > 0 for s in seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == 8
    # latest carries the seq of the history row it came from.
    latest = {e.uid: e.seq for e in await store.latest(T0)}
    assert latest["u0"] == history[2].seq  # u0's second report is the third newest overall


async def test_a_closed_store_raises_storage_error(store: Store) -> None:
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StorageError):
        await store.put_many([make()])
    with pytest.raises(StorageError):
        await store.latest(T0)
    with pytest.raises(StorageError):
        await store.history(Query())
