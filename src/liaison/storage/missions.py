"""Where missions (TAK Data Sync) are kept: the ``MissionStore`` interface, its records, an
in-memory store for unit tests and ``storage = "memory"``, and a SQLite store (``missions.db``).

The mission service (``liaison.missions``) holds every mission in memory while the server runs
and writes each change through here, in order, off the event loop's hot path; at start it loads
everything back. Storage knows nothing of CoT or labels: it keeps records whose label is JSON text
and whose CoT is the exact XML the router accepted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from liaison.errors import StorageError
from liaison.storage.base import StoredEvent
from liaison.storage.permissions import create_private_file

T = TypeVar("T")

# Bytes of the secret that signs mission tokens (HMAC-SHA256 wants at least its output size).
TOKEN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionRecord:
    """One mission's metadata (TSpl sync/model/Mission.java, the fields Liaison keeps)."""

    name: str
    guid: str
    creator: str  # principal name of who created it
    creator_uid: str
    groups: frozenset[str]  # the TAK groups the mission belongs to
    label: str | None  # the mission's own label, JSON text (None with labels off)
    tool: str = "public"
    description: str = ""
    chat_room: str = ""
    keywords: tuple[str, ...] = ()
    create_time: int = 0  # ms since epoch
    last_edited: int = 0
    # Access (tak-missions.md 3.2, 5.3): a scrypt hash of the password ("" = none), whether only
    # invitees may subscribe, and the role a caller without a token gets.
    password_hash: str = ""
    invite_only: bool = False
    default_role: str = "MISSION_SUBSCRIBER"


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionItem:
    """One map item (CoT uid) in a mission: who added it, when, and its latest CoT as accepted
    (label and sender groups included)."""

    mission: str
    uid: str
    creator_uid: str
    timestamp: int  # ms since epoch, when it was added or last updated
    event: StoredEvent
    keywords: tuple[str, ...] = ()  # the mission's keywords for this item


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionChangeRecord:
    """One recorded change (TSpl sync/model/MissionChange.java), with the label and groups of the
    item it is about so that it is shown only to who may see that item."""

    mission: str
    type: str  # CREATE_MISSION, ADD_CONTENT, REMOVE_CONTENT
    creator_uid: str
    timestamp: int
    content_uid: str | None = None
    sender_groups: frozenset[str] = frozenset()
    label: str | None = None
    details: str | None = None  # UidDetails as JSON text, opaque here
    seq: int = 0  # assigned by the service, monotonic per server
    resource: str | None = None  # file changes: the Resource as JSON text, opaque here
    content_hash: str | None = None  # file changes: the file's SHA-256
    federated: bool = False  # the item came from a partner server (isFederatedChange)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionRecord:
    """A stored subscription (TSw sync/model/MissionSubscription.java) and whether its client is
    a live recipient (``DELETE .../subscription`` only clears ``active`` by default)."""

    mission: str
    client_uid: str
    username: str
    role: str
    token: str
    create_time: int
    active: bool = True
    # The mission's change sequence number when the device's stream ended (-1: connected, or
    # nothing to catch up on): what it missed is sent when it reconnects.
    away_seq: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitationRecord:
    """A standing invitation (TSw sync/model/MissionInvitation.java): who (``type`` one of
    ``clientUid``, ``callsign``, ``userName``, ``group``, ``team``; ``invitee``), with which role
    and INVITATION token."""

    mission: str
    type: str
    invitee: str
    creator_uid: str
    create_time: int
    role: str
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntryRecord:
    """One mission log entry (TSpl sync/model/LogEntry.java), with who posted it, their groups
    and the entry's label, so that it is shown only to who may see it."""

    id: str
    content: str
    creator_uid: str
    entry_uid: str | None
    mission_names: tuple[str, ...]
    servertime: int  # ms since epoch: the last post or update
    dtg: int  # ms since epoch: the time the poster gave the entry
    created: int  # ms since epoch: the first post
    content_hashes: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    creator: str = ""  # principal name of who posted (or last updated) it
    sender_groups: frozenset[str] = frozenset()
    label: str | None = None  # JSON text (None with labels off)
    sha256: str = ""  # of the content, for release records (computed once, when posted)


