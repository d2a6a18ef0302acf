"""The latest state of a cluster node: its own table, mirrored from a JetStream key-value bucket
that every node writes the events it accepted into (docs/deployment.md, "The latest state").

Why: a node receives from the bus only the groups its own clients read (interest-based fan-out,
``cluster/bus.py``), so its own table alone would not know a unit of a group nobody on that node
read before; a client connecting there in that group would be replayed nothing of it. With the
bucket, every node holds every uid's latest state, and replay, the picture and REST answer the
same on every node.

- The router reads and writes the node's table synchronously (:class:`SharedLatestState` is a
  :class:`~liaison.latest.LatestState`): nothing on the accept path waits for NATS.
- A change this node made (an event it accepted, a delete, a relabel) is queued for the bucket
  (one value per uid: only the newest change of a uid waits, at most ``MAX_PENDING_WRITES``
  uids) and written by :meth:`SharedLatestState.run`, in order, tried again while NATS is away.
  The event is rendered for the bucket when it is written, not when accepted: a uid reported
  again meanwhile is rendered once.
- Every value in the bucket, its own included, is applied to the table as it arrives (a watch
  of the whole bucket; at start, everything it holds before the node serves): a report older
  than the one held never replaces it; a deleted key forgets its uid. The bucket and the bus are
  two streams: another node's report may reach the table from the bucket before this node reads
  the event from the bus. Such an entry is marked ``early``; the router remembers who was
  replayed it and does not deliver them the same report again when it arrives live. A value
  that does not decode, whose label cannot be read (deny) or whose event does not parse is
  refused and counted, never applied.
- Changes that came from another node (the bus) or from the store at start are kept in the
  table only (``shared=False``): their own node wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from liaison.cluster.bus import RETRY_S, STREAM_READY_S, ClusterSettings, NatsBus, read_label
from liaison.latest.base import LatestEntry, LatestState
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.labels import Policy
from liaison.protocol import cluster_wire, cot_xml
from liaison.protocol.cluster_wire import LatestValue, WireError

log = logging.getLogger(__name__)

# Uids whose newest change may wait for the bucket; past it the oldest waiting change is dropped
# (counted): the event itself was accepted, stored and delivered, only other nodes' replay of
# that uid misses it until its next report.
MAX_PENDING_WRITES = 10_000
# Changes written to the bucket at once.
WRITE_BATCH = 256
# Seconds the start waits for the bucket's current values before serving without the rest
# (they keep arriving on the watch).
LOAD_TIMEOUT_S = 10.0
# Seconds a watch waits for its next value before it looks again (bounded waits only).
WATCH_POLL_S = 5.0

_DELETE = None  # a waiting change that is a delete
_GONE = object()  # no change waits for a uid


async def _open_bucket(js: Any, s: ClusterSettings) -> Any:
    """The bucket, made when no node has made it yet. A JetStream cluster that has just formed
    may not answer, or not place the bucket yet: tried again every ``RETRY_S`` for at most
    ``STREAM_READY_S`` (as the bus does for its streams), then the last error raised."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import (
        BadRequestError,
        BucketNotFoundError,
        NotFoundError,
        ServiceUnavailableError,
    )

    config = KeyValueConfig(
        bucket=bucket_name(s),
        history=1,
        ttl=s.max_age_s,
        max_value_size=cluster_wire.MAX_LATEST_VALUE,
        storage=StorageType.FILE,
        replicas=s.replicas,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_READY_S
    for _ in range(int(STREAM_READY_S / RETRY_S) + 1):  # bounded also by the deadline
        try:
            try:
                return await js.key_value(config.bucket)
            except BucketNotFoundError:
                return await js.create_key_value(config)
        except (BadRequestError, NotFoundError, ServiceUnavailableError, NatsTimeoutError) as exc:
            # BadRequest: another node made it meanwhile (with other settings): open it next.
            if loop.time() + RETRY_S >= deadline:
                raise
            log.warning("cluster latest state: bucket %s not ready (%r)", config.bucket, exc)
            await asyncio.sleep(RETRY_S)
    raise TimeoutError(f"bucket {config.bucket} not ready within {STREAM_READY_S} s")


def bucket_name(settings: ClusterSettings) -> str:
    """The bucket: ``<cluster.stream>_LATEST`` (a KV bucket name allows ``[A-Za-z0-9_-]``)."""
    return f"{settings.stream}_LATEST"


class SharedLatestState:
    """:class:`~liaison.latest.LatestState` of a cluster node, and the lifetimes Component that
    keeps it in step with the bucket."""

    name = "cluster-latest"

    def __init__(
        self,
        settings: ClusterSettings,
        policy: Policy | None,
        metrics: Metrics,
        table: LatestState,
    ) -> None:
        self.settings = settings
        self._policy = policy
        # This node's own table, which the bucket's values and this node's changes update.
        self._table = table
        # uid -> the entry to write, or _DELETE; insertion order is the order to write. Encoded
        # (the event rendered) only when written: a uid changed again meanwhile is rendered once.
        self._pending: dict[str, LatestEntry | None] = {}
        self._wake = asyncio.Event()
        self._bus: NatsBus | None = None
        self._kv: Any = None
        self._watcher: Any = None
        self.loaded = 0  # values applied while starting
        m = metrics
        self.m_written = m.counter(
            "liaison_cluster_latest_written_total",
            "Latest-state changes this node wrote to the cluster's bucket",
        )
        self.m_applied = m.counter(
            "liaison_cluster_latest_applied_total",
            "Latest-state values read from the cluster's bucket and applied here",
        )
        self.m_dropped = m.counter(
            "liaison_cluster_latest_dropped_total",
            "Latest-state values or changes not applied or not written",
            "reason",
        )
        self.m_errors = m.counter(
            "liaison_cluster_latest_errors_total",
            "Writes to the cluster's latest-state bucket that failed (tried again)",
        )
        m.gauge(
            "liaison_cluster_latest_pending",
            "Latest-state changes waiting for the cluster's bucket",
            lambda: len(self._pending),
        )

    def use_bus(self, bus: NatsBus) -> None:
        """The bus whose NATS connection the bucket is reached through (bound before this)."""
        self._bus = bus

    # --- LatestState (synchronous, never waits) ---------------------------------------------

    def get(self, uid: str) -> LatestEntry | None:
        return self._table.get(uid)

    def put(self, entry: LatestEntry, *, shared: bool = True) -> bool:
        kept = self._table.put(entry)
        if kept and shared:
            self._queue(entry.event.uid, entry)
        return kept

    def encode(self, entry: LatestEntry) -> bytes:
        """The bucket's value of ``entry``, as this node writes it."""
        label = entry.label
        value = LatestValue(
            node=self.settings.node,
            sender_groups=entry.sender_groups,
            label_json=labels.label_to_json(label) if label is not None else None,
            xml=cot_xml.render_xml(entry.event),
            origin=entry.event.origin,
        )
        return cluster_wire.encode_latest(value)

    def remove(self, uid: str, *, shared: bool = True) -> LatestEntry | None:
        held = self._table.remove(uid)
        if shared:
            self._queue(uid, _DELETE)
        return held

    def entries(self) -> Iterator[LatestEntry]:
        return self._table.entries()

    def expire(self, now_ms: int) -> int:
        # Stale entries leave each node's table on its own sweep; in the bucket they age out
        # with its TTL (cluster.max_age_s) and are dropped at the next sweep wherever read.
        return self._table.expire(now_ms)

    def __len__(self) -> int:
        return len(self._table)

    def _queue(self, uid: str, value: LatestEntry | None) -> None:
        pending = self._pending
        pending.pop(uid, None)  # only the newest change of a uid waits, at the end
        if len(pending) >= MAX_PENDING_WRITES:
            oldest = next(iter(pending))
            del pending[oldest]
            self.m_dropped.inc("queue_full")
            log.warning("cluster latest state: queue full, change of %s not shared", oldest)
        pending[uid] = value
        self._wake.set()

    # --- lifetime ---------------------------------------------------------------------------

    async def bind(self) -> None:
        """Open (or make) the bucket and apply everything it holds before the node serves."""
        if self._bus is None:
            raise RuntimeError("the cluster latest state needs the bus")
        js = self._bus.jetstream  # raises while the bus is not bound
        s = self.settings
        self._kv = await _open_bucket(js, s)
        self._watcher = await self._kv.watchall()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_TIMEOUT_S
        # The watch first delivers every current value, then None (nats-py's "initial values
        # done" marker), then changes as they are made.
        while (left := deadline - loop.time()) > 0:
            try:
                entry = await self._watcher.updates(timeout=left)
            except TimeoutError:
                break
            if entry is None:
                break
            self.loaded += self.apply(entry.key, entry.value, entry.operation)
        log.info("cluster latest state: %d values from bucket %s", self.loaded, bucket_name(s))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._writer(), name="cluster-latest-writer")
            tg.create_task(self._watch(), name="cluster-latest-watch")

    async def close(self) -> None:
        # One last attempt at what still waits (bounded): after this node stops nobody writes
        # it; the events themselves were stored and delivered, only other nodes' replay of
        # those uids would miss them until their next report.
        if self._pending and self._kv is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write_batch(), timeout=RETRY_S * 4)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()

    # --- writing ----------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not await self._write_batch():
                await asyncio.sleep(RETRY_S)

    async def _write_batch(self) -> bool:
        """Write up to ``WRITE_BATCH`` waiting changes at once (each uid has one, so their order
        does not matter); False when one failed (it waits for the next attempt)."""
        batch: list[tuple[str, LatestEntry | None, bytes | None]] = []
        for uid, value in list(self._pending.items())[:WRITE_BATCH]:
            if value is _DELETE:
                batch.append((uid, value, None))
                continue
            try:
                batch.append((uid, value, self.encode(value)))
            except Exception as exc:  # an entry that cannot be written is dropped, never retried
                del self._pending[uid]
                self.m_dropped.inc("unwritable")
                log.warning("cluster latest state: change of %s not shared: %r", uid, exc)
        results = await asyncio.gather(
            *(self._write_one(uid, data) for uid, _, data in batch), return_exceptions=True
        )
        failed: BaseException | None = None
        for (uid, value, _), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failed = failed or result
                continue
            if self._pending.get(uid, _GONE) is value:  # not changed again meanwhile
                del self._pending[uid]
            self.m_written.inc()
        if failed is not None:
            self.m_errors.inc()
            log.warning("cluster latest state: write not acknowledged (%r); trying again", failed)
            return False
        return True

    async def _write_one(self, uid: str, data: bytes | None) -> None:
        key = cluster_wire.latest_key(uid)
        if data is None:
            await self._kv.delete(key)
        else:
            await self._kv.put(key, data)

    # --- reading ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        watcher = self._watcher
        while True:
            try:
                entry = await watcher.updates(timeout=WATCH_POLL_S)
            except TimeoutError:
                continue
            if entry is not None:
                self.apply(entry.key, entry.value, entry.operation)

    def apply(self, key: str, value: bytes | None, operation: str | None) -> int:
        """Apply one value of the bucket to the table; 1 when applied, 0 when refused."""
        try:
            uid = cluster_wire.uid_of_key(key)
        except WireError as exc:
            return self._refuse("unreadable", exc)
        if operation in ("DEL", "PURGE"):
            self._table.remove(uid)
            self.m_applied.inc()
            return 1
        try:
            data = cluster_wire.decode_latest(value or b"")
        except WireError as exc:
            return self._refuse("unreadable", exc)
        readable, label = read_label(self._policy, data.label_json)
        if not readable:
            return self._refuse("label", f"{uid}: label refused")
        try:
            event = cot_xml.parse_event(data.xml)
        except Exception as exc:  # any parse failure of hostile bytes: refused, counted
            return self._refuse("unreadable", exc)
        if event.uid != uid:
            return self._refuse("unreadable", f"key {uid!r} holds event {event.uid!r}")
        if data.origin is not None:
            event = dataclasses.replace(event, origin=data.origin)
        held = self._table.get(uid)
        if held is not None and not held.early and held.event.time == event.time:
            # The same report, already here from the bus (or this node's own): kept as it is.
            self.m_applied.inc()
            return 1
        # Another node's report not yet read from the bus here: it may still arrive live, and a
        # client replayed it meanwhile must not get it twice (Router.distribute_remote).
        early = data.node != self.settings.node
        self._table.put(LatestEntry(event, data.sender_groups, label, early=early))
        self.m_applied.inc()
        return 1

    def _refuse(self, reason: str, why: object) -> int:
        self.m_dropped.inc(reason)
        log.warning("cluster latest state: value refused (%s): %s", reason, why)
        return 0
