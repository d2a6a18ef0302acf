"""A small TAK federation v2 server for tests, written from shared/reference/tak-federation.md
(sections 3, 6.2 and 15), playing TAK Server's side when a federate dials it.

It reproduces the checks TAK Server makes of a dialling federate: mutual TLS (a client
certificate from the trusted CA), a non-empty ``identity.name`` on ``ClientEventStream`` and the
other subscriptions (trap 8), ``SERVING`` sent at once on ``ServerFederateGroupsStream`` (trap
11), ``ClientEventStream`` expected before ``ServerEventStream`` (trap 10, recorded by arrival), and
``HealthCheck`` answered ``SERVING`` only once a ``ClientEventStream`` with ``version.major >= 1``
is open (trap 9), else ``NOT_CONNECTED``. Everything received on ``ServerEventStream`` is kept
as raw bytes (``received``), so a test can decode exactly what crossed; ``send`` pushes a
``FederatedEvent`` down the open ``ClientEventStream``. With ``announce`` set, the groups stream
sends those federate group names after ``SERVING`` (TAK with ``federatedGroupMapping`` on,
section 3); names the federate offers on ``ClientFederateGroupsStream`` land in
``client_groups``. ROL (section 11): what the federate writes on ``ServerROLStream`` lands in
``rol_received`` (raw bytes); ``send_rol`` pushes a ``ROL`` down ``ClientROLStream``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from liaison.federation.proto import fig_pb2

SERVICE = "com.atakmap.FederatedChannel"
# Events a test may queue for the peer to send.
MAX_QUEUED = 100


class _Arrivals(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records each call's method name as it arrives (its HEADERS), before its request is read,
    and whether ServerEventStream came after ClientEventStream (trap 10)."""

    def __init__(self, peer: TakPeer) -> None:
        self._peer = peer

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method.rsplit("/", 1)[-1]
        peer = self._peer
        if method == "ServerEventStream":
            peer.order_ok = "ClientEventStream" in peer.opened
        peer.opened.append(method)
        return await continuation(handler_call_details)


class TakPeer:
    def __init__(self) -> None:
        self.received: list[bytes] = []  # serialized FederatedEvents, in arrival order
        self.calls: list[str] = []  # method names in the order their handlers started
        # Method names in the order the calls arrived (their HEADERS), before any handler ran:
        # grpc.aio starts a unary-request handler only once the request message is in, so a
        # handler's start does not tell which call was opened first.
        self.opened: list[str] = []
        self.client_fingerprints: set[str] = set()
        self.health_answers: list[int] = []
        # ClientEventStream arrived before ServerEventStream (by arrival, as ``opened``).
        self.order_ok: bool | None = None
        self.announce: list[str] = []  # group names sent after SERVING on the groups stream
        self.client_groups: list[str] = []  # names the federate offered us
        self._outbound: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_QUEUED)
        self.rol_received: list[bytes] = []  # serialized ROL from the federate
        self._rol_out: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self._client_stream_major = 0
        self.server: grpc.aio.Server | None = None
        self.port = 0

    # --- helpers ------------------------------------------------------------------------------

    def _who(self, context: Any) -> None:
        pem = context.auth_context().get("x509_pem_cert")
        if pem:
            cert = x509.load_pem_x509_certificate(pem[0])
            der = cert.public_bytes(Encoding.DER)
            self.client_fingerprints.add(hashlib.sha256(der).hexdigest())

    def decoded(self) -> list[fig_pb2.FederatedEvent]:
        return [fig_pb2.FederatedEvent.FromString(b) for b in self.received]

    async def send(self, event: fig_pb2.FederatedEvent) -> None:
        await self._outbound.put(event)

    async def send_rol(self, rol: fig_pb2.ROL) -> None:
        await self._rol_out.put(rol.SerializeToString())

    def rol_programs(self) -> list[str]:
        return [fig_pb2.ROL.FromString(b).program for b in self.rol_received]

    # --- the service (TAK's side) ---------------------------------------------------------------

    async def _groups(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self._who(context)
        sub = fig_pb2.Subscription.FromString(request)
        self.calls.append("ServerFederateGroupsStream")
        if not sub.identity.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "identity.name required")
        update = fig_pb2.FederateGroups(
            streamUpdate=fig_pb2.ServerHealth(status=fig_pb2.ServerHealth.SERVING)
        )
        yield update.SerializeToString()
        if self.announce:
            yield fig_pb2.FederateGroups(federateGroups=self.announce).SerializeToString()
        await asyncio.Event().wait()  # held open, as TAK does

    async def _client_events(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        sub = fig_pb2.Subscription.FromString(request)
        self.calls.append("ClientEventStream")
        if not sub.identity.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "identity.name required")
        self._client_stream_major = sub.version.major
        while True:
            event = await self._outbound.get()
            yield event.SerializeToString()

    async def _server_events(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.calls.append("ServerEventStream")
        async for data in requests:
            self.received.append(data)
        return fig_pb2.Subscription(
            identity=fig_pb2.Identity(
                name="tak-peer", type=fig_pb2.Identity.FEDERATION_TAK_SERVER, serverId="tak-peer"
            )
        ).SerializeToString()

    async def _client_groups(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.calls.append("ClientFederateGroupsStream")
        async for data in requests:
            self.client_groups.extend(fig_pb2.FederateGroups.FromString(data).federateGroups)
        return fig_pb2.Subscription(
            identity=fig_pb2.Identity(name="tak-peer", serverId="tak-peer")
        ).SerializeToString()

    async def _health(self, request: bytes, context: Any) -> bytes:
        fig_pb2.ClientHealth.FromString(request)
        ok = "ClientEventStream" in self.calls and self._client_stream_major >= 1
        status = fig_pb2.ServerHealth.SERVING if ok else fig_pb2.ServerHealth.NOT_CONNECTED
        self.health_answers.append(status)
        return fig_pb2.ServerHealth(status=status).SerializeToString()

    async def _rol(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.calls.append("ClientROLStream")
        while True:
            yield await self._rol_out.get()

    async def _server_rol(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.calls.append("ServerROLStream")
        async for data in requests:
            self.rol_received.append(data)
        return fig_pb2.Subscription(
            identity=fig_pb2.Identity(name="tak-peer", serverId="tak-peer")
        ).SerializeToString()

    async def start(
        self, *, cert_chain: bytes, key: bytes, client_ca: bytes, address: str = "127.0.0.1:0"
    ) -> int:
        handlers = {
            "ServerFederateGroupsStream": grpc.unary_stream_rpc_method_handler(self._groups),
            "ClientEventStream": grpc.unary_stream_rpc_method_handler(self._client_events),
            "ServerEventStream": grpc.stream_unary_rpc_method_handler(self._server_events),
            "HealthCheck": grpc.unary_unary_rpc_method_handler(self._health),
            "ClientROLStream": grpc.unary_stream_rpc_method_handler(self._rol),
            "ServerROLStream": grpc.stream_unary_rpc_method_handler(self._server_rol),
            "ClientFederateGroupsStream": grpc.stream_unary_rpc_method_handler(self._client_groups),
        }
        self.server = grpc.aio.server(interceptors=[_Arrivals(self)])
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        creds = grpc.ssl_server_credentials(
            [(key, cert_chain)], root_certificates=client_ca, require_client_auth=True
        )
        self.port = self.server.add_secure_port(address, creds)
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)