@dataclass(slots=True)
class MissionData:
    """Everything stored, as loaded at start."""

    missions: list[MissionRecord]
    items: list[MissionItem]
    changes: list[MissionChangeRecord]
    subscriptions: list[SubscriptionRecord]
    contents: list[MissionContent] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MissionContent:
    """One file in a mission (TAK's mission ``contents``: a Resource by SHA-256 hash, TSpl
    sync/model/Resource.java), copied from the file store's record the adder could see, with
    that record's groups and label: the file entry is shown only to who may see the file."""

    mission: str
    hash: str  # SHA-256 of the content, lowercase hex
    file_uid: str  # the file store record's uid (TAK Resource ``uid``)
    name: str
    mime: str
    size: int
    file_keywords: tuple[str, ...] = ()  # the record's keywords (Resource ``keywords``)
    tool: str = "public"
    file_creator_uid: str | None = None
    submitter: str  # who uploaded it (Resource ``submitter``)
    submitted: int  # ms since epoch, the upload
    uploader_groups: frozenset[str]
    label: str | None = None  # the file's label, JSON text
    creator_uid: str  # the device that added it to the mission
    timestamp: int  # ms since epoch, when it was added
    keywords: tuple[str, ...] = ()  # the mission's keywords for this content


# The write methods of a MissionStore, by name: what a :class:`MissionWrite` may name.
WRITE_OPS = frozenset(
    {
        "put_mission",
        "delete_mission",
        "put_item",
        "remove_item",
        "add_change",
        "put_subscription",
        "put_content",
        "remove_content",
        "put_invitation",
        "delete_invitation",
        "put_log",
        "delete_log",
    }
)


@dataclass(frozen=True, slots=True)
class MissionWrite:
    """One write of a batch: the name of a write method of :class:`MissionStore` (``WRITE_OPS``)
    and its positional arguments, e.g. ``MissionWrite("put_item", (item,))``."""

    op: str
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.op not in WRITE_OPS:
            raise ValueError(f"not a mission store write: {self.op!r}")


class MissionStore(Protocol):
    """Missions, their items, changes and subscriptions. Every method raises
    :class:`~liaison.errors.StorageError` when the backend fails or after :meth:`close`."""

    async def load(self) -> MissionData: ...

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        """Apply ``writes`` in order, all or none (one transaction): when this raises, none of
        them was kept, so the same batch can be tried again."""
        ...

    async def token_secret(self) -> bytes:
        """The secret mission tokens are signed with, made on first use and kept."""
        ...

    async def put_mission(self, mission: MissionRecord) -> None: ...

    async def delete_mission(self, name: str) -> None:
        """Remove the mission with its items, changes and subscriptions."""
        ...

    async def put_item(self, item: MissionItem) -> None: ...

    async def remove_item(self, mission: str, uid: str) -> None: ...

    async def add_change(self, change: MissionChangeRecord) -> None: ...

    async def put_subscription(self, sub: SubscriptionRecord) -> None: ...

    async def close(self) -> None: ...

    async def put_content(self, content: MissionContent) -> None:
        """Add or replace a file of a mission (by mission and hash)."""
        ...

    async def remove_content(self, mission: str, hash: str) -> None: ...
    async def load_invitations(self) -> list[InvitationRecord]: ...

    async def put_invitation(self, invitation: InvitationRecord) -> None: ...

    async def delete_invitation(self, mission: str, type_: str, invitee: str) -> None: ...

    async def load_logs(self) -> list[LogEntryRecord]:
        """Every stored log entry (at start)."""
        ...

    async def put_log(self, entry: LogEntryRecord) -> None:
        """Add or replace the log entry with ``entry.id``."""
        ...

    async def delete_log(self, entry_id: str) -> None: ...


