"""The latest state of one node, in a bounded dict (insertion order is update order)."""

from __future__ import annotations

from collections.abc import Iterator

from liaison.latest.base import LatestEntry

# Most uids kept in the in-memory latest-state table used for replay. A server with more live uids
# than this is far past what one node serves (TAK Server's own latest-SA cache is per connected
# user); the oldest entries are evicted first and the store still has them.
MAX_LATEST_UIDS = 200_000


class MemoryLatestState:
    """:class:`~liaison.latest.base.LatestState` in a process-local dict."""

    def __init__(self, max_uids: int = MAX_LATEST_UIDS) -> None:
        self._max_uids = max_uids
        self._latest: dict[str, LatestEntry] = {}

    def get(self, uid: str) -> LatestEntry | None:
        return self._latest.get(uid)

    def put(self, entry: LatestEntry, *, shared: bool = True) -> bool:
        latest = self._latest
        uid = entry.event.uid
        old = latest.get(uid)
        if old is not None and old.event.time > entry.event.time:
            return False  # an older report arriving late must not replace a newer one
        if old is not None:
            del latest[uid]  # re-insert so dict order stays oldest-update-first
        elif len(latest) >= self._max_uids:
            del latest[next(iter(latest))]
        latest[uid] = entry
        return True

    def remove(self, uid: str, *, shared: bool = True) -> LatestEntry | None:
        return self._latest.pop(uid, None)

    def entries(self) -> Iterator[LatestEntry]:
        return iter(list(self._latest.values()))

    def expire(self, now_ms: int) -> int:
        stale = [uid for uid, e in self._latest.items() if e.event.is_stale(now_ms)]
        for uid in stale:
            del self._latest[uid]
        return len(stale)

    def __len__(self) -> int:
        return len(self._latest)
