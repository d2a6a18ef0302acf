"""The composition root: builds every component from the Config and owns their lifetimes.

Only this module knows every concrete class. :func:`run_server` is an async context manager:
entering it starts every long-running part as a :class:`~liaison.lifetimes.Component` (bind
first, then run) under one ``asyncio.TaskGroup``, in this order: the audit log, the store, the
store writer, the audit keeper, housekeeping, the partner links, the session registry, the
stream and datagram listeners, with ``--workers`` the worker's metrics socket, the HTTP
applications. Leaving it shuts them down newest first:

1. listeners stop accepting;
2. sessions are closed gracefully (what is queued for them is written first);
3. the partner links end (their outboxes keep what is queued);
4. the store writer flushes every accepted event, then the store closes;
5. the audit log signs a checkpoint covering its last record (so a restart never leaves the
   records of a run unsigned), is synced and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from liaison import __version__
from liaison.admin import (
    forget_identity_db,
    import_audit_fields,
    local_identity,
    shares_identity,
    use_identity_db,
)
from liaison.api.auth import AuthMode, WebSessions
from liaison.api.context import ApiContext
from liaison.api.operator import ADMIN_RECORD
from liaison.api.routes import ROUTE_ADDERS
from liaison.api.server import HttpListener, RunningHttp, start_http
from liaison.audit import AuditLog
from liaison.cluster.access import AccessShare
from liaison.cluster.bus import ClusterSettings, NatsBus, default_node_name
from liaison.cluster.latest_kv import SharedLatestState
from liaison.cluster.missions_share import MissionSharing
from liaison.config import LISTENER_NAMES, Config, Endpoint, redacted_url
from liaison.errors import ConfigError, PeerError, StorageError, listen_errors
from liaison.federation.config import parse_federation
from liaison.federation.leased import LeasedFederation
from liaison.federation.link import GateAudit
from liaison.federation.status import FederationStatus
from liaison.federation.supervisor import Federation
from liaison.feeds import Feeds, audit_fields, build_feeds, parse_feeds
from liaison.gate import Gate, audit_paths, load_gate_config, load_or_create_signing_key
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from liaison.identity.directory import DIRECTORY_USERS_FILE, Directory
from liaison.identity.groups import load_group_file
from liaison.identity.listeners import Listener
from liaison.identity.principals import Identities
from liaison.identity.revocation import refresh_crl
from liaison.identity.tls import server_ssl_context
from liaison.identity.users import UserDirectory
from liaison.latest import LatestEntry, MemoryLatestState
from liaison.lifetimes import Lifetimes, Part
from liaison.metrics import Metrics
from liaison.missions import Missions
from liaison.model.principal import Principal, origin_of_name
from liaison.protocol import cot_xml
from liaison.query import Query
from liaison.router import Router
from liaison.session import (
    SessionMetrics,
    SessionRegistry,
    SessionSettings,
    StreamSession,
)
from liaison.storage.base import Store, StoreWriter
from liaison.storage.files import FileStore
from liaison.storage.memory import MemoryStore
from liaison.storage.missions import MemoryMissionStore, MissionStore, SqliteMissionStore
from liaison.storage.permissions import secure_data_dir
from liaison.storage.sqlite import SqliteStore
from liaison.transports.stream import Keepalive, bound_port, start_stream_listener
from liaison.transports.udp import DatagramInput, start_multicast_bridge, start_udp_input
from liaison.worker_metrics import MetricsSocket, scrape_workers

if TYPE_CHECKING:
    from liaison.identity.shared_db import IdentityDb

log = logging.getLogger(__name__)

# Storage URLs naming PostgreSQL (storage/postgresql.py URL_SCHEMES; not imported: asyncpg is an
# optional extra).
PG_SCHEMES = ("postgresql://", "postgres://")

SERVER_VERSION = f"Liaison {__version__}"

# Shortest wait, in ms, between attempts to reopen a failed audit log.
AUDIT_RETRY_MS = 200.0
# Seconds between sweeps of the latest-state table for stale entries.
EXPIRE_INTERVAL_S = 30.0
# Seconds between checks that the published CRL is not past half its validity.
CRL_CHECK_INTERVAL_S = 3600.0
# Seconds between retention prunes of the stored history.
PRUNE_INTERVAL_S = 3600.0
# Writer queue depth at which stream readers pause (half the writer's limit, so a burst that
# arrives while readers are pausing still fits).
STORE_CONGESTION_FRACTION = 0.5


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Server:
    """A running server: what tests and the CLI need to see of it."""

    config: Config
    router: Router
    metrics: Metrics
    store: Store
    writer: StoreWriter
    sessions: SessionRegistry
    server_pki: ServerPki | None
    tcp: Endpoint | None = None
    tls: Endpoint | None = None
    udp: Endpoint | None = None
    https: Endpoint | None = None
    enroll: Endpoint | None = None
    http: Endpoint | None = None
    http_runtime: RunningHttp | None = None  # the HTTP applications, for introspection
    federation: Federation | None = None  # the partner links, when configured (one node)
    # In a cluster with [federation]: the links, run while this node holds the lease.
    federation_lease: LeasedFederation | None = None
    federation_address: Endpoint | None = None
    missions: Missions | None = None  # the missions (Data Sync)
    feeds: Feeds | None = None  # the [feeds.NAME] sources (docs/feeds.md)
    # The web map's sign-ins, shared by every HTTP listener (and the cluster bus's sign-outs).
    web_sessions: WebSessions = field(default_factory=lambda: WebSessions(time.monotonic))
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """Ask the server to shut down (signal handlers call this)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()