class MemoryMissionStore:
    """A :class:`MissionStore` in Python containers (lost at exit)."""

    def __init__(self) -> None:
        self._missions: dict[str, MissionRecord] = {}
        self._items: dict[tuple[str, str], MissionItem] = {}
        self._changes: list[MissionChangeRecord] = []
        self._subs: dict[tuple[str, str], SubscriptionRecord] = {}
        self._contents: dict[tuple[str, str], MissionContent] = {}
        self._logs: dict[str, LogEntryRecord] = {}
        self._secret = secrets.token_bytes(TOKEN_SECRET_BYTES)
        self._closed = False
        self._invites: dict[tuple[str, str, str], InvitationRecord] = {}

    def _check(self) -> None:
        if self._closed:
            raise StorageError("memory mission store is closed")

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        self._check()  # every write below only assigns: nothing fails half-way
        for w in writes:
            getattr(self, "_" + w.op)(*w.args)

    async def load(self) -> MissionData:
        self._check()
        return MissionData(
            list(self._missions.values()),
            list(self._items.values()),
            list(self._changes),
            list(self._subs.values()),
            list(self._contents.values()),
        )

    async def token_secret(self) -> bytes:
        self._check()
        return self._secret

    async def put_mission(self, mission: MissionRecord) -> None:
        await self.write_batch([MissionWrite("put_mission", (mission,))])

    def _put_mission(self, mission: MissionRecord) -> None:
        self._missions[mission.name] = mission

    async def delete_mission(self, name: str) -> None:
        await self.write_batch([MissionWrite("delete_mission", (name,))])

    def _delete_mission(self, name: str) -> None:
        self._missions.pop(name, None)
        self._items = {k: v for k, v in self._items.items() if k[0] != name}
        self._changes = [c for c in self._changes if c.mission != name]
        self._subs = {k: v for k, v in self._subs.items() if k[0] != name}
        self._contents = {k: v for k, v in self._contents.items() if k[0] != name}
        self._invites = {k: v for k, v in self._invites.items() if k[0] != name}

    async def put_item(self, item: MissionItem) -> None:
        await self.write_batch([MissionWrite("put_item", (item,))])

    def _put_item(self, item: MissionItem) -> None:
        self._items[(item.mission, item.uid)] = item

    async def remove_item(self, mission: str, uid: str) -> None:
        await self.write_batch([MissionWrite("remove_item", (mission, uid))])

    def _remove_item(self, mission: str, uid: str) -> None:
        self._items.pop((mission, uid), None)

    async def add_change(self, change: MissionChangeRecord) -> None:
        await self.write_batch([MissionWrite("add_change", (change,))])

    def _add_change(self, change: MissionChangeRecord) -> None:
        self._changes.append(change)

    async def put_subscription(self, sub: SubscriptionRecord) -> None:
        await self.write_batch([MissionWrite("put_subscription", (sub,))])

    def _put_subscription(self, sub: SubscriptionRecord) -> None:
        self._subs[(sub.mission, sub.client_uid)] = sub

    async def close(self) -> None:
        self._closed = True

    async def put_content(self, content: MissionContent) -> None:
        await self.write_batch([MissionWrite("put_content", (content,))])

    def _put_content(self, content: MissionContent) -> None:
        self._contents[(content.mission, content.hash)] = content

    async def remove_content(self, mission: str, hash: str) -> None:
        await self.write_batch([MissionWrite("remove_content", (mission, hash))])

    def _remove_content(self, mission: str, hash: str) -> None:
        self._contents.pop((mission, hash), None)

    async def load_logs(self) -> list[LogEntryRecord]:
        self._check()
        return list(self._logs.values())

    async def put_log(self, entry: LogEntryRecord) -> None:
        await self.write_batch([MissionWrite("put_log", (entry,))])

    def _put_log(self, entry: LogEntryRecord) -> None:
        self._logs[entry.id] = entry

    async def delete_log(self, entry_id: str) -> None:
        await self.write_batch([MissionWrite("delete_log", (entry_id,))])

    def _delete_log(self, entry_id: str) -> None:
        self._logs.pop(entry_id, None)

    async def load_invitations(self) -> list[InvitationRecord]:
        self._check()
        return list(self._invites.values())

    async def put_invitation(self, invitation: InvitationRecord) -> None:
        await self.write_batch([MissionWrite("put_invitation", (invitation,))])

    def _put_invitation(self, invitation: InvitationRecord) -> None:
        i = invitation
        self._invites[(i.mission, i.type, i.invitee)] = i

    async def delete_invitation(self, mission: str, type_: str, invitee: str) -> None:
        await self.write_batch([MissionWrite("delete_invitation", (mission, type_, invitee))])

    def _delete_invitation(self, mission: str, type_: str, invitee: str) -> None:
        self._invites.pop((mission, type_, invitee), None)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS missions (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS items (mission TEXT NOT NULL, uid TEXT NOT NULL,"
    " record TEXT NOT NULL, PRIMARY KEY (mission, uid))",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, mission TEXT NOT NULL,"
    " record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_mission ON changes (mission, seq)",
    "CREATE TABLE IF NOT EXISTS subscriptions (mission TEXT NOT NULL, client_uid TEXT NOT NULL,"
    " record TEXT NOT NULL, PRIMARY KEY (mission, client_uid))",
)

# Versioned changes to missions.db after _SCHEMA, applied in this order, each once: the name is
# recorded in ``meta`` as ``migration:<name>`` in the same transaction as its statements, so a
# file of any older release is brought up to date on open; a file that records a migration this
# release does not know (written by a newer release) is refused.
_MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "1-contents",
        (
            "CREATE TABLE IF NOT EXISTS contents (mission TEXT NOT NULL, hash TEXT NOT NULL,"
            " record TEXT NOT NULL, PRIMARY KEY (mission, hash))",
        ),
    ),
    (
        # Mission log entries, one JSON record each (an entry may name several missions).
        "2-logs",
        (
            "CREATE TABLE IF NOT EXISTS logs (id TEXT PRIMARY KEY, created INTEGER NOT NULL,"
            " record TEXT NOT NULL)",
        ),
    ),
    (
        "3-invitations",  # tak-missions.md 5.4
        (
            "CREATE TABLE IF NOT EXISTS invitations (mission TEXT NOT NULL, type TEXT NOT NULL,"
            " invitee TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (mission, type, invitee))",
        ),
    ),
)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    known = {f"migration:{name}" for name, _ in _MIGRATIONS}
    recorded = {r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'migration:%'")}
    if recorded - known:
        raise StorageError(
            f"sqlite {path}: mission schema is newer than this Liaison understands"
            f" ({', '.join(sorted(recorded - known))})"
        )
    for name, statements in _MIGRATIONS:
        key = f"migration:{name}"
        if conn.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, b"1"))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class SingleWrites:
    """The single writes of :class:`MissionStore`, each a batch of one through the store's own
    ``write_batch`` (shared by the SQLite and PostgreSQL stores, whose batches are the unit of
    work)."""

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        raise NotImplementedError

    async def put_mission(self, mission: MissionRecord) -> None:
        await self.write_batch([MissionWrite("put_mission", (mission,))])

    async def delete_mission(self, name: str) -> None:
        await self.write_batch([MissionWrite("delete_mission", (name,))])

    async def put_item(self, item: MissionItem) -> None:
        await self.write_batch([MissionWrite("put_item", (item,))])

    async def remove_item(self, mission: str, uid: str) -> None:
        await self.write_batch([MissionWrite("remove_item", (mission, uid))])

    async def add_change(self, change: MissionChangeRecord) -> None:
        await self.write_batch([MissionWrite("add_change", (change,))])

    async def put_subscription(self, sub: SubscriptionRecord) -> None:
        await self.write_batch([MissionWrite("put_subscription", (sub,))])

    async def put_content(self, content: MissionContent) -> None:
        await self.write_batch([MissionWrite("put_content", (content,))])

    async def remove_content(self, mission: str, hash: str) -> None:
        await self.write_batch([MissionWrite("remove_content", (mission, hash))])

    async def put_log(self, entry: LogEntryRecord) -> None:
        await self.write_batch([MissionWrite("put_log", (entry,))])

    async def delete_log(self, entry_id: str) -> None:
        await self.write_batch([MissionWrite("delete_log", (entry_id,))])

    async def put_invitation(self, invitation: InvitationRecord) -> None:
        await self.write_batch([MissionWrite("put_invitation", (invitation,))])

    async def delete_invitation(self, mission: str, type_: str, invitee: str) -> None:
        await self.write_batch([MissionWrite("delete_invitation", (mission, type_, invitee))])


