"""The Store interface every backend implements, its record types, and the router's write queue.

Who calls each Store method, and why it exists:

- ``put_many``: the :class:`StoreWriter` below, on behalf of the router. Every event the router
  accepts is appended to history and becomes its uid's latest state, in batches, off the hot path.
- ``latest``: router replay. A newly connected client (or federation link) is sent the current
  picture: the newest non-stale event of every uid, contacts first, filtered by the router's access
  decision like any other event (TAK Server's latestSA, tak-protocol.md section 1.1).
- ``latest_by_uid``: HTTP queries for one item (``GET /api/cot/xml/{uid}``, tak-protocol.md
  section 4) and the router when it needs the current state of a uid.
- ``history``: HTTP queries and exports (tracks, KML, the web map's time slider).
- ``delete_uid``: the router, when it relays a ``t-x-d-d`` delete: the item leaves the picture
  so it is no longer replayed; its history stays for the audit trail and for retention to age out.
- ``prune``: the retention task, which drops history older than the configured period.
- ``close``: the app, at shutdown, after the writer task has flushed.

Storage knows nothing of CoT parsing: it keeps records (:class:`StoredEvent`) that the router
builds from parsed events, including the exact XML bytes to send again on replay.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from liaison.errors import StorageError

logger = logging.getLogger(__name__)

# Largest number of rows one history query may ask for. A query is answered in one piece from
# memory, so this bounds what one HTTP request can make the server materialise (10,000 rows of
# ~1 KB of XML is ~10 MB); callers page with ``until`` for more.
MAX_QUERY_LIMIT = 10_000

# Events the writer queue holds (queued plus the batch being written) before submit() refuses.
# 10,000 is ten seconds of a busy exercise (1,000 events/s) with the disk stalled, at ~1-2 KB per
# event about 10-20 MB: long enough to ride out a checkpoint or a slow disk, small enough that a
# dead disk cannot grow memory without bound. Past it, events are still relayed live, just not kept.
DEFAULT_MAX_PENDING = 10_000

# Events per put_many call. One transaction per batch amortises the commit, and 500 rows keeps one
# write to a few milliseconds, so a history query queued behind it on the store's thread waits
# little.
DEFAULT_MAX_BATCH = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """One event as the store keeps it: the routing facts, who sent it, and its exact XML."""

    uid: str
    type: str
    how: str
    time: int  # ms since epoch: when the event was generated
    start: int  # ms since epoch: start of validity
    stale: int  # ms since epoch: end of validity
    lat: float
    lon: float
    hae: float
    callsign: str | None
    sender: str  # principal name of who sent it
    sender_groups: frozenset[str]  # the sender's IN groups at ingest (routing needs them at replay)
    received: int  # ms since epoch, server receive time
    xml: bytes  # the event's exact XML bytes (<event>..</event>)
    label: str | None = None  # a label as JSON text (the labels feature adds it), opaque here
    seq: int = 0  # assigned by the store on insert (monotonic per store); 0 before

    @property
    def is_contact(self) -> bool:
        """A position report with a callsign: replayed before everything else.

        Clients draw markers that refer to people (chat, assignments) better when they already know
        those people, so the replay sends contacts first.
        """
        return self.type.startswith("a-") and self.callsign is not None


# The columns a SQL store keeps for each event after ``seq``, in the order of StoredEvent's fields
# (the SQLite and PostgreSQL stores share them; each encodes ``sender_groups`` its own way).
EVENT_COLUMNS = (
    "uid",
    "type",
    "how",
    "time",
    "start",
    "stale",
    "lat",
    "lon",
    "hae",
    "callsign",
    "sender",
    "sender_groups",
    "received",
    "xml",
    "label",
)


def event_row(seq: int, ev: StoredEvent, groups: object) -> tuple[object, ...]:
    """``seq`` and the values of EVENT_COLUMNS for ``ev``, with ``groups`` (the store's encoding
    of ``ev.sender_groups``) in its place."""
    return (
        seq,
        ev.uid,
        ev.type,
        ev.how,
        ev.time,
        ev.start,
        ev.stale,
        ev.lat,
        ev.lon,
        ev.hae,
        ev.callsign,
        ev.sender,
        groups,
        ev.received,
        ev.xml,
        ev.label,
    )


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound).

    Used as ``type >= prefix AND type < bound`` so a type index serves prefix queries; SQLite
    (TEXT) and PostgreSQL (COLLATE "C") compare UTF-8 bytes, which orders like Python's code
    point comparison.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """A history query. Every filter that is set must match; ``None`` means "any".

    ``since`` is inclusive and ``until`` exclusive, both on the event's ``time`` (ms), so pages
    can be chained with ``until`` = the oldest ``time`` seen. ``bbox`` is
    ``(min_lon, min_lat, max_lon, max_lat)``, edges included; a box with ``min_lon > max_lon``
    crosses the antimeridian (a map centred on the Pacific).
    """

    uid: str | None = None
    type_prefix: str | None = None
    callsign: str | None = None
    since: int | None = None  # on `time`, ms, inclusive
    until: int | None = None  # on `time`, ms, exclusive
    bbox: tuple[float, float, float, float] | None = None  # (min_lon, min_lat, max_lon, max_lat)
    limit: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {self.limit}")
        if self.bbox is not None:
            if any(math.isnan(v) for v in self.bbox):
                raise ValueError("bbox must not contain NaN")
            if self.bbox[1] > self.bbox[3]:
                raise ValueError("bbox min_lat is greater than max_lat")

    def matches(self, ev: StoredEvent) -> bool:
        """The reference meaning of the query; SQL backends must select exactly these rows."""
        if self.uid is not None and ev.uid != self.uid:
            return False
        if self.type_prefix is not None and not ev.type.startswith(self.type_prefix):
            return False
        if self.callsign is not None and ev.callsign != self.callsign:
            return False
        if self.since is not None and ev.time < self.since:
            return False
        if self.until is not None and ev.time >= self.until:
            return False
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if not min_lat <= ev.lat <= max_lat:
                return False
            if min_lon <= max_lon:
                return min_lon <= ev.lon <= max_lon
            return ev.lon >= min_lon or ev.lon <= max_lon
        return True


class Store(Protocol):
    """Where events are kept: an append-only history plus the latest event of each uid.

    Every method raises :class:`~liaison.errors.StorageError` when the backend fails, and after
    :meth:`close`. A ``put_many`` that has started is finished even if the calling task is
    cancelled meanwhile (CancelledError propagates once the write is done), so a caller that sees
    cancellation can count its batch as written.
    """

    async def put_many(self, events: Sequence[StoredEvent]) -> None:
        """Append to history and upsert the latest event per uid.

        An event replaces its uid's latest only if it is not older (by ``time``) than the current
        one; events of one batch are applied in order. Each stored copy gets the next ``seq``.
        """
        ...

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        """The latest event of each uid whose ``stale > now_ms``.

        Contacts first, then by ``time`` oldest first (then ``seq``), so a replay rebuilds the
        picture in the order it formed.
        """
        ...

    async def latest_by_uid(self, uid: str) -> StoredEvent | None:
        """The latest event of ``uid``, stale or not; ``None`` if unknown or deleted."""
        ...

    async def history(self, query: Query) -> list[StoredEvent]:
        """Stored events matching ``query``, newest first (by ``time``, then ``seq``)."""
        ...

    async def delete_uid(self, uid: str) -> None:
        """Remove ``uid`` from the latest state (``t-x-d-d``). History is kept."""
        ...

    async def prune(self, older_than_ms: int) -> int:
        """Drop history rows with ``received < older_than_ms``; return how many were dropped.

        Latest entries received before the cutoff that were already stale at the cutoff go too:
        they can never be replayed again, and without this the latest state would keep every uid
        ever seen (each chat message has its own uid).
        """
        ...

    async def close(self) -> None:
        """Finish pending work and release the backend. Idempotent."""
        ...


class StoreWriter:
    """The bounded queue between the router's synchronous hot path and the store.

    The router calls :meth:`submit`, which never waits: when the queue is full the event is
    counted as dropped (it is still relayed live, only not kept) and the router logs. :meth:`run`,
    a task in the app's TaskGroup, drains the queue with ``put_many``. It does not wait to fill a
    batch: while one batch is being written the next accumulates, so batches grow with the load
    and a lone event is written at once (group commit, no timer).

    A batch the store fails to write (StorageError) is counted as dropped and logged once per
    episode of failures; the writer carries on, because live relaying matters more than history.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._store = store
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._on_drop = on_drop
        self._queue: collections.deque[StoredEvent] = collections.deque()
        self._wake = asyncio.Event()
        self._submitted = 0  # events accepted by submit()
        self._done = 0  # accepted events written, or lost to a store failure
        self._dropped = 0
        self._failing = False  # inside an episode of write failures (log once per episode)
        self._running = False
        self._stopped = False
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def max_pending(self) -> int:
        """The queue's bound: submit() refuses events while ``pending`` is at it."""
        return self._max_pending

    @property
    def max_batch(self) -> int:
        """The most events handed to one ``put_many``."""
        return self._max_batch

    @property
    def pending(self) -> int:
        """Events accepted but not yet written (queued plus the batch being written)."""
        return self._submitted - self._done

    @property
    def dropped(self) -> int:
        """Events that will never be stored: refused by a full queue, or lost to a store failure."""
        return self._dropped

    def submit(self, ev: StoredEvent) -> bool:
        """Queue ``ev`` for writing. Never waits. False (and a counted drop) when it cannot."""
        if self._stopped or self.pending >= self._max_pending:
            self._count_drop(1)
            return False
        self._queue.append(ev)
        self._submitted += 1
        self._wake.set()
        return True

    async def flush(self) -> None:
        """Wait until every event submitted so far has been written (or lost to a store failure).

        Needs :meth:`run` to be running; returns at once if it has stopped.
        """
        target = self._submitted
        if self._stopped or self._done >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushers.append((target, fut))
        await fut

    async def run(self) -> None:
        """Write queued events in batches until cancelled; on cancellation, write what is queued
        first, then let the cancellation propagate.

        A task cancelled before its first step never enters this body, so nothing would be
        flushed: start it with the app and cancel it at shutdown, as the app does.
        """
        if self._running or self._stopped:
            raise RuntimeError("StoreWriter.run() is already running or has finished")
        self._running = True
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                await self._write_batch()
        except asyncio.CancelledError:
            # Shutdown: keep what the router already accepted. A second cancellation interrupts
            # this flush; whatever is left is then counted as dropped below.
            while self._queue:
                await self._write_batch()
            raise
        finally:
            self._stopped = True
            self._running = False
            if self._queue:
                lost = len(self._queue)
                self._queue.clear()
                self._done += lost
                self._count_drop(lost)
            self._wake_flushers()

    async def _write_batch(self) -> None:
        n = min(self._max_batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(n)]
        try:
            await self._store.put_many(batch)
        except StorageError as exc:
            self._count_drop(n)
            if not self._failing:
                self._failing = True
                logger.error("store write failed, %d events not kept: %s", n, exc)
        else:
            if self._failing:
                self._failing = False
                logger.warning("store writes recovered; %d events dropped so far", self._dropped)
        finally:
            # Counted even on cancellation: per the Store contract a started put_many completes.
            self._done += n
            self._wake_flushers()

    def _count_drop(self, n: int) -> None:
        self._dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    def _wake_flushers(self) -> None:
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._flushers:
            if fut.done():
                continue
            if self._stopped or self._done >= target:
                fut.set_result(None)
            else:
                waiting.append((target, fut))
        self._flushers = waiting