async def _open_store(config: Config) -> Store:
    if config.storage == "memory":
        return MemoryStore()
    if config.storage.startswith(PG_SCHEMES):
        # Imported here: asyncpg is an optional extra, the default SQLite path never loads it.
        from liaison.storage.postgresql import PostgresStore

        return await PostgresStore.open(config.storage)
    return await SqliteStore.open(config.data_dir / "liaison.db")


async def _open_mission_store(config: Config) -> MissionStore:
    if config.storage == "memory":
        return MemoryMissionStore()
    if config.storage.startswith(("postgresql://", "postgres://")):
        # Missions in the same database as the events (docs/storage.md "Missions and files in
        # PostgreSQL"): every node of a cluster sharing it sees the same missions.
        from liaison.storage.postgresql_missions import PostgresMissionStore

        return await PostgresMissionStore.open(config.storage)
    return await SqliteMissionStore.open(config.data_dir / "missions.db")


def _file_store_opener(config: Config) -> Callable[[], Awaitable[FileStore]]:
    """How each HTTP listener opens its file store: the database's tables with a PostgreSQL
    storage URL (shared by a cluster's nodes), else ``DATA_DIR/files``."""
    if config.storage.startswith(("postgresql://", "postgres://")):
        return functools.partial(FileStore.open_postgresql, config.storage)
    return functools.partial(FileStore.open, config.data_dir / "files")


async def _load_latest(store: Store, router: Router, clock: int) -> int:
    """Seed the router's latest-state table from the store; unparsable rows are skipped."""
    entries: list[LatestEntry] = []
    for rec in await store.latest(clock):
        try:
            event = cot_xml.parse_event(rec.xml)
        except PeerError as exc:
            log.warning("stored event %s unreadable, skipped: %s", rec.uid, exc)
            continue
        origin = origin_of_name(rec.sender)
        if origin is not None:
            event = dataclasses.replace(event, origin=origin)
        entries.append(LatestEntry(event, rec.sender_groups, router.load_label(rec.label)))
    router.load_latest(entries)
    return len(entries)


@contextlib.asynccontextmanager
async def run_server(config: Config) -> AsyncIterator[Server]:
    """Start a server for ``config``; shut it down cleanly when the block exits.

    Every long-running part is a :class:`~liaison.lifetimes.Component` started (bound, then run)
    in the order below; :meth:`Lifetimes.shutdown` closes them newest first, so the listeners stop
    before the sessions close, the sessions before the partner links, everything that publishes
    before the store writer flushes, and the store before the audit log signs its checkpoint.
    """
    metrics = Metrics()
    # Owner-only data folder, also for installs made under a permissive umask (item 8).
    try:
        secure_data_dir(config.data_dir)
    except OSError as exc:
        raise StorageError(f"data folder {config.data_dir}: {exc.strerror}") from exc
    policy_text = _read_policy(config)
    started = False
    try:
        async with asyncio.TaskGroup() as tg:
            parts = Lifetimes(tg)
            try:
                server = await _start(config, policy_text, metrics, parts)
                started = True
                try:
                    yield server
                finally:
                    log.info("shutting down")
            finally:
                await parts.shutdown()
    except BaseExceptionGroup as group:
        # A start that failed (a bad setting, an unreadable store, a port in use) raises its one
        # error as itself, as it did when those steps ran before the task group opened.
        only = group.exceptions[0] if len(group.exceptions) == 1 else None
        if started or not isinstance(only, Exception):
            raise
        raise only from None
    finally:
        log.info("stopped")


