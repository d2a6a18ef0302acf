"""What a cluster's partner links read: every node's events, from the JetStream stream.

On the node that holds the federation lease (federation/lease.py) the links are not subscribers
of the node's own router (which sees only this node's events and the groups its clients read):
they are the only subscribers of a router of their own, fed by this reader. It reads the
events stream (cluster/bus.py) from one ordered consumer over every group's subject, in stream
order, and distributes each event to the links (``Router.distribute_feed``: the same decision,
audit records and guard as a node-local link). Events this node accepted come through the
stream too, so every event reaches the links the same way whichever node accepted it.

No gap, no duplicate, across a change of holder (docs/architecture.md, "Partner links in a
cluster"):

* Each outbox stores ``stream_seq``, the stream sequence its link has read up to, in the same
  transaction as the releases read up to it (federation/pg_outbox.py). The new holder's
  consumer starts after the lowest of them; a link skips what is at or below its own position.
  Events accepted anywhere while no node held the lease wait in the stream and are read then.
* An event is published once per group its sender writes into (one stream message each, same
  event id). The reader takes exactly one of the copies: the one on the subject of the
  *first* of the sender's groups (sorted), which the publisher writes first and always writes
  (cluster/bus.py ``_publish_one``). Which copy counts does not depend on the node or on when
  it reads, so an event is never queued twice, whichever holder reads which copies.
* An event read back that the link's own peer sent (its sender is the link's federate) is not
  offered to that link (no echo).

What this cannot recover: an event the stream no longer holds (older than ``cluster.max_age_s``
when the new holder starts, counted in ``liaison_federation_feed_gap_total``), and an event a
node distributed without publishing (its bus queue full, ``liaison_cluster_unshared_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from liaison.cluster.bus import ClusterSettings, RemoteSource, read_label
from liaison.errors import StorageError
from liaison.metrics import Metrics
from liaison.protocol import cluster_wire, cot_xml
from liaison.protocol.cluster_wire import WireError

if TYPE_CHECKING:
    from liaison.federation.link import PeerLink
    from liaison.router import Router

log = logging.getLogger(__name__)

# Stream messages the consumer's subscription may hold unread (NATS flow control then waits).
MAX_PENDING = 10_000
# Messages handled before the links' positions are written even while more wait.
MARK_EVERY = 256
# Seconds between the consumer's heartbeats when idle (a lost consumer is made again from the
# last sequence it delivered, like the bus's).
HEARTBEAT_S = 2.0
# Seconds one wait for the next message lasts (the loop then writes positions and waits again).
IDLE_S = 0.5
# Seconds between checks while the audit log cannot be written (nothing may be released).
AUDIT_WAIT_S = 0.2
# Checks before the links stop (the lease holder gives the lease up; nothing is lost: the
# message is read again from the stored position).
AUDIT_WAITS = 300


class StreamFeed:
    """The links' reader of the events stream on the lease holder."""

    def __init__(
        self,
        *,
        jetstream: Any,
        settings: ClusterSettings,
        router: Router,
        links: Sequence[PeerLink],
        metrics: Metrics,
    ) -> None:
        self._js = jetstream
        self._settings = settings
        self._router = router
        self._links = list(links)
        self._sub: Any = None
        self.position = 0  # the last stream sequence handled
        self.m_read = metrics.counter(
            "liaison_federation_feed_total",
            "Stream messages the lease holder's partner links read, by outcome",
            "outcome",
        )
        self.m_gap = metrics.counter(
            "liaison_federation_feed_gap_total",
            "Stream messages the partner links never read: the stream no longer held them",
        )

    async def start(self) -> int:
        """Subscribe after the lowest position of the links; returns the first sequence read.
        A link that never read the stream (a first start, a new peer) starts at its end."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        info = await self._js.stream_info(self._settings.stream)
        last, first = int(info.state.last_seq), int(info.state.first_seq)
        for link in self._links:
            floor = link.feed_floor()
            if floor < 0:
                link.feed_start(last)  # a first start, a new peer: from now on
            elif floor > last:
                # The stream's sequences are below what this link read: it was made again (an
                # operator deleted it). The old position means nothing here: from its start.
                log.error(
                    "federation feed: stream %s ends at %d, below the position %d of peer %s:"
                    " it was made again; reading it from its first message",
                    self._settings.stream,
                    last,
                    floor,
                    link.peer.name,
                )
                link.feed_start(first - 1)
        start_after = min((link.feed_floor() for link in self._links), default=last)
        if start_after + 1 < first:
            lost = first - start_after - 1
            self.m_gap.inc(amount=lost)
            log.error(
                "federation feed: the stream no longer holds sequences %d..%d (older than"
                " cluster.max_age_s): those events never reach the partners",
                start_after + 1,
                first - 1,
            )
        self.position = start_after
        self._sub = await self._js.subscribe(
            cluster_wire.stream_subjects(self._settings.prefix),
            stream=self._settings.stream,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_S,
            pending_msgs_limit=MAX_PENDING,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_after + 1
            ),
        )
        log.info("federation feed: reading the stream from sequence %d", start_after + 1)
        return start_after + 1

    async def run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeoutError

        assert self._sub is not None, "start() first"
        unmarked = 0
        while True:
            try:
                msg = await self._sub.next_msg(timeout=IDLE_S)
            except NatsTimeoutError:
                if unmarked:
                    self._mark()
                    unmarked = 0
                continue
            seq = int(msg.metadata.sequence.stream)
            # While the audit log cannot be written nothing may be released: wait (bounded
            # per check; the audit keeper retries the log), then go on in order.
            for _ in range(AUDIT_WAITS):
                if not self._router.congested:
                    break
                await asyncio.sleep(AUDIT_WAIT_S)
            else:
                # Stop the links (the lease is released): the message is read again later.
                raise StorageError("the audit log cannot be written: partner links paused")
            self.handle(msg.subject, msg.headers, msg.data, seq)
            unmarked += 1
            if unmarked >= MARK_EVERY or self._sub.pending_msgs == 0:
                self._mark()
                unmarked = 0

    def _mark(self) -> None:
        """Note the position in every link; a link whose releases were not saved raises (after
        the others are marked), which stops the links (federation/leased.py)."""
        failed: StorageError | None = None
        for link in self._links:
            try:
                link.feed_mark(self.position)
            except StorageError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def handle(self, subject: str, headers: dict[str, str] | None, data: bytes, seq: int) -> int:
        """Handle the stream message ``seq``; returns the deliveries to links."""
        if seq <= self.position:
            self.m_read.inc("replayed")
            return 0
        self.position = seq
        try:
            wire = cluster_wire.decode(headers, data)
        except WireError as exc:
            self.m_read.inc("unreadable")
            log.warning("federation feed: stream message %d refused: %s", seq, exc)
            return 0
        groups = sorted(wire.sender.in_groups)
        if not groups or subject != cluster_wire.subject_for(self._settings.prefix, groups[0]):
            self.m_read.inc("copy")  # another group's copy of an event read on its first
            return 0
        readable, label = read_label(self._router.policy, wire.label_json)
        if not readable:
            self.m_read.inc("label")
            log.warning("federation feed: %s from node %s: label refused", wire.msg_id, wire.node)
            return 0
        try:
            event = cot_xml.parse_event(wire.xml)
        except Exception as exc:  # any parse failure of hostile bytes: refused, counted
            self.m_read.inc("unreadable")
            log.warning("federation feed: %s: event refused: %s", wire.msg_id, exc)
            return 0
        self.m_read.inc("event")
        for link in self._links:
            link.feed_next(seq, wire.sender.name)
        try:
            return self._router.distribute_feed(event, label, RemoteSource(wire.sender))
        finally:
            for link in self._links:
                link.feed_next(None)
