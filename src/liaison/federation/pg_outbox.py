"""A peer's outbox and link state in PostgreSQL, for a cluster's lease holder (federation/lease.py).

The same contract as the SQLite outbox (federation/outbox.py; tests/unit/federation/
test_outbox.py runs against both): sequence numbers given at first send, priority classes,
coalescing of unsent position reports, ``ack``, ``last_seq``/``last_acked``/``last_applied``,
and :meth:`PgOutbox.sync` as the durability point the link awaits before anything leaves. The
rows live in ``federation_outbox``/``federation_state``/``federation_meta`` keyed by peer, so
the node that takes the lease over continues the same numbers, resends what was not
acknowledged with the numbers it had, and the native peer's RESUME drops what it applied.

How it keeps the link's calls synchronous (the link calls the outbox from the event loop): the
outbox is held in memory (loaded when the lease is taken) and every change is also appended to
a journal of idempotent operations; one writer task commits the journal to PostgreSQL in order,
many operations per transaction (group commit, as the SQLite outbox's fsync). ``sync()`` returns
once every operation made before the call is committed. Each transaction first reads the lease
row ``FOR SHARE`` and checks the epoch this outbox was opened with: after another node took the
lease, nothing more commits, ``sync()`` raises :class:`~liaison.federation.lease.FencedError`
and the link sends nothing. A transaction whose commit outcome is unknown (connection lost, a
timeout) is tried again, at most ``MAX_RETRIES`` times in a row; the ``writer_ops`` counter it
writes tells the retry it was already applied. Any other error stops the outbox as fenced.

The stream position (``stream_seq``: the highest JetStream sequence of the events bus whose
releases are in this outbox; federation/feed.py) is written in the same transaction as those
releases, so the next holder resumes reading the stream exactly after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from liaison.errors import StorageError
from liaison.federation.lease import FencedError
from liaison.federation.outbox import MAX_TAKE, Outgoing, QueuedRelease, SendCheck

log = logging.getLogger(__name__)

# Rows one outbox holds (queued and unacknowledged): past it put_many refuses (the releases are
# logged as lost, as on a failed SQLite write). Memory per row is its payload plus ~200 bytes.
MAX_ROWS = 200_000
# Journal operations waiting for the writer; past it changes are refused (the database has been
# away for long, and the lease will be lost anyway).
MAX_JOURNAL = 100_000
# Operations committed in one transaction at most.
MAX_OPS_PER_TX = 500
# Seconds one transaction may take at most, and between attempts after a failure. Each
# transaction holds the lease row FOR SHARE, which the holder's renewal waits for: the
# transaction's limit is derived from the lease settings (tx_timeout_s) so that one slow commit
# cannot make the holder miss its renewal deadline (federation/lease.py).
TX_TIMEOUT_S = 10.0
RETRY_S = 0.5
# Attempts in a row that may fail with a connection or timeout error before the outbox gives up
# (it stops as if fenced: the lease holder then stops the links and releases the lease).
MAX_RETRIES = 10
# Seconds sync() waits for the writer before it fails (the link then closes the connection).
SYNC_TIMEOUT_S = 15.0


def tx_timeout_s(lease_ttl_s: float, lease_renew_s: float) -> float:
    """The most one outbox transaction may take under these lease settings: half of
    ``lease_ttl_s - 2 * lease_renew_s`` (the renewal, due ``lease_renew_s`` after the last, gives
    up ``lease_ttl_s - lease_renew_s`` after it), at most ``TX_TIMEOUT_S``, at least 0.1 s."""
    return max(0.1, min(TX_TIMEOUT_S, (lease_ttl_s - 2 * lease_renew_s) / 2))


def _transient() -> tuple[type[BaseException], ...]:
    """The errors a commit is tried again after: the connection or the server went away, a
    timeout, a deadlock or serialization failure. Anything else is permanent."""
    import asyncpg

    return (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.OperatorInterventionError,
        asyncpg.TransactionRollbackError,
        asyncpg.TooManyConnectionsError,
    )


@dataclass(slots=True)
class _Row:
    id: int
    seq: int | None
    priority: int
    coalesce_key: str | None
    uid: str
    type: str
    label_id: str
    sha256: str
    payload: bytes
    queued_ms: int
    groups: tuple[str, ...]

    def outgoing(self, seq: int) -> Outgoing:
        return Outgoing(
            seq=seq,
            priority=self.priority,
            payload=self.payload,
            sha256=self.sha256,
            label_id=self.label_id,
            uid=self.uid,
            type=self.type,
            groups=self.groups,
        )


# Journal operations: (kind, arguments). Every one is idempotent.
_Op = tuple[str, Any]


class PgOutbox:
    """One peer's outbox in PostgreSQL under the lease epoch ``epoch``. Use :meth:`open`."""

    def __init__(
        self,
        pool: Any,
        peer: str,
        lease: str,
        epoch: int,
        tx_timeout: float = TX_TIMEOUT_S,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self.path = f"postgresql federation_outbox peer={peer}"
        self.peer = peer
        self._pool = pool
        self._lease = lease
        self.epoch = epoch
        self._queued: dict[int, dict[int, _Row]] = {}  # priority -> {id: row}, id order
        self._coalesce: dict[str, int] = {}  # coalesce key -> id of the unsent row
        self._numbered: dict[int, _Row] = {}  # seq -> row, rising seq order
        self._meta: dict[str, str] = {}
        self._next_id = 1
        self.last_seq = 0
        self.last_acked = 0
        self.last_applied = 0
        # The stream sequence read up to; -1: this peer's link never read the stream.
        self.stream_seq = -1
        self.backlog = 0
        self.coalesced = 0
        self.dropped = 0
        self._cursor = 0
        self._journal: list[_Op] = []
        self._issued = 0  # operations appended so far
        self._committed = 0  # of those, how many are committed
        self._base_ops = 0  # writer_ops already in the database for this epoch
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # Set once nothing can commit any more: FencedError (another node holds the lease) or
        # a StorageError after a permanent failure or MAX_RETRIES failed attempts in a row.
        self.fenced: StorageError | None = None
        self._tx_timeout = tx_timeout
        self._on_retry = on_retry
        self.retries = 0  # commits tried again, since open

    @classmethod
    async def open(
        cls,
        pool: Any,
        peer: str,
        *,
        lease: str,
        epoch: int,
        tx_timeout: float = TX_TIMEOUT_S,
        on_retry: Callable[[], None] | None = None,
    ) -> PgOutbox:
        """Load ``peer``'s outbox (the lease ``lease`` held at ``epoch``) and start its writer;
        each transaction limited to ``tx_timeout`` s (:func:`tx_timeout_s`), ``on_retry``
        called at every commit tried again."""
        box = cls(pool, peer, lease, epoch, tx_timeout, on_retry)
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT id, seq, priority, coalesce_key, uid, type, label_id, sha256,"
                    " payload, queued_ms, fed_groups FROM federation_outbox WHERE peer = $1"
                    " ORDER BY id",
                    peer,
                )
                state = dict(
                    await conn.fetch(
                        "SELECT key, value FROM federation_state WHERE peer = $1", peer
                    )
                )
                meta = dict(
                    await conn.fetch("SELECT key, value FROM federation_meta WHERE peer = $1", peer)
                )
        except (OSError, TimeoutError, Exception) as exc:
            raise StorageError(f"cannot load federation outbox {peer}: {exc}") from exc
        numbered: list[_Row] = []
        for r in rows:
            row = _Row(
                id=r["id"],
                seq=r["seq"],
                priority=r["priority"],
                coalesce_key=r["coalesce_key"],
                uid=r["uid"],
                type=r["type"],
                label_id=r["label_id"],
                sha256=r["sha256"],
                payload=bytes(r["payload"]),
                queued_ms=r["queued_ms"],
                groups=tuple(r["fed_groups"].split("\n")) if r["fed_groups"] else (),
            )
            if row.seq is None:
                box._queued.setdefault(row.priority, {})[row.id] = row
                if row.coalesce_key is not None:
                    box._coalesce[row.coalesce_key] = row.id
            else:
                numbered.append(row)
            box._next_id = max(box._next_id, row.id + 1)
        for row in sorted(numbered, key=lambda x: x.seq or 0):
            assert row.seq is not None
            box._numbered[row.seq] = row
        box.backlog = len(rows)
        box.last_seq = int(state.get("last_seq", 0))
        box.last_acked = int(state.get("last_acked", 0))
        box.last_applied = int(state.get("last_applied", 0))
        box.stream_seq = int(state.get("stream_seq", -1))
        if int(state.get("writer_epoch", -1)) == epoch:
            box._base_ops = int(state.get("writer_ops", 0))
        box._meta = {str(k): str(v) for k, v in meta.items()}
        box._writer = asyncio.get_running_loop().create_task(
            box._write_loop(), name=f"fed-outbox-{peer}"
        )
        return box

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the writer (what was not committed is not written: call :meth:`aclose`)."""
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._fail_waiters(StorageError(f"federation outbox {self.peer}: closed"))

    async def aclose(self) -> None:
        """Commit what the journal holds (unless fenced or the database is away), then stop."""
        if self.fenced is None and self._writer is not None:
            with contextlib.suppress(StorageError, TimeoutError):
                async with asyncio.timeout(SYNC_TIMEOUT_S):
                    await self.sync()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._fail_waiters(StorageError(f"federation outbox {self.peer}: closed"))

    # --- durability -----------------------------------------------------------------------

    @property
    def unsynced(self) -> bool:
        return self._committed < self._issued

    async def sync(self) -> None:
        """Return once every change made before this call is committed; FencedError when
        another node holds the lease now, StorageError when the writer cannot commit in
        ``SYNC_TIMEOUT_S``."""
        if self.fenced is not None:
            raise self.fenced
        target = self._issued
        if self._committed >= target:
            return
        if self._writer is None:
            raise StorageError(f"federation outbox {self.peer}: closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                await asyncio.shield(future)
        except TimeoutError as exc:
            raise StorageError(
                f"federation outbox {self.peer}: not committed within {SYNC_TIMEOUT_S} s"
            ) from exc

    def _append(self, op: _Op) -> None:
        if self.fenced is not None:
            raise self.fenced
        if len(self._journal) >= MAX_JOURNAL:
            raise StorageError(f"federation outbox {self.peer}: {MAX_JOURNAL} changes waiting")
        self._journal.append(op)
        self._issued += 1
        self._wake.set()

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for _target, future in waiters:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a waiter that timed out leaves no warning

    async def _write_loop(self) -> None:
        transient = _transient()
        failures = 0
        while True:
            if not self._journal:
                self._wake.clear()
                await self._wake.wait()
                continue
            ops = self._journal[:MAX_OPS_PER_TX]
            done = self._base_ops + self._committed + len(ops)
            try:
                async with asyncio.timeout(self._tx_timeout):
                    await self._commit(ops, done)
            except FencedError as exc:
                self._stop(exc)
                return
            except transient as exc:  # the outcome is unknown: writer_ops tells the retry
                failures += 1
                if failures > MAX_RETRIES:
                    self._stop(
                        StorageError(f"commit failed {failures} times in a row, last: {exc!r}")
                    )
                    return
                self.retries += 1
                if self._on_retry is not None:
                    self._on_retry()
                log.warning(
                    "federation outbox %s: commit failed (%r); trying again", self.peer, exc
                )
                await asyncio.sleep(RETRY_S)
                continue
            except Exception as exc:  # permanent (a constraint, a bug): trying again cannot help
                self._stop(StorageError(f"commit failed: {exc!r}"))
                return
            failures = 0
            del self._journal[: len(ops)]
            self._committed += len(ops)
            still: list[tuple[int, asyncio.Future[None]]] = []
            for target, future in self._waiters:
                if target <= self._committed:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((target, future))
            self._waiters = still

    def _stop(self, exc: StorageError) -> None:
        """Nothing more commits: every change is refused, sync() raises ``exc``, and the lease
        holder stops the links (federation/leased.py)."""
        log.warning("federation outbox %s: %s; stopped", self.peer, exc)
        self.fenced = exc
        self._journal.clear()
        self._fail_waiters(exc)

    async def _commit(self, ops: Sequence[_Op], done: int) -> None:
        peer = self.peer
        async with self._pool.acquire() as conn, conn.transaction():
            lease = await conn.fetchrow(
                "SELECT epoch FROM federation_lease WHERE name = $1 FOR SHARE", self._lease
            )
            if lease is None or int(lease["epoch"]) != self.epoch:
                found = None if lease is None else int(lease["epoch"])
                raise FencedError(
                    f"lease {self._lease} epoch is {found}, this outbox's {self.epoch}: fenced"
                )
            applied = await conn.fetch(
                "SELECT key, value FROM federation_state WHERE peer = $1"
                " AND key IN ('writer_epoch', 'writer_ops')",
                peer,
            )
            marks = {r["key"]: int(r["value"]) for r in applied}
            if marks.get("writer_epoch") == self.epoch and marks.get("writer_ops", 0) >= done:
                return  # a retry of a transaction that did commit
            state: dict[str, int] = {}
            for kind, arg in ops:
                if kind == "put":
                    deleted, rows, stream_seq = arg
                    if deleted:
                        await conn.execute(
                            "DELETE FROM federation_outbox WHERE peer = $1 AND id = ANY($2)"
                            " AND seq IS NULL",
                            peer,
                            deleted,
                        )
                    if rows:
                        await conn.executemany(
                            "INSERT INTO federation_outbox (peer, id, seq, priority,"
                            " coalesce_key, uid, type, label_id, sha256, payload, queued_ms,"
                            " fed_groups) VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10,"
                            " $11) ON CONFLICT (peer, id) DO NOTHING",
                            [
                                (
                                    peer,
                                    r.id,
                                    r.priority,
                                    r.coalesce_key,
                                    r.uid,
                                    r.type,
                                    r.label_id,
                                    r.sha256,
                                    r.payload,
                                    r.queued_ms,
                                    "\n".join(r.groups) if r.groups else None,
                                )
                                for r in rows
                            ],
                        )
                    if stream_seq is not None:
                        state["stream_seq"] = stream_seq
                elif kind == "number":
                    assigned, bad, last_seq = arg
                    if assigned:
                        await conn.executemany(
                            "UPDATE federation_outbox SET seq = $3 WHERE peer = $1 AND id = $2",
                            [(peer, rid, seq) for seq, rid in assigned],
                        )
                    if bad:
                        await conn.execute(
                            "DELETE FROM federation_outbox WHERE peer = $1 AND id = ANY($2)",
                            peer,
                            bad,
                        )
                    state["last_seq"] = last_seq
                elif kind == "ack":
                    await conn.execute(
                        "DELETE FROM federation_outbox WHERE peer = $1 AND seq <= $2", peer, arg
                    )
                    state["last_acked"] = arg
                elif kind == "state":
                    key, value = arg
                    state[key] = value
                elif kind == "meta":
                    key, value = arg
                    await conn.execute(
                        "INSERT INTO federation_meta (peer, key, value) VALUES ($1, $2, $3)"
                        " ON CONFLICT (peer, key) DO UPDATE SET value = excluded.value",
                        peer,
                        key,
                        value,
                    )
            state["writer_epoch"] = self.epoch
            state["writer_ops"] = done
            await conn.executemany(
                "INSERT INTO federation_state (peer, key, value) VALUES ($1, $2, $3)"
                " ON CONFLICT (peer, key) DO UPDATE SET value = excluded.value",
                [(peer, k, v) for k, v in state.items()],
            )

    # --- meta -----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._append(("meta", (key, value)))
        self._meta[key] = value

    # --- sending side ---------------------------------------------------------------------

    def put_many(self, items: Sequence[QueuedRelease], stream_seq: int | None = None) -> None:
        """Queue released events (coalescing position reports); with ``stream_seq``, the
        stream position they were read up to, committed with them."""
        if not items:
            if stream_seq is not None and stream_seq > self.stream_seq:
                self._append(("state", ("stream_seq", stream_seq)))
                self.stream_seq = stream_seq
            return
        if self.backlog + len(items) > MAX_ROWS:
            raise StorageError(f"federation outbox {self.peer}: {MAX_ROWS} rows queued")
        if self.fenced is not None:
            raise self.fenced
        # The journal first (it refuses when full or fenced), memory after: a refused call
        # changes nothing, so the releases it reports lost are not sent either.
        removed = 0
        deleted: list[int] = []
        fresh: dict[int, _Row] = {}
        keys: dict[str, int] = {}  # coalesce keys this call points at a new row
        next_id = self._next_id
        for item in items:
            key = item.coalesce_key
            if key is not None:
                old = keys[key] if key in keys else self._coalesce.get(key)
                if old is not None:
                    if fresh.pop(old, None) is None:
                        deleted.append(old)
                    removed += 1
            row = _Row(
                id=next_id,
                seq=None,
                priority=item.priority,
                coalesce_key=key,
                uid=item.uid,
                type=item.type,
                label_id=item.label_id,
                sha256=item.sha256,
                payload=item.payload,
                queued_ms=item.queued_ms,
                groups=tuple(item.groups),
            )
            next_id += 1
            if key is not None:
                keys[key] = row.id
            fresh[row.id] = row
        position = stream_seq if stream_seq is not None and stream_seq > self.stream_seq else None
        self._append(("put", (deleted, list(fresh.values()), position)))
        for old in deleted:
            for rows in self._queued.values():
                if rows.pop(old, None) is not None:
                    break
        for row in fresh.values():
            self._queued.setdefault(row.priority, {})[row.id] = row
        self._queued = {p: r for p, r in self._queued.items() if r}
        self._coalesce.update(keys)
        self._next_id = next_id
        if position is not None:
            self.stream_seq = position
        self.coalesced += removed
        self.backlog += len(items) - removed

    def set_stream_seq(self, stream_seq: int) -> None:
        """The stream was read up to ``stream_seq`` with nothing more for this peer."""
        self.put_many((), stream_seq)

    def reset_stream_seq(self, stream_seq: int) -> None:
        """Set the position even backwards: the stream was made again (its sequences restarted
        below the position), so the position of the old one means nothing (federation/feed.py)."""
        self._append(("state", ("stream_seq", stream_seq)))
        self.stream_seq = stream_seq

    def start_connection(self, peer_last_applied: int) -> int:
        acked = self.ack(peer_last_applied)
        if peer_last_applied > self.last_seq:
            self._append(("state", ("last_seq", peer_last_applied)))
            self.last_seq = peer_last_applied
        self._cursor = peer_last_applied
        return acked

    def take(self, limit: int, check: SendCheck | None = None) -> list[Outgoing]:
        """As :meth:`liaison.federation.outbox.Outbox.take` (resends first, then by class)."""
        limit = max(0, min(limit, MAX_TAKE))
        if limit == 0:
            return []
        # The journal first (it refuses when full or fenced), memory after: a refused take
        # numbers nothing, so the next one cannot give a number twice.
        out: list[Outgoing] = []
        bad: list[int] = []
        bad_seqs: list[int] = []
        taken: list[tuple[int, int, _Row]] = []  # (priority, id, row) leaving the queue
        assigned: list[tuple[int, int]] = []
        numbered: list[tuple[int, _Row]] = []
        resend = [r for s, r in self._numbered.items() if s > self._cursor][:limit]
        for row in resend:
            assert row.seq is not None
            if check is not None and not check(row.payload, row.label_id, row.uid, row.type):
                bad.append(row.id)
                bad_seqs.append(row.seq)
                continue
            out.append(row.outgoing(row.seq))
        room = limit - len(resend)
        next_seq = self.last_seq
        if room > 0:
            for priority in sorted(self._queued):
                rows = self._queued[priority]
                for rid in list(rows)[:room]:
                    row = rows[rid]
                    room -= 1
                    taken.append((priority, rid, row))
                    if check is not None and not check(
                        row.payload, row.label_id, row.uid, row.type
                    ):
                        bad.append(rid)
                        continue
                    next_seq += 1
                    numbered.append((next_seq, row))
                    assigned.append((next_seq, rid))
                    out.append(row.outgoing(next_seq))
                if room <= 0:
                    break
        if assigned or bad:
            self._append(("number", (assigned, bad, next_seq)))
        for seq in bad_seqs:
            del self._numbered[seq]
        for priority, rid, row in taken:
            del self._queued[priority][rid]
            if row.coalesce_key is not None and self._coalesce.get(row.coalesce_key) == rid:
                del self._coalesce[row.coalesce_key]
        for seq, row in numbered:
            row.seq = seq
            self._numbered[seq] = row
        if taken:
            self._queued = {p: r for p, r in self._queued.items() if r}
        if assigned or bad:
            self.last_seq = next_seq
            self.backlog -= len(bad)
            self.dropped += len(bad)
        if out:
            self._cursor = max(self._cursor, out[-1].seq)
        return out

    def ack(self, seq: int) -> int:
        if seq <= self.last_acked:
            return 0
        gone = [s for s in self._numbered if s <= seq]
        self._append(("ack", seq))
        for s in gone:
            del self._numbered[s]
        self.last_acked = seq
        self.backlog -= len(gone)
        return len(gone)

    @property
    def in_flight(self) -> int:
        return max(0, self._cursor - self.last_acked)

    def pending_uids(self) -> list[str]:
        queued = sorted(
            (r for rows in self._queued.values() for r in rows.values()),
            key=lambda r: (r.priority, r.id),
        )
        return [r.uid for r in self._numbered.values()] + [r.uid for r in queued]

    # --- receiving side -------------------------------------------------------------------

    def is_duplicate(self, seq: int) -> bool:
        return seq <= self.last_applied

    def record_applied(self, seq: int) -> None:
        if seq <= self.last_applied:
            return
        self._append(("state", ("last_applied", seq)))
        self.last_applied = seq
