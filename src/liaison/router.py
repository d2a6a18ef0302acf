"""The router: the only code that hands an event to anyone outside the server.

An event goes through two steps: :meth:`Router.accept` (the ingest rules, labelling, the ``ingest``
audit record, storing, the latest state) and :meth:`Router.distribute` (one decision per
subscriber, the ``release`` and ``deny`` records, delivery). Sources call :meth:`Router.publish`
(or :meth:`Router.publish_checked`), which does both.

Every path out passes :meth:`Router.distribute` (live delivery, implicit and explicit),
:meth:`Router.replay_to` (the latest state sent to a newly connected client) or
:meth:`Router.visible` (queries made for a principal, such as the HTTP API). Each of them asks
``model.access.can_see`` and nothing else decides who may see what. Subscribers (stream sessions,
the mesh bridge, federation links, web sockets) only ever receive an :class:`Outgoing` from here.

``publish`` is synchronous and never awaits: ingest is accepted, stored through the bounded
:class:`~liaison.storage.base.StoreWriter` queue, and offered to each permitted subscriber's own
bounded queue. Recipients with the same access key share one decision per event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from liaison.audit import deny_record
from liaison.errors import PeerError
from liaison.gate import Gate, IngestOutcome, content_hash, release_entries
from liaison.latest.base import LatestEntry, LatestState
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.access import PERMIT, Decision, access_key, can_see
from liaison.model.event import ALL_STREAMING, Dest, Event
from liaison.model.labels import Label, LabelError, Policy
from liaison.model.principal import Principal, PrincipalKind, origin_of
from liaison.protocol import cot_proto, cot_xml, tak_stream
from liaison.storage.base import StoredEvent, StoreWriter

log = logging.getLogger(__name__)


class Outgoing:
    """One event on its way out, rendered at most once per wire format for all its recipients."""

    __slots__ = ("_proto_frame", "coalesce_key", "event", "sender_groups", "xml_ready")

    def __init__(self, event: Event, sender_groups: frozenset[str] = frozenset()) -> None:
        self.event = event
        # The groups the event was written into (what the decision read); a federation link
        # maps them to the partner's group names (federation/fed_groups.py).
        self.sender_groups = sender_groups
        # The XML once known (the received bytes, or rendered by xml()): a writer that takes
        # several events per flush reads it without a call for each (docs/performance.md).
        self.xml_ready: bytes | None = event.xml
        self._proto_frame: bytes | None = None
        # Position reports of one uid may replace each other in a slow reader's queue; worked
        # out once per event here rather than once per recipient (docs/performance.md).
        self.coalesce_key: str | None = event.uid if event.is_position and not event.dests else None

    def xml(self) -> bytes:
        """The event as CoT XML (TAK protocol version 0)."""
        if self.xml_ready is None:
            self.xml_ready = cot_xml.render_xml(self.event)
        return self.xml_ready

    def proto_frame(self) -> bytes:
        """The event as a TAK protocol v1 stream frame (0xBF, varint length, TakMessage)."""
        if self._proto_frame is None:
            self._proto_frame = tak_stream.frame(cot_proto.render_proto(self.event))
        return self._proto_frame


class Source(Protocol):
    """Anything events come from: a session, a datagram listener, a feed, a federation link."""

    @property
    def principal(self) -> Principal: ...


class Subscriber(Source, Protocol):
    """Anything the router delivers to. ``deliver`` must never block or raise."""

    client_uid: str | None
    callsign: str | None

    def deliver(self, out: Outgoing) -> None: ...


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event :meth:`Router.accept` took in: labelled, recorded, stored, in the latest state.

    What :meth:`Router.distribute` needs to hand it to the subscribers, and nothing else."""

    event: Event  # as accepted: the authoritative label applied, dests still on
    label: Label | None
    source: Source
    out: Outgoing  # the event's rendering, shared by the stored copy and live delivery


@dataclass(frozen=True, slots=True)
class Refusal:
    """An event :meth:`Router.accept` did not take in."""

    reasons: tuple[str, ...]  # why the ingest rules refused it; empty when held
    held: bool = False  # the audit log could not be written: re-accepted when it recovers


@dataclass(frozen=True, slots=True)
class Published:
    """What became of one published event."""

    delivered: int
    refused: tuple[str, ...]  # reasons, when the ingest rules refused it
    event: Event | None  # the event as accepted (labelled), None when refused or held


@dataclass(slots=True)
class _Fanout:
    """One event's delivery plan: who gets it, decided before anything is released."""

    out: Outgoing
    label: Label | None
    permitted: list[Subscriber]
    audit: list[tuple[str, Mapping[str, object]]]
    denied: list[tuple[Subscriber, tuple[str, ...]]]  # refused recipients and why


class MissionRouting(Protocol):
    """The missions (``liaison.missions``), as the router sees them: who receives an event sent
    to a mission (``marti/dest@mission``), and what to do once it was delivered."""

    def recipients(
        self, mission: str, source: Source, uid: str | None = None
    ) -> frozenset[tuple[str, str]] | None:
        """The mission's live subscribers as (client uid, user name), or None when the mission
        does not exist, ``source`` may not write to it or item ``uid`` may not join it (then
        the mission target is ignored)."""
        ...

    def delivered_form(self, event: Event, mission: str) -> Event:
        """``event`` (dests removed) as the mission's subscribers get it: a chat in the
        mission's chat room when configured, else ``event`` itself."""
        ...

    def membership_refusal(self, event: Event) -> str | None:
        """Why ``event`` must be dropped whole (its uid is a mission's item and it does not name
        that mission: strict membership), or None."""
        ...

    def accepted(self, accepted: AcceptedEvent) -> None:
        """An event with a mission dest was accepted and delivered: keep it in the mission."""
        ...

    def prior_label(self, mission: str, uid: str) -> Label | None:
        """The label of the item ``uid`` the mission already keeps, None when it keeps none:
        an event sent to the mission changes that item, so the ingest rules apply to it."""
        ...

    def connected(self, sub: Subscriber) -> int:
        """A stream client made its uid known: send it what its missions changed meanwhile."""
        ...

    def disconnected(self, sub: Subscriber) -> None:
        """A stream client with a known uid left: remember where its missions stood."""
        ...


class ClusterBus(Protocol):
    """Where a node hands the events it accepts to the other nodes (``cluster/bus.py``).

    With a bus, :meth:`Router.publish_checked` accepts an event and submits it; the bus hands it
    back to :meth:`Router.distribute_acknowledged` once the bus has stored it (JetStream's
    acknowledgement), and hands the other nodes' events to :meth:`Router.distribute_remote`. It
    learns which groups this node's subscribers read, so it receives only events some of them
    may see.
    """

    def submit(self, accepted: AcceptedEvent) -> None:
        """Publish ``accepted``; distribute it here once the bus has it."""
        ...

    def interest(self, groups: frozenset[str], delta: int) -> None:
        """A subscriber reading ``groups`` attached (+1) or detached (-1)."""
        ...

    @property
    def congested(self) -> bool:
        """True while events wait for the bus past its threshold (readers pause)."""
        ...


class RefusalListener(Protocol):
    """A subscriber that wants to know when the router refused it an event (a federation link
    counts these with its own refusals, so its status equals its ``deny`` records)."""

    def refused(self, reasons: tuple[str, ...]) -> None: ...


def _tell_refused(plans: Iterable[_Fanout]) -> None:
    """After the audit records are written: tell each refused subscriber that asks."""
    for plan in plans:
        for sub, reasons in plan.denied:
            hook: Callable[[tuple[str, ...]], None] | None = getattr(sub, "refused", None)
            if hook is not None:
                hook(reasons)


# Events held back while the audit log cannot be written, re-published when it recovers.
# Readers pause as soon as the log fails (Router.congested), so this only holds what was already
# in flight; past the limit the oldest are dropped and counted.
MAX_HELD_EVENTS = 10_000

