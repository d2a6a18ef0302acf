"""One connected stream peer: framer, codec, negotiation, and a bounded outbound queue.

A :class:`StreamSession` is an ``asyncio.Protocol``: the event loop calls ``data_received`` with
bytes, the session feeds its sans-IO framer, parses each complete frame once, answers link-level
messages itself (ping, TAK protocol negotiation, ``<auth>``) and hands everything else to
:meth:`Router.publish`. The router hands events back through :meth:`StreamSession.deliver`.

Outbound (DESIGN.md convention 9, after nats' slow-consumer policy): ``deliver`` never blocks.
Items wait in an insertion-ordered dict; a position report replaces an older one of the same uid
still waiting, so a slow reader gets the newest picture rather than a backlog. The queue is written
once per event-loop turn while the transport accepts data; when the transport's buffer passes its
high-water mark asyncio calls ``pause_writing`` and items accumulate (still coalescing). Past
``max_pending`` items the peer is a slow consumer: counted, logged once, disconnected.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from liaison.errors import AuthenticationFailed, PeerError, SlowConsumer
from liaison.identity.events import REVOKED, AccessEnded, AccessEvents
from liaison.metrics import Metrics
from liaison.model.event import Event, WireFormat
from liaison.model.principal import Principal
from liaison.protocol import cot_proto, cot_xml, negotiation
from liaison.protocol.tak_stream import TakStreamFramer, frame
from liaison.protocol.xml_stream import XmlStreamFramer
from liaison.transports.stream import Keepalive, set_keepalive

if TYPE_CHECKING:
    from liaison.router import Outgoing, Router

log = logging.getLogger(__name__)

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

# While ingest is congested, seconds between checks for whether paused readers may resume.
RESUME_CHECK_S = 0.02


class Phase(enum.Enum):
    AWAIT_AUTH = "await_auth"  # an <auth> listener: nothing but <auth> is accepted yet
    OPEN = "open"  # attached to the router
    CLOSED = "closed"


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
        self._xml_framer: XmlStreamFramer | None = XmlStreamFramer(settings.max_event_bytes)
        self._proto_framer: TakStreamFramer | None = None
        self._negotiator: negotiation.Negotiator | None = None
        if settings.start_in_protobuf:
            self._xml_framer = None
            self._proto_framer = TakStreamFramer(settings.max_event_bytes)
        self._pending: dict[object, Outgoing] = {}
        self._seq = 0
        self._flush_scheduled = False
        self._writing_paused = False
        self._reading_paused = False
        self._principal: Principal | None = None
        self.phase = Phase.AWAIT_AUTH
        self.format = WireFormat.PROTO if settings.start_in_protobuf else WireFormat.XML
        self.peer = "?"
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self.connected_ms = 0
        self.last_frame_ms = 0
        self.partial_since_ms: int | None = None  # when the frame in progress began arriving
        self.close_reason: str | None = None

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
        self.connected_ms = self.last_frame_ms = now
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
        self._open(principal)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.CLOSED:
            return
        try:
            self._receive(data)
        except PeerError as exc:
            self._refuse(exc)
            return
        framer = self._proto_framer or self._xml_framer
        if framer is not None and framer.buffered:
            if self.partial_since_ms is None:
                self.partial_since_ms = self._clock_ms()
        else:
            self.partial_since_ms = None
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
            self.phase = Phase.CLOSED
            self.close_reason = self.close_reason or ("error" if exc else "disconnected")
        self._metrics.closed.inc(self.close_reason or "disconnected")
        self._router.detach(self)
        self._registry.discard(self)
        self._pending.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._metrics.slow.inc("paused")

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._pending:
            self._schedule_flush()

    # --- inbound --------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if self._proto_framer is not None:
            self._proto_framer.feed(data)
            self._drain_proto()
            return
        framer = self._xml_framer
        assert framer is not None
        framer.feed(data)
        while self.phase is not Phase.CLOSED:
            frame = framer.next_frame()
            if frame is None:
                return
            self.last_frame_ms = self._clock_ms()
            if frame.startswith(b"<auth"):
                self._on_auth(frame)
                continue
            if self.phase is Phase.AWAIT_AUTH:
                raise AuthenticationFailed("event before <auth>", reason="auth_required")
            try:
                event = cot_xml.parse_event(frame)
            except PeerError as exc:
                self._reject_frame(exc)
                continue
            if self._on_event(event):
                # Negotiated TAK protocol v1: whatever followed the request is protobuf.
                rest = framer.take_buffer()
                self._xml_framer = None
                self._proto_framer = TakStreamFramer(self._settings.max_event_bytes)
                self._proto_framer.feed(rest)
                self._drain_proto()
                return

    def _drain_proto(self) -> None:
        framer = self._proto_framer
        assert framer is not None
        while self.phase is not Phase.CLOSED:
            payload = framer.next_frame()
            if payload is None:
                return
            self.last_frame_ms = self._clock_ms()
            try:
                event = cot_proto.parse_proto(payload)
            except PeerError as exc:
                self._reject_frame(exc)
                continue
            if event is not None:
                self._on_event(event)

    def _reject_frame(self, exc: PeerError) -> None:
        """One bad event in a stream that is still in sync: refuse it, keep the session."""
        self._metrics.rejected.inc(exc.reason)
        log.info(
            "%s %s: event refused (%s): %s", self._settings.listener, self.peer, exc.reason, exc
        )

    def _on_auth(self, frame: bytes) -> None:
        if self.phase is not Phase.AWAIT_AUTH or self._authenticate is None:
            # TAK clients may send <auth> to a listener that does not need it: ignore it.
            return
        request = cot_xml.parse_auth(frame)
        principal = self._authenticate(request)
        if principal is None:
            raise AuthenticationFailed(f"login refused for {request.username!r}")
        self._open(principal)

    def _on_event(self, event: Event) -> bool:
        """Handle one parsed event. Returns True when the stream must switch to protobuf now."""
        if self.phase is not Phase.OPEN:
            raise AuthenticationFailed("event before <auth>", reason="auth_required")
        if event.is_control:
            return self._on_control(event)
        self._router.publish(event, self)
        return False

    def _on_control(self, event: Event) -> bool:
        if event.is_ping:
            self._write_now(negotiation.pong(self._clock_ms()))
            return False
        if event.type == "t-x-takp-q" and self._negotiator is not None:
            response, switch = self._negotiator.on_request(event, now_ms=self._clock_ms())
            self._write_now(response)
            self._metrics.negotiated.inc("accepted" if switch else "refused")
            if switch:
                self.format = WireFormat.PROTO
            return switch
        return False  # other control messages are consumed, never relayed

    # --- lifecycle ------------------------------------------------------------------------

    def _open(self, principal: Principal) -> None:
        self._principal = principal
        self.phase = Phase.OPEN
        if self._settings.offer_protobuf and not self._settings.start_in_protobuf:
            now = self._clock_ms()
            self._negotiator = negotiation.Negotiator(
                now, f"liaison-takp-{id(self):x}-{now}", self._settings.server_version
            )
            self._write_now(self._negotiator.offer)
        self._router.attach(self)
        self._router.replay_to(self)

    def check_timeouts(self, now_ms: int) -> None:
        """Called periodically by the registry: drop peers that have not identified themselves in
        time, that take too long over one frame, or (only when configured) that are quiet."""
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.AWAIT_AUTH and self._settings.require_auth:
            limit = self._settings.auth_timeout_s
        else:
            limit = self._settings.idle_timeout_s  # 0: a quiet client is never dropped
        if limit > 0 and now_ms - self.last_frame_ms > limit * 1000:
            self._metrics.rejected.inc("idle_timeout")
            log.info(
                "%s %s: dropped: no complete frame in %.0f s",
                self._settings.listener,
                self.peer,
                limit,
            )
            self._close("idle_timeout", abort=True)
            return
        frame_limit = self._settings.frame_timeout_s
        if (
            frame_limit > 0
            and self.partial_since_ms is not None
            and now_ms - max(self.partial_since_ms, self.last_frame_ms) > frame_limit * 1000
        ):
            self._metrics.rejected.inc("frame_timeout")
            log.info(
                "%s %s: dropped: a frame left unfinished for %.0f s",
                self._settings.listener,
                self.peer,
                frame_limit,
            )
            self._close("frame_timeout", abort=True)

    def _refuse(self, exc: PeerError) -> None:
        self._metrics.rejected.inc(exc.reason)
        log.warning(
            "%s %s: session closed (%s): %s", self._settings.listener, self.peer, exc.reason, exc
        )
        self._close(exc.reason, abort=True)

    def _close(self, reason: str, *, abort: bool = False) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
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
        if self.phase is not Phase.OPEN:
            return
        key = out.coalesce_key
        pending = self._pending
        if key is None:
            self._seq += 1
            pending[self._seq] = out
        elif key in pending:
            pending[key] = out  # the newer report replaces the waiting one, in its place
            self._metrics.slow.inc("coalesced")
            return
        else:
            pending[key] = out
        if len(pending) > self._settings.max_pending:
            self._metrics.slow.inc("disconnected")
            self._refuse(SlowConsumer(f"more than {self._settings.max_pending} events waiting"))
            return
        if not self._writing_paused:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._registry.batcher.mark(self)

    def flush(self) -> None:
        """Write everything pending in one call (the write batcher calls this)."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or not self._pending or transport.is_closing():
            return
        items = self._pending.values()
        if self.format is WireFormat.PROTO:
            data = b"".join([o.proto_frame() for o in items])
        else:
            data = b"".join([o.xml() for o in items])
        self._pending.clear()
        transport.write(data)

    def _write_now(self, event: Event) -> None:
        """Write a link-level message straight away, ahead of anything queued."""
        if self._transport is None or self._transport.is_closing():
            return
        if self.format is WireFormat.PROTO:
            self._transport.write(frame(cot_proto.render_proto(event)))
        else:
            self._transport.write(cot_xml.render_xml(event))


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

    # Seconds between timeout and revocation sweeps; both are enforced to within this much. Half a
    # second keeps "revocation closes live sessions and feeds within a second" with room to spare.
    SWEEP_INTERVAL_S = 0.5

    def __init__(
        self, clock_ms: Callable[[], int], *, write_batch_s: float = DEFAULT_WRITE_BATCH_S
    ) -> None:
        self.batcher = WriteBatcher(write_batch_s)
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
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RESUME_CHECK_S if self._paused else interval_s)
            if self._paused and not router.congested:
                for session in list(self._paused):
                    session.resume_reading()
                self._paused.clear()
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + interval_s
                now = self._clock_ms()
                for session in list(self._sessions):
                    session.check_timeouts(now)
                if self._access is not None:
                    self._access.sweep(self._live_principals())
                self.sweep_feeds()

    def _live_principals(self) -> list[Principal]:
        live = [
            s._principal
            for s in self._sessions
            if s._principal is not None and s.phase is Phase.OPEN
        ]
        return live + [feed.principal for feed in self._feeds]

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
        for session in list(self._sessions):
            session.close()
        for feed in list(self._feeds):
            self._feeds.discard(feed)
            feed.end("shutdown")
