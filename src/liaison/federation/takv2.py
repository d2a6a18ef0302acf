"""The TAK federation v2 wire ("FIG", gRPC over mutual TLS), client role: Liaison dials a TAK
Server (or any v2 federate) and drives the peer's :class:`~liaison.federation.link.PeerLink`.

TLS is Liaison's own, not gRPC's: the supervisor dials with ``federation/tls.py`` (our
certificate, trusting only the peer's CA, ALPN ``h2``) and pins the peer's leaf certificate by
its SHA-256 before a byte of gRPC is sent. The gRPC calls are then made on that one TLS
connection by ``fig_h2`` (gRPC over HTTP/2 with the ``h2`` state machine, no grpcio), so every
call of the session travels on it, as TAK Server requires (tak-federation.md 2.3), and the tap
sees exactly the HTTP/2 bytes that cross. Each batch of rows the link hands over is written as
one run of DATA frames carrying all their messages (gRPC allows any number of Length-Prefixed-
Messages in a DATA frame).

Call order (tak-federation.md 6.2): ``ServerFederateGroupsStream`` (wait for
``streamUpdate = SERVING``, or UNIMPLEMENTED), ``ClientEventStream`` (inbound events) *before*
``ServerEventStream`` (outbound events), ``HealthCheck{SERVING}`` every 3 s with a deadline,
``ServerROLStream`` (our mission ROL) once the event streams are open, ``ClientROLStream`` (the
peer's ROL) after the first SERVING answer; ROL both ways is the link's mission ROL
(``mission_rol.py``); for a link without one, ServerROLStream is not opened and the peer's ROL
is drained and ignored.
``getIdentity`` and ``SendOneEvent`` are never used.

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
groups; ROL goes to ``mission_rol.py`` as the message's bytes. Both roles (and any TAK wire)
share this: ``fig_link.py``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from liaison.errors import PeerError
from liaison.federation import fed_groups, fig_h2
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
from liaison.federation.guard import content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2

if TYPE_CHECKING:
    from liaison.router import Router

log = logging.getLogger(__name__)

SERVICE = "com.atakmap.FederatedChannel"

# Seconds between our HealthCheck calls; TAK Server's own client uses 3 s and kills a stream
# that had no SERVING health for 15 s (tak-federation.md 6.2 step 5).
HEALTH_INTERVAL_S = 3.0
# Seconds a HealthCheck may take (TAK never completes one it cannot answer: trap 9).
HEALTH_TIMEOUT_S = 5.0
# Seconds to wait for the groups stream's SERVING before opening the event streams.
HANDSHAKE_TIMEOUT_S = 15.0
# Largest gRPC message accepted or sent (grpcio's 4 MiB default is too small for ROL with
# files, trap 22; ROL is bounded again by mission_rol's MAX_ROL_BYTES, events by cot_xml's).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Received events waiting to be validated; past this the reader stops reading (HTTP/2 flow
# control then holds the peer back).
MAX_INBOUND_QUEUE = 1000
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


class FigClientSession:
    """One v2 connection of a link, Liaison dialling: the WireSession of this wire."""

    def __init__(
        self,
        link: PeerLink,
        channel: fig_h2.Channel,
        router: Router | None = None,
    ) -> None:
        self._link = link
        self._channel = channel
        self._router = router
        self._out: fig_h2.Call | None = None  # the ServerEventStream call
        self._book = ContactBook()
        # The highest sequence number written (or refused) on this connection, and the wish for
        # a HealthCheck that confirms it (see _check).
        self._written = 0
        self._confirm = asyncio.Event()

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        link = self._link
        assert self._out is not None
        # Every row's messages (each re-checked from its serialized bytes; a refused row has
        # none), then one write of them all: the Length-Prefixed-Messages back to back in as
        # few DATA frames as the peer's window and frame size allow.
        messages: list[bytes] = []
        for row in rows:
            messages += encode_rows(link, row, self._book)
        try:
            await self._out.write(messages)
        except fig_h2.RpcError as exc:
            # The peer ended ServerEventStream (or the connection failed): this connection
            # ends and the link redials, instead of the error ending the whole federation.
            raise PeerError(f"event stream: {exc.code}", reason="rpc_error") from None
        if rows:
            self._written = rows[-1].seq
        # No acknowledgement in TAK federation: the rows leave the outbox once a HealthCheck
        # made after these writes is answered SERVING (_confirmer).
        self._confirm.set()

    # --- the conversation -----------------------------------------------------------------------

    async def run(self, tg: asyncio.TaskGroup) -> None:
        link = self._link
        sub = _identity(link).SerializeToString()
        channel = self._channel
        groups = channel.open("ServerFederateGroupsStream")
        await groups.write([sub], end=True)
        await self._await_serving(groups)
        # ClientEventStream must be open before ServerEventStream (tak-federation.md 6.2 steps
        # 3 and 4, trap 10): TAK registers the stream when its handler has the subscription,
        # and contacts it sends before that are lost for the session. Its HEADERS and
        # subscription go first on the one HTTP/2 connection; the PING round trip then waits
        # until the peer's transport has read them all before ServerEventStream is opened.
        inbound = channel.open("ClientEventStream")
        await inbound.write([sub], end=True)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await channel.ping()
        except TimeoutError:
            raise PeerError("no PING acknowledgement", reason="handshake_timeout") from None
        except fig_h2.RpcError as exc:
            raise PeerError(f"event stream: {exc.code}", reason="rpc_error") from None
        self._out = channel.open("ServerEventStream")
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
            tg.create_task(self._announce_groups(names), name=f"fig-announce-{name}")
        tg.create_task(self._confirmer(), name=f"fig-confirm-{name}")
        tg.create_task(self._send_rol(), name=f"fig-rol-out-{name}")
        await link.send_loop(self)

    async def _read_groups(self, call: fig_h2.Call) -> None:
        """Record the group names the peer announces (tak-federation.md 6.2 step 2)."""
        try:
            async for data in call:
                try:
                    msg = fig_pb2.FederateGroups.FromString(data)
                except Exception:  # protobuf's DecodeError: not a FederateGroups, ignored
                    log.info("federation %s: undecodable FederateGroups", self._link.peer.name)
                    continue
                note_remote_groups(self._link, msg)
        except fig_h2.RpcError as exc:
            log.info("federation %s: groups stream ended: %s", self._link.peer.name, exc.code)

    async def _announce_groups(self, names: Sequence[str]) -> None:
        """Offer our outbound group names once on ClientFederateGroupsStream (section 6.2
        step 7); a peer that does not implement it is only logged."""
        call = self._channel.open("ClientFederateGroupsStream")
        try:
            await call.write(
                [fig_pb2.FederateGroups(federateGroups=list(names)).SerializeToString()], end=True
            )
            async for _answer in call:
                pass
        except fig_h2.RpcError as exc:
            log.info("federation %s: our groups not announced: %s", self._link.peer.name, exc.code)

    async def _await_serving(self, groups: fig_h2.Call) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                async for data in groups:
                    try:
                        update = fig_pb2.FederateGroups.FromString(data)
                    except Exception:  # protobuf's DecodeError
                        raise PeerError(
                            "undecodable FederateGroups", reason="protocol_error"
                        ) from None
                    if update.streamUpdate.status == fig_pb2.ServerHealth.SERVING:
                        return
        except TimeoutError:
            raise PeerError("no SERVING on the groups stream", reason="handshake_timeout") from None
        except fig_h2.RpcError as exc:
            if exc.code == "UNIMPLEMENTED":
                return  # allowed by TAK's client (tak-federation.md 6.1 step 2)
            raise PeerError(f"groups stream: {exc.code}", reason="rpc_error") from None
        raise PeerError("groups stream ended before SERVING", reason="rpc_error")

    async def _check(self) -> None:
        """One HealthCheck; SERVING also confirms every row written before it was made.

        The call's HEADERS are written on the same connection after those rows' bytes (a write
        is framed and handed to the TLS connection before it returns, and HTTP/2 frames are read
        in order), so a SERVING answer means the peer's HTTP/2 layer read them: the only proof of
        receipt TAK federation offers. Raises PeerError."""
        upto = self._written
        request = fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING).SerializeToString()
        try:
            data = await self._channel.unary("HealthCheck", request, deadline_s=HEALTH_TIMEOUT_S)
            answer = fig_pb2.ServerHealth.FromString(data)
        except fig_h2.RpcError as exc:
            raise PeerError(f"health check: {exc.code}", reason="health") from None
        except Exception:  # protobuf's DecodeError
            raise PeerError("health check: undecodable answer", reason="health") from None
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

    async def _health(self, sub: bytes, tg: asyncio.TaskGroup) -> None:
        rol_open = False
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self._check()
            if not rol_open:
                # After the first SERVING, as TAK's client does (tak-federation.md section 3).
                rol_open = True
                rol = self._channel.open("ClientROLStream")
                await rol.write([sub], end=True)
                tg.create_task(self._read_rol(rol), name=f"fig-rol-{self._link.peer.name}")

    async def _read_rol(self, call: fig_h2.Call) -> None:
        """The peer's ROL (ClientROLStream): each message's bytes executed by the link's mission
        ROL (``mission_rol.py`` decodes them, and hashes them for the audit record), or ignored
        for a link without one. Its end is not fatal."""
        rol = self._link.rol
        try:
            async for data in call:
                if rol is not None:
                    rol.received(data)
                else:
                    log.debug("federation %s: ROL message ignored", self._link.peer.name)
        except fig_h2.RpcError as exc:
            log.info("federation %s: ROL stream ended: %s", self._link.peer.name, exc.code)

    async def _send_rol(self) -> None:
        """Our mission ROL on ServerROLStream (opened at start by TAK's client, section 3), one
        message per write. A peer that does not implement it (ots-federation ignores ROL) only
        ends this call: the link carries on without ROL, and a message taken but not written
        waits for the next connection."""
        rol = self._link.rol
        if rol is None:
            return
        name = self._link.peer.name
        call = self._channel.open("ServerROLStream")
        # The call's end as the peer gives it (its Subscription answer then OK, or an error
        # status such as UNIMPLEMENTED), watched while no ROL waits to be written.
        ended = asyncio.ensure_future(self._rol_answer(call))
        taken: bytes | None = None
        try:
            while True:
                out = asyncio.ensure_future(rol.next_out())
                try:
                    await asyncio.wait((out, ended), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not out.done():
                        out.cancel()  # next_out takes nothing once cancelled while waiting
                        await asyncio.gather(out, return_exceptions=True)
                    if out.done() and not out.cancelled() and out.exception() is None:
                        taken = out.result()
                if ended.done():
                    ended.result()  # raises the peer's RpcError
                    log.info("federation %s: ServerROLStream ended by the peer", name)
                    return
                if taken is not None:
                    await call.write([taken])
                    taken = None
        except fig_h2.RpcError as exc:
            log.info("federation %s: ServerROLStream ended: %s", name, exc.code)
        finally:
            if taken is not None:
                rol.put_back(taken)
            if not ended.done():
                ended.cancel()
            await asyncio.gather(ended, return_exceptions=True)

    @staticmethod
    async def _rol_answer(call: fig_h2.Call) -> None:
        """Read ServerROLStream's answer until the call ends; raises the peer's RpcError."""
        while await call.read() is not None:
            pass

    async def _read(self, call: fig_h2.Call, queue: asyncio.Queue[fig_pb2.FederatedEvent]) -> None:
        try:
            async for data in call:
                try:
                    msg = fig_pb2.FederatedEvent.FromString(data)
                except Exception:  # protobuf's DecodeError
                    self._link.wire_rejected(("undecodable",), content_sha256(data))
                    continue
                await queue.put(msg)
        except fig_h2.RpcError as exc:
            raise PeerError(f"event stream: {exc.code}", reason="rpc_error") from None
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
    channel: fig_h2.Channel | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            channel = fig_h2.Channel(
                reader,
                writer,
                authority=authority,
                service=SERVICE,
                tap=tap,
                max_message=MAX_MESSAGE_BYTES,
                user_agent=f"liaison/{VERSION_MAJOR}",
            )
            await channel.start()
            tg.create_task(channel.run(), name=f"fig-h2-{link.peer.name}")
            await FigClientSession(link, channel, router).run(tg)
            raise ConnectionEnded
    except BaseExceptionGroup as group:
        failure = first_failure(group)
        if failure is not None:
            raise failure from None
    finally:
        if channel is not None:
            await channel.close()
        link.end_connection()
        await close_writer(writer)
