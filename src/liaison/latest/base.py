"""The latest-state interface: what the router needs from the table of each uid's newest event.

Pure: no clock (time comes in as an argument), no I/O. An implementation shared by several nodes
(``cluster/latest_kv.py``) must keep the same rules, which ``tests/unit/core/test_latest_state.py``
checks for any implementation: an older report never replaces a newer one, a bounded size, stale
entries dropped by :meth:`LatestState.expire`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from liaison.model.event import Event
from liaison.model.labels import Label


@dataclass(frozen=True, slots=True)
class LatestEntry:
    """One uid's newest accepted event, with what the access decision needs to replay it."""

    event: Event
    sender_groups: frozenset[str]
    label: Label | None = None
    # In a cluster: read from the shared bucket before this node read the event itself from the
    # bus (cluster/latest_kv.py), so it may still arrive live. The router remembers who was
    # replayed such an entry and does not send them the same report again when it arrives.
    early: bool = False


class LatestState(Protocol):
    """The newest accepted event of each uid (directed messages are never put here).

    Every method is synchronous and never blocks: the router calls it while accepting an event.
    """

    def get(self, uid: str) -> LatestEntry | None:
        """The entry of ``uid``, stale or not; None when there is none."""
        ...

    def put(self, entry: LatestEntry, *, shared: bool = True) -> bool:
        """Keep ``entry`` as its uid's latest state, unless the entry already held is of a later
        time (a report arriving late never replaces a newer one: False). A new uid past the size
        limit evicts the entry updated longest ago. ``shared=False``: this node did not accept
        the event (another node did, or it comes from the store at start), so an
        implementation shared by several nodes keeps it without writing it for the others."""
        ...

    def remove(self, uid: str, *, shared: bool = True) -> LatestEntry | None:
        """Forget ``uid`` (a delete); returns what was held, or None. ``shared`` as for put."""
        ...

    def entries(self) -> Iterator[LatestEntry]:
        """Every entry, stale ones included, the one updated longest ago first (replay and the
        picture filter and sort them). Safe to iterate while the table changes."""
        ...

    def expire(self, now_ms: int) -> int:
        """Drop the entries stale at ``now_ms``; returns how many were dropped."""
        ...

    def __len__(self) -> int:
        """How many uids are held (the ``liaison_latest_uids`` gauge)."""
        ...
