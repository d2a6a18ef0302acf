"""A small TAK federation v2 *client* for tests, written from shared/reference/tak-federation.md
(sections 3 and 6.2): it plays a TAK Server dialling a federate (Liaison in its server role).

One secure channel (leaf + CA chain as client certificate), then TAK's call order:
``ServerFederateGroupsStream`` until ``streamUpdate = SERVING``, ``ClientEventStream`` (what the
server sends us, kept as raw bytes in ``received``), ``ServerEventStream`` (``send`` writes to it),
``HealthCheck{SERVING}`` every ``health_interval`` s (answers in ``health_answers``), and
``ClientROLStream`` after the first SERVING answer (its ROL kept in ``rol_received``), and
``ServerROLStream`` opened at start (``send_rol`` writes to it). ``health = False`` stops the
health checks (to test that the server drops a silent peer). Group names the server sends on
the groups stream after SERVING land in ``groups_received``; with ``announce`` set, those names
are offered once on ``ClientFederateGroupsStream`` (TAK with ``federatedGroupMapping`` on).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from liaison.federation.proto import fig_pb2

SERVICE = "/com.atakmap.FederatedChannel/"
# Events a test may queue for sending.
MAX_QUEUED = 100
# Seconds for the server's SERVING on the groups stream.
HANDSHAKE_S = 10.0


def _ser(m: object) -> bytes:
    return m if isinstance(m, bytes) else m.SerializeToString()  # type: ignore[attr-defined]


class TakClientPeer:
    def __init__(self, name: str = "tak-client", health_interval: float = 1.0) -> None:
        self.name = name
        self.health_interval = health_interval
        self.health = True
        self.received: list[bytes] = []
        self.health_answers: list[int] = []
        self.calls: list[str] = []
        self.error: str | None = None  # how the session ended, when it did
        self.groups_received: list[str] = []
        self.announce: list[str] = []
        self._queue: asyncio.Queue[fig_pb2.FederatedEvent] = asyncio.Queue(MAX_QUEUED)
        self.rol_received: list[bytes] = []  # serialized ROL read from ClientROLStream
        self._rol_out: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    def decoded(self) -> list[fig_pb2.FederatedEvent]:
        return [fig_pb2.FederatedEvent.FromString(b) for b in self.received]

    async def send(self, event: fig_pb2.FederatedEvent) -> None:
        await self._queue.put(event)

    async def send_rol(self, rol: fig_pb2.ROL) -> None:
        await self._rol_out.put(rol.SerializeToString())

    def rol_programs(self) -> list[str]:
        return [fig_pb2.ROL.FromString(b).program for b in self.rol_received]

    async def _rol_outgoing(self) -> AsyncIterator[bytes]:
        while True:
            yield await self._rol_out.get()

    def start(self, target: str, *, chain: bytes, key: bytes, ca: bytes, host: str) -> None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )
        self._channel = grpc.aio.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", host)]
        )
        self._task = asyncio.create_task(self._run())

    async def _outgoing(self) -> AsyncIterator[bytes]:
        while True:
            yield (await self._queue.get()).SerializeToString()

    async def _run(self) -> None:
        ch = self._channel
        assert ch is not None
        sub = fig_pb2.Subscription(
            identity=fig_pb2.Identity(
                name=self.name,
                uid=uuid.uuid4().hex,
                type=fig_pb2.Identity.FEDERATION_TAK_CLIENT,
                serverId=self.name,
            ),
            version=fig_pb2.TakServerVersion(major=5, minor=4),
        )
        try:
            groups = ch.unary_stream(
                SERVICE + "ServerFederateGroupsStream",
                request_serializer=_ser,
                response_deserializer=fig_pb2.FederateGroups.FromString,
            )(sub)
            self.calls.append("ServerFederateGroupsStream")
            stream = groups.__aiter__()
            async with asyncio.timeout(HANDSHAKE_S):
                while True:
                    update = await stream.__anext__()
                    if update.streamUpdate.status == fig_pb2.ServerHealth.SERVING:
                        break
            inbound = ch.unary_stream(SERVICE + "ClientEventStream", request_serializer=_ser)(sub)
            self.calls.append("ClientEventStream")
            out = ch.stream_unary(
                SERVICE + "ServerEventStream",
                request_serializer=_ser,
                response_deserializer=fig_pb2.Subscription.FromString,
            )(self._outgoing())
            self.calls.append("ServerEventStream")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_groups(stream))
                if self.announce:
                    tg.create_task(self._announce())
                tg.create_task(self._read(inbound))
                tg.create_task(self._health(sub, tg))
                tg.create_task(self._await(out))
                # ServerROLStream, opened at start as TAK's client does (reference section 3).
                rol_out = ch.stream_unary(SERVICE + "ServerROLStream", request_serializer=_ser)(
                    self._rol_outgoing()
                )
                self.calls.append("ServerROLStream")
                tg.create_task(self._await(rol_out))
        except grpc.aio.AioRpcError as exc:
            self.error = str(exc.code())
        except TimeoutError:
            self.error = "no SERVING on the groups stream"
        except BaseExceptionGroup as group:
            self.error = "; ".join(
                str(e.code()) if isinstance(e, grpc.aio.AioRpcError) else repr(e)
                for e in group.exceptions
            )

    async def _read_groups(self, stream: AsyncIterator[fig_pb2.FederateGroups]) -> None:
        async for update in stream:
            self.groups_received.extend(update.federateGroups)

    async def _announce(self) -> None:
        assert self._channel is not None

        async def one() -> AsyncIterator[bytes]:
            yield fig_pb2.FederateGroups(federateGroups=self.announce).SerializeToString()

        await self._channel.stream_unary(
            SERVICE + "ClientFederateGroupsStream", request_serializer=_ser
        )(one())

    async def _await(self, call: object) -> None:
        await call  # type: ignore[misc]

    async def _read(self, call: AsyncIterator[bytes]) -> None:
        async for data in call:
            self.received.append(data)

    async def _read_rol(self, call: AsyncIterator[bytes]) -> None:
        async for data in call:
            self.rol_received.append(data)

    async def _health(self, sub: fig_pb2.Subscription, tg: asyncio.TaskGroup) -> None:
        assert self._channel is not None
        check = self._channel.unary_unary(
            SERVICE + "HealthCheck",
            request_serializer=_ser,
            response_deserializer=fig_pb2.ServerHealth.FromString,
        )
        rol_open = False
        while True:
            await asyncio.sleep(self.health_interval)
            if not self.health:
                continue
            answer = await check(
                fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING), timeout=5
            )
            self.health_answers.append(answer.status)
            if answer.status == fig_pb2.ServerHealth.SERVING and not rol_open:
                rol_open = True
                self._rol = self._channel.unary_stream(
                    SERVICE + "ClientROLStream", request_serializer=_ser
                )(sub)
                self.calls.append("ClientROLStream")
                tg.create_task(self._read_rol(self._rol))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()
