"""Revocations and sign-outs shared by the nodes of a cluster (docs/deployment.md, "Several
nodes": "Revocation and sign-out").

- **Revocations.** A user or certificate revoked in this node's own files (``liaison user
  revoke``, from any process: it only writes the files) is found by watching those files every
  ``WATCH_S`` (one ``stat`` each, the same stamps the session sweep reads) and published to the
  JetStream stream ``<cluster.stream>_REVOKED``, one subject per revoked user or certificate
  (``protocol/cluster_wire.py``). The stream keeps the last message of each subject with no age
  limit: it is the cluster's list of revocations.
- Every node consumes that stream from its first message: at start, before its listeners open
  (bounded by ``REPLAY_TIMEOUT_S``), then live. A revocation it did not have is added to
  ``Identities.shared`` and the session registry sweeps at once (``SessionRegistry.sweep_access``):
  the one way sessions end on revocation, and the same refusals of new ones as a revocation in its
  own files. A node never writes another node's revocation into its own files.
- After the replay a node publishes what its own files revoked that the stream lacks (made while
  it or NATS was away), so no revocation is lost while a node or the bus is down.
- **Sign-outs.** A web sign-out here (``POST /logout``) is published on ``<prefix>.so`` (core
  NATS, not kept: sign-ins live in memory, so a node that was down has none to end). Another node
  ends every web sign-in of that user (``WebSessions.end_user``), whose feeds close as at a sign-out
  there.

A notice that is not well formed is refused, logged and counted
(``liaison_cluster_access_refused_total``); it changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from liaison.cluster.bus import (
    CONNECT_TIMEOUT_S,
    CONSUMER_HEARTBEAT_S,
    DRAIN_S,
    PUBLISH_TIMEOUT_S,
    NatsBus,
    ensure_stream,
)
from liaison.errors import PkiError, StorageError
from liaison.identity.events import SIGNED_OUT, AccessEnded
from liaison.metrics import Metrics
from liaison.protocol import cluster_wire
from liaison.protocol.cluster_wire import (
    KIND_CERTIFICATE,
    KIND_SIGN_OUT,
    KIND_USER,
    REVOCATION_KINDS,
    AccessNotice,
    WireError,
)

if TYPE_CHECKING:
    from liaison.api.auth import WebSessions
    from liaison.identity.principals import Identities
    from liaison.session import SessionRegistry

log = logging.getLogger(__name__)

# Seconds between looks at this node's revocation files (a stat each): how late, at most, a
# revocation made here leaves for the bus. With the receiving node's immediate sweep, a
# revocation closes sessions on every node well within a second.
WATCH_S = 0.1
# Seconds a starting node waits for the revocation stream's replay before opening its listeners;
# what arrives later is applied as it arrives (live sessions are swept then).
REPLAY_TIMEOUT_S = CONNECT_TIMEOUT_S
# Messages the revocation stream keeps (one per revoked user or certificate); past it JetStream
# refuses a new one (discard new): the publish is counted as an error and tried again, never a
# revocation silently dropped.
MAX_STREAM_MSGS = 1_000_000
# Sign-outs waiting to be published; past it one is not announced (logged and counted: the other
# nodes' sign-ins of that user end at their own expiry).
MAX_SIGN_OUTS = 1024


def revocation_stream(events_stream: str) -> str:
    """The revocation stream's name, beside the events stream ``cluster.stream``."""
    return f"{events_stream}_REVOKED"


