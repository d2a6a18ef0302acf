"""The feeds' pending table and adaptive thinning (docs/feeds.md, "Merge and thin").

Pure: no asyncio, sockets or clock (every time is an argument), so it is tested with a fake
clock. The runner (``feeds/runner.py``) reads each upstream as fast as it arrives and offers every
fix to :class:`PendingTracks`; a publisher task takes due fixes out of it at the rate the server
can afford, and :class:`Thinning` widens the per-track interval while the server is behind.

- **Newest wins**: a track holds at most one fix waiting to be published, the newest; a newer fix
  replaces it (the replaced one is counted ``coalesced`` when it would have waited anyway, within
  the track's ``min_interval``, or ``thinned`` when it waited only because the interval was
  widened by load). A fix not newer than the newest one seen for the track, pending or published
  (a second receiver's copy, a reordered packet), is dropped as ``old``.
- **At most once per interval**: a track's fix is due ``min_interval * factor`` after the track's
  last publication (``factor`` from :class:`Thinning`, the widened interval capped per feed), at
  once when the track was never published.
- **Bounded**: at most ``max_tracks`` tracks; a new one beyond forgets the track heard from least
  recently (its waiting fix, if any, counted ``evicted``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Drop reasons (``liaison_feed_dropped_total``).
OLD = "old"
COALESCED = "coalesced"
THINNED = "thinned"
EVICTED = "evicted"


@dataclass(frozen=True, slots=True)
class Pace:
    """How often one feed's tracks may be published: ``base_ms`` (its ``min_interval_s``) at
    factor 1, widened by load up to ``cap_ms`` (never narrower than ``base_ms``)."""

    base_ms: int
    cap_ms: int

    def interval_ms(self, factor: float) -> int:
        if factor <= 1.0:
            return self.base_ms
        return max(self.base_ms, min(int(self.base_ms * factor), self.cap_ms))


class _Track(Generic[T]):
    __slots__ = ("newest_ms", "pace", "pending", "sent_ms", "seq")

    def __init__(self, newest_ms: int, pace: Pace, pending: T | None) -> None:
        self.newest_ms = newest_ms  # newest fix time seen, pending or published
        self.pace = pace  # of the feed whose fix is pending (or was published last)
        self.pending = pending  # the newest fix not yet published
        self.sent_ms: int | None = None  # when its last fix was published
        self.seq = 0  # the heap entry that stands for the pending fix (older ones are stale)


class PendingTracks(Generic[T]):
    """Per-track newest pending fix, published at most once per (widened) interval.

    ``offer`` takes a fix in (cheap: a dict look-up); ``take_due`` hands out the next fix that
    is due, the track whose due time (at factor 1) is earliest first, so every track gets its
    turn however many there are. ``drop(reason, n)`` is told of every fix not published.
    """

    def __init__(self, *, max_tracks: int, drop: Callable[[str, int], None]) -> None:
        if max_tracks < 1:
            raise ValueError("max_tracks must be >= 1")
        self.max_tracks = max_tracks
        self._drop = drop
        self._tracks: OrderedDict[str, _Track[T]] = OrderedDict()  # least recently heard first
        # (due at factor 1, sequence, uid): one live entry per pending track; entries of evicted
        # or already published fixes are stale and skipped (bounded: rebuilt past 2 x tracks).
        self._due: list[tuple[int, int, str]] = []
        self._seq = itertools.count(1)
        self._pending = 0

    def __len__(self) -> int:
        """Tracks remembered (the feeds' merged track count)."""
        return len(self._tracks)

    @property
    def pending(self) -> int:
        """Tracks with a fix waiting to be published."""
        return self._pending

    def offer(self, uid: str, fix_ms: int, item: T, pace: Pace, now_ms: int) -> bool:
        """Take one fix of ``uid`` (fix time ``fix_ms``); False when it was dropped as old."""
        track = self._tracks.get(uid)
        if track is None:
            track = _Track(fix_ms, pace, item)
            self._tracks[uid] = track
            self._pending += 1
            self._schedule(uid, track, now_ms)
            while len(self._tracks) > self.max_tracks:
                _, gone = self._tracks.popitem(last=False)
                if gone.pending is not None:
                    self._pending -= 1
                    self._drop(EVICTED, 1)
            return True
        if fix_ms <= track.newest_ms:
            self._drop(OLD, 1)
            return False
        track.newest_ms = fix_ms
        self._tracks.move_to_end(uid)
        if track.pending is not None:
            # The waiting fix is replaced: it was waiting for the track's own interval, or only
            # because load widened it.
            sent = track.sent_ms
            within = sent is not None and now_ms - sent < track.pace.base_ms
            self._drop(COALESCED if within else THINNED, 1)
            track.pending = item
            if pace.base_ms != track.pace.base_ms:
                track.pace = pace
                self._schedule(uid, track, now_ms)
            return True
        track.pending = item
        track.pace = pace
        self._pending += 1
        self._schedule(uid, track, now_ms)
        return True

    def _schedule(self, uid: str, track: _Track[T], now_ms: int) -> None:
        due = now_ms if track.sent_ms is None else track.sent_ms + track.pace.base_ms
        track.seq = next(self._seq)
        heapq.heappush(self._due, (due, track.seq, uid))
        if len(self._due) > 2 * max(self._pending, 1) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        """Keep only the live heap entries (stale ones pile up when tracks are evicted)."""
        live = [
            e
            for e in self._due
            if (t := self._tracks.get(e[2])) is not None and t.pending is not None and t.seq == e[1]
        ]
        heapq.heapify(live)
        self._due = live

    def next_due_ms(self, factor: float) -> int | None:
        """When the next fix falls due at ``factor`` (None: nothing is pending)."""
        due = self._due
        while due:
            _, seq, uid = due[0]
            track = self._tracks.get(uid)
            if track is None or track.pending is None or track.seq != seq:
                heapq.heappop(due)
                continue
            if track.sent_ms is None:
                return due[0][0]
            return track.sent_ms + track.pace.interval_ms(factor)
        return None

    def take_due(self, now_ms: int, factor: float) -> tuple[str, T] | None:
        """The next fix due at ``now_ms`` with the interval widened by ``factor``, marked
        published; None when none is due yet."""
        due_ms = self.next_due_ms(factor)
        if due_ms is None or due_ms > now_ms:
            return None
        _, _, uid = heapq.heappop(self._due)
        track = self._tracks[uid]
        item = track.pending
        assert item is not None
        track.pending = None
        track.sent_ms = now_ms
        self._pending -= 1
        return uid, item


# Thinning: the factor the tracks' intervals are widened by while the server is behind.
# Each adaptation step while a signal says "behind" multiplies it by WIDEN; a step in which the
# server is clear (not behind, nothing waiting past its due time) divides it by NARROW_DIVISOR,
# back to 1; a step in between (the publisher still working through fixes that fell due) holds.
WIDEN = 1.25
NARROW_DIVISOR = 1.1


class Thinning:
    """The adaptive factor of :class:`PendingTracks`' intervals: widened quickly while the
    server is behind, held while it catches up, narrowed slowly once it is clear (a picture
    coarser, never late)."""

    def __init__(self, *, max_factor: float) -> None:
        if max_factor < 1:
            raise ValueError("max_factor must be >= 1")
        self.max_factor = max_factor
        self.factor = 1.0

    def update(self, behind: Iterable[str], *, clear: bool = True) -> str:
        """One adaptation step; ``behind`` names the signals that say the server is behind,
        ``clear`` is False while it is not behind but still catching up. Returns what was done:
        ``"widened"``, ``"held"`` or ``"narrowed"``."""
        if any(True for _ in behind):
            self.factor = min(self.max_factor, self.factor * WIDEN)
            return "widened"
        if not clear:
            return "held"
        self.factor = max(1.0, self.factor / NARROW_DIVISOR)
        return "narrowed"
