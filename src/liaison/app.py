"""The composition root: builds every component from the Config and owns their lifetimes.

Only this module knows every concrete class. :func:`run_server` is an async context manager:
entering it opens the store, loads the latest state, binds every listener (bind first, then serve)
and starts the background tasks in one ``asyncio.TaskGroup``; leaving it shuts down in order:

1. listeners stop accepting;
2. sessions are closed gracefully (what is queued for them is written first);
3. the store writer flushes every accepted event, then the store closes;
4. the audit log signs a checkpoint covering its last record (so a restart never leaves the
   records of a run unsigned), is synced and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from liaison import __version__
from liaison.api.auth import AuthMode
from liaison.api.context import ApiContext
from liaison.api.routes import ROUTE_ADDERS
from liaison.api.server import HttpListener, RunningHttp, start_http
from liaison.audit import AuditLog
from liaison.config import LISTENER_NAMES, Config, Endpoint
from liaison.errors import ConfigError, PeerError, StorageError, listen_errors
from liaison.federation.config import parse_federation
from liaison.federation.link import Federation, GateAudit
from liaison.gate import Gate, audit_paths, load_gate_config, load_or_create_signing_key
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from liaison.identity.groups import load_group_file
from liaison.identity.listeners import Listener
from liaison.identity.principals import Identities
from liaison.identity.revocation import refresh_crl
from liaison.identity.tls import server_ssl_context
from liaison.identity.users import UserDirectory
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import LatestEntry, Router
from liaison.session import (
    SessionMetrics,
    SessionRegistry,
    SessionSettings,
    StreamSession,
)
from liaison.storage.base import Store, StoreWriter
from liaison.storage.memory import MemoryStore
from liaison.storage.permissions import secure_data_dir
from liaison.storage.sqlite import SqliteStore
from liaison.transports.stream import Keepalive, bound_port, start_stream_listener
from liaison.transports.udp import DatagramInput, start_multicast_bridge, start_udp_input

log = logging.getLogger(__name__)

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
    federation: Federation | None = None  # the partner links, when configured
    federation_address: Endpoint | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """Ask the server to shut down (signal handlers call this)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()


async def _open_store(config: Config) -> Store:
    if config.storage == "memory":
        return MemoryStore()
    return await SqliteStore.open(config.data_dir / "liaison.db")


async def _load_latest(store: Store, router: Router, clock: int) -> int:
    """Seed the router's latest-state table from the store; unparsable rows are skipped."""
    entries: list[LatestEntry] = []
    for rec in await store.latest(clock):
        try:
            event = cot_xml.parse_event(rec.xml)
        except PeerError as exc:
            log.warning("stored event %s unreadable, skipped: %s", rec.uid, exc)
            continue
        entries.append(LatestEntry(event, rec.sender_groups, router.load_label(rec.label)))
    router.load_latest(entries)
    return len(entries)