async def _start(
    config: Config, policy_text: str | None, metrics: Metrics, parts: Lifetimes
) -> Server:
    """Build and start every component, in the order they must start (and, reversed, stop)."""
    audit_part = _AuditLogPart(config, policy_text)
    await parts.start(audit_part)
    gate, audit_log = audit_part.gate, audit_part.log
    store_part = _StorePart(config)
    await parts.start(store_part)
    store = store_part.store
    identity_part = _IdentityDbPart(config, gate, metrics)
    await parts.start(identity_part)
    identity_db = identity_part.db
    writer = StoreWriter(store)
    # In a cluster the latest state is every node's (a JetStream key-value bucket mirrored
    # here), so replay answers the same on every node; alone, this process's table.
    shared_latest = (
        SharedLatestState(
            _cluster_settings(config),
            gate.policy if gate is not None else None,
            metrics,
            MemoryLatestState(),
        )
        if config.cluster_nats
        else None
    )
    router = Router(
        metrics=metrics,
        clock_ms=now_ms,
        writer=writer,
        latest=shared_latest if shared_latest is not None else MemoryLatestState(),
        congestion_threshold=max(1, int(writer.max_pending * STORE_CONGESTION_FRACTION)),
        gate=gate,
    )
    registry = SessionRegistry(now_ms, write_batch_s=config.write_batch_ms / 1000.0)
    groups = load_group_file(config.groups_file)
    users = (
        UserDirectory.in_database(identity_db)
        if identity_db is not None
        else UserDirectory.load(config.resolved_users_file())
    )
    server_pki: ServerPki | None = None
    if config.tls is not None or config.https is not None or config.enroll is not None:
        server_pki = ensure_server_pki(
            config.data_dir,
            public_host=config.public_host,
            extra_names=config.server_names,
            db=identity_db,
        )
    identities = Identities(
        cert_username_regex=config.cert_username_regex,
        groups=groups,
        users=users,
        server_pki=server_pki,
        gate=gate,
        directory=(
            Directory(config.directory, config.data_dir / DIRECTORY_USERS_FILE, metrics)
            if config.directory is not None
            else None
        ),
    )
    registry.follow(identities.events)
    if identities.directory is not None:  # re-checks directory users every refresh_s
        await parts.start(Part("directory", on_run=identities.directory.run))
    loaded = await _load_latest(store, router, now_ms())
    if loaded:
        log.info("loaded the latest state of %d uids from the store", loaded)

    server = Server(
        config=config,
        router=router,
        metrics=metrics,
        store=store,
        writer=writer,
        sessions=registry,
        server_pki=server_pki,
    )
    if identity_db is not None:  # a sign-in made on any node is good on every node
        server.web_sessions.use_shared(identity_db)
    # The writer owns the deletes it must order after earlier writes (pruned as they finish).
    writer_part = Part("store-writer", on_run=writer.run)
    await parts.start(writer_part)

    def persist_delete(uid: str) -> None:
        parts.spawn(writer_part, _delete_after(writer, store, uid), "delete")

    router.on_delete(persist_delete)
    missions_part = _MissionsPart(config, server)
    await parts.start(missions_part)
    fed = _build_federation(config, policy_text, gate, router, server_pki, metrics)
    if fed is not None and config.cluster_nats and not config.storage.startswith(PG_SCHEMES):
        # Refused before anything connects: the lease and the outboxes live in PostgreSQL.
        raise ConfigError(
            "storage",
            "a cluster with [federation] keeps the partner links' lease and outboxes in"
            " PostgreSQL: set storage to a postgresql:// URL (docs/deployment.md, Several nodes)",
        )
    bus: NatsBus | None = None
    if config.cluster_nats:
        # Before anything that publishes: from here on, events go through the bus.
        bus = NatsBus(_cluster_settings(config), router, metrics)
        await parts.start(bus)
        router.set_bus(bus)
        if shared_latest is not None:
            # Every node's latest state, read before any client connects (docs/deployment.md).
            shared_latest.use_bus(bus)
            await parts.start(shared_latest)
        # Revocations and sign-outs of every node: the stream's revocations are replayed here,
        # before any listener opens.
        await parts.start(AccessShare(bus, identities, registry, server.web_sessions, metrics))
        if server.missions is not None and config.storage.startswith(
            ("postgresql://", "postgres://")
        ):
            # Missions in the shared database: each node reads back what another changed and
            # delivers its notices to the clients connected here (docs/deployment.md).
            await parts.start(MissionSharing(bus, server.missions, metrics))
    keeper = functools.partial(_audit_keeper, config, gate, router, audit_log, server)
    await parts.start(Part("audit-keeper", on_run=keeper))
    chores = functools.partial(_housekeeping, router, store, config, server_pki)
    await parts.start(Part("housekeeping", on_run=chores))
    # With --workers, the feeds run in worker 1 only (each feed polled once); their events reach
    # the other workers over the bus. The partner links run on whichever node (worker) holds the
    # federation lease: --workers always runs a cluster.
    first_worker = config.worker in (None, 1)
    if fed is not None and bus is not None:
        # A cluster: the links run on the node holding the federation lease (docs/deployment.md).
        assert gate is not None and server_pki is not None  # _build_federation needs both
        leased = LeasedFederation(
            config=fed.config,
            storage_url=config.storage,
            node=bus.settings.node,
            bus=bus,
            router=router,
            gate=gate,
            audit=GateAudit(gate),
            data_dir=config.data_dir,
            server_cert=server_pki.server_cert,
            server_key=server_pki.server_key,
            clock_ms=now_ms,
            metrics=metrics,
            # The links' own router on the lease holder (federation/feed.py): the node's gate,
            # metrics of its own (the node's router owns the routing metrics), no latest state
            # of its own to speak of (distribute_feed never joins it).
            links_router=lambda: Router(
                metrics=Metrics(),
                clock_ms=now_ms,
                latest=MemoryLatestState(),
                gate=gate,
                relay_between_peers=router.relay_between_peers,
            ),
        )
        await parts.start(leased)
        server.federation_lease = leased
    elif fed is not None:
        await parts.start(_FederationPart(fed, server))
    if (
        first_worker
        and policy_text is not None
        and gate is not None
        and config.policy_file is not None
    ):
        server.feeds = build_feeds(
            policy_text, gate, router, metrics, now_ms, config.policy_file.parent, config.data_dir
        )
        if server.feeds is not None:
            await parts.start(server.feeds)

    async def close_sessions() -> None:
        registry.close_all()
        # Give closing transports one loop turn to hand their buffers to the kernel.
        await asyncio.sleep(0)

    sweep = functools.partial(registry.run, router)
    await parts.start(Part("sessions", on_run=sweep, on_close=close_sessions))
    sessions = _SessionMaker(config, server, identities)
    await _start_listeners(config, server, parts, sessions)
    if config.worker is not None:
        # With --workers: this worker's metrics for the others' /metrics (worker_metrics.py),
        # bound before its HTTP listeners open and closed after they have.
        await parts.start(MetricsSocket(config.data_dir, config.worker, metrics.render_prometheus))
    await parts.start(_HttpPart(config, server, identities, users, sessions))
    return server


