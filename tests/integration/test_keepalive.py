"""Listen-only clients stay; dead peers are found by TCP keepalive; quiet-drop only on request."""

from __future__ import annotations

import asyncio
import socket

from liaison.app import Server, now_ms
from liaison.session import StreamSession
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import (
    WAIT_S,
    Client,
    clients,
    connect_tcp,
    connect_tls,
    sa_event,
)

# The idle timeout every stream client had before: a read-only client was dropped after it.
OLD_IDLE_TIMEOUT_S = 300


def rejected(server: Server, reason: str) -> float:
    return server.metrics.snapshot().get(f'liaison_input_rejected_total{{reason="{reason}"}}', 0)


async def session_of(server: Server, client: Client) -> StreamSession:
    """The server's session for ``client``, found by the client's local address."""
    host, port = client.writer.get_extra_info("sockname")[:2]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        for session in server.sessions:
            if session.peer == f"{host}:{port}" and session.phase.value == "open":
                return session
        await asyncio.sleep(0.05)
    raise AssertionError(f"no open session for {client.name}")


def server_socket(session: StreamSession) -> socket.socket:
    transport = session._transport
    assert transport is not None
    sock: socket.socket = transport.get_extra_info("socket")
    return sock


def keepalive_options(sock: socket.socket) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


async def test_accepted_sockets_have_the_configured_keepalive(start_server: ServerFactory) -> None:
    settings = {"keepalive_idle_s": 7, "keepalive_interval_s": 3, "keepalive_count": 4}
    async with start_server(**settings) as server:
        assert server.tcp is not None and server.tls is not None
        cert = issue_cert(server, "reader")
        tcp = await connect_tcp(server.tcp.port, "tcp")
        tls = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="tls"
        )
        async with clients(tcp, tls):
            for client in (tcp, tls):
                sock = server_socket(await session_of(server, client))
                keepalive, idle, interval, count = keepalive_options(sock)
                assert keepalive != 0, client.name
                assert (idle, interval, count) == (7, 3, 4), client.name


async def test_keepalive_is_on_by_default(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        tcp = await connect_tcp(server.tcp.port, "tcp")
        async with clients(tcp):
            sock = server_socket(await session_of(server, tcp))
            keepalive, idle, interval, count = keepalive_options(sock)
            assert keepalive != 0
            assert (idle, interval, count) == (60, 10, 6)


async def test_keepalive_can_be_turned_off(start_server: ServerFactory) -> None:
    async with start_server(keepalive_idle_s=0) as server:
        assert server.tcp is not None
        tcp = await connect_tcp(server.tcp.port, "tcp")
        async with clients(tcp):
            sock = server_socket(await session_of(server, tcp))
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


async def test_with_the_default_config_a_read_only_client_outlives_the_old_idle_timeout(
    start_server: ServerFactory,
) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        reader = await connect_tcp(server.tcp.port, "read-only")  # never sends a byte
        async with clients(reader):
            session = await session_of(server, reader)
            # Check every session as if the old 300 s idle timeout had long passed: the timeout
            # sweep is the only thing that could drop a live, quiet client.
            later = now_ms() + (OLD_IDLE_TIMEOUT_S + 100) * 1000
            for s in server.sessions:
                s.check_timeouts(later)
            assert session.close_reason is None
            assert rejected(server, "idle_timeout") == 0
            sender = await connect_tcp(server.tcp.port, "sender")
            async with clients(sender):
                await sender.send(sa_event("uid-for-reader", "SENDER"))
                await reader.wait_for(b"uid-for-reader")


async def test_a_read_only_client_answers_keepalive_and_stays(start_server: ServerFactory) -> None:
    # A small keepalive, so probes really run (and are answered by the client's kernel) while
    # several timeout sweeps pass in real time.
    settings = {"keepalive_idle_s": 1, "keepalive_interval_s": 1, "keepalive_count": 2}
    async with start_server(**settings) as server:
        assert server.tcp is not None
        reader = await connect_tcp(server.tcp.port, "read-only")  # never sends a byte
        async with clients(reader):
            assert not await reader.closed_by_server(3.5)
            sender = await connect_tcp(server.tcp.port, "sender")
            async with clients(sender):
                await sender.send(sa_event("uid-for-reader", "SENDER"))
                await reader.wait_for(b"uid-for-reader")


async def test_the_opt_in_idle_timeout_drops_a_quiet_client(start_server: ServerFactory) -> None:
    async with start_server(idle_timeout_s=1.0) as server:
        assert server.tcp is not None
        reader = await connect_tcp(server.tcp.port, "read-only")
        async with clients(reader):
            assert await reader.closed_by_server(5.0)
            assert rejected(server, "idle_timeout") == 1


async def test_a_dripping_client_is_dropped_while_a_quiet_one_stays(
    start_server: ServerFactory,
) -> None:
    async with start_server(frame_timeout_s=1.0) as server:
        assert server.tcp is not None
        quiet = await connect_tcp(server.tcp.port, "quiet")
        drip = await connect_tcp(server.tcp.port, "drip")
        async with clients(quiet, drip):
            await drip.send(sa_event("uid-drip", "DRIP")[:40])  # a frame begun, never finished
            assert await drip.closed_by_server(5.0)
            assert rejected(server, "frame_timeout") == 1
            assert not await quiet.closed_by_server(0.5)
            sender = await connect_tcp(server.tcp.port, "sender")
            async with clients(sender):
                await sender.send(sa_event("uid-after-drip", "SENDER"))
                await quiet.wait_for(b"uid-after-drip")
