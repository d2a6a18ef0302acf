"""Slowloris defence on the HTTPS listeners (issue 9.13): header and idle timeouts and the bound on
unauthenticated connections per address, tested with raw TLS sockets."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

from liaison.app import Server
from liaison.identity.tls import client_ssl_context
from tests.integration.conftest import ServerFactory, issue_cert

HEADER_S = 1.0
IDLE_S = 2.0
# Slack for a loaded machine on top of a timeout before the close must have happened.
SLACK_S = 1.0

PARTIAL = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow"
FULL = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _ctx(server: Server, client: bool) -> ssl.SSLContext:
    assert server.server_pki is not None
    if not client:
        return client_ssl_context(server.server_pki.ca_cert)
    c = issue_cert(server, "raw", "RED")
    return client_ssl_context(c.ca, c.cert, c.key)


@contextlib.asynccontextmanager
async def _raw(
    port: int, ctx: ssl.SSLContext
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _closed_after(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (reading and discarding what it sends)."""
    start = time.monotonic()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(1000):  # bounded
        try:
            data = await asyncio.wait_for(reader.read(65536), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise AssertionError(f"still open after {within}s") from None
        except (ConnectionError, ssl.SSLError, OSError):
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    raise AssertionError("too much data")


def _closed_count(server: Server, reason: str) -> int:
    key = f'liaison_http_connections_closed_total{{reason="{reason}"}}'
    return int(server.metrics.snapshot().get(key, 0))


async def test_partial_headers_are_cut_at_the_header_timeout(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(http_header_timeout_s=HEADER_S, http_idle_timeout_s=IDLE_S) as server:
        assert server.enroll is not None and server.https is not None
        for port, client_cert in ((server.enroll.port, False), (server.https.port, True)):
            async with _raw(port, _ctx(server, client_cert)) as (reader, writer):
                writer.write(PARTIAL)
                await writer.drain()
                took = await _closed_after(reader, HEADER_S + SLACK_S)
                assert took >= HEADER_S * 0.9
        # Dripping one byte at a time does not reset the deadline.
        async with _raw(server.enroll.port, _ctx(server, False)) as (reader, writer):
            start = time.monotonic()
            for byte in PARTIAL[:40]:  # bounded: 40 bytes, 0.1 s apart (longer than HEADER_S)
                if reader.at_eof():
                    break
                writer.write(bytes((byte,)))
                with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                    await writer.drain()
                await asyncio.sleep(0.1)
            await _closed_after(reader, HEADER_S + SLACK_S)
            assert time.monotonic() - start < HEADER_S + SLACK_S
        assert _closed_count(server, "header_timeout") == 3


async def test_idle_connections_are_closed_and_requests_still_work(
    start_server: ServerFactory,
) -> None:
    async with start_server(http_header_timeout_s=HEADER_S, http_idle_timeout_s=IDLE_S) as server:
        assert server.enroll is not None
        # Connects and says nothing.
        async with _raw(server.enroll.port, _ctx(server, False)) as (reader, _writer):
            took = await _closed_after(reader, IDLE_S + SLACK_S)
            assert took >= IDLE_S * 0.9
        # A whole request is answered; then the keep-alive connection is closed when idle.
        async with _raw(server.enroll.port, _ctx(server, False)) as (reader, writer):
            writer.write(FULL)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5.0)
            assert status.startswith(b"HTTP/1.1 401")  # answered (no credentials), not cut
            await _closed_after(reader, IDLE_S + SLACK_S)
        assert _closed_count(server, "idle_timeout") == 2
        assert _closed_count(server, "header_timeout") == 0


async def test_unauthenticated_connections_per_address_are_bounded(
    start_server: ServerFactory,
) -> None:
    limit = 3
    async with start_server(http_max_unauthenticated=limit, http_idle_timeout_s=30.0) as server:
        assert server.enroll is not None
        port = server.enroll.port
        ctx = _ctx(server, False)
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(_raw(port, ctx)) for _ in range(limit)]
            # One more is closed at once...
            async with _raw(port, ctx) as (reader, _writer):
                assert await _closed_after(reader, 2.0) < 2.0
            assert _closed_count(server, "unauthenticated_limit") == 1
            # ...the ones already open still work...
            reader, writer = held[0]
            writer.write(FULL)
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 5.0)).startswith(b"HTTP/1.1")
        # ...and once they are gone, new connections are accepted again.
        async with _raw(port, ctx) as (reader, writer):
            writer.write(FULL)
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 5.0)).startswith(b"HTTP/1.1")