async def _start_listeners(
    config: Config, server: Server, parts: Lifetimes, sessions: _SessionMaker
) -> None:
    """The stream and datagram listeners (HTTP comes after them, federation before)."""
    router, identities = server.router, sessions.identities
    if config.tcp is not None:
        tcp = config.tcp
        tcp_part = _Listener(
            "tcp",
            tcp,
            lambda: start_stream_listener(
                tcp,
                lambda: sessions.stream(Listener.TCP, config.tcp_auth),
                reuse_port=config.reuse_port,
            ),
        )
        await parts.start(tcp_part)
        server.tcp = Endpoint(tcp.host, bound_port(tcp_part.server))
    if config.tls is not None:
        tls = config.tls
        assert server.server_pki is not None
        ctx = server_ssl_context(server.server_pki)
        tls_part = _Listener(
            "tls",
            tls,
            lambda: start_stream_listener(
                tls,
                lambda: sessions.stream(Listener.TLS, config.tls_auth),
                ssl_context=ctx,
                reuse_port=config.reuse_port,
            ),
        )
        await parts.start(tls_part)
        server.tls = Endpoint(tls.host, bound_port(tls_part.server))
    if config.udp is not None:
        udp = config.udp

        async def open_udp() -> asyncio.DatagramTransport:
            transport, _ = await start_udp_input(
                udp,
                lambda: DatagramInput(
                    router=router,
                    principal=identities.anonymous(str(udp), Listener.UDP),
                    rejected=sessions.metrics.rejected,
                ),
                reuse_port=config.reuse_port,
            )
            return transport

        udp_part = _Listener("udp", udp, open_udp)
        await parts.start(udp_part)
        server.udp = Endpoint(udp.host, udp_part.server.get_extra_info("sockname")[1])
    if config.multicast is not None and config.worker in (None, 1):
        # With --workers, worker 1 alone bridges the mesh: every worker joining the group would
        # receive, and publish, each datagram once per worker.
        group = config.multicast

        async def open_multicast() -> asyncio.DatagramTransport:
            transport, _bridge = await start_multicast_bridge(
                group,
                config.multicast_interface,
                router=router,
                principal=identities.anonymous(str(group), Listener.MESH),
                rejected=sessions.metrics.rejected,
            )
            return transport

        await parts.start(_Listener("multicast", group, open_multicast))