class SqliteMissionStore(SingleWrites):
    """A :class:`MissionStore` in one SQLite file (WAL), driven from one thread of its own, like
    :class:`~liaison.storage.sqlite.SqliteStore`. Records are JSON text, one row each."""

    def __init__(self, path: Path) -> None:
        """Private: use :meth:`open`."""
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liaison-missions")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteMissionStore:
        store = cls(path)
        try:
            await store._run(store._open_sync)
        except BaseException:
            store._closed = True
            store._executor.shutdown(wait=False)
            raise
        return store

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StorageError(f"mission store {self._path} is closed")
        # Shielded: a write that was handed to the thread completes even if the caller is
        # cancelled (shutdown), so what the service dequeued is not lost.
        fut = asyncio.wrap_future(self._executor.submit(self._translated, fn, *args))
        return await asyncio.shield(fut)

    def _translated(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            raise StorageError(f"sqlite {self._path}: {exc}") from exc

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"mission store {self._path} is not open")
        return self._conn

    def _open_sync(self) -> None:
        create_private_file(self._path)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            for sql in _SCHEMA:
                conn.execute(sql)
            _migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _load_sync(self) -> MissionData:
        c = self._c()
        missions = [_mission_from(r[0]) for r in c.execute("SELECT record FROM missions")]
        items = [_item_from(r[0]) for r in c.execute("SELECT record FROM items")]
        changes = [
            _change_from(r[0], r[1])
            for r in c.execute("SELECT seq, record FROM changes ORDER BY seq")
        ]
        subs = [_sub_from(r[0]) for r in c.execute("SELECT record FROM subscriptions")]
        contents = [_content_from(r[0]) for r in c.execute("SELECT record FROM contents")]
        return MissionData(missions, items, changes, subs, contents)

    def _secret_sync(self) -> bytes:
        c = self._c()
        row = c.execute("SELECT value FROM meta WHERE key = 'token_secret'").fetchone()
        if row is not None:
            return bytes(row[0])
        value = secrets.token_bytes(TOKEN_SECRET_BYTES)
        c.execute("INSERT INTO meta (key, value) VALUES ('token_secret', ?)", (value,))
        return value

    def _batch_sync(self, writes: Sequence[MissionWrite]) -> None:
        """Apply ``writes`` in one transaction. Each table's writes keep their order, and runs
        of rows stored one after another in a table go in one multi-row statement (at most
        ROWS_PER_STATEMENT): the sqlite3 module releases the interpreter lock around every
        statement and must take it back from a busy event loop each time, so a thousand
        one-row statements stall while the loop is busy. Writes to different tables do not
        depend on each other; a mission's deletion touches every table, so what comes before
        it is written first."""
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            by_table: dict[str, list[tuple[str, tuple[object, ...]]]] = {}
            for w in writes:
                if w.op == "delete_mission":
                    _flush_rows(c, by_table)
                    self._delete_mission(c, *w.args)
                    continue
                table, kind, row = _ROW_OF[w.op](*w.args)
                by_table.setdefault(table, []).append((kind, row))
            _flush_rows(c, by_table)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    async def write_batch(self, writes: Sequence[MissionWrite]) -> None:
        if writes:
            await self._run(self._batch_sync, writes)

    async def load(self) -> MissionData:
        return await self._run(self._load_sync)

    async def token_secret(self) -> bytes:
        return await self._run(self._secret_sync)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_sync() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.wrap_future(self._executor.submit(close_sync))
        self._executor.shutdown(wait=True)

    async def load_logs(self) -> list[LogEntryRecord]:
        def load_sync() -> list[LogEntryRecord]:
            rows = self._c().execute("SELECT record FROM logs ORDER BY created, id")
            return [_log_from(r[0]) for r in rows]

        return await self._run(load_sync)

    def _invitations_sync(self) -> list[InvitationRecord]:
        rows = self._c().execute("SELECT record FROM invitations")
        return [InvitationRecord(**json.loads(r[0])) for r in rows]

    async def load_invitations(self) -> list[InvitationRecord]:
        return await self._run(self._invitations_sync)

    @staticmethod
    def _delete_mission(c: sqlite3.Connection, name: str) -> None:
        for table in ("items", "changes", "subscriptions", "contents", "invitations"):
            c.execute(f"DELETE FROM {table} WHERE mission = ?", (name,))
        c.execute("DELETE FROM missions WHERE name = ?", (name,))


