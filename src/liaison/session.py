"""One connected stream peer: the asyncio adapter over the sans-IO TAK peer and outbound queue.

A :class:`StreamSession` is an ``asyncio.Protocol``: the event loop calls ``data_received`` with
bytes, the session hands them to its :class:`~liaison.protocol.tak_peer.TakPeer` (framing,
negotiation, ``<auth>``, ping: everything the stream says at the link level) and acts on what the
peer returns: it writes replies, checks ``<auth>`` credentials and hands events to
:meth:`Router.publish`. The router hands events back through :meth:`StreamSession.deliver`.

Outbound (DESIGN.md convention 9, after nats' slow-consumer policy): ``deliver`` never blocks.
Items wait in an :class:`~liaison.transports.outbound.OutboundQueue`; a position report replaces
an older one of the same uid still waiting, in its place, so a slow reader gets the newest picture
rather than a backlog. The queue is written once per event-loop turn while the transport accepts
data; when the transport's buffer passes its high-water mark asyncio calls ``pause_writing`` and
items accumulate (still coalescing). Past ``max_pending`` items the peer is a slow consumer:
counted, logged once, disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from liaison.errors import AuthenticationFailed, PeerError, SlowConsumer
from liaison.identity.events import REVOKED, AccessEnded, AccessEvents
from liaison.metrics import Metrics
from liaison.model.event import WireFormat
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.protocol.tak_peer import (
    AuthRequested,
    EventReceived,
    FrameRejected,
    Negotiated,
    PeerEvent,
    PeerSettings,
    Phase,
    Reply,
    TakPeer,
)
from liaison.transports.outbound import (
    COALESCED,
    OVERFLOW,
    QUEUED,
    OutboundLimits,
    OutboundQueue,
    OutboundStatistics,
)
from liaison.transports.stream import Keepalive, set_keepalive

if TYPE_CHECKING:
    from liaison.router import Outgoing, Router

log = logging.getLogger(__name__)

# Read on every delivery: a module constant costs less than the enum's class attribute.
_OPEN = Phase.OPEN
_PROTO = WireFormat.PROTO

# Default seconds without one complete frame before a peer is dropped: 0, never. A listen-only
# integration (a pytak feed reader, a dashboard) may send nothing for hours and is not dead; dead
# peers are found by TCP keepalive and failed writes (transports/stream.py Keepalive). An operator
# who wants quiet clients dropped anyway sets limits.idle_timeout_s.
DEFAULT_IDLE_TIMEOUT_S = 0.0

# Default seconds a peer may take to finish a frame it has started. A real client writes an event
# in one go (a few KB, under a second even on a slow radio link); a peer that drips one byte a
# minute to hold a buffer and a connection open is dropped. 0 means never.
DEFAULT_FRAME_TIMEOUT_S = 120.0

# TCP keepalive on every accepted stream socket: a vanished peer is dropped after 60 s of silence
# and 6 unanswered probes 10 s apart, about two minutes (limits.keepalive_* settings).
DEFAULT_KEEPALIVE = Keepalive(idle_s=60, interval_s=10, count=6)

# Seconds an <auth> listener waits for the <auth> message (TAK Server expects it first).
DEFAULT_AUTH_TIMEOUT_S = 15.0

# Events that may wait for one slow reader before it is disconnected. Position reports coalesce
# per uid, so this bounds non-position traffic (chats, markers, deletes) a reader has not taken:
# at 1 KB each, 10,000 is about 10 MB held for one peer at worst.
DEFAULT_MAX_PENDING = 10_000

# Seconds between checks of every session's timeouts (auth, frame, idle): each is enforced to
# within this much. The check costs about a microsecond per session, so at 10,000 sessions
# twice a second was 3 % of a core spent finding nothing (docs/performance.md, "Cheap
# connections").
TIMEOUT_SWEEP_S = 1.0

# While ingest is congested, seconds between checks for whether paused readers may resume.
RESUME_CHECK_S = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """Per-listener behaviour of its stream sessions."""

    listener: str  # "tcp" or "tls": used in logs and metrics
    server_version: str
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # 0: never
    auth_timeout_s: float = DEFAULT_AUTH_TIMEOUT_S
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S  # 0: never
    keepalive: Keepalive = DEFAULT_KEEPALIVE
    max_pending: int = DEFAULT_MAX_PENDING
    offer_protobuf: bool = True
    require_auth: bool = False
    max_event_bytes: int = 1024 * 1024
    # Speak TAK protocol v1 stream framing from the first byte, with no XML and no negotiation
    # (TAK Server's ``prototls`` inputs and its ``/takproto/1`` WebSocket do the same).
    start_in_protobuf: bool = False

    def peer_settings(self) -> PeerSettings:
        """What the sans-IO peer needs of these settings."""
        return PeerSettings(
            server_version=self.server_version,
            max_event_bytes=self.max_event_bytes,
            offer_protobuf=self.offer_protobuf,
            start_in_protobuf=self.start_in_protobuf,
            require_auth=self.require_auth,
            idle_timeout_s=self.idle_timeout_s,
            auth_timeout_s=self.auth_timeout_s,
            frame_timeout_s=self.frame_timeout_s,
        )


# Given the peer's TLS certificate (DER) or None, who is this peer? None refuses the connection.
PrincipalResolver = Callable[[bytes | None, str], Principal | None]
# Given an <auth> request, who is this peer? None refuses it.
Authenticator = Callable[[cot_xml.AuthRequest], Principal | None]


class SessionMetrics:
    """Counters shared by all stream sessions."""

    def __init__(self, metrics: Metrics) -> None:
        self.connections = metrics.counter(
            "liaison_connections_total", "Stream connections accepted", "listener"
        )
        self.refused = metrics.counter(
            "liaison_connections_refused_total", "Stream connections refused", "reason"
        )
        self.rejected = metrics.counter(
            "liaison_input_rejected_total", "Input frames or streams refused", "reason"
        )
        self.closed = metrics.counter(
            "liaison_sessions_closed_total", "Stream sessions ended", "reason"
        )
        self.slow = metrics.counter(
            "liaison_slow_consumer_total", "Slow-reader episodes and outcomes", "outcome"
        )
        self.negotiated = metrics.counter(
            "liaison_protocol_negotiated_total", "TAK protocol negotiations", "outcome"
        )


class StreamSession(asyncio.Protocol):
    """A TAK stream client on TCP or TLS."""

    def __init__(
        self,
        *,
        router: Router,
        settings: SessionSettings,
        metrics: SessionMetrics,
        clock_ms: Callable[[], int],
        resolve_principal: PrincipalResolver,
        authenticate: Authenticator | None,
        registry: SessionRegistry,
    ) -> None:
        self._router = router
        self._settings = settings
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._resolve = resolve_principal
        self._authenticate = authenticate
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._peer = TakPeer(settings.peer_settings())
        self._queue: OutboundQueue[Outgoing] = OutboundQueue(
            OutboundLimits(max_items=settings.max_pending)
        )
        self._put = self._queue.put  # bound once: deliver() is the hottest path of a relay
        self._mark = registry.batcher.mark
        self._flush_scheduled = False
        self._principal: Principal | None = None
        self.peer = "?"
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self.connected_ms = 0
        self.close_reason: str | None = None

    # --- the sans-IO peer's state -------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._peer.phase

    @property
    def format(self) -> WireFormat:
        return self._peer.format

    @property
    def last_frame_ms(self) -> int:
        return self._peer.last_frame_ms

    @property
    def partial_since_ms(self) -> int | None:
        return self._peer.partial_since_ms

    def outbound_depth(self) -> int:
        """Items waiting in the outbound queue now (the feeds' publisher reads it, among its
        signals that the server is behind)."""
        return len(self._queue)

    def statistics(self) -> OutboundStatistics:
        """The outbound queue's statistics (depth, peak, coalesced, dropped, ...)."""
        return self._queue.statistics()

    # --- identity -------------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        if self._principal is None:
            raise RuntimeError("session has no principal before authentication")
        return self._principal

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        now = self._clock_ms()
        self.connected_ms = self._peer.last_frame_ms = now
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        set_keepalive(transport.get_extra_info("socket"), self._settings.keepalive)
        self._metrics.connections.inc(self._settings.listener)
        self._registry.add(self)
        cert: bytes | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = ssl_object.getpeercert(binary_form=True)
        principal = self._resolve(cert, self.peer)
        if principal is None:
            self._metrics.refused.inc("identity")
            log.warning(
                "%s %s: refused: certificate not accepted", self._settings.listener, self.peer
            )
            self._close("refused")
            return
        if self._settings.require_auth:
            self._principal = principal  # provisional; replaced by <auth>
            return
        self._open(principal, now)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.CLOSED:
            return
        peer = self._peer
        now = self._clock_ms()
        try:
            peer.receive_data(data)
            while peer.phase is not Phase.CLOSED:
                event = peer.next_event(now)
                if event is None:
                    break
                self._on_peer_event(event, now)
        except PeerError as exc:
            self._refuse(exc)
            return
        if self._router.congested and self._transport is not None:
            # Backpressure on the way in: the store's writer queue is the one place ingest
            # waits. Stop reading this peer until the registry sees the queue drain.
            self._transport.pause_reading()
            self._registry.paused(self)

    def eof_received(self) -> bool | None:
        self._close("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is not Phase.CLOSED:
            self._peer.close()
            self.close_reason = self.close_reason or ("error" if exc else "disconnected")
        self._metrics.closed.inc(self.close_reason or "disconnected")
        self._router.detach(self)
        self._registry.discard(self)
        self._queue.close()

    def pause_writing(self) -> None:
        self._queue.pause()
        self._metrics.slow.inc("paused")

    def resume_writing(self) -> None:
        self._queue.resume()
        if self._queue:
            self._schedule_flush()

    # --- inbound --------------------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent, now: int) -> None:
        """Act on what the peer made of the bytes: publish, write a reply, check <auth>."""
        if isinstance(event, EventReceived):
            self._router.publish(event.event, self)
        elif isinstance(event, Reply):
            self._write_raw(event.data)
        elif isinstance(event, Negotiated):
            self._write_raw(event.reply)
            self._metrics.negotiated.inc("accepted" if event.accepted else "refused")
        elif isinstance(event, FrameRejected):
            self._reject_frame(event.error)
        elif isinstance(event, AuthRequested):
            self._on_auth(event.request, now)

    def _reject_frame(self, exc: PeerError) -> None:
        """One bad event in a stream that is still in sync: refuse it, keep the session."""
        self._metrics.rejected.inc(exc.reason)
        log.info(
            "%s %s: event refused (%s): %s", self._settings.listener, self.peer, exc.reason, exc
        )

    def _on_auth(self, request: cot_xml.AuthRequest, now: int) -> None:
        if self._authenticate is None:
            return  # nothing to check it with: ignored, as on a listener that needs no <auth>
        principal = self._authenticate(request)
        if principal is None:
            raise AuthenticationFailed(f"login refused for {request.username!r}")
        self._open(principal, now)

    # --- lifecycle ------------------------------------------------------------------------

    def _open(self, principal: Principal, now: int) -> None:
        self._principal = principal
        offer = self._peer.open(now)
        if offer:
            self._write_raw(offer)
        self._router.attach(self)
        self._registry.replays.start(self, self._router)

    def check_timeouts(self, now_ms: int) -> None:
        """Called periodically by the registry: drop peers that have not identified themselves in
        time, that take too long over one frame, or (only when configured) that are quiet."""
        timeout = self._peer.timeout(now_ms)
        if timeout is None:
            return
        self._metrics.rejected.inc(timeout.reason)
        what = (
            "no complete frame in"
            if timeout.reason == "idle_timeout"
            else "a frame left unfinished for"
        )
        log.info(
            "%s %s: dropped: %s %.0f s", self._settings.listener, self.peer, what, timeout.limit_s
        )
        self._close(timeout.reason, abort=True)

    def _refuse(self, exc: PeerError) -> None:
        self._metrics.rejected.inc(exc.reason)
        log.warning(
            "%s %s: session closed (%s): %s", self._settings.listener, self.peer, exc.reason, exc
        )
        self._close(exc.reason, abort=True)

    def _close(self, reason: str, *, abort: bool = False) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._peer.close()
        self.close_reason = reason
        self._router.detach(self)
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._flush()
                self._transport.close()

    def close(self, reason: str = "shutdown") -> None:
        """Graceful close: write what is queued, then close."""
        self._close(reason)

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- outbound -------------------------------------------------------------------------

    def deliver(self, out: Outgoing) -> None:
        """Queue one event for this peer. Never blocks; enforces the slow-consumer policy."""
        # The path of every delivery: the usual case (queued, a flush already due or now
        # marked) comes first and calls nothing but the queue (docs/performance.md).
        if self._peer.phase is not _OPEN:
            return
        put = self._put(out, out.coalesce_key)
        if put is QUEUED:
            if not self._flush_scheduled and not self._queue.paused:
                self._flush_scheduled = True
                self._mark(self)
            return
        if put is COALESCED:
            self._metrics.slow.inc("coalesced")
            return
        if put is OVERFLOW:
            self._metrics.slow.inc("disconnected")
            self._refuse(SlowConsumer(f"more than {self._settings.max_pending} events waiting"))

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._mark(self)

    def flush(self) -> None:
        """Write everything pending in one call (the write batcher calls this)."""
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        items = self._queue.take()
        if not items:
            return
        if self._peer.format is _PROTO:
            data = b"".join([o.proto_frame() for o in items])
        elif len(items) == 1:
            data = items[0].xml()
        else:
            data = b"".join([o.xml_ready or o.xml() for o in items])
        transport.write(data)

    _flush = flush

    def _write_raw(self, data: bytes) -> None:
        """Write a link-level message the peer rendered straight away, ahead of anything queued."""
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(data)


# Replayed deliveries (latest-state entries to newly connected sessions) made in one loop turn,
# over all the sessions waiting for their replay: a reconnect storm (200 clients x 5,000 items)
# is spread over many turns, the loop serving the other sessions between them.
REPLAY_DELIVERIES_PER_TURN = 2_000


class ReplayQueue:
    """The replays of the latest state to newly connected sessions, at most
    :data:`REPLAY_DELIVERIES_PER_TURN` entries a loop turn over all of them, round robin.

    A replay that fits in one turn's budget, with nobody else waiting, is made at once
    (``Router.replay_to``). A larger one waits for a later loop turn, which makes one plan of uids
    (``Router.replay_plan``: contacts first, then by time) for every session then waiting (each
    attached before the plan was made, so it misses no uid: a newer one reaches it live), and
    replays it a part at a time (``Router.replay_part``: each uid's entry as it is when its part
    goes out, so a live update delivered meanwhile is never followed by an older one). Bounded by
    the sessions: one replay per session waiting; a session closed meanwhile is dropped.
    """

    def __init__(self, budget: int = REPLAY_DELIVERIES_PER_TURN) -> None:
        self._budget = budget
        # (session, router, plan or None until the next turn makes it, [position]).
        self._waiting: deque[tuple[StreamSession, Router, list[str] | None, list[int]]] = deque()
        self._handle: asyncio.Handle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self, session: StreamSession, router: Router) -> None:
        if not self._waiting and router.latest_count <= self._budget:
            router.replay_to(session)
            return
        self._waiting.append((session, router, None, [0]))
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._handle = None
        waiting = self._waiting
        plans: dict[int, list[str]] = {}  # one plan per router for the sessions without one
        for i, (session, router, plan, at) in enumerate(waiting):
            if plan is None:
                shared = plans.get(id(router))
                if shared is None:
                    shared = plans[id(router)] = router.replay_plan()
                waiting[i] = (session, router, shared, at)
        budget = self._budget
        while budget > 0 and waiting:
            session, router, plan, at = waiting.popleft()
            if session.phase is not _OPEN or plan is None:
                continue  # closed before its replay ended
            n = min(budget, len(plan) - at[0])
            router.replay_part(session, plan[at[0] : at[0] + n])
            budget -= n
            at[0] += n
            if at[0] < len(plan):
                waiting.append((session, router, plan, at))  # round robin: the next one's turn
        if waiting:
            # The next part in a later loop turn (call_soon runs after the I/O of this one).
            self._handle = asyncio.get_running_loop().call_soon(self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._waiting.clear()


class WriteBatcher:
    """Flushes every session with pending output in one callback, at most once per interval.

    Writing each delivery with its own ``transport.write`` costs one system call per event per
    peer, which is most of a relay's CPU at high fan-out. Under light load a flush runs on the next
    loop turn, so latency stays at zero; once flushes come closer together than ``interval_s``,
    the next one waits for the interval, and each peer gets everything pending in one write. TAK
    Server does the same with Netty: it flushes at once until a message-rate threshold, then
    batches (TSc nio/netty/NioNettyBuilder.java, tak-protocol.md section 9).
    """

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._dirty: list[StreamSession] = []
        self._handle: asyncio.Handle | None = None
        self._last = float("-inf")

    def mark(self, session: StreamSession) -> None:
        self._dirty.append(session)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            due = self._last + self._interval
            now = loop.time()
            if due <= now:
                self._handle = loop.call_soon(self._run)
            else:
                self._handle = loop.call_at(due, self._run)

    def _run(self) -> None:
        self._handle = None
        self._last = asyncio.get_running_loop().time()
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            session.flush()

    def flush_now(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._run()


# Default seconds between batched flushes under load (see WriteBatcher). 10 ms adds at most 10 ms
# to a delivery and, at 200 clients reporting once a second, halves the write calls.
DEFAULT_WRITE_BATCH_S = 0.010


class LiveFeed(Protocol):
    """A long-lived answer to one principal that is not a stream session: the web map's WebSocket
    feed. The registry ends it when its principal is revoked (by the CLI in another process too:
    the same ``revoked`` check as stream sessions) or when it is no longer valid (its web sign-in
    ended or expired), at the same sweep as stream sessions."""

    @property
    def principal(self) -> Principal: ...

    def still_valid(self) -> bool: ...

    def end(self, reason: str) -> None: ...


class SessionRegistry:
    """Every live stream session, for timeouts, write batching and shutdown. Owned by the app.

    It also holds the :class:`LiveFeed` objects of the HTTP side, so that revocation ends every
    long-lived answer of a principal, whatever transport carries it."""

    # Seconds between revocation sweeps (and expired feeds); enforced to within this much. Half a
    # second keeps "revocation closes live sessions and feeds within a second" with room to spare.
    # Live principals are only looked at when the revocation state changed (AccessEvents.sweep).
    SWEEP_INTERVAL_S = 0.5

    def __init__(
        self, clock_ms: Callable[[], int], *, write_batch_s: float = DEFAULT_WRITE_BATCH_S
    ) -> None:
        self.batcher = WriteBatcher(write_batch_s)
        self.replays = ReplayQueue()
        self._sessions: set[StreamSession] = set()
        self._paused: set[StreamSession] = set()
        self._feeds: set[LiveFeed] = set()
        self._clock_ms = clock_ms
        self._access: AccessEvents | None = None

    def add(self, session: StreamSession) -> None:
        self._sessions.add(session)

    def discard(self, session: StreamSession) -> None:
        self._sessions.discard(session)
        self._paused.discard(session)

    def add_feed(self, feed: LiveFeed) -> None:
        self._feeds.add(feed)

    def discard_feed(self, feed: LiveFeed) -> None:
        self._feeds.discard(feed)

    def paused(self, session: StreamSession) -> None:
        """``session`` stopped reading because ingest is congested; resume it when clear."""
        self._paused.add(session)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[StreamSession]:
        return iter(list(self._sessions))

    def follow(self, events: AccessEvents) -> None:
        """Close what a principal holds when ``events`` announces it was revoked; ``run`` hands
        ``events`` the principals it holds at each sweep."""
        self._access = events
        events.subscribe(self._access_ended)

    def _access_ended(self, ended: AccessEnded) -> None:
        p = ended.principal
        if ended.reason != REVOKED or p is None:
            return
        for session in list(self._sessions):
            if session.phase is Phase.OPEN and session._principal == p:
                log.warning("%s: closing session of revoked %s", session.peer, p.name)
                session.close("revoked")
        for feed in list(self._feeds):
            if feed.principal == p:
                log.warning("closing a feed of revoked %s", p.name)
                self._feeds.discard(feed)
                feed.end("revoked")

    async def run(self, router: Router, interval_s: float = SWEEP_INTERVAL_S) -> None:
        """Sweep for timed-out and revoked sessions, resume paused readers; until cancelled.

        A revoked certificate is refused at the next handshake by the principal resolver; this
        sweep closes the sessions it already has within ``interval_s`` (see :meth:`follow`).
        """
        next_sweep = next_timeouts = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RESUME_CHECK_S if self._paused else interval_s)
            if self._paused and not router.congested:
                for session in list(self._paused):
                    session.resume_reading()
                self._paused.clear()
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + interval_s
                if loop.time() >= next_timeouts:
                    next_timeouts = loop.time() + TIMEOUT_SWEEP_S
                    now = self._clock_ms()
                    for session in list(self._sessions):
                        session.check_timeouts(now)
                self.sweep_access()
                self.sweep_feeds()

    def sweep_access(self) -> int:
        """Close what the revoked among the live principals hold, now (the periodic sweep, and
        a revocation another cluster node announced); how many principals were revoked."""
        if self._access is None:
            return 0
        return self._access.sweep(self._live_principals())

    def _live_principals(self) -> Iterator[Principal]:
        """Lazily: the sweep goes through them only when someone may have been revoked."""
        for s in list(self._sessions):
            if s._principal is not None and s.phase is Phase.OPEN:
                yield s._principal
        for feed in list(self._feeds):
            yield feed.principal

    def sweep_feeds(self) -> None:
        """End the feeds which are no longer valid (their web sign-in ended or expired)."""
        for feed in list(self._feeds):
            if not feed.still_valid():
                self._feeds.discard(feed)
                feed.end("expired")

    def close_principal(self, name: str) -> int:
        """Close every session of principal ``name`` (revocation). Returns how many."""
        closed = 0
        for session in list(self._sessions):
            p = session._principal
            if p is not None and p.name == name:
                session.close("revoked")
                closed += 1
        for feed in list(self._feeds):
            if feed.principal.name == name:
                self._feeds.discard(feed)
                feed.end("revoked")
                closed += 1
        return closed

    def close_all(self) -> None:
        self.replays.cancel()
        for session in list(self._sessions):
            session.close()
        for feed in list(self._feeds):
            self._feeds.discard(feed)
            feed.end("shutdown")