class _Closable(Protocol):
    def close(self) -> None: ...


_H = TypeVar("_H", bound=_Closable)


class _Listener(Generic[_H]):
    """A socket listener: bind it (a port in use becomes the one-line ListenError, exit 3);
    it serves from the event loop, so there is nothing to run; closing stops it accepting."""

    def __init__(self, name: str, endpoint: Endpoint, open_: Callable[[], Awaitable[_H]]) -> None:
        self.name = name
        self._endpoint = endpoint
        self._open = open_
        self._handle: _H | None = None

    @property
    def server(self) -> _H:
        assert self._handle is not None, f"{self.name} is not bound"
        return self._handle

    async def bind(self) -> None:
        with listen_errors(self._endpoint, LISTENER_NAMES[self.name]):
            self._handle = await self._open()

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class _AuditLogPart:
    """The label gate and its audit log: opened first, closed last with a checkpoint covering
    the last record (so a restart never leaves the records of a run unsigned)."""

    name = "audit-log"

    def __init__(self, config: Config, policy_text: str | None) -> None:
        self._config = config
        self._policy_text = policy_text
        self.gate: Gate | None = None
        self.log: AuditLog | None = None

    async def bind(self) -> None:
        self.gate, self.log = _open_gate(self._config, self._policy_text)

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        # The keeper may have reopened the log after a failure: close the one the gate holds.
        sink = self.gate.audit if self.gate is not None else None
        if isinstance(sink, AuditLog):
            try:
                sink.close(checkpoint=True)
            except StorageError as exc:
                log.error("audit log: no checkpoint signed at shutdown: %s", exc)


class _StorePart:
    """The store: opened before anything that writes to it, closed after the writer flushed."""

    name = "store"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "the store is not open"
        return self._store

    async def bind(self) -> None:
        self._store = await _open_store(self._config)

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


class _IdentityDbPart:
    """With PostgreSQL storage: users, the certificate index, the CRL and web sign-ins in the
    database every node shares (identity/shared_db.py). Opened after the store (whose migration
    makes its tables), closed after everything that asks it."""

    name = "identity-db"

    def __init__(self, config: Config, gate: Gate | None, metrics: Metrics) -> None:
        self._config = config
        self._gate = gate
        self._metrics = metrics
        self.db: IdentityDb | None = None

    async def bind(self) -> None:
        if not shares_identity(self._config):
            return
        # Imported here: asyncpg is an optional extra, the default SQLite path never loads it.
        from liaison.identity.shared_db import IdentityDb

        url = self._config.storage
        local = await asyncio.to_thread(local_identity, self._config)
        self.db = await asyncio.to_thread(
            IdentityDb.open, url, where=redacted_url(url), local=local, metrics=self._metrics
        )
        use_identity_db(self._config, self.db)
        report = self.db.imported
        if report is not None and report.anything and self._gate is not None:
            # The import is an administrative change made by the server itself: an ``admin``
            # record (docs/deployment.md), written before anything can use what it imported.
            fields = import_audit_fields(report, redacted_url(url))
            if not self._gate.record([(ADMIN_RECORD, fields)]):
                log.error("identity import not audited: the audit log failed")

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        if self.db is not None:
            forget_identity_db(self._config)
            await asyncio.to_thread(self.db.close)


