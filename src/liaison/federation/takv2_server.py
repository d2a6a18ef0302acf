"""The TAK federation v2 wire ("FIG", gRPC over mutual TLS), server role: a TAK Server (or any
v2 federate) dials Liaison's federation listener and drives the peer's
:class:`~liaison.federation.link.PeerLink`.

TLS is Liaison's own, as in the client role (``takv2.py``): the supervisor accepts the connection
on the federation listener (ALPN ``h2``), identifies the peer by the SHA-256 of its leaf
certificate among the configured ``accept = true`` peers and checks its CA before a byte of gRPC
is read. The plaintext of that one connection is then handed to a grpcio server made for it
alone, on a private Unix socket (fresh 0700 folder), so every call of the session is known to
come from that pinned peer (TAK keys a federate's calls by its connection too,
tak-federation.md 2.3).

What the server answers (tak-federation.md section 3, "TAK as server", and 6.1):
``ServerFederateGroupsStream`` sends ``FederateGroups{streamUpdate = SERVING}`` at once and
stays open; ``ClientEventStream`` (our events to the peer) makes the link up, offers the peer
the latest state it may see (the router's replay: same decision and audit as live delivery,
then the guard and the outbox) and streams the outbox; ``ServerEventStream`` (the peer's
events) is read into the same inbound path as the client role; ``HealthCheck`` answers
``SERVING`` once a ``ClientEventStream`` with ``version.major >= 1`` is open, else
``NOT_CONNECTED``; ``ClientROLStream`` carries our mission ROL and ``ServerROLStream`` the
peer's (``mission_rol.py``; held open and ignored for a link without missions);
``ClientFederateGroupsStream`` is read and the peer's group names recorded
(our own follow ``SERVING`` on ``ServerFederateGroupsStream``); ``getIdentity`` (which TAK
Server leaves unimplemented, but ots-federation's client calls first) answers our identity.
Subscriptions with an empty ``identity.name`` are refused (INVALID_ARGUMENT), as TAK does (trap
8). A peer
from which nothing (no health check, no message) arrived for ``SILENT_TIMEOUT_S`` is dropped
(section 1, "15 s timeout on the server side"). Other methods answer UNIMPLEMENTED.

Delivery (at least once): TAK federation has no acknowledgement, and in this role we make no
call to the peer after which it must answer, so a row leaves the outbox only once it is
**settled**: every one of its messages has left grpcio and been written to the TLS connection
(``_Delivery`` follows the HTTP/2 frames going out, RFC 9113 section 4.1, and the gRPC
length-prefixed messages in ClientEventStream's DATA frames), every byte written up to then has
been acknowledged by the peer's TCP (SIOCOUTQ 0, as v1 does: ``takv1._unacknowledged``), the
connection then stayed open ``SETTLE_S`` more, and bytes from the peer (its health checks, flow
control, events) arrived at or after that moment, so the peer was still alive and talking past
it. Rows not settled when the connection ends are sent again on the next one, with their
numbers (duplicates possible: FederatedEvent carries no sequence number or acknowledgement,
tak-federation.md section 4.1, so the receiver can only suppress them by content).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from liaison.errors import PeerError
from liaison.federation import fed_groups
from liaison.federation.connection import Tap, close_writer, first_failure
from liaison.federation.guard import content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2
from liaison.federation.takv1 import _unacknowledged
from liaison.federation.takv2 import (
    MAX_INBOUND_QUEUE,
    MAX_MESSAGE_BYTES,
    ContactBook,
    apply_inbound,
    encode_rows,
    note_remote_groups,
    pump,
)
from liaison.router import Router

log = logging.getLogger(__name__)

SERVICE = "com.atakmap.FederatedChannel"
# Seconds without a health check or any message before the peer is dropped (TAK Server's own
# server-side health timeout, tak-federation.md section 1 and 6.2 step 5).
SILENT_TIMEOUT_S = 15.0
# Seconds between checks of that timeout.
WATCH_INTERVAL_S = 0.5
# Encoded events handed to ClientEventStream and not yet written (each waits for its write).
MAX_OUTBOUND_QUEUE = 64
# Seconds given to grpcio's per-connection server to finish at the end of a connection.
STOP_GRACE_S = 0.5
# Seconds between checks of whether what we wrote has been taken by the peer's TCP.
ACK_POLL_S = 0.05
# Seconds the connection must stay open, and the peer keep talking, after its TCP took a row
# before the row counts as delivered (as v1's SETTLE_S: a peer killed with our bytes unread
# resets the connection at once; a cut line lets nothing from the peer through). Rows settle
# when the peer next sends something past this (a health check, every 3 s from TAK Server, or
# HTTP/2 flow control while events flow), so at most [federation] window rows wait for it.
SETTLE_S = 1.0

# HTTP/2 frame layout (RFC 9113 section 4.1) and the gRPC message prefix (1 flag byte and a
# 4-byte big-endian length, gRPC over HTTP/2 "Length-Prefixed-Message").
_FRAME_HEADER = 9
_TYPE_DATA = 0x0
_FLAG_PADDED = 0x8
_GRPC_PREFIX = 5


class _Delivery:
    """Follows the HTTP/2 bytes grpcio writes towards the peer and tells which rows' messages
    have all been handed to the TLS connection (``passed``, a sequence number).

    ``expect`` is called, in ClientEventStream's order, for every message given to grpcio; the
    stream carrying them is found by the first message's bytes, after which every complete
    message on it is the next one expected. Holds at most the messages of the rows in flight
    (the link's window) plus one partial frame and one partial message per stream.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._partial: dict[int, bytearray] = {}  # stream id -> bytes of an unfinished message
        self._stream: int | None = None  # ClientEventStream's id, once its first message passed
        # [message bytes, highest seq settled with it (0: none)] in writing order.
        self._expected: collections.deque[list[Any]] = collections.deque()
        self.passed = 0

    def expect(self, data: bytes, seq: int) -> None:
        self._expected.append([data, seq])

    def covers(self, seq: int) -> None:
        """A row with no message (refused by the wire's re-check): settled with the previous."""
        if self._expected:
            self._expected[-1][1] = max(self._expected[-1][1], seq)
        else:
            self.passed = max(self.passed, seq)

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _FRAME_HEADER:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < _FRAME_HEADER + length:
                return
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buf[_FRAME_HEADER : _FRAME_HEADER + length])
            del buf[: _FRAME_HEADER + length]
            if kind != _TYPE_DATA or (self._stream is not None and stream != self._stream):
                continue
            if flags & _FLAG_PADDED and payload:
                payload = payload[1 : len(payload) - payload[0]]
            self._data(stream, payload)

    def _data(self, stream: int, payload: bytes) -> None:
        part = self._partial.setdefault(stream, bytearray())
        part += payload
        while len(part) >= _GRPC_PREFIX:
            size = int.from_bytes(part[1:5], "big")
            if len(part) < _GRPC_PREFIX + size:
                return
            message = bytes(part[_GRPC_PREFIX : _GRPC_PREFIX + size])
            del part[: _GRPC_PREFIX + size]
            if not self._expected:
                continue  # not ours (a health answer, group names)
            if self._stream is None:
                if message != self._expected[0][0]:
                    continue
                self._stream = stream  # ClientEventStream found: other streams are ignored
                self._partial = {stream: part}
            _data, seq = self._expected.popleft()
            self.passed = max(self.passed, seq)


