"""The cluster links' reader of the events stream (federation/feed.py) with a PeerLink on a
PostgreSQL outbox: one copy per event, the position committed with the releases, and a new
holder that neither skips nor queues twice. The stream messages are built as the bus builds
them (protocol/cluster_wire.py); no NATS is needed. Skipped without PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from liaison.cluster.bus import ClusterSettings
from liaison.errors import StorageError
from liaison.federation.feed import StreamFeed
from liaison.federation.link import PeerLink
from liaison.federation.pg_outbox import PgOutbox
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.labels import Label
from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol import cluster_wire
from liaison.protocol.cluster_wire import BusEvent
from liaison.router import Router
from tests.unit.federation.fed_support import POLICY, REL_BOTH, USA_ONLY, cot, fed_config
from tests.unit.federation.pg_support import LEASE, pg_pool
from tests.unit.federation.test_peer_link import MemoryAudit

SETTINGS = ClusterSettings(servers=(), node="n1", prefix="tf", stream="TF")
SENDER = Principal(
    name="usa-1",
    kind=PrincipalKind.USER,
    in_groups=frozenset({"__ANON__", "zz-other"}),  # sorted: __ANON__ first
    out_groups=frozenset({"__ANON__"}),
    org="USA",
)


def holder(pool: Any, box: PgOutbox) -> tuple[StreamFeed, PeerLink, MemoryAudit]:
    """What a lease holder builds: the links' router, the link on the outbox, the reader."""
    fed = fed_config()
    router = Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState())
    router.policy = POLICY  # the node's router has it from the gate
    audit = MemoryAudit()
    link = PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState()),
        audit=audit,
        outbox=box,
        status=FederationStatus("usa-srv").add("ukr", None),
        clock_ms=lambda: 1_764_072_000_000,
    )
    router.attach(link)
    feed = StreamFeed(
        jetstream=None, settings=SETTINGS, router=router, links=[link], metrics=Metrics()
    )
    feed.position = max(0, link.feed_floor())
    return feed, link, audit


def copies(uid: str, label: Label, n: int) -> list[tuple[str, dict[str, str], bytes]]:
    """The stream messages of one event: one per group of its sender."""
    wire = BusEvent(
        msg_id=f"n0:boot:{n}",
        node="n0",
        sender=SENDER,
        label_json=labels.label_to_json(label),
        xml=cot(uid=uid, label=label),
    )
    out = []
    for group in sorted(SENDER.in_groups):
        headers, payload = cluster_wire.encode(wire, group)
        out.append((cluster_wire.subject_for(SETTINGS.prefix, group), headers, payload))
    return out


async def test_one_copy_per_event_and_a_new_holder_continues_after_the_position() -> None:
    async with pg_pool() as pool:
        await pool.execute(
            "INSERT INTO federation_lease (name, holder, epoch, expires_at, acquired_at)"
            " VALUES ($1, 'n1', 1, now() + interval '1 hour', now())",
            LEASE,
        )
        box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=1)
        feed, link, _audit = holder(pool, box)
        link.feed_start(0)  # a first start on an empty stream
        seq = 0
        stream: list[tuple[int, str, dict[str, str], bytes]] = []
        for n, (uid, label) in enumerate(
            [("m-1", REL_BOTH), ("m-canary", USA_ONLY), ("m-2", REL_BOTH), ("m-3", REL_BOTH)]
        ):
            for subject, headers, payload in copies(uid, label, n):
                seq += 1
                stream.append((seq, subject, headers, payload))
        # The old holder reads the first two events (4 messages), commits, and dies.
        delivered = sum(feed.handle(s, h, p, q) for q, s, h, p in stream[:4])
        assert delivered == 1  # m-1 once (its second copy skipped); the canary refused
        link.feed_mark(4)
        await box.sync()
        # It also read m-2's first copy, but died before anything about it was committed.
        feed.handle(stream[4][1], stream[4][2], stream[4][3], stream[4][0])
        box.close()  # the crash: its writer stops, nothing more is committed
        link.flush()
        assert box.pending_uids() == ["m-1", "m-2"] and box.unsynced

        # The new holder loads the outbox: m-1 is there, the position is 4.
        await pool.execute("UPDATE federation_lease SET holder = 'n2', epoch = 2")
        new_box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=2)
        assert new_box.stream_seq == 4 and new_box.pending_uids() == ["m-1"]
        feed2, link2, _ = holder(pool, new_box)
        assert feed2.position == 4
        for q, s, h, p in stream:  # the consumer may deliver from before the position
            feed2.handle(s, h, p, q)
        link2.feed_mark(seq)
        await new_box.sync()
        again = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=2)
        assert again.pending_uids() == ["m-1", "m-2", "m-3"]  # no gap, nothing twice
        assert again.stream_seq == seq
        for b in (box, new_box, again):
            await b.aclose()


async def test_releases_not_saved_keep_the_position_before_them_for_the_next_holder() -> None:
    """A flush whose audit write failed released nothing: the stored position stays before
    that message (feed_mark raises, which stops the links), nothing read after it is queued,
    and the next holder reads them all again."""
    async with pg_pool() as pool:
        await pool.execute(
            "INSERT INTO federation_lease (name, holder, epoch, expires_at, acquired_at)"
            " VALUES ($1, 'n1', 1, now() + interval '1 hour', now())",
            LEASE,
        )
        box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=1)
        feed, link, audit = holder(pool, box)
        link.feed_start(0)
        stream: list[tuple[int, str, dict[str, str], bytes]] = []
        for n, uid in enumerate(["m-1", "m-2", "m-3"]):
            for subject, headers, payload in copies(uid, REL_BOTH, n):
                stream.append((len(stream) + 1, subject, headers, payload))
        for q, s, h, p in stream[:2]:
            feed.handle(s, h, p, q)
        feed._mark()
        assert box.stream_seq == 2
        audit.fail = True  # m-2's releases cannot be recorded, so are not made
        for q, s, h, p in stream[2:4]:
            feed.handle(s, h, p, q)
        with pytest.raises(StorageError, match="stream message 3 not saved"):
            feed._mark()
        audit.fail = False
        for q, s, h, p in stream[4:]:
            feed.handle(s, h, p, q)
        with pytest.raises(StorageError):
            feed._mark()
        assert box.stream_seq == 2 and box.pending_uids() == ["m-1"]
        await box.sync()
        await box.aclose()

        await pool.execute("UPDATE federation_lease SET holder = 'n2', epoch = 2")
        new_box = await PgOutbox.open(pool, "ukr", lease=LEASE, epoch=2)
        assert new_box.stream_seq == 2
        feed2, _link2, _ = holder(pool, new_box)
        for q, s, h, p in stream:
            feed2.handle(s, h, p, q)
        feed2._mark()
        assert new_box.pending_uids() == ["m-1", "m-2", "m-3"] and new_box.stream_seq == 6
        await new_box.sync()
        await new_box.aclose()
