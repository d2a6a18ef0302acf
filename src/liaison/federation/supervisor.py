"""The federation supervisor: every peer link, the federation listener and the status file.

:class:`Federation` opens each peer's outbox, attaches its :class:`PeerLink` to the router, binds
the listener, dials the peers it must dial (with :class:`Backoff`), pins every peer's certificate
(``federation/tls.py``) and hands each authenticated connection to the peer's wire (the native
wire, ``federation/native.py``; TAK federation v2, ``takv2.py`` when dialling and
``takv2_server.py`` when the peer dialled us; TAK federation v1, ``takv1.py`` in both roles),
all in one TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from liaison.config import LISTENER_NAMES
from liaison.errors import PeerError, PkiError, listen_errors
from liaison.federation import fig_link, native, takv1
from liaison.federation.backoff import Backoff
from liaison.federation.config import (
    DEFAULT_STABLE_S,
    PROTOCOL_TAK_V1,
    PROTOCOL_TAK_V2,
    TAK_PROTOCOLS,
    Address,
    FederationConfig,
    listen_warning,
)
from liaison.federation.connection import CLOSE_TIMEOUT_S, Tap, close_writer
from liaison.federation.link import AuditSink, LinkRefused, PeerLink
from liaison.federation.outbox import Outbox, outbox_path
from liaison.federation.pg_outbox import PgOutbox
from liaison.federation.status import FederationStatus, LinkState, status_path
from liaison.federation.tls import (
    accept_context,
    certificate_sha256,
    dial_context,
    verify_peer_certificate,
)
from liaison.metrics import Metrics
from liaison.model.labels import Policy
from liaison.router import Router

if TYPE_CHECKING:
    from liaison.federation.mission_rol import MissionFederation

log = logging.getLogger(__name__)

# Seconds a dial (TCP connect plus TLS handshake) may take.
CONNECT_TIMEOUT_S = 15.0

# Seconds to wait for accepted connections to end at shutdown.


class Federation:
    """Every peer link, the federation listener and the status file, owned by one TaskGroup.

    ``await start()`` opens the outboxes, attaches the links to the router and binds the
    listener (bind first, then serve); ``await run()`` dials, serves and writes the status until
    cancelled; leaving it detaches the links and closes the outboxes (what is queued stays).
    """

    def __init__(
        self,
        *,
        config: FederationConfig,
        policy: Policy,
        router: Router,
        audit: AuditSink,
        data_dir: Path,
        server_cert: Path,
        server_key: Path,
        clock_ms: Callable[[], int],
        metrics: Metrics | None = None,
        durable: bool = True,
        tap: Tap | None = None,
        rng: random.Random | None = None,
        outboxes: Mapping[str, PgOutbox] | None = None,
        links_router: Router | None = None,
        status: FederationStatus | None = None,
    ) -> None:
        """``outboxes``, ``links_router`` and ``status``: in a cluster, the lease holder's
        outboxes in PostgreSQL (opened under its lease), the router the links subscribe to (fed
        by the events stream, federation/feed.py; inbound events still go to ``router``) and
        the status kept across holders (federation/leased.py); alone, none of them: SQLite
        outboxes under ``data_dir`` and ``router`` for both directions."""
        self.config = config
        self.policy = policy
        self._router = router
        self._audit = audit
        self.data_dir = data_dir
        self._cert = server_cert
        self._key = server_key
        self._clock_ms = clock_ms
        self._durable = durable
        self._tap = tap
        self._rng = rng or random.Random()
        self.status = status if status is not None else FederationStatus(config.server_id, metrics)
        self._outboxes = outboxes
        self._links_router = links_router if links_router is not None else router
        self._metrics = metrics
        self.links: dict[str, PeerLink] = {}
        self.listener: asyncio.Server | None = None
        self.bound: Address | None = None
        self._sessions: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        self._mission_rol: MissionFederation | None = None

    async def start(self) -> Address | None:
        for peer in self.config.peers:
            outbox: Outbox | PgOutbox
            if self._outboxes is not None:
                outbox = self._outboxes[peer.name]
            else:
                outbox = Outbox.open(outbox_path(self.data_dir, peer.name), durable=self._durable)
            status = self.status.add(
                peer.name, str(peer.dial) if peer.dial else None, peer.protocol
            )
            link = PeerLink(
                fed=self.config,
                peer=peer,
                policy=self.policy,
                router=self._router,
                audit=self._audit,
                outbox=outbox,
                status=status,
                clock_ms=self._clock_ms,
            )
            if peer.protocol in TAK_PROTOCOLS:
                # Releases translated to FederatedEvent as they are queued (fig_link.py).
                fig_link.install_translator(link)
            self.links[peer.name] = link
            self._links_router.attach(link)
        tak_v2 = [k for k in self.links.values() if k.peer.protocol == PROTOCOL_TAK_V2]
        if tak_v2:
            # Missions as ROL on the v2 wire (federation/mission_rol.py); protobuf only then.
            from liaison.federation.mission_rol import MissionFederation

            self._mission_rol = MissionFederation(self._router, tak_v2)
            self._mission_rol.attach()
        accepting = [p for p in self.config.peers if p.dial is None]
        listen = self.config.listen
        warning = listen_warning(self.config)
        if warning is not None:
            # The old default, still accepted (docs/configuration.md, "The partner link's port").
            log.warning("%s", warning)
        if accepting and listen is not None:
            ctx = accept_context(accepting, self._cert, self._key)
            if any(p.protocol == PROTOCOL_TAK_V2 for p in accepting):
                # TAK Servers dial this listener too; gRPC needs ALPN h2 (tak-federation.md 2.1).
                ctx.set_alpn_protocols(["h2"])
            with listen_errors(listen, LISTENER_NAMES["federation"]):
                self.listener = await asyncio.start_server(
                    self._on_accept,
                    host=listen.host,
                    port=listen.port,
                    ssl=ctx,
                    ssl_handshake_timeout=CONNECT_TIMEOUT_S,
                )
            port = int(self.listener.sockets[0].getsockname()[1])
            self.bound = Address(listen.host, port)
            log.info("federation: listening on %s", self.bound)
        return self.bound

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for link in self.links.values():
                    if link.peer.dial is not None:
                        tg.create_task(self._dial_loop(link), name=f"fed-dial-{link.peer.name}")
                tg.create_task(self._status_loop(), name="fed-status")
        finally:
            await self.close()

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        # Accepted connections run in tasks the asyncio server made: end them by aborting their
        # transports (their reads fail and they return), never by cancelling someone else's task.
        for writer in list(self._sessions.values()):
            writer.transport.abort()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=CLOSE_TIMEOUT_S)
        if self._mission_rol is not None:
            self._mission_rol.detach()
        for link in self.links.values():
            self._links_router.detach(link)
            link.flush()
            if isinstance(link.outbox, PgOutbox):
                await link.outbox.aclose()  # commits what it can (not once fenced)
            else:
                link.outbox.close()
        self.links.clear()
        self.write_status()

    def write_status(self) -> None:
        with contextlib.suppress(OSError):
            self.status.write(status_path(self.data_dir), self._clock_ms())

    async def _status_loop(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(self.config.status_interval_s)

    async def _dial_loop(self, link: PeerLink) -> None:
        peer = link.peer
        assert peer.dial is not None
        backoff = Backoff(
            self.config.backoff_base_s,
            self.config.backoff_cap_s,
            self.config.backoff_jitter,
            self._rng,
        )
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            await self._dial_once(link, peer.dial)
            # A link that stayed up for a while starts the backoff again (DESIGN.md 11).
            if loop.time() - started >= DEFAULT_STABLE_S:
                failures = 0
            failures += 1
            delay = backoff.delay(failures)
            log.info("federation %s: reconnecting in %.1f s", peer.name, delay)
            await asyncio.sleep(delay)

    async def _dial_once(self, link: PeerLink, address: Address) -> None:
        peer = link.peer
        status = link.status
        status.set_state(LinkState.CONNECTING, self._clock_ms())
        try:
            ctx = dial_context(peer, self._cert, self._key)
            if peer.protocol == PROTOCOL_TAK_V2:
                ctx.set_alpn_protocols(["h2"])  # gRPC runs over HTTP/2 (tak-federation.md 2.1)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(address.host, address.port, ssl=ctx)
        except (OSError, TimeoutError, ssl.SSLError, PkiError) as exc:
            reason = f"cannot connect to {address}: {exc or type(exc).__name__}"
            if isinstance(exc, ssl.SSLCertVerificationError):
                link.refuse(f"{address}: certificate not trusted: {exc.verify_message}")
            else:
                log.info("federation %s: %s", peer.name, reason)
                status.set_state(LinkState.DOWN, self._clock_ms(), reason)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        problem = verify_peer_certificate(peer, der)
        if problem is not None:
            link.refuse(f"{address}: {problem}")
            await close_writer(writer)
            return
        await self._run_session(link, reader, writer, address)

    async def _run_session(
        self,
        link: PeerLink,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: Address | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = writer
        try:
            if link.peer.protocol == PROTOCOL_TAK_V2 and address is not None:
                # The peer's wire: TAK federation v2 (client role), same pinned TLS connection.
                # Imported here: h2 and the FIG messages are loaded only with a TAK peer.
                from liaison.federation import takv2

                await takv2.serve(
                    link,
                    reader,
                    writer,
                    authority=str(address),
                    tap=self._tap,
                    router=self._router,
                )
            elif link.peer.protocol == PROTOCOL_TAK_V2:
                # TAK federation v2, server role: the peer dialled our listener (h2, as above).
                from liaison.federation import takv2_server

                await takv2_server.serve(link, reader, writer, router=self._router, tap=self._tap)
            elif link.peer.protocol == PROTOCOL_TAK_V1:
                # TAK federation v1, either role (no gRPC: h2 is not loaded for it).
                await takv1.serve(
                    link,
                    reader,
                    writer,
                    router=self._router,
                    tap=self._tap,
                    metrics=self._metrics,
                )
            else:
                await native.serve(link, reader, writer, self._tap)
        except LinkRefused as exc:
            link.refuse(str(exc))
        except PeerError as exc:
            log.warning("federation %s: link closed (%s): %s", link.peer.name, exc.reason, exc)
            link.status.set_state(LinkState.DOWN, self._clock_ms(), f"{exc.reason}: {exc}")
        except (OSError, ssl.SSLError) as exc:
            log.info("federation %s: connection lost: %s", link.peer.name, exc)
            link.status.set_state(LinkState.DOWN, self._clock_ms(), f"connection lost: {exc}")
        finally:
            self._sessions.pop(task, None)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peername = writer.get_extra_info("peername")
        fp = certificate_sha256(der) if der is not None else None
        link = next(
            (
                lk
                for lk in self.links.values()
                if lk.peer.dial is None and lk.peer.fingerprint == fp
            ),
            None,
        )
        if link is None:
            log.warning(
                "federation: refused a connection from %s: certificate %s is no accepted peer's",
                peername,
                fp,
            )
            if self._metrics is not None:
                self._metrics.counter(
                    "liaison_federation_unknown_peer_total",
                    "Federation connections refused: the certificate is no accepted peer's",
                ).inc()
            # No goodbye for a stranger: an untracked graceful close could outlive shutdown.
            writer.transport.abort()
            return
        problem = verify_peer_certificate(link.peer, der)
        if problem is not None:
            link.refuse(f"{peername}: {problem}")
            await close_writer(writer)
            return
        await self._run_session(link, reader, writer)
