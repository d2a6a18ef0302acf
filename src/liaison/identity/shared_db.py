"""Users, the issued-certificate index, the CRL and web sign-ins in PostgreSQL, shared by every
node that points at the same database (docs/deployment.md "Users, certificates and sign-ins").

The identity layer is synchronous: a TLS handshake, a password check and the ``liaison user``
commands ask it directly. This module gives it a synchronous face over asyncpg: one thread of its
own runs an asyncio loop holding two connections, one for statements and one that LISTENs on
``liaison_identity``. Reads come from a copy in memory that this thread keeps current; a change
made anywhere (another node, the CLI) bumps a sequence, NOTIFYs, and every node re-reads the rows
whose ``seq`` is newer than the last it has seen, within milliseconds. A poll every
``POLL_S`` seconds is the backstop when a notification is lost (the listening connection was
re-made).

Writes are transactions: every change of a user, of the certificate index and of the CRL takes
one PostgreSQL advisory lock (``_LOCK``), so two nodes (or a node and the CLI) never interleave a
read-modify-write; the copy in memory is updated before the call returns (read your writes).

The tables (``identity_users``, ``identity_certs``, ``identity_crl``, ``identity_sessions``) are
made by the store's migration (storage/postgresql.py, step 1 -> 2), the bearer token tables
(``identity_token_keys``, ``identity_refresh_redeemed``) by step 2 -> 3; this module never
creates them. asyncpg is imported only when this module is (a ``postgresql://`` storage).

Opening imports, once, what the node's data folder held before (identity/db_import.py): when
``identity_users`` is empty the users of ``users.json``, when ``identity_certs`` is empty the
index ``pki/issued.json`` and the CRL ``pki/crl.pem``; in one transaction under ``_LOCK``, so of
two nodes opening at once one imports and the other finds the tables filled. Once a table holds
anything, nothing is imported into it again (a file that holds users the database lacks is
logged as a warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from liaison import pg_locks
from liaison.errors import PkiError, StorageError
from liaison.identity.db_import import (
    ImportReport,
    LocalIdentity,
    names,
    users_differing,
)
from liaison.identity.issue import record_from_json
from liaison.identity.users import _user_from_json
from liaison.metrics import Metrics

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise StorageError(
        "users and certificates in PostgreSQL need asyncpg: pip install 'liaison[postgresql]'"
    ) from exc

log = logging.getLogger(__name__)

T = TypeVar("T")

# The NOTIFY channel every change is announced on; its payload is empty (the rows say what).
CHANNEL = "liaison_identity"
# Seconds between two looks at the tables without a notification: the bound on how late a
# change is seen when a notification was lost (the task asks for under 1 s).
POLL_S = 0.5
# Seconds one call may take (connect, statement, transaction) before it fails with StorageError:
# a stalled database must not hang a handshake or a login forever.
CALL_TIMEOUT_S = 10.0
# Seconds the open may take when it imports the data folder (identity/db_import.py), and a node
# waits for another's import: 20,000 users and 20,000 certificates import in 1.2 s, 100,000 of
# each in 9.1 s on the 2-core test machine at load 3.5 (bench/identity_import_bench.py), past
# CALL_TIMEOUT_S but well within this.
IMPORT_TIMEOUT_S = 60.0
# pg_advisory_xact_lock key held by every identity write (pg_locks.py).
_LOCK = pg_locks.IDENTITY
# Web sign-ins kept in the table; past it the oldest is deleted (as WebSessions' own bound,
# api/auth.py MAX_WEB_SESSIONS).
MAX_SHARED_SESSIONS = 10_000

# Expired redeemed refresh tokens deleted per redemption: bounds the work of one refresh; a
# redemption happens once per access token lifetime per client, so the table keeps up.
REDEEMED_PRUNE_BATCH = 1000

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# What reading one row's record may raise (json.loads, also RecursionError on deep nesting; the
# parsers of users.py and issue.py).
_RECORD_ERRORS = (ValueError, KeyError, TypeError, AttributeError, RecursionError, PkiError)


def _record(text: str, parse: Callable[[dict[str, Any]], object], what: str) -> dict[str, Any]:
    """``text`` as a JSON object that ``parse`` (the reader of users.py or issue.py) accepts;
    ValueError naming ``what`` when it is not."""
    try:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        parse(record)
    except _RECORD_ERRORS as exc:
        raise ValueError(f"{what}: unreadable record: {exc!r}") from exc
    return record


def user_record(name: str, text: str) -> dict[str, Any]:
    """Row ``name`` of ``identity_users``: its record, checked as users.py reads it (a JSON
    object that parses as a user of that name). Raises ValueError when it does not."""
    record = _record(text, _user_from_json, f"user {name!r}")
    if str(record["name"]) != name:  # as users.py reads it (present: parsed above)
        raise ValueError(f"user {name!r}: the record names {record['name']!r}")
    return record


def cert_record(serial: str, text: str) -> dict[str, Any]:
    """Row ``serial`` of ``identity_certs``: its record, checked as issue.py reads it (a JSON
    object that parses as an index item of that serial). Raises ValueError when it does not."""
    record = _record(text, record_from_json, f"certificate {serial}")
    if record.get("serial") != serial:
        raise ValueError(f"certificate {serial}: the record names {record.get('serial')!r}")
    return record


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedSignIn:
    """One web sign-in as the table holds it (the token itself is never stored, only its
    SHA-256)."""

    username: str
    csrf: str
    created: dt.datetime
    seen: dt.datetime


def token_key(token: str) -> str:
    """The table's key for a sign-in cookie: SHA-256 of the token, hex (256-bit tokens need no
    salt or slow hash, as enrollment tokens, identity/users.py)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class IdentityDb:
    """The shared identity tables of one PostgreSQL database, for synchronous callers.

    ``open`` connects (the schema must already be migrated) and reads everything; ``close``
    stops the thread. Every method may raise StorageError when the database cannot answer.
    """

    def __init__(
        self, url: str, *, where: str, schema: str | None = None, metrics: Metrics | None = None
    ) -> None:
        """Private: use :meth:`open`."""
        metrics = metrics if metrics is not None else Metrics()
        # Counted on this module's thread only (the one that reads the rows).
        self.m_refused = metrics.counter(
            "liaison_identity_rows_refused_total",
            "Rows of the shared identity tables refused because their record is unreadable",
            "table",
        )
        self.m_poll_errors = metrics.counter(
            "liaison_identity_poll_errors_total",
            "Looks at the shared identity tables that failed (tried again at the next)",
        )
        self._url = url
        self._where = where
        self._schema = schema
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="identity-db", daemon=True
        )
        self._conn: Any = None
        self._listen: Any = None
        self._wake: asyncio.Event | None = None
        self._busy: asyncio.Lock | None = None  # one operation at a time on _conn (asyncpg's rule)
        self._closing = False
        self._poller: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # guards the copies below (swapped whole, read anywhere)
        self._users: dict[str, dict[str, Any]] = {}
        self._users_seq = 0
        self._certs: dict[str, tuple[int, dict[str, Any]]] = {}  # serial hex -> (order, item)
        self._certs_seq = 0
        self._crl: tuple[int, bytes | None, bytes | None] = (0, None, None)
        self._crl_seq = 0
        # The bearer token signing keys (identity/tokens.py's JSON form, oldest first), and
        # (max seq, count) of the table when they were read: a rotation deletes rows, so the
        # rows are re-read whole when either moved.
        self._token_keys: list[dict[str, Any]] = []
        self._token_keys_stamp: tuple[int, int] = (0, 0)
        self.version = 0  # bumped whenever any copy changes
        self._local: LocalIdentity | None = None
        # What opening imported from the data folder (None: nothing was offered to import).
        self.imported: ImportReport | None = None

    # -- lifetime --

    @classmethod
    def open(
        cls,
        url: str,
        *,
        where: str,
        schema: str | None = None,
        local: LocalIdentity | None = None,
        metrics: Metrics | None = None,
    ) -> IdentityDb:
        """Connect and read everything. With ``local`` (the data folder's users and index,
        identity/db_import.py) an empty table is first filled from it, once in the cluster; a
        part of ``local`` that could not be read refuses the open (ImportRefused) when that part
        was to be imported, and nothing at all is imported then. ``metrics`` gets this module's
        counters (``liaison_identity_*``)."""
        db = cls(url, where=where, schema=schema, metrics=metrics)
        db._local = local
        db._thread.start()
        try:
            db._run(db._connect(), IMPORT_TIMEOUT_S if local is not None else CALL_TIMEOUT_S)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self._run(self._disconnect(), timeout=5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        if threading.current_thread() is self._thread:  # pragma: no cover - a programming error
            raise RuntimeError("IdentityDb called from its own thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError as exc:
            fut.cancel()
            raise StorageError(f"postgresql {self._where}: no answer within {timeout} s") from exc
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql {self._where}: {exc}") from exc

    async def _new_conn(self) -> Any:
        settings = {"search_path": f"{self._schema}, public"} if self._schema else {}
        return await asyncpg.connect(
            self._url,
            timeout=CALL_TIMEOUT_S,
            command_timeout=CALL_TIMEOUT_S,
            server_settings=settings,
        )

    async def _connect(self) -> None:
        self._wake = asyncio.Event()
        self._busy = asyncio.Lock()
        self._conn = await self._new_conn()
        # Listening before the first read: no change made after it can go unnoticed.
        self._listen = await self._new_conn()
        await self._listen.add_listener(CHANNEL, self._notified)
        async with self._busy:
            if self._local is not None:
                self.imported = await self._import(self._local)
            await self._refresh()
        if self._local is not None and self.imported is not None:
            self._report(self._local, self.imported)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="identity-poll")

    async def _import(self, local: LocalIdentity) -> ImportReport:
        """Fill the empty tables from ``local`` in one transaction under the identity lock
        (``_busy`` held). Raises the part's ImportRefused when that part is to be imported and
        could not be read: the transaction is rolled back, nothing is imported."""
        conn = self._conn
        report = ImportReport()
        async with conn.transaction():
            # Another node may be importing: wait for its transaction as long as an import may
            # take, not a statement's CALL_TIMEOUT_S.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK, timeout=IMPORT_TIMEOUT_S)
            has_users = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM identity_users)")
            has_certs = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM identity_certs)")
            if not has_users:
                if local.users_error is not None:
                    raise local.users_error
                if local.users is not None and local.users.records:
                    await conn.executemany(
                        "INSERT INTO identity_users (name, record, seq)"
                        " VALUES ($1, $2, nextval('identity_seq'))",
                        [
                            (name, json.dumps(record, sort_keys=True))
                            for name, record in sorted(local.users.records.items())
                        ],
                        timeout=IMPORT_TIMEOUT_S,
                    )
                    report.users = len(local.users.records)
                    report.users_from = local.users.path
            if not has_certs:
                if local.certs_error is not None:
                    raise local.certs_error
                certs = local.certs
                if certs is not None and certs.items:
                    # In the file's order (executemany runs its rows in order): n, the issue
                    # order, follows it.
                    await conn.executemany(
                        "INSERT INTO identity_certs (serial, record, seq)"
                        " VALUES ($1, $2, nextval('identity_seq'))",
                        [(i["serial"], json.dumps(i, sort_keys=True)) for i in certs.items],
                        timeout=IMPORT_TIMEOUT_S,
                    )
                    report.certs = len(certs.items)
                    report.revoked = sum(1 for i in certs.items if i["revoked_at"] is not None)
                    report.certs_from = certs.path
                    # The CRL comes along unless a node already signed one with a number at
                    # least as high (CRL numbers only increase, RFC 5280 5.2.3); a CRL that then
                    # lacks an imported revocation is re-signed at start (revocation.py
                    # crl_needs_refresh).
                    current = await conn.fetchval(
                        "SELECT crl_number FROM identity_crl WHERE id = 1"
                    )
                    if certs.crl_pem is not None and (
                        current is None or certs.crl_number > current
                    ):
                        await conn.execute(
                            "INSERT INTO identity_crl (id, crl_number, pem, der, seq)"
                            " VALUES (1, $1, $2, $3, nextval('identity_seq'))"
                            " ON CONFLICT (id) DO UPDATE SET crl_number = $1, pem = $2,"
                            " der = $3, seq = nextval('identity_seq')",
                            certs.crl_number,
                            certs.crl_pem,
                            certs.crl_der,
                        )
                        report.crl_number = certs.crl_number
                        report.crl_from = certs.crl_path
            if report.anything:
                await conn.execute(f"NOTIFY {CHANNEL}")
        return report

    def _report(self, local: LocalIdentity, report: ImportReport) -> None:
        """Log what was imported, or what of the data folder is ignored (the copies read)."""
        if report.users:
            log.info(
                "imported %d users from %s into the identity tables of postgresql %s",
                report.users,
                report.users_from,
                self._where,
            )
        elif local.users is not None and self._users:
            missing, differ = users_differing(local.users, self._users)
            if missing:
                log.warning(
                    "%s holds %d users the database lacks (%s): not imported, the database"
                    " already holds users (add them with `liaison user add`)",
                    local.users.path,
                    len(missing),
                    names(missing),
                )
            if differ:
                log.info(
                    "%s: %d users differ from the database's (%s); the database's are used",
                    local.users.path,
                    len(differ),
                    names(differ),
                )
        elif local.users_error is not None:
            log.warning("not imported, the database already holds users: %s", local.users_error)
        if report.certs or report.crl_number is not None:
            crl = (
                f"; CRL number {report.crl_number} from {report.crl_from}"
                if report.crl_number is not None
                else ""
            )
            log.info(
                "imported %d issued certificates (%d revoked) from %s into postgresql %s%s",
                report.certs,
                report.revoked,
                report.certs_from,
                self._where,
                crl,
            )
        elif local.certs is not None and self._certs:
            lacking = [i for i in local.certs.items if i["serial"] not in self._certs]
            if lacking:
                revoked = [i["serial"] for i in lacking if i["revoked_at"] is not None]
                log.warning(
                    "%s lists %d certificates the database lacks (serials %s): not imported,"
                    " the database already holds issued certificates%s",
                    local.certs.path,
                    len(lacking),
                    names([i["serial"] for i in lacking]),
                    f"; {len(revoked)} of them revoked here ({names(revoked)}) are NOT refused"
                    " by this cluster: revoke their users again (liaison user revoke NAME)"
                    if revoked
                    else "",
                )
        elif local.certs_error is not None:
            log.warning(
                "not imported, the database already holds certificates: %s", local.certs_error
            )

    async def _disconnect(self) -> None:
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for conn in (self._listen, self._conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2.0)

    async def _poll(self) -> None:
        """Keep the copies current: wake on a NOTIFY or every POLL_S; re-make lost connections.

        A pass that fails for any reason is logged and counted, and the next one comes as
        usual: this task ending would freeze the copies (revocations, users and token keys
        changed on other nodes never seen here) without anyone noticing."""
        assert self._wake is not None and self._busy is not None
        while not self._closing:
            try:
                if self._listen is None or self._listen.is_closed():
                    self._listen = await self._new_conn()
                    await self._listen.add_listener(CHANNEL, self._notified)
                async with self._busy:
                    if self._conn.is_closed():
                        self._conn = await self._new_conn()
                    await self._refresh()
            except (*_DRIVER_ERRORS, TimeoutError) as exc:
                self.m_poll_errors.inc()
                log.warning("identity tables in postgresql %s: %s", self._where, exc)
                self._listen = None
            except Exception:
                self.m_poll_errors.inc()
                log.exception("identity tables in postgresql %s: a look failed", self._where)
            self._wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancellation
            # that arrives with its timeout, and close() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()

    def _notified(self, *_args: object) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _refresh(self) -> None:
        """Read the rows changed since the last look into the copies (``_busy`` held).

        ``seq`` is taken only under the identity lock, so rows commit in ``seq`` order and the
        newest seen is a safe place to start the next look from."""
        conn = self._conn
        users = await conn.fetch(
            "SELECT name, record, seq FROM identity_users WHERE seq > $1 ORDER BY seq",
            self._users_seq,
        )
        certs = await conn.fetch(
            "SELECT serial, record, seq, n FROM identity_certs WHERE seq > $1 ORDER BY seq",
            self._certs_seq,
        )
        crl = await conn.fetchrow(
            "SELECT crl_number, pem, der, seq FROM identity_crl WHERE id = 1 AND seq > $1",
            self._crl_seq,
        )
        stamp_row = await conn.fetchrow(
            "SELECT coalesce(max(seq), 0) AS seq, count(*) AS n FROM identity_token_keys"
        )
        keys_stamp = (int(stamp_row["seq"]), int(stamp_row["n"]))
        keys = None
        if keys_stamp != self._token_keys_stamp:
            rows = await conn.fetch(
                "SELECT kid, created, retired, pem FROM identity_token_keys ORDER BY created, seq"
            )
            keys = [dict(r) for r in rows]
        if not users and not certs and crl is None and keys is None:
            return
        # Each row is read on its own: one that cannot be read is refused (logged, counted) and
        # the others are taken; the seq moves past it all the same, so it never blocks a later
        # look (it is read again when it is next written).
        user_records: list[tuple[str, dict[str, Any] | None]] = []
        for row in users:
            try:
                user_records.append((row["name"], user_record(row["name"], row["record"])))
            except ValueError as exc:
                # The user is left out of the copy (signs in nowhere through this node) until a
                # good record is written: what the row says now is not known.
                self._refuse("identity_users", exc)
                user_records.append((row["name"], None))
        cert_records: list[tuple[str, int, dict[str, Any]]] = []
        for row in certs:
            try:
                cert_records.append(
                    (row["serial"], row["n"], cert_record(row["serial"], row["record"]))
                )
            except ValueError as exc:
                # The item held before (if any) stays: a revoked certificate stays revoked.
                self._refuse("identity_certs", exc)
        with self._lock:
            if users:
                merged = dict(self._users)
                for name, record in user_records:
                    if record is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = record
                self._users = merged
                self._users_seq = max(self._users_seq, users[-1]["seq"])
            if certs:
                index = dict(self._certs)
                for serial, n, item in cert_records:
                    index[serial] = (n, item)
                self._certs = dict(sorted(index.items(), key=lambda kv: kv[1][0]))
                self._certs_seq = max(self._certs_seq, certs[-1]["seq"])
            if crl is not None:
                self._crl = (int(crl["crl_number"]), crl["pem"], crl["der"])
                self._crl_seq = max(self._crl_seq, crl["seq"])
            if keys is not None:
                self._token_keys = keys
                self._token_keys_stamp = keys_stamp
            self.version += 1

    def _refuse(self, table: str, exc: Exception) -> None:
        self.m_refused.inc(table)
        log.error("identity tables in postgresql %s: %s row refused: %s", self._where, table, exc)

    async def _write(self, job: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``job(conn)`` in one transaction under the identity lock, NOTIFY, re-read."""
        assert self._busy is not None
        async with self._busy:
            conn = self._conn
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                result = await job(conn)
                await conn.execute(f"NOTIFY {CHANNEL}")
            await self._refresh()
            return result

    # -- users (records in identity/users.py's JSON form) --

    def users(self) -> dict[str, dict[str, Any]]:
        """Every user's record by name, as of the last look (no database call)."""
        return self._users

    def change_user(
        self, name: str, fn: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read user ``name``'s record (None when there is none) under the lock, store what
        ``fn`` returns (None: nothing to store) and return it. ``fn`` runs on this module's
        thread and may raise (nothing is written then). What ``fn`` returns is checked as every
        node will read it (``user_record``) before anything is written: ValueError, nothing
        written, when it would not be readable. A stored record that cannot be read is a
        StorageError (nothing written)."""

        async def job(conn: Any) -> dict[str, Any] | None:
            raw = await conn.fetchval("SELECT record FROM identity_users WHERE name = $1", name)
            try:
                old = None if raw is None else user_record(name, raw)
            except ValueError as exc:
                raise StorageError(f"postgresql {self._where}: {exc}") from exc
            new = fn(old)
            if new is not None and new != old:
                text = json.dumps(new, sort_keys=True)
                user_record(name, text)  # ValueError: the transaction is rolled back
                await conn.execute(
                    "INSERT INTO identity_users (name, record, seq)"
                    " VALUES ($1, $2, nextval('identity_seq'))"
                    " ON CONFLICT (name) DO UPDATE SET record = $2, seq = nextval('identity_seq')",
                    name,
                    text,
                )
            return new if new is not None else old

        return self._run(self._write(job))

    # -- the issued-certificate index (items in identity/issue.py's JSON form) and the CRL --

    def cert_items(self) -> list[dict[str, Any]]:
        """Every issued certificate's index item, oldest first (no database call)."""
        return [dict(item) for _, item in self._certs.values()]

    @property
    def certs_seq(self) -> int:
        return self._certs_seq

    def crl(self) -> tuple[int, bytes | None, bytes | None]:
        """(CRL number, PEM, DER) of the newest CRL signed by any node (no database call)."""
        return self._crl

    def change_index(
        self,
        fn: Callable[[int, list[dict[str, Any]]], tuple[list[dict[str, Any]], Any]],
    ) -> Any:
        """Under the lock: ``fn(crl_number, items)`` returns the items to insert or replace and
        a result; an item holding ``"crl"`` (``{"number", "pem", "der"}``) is the CRL instead.
        Returns ``fn``'s result. ``items`` lacks the rows that cannot be read (refused, counted
        in ``liaison_identity_rows_refused_total``, left as they are)."""

        async def job(conn: Any) -> Any:
            rows = await conn.fetch("SELECT serial, record FROM identity_certs ORDER BY n")
            items = []
            for r in rows:
                # A row that cannot be read is refused (logged, counted) and left as it is: a
                # revocation must not be blocked by another certificate's bad row.
                try:
                    items.append(cert_record(r["serial"], r["record"]))
                except ValueError as exc:
                    self._refuse("identity_certs", exc)
            number = await conn.fetchval("SELECT crl_number FROM identity_crl WHERE id = 1")
            changed, result = fn(int(number or 0), items)
            for item in changed:
                crl = item.get("crl")
                if crl is not None:
                    await conn.execute(
                        "INSERT INTO identity_crl (id, crl_number, pem, der, seq)"
                        " VALUES (1, $1, $2, $3, nextval('identity_seq'))"
                        " ON CONFLICT (id) DO UPDATE SET crl_number = $1, pem = $2, der = $3,"
                        " seq = nextval('identity_seq')",
                        int(crl["number"]),
                        crl["pem"],
                        crl["der"],
                    )
                    continue
                await conn.execute(
                    "INSERT INTO identity_certs (serial, record, seq)"
                    " VALUES ($1, $2, nextval('identity_seq'))"
                    " ON CONFLICT (serial) DO UPDATE SET record = $2,"
                    " seq = nextval('identity_seq')",
                    item["serial"],
                    json.dumps(item, sort_keys=True),
                )
            return result

        return self._run(self._write(job))

    # -- web sign-ins --

    def session_put(
        self,
        token: str,
        *,
        username: str,
        csrf: str,
        now: dt.datetime,
        older_than: dt.datetime,
        idle_before: dt.datetime,
    ) -> None:
        """Store a new sign-in; sign-ins created before ``older_than`` or idle since before
        ``idle_before`` are deleted, and past MAX_SHARED_SESSIONS the oldest."""

        async def job(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM identity_sessions WHERE created < $1 OR seen < $2",
                    older_than,
                    idle_before,
                )
                await conn.execute(
                    "INSERT INTO identity_sessions (key, username, csrf, created, seen)"
                    " VALUES ($1, $2, $3, $4, $4)",
                    token_key(token),
                    username,
                    csrf,
                    now,
                )
                await conn.execute(
                    "DELETE FROM identity_sessions WHERE key IN (SELECT key FROM"
                    " identity_sessions ORDER BY created DESC OFFSET $1)",
                    MAX_SHARED_SESSIONS,
                )

        self._run(self._statement(job))

    def session_get(self, token: str) -> SharedSignIn | None:
        async def job(conn: Any) -> SharedSignIn | None:
            row = await conn.fetchrow(
                "SELECT username, csrf, created, seen FROM identity_sessions WHERE key = $1",
                token_key(token),
            )
            if row is None:
                return None
            return SharedSignIn(
                username=row["username"], csrf=row["csrf"], created=row["created"], seen=row["seen"]
            )

        return self._run(self._statement(job))

    def session_seen(self, token: str, seen: dt.datetime) -> bool:
        """Record activity of a sign-in; False when its row is gone (signed out, or dropped)."""

        async def job(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE identity_sessions SET seen = greatest(seen, $2) WHERE key = $1",
                token_key(token),
                seen,
            )
            # "UPDATE n": the rows changed (the key is the primary key: 0 or 1).
            return bool(status.split()[-1] != "0")  # asyncpg types the status as Any

        return self._run(self._statement(job))

    def sessions_end(self, *, token: str | None = None, username: str | None = None) -> int:
        """Delete one sign-in (by its cookie token) or every sign-in of ``username``."""

        async def job(conn: Any) -> int:
            if token is not None:
                status = await conn.execute(
                    "DELETE FROM identity_sessions WHERE key = $1", token_key(token)
                )
            else:
                status = await conn.execute(
                    "DELETE FROM identity_sessions WHERE username = $1", username
                )
            return int(status.split()[-1])

        return self._run(self._statement(job))

    async def _statement(self, job: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        assert self._busy is not None
        async with self._busy:
            return await job(self._conn)

    # -- bearer token keys (identity/tokens.py DbKeyring) and redeemed refresh tokens --

    def token_keys(self) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        """(a stamp that changes whenever the keys do, the keys oldest first as
        ``{"kid", "created", "retired", "pem"}``), as of the last look (no database call)."""
        with self._lock:
            return self._token_keys_stamp, self._token_keys

    def change_token_keys(
        self, fn: Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None]
    ) -> list[dict[str, Any]]:
        """Under the identity lock: ``fn(keys)`` (the table's keys, oldest first) returns the
        keys the table is to hold, or None to leave it as it is. Returns what the table holds."""

        async def job(conn: Any) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT kid, created, retired, pem FROM identity_token_keys ORDER BY created, seq"
            )
            old = [dict(r) for r in rows]
            new = fn(old)
            if new is None:
                return old
            await conn.execute("DELETE FROM identity_token_keys")
            await conn.executemany(
                "INSERT INTO identity_token_keys (kid, created, retired, pem, seq)"
                " VALUES ($1, $2, $3, $4, nextval('identity_seq'))",
                [(k["kid"], int(k["created"]), k["retired"], k["pem"]) for k in new],
            )
            return new

        return self._run(self._write(job))

    def redeem_refresh(self, jti: str, exp: int, now: int) -> bool:
        """Record refresh token ``jti`` (valid until ``exp``) as redeemed: True when this is its
        first redemption on any node, False when a row for it was already there. Up to
        REDEEMED_PRUNE_BATCH expired rows are deleted first."""

        async def job(conn: Any) -> bool:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM identity_refresh_redeemed WHERE jti IN (SELECT jti FROM"
                    " identity_refresh_redeemed WHERE exp <= $1 LIMIT $2)",
                    now,
                    REDEEMED_PRUNE_BATCH,
                )
                status = await conn.execute(
                    "INSERT INTO identity_refresh_redeemed (jti, exp) VALUES ($1, $2)"
                    " ON CONFLICT (jti) DO NOTHING",
                    jti,
                    exp,
                )
            # "INSERT 0 1": inserted; "INSERT 0 0": the jti was there already.
            return bool(status.split()[-1] == "1")

        return self._run(self._statement(job))
