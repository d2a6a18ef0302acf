"""A partner link, whatever its wire: the PeerLink moves guarded events to and from one peer.

One :class:`PeerLink` per configured peer is, towards the router,

* a Subscriber (``principal``, ``client_uid``, ``callsign``, ``deliver``) whose principal is a
  FEDERATE with the peer's organisation and its **release ceiling** as authorizations, so the
  router's own decision filters first; ``deliver`` never blocks: it puts the event in the link's
  :class:`~liaison.transports.outbound.OutboundQueue` (no key: nothing coalesces before its
  release is audited; :meth:`PeerLink.statistics`), and once per loop turn, or as soon as
  :data:`MAX_UNFLUSHED` wait, the batch goes through the guard, the audit log (one
  ``append_many``, written before anything is released) and into the persistent outbox, which
  orders by priority class and coalesces position reports;
* a Source (``link.source``) whose principal carries what the peer may **originate**: accepted
  inbound events are published with it, so they pass the same gate as everything else.

Towards a wire (the native wire in ``federation/native.py``; TAK federation v2 later), it is the
link state of one connection at a time: the wire calls :meth:`PeerLink.begin_connection`, reports
the peer's server id (:meth:`~PeerLink.peer_identified`) and where it resumes
(:meth:`~PeerLink.connection_up`), hands received events to :meth:`~PeerLink.receive` (which
returns the sequence number to acknowledge once it is durably applied), reports acknowledgements
(:meth:`~PeerLink.acked`), runs :meth:`~PeerLink.send_loop` with its :class:`WireSession`, and ends
with :meth:`~PeerLink.end_connection`. The sender keeps at most ``window`` events unacknowledged,
re-checks each row against the guard just before it is written, and resumes from the peer's last
applied sequence number after any reconnect or restart; the receiver drops what it already
applied. This module imports no wire, socket or TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from liaison import audit as audit_mod
from liaison.errors import PeerError, StorageError
from liaison.federation import fed_groups
from liaison.federation.config import PROTOCOL_NATIVE, FederationConfig, PeerConfig
from liaison.federation.guard import Accepted, Denial, InboundValidator, OutboundGuard, Release
from liaison.federation.outbox import Outbox, QueuedRelease
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.pg_outbox import PgOutbox
from liaison.federation.status import LinkState, PeerStatus
from liaison.identity.listeners import Listener
from liaison.model.event import Dest, Event
from liaison.model.labels import AuthSet, Policy
from liaison.model.principal import FEDERATION_PREFIX, Principal, PrincipalKind
from liaison.router import Outgoing, Router
from liaison.transports.outbound import OutboundLimits, OutboundQueue, OutboundStatistics

log = logging.getLogger(__name__)

# Events waiting for the guard in memory (deliver -> next loop turn). When this many wait, a flush
# runs at once inside deliver, so a burst never holds more than this many unguarded events (and
# the queue, whose limit this is, never overflows).
MAX_UNFLUSHED = 1000
UNFLUSHED_LIMITS = OutboundLimits(max_items=MAX_UNFLUSHED)
# Clients of a peer remembered for directed messages (a partner with more than this many
# devices has the oldest forgotten, and messages to them are counted as unrouted).
MAX_REMOTE_CLIENTS = 20_000
# Releases translated for a TAK wire when they were queued (PeerLink.translator), kept in
# memory until their row is taken: past this, the oldest are forgotten and their rows are parsed
# and translated again when taken. About 1.5 KiB each (the release bytes and the message).
MAX_TRANSLATED = 8192
# Distinct sets of local groups a TAK peer's inbound mapping wrote events into, each with its
# Source (a mapping has few; the cache is cleared past this).
MAX_GROUP_SOURCES = 256
# Seconds one batch waits for the cluster bus to take the events it applied before the link
# gives up on the connection (the peer sends the batch again after it reconnects; what this link
# applied meanwhile is dropped as a duplicate and acknowledged once the bus has it).
BUS_WAIT_S = 10.0


class AuditSink(Protocol):
    """What the link needs of the audit log (``liaison.audit.AuditLog`` fits)."""

    def append_many(
        self, entries: Sequence[tuple[str, Mapping[str, object]]]
    ) -> Sequence[object]: ...


# The listener name federation principals carry: the gate's [gate.listeners.federation] ceiling
# and default apply to what peers send (docs/labels.md); a default label is never used, since
# unlabelled events from a peer are refused before they reach the router.
LISTENER = Listener.FEDERATION


class GateLike(Protocol):
    """The server's label gate: writes audit records, False when the log cannot be written."""

    def record(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> bool: ...


class GateAudit:
    """An AuditSink over the gate, so the link shares the server's one audit log (and its
    recovery after a failure) instead of holding the log object itself."""

    def __init__(self, gate: GateLike) -> None:
        self._gate = gate

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> Sequence[object]:
        if not self._gate.record(entries):
            raise StorageError("the audit log cannot be written")
        return ()


class WireSession(Protocol):
    """What a PeerLink needs from a wire for one live connection: a way to send events.

    Everything else a wire does (its framing, its handshake, its heartbeats) is its own; it
    reports what it learns to the link's wire-facing methods. ``send_events`` writes the rows,
    each with its link sequence number and priority class, and returns once the transport can
    take more (flow control); a wire whose peer does not acknowledge by number calls
    :meth:`PeerLink.acked` itself once a row is delivered.
    """

    async def send_events(self, rows: Sequence[OutboxRow]) -> None: ...


class RolPort(Protocol):
    """What a TAK v2 wire needs of the link's mission ROL (``federation/mission_rol.py``)."""

    async def next_out(self) -> bytes: ...

    def put_back(self, data: bytes) -> None: ...

    def received(self, data: bytes) -> None: ...


class BusBarrier(Protocol):
    """The cluster bus as a link's acknowledgement sees it (``cluster/bus.py`` NatsBus): in a
    cluster an event from a peer counts as applied only once JetStream has it."""

    def mark(self) -> int:
        """The bus's number of the last event submitted so far."""
        ...

    async def published(self, mark: int) -> None:
        """Return once the bus acknowledged every event submitted up to ``mark``."""
        ...

    @property
    def unshared(self) -> int:
        """Events distributed without being published (the bus's queue was full), so far."""
        ...


class LinkRefused(Exception):
    """The peer is not who it must be, or does not enforce our policy; the link must not start."""


def _federate(peer: PeerConfig, auths: AuthSet) -> Principal:
    return Principal(
        name=FEDERATION_PREFIX + peer.name,
        kind=PrincipalKind.FEDERATE,
        in_groups=peer.in_groups,
        out_groups=peer.out_groups,
        org=peer.originate_org,
        auths=auths,
        listener=LISTENER,
    )


class _InboundSource:
    """The Source the router sees for events a peer sends us."""

    def __init__(self, principal: Principal, peer: PeerConfig | None = None) -> None:
        self._principal = principal
        self._peer = peer
        # While the event the peer numbered N is published in a cluster: "fed/PEER/N", the name
        # JetStream's duplicate detection knows it by (cluster/bus.py), so an event applied
        # again by the next lease holder (the old one died before acknowledging it) is stored
        # in the stream, and distributed, once.
        self.bus_dedup: str | None = None

    @property
    def principal(self) -> Principal:
        return self._principal

    def federates_mission(self, name: str) -> bool:
        """Whether the peer may send items of the mission ``name`` (its ``missions`` key): the
        missions take an item with ``dest mission`` from this source only then."""
        return self._peer is not None and self._peer.federates_mission(name)


class PeerLink:
    """Everything about one peer: router subscriber, guard, outbox, status and connection."""

    def __init__(
        self,
        *,
        fed: FederationConfig,
        peer: PeerConfig,
        policy: Policy,
        router: Router,
        audit: AuditSink,
        outbox: Outbox | PgOutbox,
        status: PeerStatus,
        clock_ms: Callable[[], int],
    ) -> None:
        self.fed = fed
        self.peer = peer
        self.policy = policy
        self._router = router
        self._audit = audit
        self.outbox = outbox
        self.status = status
        self._clock_ms = clock_ms
        known = outbox.meta("peer_server_id")
        self.guard = OutboundGuard(
            policy=policy, peer=peer, server_id=fed.server_id, peer_server_id=known
        )
        status.peer_server_id = known
        self._principal = _federate(peer, peer.release_ceiling)
        self.source = _InboundSource(_federate(peer, peer.originate_ceiling), peer)
        self._send_denials: list[Denial] = []
        # Rows of the last take that passed the send-time re-check, with the tree it read their
        # bytes into (TAK wires only; at most one take's rows, MAX_TAKE): see checked_tree.
        self._checked: dict[int, tuple[bytes, ET.Element]] = {}
        # A TAK wire's translation of a release from the tree the guard's re-check read its
        # bytes into (set by the supervisor, fig_link.pretranslate; None: translated at send
        # time). Its results by release bytes, oldest first, at most MAX_TRANSLATED, until the
        # row with equal bytes is taken (see _send_check); then by row, for the wire (at most
        # one take's rows, like _checked).
        self.translator: Callable[[ET.Element, tuple[str, ...]], object] | None = None
        self._translated: dict[bytes, object] = {}
        self._ready: dict[int, tuple[bytes, object]] = {}
        self.client_uid: str | None = None
        self.callsign: str | None = None
        # Delivered, not yet guarded: no key, so nothing coalesces before its release is audited.
        # Each event with the groups it was written into (mapped for a TAK peer, fed_groups.py).
        self._unflushed: OutboundQueue[tuple[Event, frozenset[str]]] = OutboundQueue(
            UNFLUSHED_LIMITS
        )
        # Inbound sources per set of local groups (a TAK peer's group mapping, fed_groups.py).
        self._sources: dict[frozenset[str], _InboundSource] = {}
        status.queue = self._unflushed.statistics
        self._flush_handle: asyncio.Handle | None = None
        self._publishing: Event | None = None
        # Uids and callsigns of the peer's own clients, oldest first (bounded).
        self._remote_uids: dict[str, None] = {}
        self._remote_callsigns: dict[str, None] = {}
        self._callsign_uid: dict[str, str] = {}  # callsign -> uid, to forget both on a delete
        self._wake = asyncio.Event()
        self._connection: asyncio.Task[None] | None = None
        # Mission ROL of a tak-v2 peer (set by the supervisor; None for other wires).
        self.rol: RolPort | None = None
        # In a cluster (federation/feed.py): the stream sequence and sender of the event being
        # distributed, and the highest sequence delivered since the last flush.
        self._feed_seq: int | None = None
        self._feed_sender: str | None = None
        self._feed_top: int | None = None
        self._feed_low: int | None = None  # the lowest sequence delivered since the last flush
        # The first stream sequence whose releases could not be saved (audit or outbox write
        # failed): the stored position never passes it; feed_mark stops the links, and the next
        # holder reads the stream again from the position.
        self._feed_unsaved: int | None = None
        # In a cluster (set by the lease holder, federation/leased.py): the bus an inbound event
        # must be in before it is marked applied and acknowledged; the highest sequence number
        # from the peer applied here and waiting for the bus, and the bus mark covering it.
        self.bus: BusBarrier | None = None
        self._applied_unmarked = 0
        self._bus_mark = 0
        self._sync_status()

    # --- Subscriber ---------------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        return self._principal

    def serves(self, dest: Dest) -> bool:
        """Whether a ``marti/dest`` names a client of this peer (learned from the position
        reports it sent us), so the router hands directed messages for it to this link."""
        return (dest.uid is not None and dest.uid in self._remote_uids) or (
            dest.callsign is not None and dest.callsign in self._remote_callsigns
        )

    def federates_mission(self, name: str) -> bool:
        """Whether items sent to the mission ``name`` go to this peer (its ``missions`` key):
        the router then hands it such an item with its ``dest mission`` kept."""
        return self.peer.federates_mission(name)

    def _learn(self, event: Event) -> None:
        if event.is_delete and event.link_uid:
            # The peer's client left (or its item was deleted): no longer a destination here.
            if self._remote_uids.pop(event.link_uid, None) is not None:
                stale = [c for c, u in self._callsign_uid.items() if u == event.link_uid]
                for callsign in stale:
                    self._remote_callsigns.pop(callsign, None)
                    del self._callsign_uid[callsign]
            return
        if not event.is_contact:
            return
        if event.callsign is not None:
            self._callsign_uid[event.callsign] = event.uid
            while len(self._callsign_uid) > MAX_REMOTE_CLIENTS:
                del self._callsign_uid[next(iter(self._callsign_uid))]
        for known, value in (
            (self._remote_uids, event.uid),
            (self._remote_callsigns, event.callsign),
        ):
            if value is None:
                continue
            known.pop(value, None)
            known[value] = None
            while len(known) > MAX_REMOTE_CLIENTS:
                del known[next(iter(known))]

    def deliver(self, out: Outgoing) -> None:
        """Queue one event the router offers this peer. Never blocks, never raises."""
        event = out.event
        if event is self._publishing:
            return  # our own inbound event, offered back to us: never a candidate
        seq = self._feed_seq
        if seq is not None:
            if seq <= self.feed_floor() or self._feed_sender == self.source.principal.name:
                return  # already in the outbox (read before a change of holder), or an echo
            self._feed_top = seq if self._feed_top is None else max(self._feed_top, seq)
            self._feed_low = seq if self._feed_low is None else min(self._feed_low, seq)
        queue = self._unflushed
        queue.put((event, out.sender_groups))
        if len(queue) >= MAX_UNFLUSHED:
            self.flush()
            return
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Guard, audit and queue everything delivered since the last flush."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        delivered = self._unflushed.take()
        top, self._feed_top = self._feed_top, None
        low, self._feed_low = self._feed_low, None
        if not delivered:
            return
        if top is not None and self._feed_unsaved is not None:
            # Earlier releases were not saved: nothing after them is queued either (the stream
            # is read again from the stored position, so queuing these would send them twice).
            return
        events = [e for e, _g in delivered]
        peer = self.peer
        verdicts: list[Release | Denial] = []
        names: list[tuple[str, ...]] = []
        translator = self.translator
        translated: list[tuple[bytes, object]] = []
        for event, groups in delivered:
            # A TAK peer: the group mapping and TAK's own never-federated types first, fail
            # closed (federation/fed_groups.py; tak-federation.md sections 7 and 10).
            mapped: tuple[str, ...] | None = ()
            refusal: str | None = None
            if peer.protocol != PROTOCOL_NATIVE:
                refusal = fed_groups.not_federated(event.type)
                mapped = fed_groups.outbound_names(peer.groups_out, groups)
                if mapped is None and refusal is None:
                    refusal = fed_groups.NO_GROUP_MAPPING
            if refusal is not None:
                self.status.drop(
                    refusal + "_out" if refusal == fed_groups.NO_GROUP_MAPPING else refusal
                )
                verdicts.append(
                    Denial(reasons=(refusal,), stage="guard", uid=event.uid, type=event.type)
                )
            elif translator is None:
                verdicts.append(self.guard.check(event))
            else:
                # Translated now from the tree the guard's re-check read the release bytes into
                # (one parse for both, and the tree is dropped at once).
                verdict, tree = self.guard.check_parsed(event)
                verdicts.append(verdict)
                if tree is not None and isinstance(verdict, Release):
                    done = translator(tree, mapped or ())
                    if done is not None:
                        translated.append((verdict.payload, done))
            names.append(mapped or ())
        records: list[tuple[str, Mapping[str, object]]] = []
        releases: list[tuple[Release, tuple[str, ...]]] = []
        denials = 0
        for v, groups_of in zip(verdicts, names, strict=True):
            if isinstance(v, Release):
                releases.append((v, groups_of))
                # Every release to a partner is recorded, whatever the organisations: it leaves
                # this server (docs/labels.md section 5, the release record).
                records.append(
                    audit_mod.release_record(
                        path="federation",
                        uid=v.uid,
                        type=v.type,
                        label_id=v.label_id,
                        originator=v.originator,
                        to_org=peer.originate_org,
                        recipients=[self._principal.name],
                        sha256=v.sha256,
                        peer=peer.name,
                        priority=v.priority,
                        removed=v.removed,
                    )
                )
            else:
                denials += 1
                records.append(self._denial_record(v))
        try:
            self._audit.append_many(records)
        except (StorageError, OSError) as exc:
            # Fail closed (labels.md 7e point 6): no audit record, no release.
            log.error(
                "federation %s: audit log failed, %d events not released: %s",
                self.peer.name,
                len(events),
                exc,
            )
            self.status.bump("audit_failures", len(events))
            self._unsaved(low)
            return
        now = self._clock_ms()
        before = self.outbox.coalesced
        outbox = self.outbox
        try:
            queued = [
                QueuedRelease(
                    payload=r.payload,
                    sha256=r.sha256,
                    label_id=r.label_id,
                    uid=r.uid,
                    type=r.type,
                    priority=r.priority,
                    coalesce_key=r.coalesce_key,
                    queued_ms=now,
                    groups=g,
                )
                for r, g in releases
            ]
            if isinstance(outbox, PgOutbox):
                # The stream position goes into the same transaction as these releases.
                outbox.put_many(queued, top)
            else:
                outbox.put_many(queued)
        except StorageError as exc:
            log.error(
                "federation %s: outbox write failed, %d releases lost: %s",
                self.peer.name,
                len(releases),
                exc,
            )
            self._unsaved(low)
            return
        if translated:
            kept = self._translated
            kept.update(translated)
            while len(kept) > MAX_TRANSLATED:
                del kept[next(iter(kept))]
        self.status.bump("releases", len(releases))
        self.status.bump("denials", denials)
        self.status.bump("coalesced", self.outbox.coalesced - before)
        self._sync_status()
        if releases:
            self._wake.set()

    # --- fed by the cluster's stream (federation/feed.py) ---------------------------------------

    def _unsaved(self, low: int | None) -> None:
        """The releases of the stream messages from ``low`` on were not saved: keep the stored
        position before them (a cluster's outbox only; a node's own links do not read the
        stream)."""
        if low is not None and isinstance(self.outbox, PgOutbox):
            self._feed_unsaved = low if self._feed_unsaved is None else min(self._feed_unsaved, low)

    def feed_floor(self) -> int:
        """The stream sequence this link's outbox holds everything up to (-1: never read)."""
        outbox = self.outbox
        return outbox.stream_seq if isinstance(outbox, PgOutbox) else -1

    def feed_start(self, stream_seq: int) -> None:
        """Read the stream after ``stream_seq`` from now on: a link that never read it starts at
        its end; after the stream was made again, at its beginning."""
        if isinstance(self.outbox, PgOutbox):
            self.outbox.reset_stream_seq(stream_seq)

    def feed_next(self, seq: int | None, sender: str | None = None) -> None:
        """The events delivered next come from the stream message ``seq`` sent by ``sender``
        (None: the distribution of that message is over)."""
        self._feed_seq, self._feed_sender = seq, sender

    def feed_mark(self, stream_seq: int) -> None:
        """Everything up to ``stream_seq`` was read: queue what waits, then note the position.
        Raises StorageError, the position unchanged, when releases of a message read were not
        saved (the lease holder then stops the links; the stream is read again from the stored
        position)."""
        self.flush()
        outbox = self.outbox
        if self._feed_unsaved is not None:
            raise StorageError(
                f"federation {self.peer.name}: releases of stream message {self._feed_unsaved}"
                f" not saved; the stream is read again from {self.feed_floor()}"
            )
        if isinstance(outbox, PgOutbox) and stream_seq > outbox.stream_seq:
            try:
                outbox.set_stream_seq(stream_seq)
            except StorageError as exc:
                log.warning("federation %s: stream position not written: %s", self.peer.name, exc)

    def statistics(self) -> OutboundStatistics:
        """The statistics of the queue of delivered events waiting for the guard (depth, peak,
        queued, taken, ...); what waits after the guard is the outbox's ``backlog``."""
        return self._unflushed.statistics()

    def _sync_status(self) -> None:
        s, o = self.status, self.outbox
        s.backlog, s.last_seq, s.last_acked, s.last_applied = (
            o.backlog,
            o.last_seq,
            o.last_acked,
            o.last_applied,
        )

    def clock_ms(self) -> int:
        """The link's clock (wall time, ms), for wires that stamp their heartbeats."""
        return self._clock_ms()

    # --- towards the wire: one connection at a time ---------------------------------------------

    @property
    def last_applied(self) -> int:
        """The highest sequence number applied from the peer (what a RESUME carries)."""
        return self.outbox.last_applied

    def begin_connection(self) -> None:
        """The calling task now runs this link's connection; an older one is cancelled."""
        current = asyncio.current_task()
        old = self._connection
        if old is not None and old is not current and not old.done():
            log.info("federation %s: a new connection replaces the current one", self.peer.name)
            old.cancel()
        self._connection = current
        self.status.set_state(LinkState.HANDSHAKE, self._clock_ms())

    def end_connection(self) -> None:
        """The connection begun by the calling task ended (for whatever reason)."""
        if self._connection is asyncio.current_task():
            self._connection = None
        if self.status.state in (LinkState.UP, LinkState.HANDSHAKE):
            self.status.set_state(LinkState.DOWN, self._clock_ms())
        self._sync_status()

    def peer_identified(self, server_id: str) -> InboundValidator:
        """The peer passed the wire's handshake as ``server_id``: note it (on a change, what was
        delivered before is decided with the old id first) and return the validator for what
        it sends on this connection."""
        if server_id != self.guard.peer_server_id:
            if self.guard.peer_server_id is not None:
                log.warning(
                    "federation %s: peer server id changed from %s to %s",
                    self.peer.name,
                    self.guard.peer_server_id,
                    server_id,
                )
            self.flush()  # events delivered so far were decided with the old id
            self.outbox.set_meta("peer_server_id", server_id)
            self.guard = self.guard.with_peer_server_id(server_id)
            self.status.peer_server_id = server_id
        return InboundValidator(
            policy=self.policy,
            peer=self.peer,
            server_id=self.fed.server_id,
            peer_server_id=server_id,
        )

    def connection_up(self, peer_last_applied: int) -> None:
        """The handshake is done and the peer applied everything up to ``peer_last_applied``:
        the link is up; the wire starts :meth:`send_loop` next."""
        acked = self.outbox.start_connection(peer_last_applied)
        self.status.bump("acked", acked)
        self.status.bump("connects")
        self.status.set_state(LinkState.UP, self._clock_ms())
        self.status.last_error = None
        self._sync_status()
        log.info(
            "federation %s: link up with %s (resuming after %d, %d queued)",
            self.peer.name,
            self.guard.peer_server_id,
            peer_last_applied,
            self.outbox.backlog,
        )
        self._peer_link_record("up", peer_server_id=self.guard.peer_server_id)

    def acked(self, seq: int) -> None:
        """The peer applied everything we sent up to ``seq``."""
        if seq > self.outbox.last_seq:
            raise PeerError(f"ACK {seq} for a sequence number never sent", reason="bad_ack")
        self.status.bump("acked", self.outbox.ack(seq))
        self._sync_status()
        self._wake.set()

    def _denial_record(self, d: Denial) -> tuple[str, dict[str, object]]:
        return audit_mod.deny_record(
            path="federation",
            uid=d.uid,
            type=d.type,
            label_id=d.label_id,
            reasons=d.reasons,
            recipients=[self._principal.name],
            peer=self.peer.name,
            stage=d.stage,
            mismatch=d.stage in ("recheck", "send"),
        )

    def refused(self, reasons: tuple[str, ...]) -> None:
        """The router refused this peer an event (its label is above the release ceiling, or
        outside its REL or handling): a ``deny`` record naming ``federation:<peer>`` was written,
        so it is counted with the guard's own denials."""
        self.status.bump("denials")

    def _peer_link_record(self, event: str, **extra: object) -> None:
        fields: dict[str, object] = {"peer": self.peer.name, "event": event}
        fields.update({k: v for k, v in extra.items() if v is not None})
        with contextlib.suppress(StorageError, OSError, ValueError):
            self._audit.append_many([(audit_mod.Kind.PEER_LINK.value, fields)])

    def refuse(self, reason: str) -> None:
        """Record a refused connection: status, audit and one clear log line."""
        log.warning("federation %s: link refused: %s", self.peer.name, reason)
        self.status.bump("refusals")
        self.status.set_state(LinkState.REFUSED, self._clock_ms(), reason)
        self._peer_link_record("refused", reason=reason)

    def source_for(self, groups: frozenset[str] | None) -> _InboundSource:
        """The Source for an inbound event written into ``groups`` (a TAK peer's group mapping,
        fed_groups.py): the peer's originate principal with those IN groups; None: the peer's
        configured ``in_groups``."""
        if groups is None or groups == self.source.principal.in_groups:
            return self.source
        source = self._sources.get(groups)
        if source is None:
            if len(self._sources) >= MAX_GROUP_SOURCES:
                self._sources.clear()
            principal = dataclasses.replace(self.source.principal, in_groups=groups)
            source = self._sources[groups] = _InboundSource(principal)
        return source

    async def receive(
        self,
        events: Sequence[tuple[int, bytes]],
        validator: InboundValidator,
        groups: Mapping[int, frozenset[str]] | None = None,
    ) -> int:
        """Validate, audit and route a batch of received ``(seq, payload)`` events; return the
        sequence number the wire acknowledges, once the outbox durably noted it as applied.
        ``groups`` gives, by sequence number, the local groups an event is written into when
        they are not the peer's ``in_groups`` (a TAK peer's inbound group mapping)."""
        outbox = self.outbox
        fresh = [
            (seq, payload)
            for seq, payload in events
            if not outbox.is_duplicate(seq) and seq > self._applied_unmarked
        ]
        self.status.bump("received", len(events))
        self.status.bump("duplicates", len(events) - len(fresh))
        results = [(seq, validator.check(payload)) for seq, payload in fresh]
        records: list[tuple[str, Mapping[str, object]]] = []
        for seq, r in results:
            fields: dict[str, object] = {
                "path": "federation",
                "peer": self.peer.name,
                "seq": seq,
                "sha256": r.sha256,
            }
            if isinstance(r, Accepted):
                fields.update(
                    uid=r.event.uid,
                    type=r.event.type,
                    label_id=r.label.label_id,
                    origin=r.provenance.origin,
                    hops=r.provenance.hops,
                )
                records.append((audit_mod.Kind.INGEST.value, fields))
            else:
                for k, v in (("uid", r.uid), ("type", r.type), ("label_id", r.label_id)):
                    if v is not None:
                        fields[k] = v
                fields["reasons"] = list(r.reasons)
                records.append((audit_mod.Kind.INGEST_REJECT.value, fields))
        if records:
            # The audit log must hold the ingest before the event is routed; if it cannot be
            # written, nothing is applied or acknowledged and the peer will send it again.
            try:
                self._audit.append_many(records)
            except (StorageError, OSError) as exc:
                raise PeerError(f"audit log failed: {exc}", reason="audit_failed") from exc
        bus = self.bus
        unshared = bus.unshared if bus is not None else 0
        accepted = 0
        for seq, r in results:
            if isinstance(r, Accepted):
                accepted += 1
                self._publishing = r.event
                self._learn(r.event)
                source = self.source_for(groups.get(seq) if groups is not None else None)
                if bus is not None and self.peer.protocol == PROTOCOL_NATIVE:
                    # Only the native wire's numbers name an event for good: a TAK wire numbers
                    # what it receives from last_applied (fig_link.apply_inbound), so the next
                    # holder may give another event the same number.
                    source.bus_dedup = f"fed/{self.peer.name}/{seq}"
                try:
                    self._router.publish(r.event, source)
                finally:
                    self._publishing = None
                    source.bus_dedup = None
        self.status.bump("accepted", accepted)
        self.status.bump("rejections", len(results) - accepted)
        top = events[-1][0]
        if bus is not None:
            await self._wait_for_bus(bus, unshared, top if results else 0)
            top = max(top, self._applied_unmarked)
        outbox.record_applied(top)
        self._sync_status()
        # Acknowledged only once its fsync completed (off the event loop).
        await outbox.sync()
        return max(top, outbox.last_applied)

    async def _wait_for_bus(self, bus: BusBarrier, unshared: int, applied: int) -> None:
        """In a cluster: return once the bus has every event this link applied (docs/
        deployment.md "What the cluster receives from a partner"), ``applied`` being the
        highest sequence number of this batch applied here (0: none). Waiting covers what
        earlier batches applied too (the bus acknowledges in order), so one acknowledgement
        covers them all. Raises PeerError (the connection ends, nothing is marked or
        acknowledged) when the bus does not take them within ``BUS_WAIT_S``, or when the
        bus's queue was full (an event distributed here only, never published)."""
        if bus.unshared != unshared:
            # One of these events may be on this node only: not acknowledged. The peer sends the
            # batch again and it is applied again (an update of the same uids).
            raise PeerError(
                "the cluster bus's queue is full: events not acknowledged", reason="bus_full"
            )
        if applied:
            self._bus_mark = bus.mark()
            if self.peer.protocol == PROTOCOL_NATIVE:
                # Applied here: a resend (after a reconnect) is a duplicate, even before the
                # mark. (A TAK wire never resends and numbers from last_applied: not for it.)
                self._applied_unmarked = max(self._applied_unmarked, applied)
        try:
            async with asyncio.timeout(BUS_WAIT_S):
                await bus.published(self._bus_mark)
        except TimeoutError:
            raise PeerError(
                f"the cluster bus did not take the events in {BUS_WAIT_S:.0f} s: not acknowledged",
                reason="bus_wait",
            ) from None

    def _send_check(self, payload: bytes, label_id: str, uid: str, type: str) -> bool:
        """The send-time check of a row's queued bytes (every row, every wire).

        A row whose bytes are equal (the dict lookup compares the bytes themselves) to a
        release the guard re-checked and a TAK wire translated when it was queued is handed to
        the wire with that translation: the wire re-checks the serialized message it writes,
        decoded again, against the guard as it is now (``fig_link.encode_rows``), which is the
        re-check of the bytes that leave; parsing the queued bytes again here would check the
        same thing once more. Any other row (queued before a restart, its translation
        forgotten, or its bytes changed in the outbox) is parsed and re-checked here in full."""
        if self._translated:
            done = self._translated.pop(payload, None)
            if done is not None:
                self._ready[id(payload)] = (payload, done)
                return True
        problems, tree = self.guard.recheck_parsed(payload, label_id=label_id, uid=uid, type=type)
        if not problems:
            if tree is not None and self.peer.protocol != PROTOCOL_NATIVE:
                self._checked[id(payload)] = (payload, tree)
            return True
        self._send_denials.append(
            Denial(reasons=problems, stage="send", uid=uid, type=type, label_id=label_id)
        )
        return False

    def translation(self, payload: bytes) -> object | None:
        """What the link's ``translator`` made of a row's bytes (the very bytes object of a row
        just taken) when it was queued, handed out once; None when there is none."""
        kept = self._ready.pop(id(payload), None)
        if kept is None or kept[0] is not payload:
            return None
        return kept[1]

    def checked_tree(self, payload: bytes) -> ET.Element | None:
        """The element tree the send-time re-check read ``payload`` (the very bytes object of
        a row just taken) into, handed out once, for a TAK wire that translates those bytes;
        None when there is none."""
        kept = self._checked.pop(id(payload), None)
        if kept is None or kept[0] is not payload:
            return None
        return kept[1]

    async def send_loop(self, session: WireSession) -> None:
        """Send what the outbox holds through ``session``, at most ``window`` unacknowledged,
        until cancelled (the wire runs it from :meth:`connection_up` to the connection's end)."""
        window = self.fed.window
        outbox = self.outbox
        while True:
            room = window - outbox.in_flight
            if room <= 0 or outbox.backlog - outbox.in_flight <= 0:
                # Nothing to send, or the window is full: an ACK or a new release wakes us.
                self._wake.clear()
                await self._wake.wait()
                continue
            self._send_denials = []
            self._checked.clear()
            self._ready.clear()
            rows = outbox.take(room, check=self._send_check)
            if self._send_denials:
                with contextlib.suppress(StorageError, OSError):
                    self._audit.append_many([self._denial_record(d) for d in self._send_denials])
                self.status.bump("denials", len(self._send_denials))
            if not rows:
                self._sync_status()
                if not self._send_denials:
                    self._wake.clear()
                    await self._wake.wait()
                await asyncio.sleep(0)
                continue
            # Nothing leaves before the rows and their sequence numbers are durable.
            await outbox.sync()
            await session.send_events(rows)
            self._checked.clear()
            self._ready.clear()
            self.status.bump("sent", len(rows))
            self._sync_status()

    # --- for wires that translate the release bytes (TAK federation v2, federation/takv2.py) ----

    def wire_denied(self, row: OutboxRow, reasons: Sequence[str]) -> None:
        """The wire's own re-check of what it was about to write (the translated message, read
        back) refused ``row``: a deny record like a send-time re-check failure, counted."""
        denial = Denial(
            reasons=tuple(reasons), stage="send", uid=row.uid, type=row.type, label_id=row.label_id
        )
        with contextlib.suppress(StorageError, OSError):
            self._audit.append_many([self._denial_record(denial)])
        self.status.bump("denials")

    def wire_rejected(self, reasons: Sequence[str], sha256: str) -> None:
        """The wire could not turn what the peer sent into an event at all: an ingest_reject
        record (``sha256`` of the bytes received), counted like the validator's refusals."""
        fields: dict[str, object] = {
            "path": "federation",
            "peer": self.peer.name,
            "sha256": sha256,
            "reasons": list(reasons),
        }
        with contextlib.suppress(StorageError, OSError):
            self._audit.append_many([(audit_mod.Kind.INGEST_REJECT.value, fields)])
        self.status.bump("received")
        self.status.bump("rejections")