# Distinct fan-out keys whose one object the router keeps (Router.attach); past this many the
# table starts again. Keys are ((groups, authorizations), organisation), a handful in practice.
MAX_INTERNED_KEYS = 4096
# Decisions the router remembers across events, by (sender groups, label, access key): a
# labelled unit's updates keep one label object (an unlabelled update keeps the stored one), so
# the same triple comes back with every report. Past this many the table starts again.
MAX_REMEMBERED_DECISIONS = 4096
# No access key: what a fan-out's "key of the last recipient" is before the first one.
_NO_KEY = object()
# Distinct labels whose display banner is remembered; a mission uses a handful.
MAX_BANNERS = 1024
# Latest entries whose rendering replay keeps (Router._replay_out: about 1 KB each as XML, as
# much again once a TAK protocol v1 client took the protobuf form); past it the table starts
# again.
MAX_REPLAY_RENDERINGS = 20_000
# Uids of ``early`` latest entries (a cluster's bucket ahead of its bus) whose replay the router
# remembers, with who got it, until the report arrives live (Router.distribute_remote); past it
# the oldest is forgotten (its subscribers would then get that one report twice).
MAX_EARLY_REPLAYS = 10_000


class Router:
    """Subscriptions, implicit and explicit routing, the latest-state table and replay."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        writer: StoreWriter | None = None,
        latest: LatestState,
        congestion_threshold: int | None = None,
        gate: Gate | None = None,
        relay_between_peers: bool = False,
    ) -> None:
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._writer = writer
        self._congestion_threshold = congestion_threshold
        self.gate = gate
        self.relay_between_peers = relay_between_peers
        self.policy: Policy | None = gate.policy if gate is not None else None
        self._subscribers: dict[int, Subscriber] = {}
        # Who to find for explicit routing, kept exact on attach, detach and when a client
        # makes itself known (_identify), so finding an addressee costs O(destinations) rather
        # than a scan of every session. Each maps to {id(sub): sub}; bounded by the sessions.
        # _by_uid files a subscriber without a client uid under "" (mission members name it so).
        self._by_uid: dict[str, dict[int, Subscriber]] = {}
        self._by_callsign: dict[str, dict[int, Subscriber]] = {}
        self._indexed: dict[int, tuple[str, str | None]] = {}  # id -> (uid key, callsign) filed
        self._order: dict[int, int] = {}  # id -> attach sequence: targets keep attach order
        self._attached = 0
        self._federates: dict[int, Subscriber] = {}  # partner links, in attach order
        # Each subscriber's access key and release organisation (_fan_key), computed once at
        # attach (principals do not change).
        self._keys: dict[int, tuple[object, str | None]] = {}
        # (access key, release organisation) -> its one object
        self._key_objects: dict[tuple[object, str | None], tuple[object, str | None]] = {}
        # can_see outcomes by (sender groups, label, access key): pure, and the policy is the
        # gate's for the router's life (MAX_REMEMBERED_DECISIONS).
        self._remembered: dict[tuple[frozenset[str], Label | None, object], Decision] = {}
        # The latest state: app.py picks the implementation (one node's, or a cluster's).
        self._latest: LatestState = latest
        # The rendering of each latest entry replayed lately, shared by every replay until the
        # entry changes: a reconnect storm (a restart, a network back) renders each item once,
        # not once per client (docs/performance.md, "Replay storms"). uid -> (entry, Outgoing).
        self._replayed: dict[str, tuple[LatestEntry, Outgoing]] = {}
        # Early entries replayed (LatestEntry.early): uid -> (the report's time, the attach
        # numbers of the subscribers replayed it), until it arrives live (MAX_EARLY_REPLAYS).
        self._early_replays: dict[str, tuple[int, set[int]]] = {}
        # Held while the audit log fails: events to accept again, or accepted ones to distribute.
        self._held: deque[tuple[Event, Source] | AcceptedEvent] = deque()
        self._banners: dict[str, str] = {}  # label id -> banner, for display
        self._on_delete: Callable[[str], None] | None = None
        self._missions: MissionRouting | None = None
        self._bus: ClusterBus | None = None
        m = metrics
        self.m_in = m.counter("liaison_events_in_total", "Events accepted for routing", "type")
        self.m_rejected = m.counter(
            "liaison_ingest_rejected_total", "Events refused by the ingest rules", "reason"
        )
        self.m_deliveries = m.counter("liaison_deliveries_total", "Events handed to subscribers")
        self.m_denied = m.counter(
            "liaison_denied_total", "Deliveries refused by the access decision", "reason"
        )
        self.m_unrouted = m.counter(
            "liaison_unrouted_total", "Explicit destinations that matched nobody", "kind"
        )
        self.m_store_dropped = m.counter(
            "liaison_store_dropped_total", "Events not stored because the writer queue was full"
        )
        self.m_held = m.counter(
            "liaison_held_total", "Events held or dropped while the audit log failed", "outcome"
        )
        m.gauge("liaison_subscribers", "Connected subscribers", lambda: len(self._subscribers))
        m.gauge("liaison_latest_uids", "Uids in the latest-state table", lambda: len(self._latest))

    @property
    def congested(self) -> bool:
        """True while readers should pause: the store's writer queue is past its threshold, or
        the audit log cannot be written (nothing may be released, so nothing is accepted)."""
        if self.gate is not None and self.gate.audit_failed:
            return True
        if self._bus is not None and self._bus.congested:
            return True
        t = self._congestion_threshold
        return t is not None and self._writer is not None and self._writer.pending >= t

    @property
    def store_backlog(self) -> float:
        """The store writer's queue depth as a share of the depth at which the router congests
        (0.0 without a writer or threshold): what a source that can wait reads to slow down
        before readers have to pause (the feeds' publisher, docs/feeds.md)."""
        t = self._congestion_threshold
        if t is None or self._writer is None:
            return 0.0
        return self._writer.pending / t

    # --- subscriptions --------------------------------------------------------------------

    def attach(self, sub: Subscriber) -> None:
        k = id(sub)
        if k in self._subscribers:
            self._unindex(k)
        self._subscribers[k] = sub
        # One object per distinct (access key, release organisation): the decision of an event
        # is found by the key's identity for every recipient but the first of its key, where
        # equal keys of different objects compared their group sets each time, and whether a
        # permitted recipient is named in a ``release`` record is worked out once per run of
        # recipients sharing one (docs/performance.md, "Counted, not timed").
        fan_key = _fan_key(sub.principal)
        interned = self._key_objects.get(fan_key)
        if interned is None:
            if len(self._key_objects) >= MAX_INTERNED_KEYS:
                self._key_objects.clear()  # only a saving: equal keys still get equal decisions
            interned = self._key_objects[fan_key] = fan_key
        self._keys[k] = interned
        if k not in self._order:
            self._attached += 1
            self._order[k] = self._attached
            if self._bus is not None:
                self._bus.interest(sub.principal.out_groups, +1)
        if sub.principal.kind is PrincipalKind.FEDERATE:
            self._federates[k] = sub
        self._index(sub)

    def detach(self, sub: Subscriber) -> None:
        k = id(sub)
        gone = self._subscribers.pop(k, None)
        self._keys.pop(k, None)
        self._order.pop(k, None)
        self._federates.pop(k, None)
        self._unindex(k)
        if gone is not None and self._bus is not None:
            self._bus.interest(gone.principal.out_groups, -1)
        if gone is not None and sub.client_uid and self._missions is not None:
            self._missions.disconnected(sub)

    def _index(self, sub: Subscriber) -> None:
        k = id(sub)
        uid_key, callsign = sub.client_uid or "", sub.callsign or None
        self._by_uid.setdefault(uid_key, {})[k] = sub
        if callsign:
            self._by_callsign.setdefault(callsign, {})[k] = sub
        self._indexed[k] = (uid_key, callsign)

    def _unindex(self, k: int) -> None:
        filed = self._indexed.pop(k, None)
        if filed is None:
            return
        uid_key, callsign = filed
        for table, key in ((self._by_uid, uid_key), (self._by_callsign, callsign)):
            if key is None:
                continue
            bucket = table.get(key)
            if bucket is not None:
                bucket.pop(k, None)
                if not bucket:
                    del table[key]

    def _identify(self, sub: Subscriber, uid: str | None, callsign: str | None) -> None:
        """Set what a connected client is known as (its uid, its callsign), index kept exact."""
        k = id(sub)
        attached = k in self._indexed
        if attached:
            self._unindex(k)
        sub.client_uid, sub.callsign = uid, callsign
        if attached:
            self._index(sub)

    def _in_order(self, found: Iterable[Subscriber]) -> list[Subscriber]:
        """Subscribers found through the index, in attach order (as a scan would list them)."""
        order = self._order
        return sorted(found, key=lambda s: order.get(id(s), 0))

    def _addressees(self, uids: Collection[str], callsigns: Collection[str]) -> list[Subscriber]:
        """The attached subscribers whose client uid is in ``uids`` or whose callsign is in
        ``callsigns``, each once, in attach order: O(destinations + matches)."""
        found: dict[int, Subscriber] = {}
        for uid in uids:
            found.update(self._by_uid.get(uid) or {})
        for callsign in callsigns:
            found.update(self._by_callsign.get(callsign) or {})
        # The index only narrows the search: the test itself is the same as a full scan's.
        return self._in_order(
            s for s in found.values() if s.client_uid in uids or s.callsign in callsigns
        )

    def _clients_named(self, clients: Collection[tuple[str, str]]) -> list[Subscriber]:
        """The attached subscribers ``(client uid or "", user name)`` names, in attach order."""
        found: dict[int, Subscriber] = {}
        for uid, _name in clients:
            found.update(self._by_uid.get(uid) or {})
        return self._in_order(
            s for s in found.values() if (s.client_uid or "", s.principal.name) in clients
        )

    @property
    def subscribers(self) -> Iterator[Subscriber]:
        return iter(list(self._subscribers.values()))

    def on_delete(self, callback: Callable[[str], None]) -> None:
        """Register who persists a delete (the app: the store's delete, in writer order)."""
        self._on_delete = callback

    def set_missions(self, missions: MissionRouting) -> None:
        """Register the missions, which route ``marti/dest@mission`` events (app.py)."""
        self._missions = missions

    def set_bus(self, bus: ClusterBus) -> None:
        """Share this node's events with the other nodes of a cluster through ``bus``."""
        self._bus = bus
        for sub in self._subscribers.values():
            bus.interest(sub.principal.out_groups, +1)

    @property
    def missions(self) -> MissionRouting | None:
        """The missions registered with ``set_missions`` (the federation's ROL uses them)."""
        return self._missions

    def _mission_accepted(self, accepted: AcceptedEvent) -> None:
        if self._missions is not None and any(d.mission for d in accepted.event.dests):
            self._missions.accepted(accepted)

    # --- ingest ---------------------------------------------------------------------------

    def publish(self, event: Event, source: Source) -> int:
        """Accept one event from ``source``; returns the number of deliveries (0 if refused)."""
        return self.publish_checked(event, source).delivered

    def publish_checked(self, event: Event, source: Source) -> Published:
        """Accept one event from ``source``, then distribute it: what every source needs.

        Returns the number of deliveries, the reasons when the event was refused, and the event
        as accepted (with its authoritative label) when it was. The same steps as :meth:`accept`
        then :meth:`distribute`, with the ``ingest`` record and the release records written in
        one audit batch (one fsync per event). Control messages (ping, negotiation) never get
        here: sessions answer them themselves. The order matters: every decision is taken and
        every audit record written before the first byte is released; a refused event is neither
        stored nor delivered.
        """
        if self._bus is not None:
            # In a cluster an event is distributed once the bus has it (cluster/bus.py), here
            # and on every other node; the release records are written then, by each node for
            # its own recipients.
            result = self.accept(event, source)
            if isinstance(result, Refusal):
                return Published(0, result.reasons, None)
            self._bus.submit(result)
            return Published(0, (), result.event)
        checked = self._check(event, source)
        if isinstance(checked, Refusal):
            return Published(0, checked.reasons, None)
        accepted, ingest = checked
        plans = self._plan(accepted)
        if not self._record([ingest, *(a for plan in plans for a in plan.audit)]):
            self._hold((event, source))
            return Published(0, (), None)
        _tell_refused(plans)
        self._commit(accepted)
        delivered = self._deliver(plans)
        self._mission_accepted(accepted)
        return Published(delivered, (), accepted.event)

    def accept(self, event: Event, source: Source) -> AcceptedEvent | Refusal:
        """Take one event in from ``source``, without delivering it to anyone.

        The ingest rules and labelling, the ``ingest`` audit record, then (the record written)
        what the sender's client is known as, the stored copy and the latest state. A refused
        event is recorded and neither stored nor remembered; while the audit log cannot be
        written the event is held and accepted again (and distributed) when it recovers.
        """
        checked = self._check(event, source)
        if isinstance(checked, Refusal):
            return checked
        accepted, ingest = checked
        if not self._record([ingest]):
            self._hold((event, source))
            return Refusal((), held=True)
        # With a bus the latest state takes the event on the bus's acknowledgement
        # (distribute_acknowledged): a client connecting meanwhile is not replayed an event
        # the bus may never hold, nor replayed it and then sent it live (docs/deployment.md).
        self._commit(accepted, remember=self._bus is None)
        return accepted

    def distribute_acknowledged(
        self, accepted: AcceptedEvent, *, skip_groups: frozenset[str] = frozenset()
    ) -> int:
        """An event this node accepted (:meth:`accept`), now held by the bus: it joins the
        latest state, then goes to every subscriber that may see it (:meth:`distribute`), in
        one step, so a subscriber attaching is either replayed it or sent it live, never both.
        ``skip_groups``: subscribers reading any of these groups already had it from the bus
        (another node published it there first) and are left out.
        """
        self._join_latest(accepted, self._clock_ms())
        return self.distribute(accepted, skip_groups=skip_groups)

    def distribute(
        self,
        accepted: AcceptedEvent,
        *,
        replayed: Collection[int] = (),
        skip_groups: frozenset[str] = frozenset(),
    ) -> int:
        """Hand an accepted event to every subscriber that may see it; returns the deliveries.

        Implicit routing to everyone but its source (and, from a partner, to no other partner
        unless configured), or explicit routing by ``marti/dest``; one decision per access key;
        the ``release`` and ``deny`` records written before the first delivery. While the audit
        log cannot be written the event is held and distributed when it recovers.
        ``replayed``: attach numbers of subscribers already replayed this very report, left out;
        ``skip_groups``: subscribers reading any of these groups, left out.
        """
        plans = self._plan(accepted, replayed, skip_groups)
        if not self._record([a for plan in plans for a in plan.audit]):
            self._hold(accepted)
            return 0
        _tell_refused(plans)
        delivered = self._deliver(plans)
        self._mission_accepted(accepted)
        return delivered

    def distribute_remote(self, event: Event, label: Label | None, source: Source) -> int:
        """Distribute an event another node of the cluster accepted; returns the deliveries.

        That node applied the ingest rules, wrote the ``ingest`` record and stored the event; here
        it joins this node's latest state (so replay and the picture answer the same on every
        node) and goes to this node's subscribers, each decided and recorded here.
        """
        event = _with_origin(event, source.principal)
        replayed: Collection[int] = ()
        early = self._early_replays.get(event.uid)
        if early is not None and event.time >= early[0]:
            # The bucket brought this uid here before the bus did, and it was replayed: whoever
            # got that very report is not sent it again (cluster/latest_kv.py).
            del self._early_replays[event.uid]
            if event.time == early[0]:
                replayed = early[1]
        self._remember(event, label, source.principal, self._clock_ms(), shared=False)
        out = Outgoing(event, source.principal.in_groups)
        return self.distribute(AcceptedEvent(event, label, source, out), replayed=replayed)

    def distribute_feed(self, event: Event, label: Label | None, source: Source) -> int:
        """Distribute an event read back from the cluster's stream to this router's subscribers
        only; returns the deliveries.

        The router of a cluster's partner links (federation/feed.py, on the node holding the
        federation lease) has the links as its only subscribers and reads every node's events,
        its own node's included, from the stream: each is decided and recorded for the links as
        :meth:`distribute_remote` would, without joining a latest state (the node's own router
        keeps that).
        """
        event = _with_origin(event, source.principal)
        out = Outgoing(event, source.principal.in_groups)
        return self.distribute(AcceptedEvent(event, label, source, out))

    def _check(
        self, event: Event, source: Source
    ) -> tuple[AcceptedEvent, tuple[str, Mapping[str, object]] | None] | Refusal:
        """The ingest rules and labelling: the event as accepted and its ``ingest`` record (not
        yet written), or the refusal (its record written)."""
        if self._missions is not None:
            # Strict mission membership (tak-missions.md 7.1): dropped whole, counted and logged
            # by the missions (liaison_mission_refused_total{reason="strict_membership"}).
            dropped = self._missions.membership_refusal(event)
            if dropped is not None:
                return Refusal((dropped,))
        sender = source.principal
        received = event
        label: Label | None = None
        ingest: tuple[str, Mapping[str, object]] | None = None
        gate = self.gate
        outcome = self.ingest_outcome(event, sender)
        if gate is not None and outcome is not None:
            ingest = ("ingest", _ingest_fields(received, sender, outcome.label, outcome))
            if outcome.event is None:
                self.m_rejected.inc(outcome.reasons[0] if outcome.reasons else "rejected")
                log.info(
                    "event %s from %s refused: %s",
                    event.uid,
                    sender.name,
                    ",".join(outcome.reasons),
                )
                gate.record([ingest])
                return Refusal(outcome.reasons or ("rejected",))
            event, label = outcome.event, outcome.label
        self.m_in.inc(event.type.split("-", 2)[0] if event.type else "")
        event = _with_origin(event, sender)
        return AcceptedEvent(event, label, source, Outgoing(event, sender.in_groups)), ingest

    def ingest_outcome(self, event: Event, sender: Principal) -> IngestOutcome | None:
        """The ingest rules and labelling for ``event`` from ``sender`` as :meth:`accept` would
        apply them now, deciding only (no record written, nothing counted or kept); None with
        labels off. A REST import checks every event of a batch with it before taking any."""
        gate = self.gate
        if gate is None:
            return None
        # The ingest rules hold for every event that changes a stored item: an update of
        # its uid, and a delete (t-x-d-d) of its link uid. An unlabelled delete carries the
        # label of the item it removes, so exactly those who could see the item are told.
        prior = self._latest.get(event.uid)
        outcome = gate.ingest(event, sender, prior.label if prior is not None else None)
        target = self._latest.get(event.link_uid) if event.is_delete and event.link_uid else None
        if outcome.event is not None and target is not None and target is not prior:
            outcome = gate.ingest(event, sender, target.label)
        # An event sent to a mission also changes the item that mission keeps under its uid
        # (a mission-only item is not in the latest state): the same rules hold for it. When
        # the picture holds the uid too under another label, both must accept the event and
        # agree on its label (an unlabelled update cannot take two labels at once).
        if outcome.event is not None and self._missions is not None:
            for name in sorted({d.mission for d in event.dests if d.mission}):
                kept = self._missions.prior_label(name, event.uid)
                if kept is None or (prior is not None and kept == prior.label):
                    continue
                checked = gate.ingest(event, sender, kept)
                differs = prior is not None and checked.label != outcome.label
                if checked.event is not None and differs:
                    checked = IngestOutcome(None, None, ("mission_item_label_differs",))
                outcome = checked
                if outcome.event is None:
                    break
        return outcome

    def _record(self, audit: list[tuple[str, Mapping[str, object]] | None]) -> bool:
        """Write audit records (None entries skipped); False when the log failed."""
        gate = self.gate
        return gate is None or gate.record([a for a in audit if a is not None])

    def _commit(self, accepted: AcceptedEvent, *, remember: bool = True) -> None:
        """After the ``ingest`` record: learn the client, store, update the latest state
        (unless ``remember`` is False: a cluster node does that on the bus's acknowledgement)."""
        event, label, source = accepted.event, accepted.label, accepted.source
        sender = source.principal
        now = self._clock_ms()
        # Learn who a stream client is from its own position report (contact with an endpoint),
        # so explicit routing by uid or callsign can find it (TAK Server does the same).
        if event.is_contact:
            sub = self._subscribers.get(id(source))
            if sub is not None:
                if sub.client_uid is None:
                    self._identify(sub, event.uid, sub.callsign)
                    if self._missions is not None:
                        self._missions.connected(sub)
                if (
                    sub.client_uid == event.uid
                    and event.callsign
                    and sub.callsign != event.callsign
                ):
                    self._identify(sub, sub.client_uid, event.callsign)

        # The stored copy is the event as accepted (with any dests); without dests it shares
        # the live rendering.
        self._store(event, label, sender, now, accepted.out.xml())
        if remember:
            self._join_latest(accepted, now)

    def _join_latest(self, accepted: AcceptedEvent, now: int) -> None:
        """This node's accepted event into the latest state (for the cluster too), a delete's
        target handed to ``on_delete``."""
        forgotten = self._remember(accepted.event, accepted.label, accepted.source.principal, now)
        if forgotten is not None and self._on_delete is not None:
            self._on_delete(forgotten)

    def _remember(
        self, event: Event, label: Label | None, sender: Principal, now: int, *, shared: bool = True
    ) -> str | None:
        """The latest state after ``event``: a delete forgets its target (its uid returned),
        anything else replaces its uid's entry. Directed messages are never part of the
        replayable picture: replaying them to a newcomer would deliver a private message to
        someone it was not addressed to. Shared by this node's events and other nodes' (those
        with ``shared=False``: the node that accepted them wrote them for the cluster)."""
        if event.is_delete and event.link_uid:
            self._latest.remove(event.link_uid, shared=shared)
            return event.link_uid
        if not event.dests and not event.is_stale(now):
            self._latest.put(LatestEntry(event, sender.in_groups, label), shared=shared)
        return None

    def _deliver(self, plans: list[_Fanout]) -> int:
        delivered = 0
        for plan in plans:
            out = plan.out
            for sub in plan.permitted:
                sub.deliver(out)
            delivered += len(plan.permitted)
        self.m_deliveries.inc(amount=delivered)
        return delivered

    def _hold(self, item: tuple[Event, Source] | AcceptedEvent) -> None:
        self._held.append(item)
        self.m_held.inc("held")
        while len(self._held) > MAX_HELD_EVENTS:
            self._held.popleft()
            self.m_held.inc("dropped")

    def audit_recovered(self) -> int:
        """Re-publish the events held while the audit log failed (accepted ones are only
        distributed again). Returns how many."""
        held, self._held = self._held, deque()
        for item in held:
            if isinstance(item, AcceptedEvent):
                self.distribute(item)
            else:
                self.publish(*item)
        return len(held)

    def _store(
        self, event: Event, label: Label | None, sender: Principal, now: int, xml: bytes
    ) -> None:
        if self._writer is None:
            return
        label_json = labels.label_to_json(label) if label is not None else None
        record = stored_event(event, sender, now, xml, label_json)
        if not self._writer.submit(record):
            self.m_store_dropped.inc()

    def load_latest(self, entries: Iterable[LatestEntry]) -> None:
        """Seed the latest-state table (from the store, at start; in a cluster not written for
        the other nodes: the bucket already holds what they wrote since)."""
        for entry in entries:
            self._latest.put(entry, shared=False)

    def load_label(self, stored: str | None) -> Label | None:
        """A stored label (JSON) back as a Label; None when absent or unreadable (then denied)."""
        if stored is None or self.policy is None:
            return None
        try:
            return labels.label_from_json(self.policy, stored)
        except LabelError:
            return None

    def expire(self) -> int:
        """Drop stale entries from the latest-state table. Returns how many were dropped."""
        return self._latest.expire(self._clock_ms())

    # --- the decision ---------------------------------------------------------------------

    def _decide(
        self, sender_groups: frozenset[str], label: Label | None, viewer: Principal
    ) -> Decision:
        return can_see(sender_groups=sender_groups, viewer=viewer, label=label, policy=self.policy)

    def _fanout(
        self,
        path: str,
        out: Outgoing,
        sender_groups: frozenset[str],
        label: Label | None,
        targets: Iterable[Subscriber],
    ) -> _Fanout:
        """Decide for every target (once per access key) and prepare the audit records."""
        decisions: dict[object, Decision] = {}
        denied: dict[object, list[Subscriber]] = {}
        permitted: list[Subscriber] = []
        # With a label: the permitted local recipients of another organisation than the label's
        # originator, the only ones a ``release`` record names (gate.release_entries), gathered
        # in the same pass. A federation link records its own release, of the exact bytes it
        # sends, once its guard has passed them (federation/link.py).
        originator = label.originator if self.gate is not None and label is not None else None
        released: list[Principal] = []
        keys = self._keys
        remembered = self._remembered
        last: object = _NO_KEY
        key: object = _NO_KEY
        decision = PERMIT  # replaced at the first target: no key is _NO_KEY
        release = False
        for sub in targets:
            fan_key = keys.get(id(sub))
            if fan_key is None:  # not attached (explicit routing hands its own targets)
                fan_key = _fan_key(sub.principal)
            if fan_key is not last:  # recipients in a row mostly share one (interned) key
                last = fan_key
                key, org = fan_key
                found = decisions.get(key)
                if found is None:
                    memo = (sender_groups, label, key)
                    found = remembered.get(memo)
                    if found is None:
                        if len(remembered) >= MAX_REMEMBERED_DECISIONS:
                            remembered.clear()
                        found = remembered[memo] = self._decide(sender_groups, label, sub.principal)
                    decisions[key] = found
                decision = found
                release = originator is not None and org is not None and org != originator
            if decision.permit:
                permitted.append(sub)
                if release:
                    released.append(sub.principal)
            else:
                self.m_denied.inc(decision.reasons[0] if decision.reasons else "")
                denied.setdefault(key, []).append(sub)
        audit: list[tuple[str, Mapping[str, object]]] = []
        refused: list[tuple[Subscriber, tuple[str, ...]]] = []
        if self.gate is not None and label is not None:
            event = out.event
            if released:
                audit.extend(
                    release_entries(
                        path=path,
                        uid=event.uid,
                        type=event.type,
                        label=label,
                        sha256=content_hash(out.xml()),
                        recipients=released,
                    )
                )
            for key, subs in denied.items():
                reasons = tuple(decisions[key].reasons)
                audit.append(
                    deny_record(
                        path=path,
                        uid=event.uid,
                        type=event.type,
                        label_id=label.label_id,
                        reasons=reasons,
                        recipients=[s.principal.name for s in subs],
                    )
                )
                refused.extend((s, reasons) for s in subs)
        return _Fanout(out, label, permitted, audit, refused)

    # --- delivery -------------------------------------------------------------------------

    def _others(self, source: Source) -> list[Subscriber]:
        # Never echo an event back to the connection it came from (TAK Server getImplicitMatches).
        src = id(source)
        if source.principal.kind is PrincipalKind.FEDERATE and not self.relay_between_peers:
            # Events from one partner never go on to another partner unless configured (TAK
            # Server refuses federate -> federate reachability, CommonGroupDirectedReachability).
            return [
                s
                for k, s in self._subscribers.items()
                if k != src and s.principal.kind is not PrincipalKind.FEDERATE
            ]
        return [s for k, s in self._subscribers.items() if k != src]

    def _plan(
        self,
        accepted: AcceptedEvent,
        replayed: Collection[int] = (),
        skip_groups: frozenset[str] = frozenset(),
    ) -> list[_Fanout]:
        event, label, source = accepted.event, accepted.label, accepted.source
        if not event.dests:
            targets = self._others(source)
            if replayed:  # only an undirected event is ever replayed
                order = self._order
                targets = [s for s in targets if order.get(id(s)) not in replayed]
            if skip_groups:
                targets = [s for s in targets if not (s.principal.out_groups & skip_groups)]
            return [self._fanout("live", accepted.out, source.principal.in_groups, label, targets)]
        # A directed event is planned by its destinations; ``skip_groups`` is not applied (in
        # the rare case it is given, such an event may reach a reader twice).
        return self._plan_explicit(event, label, source)

    def _plan_explicit(self, event: Event, label: Label | None, source: Source) -> list[_Fanout]:
        """Explicit routing by ``marti/dest`` (TAK Server StreamingEndpointRewriteFilter).

        The ``dest`` elements are removed before forwarding and only the named recipients get the
        event: a directed chat must never reach anyone else. ``All Streaming`` means everyone. A
        ``group`` dest narrows delivery to that group, allowed only when it is one of the sender's
        own IN groups. A ``mission`` dest goes to the mission's live subscribers (TSc
        StreamingEndpointRewriteFilter processTracksByMissionName, tak-missions.md 7.1); when
        the mission is unknown or the sender may not write to it, the target is ignored and
        counted.
        """
        sender = source.principal
        stripped = event.without_dests()
        uids: set[str] = set()
        callsigns: set[str] = set()
        groups: set[str] = set()
        members: dict[str, frozenset[tuple[str, str]]] = {}  # by mission: its live subscribers
        missions: set[str] = set()  # the mission targets that stand (sender may write)
        broadcast = False
        for d in event.dests:
            if d.callsign == ALL_STREAMING:
                broadcast = True
            elif d.uid:
                uids.add(d.uid)
            elif d.callsign:
                callsigns.add(d.callsign)
            elif d.group:
                if d.group in sender.in_groups:
                    groups.add(d.group)
                else:
                    self.m_denied.inc("dest_group_not_member")
            elif d.mission:
                found = (
                    self._missions.recipients(d.mission, source, event.uid)
                    if self._missions is not None
                    else None
                )
                if found is None:
                    self.m_unrouted.inc("mission")
                else:
                    members[d.mission] = found
                    missions.add(d.mission)
            else:
                self.m_unrouted.inc("unsupported")
        out = Outgoing(stripped, sender.in_groups)
        if broadcast:
            return [self._fanout("live", out, sender.in_groups, label, self._others(source))]
        src = id(source)
        # Everyone but the source is a candidate, as in _others; only ``All Streaming`` and
        # group dests need the whole list, the rest are found through the index.
        links = (
            []
            if sender.kind is PrincipalKind.FEDERATE and not self.relay_between_peers
            else [s for k, s in self._federates.items() if k != src]
        )
        plans: list[_Fanout] = []
        # Recipients on a partner server: the link that serves them gets the event with only
        # their dests kept, so the partner routes it explicitly to them and nobody else.
        for sub in links:
            serves: Callable[[Dest], bool] | None = getattr(sub, "serves", None)
            if serves is None or sub.principal.kind is not PrincipalKind.FEDERATE:
                continue
            if any((d.uid or d.callsign) and serves(d) for d in event.dests):
                narrowed = Outgoing(event.keep_dests(serves), sender.in_groups)
                plans.append(self._fanout("live", narrowed, sender.in_groups, label, [sub]))
        if groups:
            by_group = Outgoing(stripped, frozenset(groups))
            others = self._others(source)
            plans.append(self._fanout("live", by_group, frozenset(groups), label, others))
        if uids or callsigns:
            targets = [
                s
                for s in self._addressees(uids, callsigns)
                if id(s) != src
                and s.principal.kind is not PrincipalKind.FEDERATE
                and not (groups and _in_any(s.principal, groups))
            ]
            found_uids = {s.client_uid for s in targets}
            found_calls = {s.callsign for s in targets}
            for p in plans:
                found_uids |= {d.uid for d in p.out.event.dests if d.uid}
                found_calls |= {d.callsign for d in p.out.event.dests if d.callsign}
            missing = len(uids - found_uids) + len(callsigns - found_calls)
            if missing:
                self.m_unrouted.inc("offline", missing)
            plans.append(self._fanout("live", out, sender.in_groups, label, targets))
        if members and self._missions is not None:
            # Mission subscribers (a device of the user who subscribed it) not already reached
            # by a uid or callsign dest, once each, mission by mission (a mission may give the
            # event its own form: a chat in the mission's chat room).
            reached = {id(s) for p in plans for s in p.permitted}
            for name in sorted(members):
                targets = [
                    s
                    for s in self._clients_named(members[name])
                    if id(s) != src
                    and id(s) not in reached
                    and s.principal.kind is not PrincipalKind.FEDERATE
                ]
                reached |= {id(s) for s in targets}
                form = self._missions.delivered_form(stripped, name)
                mine = out if form is stripped else Outgoing(form, sender.in_groups)
                plans.append(self._fanout("mission", mine, sender.in_groups, label, targets))
        if missions:
            plans.extend(self._plan_federated_missions(event, label, sender, missions, links))
        return plans

    def _plan_federated_missions(
        self,
        event: Event,
        label: Label | None,
        sender: Principal,
        missions: set[str],
        links: list[Subscriber],
    ) -> list[_Fanout]:
        """A partner link whose config federates one of the event's missions gets the event
        with only those ``dest mission`` elements kept, so the partner puts it in its mission of
        the same name (docs/protocol.md "Missions across the link"); the decision against the
        link's release ceiling, then its guard, apply as to anything else it is handed."""
        plans: list[_Fanout] = []
        # The mission's own label and groups must permit the link too: a mission the partner
        # may not see is never named to it (Missions.federation_may_name).
        may_name: Callable[[str, Principal], bool] | None = getattr(
            self._missions, "federation_may_name", None
        )
        for sub in links:
            federates: Callable[[str], bool] | None = getattr(sub, "federates_mission", None)
            if federates is None or sub.principal.kind is not PrincipalKind.FEDERATE:
                continue
            names = {
                m
                for m in missions
                if federates(m) and (may_name is None or may_name(m, sub.principal))
            }
            if names:
                narrowed = Outgoing(event.keep_dests(_mission_in(frozenset(names))))
                plans.append(self._fanout("mission", narrowed, sender.in_groups, label, [sub]))
        return plans

    def relabel(
        self, actor: Principal, uid: str, new_label: Label, justification: str | None
    ) -> labels.RelabelResult | None:
        """Give an item a new label: a new version of it, stored, audited and delivered.

        Raising is open to anyone of the originating organisation who may see the item (to
        partners too with the policy's ``partner_updates``); lowering or widening REL needs the
        originating organisation's release authority and a justification
        (``labels.check_relabel``). None when the item is missing or ``actor`` may not see it:
        the two are indistinguishable.
        """
        gate = self.gate
        entry = self._latest.get(uid)
        if gate is None or entry is None or entry.label is None:
            return None
        if (
            entry.event.is_stale(self._clock_ms())
            or not self._decide(entry.sender_groups, entry.label, actor).permit
        ):
            return None
        old = entry.label
        result = labels.check_relabel(
            gate.policy,
            old,
            new_label,
            actor_auths=actor.auths if actor.auths is not None else labels.no_authset(gate.policy),
            actor_org=actor.org or "",
            release_authority=gate.is_release_authority(actor, old.originator),
            justification=justification,
        )
        if result.allowed and actor.org != old.originator and not gate.config.partner_updates:
            # A relabel changes the item: another organisation's items are changed only by it,
            # unless the policy lets partners change what they can see (docs/labels.md 4).
            result = labels.RelabelResult(
                allowed=False, direction=result.direction, reasons=("other_org_item",)
            )
        record: dict[str, object] = {
            "uid": uid,
            "actor": actor.name,
            "org": actor.org or "?",
            "old_label_id": old.label_id,
            "new_label_id": new_label.label_id,
            "direction": result.direction.value,
            "allowed": result.allowed,
            "justification": justification or "",
        }
        if result.reasons:
            record["reasons"] = list(result.reasons)
        if not result.allowed:
            gate.record([("relabel", record)])
            return result
        event = gate.labelled(entry.event, new_label)  # keeps the entry's origin
        plan = self._fanout(
            "relabel",
            Outgoing(event, entry.sender_groups),
            entry.sender_groups,
            new_label,
            [s for s in self._subscribers.values()],
        )
        if not gate.record([("relabel", record), *plan.audit]):
            return labels.RelabelResult(
                allowed=False, direction=result.direction, reasons=("audit_unavailable",)
            )
        _tell_refused([plan])
        self._store(
            event,
            new_label,
            Principal(name=actor.name, in_groups=entry.sender_groups),
            self._clock_ms(),
            plan.out.xml(),
        )
        self._latest.put(LatestEntry(event, entry.sender_groups, new_label))
        for sub in plan.permitted:
            sub.deliver(plan.out)
        self.m_deliveries.inc(amount=len(plan.permitted))
        return result

    def replay_to(self, sub: Subscriber) -> int:
        """Send a newly connected subscriber the latest non-stale state it may see, contacts first.

        Passes the same decision as live delivery, and the same audit. Returns how many events
        were offered.
        """
        return self._replay_entries(sub, self._replay_order())

    def _replay_order(self) -> list[LatestEntry]:
        now = self._clock_ms()
        entries = [e for e in self._latest.entries() if not e.event.is_stale(now)]
        entries.sort(key=lambda e: (not e.event.is_contact, e.event.time))
        return entries

    @property
    def latest_count(self) -> int:
        """Uids in the latest-state table (stale ones included)."""
        return len(self._latest)

    def replay_plan(self) -> list[str]:
        """The uids a replay goes through, in order (contacts first, then by time): for a caller
        that replays a large state a part at a time (:meth:`replay_part`)."""
        return [e.event.uid for e in self._replay_order()]

    def replay_part(self, sub: Subscriber, uids: Sequence[str]) -> int:
        """Replay ``uids`` (a part of :meth:`replay_plan`) to ``sub``: each uid's entry as it is
        now (a newer one than when the plan was made, none when deleted or stale since), with
        the decision and audit of :meth:`replay_to`. Returns how many events were offered."""
        now = self._clock_ms()
        get = self._latest.get
        entries = [e for u in uids if (e := get(u)) is not None and not e.event.is_stale(now)]
        return self._replay_entries(sub, entries)

    def _replay_entries(self, sub: Subscriber, entries: list[LatestEntry]) -> int:
        plans = [
            self._fanout("replay", self._replay_out(e), e.sender_groups, e.label, [sub])
            for e in entries
        ]
        if self.gate is not None and not self.gate.record([a for p in plans for a in p.audit]):
            return 0
        _tell_refused(plans)
        sent = 0
        for entry, plan in zip(entries, plans, strict=True):
            if plan.permitted:
                sub.deliver(plan.out)
                sent += 1
                if entry.early:
                    self._replayed_early(entry, sub)
        self.m_deliveries.inc(amount=sent)
        return sent

    def _replayed_early(self, entry: LatestEntry, sub: Subscriber) -> None:
        """Remember that ``sub`` was replayed an early entry (LatestEntry.early)."""
        attached = self._order.get(id(sub))
        if attached is None:
            return
        early = self._early_replays
        uid, time = entry.event.uid, entry.event.time
        held = early.get(uid)
        if held is None or held[0] != time:
            if held is None and len(early) >= MAX_EARLY_REPLAYS:
                del early[next(iter(early))]  # bounded: the oldest forgotten
            held = early[uid] = (time, set())
        held[1].add(attached)

    def _replay_out(self, entry: LatestEntry) -> Outgoing:
        """The rendering of ``entry`` for replay: the one made for an earlier replay while the
        entry is the same object (the latest state replaces, never changes, an entry)."""
        cache = self._replayed
        uid = entry.event.uid
        held = cache.get(uid)
        if held is not None and held[0] is entry:
            return held[1]
        if len(cache) >= MAX_REPLAY_RENDERINGS:
            cache.clear()  # bounded: the next replays render again
        out = Outgoing(entry.event, entry.sender_groups)
        cache[uid] = (entry, out)
        return out

    # --- queries made on a principal's behalf (HTTP, exports) -----------------------------
    # Each passes the same decision as live delivery, and writes the same release records. A
    # forbidden item is indistinguishable from a missing one: it is simply absent.

    def _release_query(
        self, path: str, viewer: Principal, items: list[tuple[Event, frozenset[str], Label | None]]
    ) -> list[Event]:
        audit: list[tuple[str, Mapping[str, object]]] = []
        out: list[Event] = []
        for event, groups, label in items:
            if not self._decide(groups, label, viewer).permit:
                continue
            out.append(event)
            if self.gate is not None and label is not None:
                audit.extend(
                    release_entries(
                        path=path,
                        uid=event.uid,
                        type=event.type,
                        label=label,
                        sha256=content_hash(Outgoing(event).xml()),
                        recipients=[viewer],
                    )
                )
        if self.gate is not None and not self.gate.record(audit):
            return []
        return out

    def visible(
        self, viewer: Principal, entries: Iterable[LatestEntry], *, path: str = "query"
    ) -> list[Event]:
        """The events among ``entries`` that ``viewer`` may see."""
        return self._release_query(
            path, viewer, [(e.event, e.sender_groups, e.label) for e in entries]
        )

    def picture(self, viewer: Principal, *, path: str = "http") -> list[Event]:
        """The current picture for ``viewer``: the latest events it may see, contacts first."""
        entries = self.latest_entries()
        entries.sort(key=lambda e: (not e.event.is_contact, e.event.time))
        return self.visible(viewer, entries, path=path)

    def find(self, viewer: Principal, uid: str, *, path: str = "http") -> Event | None:
        """The latest state of ``uid`` if it exists, is not stale and ``viewer`` may see it."""
        entry = self._latest.get(uid)
        if entry is None or entry.event.is_stale(self._clock_ms()):
            return None
        found = self.visible(viewer, [entry], path=path)
        return found[0] if found else None

    def filter_records(
        self,
        viewer: Principal,
        records: Iterable[StoredEvent],
        *,
        path: str = "http",
        known_as: Collection[str] = (),
    ) -> list[StoredEvent]:
        """The stored records (history queries) that ``viewer`` may see.

        A directed message (``marti/dest``) is shown only to its sender and to its addressees,
        as live explicit routing delivers it: the viewer is an addressee when a dest names one of
        the uids or callsigns its connected clients use, or one in ``known_as`` (the web map's
        identity, for example).
        """
        allowed: list[StoredEvent] = []
        audit: list[tuple[str, Mapping[str, object]]] = []
        identities: set[str] | None = None
        for r in records:
            label = self.load_label(r.label)
            if not self._decide(r.sender_groups, label, viewer).permit:
                continue
            if b"<dest" in r.xml and r.sender != viewer.name:
                if identities is None:
                    identities = set(known_as) | self._identities_of(viewer.name)
                if not self._addressed(r.xml, identities):
                    continue
            allowed.append(r)
            if self.gate is not None and label is not None:
                audit.extend(
                    release_entries(
                        path=path,
                        uid=r.uid,
                        type=r.type,
                        label=label,
                        sha256=content_hash(r.xml),
                        recipients=[viewer],
                    )
                )
        if self.gate is not None and not self.gate.record(audit):
            return []
        return allowed

    def label_upload(
        self, uploader: Principal, parts: Iterable[bytes]
    ) -> tuple[str | None, tuple[str, ...]]:
        """The label (JSON) a file or data package is stored with, from the CoT events inside it.

        Aggregates carry the dominant label of their parts, an unlabelled part counting as the
        uploader's default label (what it would get if sent alone), or that default when there
        is no part. Returns (None, ()) with labels off, and (None, reasons) when the
        upload must be refused. An ``ingest`` record is written either way.
        """
        gate = self.gate
        if gate is None:
            return None, ()
        found: list[Label | None] = []  # None: an unlabelled part, counted as its default
        for raw in parts:
            try:
                event = cot_xml.parse_event(raw)
                lab = labels.label_from_detail(gate.policy, event.detail)
            except (PeerError, LabelError) as exc:
                reasons = getattr(exc, "reasons", None) or (getattr(exc, "reason", "bad_part"),)
                return None, ("bad_part", *reasons)
            found.append(lab)
        label, reasons = gate.aggregate(found, uploader, self._clock_ms())
        labelled = sum(1 for lab in found if lab is not None)
        fields: dict[str, object] = {
            "path": "upload",
            "sender": uploader.name,
            "org": uploader.org or "?",
            "accepted": label is not None,
            "parts_labelled": labelled,
            "parts_unlabelled": len(found) - labelled,
        }
        if label is not None:
            fields["label_id"] = label.label_id
        if reasons:
            fields["reasons"] = list(reasons)
        if not gate.record([("ingest", fields)]):
            return None, ("audit_unavailable",)
        return (labels.label_to_json(label) if label is not None else None), reasons

    def label_claimed(
        self, creator: Principal, banner: str | None, *, path: str, prior: str | None = None
    ) -> tuple[str | None, tuple[str, ...]]:
        """The label (JSON) of something a user makes that is not a CoT event (a mission): the
        banner they claim (``SECRET//REL TO USA, UKR``), or their listener's default label when
        they claim none, under the ingest rules (no label above what they may read, none that
        leaves out their own organisation). Returns (None, ()) with labels off and
        (None, reasons) when refused; an ``ingest`` record is written either way. ``prior`` (the
        stored label JSON of what this replaces, a log entry updated) adds the rules on
        changing a stored item (``Gate.aggregate``)."""
        gate = self.gate
        if gate is None:
            return None, ()
        now = self._clock_ms()
        claimed: list[Label | None] = []
        reasons: tuple[str, ...] = ()
        label: Label | None = None
        if banner:
            try:
                claimed.append(
                    labels.label_from_banner(
                        gate.policy, banner, originator=creator.org or "", created_ms=now
                    )
                )
            except LabelError as exc:
                reasons = ("bad_label", *(getattr(exc, "reasons", None) or ()))
        if not reasons:
            label, reasons = gate.aggregate(claimed, creator, now, prior=self.load_label(prior))
        fields: dict[str, object] = {
            "path": path,
            "sender": creator.name,
            "org": creator.org or "?",
            "accepted": label is not None,
        }
        if label is not None:
            fields["label_id"] = label.label_id
        if reasons:
            fields["reasons"] = list(reasons)
        if not gate.record([("ingest", fields)]):
            return None, ("audit_unavailable",)
        if label is None:
            return None, reasons or ("rejected",)
        return labels.label_to_json(label), ()

    def _identities_of(self, name: str) -> set[str]:
        ids: set[str] = set()
        for s in self._subscribers.values():
            if s.principal.name == name:
                ids.update(x for x in (s.client_uid, s.callsign) if x)
        return ids

    @staticmethod
    def _addressed(xml: bytes, identities: set[str]) -> bool:
        try:
            dests = cot_xml.parse_event(xml).dests
        except PeerError:
            return False
        return any(d.uid in identities or d.callsign in identities for d in dests)

    def permits(
        self, viewer: Principal, *, sender_groups: frozenset[str], label: str | None = None
    ) -> bool:
        """The access decision for any other item (files, data packages) written into
        ``sender_groups`` with the given label (JSON text, as stored). Decides only: what is
        then handed over goes through :meth:`release_item`."""
        return self._decide(sender_groups, self.load_label(label), viewer).permit

    def release_item(
        self,
        viewer: Principal,
        *,
        path: str,
        uid: str,
        type: str,
        sender_groups: frozenset[str],
        label: str | None,
        sha256: str,
    ) -> bool:
        """Release a stored item (a file or data package download) to ``viewer``: the access
        decision, then, with labels on and ``viewer`` of another organisation than the label's
        originator, a ``release`` record written before the caller sends a byte. False when the
        decision refuses or the record cannot be written: the caller must send nothing (and
        answer as for a missing item)."""
        lab = self.load_label(label)
        if not self._decide(sender_groups, lab, viewer).permit:
            return False
        if self.gate is None or lab is None:
            return True
        entries = release_entries(
            path=path, uid=uid, type=type, label=lab, sha256=sha256, recipients=[viewer]
        )
        return self.gate.record(entries)

    def release_many(
        self,
        viewer: Principal,
        items: Iterable[tuple[str, str, frozenset[str], str | None, str]],
        *,
        path: str,
    ) -> list[bool]:
        """Release several stored items at once (a mission's items, its changes, the mission
        itself): for each ``(uid, type, sender_groups, label JSON, sha256)``, the access
        decision, then one audit batch with a ``release`` record per item handed to a viewer of
        another organisation. All False when the records cannot be written (send nothing)."""
        audit: list[tuple[str, Mapping[str, object]]] = []
        permitted: list[bool] = []
        for uid, type_, groups, stored_label, sha256 in items:
            lab = self.load_label(stored_label)
            ok = self._decide(groups, lab, viewer).permit
            permitted.append(ok)
            if ok and self.gate is not None and lab is not None:
                audit.extend(
                    release_entries(
                        path=path,
                        uid=uid,
                        type=type_,
                        label=lab,
                        sha256=sha256,
                        recipients=[viewer],
                    )
                )
        if self.gate is not None and not self.gate.record(audit):
            return [False] * len(permitted)
        return permitted

    def deliver_to_clients(
        self,
        event: Event,
        *,
        sender_groups: frozenset[str],
        label: Label | None,
        clients: Collection[tuple[str, str]],
        path: str,
    ) -> int:
        """Hand a server-made event (a mission notice, a brokered mission item) to the connected
        clients named by (client uid, user name) that may see it, with the same decision and
        audit records as live delivery. Returns the deliveries."""
        if not clients:
            return 0
        targets = [
            s
            for s in self._clients_named(clients)
            if s.principal.kind is not PrincipalKind.FEDERATE
        ]
        plan = self._fanout(path, Outgoing(event, sender_groups), sender_groups, label, targets)
        if not self._record(list(plan.audit)):
            return 0
        _tell_refused([plan])
        return self._deliver([plan])

    def entry_for(self, viewer: Principal, uid: str) -> LatestEntry | None:
        """The latest state of ``uid`` (with its label and groups) if it exists, is not stale
        and ``viewer`` may see it: what a mission adds when a client names the uid (iTAK)."""
        entry = self._latest.get(uid)
        if entry is None or entry.event.is_stale(self._clock_ms()):
            return None
        if not self._decide(entry.sender_groups, entry.label, viewer).permit:
            return None
        return entry

    def count_visible(self, viewer: Principal, predicate: Callable[[Event], bool]) -> int:
        """How many items of the current picture ``viewer`` may see and ``predicate`` accepts.

        Reveals a count, releases no item: nothing is handed to the caller, so no ``release``
        record is written (``/api/v1/health``)."""
        return sum(
            1
            for e in self.latest_entries()
            if predicate(e.event) and self._decide(e.sender_groups, e.label, viewer).permit
        )

    def banner(self, event: Event) -> str | None:
        """The display banner of an event's label (``SECRET//REL TO USA, UKR``); None without a
        label policy or without a valid label."""
        policy = self.policy
        if policy is None:
            return None
        # The latest state already holds the label the gate decided on: no second parse.
        entry = self._latest.get(event.uid)
        if entry is not None and entry.event is event:
            label = entry.label
        else:
            try:
                label = labels.label_from_detail(policy, event.detail)
            except LabelError:
                return None
        if label is None:
            return None
        text = self._banners.get(label.label_id)
        if text is None:
            if len(self._banners) >= MAX_BANNERS:
                self._banners.clear()
            text = self._banners[label.label_id] = labels.label_to_banner(policy, label)
        return text

    def latest_entries(self) -> list[LatestEntry]:
        now = self._clock_ms()
        return [e for e in self._latest.entries() if not e.event.is_stale(now)]

    def deliver_series_to(
        self,
        sub: Subscriber,
        events: Sequence[tuple[Event, frozenset[str], Label | None, str]],
    ) -> int:
        """Hand server-made events (a reconnecting subscriber's mission catch-up) to one
        connected subscriber, in order, each under the same decision and audit records as
        :meth:`deliver_to_clients` (all records written first, in one batch). Returns the
        deliveries. Each entry: the event, its sender groups, its label and the audit path."""
        if id(sub) not in self._subscribers or sub.principal.kind is PrincipalKind.FEDERATE:
            return 0
        plans = [self._fanout(p, Outgoing(e), g, lab, [sub]) for e, g, lab, p in events]
        if not self._record([a for p in plans for a in p.audit]):
            return 0
        _tell_refused(plans)
        return self._deliver(plans)


def _fan_key(p: Principal) -> tuple[object, str | None]:
    """What a fan-out reads of a recipient: its access key (equal keys, equal decisions) and
    the organisation a ``release`` record names it under ("?" without one; None for a partner
    link, which records its own releases once its guard passed them)."""
    return access_key(p), None if p.kind is PrincipalKind.FEDERATE else (p.org or "?")


def _with_origin(event: Event, sender: Principal) -> Event:
    """``event`` marked with where the server got it (a feed, a partner link), for the web
    map's layers; unchanged for a client's own event."""
    origin = origin_of(sender)
    return event if origin is None else replace(event, origin=origin)


def stored_event(
    event: Event, sender: Principal, received: int, xml: bytes, label_json: str | None
) -> StoredEvent:
    """The store's record of ``event`` as ``sender`` sent it (the router's and the missions')."""
    return StoredEvent(
        uid=event.uid,
        type=event.type,
        how=event.how,
        time=event.time,
        start=event.start,
        stale=event.stale,
        lat=event.lat,
        lon=event.lon,
        hae=event.hae,
        callsign=event.callsign,
        sender=sender.name,
        sender_groups=sender.in_groups,
        received=received,
        xml=xml,
        label=label_json,
    )


def _ingest_fields(
    event: Event, sender: Principal, label: Label | None, outcome: IngestOutcome
) -> dict[str, object]:
    raw = event.xml if event.xml is not None else event.proto
    fields: dict[str, object] = {
        "uid": event.uid,
        "type": event.type,
        "sender": sender.name,
        "org": sender.org or "?",
        "listener": sender.listener or "?",
        "accepted": outcome.event is not None,
        "sha256": content_hash(raw if raw is not None else cot_xml.render_xml(event)),
    }
    if event.is_delete and event.link_uid:
        fields["link_uid"] = event.link_uid
    if label is not None:
        fields["label_id"] = label.label_id
    if outcome.reasons:
        fields["reasons"] = list(outcome.reasons)
    return fields


def _mission_in(names: frozenset[str]) -> Callable[[Dest], bool]:
    """A ``keep_dests`` predicate: the ``dest mission`` elements naming one of ``names``."""
    return lambda d: d.mission in names


def _in_any(principal: Principal, groups: set[str]) -> bool:
    return not principal.out_groups.isdisjoint(groups)
