"""The router: the only code that hands an event to anyone outside the server.

Every path out passes :meth:`Router.publish` (live delivery, implicit and explicit),
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.access import Decision, access_key, can_see
from liaison.model.event import ALL_STREAMING, Event
from liaison.model.labels import Policy
from liaison.model.principal import Principal
from liaison.protocol import cot_proto, cot_xml, tak_stream
from liaison.storage.base import StoredEvent, StoreWriter

log = logging.getLogger(__name__)

# Most uids kept in the in-memory latest-state table used for replay. A server with more live uids
# than this is far past what one node serves (TAK Server's own latest-SA cache is per connected
# user); the oldest entries are evicted first and the store still has them.
MAX_LATEST_UIDS = 200_000


class Outgoing:
    """One event on its way out, rendered at most once per wire format for all its recipients."""

    __slots__ = ("_proto_frame", "_xml", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._xml: bytes | None = None
        self._proto_frame: bytes | None = None

    def xml(self) -> bytes:
        """The event as CoT XML (TAK protocol version 0)."""
        if self._xml is None:
            self._xml = cot_xml.render_xml(self.event)
        return self._xml

    def proto_frame(self) -> bytes:
        """The event as a TAK protocol v1 stream frame (0xBF, varint length, TakMessage)."""
        if self._proto_frame is None:
            self._proto_frame = tak_stream.frame(cot_proto.render_proto(self.event))
        return self._proto_frame

    @property
    def coalesce_key(self) -> str | None:
        """Position reports of one uid may replace each other in a slow reader's queue."""
        ev = self.event
        return ev.uid if ev.is_position and not ev.dests else None


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
class LatestEntry:
    event: Event
    sender_groups: frozenset[str]


