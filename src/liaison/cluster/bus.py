"""The cluster bus: several ``liaison serve`` nodes share one picture through NATS JetStream.

How an event travels (docs/deployment.md, "Several nodes"):

1. A node's router accepts an event (ingest rules, ``ingest`` record, its own store) and
   :meth:`NatsBus.submit` queues it (bounded by ``MAX_PENDING``).
2. The publisher publishes it to JetStream, once per group its sender writes into
   (``protocol/cluster_wire.py`` names the subjects), and waits for JetStream's acknowledgement:
   the stream has stored it. Only then does this node add it to its latest state and
   distribute it to its own subscribers (``Router.distribute_acknowledged``). An event whose
   publish fails is tried again (``RETRY_S``), in order; while events wait past
   ``CONGESTED_AT`` the router reports congestion and readers pause.
3. Every other node that has a subscriber reading one of those groups receives it on a core
   NATS subscription of that group's subject (interest-based: a node subscribes only to the
   groups its own subscribers read), drops a second copy (same message id on another group's
   subject), checks its label (one that cannot be read means deny) and hands it to
   ``Router.distribute_remote``: its latest state, then its subscribers, each decided and
   recorded by that node.

Each node distributes an event exactly once: its own events on the acknowledgement, the others'
events on receipt; it never distributes its own events received from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liaison.errors import ConfigError
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.labels import Label, LabelError, Policy
from liaison.model.principal import Principal
from liaison.protocol import cluster_wire, cot_xml
from liaison.protocol.cluster_wire import BusEvent, SeenIds, WireError

if TYPE_CHECKING:
    from liaison.router import AcceptedEvent, Router

log = logging.getLogger(__name__)

# Accepted events that may wait for the bus; past it an event is distributed on this node only
# (counted in liaison_cluster_unshared_total), never dropped.
MAX_PENDING = 10_000
# Waiting events at which the router reports congestion (readers pause until it drains).
CONGESTED_AT = MAX_PENDING // 2
# Events published at once, then acknowledged together (a window: order is kept per batch).
PUBLISH_WINDOW = 256
# Seconds JetStream has to acknowledge a publish before it is tried again.
PUBLISH_TIMEOUT_S = 5.0
# Seconds between attempts while the bus cannot take an event.
RETRY_S = 0.5
# Seconds to connect to NATS at start.
CONNECT_TIMEOUT_S = 10.0
# Seconds a closing node spends publishing what still waits.
DRAIN_S = 5.0
# Seconds between a consumer's heartbeats when idle: how soon a lost consumer is noticed and
# made again from its last sequence.
CONSUMER_HEARTBEAT_S = 2.0
# Seconds between checks that each group's consumer keeps up with the stream; one behind at two
# checks in a row, without delivering anything between them, is made again.
STALL_CHECK_S = 2.0
# Seconds JetStream remembers message ids to drop a publish made twice (a retry after a lost ack).
DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The ``[cluster]`` section (docs/configuration.md)."""

    servers: tuple[str, ...]
    node: str
    prefix: str = "liaison"
    stream: str = "LIAISON_EVENTS"
    replicas: int = 1
    max_age_s: float = 3600.0


@dataclass(slots=True)
class _Waiting:
    """An accepted event waiting for the bus: its bus message, its number, whether a publish of
    it was tried before (a duplicate is then possibly this node's own earlier publish)."""

    accepted: AcceptedEvent
    wire: BusEvent
    seq: int
    retried: bool = False


@dataclass(frozen=True, slots=True)
class RemoteSource:
    """The sender of an event another node accepted (a router ``Source``, never a subscriber)."""

    principal: Principal