# Rows stored in one multi-row statement at most (3 or 4 values each: far below SQLite's limit
# of 32,766 variables).
ROWS_PER_STATEMENT = 500

# Each table's columns as stored, and the statement that removes one row.
_COLUMNS = {
    "missions": "name, record",
    "items": "mission, uid, record",
    "changes": "seq, mission, record",
    "subscriptions": "mission, client_uid, record",
    "contents": "mission, hash, record",
    "logs": "id, created, record",
    "invitations": "mission, type, invitee, record",
}
_DELETE = {
    "items": "DELETE FROM items WHERE mission = ? AND uid = ?",
    "contents": "DELETE FROM contents WHERE mission = ? AND hash = ?",
    "logs": "DELETE FROM logs WHERE id = ?",
    "invitations": "DELETE FROM invitations WHERE mission = ? AND type = ? AND invitee = ?",
}

_Row = tuple[str, str, tuple[object, ...]]  # table, "replace" | "insert" | "delete", values


def _inv_row(i: InvitationRecord) -> _Row:
    return ("invitations", "replace", (i.mission, i.type, i.invitee, _dump(i)))


# What each write (but delete_mission) does to its table.
_ROW_OF: dict[str, Callable[..., _Row]] = {
    "put_mission": lambda m: ("missions", "replace", (m.name, _dump(m))),
    "put_item": lambda i: ("items", "replace", (i.mission, i.uid, _dump(i))),
    "remove_item": lambda mission, uid: ("items", "delete", (mission, uid)),
    # A plain INSERT: a change's seq is never written twice (the batch fails instead).
    "add_change": lambda ch: ("changes", "insert", (ch.seq, ch.mission, _dump(ch))),
    "put_subscription": lambda s: (
        "subscriptions",
        "replace",
        (s.mission, s.client_uid, _dump(s)),
    ),
    "put_content": lambda ct: ("contents", "replace", (ct.mission, ct.hash, _dump(ct))),
    "remove_content": lambda mission, h: ("contents", "delete", (mission, h)),
    "put_log": lambda e: ("logs", "replace", (e.id, e.created, _dump(e))),
    "delete_log": lambda entry_id: ("logs", "delete", (entry_id,)),
    "put_invitation": _inv_row,
    "delete_invitation": lambda mission, t, invitee: (
        "invitations",
        "delete",
        (mission, t, invitee),
    ),
}


