"""``connection.close_writer`` against a TLS peer that never answers the close: the connection is
aborted after CLOSE_TIMEOUT_S and its socket released at once (a cut line left sockets open until
asyncio's own 30 s TLS shutdown timeout, found as unclosed sockets after the namespace tests)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from liaison.federation import connection
from liaison.identity.ca import ensure_server_pki


async def test_a_peer_that_never_answers_the_tls_close_is_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "CLOSE_TIMEOUT_S", 0.3)
    pki = ensure_server_pki(tmp_path / "pki", public_host="127.0.0.1", ca_name="Close CA")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    held: list[asyncio.StreamWriter] = []

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Handshake done; from now on nothing is read, so our close_notify is never answered.
        writer.transport.pause_reading()
        held.append(writer)

    server = await asyncio.start_server(deaf, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        for _ in range(100):  # bounded: the server side has taken the connection
            if held:
                break
            await asyncio.sleep(0.01)
        sock = writer.get_extra_info("socket")
        assert sock is not None and sock.fileno() >= 0
        started = time.monotonic()
        await connection.close_writer(writer)
        assert time.monotonic() - started < 2.0
        assert writer.transport.is_closing()
        tsock = writer.transport.get_extra_info("socket")
        for _ in range(10):  # the abort closes the socket within a few loop turns
            if tsock.fileno() == -1:
                break
            await asyncio.sleep(0.01)
        assert tsock.fileno() == -1
    finally:
        for w in held:
            w.transport.abort()
        server.close()
        await server.wait_closed()