class _MissionsPart:
    """The missions: loaded before anything can route to them, their writes flushed and their
    store closed after every publisher stopped."""

    name = "missions"

    def __init__(self, config: Config, server: Server) -> None:
        self._config = config
        self._server = server
        self._missions: Missions | None = None

    async def bind(self) -> None:
        store = await _open_mission_store(self._config)
        missions = Missions(
            router=self._server.router,
            store=store,
            metrics=self._server.metrics,
            clock_ms=now_ms,
            strict_membership=self._config.mission_strict_membership,
            chat_host=self._config.mission_chat_host,
        )
        try:
            loaded = await missions.load()
        except BaseException:
            await store.close()
            raise
        if loaded:
            log.info("loaded %d missions", loaded)
        self._server.router.set_missions(missions)
        self._server.missions = missions
        self._missions = missions

    async def run(self) -> None:
        if self._missions is not None:
            await self._missions.run()

    async def close(self) -> None:
        if self._missions is not None:
            await self._missions.close()


class _FederationPart:
    """The partner links: bind the federation listener, then dial and serve until cancelled."""

    name = "federation"

    def __init__(self, fed: Federation, server: Server) -> None:
        self._fed = fed
        self._server = server

    async def bind(self) -> None:
        bound = await self._fed.start()
        self._server.federation = self._fed
        self._server.federation_address = Endpoint(bound.host, bound.port) if bound else None

    async def run(self) -> None:
        await self._fed.run()

    async def close(self) -> None:
        # run() closes the links when cancelled; this covers a run that never got to start.
        await self._fed.close()


class _HttpPart:
    """The HTTPS and HTTP applications (8443, 8446, 8080), each bound to its own address."""

    name = "http"

    def __init__(
        self,
        config: Config,
        server: Server,
        identities: Identities,
        users: UserDirectory,
        sessions: _SessionMaker,
    ) -> None:
        self._args = (config, server, identities, users, server.sessions)
        self._sessions = sessions
        self._running: RunningHttp | None = None

    async def bind(self) -> None:
        self._running = await _start_http(*self._args, self._sessions.ws)

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        if self._running is not None:
            await self._running.close()


class _SessionMaker:
    """Builds the stream sessions of the TCP, TLS and /takproto/1 listeners."""

    def __init__(self, config: Config, server: Server, identities: Identities) -> None:
        self.config = config
        self.router = server.router
        self.registry = server.sessions
        self.identities = identities
        self.metrics = SessionMetrics(server.metrics)

    def stream(self, listener: Listener, require_auth: bool) -> StreamSession:
        config, identities = self.config, self.identities
        settings = SessionSettings(
            listener=listener,
            server_version=SERVER_VERSION,
            idle_timeout_s=config.idle_timeout_s,
            auth_timeout_s=config.auth_timeout_s,
            frame_timeout_s=config.frame_timeout_s,
            keepalive=Keepalive(
                config.keepalive_idle_s,
                config.keepalive_interval_s,
                config.keepalive_count,
            ),
            max_pending=config.max_pending,
            offer_protobuf=config.offer_protobuf,
            require_auth=require_auth,
            max_event_bytes=config.max_event_bytes,
        )
        return StreamSession(
            router=self.router,
            settings=settings,
            metrics=self.metrics,
            clock_ms=now_ms,
            resolve_principal=identities.resolver(listener),
            authenticate=(
                functools.partial(identities.from_login, listener=listener)
                if require_auth
                else None
            ),
            registry=self.registry,
        )

    def ws(self, caller: Principal) -> StreamSession:
        """A /takproto/1 client: an 8089 session that speaks protobuf from the start."""
        config = self.config
        settings = SessionSettings(
            listener="ws",
            server_version=SERVER_VERSION,
            idle_timeout_s=config.idle_timeout_s,
            max_pending=config.max_pending,
            offer_protobuf=False,
            start_in_protobuf=True,
            max_event_bytes=config.max_event_bytes,
        )
        return StreamSession(
            router=self.router,
            settings=settings,
            metrics=self.metrics,
            clock_ms=now_ms,
            resolve_principal=lambda _der, _peer: caller,
            authenticate=None,
            registry=self.registry,
        )


