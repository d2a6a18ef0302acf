"""Oversized fields are refused at parse time, so no TAK client ever receives what it cannot read.

The receivers here run pytak's own receive loop (``pytak.RXWorker.run``), which reads with
``StreamReader.readuntil(b"</event>")`` and asyncio's default 64 KiB limit: an event it cannot
take kills the loop, as it killed every pytak client connected to Liaison before these limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytak

from liaison.app import Server
from liaison.protocol import limits
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import (
    WAIT_S,
    Client,
    clients,
    connect_tcp,
    connect_tls,
    negotiate_protobuf,
    proto_frame,
    sa_event,
)


def rejected(server: Server, reason: str) -> float:
    return server.metrics.snapshot().get(f'liaison_input_rejected_total{{reason="{reason}"}}', 0)


class _Collect(pytak.RXWorker):  # type: ignore[misc]
    """pytak's receive loop, unchanged; each event it reads goes to the queue."""

    async def handle_data(self, data: bytes) -> None:  # pragma: no cover - run() uses the queue
        del data


@dataclass
class PytakReceiver:
    """A pytak client whose only job is to read, with pytak's RXWorker."""

    client: Client
    queue: asyncio.Queue[bytes]
    task: asyncio.Task[None]

    async def wait_for(self, needle: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            self.assert_alive()
            remaining = deadline - loop.time()
            assert remaining > 0, f"no event with {needle!r} within {WAIT_S}s"
            try:
                data = await asyncio.wait_for(self.queue.get(), min(remaining, 0.2))
            except TimeoutError:
                continue
            if needle in data:
                return data

    def drain(self) -> list[bytes]:
        out: list[bytes] = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def assert_alive(self) -> None:
        if self.task.done():
            raise AssertionError(f"pytak's receive loop died: {self.task.exception()!r}")


@contextlib.asynccontextmanager
async def pytak_receiver(client: Client) -> AsyncIterator[PytakReceiver]:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
    worker = _Collect(queue, {}, client.reader)
    task = asyncio.create_task(worker.run())
    try:
        yield PytakReceiver(client, queue, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_a_200_kb_callsign_is_refused_and_pytak_receivers_survive(
    start_server: ServerFactory,
) -> None:
    async with start_server() as server:
        assert server.tcp is not None and server.tls is not None
        cert = issue_cert(server, "sender")
        sender = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="sender"
        )
        watcher = await connect_tcp(server.tcp.port, "watcher")
        async with clients(sender, watcher), pytak_receiver(watcher) as rx:
            await sender.send(sa_event("uid-before", "BEFORE"))
            await rx.wait_for(b"uid-before")

            huge = sa_event("uid-huge", "H" * 200_000)
            await sender.send(huge)
            await sender.send(sa_event("uid-after", "AFTER"))
            after = await rx.wait_for(b"uid-after")
            assert b"uid-huge" not in after
            assert not any(b"uid-huge" in e for e in rx.drain())
            rx.assert_alive()
            assert rejected(server, "field_too_long") == 1

            # The sender's session was kept: later events still flow from it.
            await sender.send(sa_event("uid-later", "LATER"))
            await rx.wait_for(b"uid-later")

            # A client that connects now is not replayed the refused event either.
            late = await connect_tcp(server.tcp.port, "late")
            async with clients(late), pytak_receiver(late) as late_rx:
                await late_rx.wait_for(b"uid-later")
                await asyncio.sleep(0.3)
                assert not any(b"uid-huge" in e for e in late_rx.drain())
                late_rx.assert_alive()


async def test_oversized_event_over_protobuf_and_udp_is_refused(
    start_server: ServerFactory,
) -> None:
    async with start_server() as server:
        assert server.tcp is not None and server.udp is not None
        sender = await connect_tcp(server.tcp.port, "proto-sender")
        watcher = await connect_tcp(server.tcp.port, "watcher")
        async with clients(sender, watcher), pytak_receiver(watcher) as rx:
            await negotiate_protobuf(sender)
            long_uid = "u" * (limits.MAX_UID_CHARS + 1)
            await sender.send(proto_frame(sa_event(long_uid, "PB")))
            # Under the frame limit but over the event limit: refused, session kept.
            big = sa_event("uid-big", "BIG", extra_detail=f'<x y="{"p" * 60_000}"/>')
            await sender.send(proto_frame(big))
            await sender.send(proto_frame(sa_event("uid-pb-ok", "PBOK")))
            await rx.wait_for(b"uid-pb-ok")

            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.udp.port)
            )
            try:
                transport.sendto(sa_event("uid-udp-long", "U" * (limits.MAX_CALLSIGN_CHARS + 1)))
                transport.sendto(sa_event("uid-udp-ok", "UDPOK"))
                await rx.wait_for(b"uid-udp-ok")
            finally:
                transport.close()
            assert not any(b"uid-big" in e or b"uid-udp-long" in e for e in rx.drain())
            rx.assert_alive()
            assert rejected(server, "field_too_long") == 2
            assert rejected(server, "too_large") == 1
