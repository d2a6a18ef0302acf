"""The TAK federation v1 wire: length-prefixed ``FederatedEvent``\\s over mutual TLS, both roles,
driving one :class:`~liaison.federation.link.PeerLink` per connection. No gRPC (grpcio is never
imported on this path).

shared/reference/tak-federation.md section 12: mutual TLS with the same identity rules as v2
(the supervisor pins the peer's leaf certificate by SHA-256 before this module sees a byte);
"4-byte big-endian length, then exactly that many bytes of a serialized ``FederatedEvent``" in
both directions (``protocol/tak_fed_v1.py``); "no handshake message, no health check, no ROL, no
group mapping, no provenance"; "a message that does not parse closes the connection"; "on
connect each side sends the latest SA of users the federate may see, then the contact
snapshot". The two roles differ only in who dialled, so one :func:`serve` runs both.

On connect: the link goes up at once (there is nothing to wait for) and the peer is offered the
latest state it may see (the router's replay: the same label decision and audit as live
delivery, then the link's guard and outbox). A client's first position report on a connection
is preceded by its ContactListEntry, and its group names are those of v2 (``fed_groups``).

Outbound: the link's send loop hands rows (the guard's release bytes), each is translated and
re-checked from its serialized bytes (``fig_link.encode_rows``: a refused row gets a deny record
and is not written) and written as one frame. v1 has no acknowledgement, so a row leaves the
outbox only once it is **settled**: every byte written up to it has left our buffers and been
acknowledged by the peer's TCP (the socket's SIOCOUTQ is 0), and the connection then stayed open
for ``SETTLE_S`` more (a peer that dies with our frames unread in its socket resets the
connection within that time). Rows written but not settled when a connection ends are sent
again on the next one, after a restart too: at-least-once.

Inbound: frames are parsed as they arrive (``MAX_FRAME_BYTES`` each: a longer one, or one that is
not a FederatedEvent, is counted in ``liaison_federation_v1_frames_refused_total{reason}`` and
closes the connection); a frame byte-identical to one applied recently (``RecentDigests``, per
peer, kept across connections while the server runs) is dropped as a duplicate; the rest take
the inbound path of the v2 wire (``fig_link.apply_inbound``: default label, loop and hop checks,
the inbound validator, audit, router).

Silence: v1 has no keepalive message. An idle peer is healthy; a vanished one is found by TCP
keepalive probes (``KEEPALIVE``), which end the connection when unanswered, or, while frames we
wrote are unacknowledged (no probes run then), by TCP_USER_TIMEOUT (``user_timeout_ms``: the
same time).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import socket
import struct
import termios
import weakref
from collections.abc import Sequence

from liaison.errors import FrameTooLarge, PeerError
from liaison.federation.connection import ConnectionEnded, Tap, close_writer, first_failure
from liaison.federation.fig_link import ContactBook, apply_inbound, encode_rows
from liaison.federation.guard import content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2
from liaison.metrics import Counter, Metrics
from liaison.protocol.tak_fed_v1 import (
    MAX_FRAME_BYTES,
    RecentDigests,
    UndecodableFrame,
    V1Stream,
    encode_frame,
)
from liaison.router import Router
from liaison.transports.stream import Keepalive, set_keepalive

log = logging.getLogger(__name__)

# Bytes read from the socket per call.
READ_CHUNK = 64 * 1024
# Parsed frames waiting to be validated; past this the reader stops reading (TCP flow control
# then holds the peer back).
MAX_INBOUND_QUEUE = 1000
# Seconds between checks of whether what we wrote has been taken by the peer's TCP.
ACK_POLL_S = 0.05
# Seconds a connection must stay open after the peer's TCP took a row before the row counts as
# delivered (and leaves the outbox). A peer killed with our bytes unread resets the connection
# at once; this leaves room for that reset to arrive over a slow path. It also bounds a link's
# rate to about window / SETTLE_S rows per second ([federation] window, default 1000).
SETTLE_S = 1.0
# TCP keepalive on v1 connections (tcp(7)): after 30 s without traffic, a probe every 10 s, and
# the connection is dropped after 3 unanswered ones, so a vanished peer is found in about a
# minute. TAK Server itself treats a v1 federate idle for 30 s as a possible zombie
# (tak-federation.md 6.3), which is why the probes start then.
KEEPALIVE = Keepalive(idle_s=30, interval_s=10, count=3)


def user_timeout_ms() -> int:
    """TCP_USER_TIMEOUT for v1 connections (tcp(7)): as long as ``KEEPALIVE`` takes to give up
    on an idle connection. Keepalive probes only run while nothing we wrote is unacknowledged;
    with frames in flight the kernel retransmits instead, for about 15 minutes by default
    (tcp_retries2), and a peer gone mid-stream would hold the link, up and delivering nothing,
    that long. With this option the connection ends once nothing was acknowledged for that time,
    idle or not."""
    return (KEEPALIVE.idle_s + KEEPALIVE.interval_s * KEEPALIVE.count) * 1000


REFUSED_METRIC = "liaison_federation_v1_frames_refused_total"
REFUSED_HELP = "TAK federation v1 frames refused (the connection was closed), by reason"

# Per link, the digests of the frames applied from that peer (kept across its connections).
_recent: weakref.WeakKeyDictionary[PeerLink, RecentDigests] = weakref.WeakKeyDictionary()


def recent_digests(link: PeerLink) -> RecentDigests:
    """The duplicate-suppression memory of ``link`` (created on first use)."""
    recent = _recent.get(link)
    if recent is None:
        recent = _recent[link] = RecentDigests()
    return recent


def _unacknowledged(transport: asyncio.BaseTransport) -> int:
    """Bytes written to ``transport`` that the peer's TCP has not acknowledged yet: what the
    TLS layer and the socket transport still hold, plus the kernel's send queue (SIOCOUTQ, which
    on Linux is every byte queued and not acknowledged: write_seq - snd_una). Where the ioctl is
    unavailable only the buffers above the kernel count."""
    size = 0
    get = getattr(transport, "get_write_buffer_size", None)
    if get is not None:
        size += int(get())
    # The socket transport under asyncio's TLS layer keeps its own buffer, which the TLS
    # transport's get_write_buffer_size does not include (CPython 3.11 sslproto).
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if inner is not None:
        size += int(inner.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            size += int(struct.unpack("i", raw)[0])
        except (OSError, ValueError, AttributeError):
            pass
    return size


class V1Session:
    """One v1 connection of a link (either role): the WireSession of this wire."""

    def __init__(
        self,
        link: PeerLink,
        writer: asyncio.StreamWriter,
        tap: Tap | None,
        refused: Counter | None,
    ) -> None:
        self._link = link
        self._writer = writer
        self._tap = tap
        self._refused = refused
        self._recent = recent_digests(link)
        # Contacts announced on this connection (each uid once, tak-federation.md section 8).
        self._book = ContactBook()
        # Digests of the frames in the inbound queue, in the same order (apply_inbound takes
        # them first in, first out), remembered as applied once their batch is handled. At most
        # MAX_INBOUND_QUEUE + MAX_INBOUND_BATCH: the queue's limit plus the batch being handled.
        self._queued: collections.deque[str] = collections.deque()
        self._written = 0  # highest seq written and not yet handed to settling
        # (deadline, seq) of written rows the peer's TCP took; at most SETTLE_S / ACK_POLL_S + 1
        # entries (one per check, each gone SETTLE_S later).
        self._settling: collections.deque[tuple[float, int]] = collections.deque()

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        frames: list[bytes] = []
        for row in rows:
            # The event, preceded by its contact entry the first time (fig_link.encode_rows).
            for data in encode_rows(self._link, row, self._book):
                try:
                    frames.append(encode_frame(data))
                except ValueError as exc:  # a release never gets near 1 MiB; refused if it did
                    self._link.wire_denied(row, ("guard_mismatch", "frame_too_large"))
                    log.error("federation %s: %s", self._link.peer.name, exc)
                    break
            # Refused rows settle with the rest (acknowledgements are cumulative).
            self._written = max(self._written, row.seq)
        if frames:
            out = b"".join(frames)
            if self._tap is not None:
                self._tap("out", out)
            self._writer.write(out)
        await self._writer.drain()

    # --- delivery without acknowledgement -------------------------------------------------------

    async def settle_loop(self) -> None:
        """Acknowledge, on the link, rows the peer's TCP took and that stayed taken."""
        loop = asyncio.get_running_loop()
        transport = self._writer.transport
        while True:
            await asyncio.sleep(ACK_POLL_S)
            now = loop.time()
            if self._written and _unacknowledged(transport) == 0:
                self._settling.append((now + SETTLE_S, self._written))
                self._written = 0
            while self._settling and self._settling[0][0] <= now:
                _deadline, seq = self._settling.popleft()
                self._link.acked(seq)

    # --- inbound --------------------------------------------------------------------------------

    def _count_refused(self, reason: str) -> None:
        if self._refused is not None:
            self._refused.inc(reason)

    async def read_loop(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[fig_pb2.FederatedEvent]
    ) -> None:
        link = self._link
        stream: V1Stream[fig_pb2.FederatedEvent] = V1Stream(
            fig_pb2.FederatedEvent.FromString, MAX_FRAME_BYTES
        )
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise PeerError("the peer closed the connection", reason="closed")
            if self._tap is not None:
                self._tap("in", data)
            try:
                messages = stream.receive_data(data)
            except FrameTooLarge as exc:
                self._count_refused("too_large")
                log.warning("federation %s: %s; closing", link.peer.name, exc)
                raise
            except UndecodableFrame as exc:
                # Section 12: a message that does not parse closes the connection.
                self._count_refused("undecodable")
                link.wire_rejected(("undecodable",), content_sha256(exc.payload))
                log.warning("federation %s: %s; closing", link.peer.name, exc)
                raise
            for payload, message in messages:
                digest = content_sha256(payload)
                if digest in self._recent:
                    link.status.bump("received")
                    link.status.bump("duplicates")
                    continue
                await queue.put(message)
                self._queued.append(digest)

    def applied(self, batch: Sequence[fig_pb2.FederatedEvent]) -> None:
        for _ in batch:
            self._recent.add(self._queued.popleft())


