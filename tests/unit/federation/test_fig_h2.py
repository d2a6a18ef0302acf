"""gRPC over HTTP/2 with h2 (federation/fig_h2.py): our client Channel against our Server on a
real Unix socket pair, and the Length-Prefixed-Message framing (grpc/doc/PROTOCOL-HTTP2.md).

Interop with grpcio and with ots-federation is covered by tests/integration/federation
(test_takv2*.py: the TAK v2 test peers are grpcio, ots-federation is its own grpcio federate).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from liaison.federation import fig_h2
from liaison.federation.connection import ConnectionEnded

SERVICE = "test.Echo"


def test_frame_messages_prefix() -> None:
    framed = fig_h2.frame_messages([b"ab", b"", b"xyz"])
    assert (
        framed == b"\x00\x00\x00\x00\x02ab" + b"\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00\x03xyz"
    )


def test_status_from_trailers() -> None:
    assert fig_h2._status_from({"grpc-status": "0"}) is None
    err = fig_h2._status_from({"grpc-status": "12", "grpc-message": "no%20such%25method"})
    assert err is not None and err.code == "UNIMPLEMENTED" and err.message == "no such%method"
    assert fig_h2._status_from({"grpc-status": "x"}).code == "UNKNOWN"  # type: ignore[union-attr]
    assert fig_h2._status_from({"grpc-status": "99"}).code == "UNKNOWN"  # type: ignore[union-attr]


Handler = Callable[[fig_h2.Call], Awaitable[None]]


@contextlib.asynccontextmanager
async def _pair(handlers: dict[str, Handler]) -> AsyncIterator[tuple[fig_h2.Channel, list[bytes]]]:
    """A Channel connected to a Server answering ``handlers``; yields the channel and the
    plaintext the client wrote (its tap)."""
    a, b = socket.socketpair()
    cr, cw = await asyncio.open_connection(sock=a)
    sr, sw = await asyncio.open_connection(sock=b)
    written: list[bytes] = []
    try:
        async with asyncio.TaskGroup() as tg:

            def on_call(call: fig_h2.Call) -> None:
                handler = handlers.get(call.method)
                if handler is None:
                    call.finish("UNIMPLEMENTED", f"{call.method} unknown")
                    return
                tg.create_task(_quiet(handler, call))

            server = fig_h2.Server(sr, sw, service=SERVICE, on_call=on_call)
            channel = fig_h2.Channel(
                cr,
                cw,
                authority="test",
                service=SERVICE,
                tap=lambda d, data: written.append(data) if d == "out" else None,
                max_message=1024 * 1024,
            )
            await server.start()
            await channel.start()
            tasks = [tg.create_task(server.run()), tg.create_task(channel.run())]
            try:
                yield channel, written
            finally:
                for t in tasks:
                    t.cancel()
    except BaseExceptionGroup as group:
        if not all(isinstance(e, ConnectionEnded) for e in group.exceptions):
            raise
    finally:
        for w in (cw, sw):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def _quiet(handler: Handler, call: fig_h2.Call) -> None:
    """Run a handler; its call failing (reset by the client, connection gone) just ends it."""
    with contextlib.suppress(fig_h2.RpcError):
        await handler(call)


async def _echo(call: fig_h2.Call) -> None:
    """Bidirectional echo: every batch read is written back in one write."""
    batch: list[bytes] = []
    while True:
        data = await call.read()
        if data is None:
            break
        batch.append(data)
        if len(batch) >= 100:
            await call.write(batch)
            batch = []
    await call.write(batch)
    call.finish()


async def _refuse(call: fig_h2.Call) -> None:
    await call.read()
    call.finish("INVALID_ARGUMENT", "identity.name is required")


async def _silent(call: fig_h2.Call) -> None:
    """Never answers: ends once the client resets the call (or the connection ends)."""
    await call.read()
    async with asyncio.timeout(30):
        await call.failed()


async def _big(call: fig_h2.Call) -> None:
    await call.read()
    await call.write([b"x" * (2 * 1024 * 1024)])
    call.finish()


HANDLERS: dict[str, Handler] = {"Echo": _echo, "Refuse": _refuse, "Silent": _silent, "Big": _big}


async def test_many_messages_one_write_cross_frames_and_windows() -> None:
    # 3,000 messages of 1-3000 bytes: about 4.5 MB, beyond the 1 MiB stream window and the
    # 16 KiB frame size, so messages cross DATA frames and the writer waits for WINDOW_UPDATE.
    messages = [bytes([i % 256]) * (1 + (i * 7) % 3000) for i in range(3000)]
    async with _pair(HANDLERS) as (channel, written):
        call = channel.open("Echo")
        async with asyncio.timeout(60):
            sender = asyncio.ensure_future(call.write(messages, end=True))
            got = [m async for m in call]
            await sender
    assert got == messages
    # HEADERS and the preface aside, the DATA went in frames of up to 16 KiB, not per message.
    assert len(written) < len(messages) / 5


async def test_unary_refusal_unknown_method_and_deadline() -> None:
    async with _pair(HANDLERS) as (channel, _written):
        with pytest.raises(fig_h2.RpcError) as refused:
            await channel.unary("Refuse", b"x", deadline_s=10)
        assert refused.value.code == "INVALID_ARGUMENT"
        assert refused.value.message == "identity.name is required"
        with pytest.raises(fig_h2.RpcError) as unknown:
            await channel.unary("Nothing", b"x", deadline_s=10)
        assert unknown.value.code == "UNIMPLEMENTED"
        with pytest.raises(fig_h2.RpcError) as late:
            await channel.unary("Silent", b"x", deadline_s=0.3)
        assert late.value.code == "DEADLINE_EXCEEDED"
        # The connection still serves calls after a reset stream.
        call = channel.open("Echo")
        await call.write([b"again"], end=True)
        async with asyncio.timeout(10):
            assert [m async for m in call] == [b"again"]


async def test_message_over_the_limit_fails_the_call() -> None:
    async with _pair(HANDLERS) as (channel, _written):
        call = channel.open("Big")
        await call.write([b"go"], end=True)
        with pytest.raises(fig_h2.RpcError) as big:
            async with asyncio.timeout(10):
                await call.read()
        assert big.value.code == "RESOURCE_EXHAUSTED"


async def test_connection_end_fails_open_calls() -> None:
    async with _pair(HANDLERS) as (channel, _written):
        call = channel.open("Silent")
        await call.write([b"x"], end=True)
        channel._writer.transport.abort()  # the TLS connection (here a socket) is gone
        with pytest.raises(fig_h2.RpcError) as gone:
            async with asyncio.timeout(10):
                await call.read()
        assert gone.value.code == "UNAVAILABLE"
        with pytest.raises(fig_h2.RpcError):
            channel.open("Echo")


async def test_ping_returns_once_the_peer_read_what_came_before() -> None:
    # A call opened, its request written and half-closed, then one PING round trip: by then
    # the server holds the whole request (frames are processed in order, RFC 9113 6.7), even
    # though no handler read it. takv2 relies on it to open ServerEventStream only after TAK
    # has ClientEventStream's subscription (tak-federation.md 6.2, trap 10).
    held: list[fig_h2.Call] = []

    async def hold(call: fig_h2.Call) -> None:
        held.append(call)
        async with asyncio.timeout(30):
            await call.failed()

    async with _pair({"Hold": hold}) as (channel, _written):
        call = channel.open("Hold")
        await call.write([b"subscription"], end=True)
        async with asyncio.timeout(10):
            await channel.ping()
        assert len(held) == 1
        assert list(held[0]._messages) == [b"subscription"] and held[0]._remote_done
        # Pings are answered again and again; a connection that ended fails the next at once.
        async with asyncio.timeout(10):
            await channel.ping()
        channel._writer.transport.abort()
        with pytest.raises(fig_h2.RpcError) as gone:
            async with asyncio.timeout(10):
                while True:  # the reader notices the end on its next read
                    await channel.ping()
                    await asyncio.sleep(0.01)
        assert gone.value.code == "UNAVAILABLE"