class Router:
    """Subscriptions, implicit and explicit routing, the latest-state table and replay."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        writer: StoreWriter | None = None,
        max_latest: int = MAX_LATEST_UIDS,
        congestion_threshold: int | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._writer = writer
        self._max_latest = max_latest
        self._congestion_threshold = congestion_threshold
        self.policy = policy
        self._subscribers: dict[int, Subscriber] = {}
        self._latest: dict[str, LatestEntry] = {}
        self._on_delete: Callable[[str], None] | None = None
        m = metrics
        self.m_in = m.counter("liaison_events_in_total", "Events accepted for routing", "type")
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
        m.gauge("liaison_subscribers", "Connected subscribers", lambda: len(self._subscribers))
        m.gauge("liaison_latest_uids", "Uids in the latest-state table", lambda: len(self._latest))

    @property
    def congested(self) -> bool:
        """True while the store's writer queue is past its threshold: readers should pause."""
        t = self._congestion_threshold
        return t is not None and self._writer is not None and self._writer.pending >= t

    # --- subscriptions --------------------------------------------------------------------

    def attach(self, sub: Subscriber) -> None:
        self._subscribers[id(sub)] = sub

    def detach(self, sub: Subscriber) -> None:
        self._subscribers.pop(id(sub), None)

    @property
    def subscribers(self) -> Iterator[Subscriber]:
        return iter(list(self._subscribers.values()))

    def on_delete(self, callback: Callable[[str], None]) -> None:
        """Register who persists a delete (the app: the store's delete, in writer order)."""
        self._on_delete = callback

    # --- ingest ---------------------------------------------------------------------------

    def publish(self, event: Event, source: Source) -> int:
        """Accept one event from ``source``: store it, update state, deliver it. Returns deliveries.

        Control messages (ping, negotiation) never get here: sessions answer them themselves.
        """
        now = self._clock_ms()
        sender = source.principal
        self.m_in.inc(event.type.split("-", 2)[0] if event.type else "")

        # Learn who a stream client is from its own position report (contact with an endpoint),
        # so explicit routing by uid or callsign can find it (TAK Server does the same).
        if event.is_contact:
            sub = self._subscribers.get(id(source))
            if sub is not None:
                if sub.client_uid is None:
                    sub.client_uid = event.uid
                if sub.client_uid == event.uid and event.callsign:
                    sub.callsign = event.callsign

        self._store(event, sender, now)

        if event.is_delete and event.link_uid:
            self._latest.pop(event.link_uid, None)
            if self._on_delete is not None:
                self._on_delete(event.link_uid)
        elif not event.dests and not event.is_stale(now):
            # Directed messages are never part of the replayable picture: replaying them to a
            # newcomer would deliver a private message to someone it was not addressed to.
            self._remember(event, sender.in_groups)

        if event.dests:
            return self._deliver_explicit(event, source)
        return self._deliver(Outgoing(event), sender.in_groups, self._others(source))

    def _store(self, event: Event, sender: Principal, now: int) -> None:
        if self._writer is None:
            return
        record = StoredEvent(
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
            received=now,
            xml=cot_xml.render_xml(event),
        )
        if not self._writer.submit(record):
            self.m_store_dropped.inc()

    def _remember(self, event: Event, groups: frozenset[str]) -> None:
        latest = self._latest
        old = latest.get(event.uid)
        if old is not None and old.event.time > event.time:
            return  # an older report arriving late must not replace a newer one
        if old is not None:
            del latest[event.uid]  # re-insert so dict order stays oldest-update-first
        elif len(latest) >= self._max_latest:
            del latest[next(iter(latest))]
        latest[event.uid] = LatestEntry(event, groups)

    def load_latest(self, entries: Iterable[LatestEntry]) -> None:
        """Seed the latest-state table (from the store, at start)."""
        for entry in entries:
            self._remember(entry.event, entry.sender_groups)

    def expire(self) -> int:
        """Drop stale entries from the latest-state table. Returns how many were dropped."""
        now = self._clock_ms()
        stale = [uid for uid, e in self._latest.items() if e.event.is_stale(now)]
        for uid in stale:
            del self._latest[uid]
        return len(stale)

    # --- delivery -------------------------------------------------------------------------

    def _others(self, source: Source) -> Iterator[Subscriber]:
        # Never echo an event back to the connection it came from (TAK Server getImplicitMatches).
        src = id(source)
        return (s for k, s in list(self._subscribers.items()) if k != src)

    def _deliver(
        self, out: Outgoing, sender_groups: frozenset[str], targets: Iterable[Subscriber]
    ) -> int:
        decisions: dict[object, Decision] = {}
        delivered = 0
        for sub in targets:
            viewer = sub.principal
            key = access_key(viewer)
            decision = decisions.get(key)
            if decision is None:
                decision = can_see(sender_groups=sender_groups, viewer=viewer)
                decisions[key] = decision
            if decision.permit:
                sub.deliver(out)
                delivered += 1
            else:
                self.m_denied.inc(decision.reasons[0] if decision.reasons else "")
        self.m_deliveries.inc(amount=delivered)
        return delivered

    def _deliver_explicit(self, event: Event, source: Source) -> int:
        """Explicit routing by ``marti/dest`` (TAK Server StreamingEndpointRewriteFilter).

        The ``dest`` elements are removed before forwarding and only the named recipients get the
        event: a directed chat must never reach anyone else. ``All Streaming`` means everyone. A
        ``group`` dest narrows delivery to that group, allowed only when it is one of the sender's
        own IN groups. Mission dests need missions, which Liaison does not have yet: counted.
        """
        sender = source.principal
        stripped = event.without_dests()
        uids: set[str] = set()
        callsigns: set[str] = set()
        groups: set[str] = set()
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
            else:
                self.m_unrouted.inc("mission" if d.mission else "unsupported")
        out = Outgoing(stripped)
        if broadcast:
            return self._deliver(out, sender.in_groups, self._others(source))
        delivered = 0
        if groups:
            delivered += self._deliver(out, frozenset(groups), self._others(source))
        if uids or callsigns:
            targets = [
                s
                for s in self._others(source)
                if (s.client_uid in uids or s.callsign in callsigns)
                and not (groups and _in_any(s.principal, groups))
            ]
            found_uids = {s.client_uid for s in targets}
            found_calls = {s.callsign for s in targets}
            missing = len(uids - found_uids) + len(callsigns - found_calls)
            if missing:
                self.m_unrouted.inc("offline", missing)
            delivered += self._deliver(out, sender.in_groups, targets)
        return delivered

    def replay_to(self, sub: Subscriber) -> int:
        """Send a newly connected subscriber the latest non-stale state it may see, contacts first.

        Passes the same decision as live delivery. Returns how many events were offered.
        """
        now = self._clock_ms()
        entries = [e for e in self._latest.values() if not e.event.is_stale(now)]
        entries.sort(key=lambda e: (not e.event.is_contact, e.event.time))
        viewer = sub.principal
        sent = 0
        for entry in entries:
            decision = can_see(sender_groups=entry.sender_groups, viewer=viewer)
            if decision.permit:
                sub.deliver(Outgoing(entry.event))
                sent += 1
        self.m_deliveries.inc(amount=sent)
        return sent

    # --- queries made on a principal's behalf (HTTP, exports) -----------------------------
    # Each passes the same decision as live delivery. A forbidden item is indistinguishable from
    # a missing one: it is simply absent from the answer.

    def visible(self, viewer: Principal, entries: Iterable[LatestEntry]) -> list[Event]:
        """The events among ``entries`` that ``viewer`` may see."""
        return [
            e.event for e in entries if can_see(sender_groups=e.sender_groups, viewer=viewer).permit
        ]

    def picture(self, viewer: Principal) -> list[Event]:
        """The current picture for ``viewer``: the latest events it may see, contacts first."""
        entries = self.latest_entries()
        entries.sort(key=lambda e: (not e.event.is_contact, e.event.time))
        return self.visible(viewer, entries)

    def find(self, viewer: Principal, uid: str) -> Event | None:
        """The latest state of ``uid`` if it exists, is not stale and ``viewer`` may see it."""
        entry = self._latest.get(uid)
        if entry is None or entry.event.is_stale(self._clock_ms()):
            return None
        return entry.event if self.visible(viewer, [entry]) else None

    def filter_records(
        self, viewer: Principal, records: Iterable[StoredEvent]
    ) -> list[StoredEvent]:
        """The stored records (history queries) that ``viewer`` may see."""
        return [r for r in records if can_see(sender_groups=r.sender_groups, viewer=viewer).permit]

    def permits(
        self, viewer: Principal, *, sender_groups: frozenset[str], label: str | None = None
    ) -> bool:
        """The access decision for any other item (files, data packages) written into
        ``sender_groups`` with the given label (JSON text, as stored)."""
        return can_see(sender_groups=sender_groups, viewer=viewer).permit

    def banner(self, event: Event) -> str | None:
        """The display banner of an event's label (``SECRET//REL TO USA, UKR``); None without a
        label policy or without a valid label."""
        if self.policy is None:
            return None
        try:
            label = labels.label_from_detail(self.policy, event.detail)
            return labels.label_to_banner(self.policy, label) if label is not None else None
        except labels.LabelError:
            return None

    def latest_entries(self) -> list[LatestEntry]:
        now = self._clock_ms()
        return [e for e in self._latest.values() if not e.event.is_stale(now)]


def _in_any(principal: Principal, groups: set[str]) -> bool:
    return not principal.out_groups.isdisjoint(groups)