def _flush_rows(
    c: sqlite3.Connection, by_table: dict[str, list[tuple[str, tuple[object, ...]]]]
) -> None:
    """Write each table's pending rows in their order, consecutive stores of one kind in one
    statement each (up to ROWS_PER_STATEMENT rows); then forget them."""
    for table, rows in by_table.items():
        i = 0
        while i < len(rows):
            kind, values = rows[i]
            if kind == "delete":
                c.execute(_DELETE[table], values)
                i += 1
                continue
            j = i
            while j < len(rows) and j - i < ROWS_PER_STATEMENT and rows[j][0] == kind:
                j += 1
            run = [v for _, v in rows[i:j]]
            marks = "(" + ", ".join("?" * len(values)) + ")"
            verb = "INSERT OR REPLACE" if kind == "replace" else "INSERT"
            c.execute(
                f"{verb} INTO {table} ({_COLUMNS[table]}) VALUES {', '.join([marks] * len(run))}",
                tuple(x for v in run for x in v),
            )
            i = j
    by_table.clear()


# --- JSON records ------------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _dump(record: object) -> str:
    return json.dumps(_plain(asdict(record)), separators=(",", ":"))  # type: ignore[call-overload]


def _event_from(d: dict[str, Any]) -> StoredEvent:
    d = dict(d)
    d["sender_groups"] = frozenset(d["sender_groups"])
    d["xml"] = str(d["xml"]).encode("utf-8")
    return StoredEvent(**d)


def _mission_from(text: str) -> MissionRecord:
    d = json.loads(text)
    d["groups"] = frozenset(d["groups"])
    d["keywords"] = tuple(d["keywords"])
    return MissionRecord(**d)


def _item_from(text: str) -> MissionItem:
    d = json.loads(text)
    d["event"] = _event_from(d["event"])
    d["keywords"] = tuple(d.get("keywords", ()))
    return MissionItem(**d)


def _change_from(seq: int, text: str) -> MissionChangeRecord:
    d = json.loads(text)
    d["sender_groups"] = frozenset(d["sender_groups"])
    return replace(MissionChangeRecord(**d), seq=seq)


def _sub_from(text: str) -> SubscriptionRecord:
    return SubscriptionRecord(**json.loads(text))


def _content_from(text: str) -> MissionContent:
    d = json.loads(text)
    d["uploader_groups"] = frozenset(d["uploader_groups"])
    d["file_keywords"] = tuple(d["file_keywords"])
    d["keywords"] = tuple(d["keywords"])
    return MissionContent(**d)


def _log_from(text: str) -> LogEntryRecord:
    d = json.loads(text)
    d["mission_names"] = tuple(d["mission_names"])
    d["content_hashes"] = tuple(d["content_hashes"])
    d["keywords"] = tuple(d["keywords"])
    d["sender_groups"] = frozenset(d["sender_groups"])
    return LogEntryRecord(**d)