class AccessShare:
    """Announces this node's revocations and sign-outs on the bus and applies the other nodes';
    a lifetimes Component started after the bus (and closed before it)."""

    name = "cluster-access"

    def __init__(
        self,
        bus: NatsBus,
        identities: Identities,
        registry: SessionRegistry,
        web_sessions: WebSessions,
        metrics: Metrics,
    ) -> None:
        self._bus = bus
        self._identities = identities
        self._registry = registry
        self._web = web_sessions
        self._prefix = bus.settings.prefix
        self._node = bus.settings.node
        self._stream = revocation_stream(bus.settings.stream)
        # Revocations of this node's files waiting for JetStream's acknowledgement, in order.
        self._unpublished: deque[AccessNotice] = deque()
        # Users and serials queued or published by this node (never queued twice).
        self._sent_names: set[str] = set()
        self._sent_serials: set[int] = set()
        self._sign_outs: deque[str] = deque()
        self._wake = asyncio.Event()
        self._local_state: object = None
        self._replay_to = 0
        self._replayed = asyncio.Event()
        self._subscriptions: list[Any] = []
        self._unsubscribe_web: Callable[[], None] | None = None
        m = metrics
        self.m_published = m.counter(
            "liaison_cluster_access_published_total",
            "Revocations and sign-outs this node announced on the bus",
            "kind",
        )
        self.m_received = m.counter(
            "liaison_cluster_access_received_total",
            "Revocations and sign-outs of the bus applied here",
            "kind",
        )
        self.m_refused = m.counter(
            "liaison_cluster_access_refused_total",
            "Access notices of the bus refused (not well formed)",
        )
        self.m_errors = m.counter(
            "liaison_cluster_access_publish_errors_total",
            "Revocations and sign-outs the bus did not take (revocations tried again)",
        )
        shared = identities.shared
        m.gauge(
            "liaison_cluster_revoked_users",
            "Users revoked by the cluster's revocation stream",
            lambda: len(shared.names),
        )
        m.gauge(
            "liaison_cluster_revoked_certificates",
            "Certificates revoked by the cluster's revocation stream",
            lambda: len(shared.serials),
        )

    # --- lifetime ---------------------------------------------------------------------------

    async def bind(self) -> None:
        from nats.js.api import (  # nats-py is there: the bus imported it
            DeliverPolicy,
            DiscardPolicy,
            RetentionPolicy,
            StorageType,
            StreamConfig,
        )

        js = self._bus.jetstream
        config = StreamConfig(
            name=self._stream,
            subjects=[cluster_wire.revocation_subjects(self._prefix)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_msgs=MAX_STREAM_MSGS,
            max_msgs_per_subject=1,
            num_replicas=self._bus.settings.replicas,
        )
        info = await ensure_stream(js, config)  # its state: the replay's end
        self._replay_to = int(info.state.last_seq) if info.state.messages else 0
        if not self._replay_to:
            self._replayed.set()
        # An ordered push consumer from the stream's first message: the replay, then live.
        self._subscriptions.append(
            await js.subscribe(
                cluster_wire.revocation_subjects(self._prefix),
                cb=self._on_revocation,
                stream=self._stream,
                ordered_consumer=True,
                # made again from its last sequence when lost (a NATS server gone, a reconnect)
                idle_heartbeat=CONSUMER_HEARTBEAT_S,
                deliver_policy=DeliverPolicy.ALL,
            )
        )
        self._subscriptions.append(
            await self._bus.client.subscribe(
                cluster_wire.sign_out_subject(self._prefix), cb=self._on_sign_out
            )
        )
        try:
            await asyncio.wait_for(self._replayed.wait(), REPLAY_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "cluster: revocation stream %s not replayed within %.0f s; applying the rest as "
                "it arrives",
                self._stream,
                REPLAY_TIMEOUT_S,
            )
        log.info(
            "cluster: %d users and %d certificates revoked by the stream %s",
            len(self._identities.shared.names),
            len(self._identities.shared.serials),
            self._stream,
        )
        self._unsubscribe_web = self._web.events.subscribe(self._sign_in_ended)
        self._watch()  # what this node's files revoked that the stream lacks

    async def run(self) -> None:
        while True:
            try:
                self._watch()
            except (StorageError, PkiError) as exc:  # a file that cannot be read: next time
                log.error("cluster: this node's revocations not read: %s", exc)
            await self._publish()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WATCH_S)

    async def close(self) -> None:
        if self._unsubscribe_web is not None:
            self._unsubscribe_web()
            self._unsubscribe_web = None
        # What is still unpublished is published at the next start (the stream lacks it).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._publish(), DRAIN_S)
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions.clear()

    # --- this node's revocations and sign-outs ------------------------------------------------

    def _watch(self) -> None:
        """Queue the revocations of this node's files that are new since the last look."""
        state = self._identities.local_revocation_state()
        if state == self._local_state:
            return
        self._local_state = state
        names, serials = self._identities.local_revocations()
        shared = self._identities.shared
        for name in sorted(names - shared.names - self._sent_names):
            self._sent_names.add(name)
            self._unpublished.append(AccessNotice(KIND_USER, self._node, name=name))
        for serial in sorted(serials - shared.serials - self._sent_serials):
            self._sent_serials.add(serial)
            self._unpublished.append(AccessNotice(KIND_CERTIFICATE, self._node, serial=serial))

    def _sign_in_ended(self, ended: AccessEnded) -> None:
        """A web sign-in ended here: announce a sign-out (not an expiry, nor one that came from
        another node)."""
        if ended.reason != SIGNED_OUT or ended.node is not None or not ended.username:
            return
        if len(self._sign_outs) >= MAX_SIGN_OUTS:
            self.m_errors.inc()
            log.warning("cluster: sign-out of %s not announced: too many waiting", ended.username)
            return
        self._sign_outs.append(ended.username)
        self._wake.set()

    async def _publish(self) -> None:
        """Publish what waits: revocations until one is not acknowledged (kept, in order, for
        the next try), then sign-outs."""
        js = self._bus.jetstream
        while self._unpublished:
            notice = self._unpublished[0]
            subject = cluster_wire.notice_subject(self._prefix, notice)
            try:
                await js.publish(
                    subject, cluster_wire.encode_notice(notice), timeout=PUBLISH_TIMEOUT_S
                )
            except Exception as exc:  # nats-py raises its own errors and TimeoutError
                self.m_errors.inc()
                log.warning("cluster: revocation not acknowledged (%r); trying again", exc)
                return
            self._unpublished.popleft()
            self.m_published.inc(notice.kind)
            log.info("cluster: announced %s", _describe(notice))
        nc = self._bus.client
        while self._sign_outs:
            name = self._sign_outs.popleft()
            notice = AccessNotice(KIND_SIGN_OUT, self._node, name=name)
            try:
                await nc.publish(
                    cluster_wire.sign_out_subject(self._prefix), cluster_wire.encode_notice(notice)
                )
            except Exception as exc:
                self.m_errors.inc()
                log.warning("cluster: sign-out of %s not announced (%r)", name, exc)
                continue
            self.m_published.inc(KIND_SIGN_OUT)

    # --- other nodes' notices -----------------------------------------------------------------

    async def _on_revocation(self, msg: Any) -> None:
        try:
            self.receive_revocation(msg.subject, msg.data)
        finally:
            try:
                seq = int(msg.metadata.sequence.stream)
            except Exception:  # not a JetStream message: nothing to count towards the replay
                seq = 0
            if seq >= self._replay_to:
                self._replayed.set()

    def receive_revocation(self, subject: str, payload: bytes) -> bool:
        """Apply one message of the revocation stream; True when it revoked someone new here
        (their live sessions are closed before this returns)."""
        try:
            notice = cluster_wire.decode_notice(self._prefix, subject, payload, REVOCATION_KINDS)
        except WireError as exc:
            self.m_refused.inc()
            log.warning("cluster: revocation notice on %s refused: %s", subject, exc)
            return False
        shared = self._identities.shared
        try:
            if notice.kind == KIND_USER:
                added = shared.add_name(notice.name)
            else:
                added = shared.add_serial(notice.serial)
        except OverflowError as exc:
            self.m_refused.inc()
            log.error("cluster: %s refused: %s", _describe(notice), exc)
            return False
        if not added:
            return False
        closed = self._registry.sweep_access()
        if notice.node == self._node:
            # This node's own, back from the stream: its files already revoke it (unless they
            # were restored from an older copy since: then the stream's notice still holds).
            log.info("cluster: %s (this node's own, from the stream)", _describe(notice))
            return True
        self.m_received.inc(notice.kind)
        log.warning("cluster: %s; %d live principal(s) closed here", _describe(notice), closed)
        return True

    async def _on_sign_out(self, msg: Any) -> None:
        self.receive_sign_out(msg.subject, msg.data)

    def receive_sign_out(self, subject: str, payload: bytes) -> int:
        """Apply one sign-out notice; how many web sign-ins of that user it ended here."""
        try:
            notice = cluster_wire.decode_notice(
                self._prefix, subject, payload, frozenset({KIND_SIGN_OUT})
            )
        except WireError as exc:
            self.m_refused.inc()
            log.warning("cluster: sign-out notice refused: %s", exc)
            return 0
        if notice.node == self._node:
            return 0  # this node's own, back from NATS
        self.m_received.inc(KIND_SIGN_OUT)
        ended = self._web.end_user(notice.name, node=notice.node)
        if ended:
            log.info(
                "cluster: %s signed out on node %s: %d sign-in(s) ended here",
                notice.name,
                notice.node,
                ended,
            )
        return ended


def _describe(notice: AccessNotice) -> str:
    if notice.kind == KIND_CERTIFICATE:
        return f"certificate {notice.serial:x} revoked on node {notice.node}"
    return f"user {notice.name} revoked on node {notice.node}"
