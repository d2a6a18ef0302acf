"""The one outbound queue: what waits for one slow reader, bounded, coalescing, with statistics.

Every subscriber that writes to a peer (a stream session, a ``/takproto/1`` WebSocket, a web map
feed, and the partner link) holds one :class:`OutboundQueue`. The policy is nats' slow-consumer
rule (DESIGN.md convention 9): putting never blocks; a position report replaces an older one of
the same key still waiting, so a slow reader gets the newest picture rather than a backlog; past
:attr:`OutboundLimits.max_items` (or ``max_bytes``) waiting, the reader is a slow consumer: the
queue drops everything, refuses what comes later, and the owner disconnects it.

Optional priority classes (the partner link: emergencies, then chats, then the rest) are taken
lowest class first, each class in arrival order. A coalesced item either keeps the place of the
one it replaces (stream sessions and feeds: a client sees one report per uid, where the first
one was) or goes to the back of its class (the link's outbox: whatever was queued between the
two, a delete of that uid say, keeps its order relative to the newer report).

:class:`WaterMarks` is the hysteresis on a transport's write buffer (pause writing above
``high``, resume at or below ``low``) for carriers whose transport does not call
``pause_writing``/``resume_writing`` itself.

Pure: no asyncio, sockets or clock, so it is unit-tested without any (waiting for items and
pausing are the owner's thin asyncio layer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundLimits:
    """The named limits of one queue."""

    max_items: int  # items that may wait; one more and the reader is a slow consumer
    max_bytes: int | None = None  # bytes that may wait (sizes given to put); None: unbounded
    priorities: int = 1  # priority classes, 0 taken first; a larger class is the last one

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.priorities < 1:
            raise ValueError("priorities must be at least 1")


class Put(enum.Enum):
    """What became of one item offered to the queue."""

    QUEUED = "queued"  # waits at the back of its class
    COALESCED = "coalesced"  # replaced a waiting item of the same key
    OVERFLOW = "overflow"  # this item passed a limit: the queue dropped everything and is full
    DROPPED = "dropped"  # the queue had already overflowed or was closed: nothing is queued


# The outcomes as module constants: reading an enum member off its class costs a descriptor call
# in Python 3.11, and put() is on the path of every delivery.
QUEUED = Put.QUEUED
COALESCED = Put.COALESCED
OVERFLOW = Put.OVERFLOW
DROPPED = Put.DROPPED


@dataclass(frozen=True, slots=True)
class OutboundStatistics:
    """One queue's counters and state, for status pages, logs and tests."""

    depth: int  # items waiting now
    bytes: int  # bytes waiting now (sizes given to put)
    peak: int  # most items ever waiting at once
    queued: int  # items accepted (each coalesced replacement included)
    coalesced: int  # waiting items replaced by a newer one of the same key
    taken: int  # items handed to the writer
    dropped: int  # items thrown away: at overflow, after it, and at close
    overflowed: bool  # a limit was passed: the reader is a slow consumer
    paused: bool  # the writer is paused (the transport's buffer is full)
    pauses: int  # times the writer was paused