async def _start_http(
    config: Config,
    server: Server,
    identities: Identities,
    users: UserDirectory,
    registry: SessionRegistry,
    ws_session: Callable[[Principal], StreamSession] | None = None,
) -> RunningHttp | None:
    listeners: list[HttpListener] = []
    server_pki = server.server_pki
    if config.https is not None:
        assert server_pki is not None
        ctx = server_ssl_context(server_pki, require_client_cert=True)
        listeners.append(HttpListener("https", config.https, AuthMode.MTLS, ctx))
    if config.enroll is not None:
        assert server_pki is not None
        ctx = server_ssl_context(server_pki, require_client_cert=False)
        listeners.append(HttpListener("enroll", config.enroll, AuthMode.PASSWORD, ctx))
    if config.http is not None:
        listeners.append(HttpListener("http", config.http, AuthMode.ANONYMOUS, None))
    if not listeners:
        return None
    api_ctx = ApiContext(
        config=config,
        router=server.router,
        # One file store handle per HTTP listener, opened and closed with it (api.files.install).
        query=Query(
            server.router,
            server.store,
            open_files=_file_store_opener(config),
            missions=server.missions,
        ),
        metrics=server.metrics,
        server_pki=server_pki,
        users=users,
        clock_ms=now_ms,
        principal_from_certificate=functools.partial(
            identities.from_certificate, listener=Listener.HTTPS
        ),
        principal_from_user=identities.from_username,
        principal_anonymous=identities.anonymous,
        close_sessions_of=registry.close_principal,
        registry=registry,
        stream_session=ws_session,
        feeds_status=server.feeds.snapshot if server.feeds is not None else None,
        federation_status=_federation_status(
            server.federation.status
            if server.federation is not None
            else server.federation_lease.status
            if server.federation_lease is not None
            else None
        ),
        directory=identities.directory,
        metrics_text=_worker_metrics(config, server.metrics),
    )
    running = await start_http(api_ctx, listeners, ROUTE_ADDERS, server.web_sessions)
    server.https = running.bound.get("https")
    server.enroll = running.bound.get("enroll")
    server.http = running.bound.get("http")
    server.http_runtime = running
    return running


def _worker_metrics(config: Config, metrics: Metrics) -> Callable[[], Awaitable[str]] | None:
    """With --workers, what GET /metrics answers: every worker's metrics (worker_metrics.py);
    None for one node, which answers with its own."""
    worker = config.worker
    if worker is None:
        return None

    async def every_worker() -> str:
        return await scrape_workers(config.data_dir, worker, metrics.render_prometheus())

    return every_worker


def _federation_status(
    status: FederationStatus | None,
) -> Callable[[], Mapping[str, object]] | None:
    """The document the federation status file holds, read live (the operator API)."""
    if status is None:
        return None
    return lambda: status.snapshot(now_ms())


def _build_federation(
    config: Config,
    policy_text: str | None,
    gate: Gate | None,
    router: Router,
    server_pki: ServerPki | None,
    metrics: Metrics,
) -> Federation | None:
    """The partner links, from the ``[federation]`` table of the label policy file.

    Federation lives in the policy file because a partner's release ceiling and what it may
    originate are written in the policy's terms; it needs labels and the server's certificate.
    """
    if config.policy_file is None or policy_text is None or gate is None:
        return None
    fed_config = parse_federation(
        policy_text,
        gate.policy,
        default_server_id=config.public_host,
        base_dir=config.policy_file.parent,
    )
    if fed_config is None:
        return None
    if server_pki is None:
        raise ConfigError("federation", "needs the server's certificate: turn a TLS listener on")
    return Federation(
        config=fed_config,
        policy=gate.policy,
        router=router,
        audit=GateAudit(gate),
        data_dir=config.data_dir,
        server_cert=server_pki.server_cert,
        server_key=server_pki.server_key,
        clock_ms=now_ms,
        metrics=metrics,
    )


def _cluster_settings(config: Config) -> ClusterSettings:
    first = next((e for e in (config.tls, config.tcp, config.https) if e is not None), None)
    node = config.cluster_node or default_node_name(
        socket.gethostname, first.port if first is not None else None
    )
    return ClusterSettings(
        servers=config.cluster_nats,
        node=node,
        prefix=config.cluster_prefix,
        stream=config.cluster_stream,
        replicas=config.cluster_replicas,
        max_age_s=config.cluster_max_age_s,
    )