class FigServerSession:
    """One v2 connection of a link, the peer dialling: the WireSession of this wire."""

    def __init__(self, link: PeerLink, router: Router, tg: asyncio.TaskGroup) -> None:
        self._link = link
        self._router = router
        self._tg = tg
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()
        self._client_major: int | None = None  # version.major of the open ClientEventStream
        self._out: asyncio.Queue[tuple[bytes, asyncio.Future[None]]] = asyncio.Queue(
            MAX_OUTBOUND_QUEUE
        )
        self._inbound: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_INBOUND_QUEUE)
        self._ended: PeerError | None = None
        self._end = asyncio.Event()
        self._book = ContactBook()
        self.validator = link.peer_identified(link.peer.name)
        self.delivery = _Delivery()
        self._peer_bytes_at = self._loop.time()  # when bytes from the peer last arrived
        self._settle_from = 0  # highest seq handed to settling
        # (deadline, seq) of rows the peer's TCP took; at most SETTLE_S / ACK_POLL_S + 1 entries
        # (one per check, each gone once settled; a silent peer is dropped after
        # SILENT_TIMEOUT_S, bounding them by SILENT_TIMEOUT_S / ACK_POLL_S + 1).
        self._settling: collections.deque[tuple[float, int]] = collections.deque()

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        link = self._link
        for row in rows:
            messages = encode_rows(link, row, self._book)
            for i, data in enumerate(messages):
                written: asyncio.Future[None] = self._loop.create_future()
                # The row settles with its last message (settle_loop acknowledges it).
                self.delivery.expect(data, row.seq if i == len(messages) - 1 else 0)
                await self._out.put((data, written))
                await written
            if not messages:
                self.delivery.covers(row.seq)  # refused: settles with what was written before

    # --- delivery without acknowledgement -------------------------------------------------------

    def peer_bytes(self, data: bytes) -> None:
        self._peer_bytes_at = self._loop.time()

    async def settle_loop(self, transport: asyncio.BaseTransport) -> None:
        """Acknowledge, on the link, rows whose bytes the peer's TCP took, and past which the
        connection stayed open and the peer kept talking for SETTLE_S."""
        loop = self._loop
        while True:
            await asyncio.sleep(ACK_POLL_S)
            now = loop.time()
            passed = self.delivery.passed
            if passed > self._settle_from and _unacknowledged(transport) == 0:
                self._settling.append((now + SETTLE_S, passed))
                self._settle_from = passed
            settling = self._settling
            while settling and settling[0][0] <= now and self._peer_bytes_at >= settling[0][0]:
                _deadline, seq = settling.popleft()
                self._link.acked(seq)

    # --- connection lifetime --------------------------------------------------------------------

    def _heard(self) -> None:
        self._last_heard = self._loop.time()

    def end(self, error: PeerError) -> None:
        if self._ended is None:
            self._ended = error
        self._end.set()

    async def watch(self) -> None:
        """Raise when the connection must end: the peer fell silent or a call ended it."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_INTERVAL_S):
                    await self._end.wait()
            if self._ended is not None:
                raise self._ended
            silent = self._loop.time() - self._last_heard
            if silent > SILENT_TIMEOUT_S:
                raise PeerError(
                    f"nothing from the peer for {silent:.0f} s (no health check)",
                    reason="health_timeout",
                )

    def _own_identity(self) -> fig_pb2.Identity:
        server_id = self._link.fed.server_id
        return fig_pb2.Identity(
            name=server_id,
            uid=uuid.uuid4().hex,
            type=fig_pb2.Identity.FEDERATION_TAK_SERVER,
            serverId=server_id,
        )

    def _subscription(self) -> bytes:
        return fig_pb2.Subscription(identity=self._own_identity()).SerializeToString()

    async def _get_identity(self, request: bytes, context: Any) -> bytes:
        # TAK Server leaves getIdentity unimplemented (tak-federation.md 3); ots-federation's
        # client calls it first and compares serverId with its configuration.
        self._heard()
        return self._own_identity().SerializeToString()

    async def _named(self, request: bytes, context: Any, method: str) -> fig_pb2.Subscription:
        """The request's Subscription; the call is refused without an identity name."""
        self._heard()
        try:
            sub = fig_pb2.Subscription.FromString(request)
        except Exception:  # protobuf's DecodeError; any undecodable request is refused
            sub = fig_pb2.Subscription()
        if not sub.identity.name:
            log.warning(
                "federation %s: %s without identity.name refused", self._link.peer.name, method
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "identity.name is required")
        return sub

    # --- the service (TAK Server's side) --------------------------------------------------------

    async def _groups(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        await self._named(request, context, "ServerFederateGroupsStream")
        yield fig_pb2.FederateGroups(
            streamUpdate=fig_pb2.ServerHealth(status=fig_pb2.ServerHealth.SERVING)
        ).SerializeToString()
        names = fed_groups.announced(self._link.peer.groups_out)
        if names:
            # Then our outbound group names, as TAK does with mapping on (section 3).
            yield fig_pb2.FederateGroups(federateGroups=list(names)).SerializeToString()
        await self._end.wait()  # held open, as TAK does

    async def _client_events(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        sub = await self._named(request, context, "ClientEventStream")
        link = self._link
        if self._client_major is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "ClientEventStream already open")
        self._client_major = sub.version.major
        link.connection_up(0)
        # The latest state the peer may see: the router's replay (its decision and audit), then
        # the link's guard and outbox, like any live event.
        offered = self._router.replay_to(link)
        link.flush()
        log.info(
            "federation %s: subscription open, %d latest events offered", link.peer.name, offered
        )
        self._tg.create_task(self._send_loop(), name=f"fig-send-{link.peer.name}")
        try:
            while True:
                data, written = await self._out.get()
                yield data
                if not written.done():
                    written.set_result(None)
        finally:
            self.end(PeerError("the peer closed ClientEventStream", reason="closed"))

    async def _send_loop(self) -> None:
        await self._link.send_loop(self)

    async def _server_events(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        link = self._link
        try:
            async for data in requests:
                self._heard()
                try:
                    fed = fig_pb2.FederatedEvent.FromString(data)
                except Exception:  # protobuf's DecodeError
                    link.wire_rejected(("undecodable",), content_sha256(data))
                    continue
                await self._inbound.put(fed)
        finally:
            self.end(PeerError("the peer ended ServerEventStream", reason="closed"))
        return self._subscription()

    async def _health(self, request: bytes, context: Any) -> bytes:
        self._heard()
        ok = self._client_major is not None and self._client_major >= 1
        status = fig_pb2.ServerHealth.SERVING if ok else fig_pb2.ServerHealth.NOT_CONNECTED
        return fig_pb2.ServerHealth(status=status).SerializeToString()

    async def _client_rol(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """ClientROLStream: our mission ROL (``mission_rol.py``); held open without any."""
        await self._named(request, context, "ClientROLStream")
        rol = self._link.rol
        if rol is None:
            await self._end.wait()
            return
        while not self._end.is_set():
            data = await rol.next_out()
            if self._end.is_set():
                rol.put_back(data)
                return
            yield data

    async def _server_rol(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        """ServerROLStream: the peer's ROL, executed by the link's mission ROL."""
        rol = self._link.rol
        async for data in requests:
            self._heard()
            if rol is not None:
                rol.received(data)
            else:
                log.debug("federation %s: ROL message ignored", self._link.peer.name)
        return self._subscription()

    async def _client_groups(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        """ClientFederateGroupsStream: the group names the peer offers (recorded)."""
        async for data in requests:
            self._heard()
            try:
                note_remote_groups(self._link, fig_pb2.FederateGroups.FromString(data))
            except Exception:  # protobuf's DecodeError: not a FederateGroups, ignored
                log.info("federation %s: undecodable FederateGroups", self._link.peer.name)
        return self._subscription()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerFederateGroupsStream": grpc.unary_stream_rpc_method_handler(self._groups),
                "ClientEventStream": grpc.unary_stream_rpc_method_handler(self._client_events),
                "ServerEventStream": grpc.stream_unary_rpc_method_handler(self._server_events),
                "HealthCheck": grpc.unary_unary_rpc_method_handler(self._health),
                "ClientROLStream": grpc.unary_stream_rpc_method_handler(self._client_rol),
                "ServerROLStream": grpc.stream_unary_rpc_method_handler(self._server_rol),
                "ClientFederateGroupsStream": grpc.stream_unary_rpc_method_handler(
                    self._client_groups
                ),
                "getIdentity": grpc.unary_unary_rpc_method_handler(self._get_identity),
            },
        )

    def start_inbound(self) -> None:
        name = self._link.peer.name
        self._tg.create_task(
            apply_inbound(self._link, self._inbound, self.validator), name=f"fig-apply-{name}"
        )


async def serve(
    link: PeerLink,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    router: Router,
    tap: Tap | None = None,
) -> None:
    """Run one accepted, pinned TLS connection of ``link`` as a v2 server until it ends.

    Raises PeerError.
    """
    link.begin_connection()
    server: grpc.aio.Server | None = None
    directory = tempfile.mkdtemp(prefix="liaison-figs-")
    local: asyncio.StreamWriter | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            session = FigServerSession(link, router, tg)
            server = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ]
            )
            server.add_generic_rpc_handlers((session.handler(),))
            path = os.path.join(directory, "s")
            server.add_insecure_port(f"unix:{path}")
            await server.start()
            local_reader, local = await asyncio.open_unix_connection(path)
            tg.create_task(
                pump(reader, local, tap, "in", session.peer_bytes), name="figs-bridge-in"
            )
            tg.create_task(
                pump(local_reader, writer, tap, "out", session.delivery.feed),
                name="figs-bridge-out",
            )
            tg.create_task(session.watch(), name=f"figs-watch-{link.peer.name}")
            tg.create_task(
                session.settle_loop(writer.transport), name=f"figs-settle-{link.peer.name}"
            )
            session.start_inbound()
    except BaseExceptionGroup as group:
        failure = first_failure(group)
        if failure is not None:
            raise failure from None
        raise PeerError("the peer closed the connection", reason="closed") from None
    finally:
        if server is not None:
            await server.stop(STOP_GRACE_S)
        if local is not None:
            local.close()
        shutil.rmtree(directory, ignore_errors=True)
        link.end_connection()
        await close_writer(writer)