@contextlib.asynccontextmanager
async def run_server(config: Config) -> AsyncIterator[Server]:
    """Start a server for ``config``; shut it down cleanly when the block exits."""
    metrics = Metrics()
    # Owner-only data folder, also for installs made under a permissive umask (item 8).
    try:
        secure_data_dir(config.data_dir)
    except OSError as exc:
        raise StorageError(f"data folder {config.data_dir}: {exc.strerror}") from exc
    policy_text = _read_policy(config)
    gate, audit_log = _open_gate(config, policy_text)
    store = await _open_store(config)
    writer = StoreWriter(store)
    router = Router(
        metrics=metrics,
        clock_ms=now_ms,
        writer=writer,
        congestion_threshold=max(1, int(writer.max_pending * STORE_CONGESTION_FRACTION)),
        gate=gate,
    )
    registry = SessionRegistry(now_ms, write_batch_s=config.write_batch_ms / 1000.0)
    session_metrics = SessionMetrics(metrics)
    groups = load_group_file(config.groups_file)
    users = UserDirectory.load(config.resolved_users_file())
    server_pki: ServerPki | None = None
    if config.tls is not None or config.https is not None or config.enroll is not None:
        server_pki = ensure_server_pki(
            config.data_dir, public_host=config.public_host, extra_names=config.server_names
        )
    identities = Identities(
        cert_username_regex=config.cert_username_regex,
        groups=groups,
        users=users,
        server_pki=server_pki,
        gate=gate,
    )
    registry.follow(identities.events)
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
    listeners: list[asyncio.Server] = []
    datagram_transports: list[asyncio.DatagramTransport] = []
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(writer.run(), name="store-writer"),
                tg.create_task(registry.run(router), name="session-sweeper"),
                tg.create_task(
                    _housekeeping(router, store, config, server_pki), name="housekeeping"
                ),
                tg.create_task(_audit_keeper(config, gate, router, audit_log), name="audit"),
            ]

            def persist_delete(uid: str) -> None:
                tasks.append(tg.create_task(_delete_after(writer, store, uid), name="delete"))

            router.on_delete(persist_delete)

            def stream_factory(listener: Listener, require_auth: bool) -> StreamSession:
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
                    router=router,
                    settings=settings,
                    metrics=session_metrics,
                    clock_ms=now_ms,
                    resolve_principal=identities.resolver(listener),
                    authenticate=(
                        functools.partial(identities.from_login, listener=listener)
                        if require_auth
                        else None
                    ),
                    registry=registry,
                )

            if config.tcp is not None:
                with listen_errors(config.tcp, LISTENER_NAMES["tcp"]):
                    srv = await start_stream_listener(
                        config.tcp, lambda: stream_factory(Listener.TCP, config.tcp_auth)
                    )
                listeners.append(srv)
                server.tcp = Endpoint(config.tcp.host, bound_port(srv))
            if config.tls is not None:
                assert server_pki is not None
                ctx = server_ssl_context(server_pki)
                with listen_errors(config.tls, LISTENER_NAMES["tls"]):
                    srv = await start_stream_listener(
                        config.tls,
                        lambda: stream_factory(Listener.TLS, config.tls_auth),
                        ssl_context=ctx,
                    )
                listeners.append(srv)
                server.tls = Endpoint(config.tls.host, bound_port(srv))
            if config.udp is not None:
                udp_endpoint = config.udp
                with listen_errors(udp_endpoint, LISTENER_NAMES["udp"]):
                    transport, _ = await start_udp_input(
                        udp_endpoint,
                        lambda: DatagramInput(
                            router=router,
                            principal=identities.anonymous(str(udp_endpoint), Listener.UDP),
                            rejected=session_metrics.rejected,
                        ),
                    )
                datagram_transports.append(transport)
                server.udp = Endpoint(udp_endpoint.host, transport.get_extra_info("sockname")[1])
            if config.multicast is not None:
                with listen_errors(config.multicast, LISTENER_NAMES["multicast"]):
                    transport, _bridge = await start_multicast_bridge(
                        config.multicast,
                        config.multicast_interface,
                        router=router,
                        principal=identities.anonymous(str(config.multicast), Listener.MESH),
                        rejected=session_metrics.rejected,
                    )
                datagram_transports.append(transport)

            def ws_session(caller: Principal) -> StreamSession:
                """A /takproto/1 client: an 8089 session that speaks protobuf from the start."""
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
                    router=router,
                    settings=settings,
                    metrics=session_metrics,
                    clock_ms=now_ms,
                    resolve_principal=lambda _der, _peer: caller,
                    authenticate=None,
                    registry=registry,
                )

            http = await _start_http(config, server, identities, users, registry, ws_session)
            fed = _build_federation(config, policy_text, gate, router, server_pki, metrics)
            if fed is not None:
                bound = await fed.start()
                server.federation = fed
                server.federation_address = Endpoint(bound.host, bound.port) if bound else None
                tasks.append(tg.create_task(fed.run(), name="federation"))
            try:
                yield server
            finally:
                if http is not None:
                    await http.close()
                log.info("shutting down")
                for srv in listeners:
                    srv.close()
                for t in datagram_transports:
                    t.close()
                registry.close_all()
                # Give closing transports one loop turn to hand their buffers to the kernel.
                await asyncio.sleep(0)
                for task in tasks:
                    if task.get_name() != "store-writer":
                        task.cancel()
                await writer.flush()
                tasks[0].cancel()  # the writer flushes what is left when cancelled
    finally:
        await store.close()
        sink = gate.audit if gate is not None else None
        if isinstance(sink, AuditLog):
            try:
                sink.close(checkpoint=True)
            except StorageError as exc:
                log.error("audit log: no checkpoint signed at shutdown: %s", exc)
        log.info("stopped")


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
        store=server.store,
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
    )
    running = await start_http(api_ctx, listeners, ROUTE_ADDERS)
    server.https = running.bound.get("https")
    server.enroll = running.bound.get("enroll")
    server.http = running.bound.get("http")
    server.http_runtime = running
    return running


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
    log_path, key_path, pub_path = audit_paths(config.data_dir)
    key = load_or_create_signing_key(key_path, pub_path)
    audit_log = AuditLog.open(log_path, key, fsync=config.audit_sync_ms == 0, repair_truncated=True)
    gate = Gate(gate_config, audit=audit_log, clock_ms=now_ms)
    audit_log.append(
        "config_load",
        policy_id=gate_config.policy.id,
        policy_version=gate_config.policy.version,
        policy_digest=gate_config.policy.digest,
        policy_file=str(config.policy_file),
        listeners=sorted(gate_config.listeners),
    )
    log.info(
        "labels on: policy %s v%d (%s), audit log %s",
        gate_config.policy.id,
        gate_config.policy.version,
        gate_config.policy.digest,
        log_path,
    )
    return gate, audit_log


async def _audit_keeper(
    config: Config, gate: Gate | None, router: Router, audit_log: AuditLog | None
) -> None:
    """Sync the audit log on its interval; after a failure, reopen it and resume releases."""
    if gate is None or audit_log is None:
        return
    interval = max(config.audit_sync_ms, AUDIT_RETRY_MS) / 1000.0
    log_path, key_path, pub_path = audit_paths(config.data_dir)
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
        released = router.audit_recovered()
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
