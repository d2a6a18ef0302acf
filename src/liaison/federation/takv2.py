"""The TAK federation v2 wire ("FIG", gRPC over mutual TLS), client role: Liaison dials a TAK
Server (or any v2 federate) and drives the peer's :class:`~liaison.federation.link.PeerLink`.

TLS is Liaison's own, not gRPC's: the supervisor dials with ``federation/tls.py`` (our
certificate, trusting only the peer's CA, ALPN ``h2``) and pins the peer's leaf certificate by
its SHA-256 before a byte of gRPC is sent. The plaintext side of that one TLS connection is then
offered to grpcio on a private Unix socket (a one-connection bridge), so every call of the
session travels on one TLS connection, as TAK Server requires (tak-federation.md 2.3), and the
tap sees exactly the HTTP/2 bytes that cross.

Call order (tak-federation.md 6.2): ``ServerFederateGroupsStream`` (wait for
``streamUpdate = SERVING``, or UNIMPLEMENTED), ``ClientEventStream`` (inbound events) *before*
``ServerEventStream`` (outbound events), ``HealthCheck{SERVING}`` every 3 s with a deadline,
``ClientROLStream`` after the first SERVING answer (drained and ignored). ``getIdentity`` and
``SendOneEvent`` are never used.

Outbound: the link's send loop hands rows (the guard's release bytes); each is translated by
``fig_codec.release_to_federated``, serialized, read back from the serialized bytes and
re-checked by the guard (label, ceiling, type, details, provenance, marking) before it is
written; a row that fails is not written and gets a deny record. Each row carries the federate
group names the link mapped it to (``fed_groups``); a client's first position report on a
connection is preceded by its ``ContactListEntry CREATE`` and a ``t-x-d-d`` goes as ``DELETE``
(``fed_contacts``). TAK federation has no acknowledgement, so a row leaves the outbox only
once the peer has shown it read past it: a ``HealthCheck`` made after the row was written, on
the same connection, answered ``SERVING`` (the peer parsed the row's bytes before that call's;
one such check follows every batch of writes, besides the periodic one). Rows written but not
confirmed when a connection ends are sent again on the next one (at least once; duplicates
possible). Inbound: contacts become presence or
delete events, mission notices and messages that map to no local group are dropped and counted,
and each GeoEvent becomes CoT XML (``fig_codec.inbound_cot``: peer's default label, provenance,
ptp destinations) that goes through the link's validator, audit and router into the mapped
groups; ROL is ignored. Both roles (and any TAK wire) share this: ``fig_link.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from liaison.errors import PeerError
from liaison.federation import fed_groups
from liaison.federation.connection import (
    ConnectionEnded,
    Tap,
    close_writer,
    first_failure,
)

# Shared with the server role and with v1 (no grpc there); re-exported for takv2_server.
from liaison.federation.fig_link import MAX_INBOUND_BATCH as MAX_INBOUND_BATCH
from liaison.federation.fig_link import ContactBook as ContactBook
from liaison.federation.fig_link import apply_inbound as apply_inbound
from liaison.federation.fig_link import encode_row as encode_row
from liaison.federation.fig_link import encode_rows as encode_rows
from liaison.federation.fig_link import note_remote_groups as note_remote_groups
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2

if TYPE_CHECKING:
    from liaison.router import Router

log = logging.getLogger(__name__)

SERVICE = "/com.atakmap.FederatedChannel/"

# Seconds between our HealthCheck calls; TAK Server's own client uses 3 s and kills a stream
# that had no SERVING health for 15 s (tak-federation.md 6.2 step 5).
HEALTH_INTERVAL_S = 3.0
# Seconds a HealthCheck may take (TAK never completes one it cannot answer: trap 9).
HEALTH_TIMEOUT_S = 5.0
# Seconds to wait for the groups stream's SERVING before opening the event streams.
HANDSHAKE_TIMEOUT_S = 15.0
# Largest gRPC message accepted or sent (grpcio's 4 MiB default is too small for ROL with
# files, trap 22; ROL is drained and ignored, events are bounded again by cot_xml's limits).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Received events waiting to be validated; past this the reader stops reading (HTTP/2 flow
# control then holds the peer back).
MAX_INBOUND_QUEUE = 1000
# Bytes moved per read between the TLS connection and grpcio's socket.
BRIDGE_CHUNK = 64 * 1024
# Seconds to wait for a closing TLS connection to finish its goodbye.
# Version announced in Subscription.version (TAK needs major >= 1, trap 9).
VERSION_MAJOR = 1
VERSION_VARIANT = "liaison"


def _identity(link: PeerLink) -> fig_pb2.Subscription:
    server_id = link.fed.server_id
    return fig_pb2.Subscription(
        identity=fig_pb2.Identity(
            name=server_id,
            uid=uuid.uuid4().hex,
            type=fig_pb2.Identity.FEDERATION_TAK_CLIENT,
            serverId=server_id,
        ),
        version=fig_pb2.TakServerVersion(major=VERSION_MAJOR, variant=VERSION_VARIANT),
    )


async def pump(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    tap: Tap | None,
    direction: str,
    seen: Callable[[bytes], None] | None = None,
) -> None:
    """Move bytes one way between the TLS connection and grpcio's socket (both roles);
    ``seen``, if given, gets each chunk once it has been handed to ``dst``, so what it learns
    (a frame written, bytes from the peer) is never ahead of the connection."""
    while True:
        data = await src.read(BRIDGE_CHUNK)
        if not data:
            raise ConnectionEnded
        if tap is not None:
            tap(direction, data)
        dst.write(data)
        if seen is not None:
            seen(data)
        await dst.drain()


# The client connection preface of HTTP/2 (RFC 9113 section 3.4).
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
_FLAG_END_STREAM = 0x1
_TYPE_DATA, _TYPE_HEADERS = 0x0, 0x1


class _FrameWatch:
    """Counts the HTTP/2 streams grpcio half-closed on the way out (RFC 9113 section 4.1 frame
    layout), so the session knows a unary request (ClientEventStream's subscription) has been
    written to the TLS connection before it opens the next call."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._preface = True
        self.half_closed: set[int] = set()
        self.changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._preface:
            if len(buf) < len(_PREFACE):
                return
            del buf[: len(_PREFACE)]
            self._preface = False
        while len(buf) >= _FRAME_HEADER:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < _FRAME_HEADER + length:
                return
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            del buf[: _FRAME_HEADER + length]
            if kind in (_TYPE_DATA, _TYPE_HEADERS) and flags & _FLAG_END_STREAM and stream:
                self.half_closed.add(stream)
                self.changed.set()

    async def wait_half_closed(self, count: int) -> None:
        while len(self.half_closed) < count:
            self.changed.clear()
            await self.changed.wait()


class _Bridge:
    """A private Unix socket that gives grpcio the plaintext of one pinned TLS connection.

    It accepts exactly one connection (the socket is in a fresh 0700 directory); a second one
    (grpcio reconnecting after the first ended) is closed at once, so a session never moves to
    another TLS connection.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tap: Tap | None,
        tg: asyncio.TaskGroup,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._tap = tap
        self._tg = tg
        self._used = False
        self.directory = tempfile.mkdtemp(prefix="liaison-fig-")
        self.path = os.path.join(self.directory, "s")
        self._server: asyncio.Server | None = None
        self._local: asyncio.StreamWriter | None = None
        self.frames = _FrameWatch()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_local, path=self.path)

    async def _on_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._used:
            writer.close()
            return
        self._used = True
        self._local = writer
        self._tg.create_task(pump(self._reader, writer, self._tap, "in"), name="fig-bridge-in")
        self._tg.create_task(
            pump(reader, self._writer, self._tap, "out", self.frames.feed), name="fig-bridge-out"
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._local is not None:
            self._local.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _Raw:
    """A response "deserializer" that keeps the message bytes (ROL is decoded, and hashed for
    the audit record, by ``mission_rol.py``)."""

    @staticmethod
    def FromString(data: bytes) -> bytes:
        return data


class FigClientSession:
    """One v2 connection of a link, Liaison dialling: the WireSession of this wire."""

    def __init__(
        self,
        link: PeerLink,
        channel: grpc.aio.Channel,
        frames: _FrameWatch,
        router: Router | None = None,
    ) -> None:
        self._link = link
        self._channel = channel
        self._frames = frames
        self._router = router
        self._out: Any = None  # the ServerEventStream call (grpc.aio.StreamUnaryCall)
        self._book = ContactBook()
        # The highest sequence number written (or refused) on this connection, and the wish for
        # a HealthCheck that confirms it (see _check).
        self._written = 0
        self._confirm = asyncio.Event()

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        link = self._link
        for row in rows:
            for data in encode_rows(link, row, self._book):
                try:
                    await self._out.write(data)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                    # The peer ended ServerEventStream (or the connection failed; grpcio says
                    # InvalidStateError for a call already finished): this connection ends and
                    # the link redials, instead of the error ending the whole federation.
                    what = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "ended"
                    raise PeerError(f"event stream: {what}", reason="rpc_error") from None
            self._written = row.seq
        # No acknowledgement in TAK federation: the rows leave the outbox once a HealthCheck
        # made after these writes is answered SERVING (_confirmer).
        self._confirm.set()

    # --- the conversation -----------------------------------------------------------------------

    def _call(self, kind: str, method: str, response: Any) -> Any:
        ch = self._channel
        maker = {
            "unary_stream": ch.unary_stream,
            "stream_unary": ch.stream_unary,
            "unary_unary": ch.unary_unary,
        }[kind]
        return maker(
            SERVICE + method,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=response.FromString,
        )

    async def run(self, tg: asyncio.TaskGroup) -> None:
        link = self._link
        sub = _identity(link)
        groups = self._call("unary_stream", "ServerFederateGroupsStream", fig_pb2.FederateGroups)(
            sub
        )
        await self._await_serving(groups)
        inbound = self._call("unary_stream", "ClientEventStream", fig_pb2.FederatedEvent)(sub)
        # ClientEventStream must be open before ServerEventStream (trap 10): its subscription
        # (the second request grpcio half-closes, after the groups stream's) must have been
        # written to the TLS connection before ServerEventStream is made. Waiting for the
        # peer's headers instead would hang: a gRPC server may send none before a message.
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await self._frames.wait_half_closed(2)
        self._out = self._call("stream_unary", "ServerEventStream", fig_pb2.Subscription)()
        # The peer is the one pinned by its certificate; in Liaison's provenance its events
        # carry its configured name (what a peer says about itself selects nothing).
        validator = link.peer_identified(link.peer.name)
        link.connection_up(0)
        if self._router is not None:
            # As TAK does once its event stream is up (tak-federation.md 6.1 step 6): the latest
            # state the peer may see (the router's replay: its decision and audit, then the
            # guard and the outbox), and with it the contacts of our clients.
            self._router.replay_to(link)
            link.flush()
        name = link.peer.name
        queue: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_INBOUND_QUEUE)
        tg.create_task(self._read(inbound, queue), name=f"fig-read-{name}")
        tg.create_task(apply_inbound(link, queue, validator), name=f"fig-apply-{name}")
        tg.create_task(self._health(sub, tg), name=f"fig-health-{name}")
        tg.create_task(self._read_groups(groups), name=f"fig-groups-{name}")
        names = fed_groups.announced(link.peer.groups_out)
        if names:
            tg.create_task(self._announce_groups(sub, names), name=f"fig-announce-{name}")
        tg.create_task(self._confirmer(), name=f"fig-confirm-{name}")
        tg.create_task(self._send_rol(), name=f"fig-rol-out-{name}")
        await link.send_loop(self)

    async def _read_groups(self, call: AsyncIterator[fig_pb2.FederateGroups]) -> None:
        """Record the group names the peer announces (tak-federation.md 6.2 step 2)."""
        try:
            async for msg in call:
                note_remote_groups(self._link, msg)
        except grpc.aio.AioRpcError as exc:
            log.info("federation %s: groups stream ended: %s", self._link.peer.name, exc.code())

    async def _announce_groups(self, sub: fig_pb2.Subscription, names: Sequence[str]) -> None:
        """Offer our outbound group names once on ClientFederateGroupsStream (section 6.2
        step 7); a peer that does not implement it is only logged."""

        async def one() -> AsyncIterator[fig_pb2.FederateGroups]:
            yield fig_pb2.FederateGroups(federateGroups=list(names))

        call = self._call("stream_unary", "ClientFederateGroupsStream", fig_pb2.Subscription)
        try:
            await call(one())
        except grpc.aio.AioRpcError as exc:
            log.info(
                "federation %s: our groups not announced: %s", self._link.peer.name, exc.code()
            )

    async def _await_serving(self, groups: Any) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                async for update in groups:
                    if update.streamUpdate.status == fig_pb2.ServerHealth.SERVING:
                        return
        except TimeoutError:
            raise PeerError("no SERVING on the groups stream", reason="handshake_timeout") from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return  # allowed by TAK's client (tak-federation.md 6.1 step 2)
            raise PeerError(f"groups stream: {exc.code().name}", reason="rpc_error") from None
        raise PeerError("groups stream ended before SERVING", reason="rpc_error")

    async def _check(self) -> None:
        """One HealthCheck; SERVING also confirms every row written before it was made.

        The call rides the same connection after those rows' bytes (grpcio completes a write
        once it is handed to the transport), so a SERVING answer means the peer's HTTP/2 layer
        read them: the only proof of receipt TAK federation offers. Raises PeerError."""
        upto = self._written
        request = fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING)
        check = self._call("unary_unary", "HealthCheck", fig_pb2.ServerHealth)
        try:
            answer = await check(request, timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise PeerError(f"health check: {exc.code().name}", reason="health") from None
        if answer.status != fig_pb2.ServerHealth.SERVING:
            status = fig_pb2.ServerHealth.ServingStatus.Name(answer.status)
            raise PeerError(f"health check answered {status}", reason="health")
        if upto > self._link.outbox.last_acked:
            self._link.acked(upto)

    async def _confirmer(self) -> None:
        """A HealthCheck after each batch of writes (at most one at a time), to confirm them."""
        while True:
            await self._confirm.wait()
            self._confirm.clear()
            await self._check()

    async def _health(self, sub: fig_pb2.Subscription, tg: asyncio.TaskGroup) -> None:
        rol_open = False
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self._check()
            if not rol_open:
                # After the first SERVING, as TAK's client does (tak-federation.md section 3).
                rol_open = True
                rol = self._call("unary_stream", "ClientROLStream", _Raw)(sub)
                tg.create_task(self._read_rol(rol), name=f"fig-rol-{self._link.peer.name}")

    async def _read_rol(self, call: AsyncIterator[bytes]) -> None:
        """The peer's ROL (ClientROLStream): executed by the link's mission ROL
        (``mission_rol.py``), or ignored for a link without one. Its end is not fatal."""
        rol = self._link.rol
        try:
            async for data in call:
                if rol is not None:
                    rol.received(data)
                else:
                    log.debug("federation %s: ROL message ignored", self._link.peer.name)
        except grpc.aio.AioRpcError as exc:
            log.info("federation %s: ROL stream ended: %s", self._link.peer.name, exc.code())

    async def _send_rol(self) -> None:
        """Our mission ROL on ServerROLStream (opened at start by TAK's client, section 3). A
        peer that does not implement it (ots-federation ignores ROL) only ends this call: the
        link carries on without ROL, and what was queued waits for the next connection."""
        rol = self._link.rol
        if rol is None:
            return
        taken: list[bytes] = []

        async def messages() -> AsyncIterator[bytes]:
            while True:
                data = await rol.next_out()
                taken[:] = [data]
                yield data
                taken.clear()

        call = self._call("stream_unary", "ServerROLStream", fig_pb2.Subscription)
        try:
            await call(messages())
        except grpc.aio.AioRpcError as exc:
            log.info("federation %s: ServerROLStream ended: %s", self._link.peer.name, exc.code())
        finally:
            for data in taken:
                rol.put_back(data)

    async def _read(self, call: Any, queue: asyncio.Queue[fig_pb2.FederatedEvent]) -> None:
        try:
            async for msg in call:
                await queue.put(msg)
        except grpc.aio.AioRpcError as exc:
            raise PeerError(f"event stream: {exc.code().name}", reason="rpc_error") from None
        raise PeerError("the peer ended its event stream", reason="closed")


async def serve(
    link: PeerLink,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    authority: str,
    tap: Tap | None = None,
    router: Router | None = None,
) -> None:
    """Run one dialled, pinned TLS connection of ``link`` as a v2 client until it ends.

    ``authority`` is the ``host:port`` dialled (the HTTP/2 ``:authority``). Raises PeerError.
    """
    link.begin_connection()
    channel: grpc.aio.Channel | None = None
    bridge: _Bridge | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            bridge = _Bridge(reader, writer, tap, tg)
            await bridge.start()
            channel = grpc.aio.insecure_channel(
                f"unix:{bridge.path}",
                options=[
                    ("grpc.default_authority", authority),
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_retries", 0),
                ],
            )
            await FigClientSession(link, channel, bridge.frames, router).run(tg)
            raise ConnectionEnded
    except BaseExceptionGroup as group:
        failure = first_failure(group)
        if failure is not None:
            raise failure from None
    finally:
        if channel is not None:
            await channel.close()
        if bridge is not None:
            await bridge.close()
        link.end_connection()
        await close_writer(writer)
