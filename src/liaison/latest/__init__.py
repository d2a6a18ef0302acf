"""The latest state: each live uid's newest accepted event, read by replay, the picture and
relabelling. ``LatestState`` is the interface the router depends on; ``MemoryLatestState`` is the
one-node implementation; ``cluster/latest_kv.py`` shares it between the nodes of a cluster."""

from liaison.latest.base import LatestEntry, LatestState
from liaison.latest.memory import MAX_LATEST_UIDS, MemoryLatestState

__all__ = ["MAX_LATEST_UIDS", "LatestEntry", "LatestState", "MemoryLatestState"]
