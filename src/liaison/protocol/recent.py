"""A bounded memory of keys seen lately: the duplicate check of the TAK v1 wire (frame digests)
and of the cluster bus (event ids). Pure."""

from __future__ import annotations

from collections import OrderedDict


class Recent:
    """The last ``limit`` keys added, oldest forgotten first; a key added again moves to the
    newest place."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> None:
        """Remember ``key`` as the newest."""
        seen = self._seen
        seen[key] = None
        seen.move_to_end(key)
        while len(seen) > self._limit:
            seen.popitem(last=False)

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen within the memory (and remember it)."""
        if key in self._seen:
            return False
        self.add(key)
        return True