class NatsBus:
    """The router's :class:`~liaison.router.ClusterBus` on NATS JetStream; a lifetimes Component."""

    name = "cluster-bus"

    def __init__(self, settings: ClusterSettings, router: Router, metrics: Metrics) -> None:
        self.settings = settings
        self._router = router
        # Accepted events waiting for the bus, each with its bus message (made once).
        self._pending: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._interest: dict[str, int] = {}  # group -> subscribers reading it
        self._subscribed: dict[str, Any] = {}  # group -> NATS subscription
        # group -> stream sequence of the last event its consumer delivered
        self._delivered: dict[str, int] = {}
        # group -> the delivered sequence at which the watchdog last found it behind
        self._stalled: dict[str, int] = {}
        # group -> the sequence a consumer the watchdog could not make again resumes after
        self._resume: dict[str, int] = {}
        self._interest_changed = asyncio.Event()
        # Held by whoever changes the subscriptions (the subscriber, the watchdog): one change at
        # a time, so a group is never subscribed twice (the second never unsubscribed).
        self._subscribing = asyncio.Lock()
        self._seen = SeenIds()
        self._seq = 0
        # The highest message number (``_seq``) the bus acknowledged: events are acknowledged
        # and distributed in the order they were submitted, so every number up to it is in the
        # stream. ``published`` waits on it (the partner links' acknowledgement, link.py).
        self._acked = 0
        self.unshared = 0  # events distributed here only (the queue was full), as counted
        self._progress = asyncio.Event()
        # Message ids are NODE:BOOT:SEQ, so a restarted node's ids never repeat old ones.
        self._boot = f"{time.time_ns():x}"
        self._nc: Any = None
        self._js: Any = None
        m = metrics
        self.m_published = m.counter(
            "liaison_cluster_published_total", "Events this node published to the bus (acked)"
        )
        self.m_received = m.counter(
            "liaison_cluster_received_total",
            "Bus messages received from other nodes, distributed here",
        )
        self.m_dropped = m.counter(
            "liaison_cluster_dropped_total",
            "Bus messages not distributed here (duplicate, own, unreadable, label)",
            "reason",
        )
        self.m_errors = m.counter(
            "liaison_cluster_publish_errors_total", "Publishes the bus did not acknowledge"
        )
        self.m_unshared = m.counter(
            "liaison_cluster_unshared_total",
            "Events distributed on this node only because the bus queue was full",
        )
        self.m_subscribe_errors = m.counter(
            "liaison_cluster_subscribe_errors_total",
            "Group subscriptions NATS did not make (tried again)",
        )
        self.m_consumer_resets = m.counter(
            "liaison_cluster_consumer_resets_total",
            "Group consumers made again because they fell behind the stream",
        )
        self.m_reconnects = m.counter(
            "liaison_cluster_reconnects_total", "Times this node reconnected to NATS"
        )
        m.gauge("liaison_cluster_pending", "Accepted events waiting for the bus", self.pending)
        m.gauge(
            "liaison_cluster_subscriptions",
            "Group subjects this node subscribes to",
            lambda: len(self._subscribed),
        )

    @property
    def client(self) -> Any:
        """The NATS connection (after ``bind``), shared by the access notices (access.py)."""
        if self._nc is None:
            raise RuntimeError("the cluster bus is not bound")
        return self._nc

    @property
    def jetstream(self) -> Any:
        """The JetStream context once bound (the latest-state bucket and the access notices
        share the connection)."""
        if self._js is None:
            raise RuntimeError("the cluster bus is not bound")
        return self._js

    # --- the router's side (synchronous) ----------------------------------------------------

    def pending(self) -> int:
        return len(self._pending)

    @property
    def congested(self) -> bool:
        return len(self._pending) >= CONGESTED_AT

    def submit(self, accepted: AcceptedEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.unshared += 1
            self.m_unshared.inc()
            log.warning(
                "cluster bus queue full: event %s distributed here only", accepted.event.uid
            )
            self._router.distribute_acknowledged(accepted)
            return
        self._pending.append(_Waiting(accepted, self._wire(accepted), self._seq))
        self._wake.set()

    def mark(self) -> int:
        """The message number of the last event submitted so far (0: none yet)."""
        return self._seq

    async def published(self, mark: int) -> None:
        """Return once JetStream acknowledged every event submitted up to ``mark``
        (:meth:`mark`). It waits as long as the bus cannot take them: callers bound it."""
        while self._acked < mark:
            progress = self._progress
            await progress.wait()

    def interest(self, groups: frozenset[str], delta: int) -> None:
        for g in groups:
            n = self._interest.get(g, 0) + delta
            if n > 0:
                self._interest[g] = n
            else:
                self._interest.pop(g, None)
        self._interest_changed.set()

    # --- lifetime ---------------------------------------------------------------------------

    async def bind(self) -> None:
        try:
            import nats
            from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(
                "cluster.nats", "the cluster bus needs nats-py: pip install 'liaison[cluster]'"
            ) from exc

        s = self.settings
        self._nc = await nats.connect(
            servers=list(s.servers),
            name=f"liaison-{s.node}",
            connect_timeout=CONNECT_TIMEOUT_S,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RETRY_S,
            allow_reconnect=True,
            dont_randomize=True,  # in the order given: an operator lists the nearest first
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        config = StreamConfig(
            name=s.stream,
            subjects=[cluster_wire.stream_subjects(s.prefix)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=s.max_age_s,
            num_replicas=s.replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await ensure_stream(self._js, config)
        except BaseException:
            # A failed bind leaves nothing open (lifetimes.Component): close is not called.
            nc, self._nc, self._js = self._nc, None, None
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        log.info("cluster bus: node %s on %s, stream %s", s.node, ", ".join(s.servers), s.stream)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publisher(), name="cluster-publisher")
            tg.create_task(self._subscriber(), name="cluster-subscriptions")
            tg.create_task(self._watchdog(), name="cluster-consumer-watchdog")

    async def close(self) -> None:
        nc = self._nc
        if nc is None:
            return
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while self._pending and asyncio.get_running_loop().time() < deadline:
            if not await self._publish_batch():
                await asyncio.sleep(RETRY_S / 5)
        with contextlib.suppress(Exception):
            await nc.drain()
        with contextlib.suppress(Exception):
            await nc.close()
        self._nc = None

    # --- publishing -------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not await self._publish_batch():
                await asyncio.sleep(RETRY_S)

    async def _publish_batch(self) -> bool:
        """Publish up to ``PUBLISH_WINDOW`` waiting events; distribute those acknowledged in
        order. False when the first of them could not be published (tried again later)."""
        batch = [self._pending[i] for i in range(min(PUBLISH_WINDOW, len(self._pending)))]
        results = await asyncio.gather(
            *(self._publish_one(w.wire) for w in batch), return_exceptions=True
        )
        done = 0
        for ok in results:
            if not isinstance(ok, frozenset):
                break
            done += 1
        for duplicates in results[:done]:
            assert isinstance(duplicates, frozenset)
            waiting = self._pending.popleft()
            self.m_published.inc()
            self._acked = waiting.seq
            if duplicates and waiting.wire.dedup is not None and not waiting.retried:
                # Another node published this partner's event first (a holder that died before
                # acknowledging it), on the subjects of ``duplicates``: every node reading those
                # groups, this one included, had it from that node. Whoever here reads only the
                # other groups (the holder died before publishing on them) still gets it.
                if duplicates == waiting.wire.sender.in_groups:
                    self.m_dropped.inc("republished")
                    continue
                self._router.distribute_acknowledged(waiting.accepted, skip_groups=duplicates)
                continue
            self._router.distribute_acknowledged(waiting.accepted)
        for waiting in batch[done:]:
            waiting.retried = True
        if done:
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
        if done < len(batch):
            self.m_errors.inc()
            first = next(r for r in results if not isinstance(r, bool))
            log.warning("cluster bus: publish not acknowledged (%r); trying again", first)
        return done > 0 or not batch

    async def _publish_one(self, wire: BusEvent) -> frozenset[str]:
        """Publish one event on the subject of each group its sender writes into; returns the
        groups whose copy JetStream already had (duplicates). A retry sends the same message
        id, which JetStream drops within ``DUPLICATE_WINDOW_S``."""
        duplicates: set[str] = set()
        for group in sorted(wire.sender.in_groups):
            headers, payload = cluster_wire.encode(wire, group)
            subject = cluster_wire.subject_for(self.settings.prefix, group)
            ack = await self._js.publish(
                subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT_S
            )
            if getattr(ack, "duplicate", False):
                duplicates.add(group)
        return frozenset(duplicates)

    def _wire(self, accepted: AcceptedEvent) -> BusEvent:
        """The bus message of ``accepted``, with this node's next message id."""
        self._seq += 1
        label = accepted.label
        return BusEvent(
            msg_id=f"{self.settings.node}:{self._boot}:{self._seq}",
            node=self.settings.node,
            sender=accepted.source.principal,
            label_json=labels.label_to_json(label) if label is not None else None,
            xml=accepted.out.xml(),
            dedup=getattr(accepted.source, "bus_dedup", None),
        )

    # --- receiving --------------------------------------------------------------------------

    async def _subscriber(self) -> None:
        """Keep one subscription per group some subscriber here reads, and no other. A change
        NATS does not make (a timeout, a server away) is tried again after ``RETRY_S``: the
        node keeps serving meanwhile."""
        while True:
            self._interest_changed.clear()
            wanted = set(self._interest)
            try:
                async with self._subscribing:
                    for group in sorted(set(self._subscribed) - wanted):
                        await self._unsubscribe(group)
                    for group in sorted(wanted - set(self._subscribed)):
                        # A consumer the watchdog could not make again resumes where it stopped.
                        await self._subscribe(group, self._resume.get(group))
            except Exception as exc:  # nats-py raises its own errors and TimeoutError
                self.m_subscribe_errors.inc()
                log.warning("cluster bus: subscribing failed (%r); trying again", exc)
                await asyncio.sleep(RETRY_S)
                continue
            await self._interest_changed.wait()

    async def _subscribe(self, group: str, after: int | None) -> None:
        """An ordered push consumer of the stream (NATS JetStream "Ordered Consumer") on
        ``group``'s subject, in stream order, from the event after stream sequence ``after``
        (None: the stream's last, so from the next event on)."""
        from nats.js.api import ConsumerConfig, DeliverPolicy  # bind() imported nats-py

        subject = cluster_wire.subject_for(self.settings.prefix, group)
        if after is None:
            after = await self._last_seq(subject)
        self._delivered[group] = after
        self._stalled.pop(group, None)

        async def on_msg(msg: Any) -> None:
            seq = msg.metadata.sequence.stream
            if seq > self._delivered.get(group, 0):
                self._delivered[group] = seq
            self.receive(msg.headers, msg.data)

        sub = await self._js.subscribe(
            subject,
            cb=on_msg,
            stream=self.settings.stream,
            ordered_consumer=True,
            idle_heartbeat=CONSUMER_HEARTBEAT_S,
            config=ConsumerConfig(opt_start_seq=after + 1),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            pending_msgs_limit=MAX_PENDING,
        )
        self._subscribed[group] = sub
        self._resume.pop(group, None)

    async def _unsubscribe(self, group: str) -> None:
        sub = self._subscribed.pop(group)
        self._delivered.pop(group, None)
        self._resume.pop(group, None)
        self._stalled.pop(group, None)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _last_seq(self, subject: str) -> int:
        """The stream sequence of the last event on ``subject`` (0: none)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_last_msg(self.settings.stream, subject)
        except NotFoundError:
            return 0
        return int(msg.seq)

    async def _watchdog(self) -> None:
        """Make again, from the last event it delivered, a group's consumer that has fallen
        silent while the stream holds newer events of that group. nats-py remakes an ordered
        consumer when its heartbeats stop, but one that lives on (a NATS server of the
        cluster killed, its stream leader moved) may deliver nothing more while its heartbeats
        still arrive: found by tests/integration/test_cluster_failover.py. A copy delivered
        twice is dropped by its message id (``SeenIds``)."""
        while True:
            await asyncio.sleep(STALL_CHECK_S)
            for group in sorted(self._subscribed):
                subject = cluster_wire.subject_for(self.settings.prefix, group)
                try:
                    last = await self._last_seq(subject)
                except Exception as exc:  # NATS away or no stream leader: next round
                    log.debug("cluster bus: stall check of %s failed (%r)", group, exc)
                    continue
                delivered = self._delivered.get(group)
                if delivered is None or last <= delivered:
                    self._stalled.pop(group, None)
                    continue
                if self._stalled.get(group) != delivered:
                    self._stalled[group] = delivered  # behind: stalled if still so next round
                    continue
                self.m_consumer_resets.inc()
                log.warning(
                    "cluster bus: consumer of %s stalled at %d (stream at %d); made again",
                    group,
                    delivered,
                    last,
                )
                async with self._subscribing:
                    old = self._subscribed.pop(group, None)
                    if old is None:  # unsubscribed meanwhile (nobody here reads it now)
                        continue
                    try:
                        with contextlib.suppress(Exception):
                            await old.unsubscribe()
                        await self._subscribe(group, delivered)
                    except Exception as exc:
                        self.m_subscribe_errors.inc()
                        log.warning("cluster bus: remaking %s failed (%r)", group, exc)
                        self._resume[group] = delivered
                        self._interest_changed.set()  # the subscriber makes it again from there

    def receive(self, headers: dict[str, str] | None, payload: bytes) -> int:
        """Handle one bus message; returns the deliveries made here."""
        try:
            wire = cluster_wire.decode(headers, payload)
        except WireError as exc:
            self.m_dropped.inc("unreadable")
            log.warning("cluster bus: message refused: %s", exc)
            return 0
        if wire.node == self.settings.node:
            self.m_dropped.inc("own")
            return 0
        if not self._seen.first_time(wire.msg_id):
            self.m_dropped.inc("duplicate")
            return 0
        readable, label = self._label(wire)
        if not readable:
            self.m_dropped.inc("label")
            log.warning("cluster bus: %s from node %s: label refused", wire.msg_id, wire.node)
            return 0
        try:
            event: Event = cot_xml.parse_event(wire.xml)
        except Exception as exc:  # any parse failure of hostile bytes: refused, counted
            self.m_dropped.inc("unreadable")
            log.warning(
                "cluster bus: %s from node %s: event refused: %s", wire.msg_id, wire.node, exc
            )
            return 0
        self.m_received.inc()
        return self._router.distribute_remote(event, label, RemoteSource(wire.sender))

    def _label(self, wire: BusEvent) -> tuple[bool, Label | None]:
        return read_label(self._router.policy, wire.label_json)

    # --- connection state -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        log.warning("cluster bus: %s", exc)

    async def _on_disconnected(self) -> None:
        log.warning("cluster bus: disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self.m_reconnects.inc()
        url = getattr(self._nc, "connected_url", None)
        log.info("cluster bus: reconnected to NATS at %s", url.netloc if url else "?")


def read_label(policy: Policy | None, label_json: str | None) -> tuple[bool, Label | None]:
    """Whether a label another node wrote can be read here, and the label (None: unlabelled).
    A label that cannot be read means deny."""
    if label_json is None:
        return True, None
    if policy is None:
        return False, None  # labelled on a node with a policy, here none: config differs
    try:
        return True, labels.label_from_json(policy, label_json)
    except LabelError:
        return False, None


# Seconds a starting node keeps trying to make or update a stream that NATS answers neither
# exists nor can be made yet, or does not answer about (a JetStream cluster that has just formed,
# electing its leaders and placing replicas); tried again RETRY_S after each failure.
STREAM_READY_S = 30.0


async def ensure_stream(js: Any, config: Any) -> Any:
    """Make the stream of ``config``, or update it when it exists with other settings (another
    node made it, or an older configuration); returns its ``StreamInfo``. A just-formed
    JetStream cluster may refuse the first (it cannot place the replicas yet), then not know the
    stream to update, or not answer in time: tried again for ``STREAM_READY_S`` at most, then
    the last error raised."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_READY_S
    for _ in range(int(STREAM_READY_S / RETRY_S) + 1):  # bounded also by the deadline
        try:
            try:
                return await js.add_stream(config)
            except BadRequestError:
                return await js.update_stream(config)
        except (NotFoundError, ServiceUnavailableError, NatsTimeoutError) as exc:
            if loop.time() + RETRY_S >= deadline:
                raise
            log.warning("cluster bus: stream %s not ready (%r); trying again", config.name, exc)
            await asyncio.sleep(RETRY_S)
    raise TimeoutError(f"stream {config.name} not ready within {STREAM_READY_S} s")


def default_node_name(hostname: Callable[[], str], port: int | None) -> str:
    """``host-port``, made a valid subject token."""
    raw = f"{hostname()}-{port}" if port else hostname()
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in raw)[:64]
