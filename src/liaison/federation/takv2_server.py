"""The TAK federation v2 wire ("FIG", gRPC over mutual TLS), server role: a TAK Server (or any
v2 federate) dials Liaison's federation listener and drives the peer's
:class:`~liaison.federation.link.PeerLink`.

TLS is Liaison's own, as in the client role (``takv2.py``): the supervisor accepts the connection
on the federation listener (ALPN ``h2``), identifies the peer by the SHA-256 of its leaf
certificate among the configured ``accept = true`` peers and checks its CA before a byte of gRPC
is read. The gRPC calls of that one connection are then answered by ``fig_h2`` (gRPC over HTTP/2
with the ``h2`` state machine, no grpcio) on the connection itself, so every call of the session
is known to come from that pinned peer (TAK keys a federate's calls by its connection too,
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
**settled**: every one of its messages has been framed and handed to the TLS connection (each
batch of rows is one write of all their messages on ClientEventStream), every byte written up
to then has
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
import uuid
from collections.abc import Awaitable, Callable, Sequence

from liaison.errors import PeerError
from liaison.federation import fed_groups, fig_h2
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
)
from liaison.router import Router

log = logging.getLogger(__name__)

SERVICE = "com.atakmap.FederatedChannel"
# Seconds without a health check or any message before the peer is dropped (TAK Server's own
# server-side health timeout, tak-federation.md section 1 and 6.2 step 5).
SILENT_TIMEOUT_S = 15.0
# Seconds between checks of that timeout.
WATCH_INTERVAL_S = 0.5
# Seconds between checks of whether what we wrote has been taken by the peer's TCP.
ACK_POLL_S = 0.05
# Seconds the connection must stay open, and the peer keep talking, after its TCP took a row
# before the row counts as delivered (as v1's SETTLE_S: a peer killed with our bytes unread
# resets the connection at once; a cut line lets nothing from the peer through). Rows settle
# when the peer next sends something past this (a health check, every 3 s from TAK Server, or
# HTTP/2 flow control while events flow), so at most [federation] window rows wait for it.
SETTLE_S = 1.0


class FigServerSession:
    """One v2 connection of a link, the peer dialling: the WireSession of this wire."""

    def __init__(self, link: PeerLink, router: Router, tg: asyncio.TaskGroup) -> None:
        self._link = link
        self._router = router
        self._tg = tg
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()
        self._client_major: int | None = None  # version.major of the open ClientEventStream
        self._client_call: fig_h2.Call | None = None  # the open ClientEventStream
        self._inbound: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_INBOUND_QUEUE)
        self._ended: PeerError | None = None
        self._end = asyncio.Event()
        self._book = ContactBook()
        self.validator = link.peer_identified(link.peer.name)
        # The highest sequence number whose messages (and every one before) have been framed
        # and handed to the TLS connection (or were refused by the wire's re-check).
        self.passed = 0
        self._peer_bytes_at = self._loop.time()  # when bytes from the peer last arrived
        self._settle_from = 0  # highest seq handed to settling
        # (deadline, seq) of rows the peer's TCP took; at most SETTLE_S / ACK_POLL_S + 1 entries
        # (one per check, each gone once settled; a silent peer is dropped after
        # SILENT_TIMEOUT_S, bounding them by SILENT_TIMEOUT_S / ACK_POLL_S + 1).
        self._settling: collections.deque[tuple[float, int]] = collections.deque()

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        # Every row's messages (each re-checked from its serialized bytes; a refused row has
        # none, and settles with what was written before it), then one write of them all.
        messages: list[bytes] = []
        for row in rows:
            messages += encode_rows(self._link, row, self._book)
        call = self._client_call
        assert call is not None
        try:
            await call.write(messages)
        except fig_h2.RpcError as exc:
            raise PeerError(f"ClientEventStream: {exc.code}", reason="rpc_error") from None
        # Written: framed and handed to the TLS connection (settle_loop takes it from here).
        if rows:
            self.passed = max(self.passed, rows[-1].seq)

    # --- delivery without acknowledgement -------------------------------------------------------

    def peer_bytes(self) -> None:
        self._peer_bytes_at = self._loop.time()

    async def settle_loop(self, transport: asyncio.BaseTransport) -> None:
        """Acknowledge, on the link, rows whose bytes the peer's TCP took, and past which the
        connection stayed open and the peer kept talking for SETTLE_S."""
        loop = self._loop
        while True:
            await asyncio.sleep(ACK_POLL_S)
            now = loop.time()
            passed = self.passed
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

    # --- the service (TAK Server's side) --------------------------------------------------------

    def on_call(self, call: fig_h2.Call) -> None:
        """A call the peer made: its handler runs in the connection's TaskGroup."""
        handler = self._handlers.get(call.method)
        if handler is None:
            call.finish("UNIMPLEMENTED", f"method {call.method} is not implemented")
            return
        self._tg.create_task(self._serve_call(handler, call), name=f"figs-{call.method}")

    async def _serve_call(
        self, handler: Callable[[fig_h2.Call], Awaitable[bytes | None]], call: fig_h2.Call
    ) -> None:
        """Run one handler; its answer (a unary response) goes with status OK, a refusal with
        its status. A call the peer reset or a connection that ended just ends the handler."""
        try:
            answer = await handler(call)
            if answer is not None:
                await call.write([answer])
            call.finish()
        except _Refused as refused:
            call.finish(refused.code, refused.message)
        except fig_h2.RpcError as exc:
            log.debug("federation %s: %s ended: %s", self._link.peer.name, call.method, exc)

    async def _request(self, call: fig_h2.Call) -> bytes:
        """The one request message of a unary or server-streaming call."""
        data = await call.read()
        if data is None:
            raise _Refused("INVALID_ARGUMENT", "no request message")
        self._heard()
        return data

    async def _get_identity(self, call: fig_h2.Call) -> bytes:
        # TAK Server leaves getIdentity unimplemented (tak-federation.md 3); ots-federation's
        # client calls it first and compares serverId with its configuration.
        await self._request(call)
        return self._own_identity().SerializeToString()

    async def _named(self, call: fig_h2.Call) -> fig_pb2.Subscription:
        """The call's Subscription; the call is refused without an identity name."""
        request = await self._request(call)
        try:
            sub = fig_pb2.Subscription.FromString(request)
        except Exception:  # protobuf's DecodeError; any undecodable request is refused
            sub = fig_pb2.Subscription()
        if not sub.identity.name:
            log.warning(
                "federation %s: %s without identity.name refused", self._link.peer.name, call.method
            )
            raise _Refused("INVALID_ARGUMENT", "identity.name is required")
        return sub

    async def _held(self, call: fig_h2.Call) -> None:
        """Hold a call open until the connection ends or the peer cancels the call."""
        ended = asyncio.ensure_future(self._end.wait())
        failed = asyncio.ensure_future(call.failed())
        try:
            await asyncio.wait((ended, failed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            failed.cancel()

    async def _groups(self, call: fig_h2.Call) -> None:
        await self._named(call)
        serving = fig_pb2.FederateGroups(
            streamUpdate=fig_pb2.ServerHealth(status=fig_pb2.ServerHealth.SERVING)
        )
        messages = [serving.SerializeToString()]
        names = fed_groups.announced(self._link.peer.groups_out)
        if names:
            # Then our outbound group names, as TAK does with mapping on (section 3).
            messages.append(fig_pb2.FederateGroups(federateGroups=list(names)).SerializeToString())
        await call.write(messages)
        await self._held(call)  # held open, as TAK does

    async def _client_events(self, call: fig_h2.Call) -> None:
        sub = await self._named(call)
        link = self._link
        if self._client_major is not None:
            raise _Refused("ALREADY_EXISTS", "ClientEventStream already open")
        self._client_major = sub.version.major
        self._client_call = call
        await call.write([])  # the response headers: the stream is open
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
            await self._held(call)
        finally:
            self.end(PeerError("the peer closed ClientEventStream", reason="closed"))

    async def _send_loop(self) -> None:
        await self._link.send_loop(self)

    async def _server_events(self, call: fig_h2.Call) -> bytes:
        link = self._link
        try:
            async for data in call:
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

    async def _health(self, call: fig_h2.Call) -> bytes:
        await self._request(call)
        ok = self._client_major is not None and self._client_major >= 1
        status = fig_pb2.ServerHealth.SERVING if ok else fig_pb2.ServerHealth.NOT_CONNECTED
        return fig_pb2.ServerHealth(status=status).SerializeToString()

    async def _client_rol(self, call: fig_h2.Call) -> None:
        """ClientROLStream: our mission ROL (``mission_rol.py``), one message per write, until
        the connection ends or the peer cancels the call; held open without any."""
        await self._named(call)
        await call.write([])  # the response headers: the stream is open
        rol = self._link.rol
        if rol is None:
            await self._held(call)
            return
        ended = asyncio.ensure_future(self._end.wait())
        failed = asyncio.ensure_future(call.failed())
        taken: bytes | None = None
        try:
            while True:
                out = asyncio.ensure_future(rol.next_out())
                try:
                    await asyncio.wait((out, ended, failed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not out.done():
                        out.cancel()  # next_out takes nothing once cancelled while waiting
                        await asyncio.gather(out, return_exceptions=True)
                    if out.done() and not out.cancelled() and out.exception() is None:
                        taken = out.result()
                if ended.done() or failed.done():
                    return
                if taken is not None:
                    await call.write([taken])
                    taken = None
        finally:
            if taken is not None:
                rol.put_back(taken)  # first again on the next connection
            ended.cancel()
            failed.cancel()
            await asyncio.gather(ended, failed, return_exceptions=True)

    async def _client_groups(self, call: fig_h2.Call) -> bytes:
        """ClientFederateGroupsStream: the group names the peer offers (recorded)."""
        async for data in call:
            self._heard()
            try:
                note_remote_groups(self._link, fig_pb2.FederateGroups.FromString(data))
            except Exception:  # protobuf's DecodeError: not a FederateGroups, ignored
                log.info("federation %s: undecodable FederateGroups", self._link.peer.name)
        return self._subscription()

    async def _server_rol(self, call: fig_h2.Call) -> bytes:
        """ServerROLStream: the peer's ROL, each message's bytes executed (decoded, and hashed
        for the audit record) by the link's mission ROL; ignored for a link without one."""
        rol = self._link.rol
        async for data in call:
            self._heard()
            if rol is not None:
                rol.received(data)
            else:
                log.debug("federation %s: ROL message ignored", self._link.peer.name)
        return self._subscription()

    @property
    def _handlers(self) -> dict[str, Callable[[fig_h2.Call], Awaitable[bytes | None]]]:
        return {
            "ServerFederateGroupsStream": self._groups,
            "ClientEventStream": self._client_events,
            "ServerEventStream": self._server_events,
            "HealthCheck": self._health,
            "ClientROLStream": self._client_rol,
            "ServerROLStream": self._server_rol,
            "ClientFederateGroupsStream": self._client_groups,
            "getIdentity": self._get_identity,
        }

    def start_inbound(self) -> None:
        name = self._link.peer.name
        self._tg.create_task(
            apply_inbound(self._link, self._inbound, self.validator), name=f"fig-apply-{name}"
        )


class _Refused(Exception):
    """A handler refuses its call with this gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    connection: fig_h2.Server | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            session = FigServerSession(link, router, tg)
            connection = fig_h2.Server(
                reader,
                writer,
                service=SERVICE,
                on_call=session.on_call,
                tap=tap,
                max_message=MAX_MESSAGE_BYTES,
                heard=session.peer_bytes,
            )
            await connection.start()
            tg.create_task(connection.run(), name=f"figs-h2-{link.peer.name}")
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
        if connection is not None:
            await connection.close()
        link.end_connection()
        await close_writer(writer)