async def serve(
    link: PeerLink,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    router: Router,
    tap: Tap | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run one authenticated, pinned TLS connection of ``link`` as TAK federation v1 (either
    role) until it ends. Raises PeerError."""
    link.begin_connection()
    refused = metrics.counter(REFUSED_METRIC, REFUSED_HELP, "reason") if metrics else None
    session = V1Session(link, writer, tap, refused)
    sock = writer.get_extra_info("socket")
    if set_keepalive(sock, KEEPALIVE) and hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms())
    try:
        # The peer is the one pinned by its certificate; in provenance its events carry its
        # configured name (what a peer says about itself selects nothing).
        validator = link.peer_identified(link.peer.name)
        # No handshake in v1: the link is up, and rows written but not settled on an earlier
        # connection are sent again first.
        link.connection_up(0)
        offered = router.replay_to(link)
        link.flush()
        log.info("federation %s: v1 link up, %d latest events offered", link.peer.name, offered)
        queue: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_INBOUND_QUEUE)
        name = link.peer.name
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.read_loop(reader, queue), name=f"v1-read-{name}")
            tg.create_task(
                apply_inbound(link, queue, validator, session.applied), name=f"v1-apply-{name}"
            )
            tg.create_task(session.settle_loop(), name=f"v1-settle-{name}")
            await link.send_loop(session)
            raise ConnectionEnded
    except BaseExceptionGroup as group:
        failure = first_failure(group)
        if failure is not None:
            raise failure from None
    finally:
        link.end_connection()
        await close_writer(writer)
