"""Where events are kept: the Store interface, in-memory and SQLite backends, the writer queue."""

from liaison.storage.base import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PENDING,
    MAX_QUERY_LIMIT,
    Query,
    Store,
    StoredEvent,
    StoreWriter,
)
from liaison.storage.memory import MemoryStore
from liaison.storage.sqlite import SqliteStore

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_PENDING",
    "MAX_QUERY_LIMIT",
    "MemoryStore",
    "Query",
    "SqliteStore",
    "Store",
    "StoreWriter",
    "StoredEvent",
]