def _read_policy(config: Config) -> str | None:
    """The label policy file's text (policy, authorizations, gate and federation), read once."""
    if config.policy_file is None:
        return None
    try:
        return config.policy_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("labels.policy_file", f"cannot read {config.policy_file}: {exc}") from exc


def _open_gate(config: Config, text: str | None) -> tuple[Gate | None, AuditLog | None]:
    """Load the label policy and open the audit log; None, None when labels are off."""
    if text is None:
        return None, None
    gate_config = load_gate_config(text)
    # The feed tables go in the config_load record too (each feed's gate table is added to the
    # gate when the feeds are built); read before the log opens, so a bad one leaves it shut.
    assert config.policy_file is not None
    feeds = parse_feeds(text, gate_config.policy, base_dir=config.policy_file.parent)
    log_path, key_path, pub_path = audit_paths(config.data_dir, config.worker)
    key = load_or_create_signing_key(key_path, pub_path)
    audit_log = AuditLog.open(log_path, key, fsync=config.audit_sync_ms == 0, repair_truncated=True)
    gate = Gate(gate_config, audit=audit_log, clock_ms=now_ms)
    audit_log.append(
        "config_load",
        policy_id=gate_config.policy.id,
        policy_version=gate_config.policy.version,
        policy_digest=gate_config.policy.digest,
        policy_file=str(config.policy_file),
        listeners=sorted([*gate_config.listeners, *(c.listener for c in feeds)]),
        feeds=audit_fields(feeds),
    )
    log.info(
        "labels on: policy %s v%d (%s), audit log %s",
        gate_config.policy.id,
        gate_config.policy.version,
        gate_config.policy.digest,
        log_path,
    )
    return gate, audit_log


def _release_held(router: Router, leased: LeasedFederation | None) -> int:
    """After the audit log recovered: release what the node's router held, and what the partner
    links' own router held on a cluster's lease holder (federation/leased.py)."""
    released = router.audit_recovered()
    if leased is not None:
        released += leased.audit_recovered()
    return released


async def _audit_keeper(
    config: Config,
    gate: Gate | None,
    router: Router,
    audit_log: AuditLog | None,
    server: Server,
) -> None:
    """Sync the audit log on its interval; after a failure, reopen it and resume releases."""
    if gate is None or audit_log is None:
        return
    interval = max(config.audit_sync_ms, AUDIT_RETRY_MS) / 1000.0
    log_path, key_path, pub_path = audit_paths(config.data_dir, config.worker)
    while True:
        await asyncio.sleep(interval)
        if not gate.audit_failed:
            if config.audit_sync_ms > 0:
                try:
                    audit_log.sync()
                except StorageError as exc:
                    log.error("audit log sync failed, releases stop: %s", exc)
                    gate.audit_failed = True
            continue
        try:
            audit_log.close()
            audit_log = AuditLog.open(
                log_path,
                load_or_create_signing_key(key_path, pub_path),
                fsync=config.audit_sync_ms == 0,
                repair_truncated=True,
            )
        except StorageError as exc:
            log.debug("audit log still unavailable: %s", exc)
            continue
        gate.recovered(audit_log)
        released = _release_held(router, server.federation_lease)
        log.info("audit log recovered; %d held events released", released)


async def _delete_after(writer: StoreWriter, store: Store, uid: str) -> None:
    """Persist a delete after every event submitted before it is written (keeps their order)."""
    await writer.flush()
    await store.delete_uid(uid)


async def _housekeeping(
    router: Router, store: Store, config: Config, server_pki: ServerPki | None
) -> None:
    loop = asyncio.get_running_loop()
    next_prune = loop.time() + 60.0
    next_crl = loop.time() + CRL_CHECK_INTERVAL_S
    while True:
        await asyncio.sleep(EXPIRE_INTERVAL_S)
        router.expire()
        if server_pki is not None and loop.time() >= next_crl:
            next_crl = loop.time() + CRL_CHECK_INTERVAL_S
            if await asyncio.to_thread(refresh_crl, server_pki):
                log.info("CRL re-signed")
        if config.retention_days and loop.time() >= next_prune:
            next_prune = loop.time() + PRUNE_INTERVAL_S
            cutoff = now_ms() - config.retention_days * 86_400_000
            removed = await store.prune(cutoff)
            if removed:
                log.info("retention: removed %d history rows", removed)
