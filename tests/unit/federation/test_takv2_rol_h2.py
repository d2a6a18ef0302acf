"""The client role's mission ROL calls on fig_h2 (federation/takv2.py): ``ServerROLStream``
carries what the link's mission ROL queues, ``ClientROLStream``'s messages reach it as their
exact bytes (mission_rol.py hashes them for the audit record), and a peer that rejects
``ServerROLStream`` only ends that call (tak-federation.md section 11; ots-federation ignores
ROL). Our Channel against our Server on a real Unix socket pair, as in test_fig_h2.py; the
TAK v2 interop of ROL (grpcio peers, both roles) is tests/integration/federation/
test_takv2_missions.py.
"""

from __future__ import annotations

import asyncio
import collections
import types
from collections.abc import Callable
from typing import cast

from liaison.federation import fig_h2
from liaison.federation.link import PeerLink
from liaison.federation.proto import fig_pb2
from liaison.federation.takv2 import FigClientSession
from tests.unit.federation.test_fig_h2 import _pair

# Seconds any step may take on a loaded machine.
STEP_S = 10.0


class _Rol:
    """The link's RolPort (federation/link.py) as mission_rol.LinkRol behaves: a queue out,
    a list in."""

    def __init__(self, out: list[bytes]) -> None:
        self.out = collections.deque(out)
        self.ready = asyncio.Event()
        self.got: list[bytes] = []

    async def next_out(self) -> bytes:
        while not self.out:
            self.ready.clear()
            await self.ready.wait()
        return self.out.popleft()

    def put_back(self, data: bytes) -> None:
        self.out.appendleft(data)
        self.ready.set()

    def offer(self, data: bytes) -> None:
        self.out.append(data)
        self.ready.set()

    def received(self, data: bytes) -> None:
        self.got.append(data)


def _session(channel: fig_h2.Channel, rol: _Rol) -> FigClientSession:
    link = types.SimpleNamespace(rol=rol, peer=types.SimpleNamespace(name="ukr"))
    return FigClientSession(cast(PeerLink, link), channel)


async def _until(check: Callable[[], bool], changed: asyncio.Event) -> None:
    async with asyncio.timeout(STEP_S):
        while not check():
            changed.clear()
            await changed.wait()


async def test_rol_both_ways_as_bytes() -> None:
    arrived: list[bytes] = []
    changed = asyncio.Event()
    # Not a valid ROL protobuf: the wire hands bytes on untouched (mission_rol decodes them).
    theirs = [fig_pb2.ROL(program="create mission\n{};").SerializeToString(), b"\xff\x00raw"]

    async def server_rol(call: fig_h2.Call) -> None:
        async for data in call:
            arrived.append(data)
            changed.set()
        await call.write([fig_pb2.Subscription().SerializeToString()])
        call.finish()

    async def client_rol(call: fig_h2.Call) -> None:
        await call.read()  # the Subscription
        await call.write(theirs)
        call.finish()

    async with _pair({"ServerROLStream": server_rol, "ClientROLStream": client_rol}) as (ch, _w):
        rol = _Rol([b"ours-1", b"ours-2"])
        session = _session(ch, rol)
        sender = asyncio.create_task(session._send_rol())
        try:
            await _until(lambda: len(arrived) == 2, changed)
            rol.offer(b"ours-3")
            await _until(lambda: len(arrived) == 3, changed)
            assert arrived == [b"ours-1", b"ours-2", b"ours-3"]
            assert not rol.out
            call = ch.open("ClientROLStream")
            await call.write([fig_pb2.Subscription().SerializeToString()], end=True)
            async with asyncio.timeout(STEP_S):
                await session._read_rol(call)  # returns at the peer's OK end
            assert rol.got == theirs
            assert not sender.done()  # ServerROLStream stays open while there is no ROL
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        assert not rol.out  # nothing taken and lost on cancel


async def test_rejected_server_rol_ends_only_that_call() -> None:
    async def health(call: fig_h2.Call) -> None:
        await call.read()
        serving = fig_pb2.ServerHealth(status=fig_pb2.ServerHealth.SERVING)
        await call.write([serving.SerializeToString()])
        call.finish()

    # No ServerROLStream handler: the Server answers UNIMPLEMENTED, as a peer without ROL does.
    async with _pair({"HealthCheck": health}) as (ch, _w):
        rol = _Rol([])
        session = _session(ch, rol)
        async with asyncio.timeout(STEP_S):
            await session._send_rol()  # returns, raises nothing
        rol.offer(b"later")
        assert list(rol.out) == [b"later"]  # kept for the next connection, not taken
        request = fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING).SerializeToString()
        answer = await ch.unary("HealthCheck", request, deadline_s=STEP_S)
        assert fig_pb2.ServerHealth.FromString(answer).status == fig_pb2.ServerHealth.SERVING
