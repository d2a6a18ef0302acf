"""The server side of one TAK stream, sans-IO: bytes in, events out.

A :class:`TakPeer` knows everything a TAK stream connection says at the link level, whatever
carries it (TCP, TLS, a ``/takproto/1`` WebSocket, later gRPC or QUIC): the framing (CoT XML,
or TAK protocol v1 stream frames from the first byte or after negotiation), the negotiation
itself (``t-x-takp-v`` offered at :meth:`open`, ``t-x-takp-q`` answered by ``t-x-takp-r``, and
the switch of both directions right after an accepting answer), ``<auth>`` on listeners that need
it, and the answer to a ping. It does no I/O and reads no clock: the carrier passes the bytes it
received and the current time, writes the bytes the peer hands back, and acts on the events.

Use, in the style of h11's connection objects::

    peer = TakPeer(settings)
    data = peer.open(now_ms)           # once the peer's identity is known: the offer to write
    peer.receive_data(chunk)           # bytes as they arrive, split anywhere
    while (ev := peer.next_event(now_ms)) is not None:
        ...                            # EventReceived, AuthRequested, Reply, Negotiated, ...

An error that breaks the stream (unframable bytes, an oversized frame, an event before
``<auth>``) is raised as a ``PeerError`` from :meth:`next_event`: the carrier closes the
connection. An event that frames but does not parse comes out as :class:`FrameRejected` and the
stream goes on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from liaison.errors import AuthenticationFailed, PeerError
from liaison.model.event import Event, WireFormat
from liaison.protocol import cot_proto, cot_xml, negotiation
from liaison.protocol.tak_stream import TakStreamFramer, frame
from liaison.protocol.xml_stream import XmlStreamFramer


class Phase(enum.Enum):
    AWAIT_AUTH = "await_auth"  # an <auth> listener: nothing but <auth> is accepted yet
    OPEN = "open"  # identified: events flow
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSettings:
    """How one stream speaks (the session's settings, less what is about I/O)."""

    server_version: str  # announced in the t-x-takp-v offer
    max_event_bytes: int = 1024 * 1024
    offer_protobuf: bool = True  # offer TAK protocol v1 at open
    # Speak TAK protocol v1 stream framing from the first byte, with no XML and no negotiation.
    start_in_protobuf: bool = False
    require_auth: bool = False  # an <auth> listener: <auth> must come first
    idle_timeout_s: float = 0.0  # no complete frame for this long: dropped (0: never)
    auth_timeout_s: float = 15.0  # no <auth> for this long on an <auth> listener: dropped
    frame_timeout_s: float = 0.0  # a started frame unfinished for this long: dropped (0: never)


# --- what the peer hands the carrier ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventReceived:
    """An event to publish (never a control message)."""

    event: Event


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """An ``<auth>`` on an ``<auth>`` listener: check it, then call :meth:`TakPeer.open`, or
    raise ``AuthenticationFailed``."""

    request: cot_xml.AuthRequest


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes to write now, ahead of anything queued (the answer to a ping)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Negotiated:
    """A ``t-x-takp-q`` was answered: write ``reply`` now. When ``accepted``, everything after
    it, both ways, is TAK protocol v1 (:attr:`TakPeer.format` has already switched)."""

    accepted: bool
    reply: bytes


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """One frame that does not parse; the stream is still in sync and goes on."""

    error: PeerError


PeerEvent = EventReceived | AuthRequested | Reply | Negotiated | FrameRejected


@dataclass(frozen=True, slots=True)
class Timeout:
    """Why a peer is to be dropped: ``reason`` (``idle_timeout`` or ``frame_timeout``) and the
    limit it passed, in seconds."""

    reason: str
    limit_s: float


class TakPeer:
    """One TAK stream connection's link-level state machine (see the module docstring)."""

    def __init__(self, settings: PeerSettings, *, now_ms: int = 0) -> None:
        self._settings = settings
        self._xml: XmlStreamFramer | None = None
        self._proto: TakStreamFramer | None = None
        if settings.start_in_protobuf:
            self._proto = TakStreamFramer(settings.max_event_bytes)
            self.format = WireFormat.PROTO
        else:
            self._xml = XmlStreamFramer(settings.max_event_bytes)
            self.format = WireFormat.XML
        self._negotiator: negotiation.Negotiator | None = None
        self.phase = Phase.AWAIT_AUTH
        self.last_frame_ms = now_ms  # when the last complete frame arrived
        self.partial_since_ms: int | None = None  # when the frame in progress began arriving

    @property
    def settings(self) -> PeerSettings:
        return self._settings

    @property
    def buffered(self) -> int:
        """Bytes of a frame not yet complete."""
        framer = self._proto or self._xml
        return framer.buffered if framer is not None else 0

    @property
    def negotiation(self) -> negotiation.NegotiationState | None:
        """Where protocol negotiation stands (None before the offer, or when none is made)."""
        return self._negotiator.state if self._negotiator is not None else None

    # --- lifecycle ----------------------------------------------------------------------------

    def open(self, now_ms: int) -> bytes:
        """The peer is identified: events may flow. Returns what to write first (the
        ``t-x-takp-v`` offer, when protobuf is offered on an XML stream), possibly empty."""
        if self.phase is not Phase.AWAIT_AUTH:
            raise RuntimeError(f"open() in phase {self.phase.value}")
        self.phase = Phase.OPEN
        s = self._settings
        if not s.offer_protobuf or s.start_in_protobuf:
            return b""
        self._negotiator = negotiation.Negotiator(
            now_ms, f"liaison-takp-{id(self):x}-{now_ms}", s.server_version
        )
        return self.render(self._negotiator.offer)

    def close(self) -> None:
        """Nothing more is read (the carrier is closing)."""
        self.phase = Phase.CLOSED

    def render(self, event: Event) -> bytes:
        """A link-level message in the stream's current format."""
        if self.format is WireFormat.PROTO:
            return frame(cot_proto.render_proto(event))
        return cot_xml.render_xml(event)

    def timeout(self, now_ms: int) -> Timeout | None:
        """Whether the peer is to be dropped now: it has not identified itself in time, takes
        too long over one frame, or (only when configured) is quiet."""
        if self.phase is Phase.CLOSED:
            return None
        s = self._settings
        if self.phase is Phase.AWAIT_AUTH and s.require_auth:
            limit = s.auth_timeout_s
        else:
            limit = s.idle_timeout_s  # 0: a quiet client is never dropped
        if limit > 0 and now_ms - self.last_frame_ms > limit * 1000:
            return Timeout("idle_timeout", limit)
        frame_limit = s.frame_timeout_s
        if (
            frame_limit > 0
            and self.partial_since_ms is not None
            and now_ms - max(self.partial_since_ms, self.last_frame_ms) > frame_limit * 1000
        ):
            return Timeout("frame_timeout", frame_limit)
        return None

    # --- inbound ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Append received bytes; :meth:`next_event` frames them. Raises a ``PeerError`` only
        for a stream that already failed."""
        if self.phase is Phase.CLOSED:
            return
        framer = self._proto or self._xml
        assert framer is not None
        framer.feed(data)

    def next_event(self, now_ms: int) -> PeerEvent | None:
        """The next thing the carrier must act on, or None when more bytes are needed.

        Frames that need no action (an ``<auth>`` where none is expected, control messages other
        than ping and negotiation) are consumed silently. Raises ``PeerError`` when the stream
        cannot go on."""
        while self.phase is not Phase.CLOSED:
            if self._proto is not None:
                payload = self._proto.next_frame()
                if payload is None:
                    break
                self.last_frame_ms = now_ms
                try:
                    event = cot_proto.parse_proto(payload)
                except PeerError as exc:
                    return FrameRejected(exc)
                if event is None:
                    continue  # takControl only
                out = self._on_event(event, now_ms)
            else:
                assert self._xml is not None
                data = self._xml.next_frame()
                if data is None:
                    break
                self.last_frame_ms = now_ms
                if data.startswith(b"<auth"):
                    if self.phase is Phase.AWAIT_AUTH and self._settings.require_auth:
                        return AuthRequested(cot_xml.parse_auth(data))
                    continue  # TAK clients may send <auth> where it is not needed: ignored
                if self.phase is Phase.AWAIT_AUTH:
                    raise AuthenticationFailed("event before <auth>", reason="auth_required")
                try:
                    event = cot_xml.parse_event(data)
                except PeerError as exc:
                    return FrameRejected(exc)
                out = self._on_event(event, now_ms)
            if out is not None:
                return out
        if self.buffered:
            if self.partial_since_ms is None:
                self.partial_since_ms = now_ms
        else:
            self.partial_since_ms = None
        return None

    def _on_event(self, event: Event, now_ms: int) -> PeerEvent | None:
        if self.phase is not Phase.OPEN:
            raise AuthenticationFailed("event before <auth>", reason="auth_required")
        if not event.is_control:
            return EventReceived(event)
        if event.is_ping:
            return Reply(self.render(negotiation.pong(now_ms)))
        if event.type == negotiation.REQUEST_TYPE and self._negotiator is not None:
            response, switch = self._negotiator.on_request(event, now_ms=now_ms)
            reply = self.render(response)  # in the format spoken before the switch
            if switch and self._xml is not None:
                self._switch_to_protobuf()
            return Negotiated(switch, reply)
        return None  # other control messages are consumed, never relayed

    def _switch_to_protobuf(self) -> None:
        """Negotiated TAK protocol v1: whatever followed the request is protobuf."""
        assert self._xml is not None
        rest = self._xml.take_buffer()
        self._xml = None
        self._proto = TakStreamFramer(self._settings.max_event_bytes)
        self._proto.feed(rest)
        self.format = WireFormat.PROTO