class OutboundQueue(Generic[T]):
    """A bounded, coalescing queue of items for one reader (see the module docstring).

    ``put(item, key)`` coalesces on ``key`` (None: never); ``take()`` returns everything waiting,
    in order. Keys are strings (a uid); items without a key never collide with them.
    """

    __slots__ = (
        "_bytes",
        "_class_of",
        "_classes",
        "_coalesced",
        "_dropped",
        "_in_place",
        "_lane",
        "_limits",
        "_max_items",
        "_pauses",
        "_peak",
        "_refused",
        "_seq",
        "_simple",
        "_sizes",
        "_taken",
        "closed",
        "overflowed",
        "paused",
    )

    def __init__(self, limits: OutboundLimits, *, coalesce_in_place: bool = True) -> None:
        self._limits = limits
        self._max_items = limits.max_items
        self._in_place = coalesce_in_place
        # One class, no byte limit, coalescing in place: the stream sessions' and feeds' queue,
        # on the path of every delivery, so put() takes a short way for it.
        self._simple = limits.priorities == 1 and limits.max_bytes is None and coalesce_in_place
        # One insertion-ordered dict per priority class: key (or a sequence number) -> item.
        self._classes: list[dict[object, T]] = [{} for _ in range(limits.priorities)]
        self._lane = self._classes[0]  # the only class when there are no priorities
        self._class_of: dict[object, int] = {}  # key -> its class, with priorities only
        self._sizes: dict[object, int] | None = {} if limits.max_bytes is not None else None
        self._seq = 0
        self._bytes = 0
        self._peak = 0
        self._refused = 0  # items offered after overflow or close
        self._coalesced = 0
        self._taken = 0
        self._dropped = 0
        self._pauses = 0
        self.overflowed = False
        self.closed = False
        self.paused = False

    @property
    def limits(self) -> OutboundLimits:
        return self._limits

    def __len__(self) -> int:
        if len(self._classes) == 1:
            return len(self._lane)
        return sum(len(c) for c in self._classes)

    def __bool__(self) -> bool:
        if len(self._classes) == 1:
            return bool(self._lane)
        return any(self._classes)

    # --- putting ------------------------------------------------------------------------------

    def put(self, item: T, key: str | None = None, *, priority: int = 0, size: int = 0) -> Put:
        """Offer one item. Never blocks or raises. ``size`` counts against ``max_bytes``."""
        if self._simple:
            lane = self._lane
            if key is None:
                self._seq += 1
                lane[self._seq] = item
            elif key in lane:
                lane[key] = item  # the newer item replaces the waiting one, in its place
                self._coalesced += 1
                return COALESCED
            else:
                lane[key] = item
            depth = len(lane)
            if depth > self._peak:  # the peak is at most max_items until the queue overflows
                self._peak = depth
                if depth > self._max_items:
                    self.overflowed = True
                    self._simple = False  # later puts take the long way and are refused
                    self._drop_all()
                    return OVERFLOW
            return QUEUED
        if self.overflowed or self.closed:
            self._refused += 1
            return DROPPED
        if len(self._classes) == 1:
            lane = self._lane
        else:
            cls = min(max(priority, 0), len(self._classes) - 1)
            lane = self._classes[cls]
            if key is not None:
                old = self._class_of.get(key)
                if old is not None and old != cls:
                    self._forget(self._classes[old], key)  # moved class: counted as coalesced
                    self._coalesced += 1
                    self._insert(lane, key, item, size)
                    self._class_of[key] = cls
                    return self._check_limits(COALESCED)
                self._class_of[key] = cls
        if key is None:
            self._seq += 1
            self._insert(lane, self._seq, item, size)
            return self._check_limits(QUEUED)
        if key in lane:
            self._coalesced += 1
            if self._in_place:
                if self._sizes is not None:
                    self._bytes += size - self._sizes[key]
                    self._sizes[key] = size
                lane[key] = item  # the newer item replaces the waiting one, in its place
            else:
                self._forget(lane, key)
                self._insert(lane, key, item, size)  # the newer one goes to the back
            return self._check_limits(COALESCED)
        self._insert(lane, key, item, size)
        return self._check_limits(QUEUED)

    def _insert(self, lane: dict[object, T], key: object, item: T, size: int) -> None:
        lane[key] = item
        if self._sizes is not None:
            self._sizes[key] = size
            self._bytes += size

    def _forget(self, lane: dict[object, T], key: object) -> None:
        del lane[key]
        if self._sizes is not None:
            self._bytes -= self._sizes.pop(key)

    def _check_limits(self, outcome: Put) -> Put:
        depth = len(self)
        if depth > self._peak:
            self._peak = depth
        limits = self._limits
        if depth > limits.max_items or (
            limits.max_bytes is not None and self._bytes > limits.max_bytes
        ):
            self.overflowed = True
            self._drop_all()
            return OVERFLOW
        return outcome

    # --- taking -------------------------------------------------------------------------------

    def take(self, max_items: int | None = None) -> list[T]:
        """Take what waits, lowest priority class first, each class oldest first (at most
        ``max_items``, all when None)."""
        if max_items is None and len(self._classes) == 1:
            lane = self._lane
            if not lane:
                return []
            items = list(lane.values())
            lane.clear()
            if self._sizes is not None:
                self._sizes.clear()
                self._bytes = 0
            self._taken += len(items)
            return items
        items = []
        for lane in self._classes:
            while lane and (max_items is None or len(items) < max_items):
                key = next(iter(lane))
                items.append(lane[key])
                self._forget(lane, key)
                self._class_of.pop(key, None)
            if max_items is not None and len(items) >= max_items:
                break
        self._taken += len(items)
        return items

    # --- the writer's state -------------------------------------------------------------------

    def pause(self) -> None:
        """The transport's buffer is full: the writer waits (items keep coalescing)."""
        if not self.paused:
            self.paused = True
            self._pauses += 1

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        """The reader is gone: drop what waits (counted) and refuse what comes later."""
        self.closed = True
        self._simple = False  # put() takes the long way, which refuses
        self._drop_all()

    def _drop_all(self) -> None:
        for lane in self._classes:
            self._dropped += len(lane)
            lane.clear()
        self._class_of.clear()
        if self._sizes is not None:
            self._sizes.clear()
        self._bytes = 0

    def statistics(self) -> OutboundStatistics:
        depth = len(self)
        return OutboundStatistics(
            depth=depth,
            bytes=self._bytes,
            peak=self._peak,
            # Every item accepted is waiting, taken, replaced or dropped at overflow or close.
            queued=depth + self._taken + self._coalesced + self._dropped,
            coalesced=self._coalesced,
            taken=self._taken,
            dropped=self._dropped + self._refused,
            overflowed=self.overflowed,
            paused=self.paused,
            pauses=self._pauses,
        )


@dataclass(frozen=True, slots=True)
class WaterMarks:
    """When a writer pauses and resumes, from the bytes its transport still holds.

    Above ``high`` the writer pauses; once paused it resumes at ``low`` or below (``low`` equal to
    ``high``: no hysteresis)."""

    high: int
    low: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError("water marks need 0 <= low <= high")

    def should_pause(self, buffered: int) -> bool:
        return buffered > self.high

    def may_resume(self, buffered: int) -> bool:
        return buffered <= self.low
