"""The persistent per-peer outbox and link state: data_dir/federation/<peer>.db (SQLite, WAL).

What the guard released to a peer waits here until the peer acknowledges it, across link
outages and restarts of either server. One file per peer holds both directions' state:

* ``outbox``: released events not yet acknowledged. A row gets its link sequence number when
  it is first sent (``take``), not when it is queued, so the numbers on the wire always rise in
  sending order even though emergencies and chats jump the queue (lower ``priority`` first,
  then queue order). A resend after a reconnect reuses the number, which is how the receiver
  recognises a duplicate. ``ack(n)`` deletes every row numbered up to ``n``.
* coalescing: a position report queued with a ``coalesce_key`` (its uid) replaces one with the
  same key that was not sent yet; the newer one goes to the back of the queue so that anything
  queued between the two (a delete of that uid, say) keeps its order relative to it. Chats,
  markers and deletes never carry a key.
* ``state``: ``last_seq`` (the highest number handed out), ``last_acked``, and ``last_applied``:
  the highest number this side applied *from* the peer, sent in RESUME and used to drop
  duplicates; it is committed before the ACK that covers it is sent.

Calls are synchronous and short (one transaction per batch); the link calls them from the event
loop. A commit does not wait for the disk there (``synchronous=NORMAL`` in WAL mode: it is a
write into the page cache). Durability is :meth:`Outbox.sync`: it fsyncs the database and its
write-ahead log in a worker thread, never on the event loop, and returns once every commit made
before the call is on disk. The link awaits it before anything that depends on it leaves the
server: rows (and the sequence numbers they were given) are written to the peer, and an ACK for
what we applied is sent, only after their fsync completed, so an event acknowledged or sent
survives a power cut. Pending work is bounded: at most one fsync runs per outbox, and every
commit made while it runs is covered by the single next one (group commit).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from liaison.errors import StorageError

SCHEMA_VERSION = 1

# Most rows one take() returns: bounds memory per call and the work of one event-loop turn.
MAX_TAKE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER,
    priority INTEGER NOT NULL,
    coalesce_key TEXT,
    uid TEXT NOT NULL,
    type TEXT NOT NULL,
    label_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    payload BLOB NOT NULL,
    queued_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_seq ON outbox (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (priority, id) WHERE seq IS NULL;
CREATE INDEX IF NOT EXISTS outbox_coalesce ON outbox (coalesce_key)
    WHERE seq IS NULL AND coalesce_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Added to schema 1 in place (nullable, so older files only gain the column): the federate group
# names a row carries on a TAK link (federation/fed_groups.py), newline-separated.
_GROUPS_COLUMN = "fed_groups"


_INSERT = (
    "INSERT INTO outbox (priority, coalesce_key, uid, type, label_id, sha256,"
    " payload, queued_ms, fed_groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _join(groups: Sequence[str]) -> str | None:
    return "\n".join(groups) if groups else None


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(text.split("\n")) if text else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedRelease:
    """What the link hands the outbox for one released event."""

    payload: bytes
    sha256: str
    label_id: str
    uid: str
    type: str
    priority: int
    coalesce_key: str | None
    queued_ms: int
    groups: tuple[str, ...] = ()  # federate group names (TAK links; fed_groups.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """A row ready to send: its link sequence number, priority class and bytes."""

    seq: int
    priority: int
    payload: bytes
    sha256: str
    label_id: str
    uid: str
    type: str
    groups: tuple[str, ...] = ()  # federate group names (TAK links; fed_groups.py)


# Given a row's payload, uid and type: may it still be sent? (The link re-checks it.)
SendCheck = Callable[[bytes, str, str, str], bool]


class Outbox:
    """One peer's outbox and link state. Use :meth:`open`; close when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, durable: bool = True) -> None:
        self.path = path
        self._conn = conn
        self._durable = durable
        self._commits = 0  # transactions committed so far
        self._synced = 0  # of those, how many the last completed fsync covers
        # The one fsync in a worker thread, and how many commits it covers.
        self._fsync: tuple[asyncio.Future[None], int] | None = None
        state = dict(conn.execute("SELECT key, value FROM state").fetchall())
        self.last_seq: int = state.get("last_seq", 0)
        self.last_acked: int = state.get("last_acked", 0)
        self.last_applied: int = state.get("last_applied", 0)
        self.backlog: int = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self.coalesced = 0
        self.dropped = 0
        self._cursor = 0  # highest seq handed out on the current connection

    @classmethod
    def open(cls, path: Path, *, durable: bool = True) -> Outbox:
        """Open or create the outbox at ``path``. ``durable=False`` (tests, tmpfs) skips fsync."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is not synced on the loop; sync() makes it durable off the loop.
            conn.execute(f"PRAGMA synchronous={'NORMAL' if durable else 'OFF'}")
            conn.executescript(_SCHEMA)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)").fetchall()}
            if _GROUPS_COLUMN not in columns:
                conn.execute(f"ALTER TABLE outbox ADD COLUMN {_GROUPS_COLUMN} TEXT")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                conn.close()
                raise StorageError(f"{path}: outbox schema {row[0]}, expected {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open federation outbox {path}: {exc}") from exc
        return cls(path, conn, durable=durable)

    def close(self) -> None:
        """Close the file; what was committed and not synced yet is synced first (shutdown)."""
        if self._durable and self._synced < self._commits:
            try:
                self._fsync_files()
            except OSError as exc:
                self._conn.close()
                raise StorageError(f"federation outbox {self.path}: fsync: {exc}") from exc
        self._conn.close()

    # --- durability -----------------------------------------------------------------------------

    async def sync(self) -> None:
        """Return once every commit made before this call is on disk (a no-op when not durable).

        The fsync runs in a worker thread. One at a time: a caller arriving while one runs that
        does not cover its commits waits for it, then starts (or joins) the next. A cancelled
        caller does not cancel the fsync others wait for.
        """
        if not self._durable:
            return
        target = self._commits
        while self._synced < target:
            if self._fsync is None:
                future = asyncio.get_running_loop().run_in_executor(None, self._fsync_files)
                self._fsync = (future, self._commits)
            running, covers = self._fsync
            # Every waiter settles the fsync it saw itself, as soon as it is done: a waiter must
            # never spin on a finished future whose completion callback has not run yet (awaiting
            # a done future does not yield to the event loop).
            try:
                await asyncio.shield(running)
            except OSError as exc:
                if self._fsync is not None and self._fsync[0] is running:
                    self._fsync = None  # the next caller tries again
                raise StorageError(f"federation outbox {self.path}: fsync: {exc}") from exc
            if self._fsync is not None and self._fsync[0] is running:
                self._fsync = None
            self._synced = max(self._synced, covers)

    @property
    def unsynced(self) -> bool:
        """Whether some commit is not known to be on disk yet."""
        return self._durable and self._synced < self._commits

    def _fsync_files(self) -> None:
        """fsync the write-ahead log (where commits land) and the database (checkpoints)."""
        for name in (f"{self.path}-wal", str(self.path)):
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- helpers -----------------------------------------------------------------------------

    def _tx(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._commits += 1
        except sqlite3.Error as exc:
            raise StorageError(f"federation outbox {self.path}: {exc}") from exc

    @staticmethod
    def _set_state(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._tx(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # --- sending side ---------------------------------------------------------------------------

    def put_many(self, items: Sequence[QueuedRelease]) -> None:
        """Queue released events in one durable transaction (coalescing position reports)."""
        if not items:
            return
        removed = 0

        def values(item: QueuedRelease) -> tuple[object, ...]:
            return (
                item.priority,
                item.coalesce_key,
                item.uid,
                item.type,
                item.label_id,
                item.sha256,
                item.payload,
                item.queued_ms,
                _join(item.groups),
            )

        def run(conn: sqlite3.Connection) -> None:
            nonlocal removed
            if all(item.coalesce_key is None for item in items):
                # Nothing to replace: one statement for the whole batch, rows in batch order.
                conn.executemany(_INSERT, [values(item) for item in items])
                return
            for item in items:
                if item.coalesce_key is not None:
                    cur = conn.execute(
                        "DELETE FROM outbox WHERE coalesce_key = ? AND seq IS NULL",
                        (item.coalesce_key,),
                    )
                    removed += cur.rowcount
                conn.execute(_INSERT, values(item))

        self._tx(run)
        self.coalesced += removed
        self.backlog += len(items) - removed

    def start_connection(self, peer_last_applied: int) -> int:
        """A connection opened and the peer said RESUME(``peer_last_applied``).

        Everything up to it counts as acknowledged. If the peer is ahead of what we ever
        numbered (our file was replaced), numbering continues after its value, so nothing new
        is mistaken for a duplicate. Returns how many queued rows were acknowledged by this.
        """
        acked = self.ack(peer_last_applied)
        if peer_last_applied > self.last_seq:
            value = peer_last_applied
            self._tx(lambda c: self._set_state(c, "last_seq", value))
            self.last_seq = value
        self._cursor = peer_last_applied
        return acked

    def take(self, limit: int, check: SendCheck | None = None) -> list[Outgoing]:
        """The next rows to send on this connection, in sending order, at most ``limit``.

        First rows numbered on an earlier connection and not acknowledged (resent with their
        numbers), then queued rows, most urgent class first, each given the next number. Rows
        that fail ``check`` are deleted and counted in ``dropped`` instead.
        """
        limit = max(0, min(limit, MAX_TAKE))
        if limit == 0:
            return []
        conn = self._conn
        out: list[Outgoing] = []
        bad: list[int] = []
        assigned: list[tuple[int, int]] = []
        try:
            resend = conn.execute(
                "SELECT id, seq, priority, payload, sha256, label_id, uid, type, fed_groups"
                " FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._cursor, limit),
            ).fetchall()
            for rid, seq, prio, payload, sha, lid, uid, typ, grp in resend:
                if check is not None and not check(payload, lid, uid, typ):
                    bad.append(rid)
                    continue
                out.append(
                    Outgoing(
                        seq=seq,
                        priority=prio,
                        payload=payload,
                        sha256=sha,
                        label_id=lid,
                        uid=uid,
                        type=typ,
                        groups=_split(grp),
                    )
                )
            room = limit - len(resend)
            next_seq = self.last_seq
            if room > 0 and len(resend) < limit:
                fresh = conn.execute(
                    "SELECT id, priority, payload, sha256, label_id, uid, type, fed_groups"
                    " FROM outbox WHERE seq IS NULL ORDER BY priority, id LIMIT ?",
                    (room,),
                ).fetchall()
                for rid, prio, payload, sha, lid, uid, typ, grp in fresh:
                    if check is not None and not check(payload, lid, uid, typ):
                        bad.append(rid)
                        continue
                    next_seq += 1
                    assigned.append((next_seq, rid))
                    out.append(
                        Outgoing(
                            seq=next_seq,
                            priority=prio,
                            payload=payload,
                            sha256=sha,
                            label_id=lid,
                            uid=uid,
                            type=typ,
                            groups=_split(grp),
                        )
                    )
        except sqlite3.Error as exc:
            raise StorageError(f"federation outbox {self.path}: {exc}") from exc
        if assigned or bad:
            final_seq = next_seq

            def run(c: sqlite3.Connection) -> None:
                c.executemany("UPDATE outbox SET seq = ? WHERE id = ?", assigned)
                c.executemany("DELETE FROM outbox WHERE id = ?", [(b,) for b in bad])
                self._set_state(c, "last_seq", final_seq)

            self._tx(run)
            self.last_seq = final_seq
            self.backlog -= len(bad)
            self.dropped += len(bad)
        if out:
            self._cursor = max(self._cursor, out[-1].seq)
        return out

    def ack(self, seq: int) -> int:
        """The peer applied everything up to ``seq``: delete those rows. Returns how many."""
        if seq <= self.last_acked:
            return 0
        deleted = 0

        def run(conn: sqlite3.Connection) -> None:
            nonlocal deleted
            cur = conn.execute("DELETE FROM outbox WHERE seq IS NOT NULL AND seq <= ?", (seq,))
            deleted = cur.rowcount
            self._set_state(conn, "last_acked", seq)

        self._tx(run)
        self.last_acked = seq
        self.backlog -= deleted
        return deleted

    @property
    def in_flight(self) -> int:
        """Rows sent on this connection and not acknowledged yet."""
        return max(0, self._cursor - self.last_acked)

    def pending_uids(self) -> list[str]:
        """Uids of queued rows in sending order (for tests and the status command)."""
        rows = self._conn.execute(
            "SELECT uid FROM outbox ORDER BY seq IS NULL, seq, priority, id"
        ).fetchall()
        return [r[0] for r in rows]

    # --- receiving side -----------------------------------------------------------------------

    def is_duplicate(self, seq: int) -> bool:
        return seq <= self.last_applied

    def record_applied(self, seq: int) -> None:
        """Durably note that everything from the peer up to ``seq`` was applied."""
        if seq <= self.last_applied:
            return
        self._tx(lambda c: self._set_state(c, "last_applied", seq))
        self.last_applied = seq


def outbox_path(data_dir: Path, peer: str) -> Path:
    return data_dir / "federation" / f"{peer}.db"
