"""An in-memory Store: the reference implementation for tests and for servers that keep no disk."""

from __future__ import annotations

import collections
import heapq
from collections.abc import Sequence
from dataclasses import replace

from liaison.errors import StorageError
from liaison.storage.base import Query, StoredEvent

# History rows kept; the oldest go first. At ~1.5 KB per event (XML plus the record) 50,000 rows
# are ~75 MB: an hour of a 15-client exercise at one report per second, enough for tests and a
# small field deployment, while a busy server cannot exhaust memory through history alone.
DEFAULT_MAX_HISTORY = 50_000

# Distinct uids in the latest state; past it the uid updated least recently is forgotten. Every
# chat message and every marker has its own uid, so without a bound a peer inventing uids would
# grow this forever. 20,000 is far above the items of any real operational picture.
DEFAULT_MAX_UIDS = 20_000


class MemoryStore:
    """A :class:`~liaison.storage.base.Store` held in Python containers, bounded in both tables."""

    def __init__(
        self, max_history: int = DEFAULT_MAX_HISTORY, *, max_uids: int = DEFAULT_MAX_UIDS
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, got {max_history}")
        if max_uids < 1:
            raise ValueError(f"max_uids must be at least 1, got {max_uids}")
        # In seq order; deque(maxlen) drops the oldest row when a new one arrives.
        self._history: collections.deque[StoredEvent] = collections.deque(maxlen=max_history)
        # Insertion order is "least recently updated first", which is what eviction needs.
        self._latest: dict[str, StoredEvent] = {}
        self._max_uids = max_uids
        self._seq = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory store is closed")

    async def put_many(self, events: Sequence[StoredEvent]) -> None:
        self._check_open()
        for ev in events:
            self._seq += 1
            stored = replace(ev, seq=self._seq)
            self._history.append(stored)
            current = self._latest.get(stored.uid)
            if current is None or stored.time >= current.time:
                # Remove first so the uid moves to the end: most recently updated.
                self._latest.pop(stored.uid, None)
                self._latest[stored.uid] = stored
                if len(self._latest) > self._max_uids:
                    del self._latest[next(iter(self._latest))]

    async def latest(self, now_ms: int) -> list[StoredEvent]:
        self._check_open()
        live = [ev for ev in self._latest.values() if ev.stale > now_ms]
        live.sort(key=lambda ev: (not ev.is_contact, ev.time, ev.seq))
        return live

    async def latest_by_uid(self, uid: str) -> StoredEvent | None:
        self._check_open()
        return self._latest.get(uid)

    async def history(self, query: Query) -> list[StoredEvent]:
        self._check_open()
        found = (ev for ev in self._history if query.matches(ev))
        return heapq.nlargest(query.limit, found, key=lambda ev: (ev.time, ev.seq))

    async def delete_uid(self, uid: str) -> None:
        self._check_open()
        self._latest.pop(uid, None)

    async def prune(self, older_than_ms: int) -> int:
        self._check_open()
        before = len(self._history)
        kept = [ev for ev in self._history if ev.received >= older_than_ms]
        self._history.clear()
        self._history.extend(kept)
        gone = [
            uid
            for uid, ev in self._latest.items()
            if ev.received < older_than_ms and ev.stale <= older_than_ms
        ]
        for uid in gone:
            del self._latest[uid]
        return before - len(kept)

    async def close(self) -> None:
        self._closed = True
