"""The partner links of a cluster node: they run only while this node holds the federation lease.

Every node of a cluster with a ``[federation]`` table runs this component (app.py). It keeps
trying to take the lease (federation/lease.py) every ``lease_renew_s``; once it holds it, it
opens every peer's outbox in PostgreSQL under the lease's epoch (federation/pg_outbox.py),
makes the links' own router, starts the :class:`~liaison.federation.supervisor.Federation`
(listener, dialling, wires) and the stream reader that feeds the links (federation/feed.py),
and renews the lease. It stops all of them at once when the lease is lost (a renewal refused,
or none possible for ``lease_ttl_s - lease_renew_s``) or an outbox is fenced, then goes back to
trying. At shutdown it commits what the outboxes hold and releases the lease, so another node
takes over at its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liaison.cluster.bus import NatsBus
from liaison.errors import ConfigError, StorageError
from liaison.federation.config import FederationConfig
from liaison.federation.feed import StreamFeed
from liaison.federation.lease import Lease, ensure_schema
from liaison.federation.link import AuditSink
from liaison.federation.links_missions import LinksMissions
from liaison.federation.pg_outbox import PgOutbox, tx_timeout_s
from liaison.federation.status import (
    STALE_INTERVALS,
    FederationStatus,
    standby_may_write,
    status_path,
)
from liaison.federation.supervisor import Federation
from liaison.gate import Gate
from liaison.metrics import Metrics
from liaison.missions import Missions
from liaison.router import Router

log = logging.getLogger(__name__)

# The lease's name: one per federation of a cluster (every peer).
LEASE_NAME = "federation"
# Seconds to connect to PostgreSQL, and the most one lease statement may take.
CONNECT_TIMEOUT_S = 10.0


class LeaseLost(Exception):
    """This node no longer holds the federation lease."""


class LeasedFederation:
    """A lifetimes Component: the partner links, run on the lease holder only."""

    name = "federation"

    def __init__(
        self,
        *,
        config: FederationConfig,
        storage_url: str,
        node: str,
        bus: NatsBus,
        router: Router,
        gate: Gate,
        audit: AuditSink,
        data_dir: Path,
        server_cert: Path,
        server_key: Path,
        clock_ms: Callable[[], int],
        metrics: Metrics,
        links_router: Callable[[], Router],
    ) -> None:
        """``links_router`` makes the router the links subscribe to while this node holds the
        lease (app.py, the composition root, picks its latest state): the node's gate, the
        links its only subscribers."""
        if not storage_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "storage",
                "a cluster with [federation] keeps the partner links' outboxes and lease in"
                " PostgreSQL: set storage to a postgresql:// URL (docs/deployment.md)",
            )
        self.config = config
        self._url = storage_url
        self.node = node
        self._bus = bus
        self._router = router
        self._gate = gate
        self._audit = audit
        self._data_dir = data_dir
        self._cert = server_cert
        self._key = server_key
        self._clock_ms = clock_ms
        self._metrics = metrics
        self._make_router = links_router
        self.status = FederationStatus(config.server_id, metrics)
        self.status.lease = {"node": node, "holder": None, "epoch": 0, "held_here": False}
        self.federation: Federation | None = None  # while this node holds the lease
        self.epoch: int | None = None
        self._pool: Any = None
        self._lease: Lease | None = None
        self.links_router: Router | None = None  # while this node holds the lease
        self.m_changes = metrics.counter(
            "liaison_federation_lease_changes_total",
            "Times this node took the federation lease",
        )
        metrics.gauge(
            "liaison_federation_lease_held",
            "1 while this node holds the federation lease (runs the partner links)",
            lambda: 1.0 if self.epoch is not None else 0.0,
        )
        self.m_retries = metrics.counter(
            "liaison_federation_outbox_retries_total",
            "Outbox commits tried again after a connection or timeout error (cluster)",
        )
        self.m_cleanup = metrics.counter(
            "liaison_federation_cleanup_failures_total",
            "Steps of stopping the partner links that failed (cluster), by step",
            label="step",
        )

    def audit_recovered(self) -> int:
        """Release the events the links' router held while the audit log failed (app.py's
        audit keeper calls it with the node's router's); how many."""
        router = self.links_router
        return router.audit_recovered() if router is not None else 0

    # --- lifetime ---------------------------------------------------------------------------

    async def bind(self) -> None:
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise StorageError("the federation lease needs asyncpg: pip install asyncpg") from exc
        peers = len(self.config.peers)
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=peers + 2,  # a writer per outbox, the lease, the loads
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=CONNECT_TIMEOUT_S,
            )
            await ensure_schema(self._pool)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise StorageError(f"federation lease: cannot use PostgreSQL: {exc}") from exc
        self._lease = Lease(self._pool, LEASE_NAME, self.node, self.config.lease_ttl_s)

    async def run(self) -> None:
        assert self._lease is not None, "bind() first"
        renew_s = self.config.lease_renew_s
        while True:
            loop = asyncio.get_running_loop()
            started = loop.time()
            epoch: int | None = None
            try:
                async with asyncio.timeout(renew_s):
                    epoch = await self._lease.try_acquire()
            except Exception as exc:  # asyncpg's errors, a timeout: try again
                log.warning("federation lease: cannot reach PostgreSQL (%r)", exc)
            if epoch is None:
                await self._note_holder()
                await asyncio.sleep(renew_s)
                continue
            await self._hold(epoch, started)
            # Released or lost: give the other nodes a turn before trying again (a holder whose
            # links failed at once must not take and drop the lease in a tight loop).
            await asyncio.sleep(renew_s)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await pool.close()

    # --- holding ----------------------------------------------------------------------------

    async def _note_holder(self) -> None:
        """Write who holds the lease into this node's status (not the holder: no links here)."""
        assert self._lease is not None
        path = status_path(self._data_dir)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.lease_renew_s):
                info = await self._lease.info()
            self.status.lease = {
                "node": self.node,
                "holder": info.holder if info is not None else None,
                "epoch": info.epoch if info is not None else 0,
                "held_here": False,
            }
        self.status.peers.clear()
        now = self._clock_ms()
        # Workers of one node share the data folder: a standby never hides the holder's links.
        stale_ms = int(STALE_INTERVALS * self.config.status_interval_s * 1000)
        if standby_may_write(path, self.node, now, stale_after_ms=stale_ms):
            with contextlib.suppress(OSError):
                self.status.write(path, now)

    async def _hold(self, epoch: int, acquired_at: float) -> None:
        """Run the links under ``epoch`` until the lease is lost, something fails, or
        cancellation (shutdown: commit, then release)."""
        assert self._lease is not None
        log.info("federation lease: node %s holds it (epoch %d)", self.node, epoch)
        self.m_changes.inc()
        self.epoch = epoch
        self.status.lease = {"node": self.node, "holder": self.node, "epoch": epoch}
        self.status.lease["held_here"] = True
        outboxes: dict[str, PgOutbox] = {}
        fed: Federation | None = None
        feed: StreamFeed | None = None
        tx_timeout = tx_timeout_s(self.config.lease_ttl_s, self.config.lease_renew_s)
        try:
            for peer in self.config.peers:
                outboxes[peer.name] = await PgOutbox.open(
                    self._pool,
                    peer.name,
                    lease=LEASE_NAME,
                    epoch=epoch,
                    tx_timeout=tx_timeout,
                    on_retry=self.m_retries.inc,
                )
            links_router = self._make_router()
            self.links_router = links_router
            fed = Federation(
                config=self.config,
                policy=self._gate.policy,
                router=self._router,
                audit=self._audit,
                data_dir=self._data_dir,
                server_cert=self._cert,
                server_key=self._key,
                clock_ms=self._clock_ms,
                metrics=self._metrics,
                outboxes=outboxes,
                links_router=links_router,
                status=self.status,
            )
            await fed.start()
            missions = self._router.missions
            if isinstance(missions, Missions):
                # Events sent to a mission reach a partner as on a single node
                # (federation/links_missions.py): the missions every node shares in PostgreSQL.
                by_sender = {
                    link.source.principal.name: link.federates_mission
                    for link in fed.links.values()
                }
                links_router.set_missions(LinksMissions(missions, by_sender.get))
            for link in fed.links.values():
                # An event from a peer is acknowledged once the bus has it (link.py).
                link.bus = self._bus  # set before a wire can get past its handshake
            feed = StreamFeed(
                jetstream=self._bus.jetstream,
                settings=self._bus.settings,
                router=links_router,
                links=list(fed.links.values()),
                metrics=self._metrics,
            )
            await feed.start()
            self.federation = fed
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fed.run(), name="fed-links")
                tg.create_task(feed.run(), name="fed-feed")
                tg.create_task(self._keep(epoch, acquired_at), name="fed-lease")
                tg.create_task(self._watch_fence(outboxes), name="fed-fence")
        except* LeaseLost as group:
            log.error("federation lease: %s; partner links stopped", group.exceptions[0])
        except* Exception as group:  # a failure of PostgreSQL, NATS or a link: stop, try again
            log.error(
                "federation lease: partner links stopped after an error: %r", group.exceptions[0]
            )
        finally:
            await self._stop_links(epoch, feed, fed, outboxes)

    async def _stop_links(
        self,
        epoch: int,
        feed: StreamFeed | None,
        fed: Federation | None,
        outboxes: dict[str, PgOutbox],
    ) -> None:
        """Each step on its own (a failure is logged and counted, and the next steps still
        run); the status written, then the lease released last."""
        assert self._lease is not None
        self.federation = None
        self.links_router = None
        steps: list[tuple[str, Any]] = []
        if feed is not None:
            steps.append(("feed", feed.close))
        if fed is not None:
            steps.append(("links", fed.close))  # commits what each outbox holds (not once fenced)
        steps += [("outbox", box.aclose) for box in outboxes.values()]
        for step, close in steps:
            try:
                await close()
            except Exception as exc:
                self.m_cleanup.inc(step)
                log.error("federation lease: stopping the %s failed: %r", step, exc)
        self.epoch = None
        self.status.lease = {"node": self.node, "holder": None, "epoch": epoch}
        self.status.lease["held_here"] = False
        try:
            # Before the release: once released, the next holder's status is the one to keep.
            self.status.write(status_path(self._data_dir), self._clock_ms())
        except Exception as exc:
            self.m_cleanup.inc("status")
            log.error("federation lease: writing the status failed: %r", exc)
        try:
            async with asyncio.timeout(self.config.lease_renew_s):
                await self._lease.release(epoch)  # a no-op once another node took it
            log.info("federation lease: node %s released it (epoch %d)", self.node, epoch)
        except Exception as exc:
            self.m_cleanup.inc("release")
            log.error("federation lease: releasing it failed (it expires): %r", exc)

    async def _keep(self, epoch: int, acquired_at: float) -> None:
        """Renew every ``lease_renew_s``; raise LeaseLost when the database says another node
        holds it, or when no renewal succeeded for ``lease_ttl_s - lease_renew_s`` counted from
        before the last successful one was sent (the database cannot have let it expire
        sooner)."""
        assert self._lease is not None
        ttl, renew_s = self.config.lease_ttl_s, self.config.lease_renew_s
        loop = asyncio.get_running_loop()
        deadline = acquired_at + ttl - renew_s
        while True:
            # Every renew_s while renewals succeed; after failures, wake at the deadline itself
            # (lease_renew_s before the database may let the lease expire).
            await asyncio.sleep(max(0.0, min(renew_s, deadline - loop.time())))
            started = loop.time()
            if started >= deadline:
                raise LeaseLost(f"not renewed for {ttl - renew_s:.1f} s")
            try:
                async with asyncio.timeout(max(0.05, deadline - started)):
                    held = await self._lease.renew(epoch)
            except Exception as exc:  # asyncpg's errors, a timeout: again, until the deadline
                log.warning("federation lease: renewal failed (%r)", exc)
                continue
            if not held:
                raise LeaseLost("another node holds it")
            deadline = started + ttl - renew_s

    async def _watch_fence(self, outboxes: dict[str, PgOutbox]) -> None:
        """An outbox that was fenced (another node holds the lease) or stopped after a permanent
        commit failure: stop the links at once."""
        while True:
            for box in outboxes.values():
                if box.fenced is not None:
                    raise LeaseLost(f"outbox {box.peer} stopped: {box.fenced}")
            await asyncio.sleep(0.2)
