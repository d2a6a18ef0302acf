"""The native wire: Liaison's own partner protocol (``protocol/federation.py``) over an asyncio
stream, driving one :class:`~liaison.federation.link.PeerLink` per connection.

The connection is already TLS with the peer's certificate pinned (the supervisor checked it).
Then HELLO both ways (protocol version, server id, label policy id/version/digest: any mismatch
refuses the link with a logged reason and an ERROR frame), RESUME both ways, and
EVENT/ACK/HEARTBEAT. What to send, when, and what to do with what arrives is the PeerLink's; this
module only frames it: it is the :class:`~liaison.federation.link.WireSession` of this wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from liaison.errors import PeerError
from liaison.federation.connection import (
    ConnectionEnded,
    Tap,
    close_writer,
    first_failure,
)
from liaison.federation.guard import InboundValidator
from liaison.federation.link import LinkRefused, PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.protocol import federation as wire

log = logging.getLogger(__name__)

# Bytes read from the socket per call.
READ_CHUNK = 64 * 1024

# Seconds to wait for a closing TLS connection to finish its goodbye.


class NativeSession:
    """One native-wire connection of a link: the WireSession the link's sender writes through."""

    def __init__(self, link: PeerLink, writer: asyncio.StreamWriter, tap: Tap | None) -> None:
        self._link = link
        self._writer = writer
        self._tap = tap

    def _write(self, data: bytes) -> None:
        if self._tap is not None:
            self._tap("out", data)
        self._writer.write(data)

    # --- WireSession ----------------------------------------------------------------------------

    async def send_events(self, rows: Sequence[OutboxRow]) -> None:
        self._write(b"".join(wire.encode_event(r.seq, r.priority, r.payload) for r in rows))
        await self._writer.drain()

    # --- the conversation -----------------------------------------------------------------------

    def _hello(self) -> wire.Hello:
        link = self._link
        return wire.Hello(
            versions=wire.SUPPORTED_VERSIONS,
            server_id=link.fed.server_id,
            policy_id=link.policy.id,
            policy_version=link.policy.version,
            policy_digest=link.policy.digest,
        )

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Run the connection until it ends. Raises LinkRefused or PeerError."""
        link = self._link
        link.begin_connection()
        proto = wire.LinkProtocol(self._hello())
        self._write(proto.hello())
        try:
            async with asyncio.TaskGroup() as tg:
                await self._read_loop(reader, proto, tg)
                raise ConnectionEnded
        except BaseExceptionGroup as group:
            # The first real failure of the reader, sender or heartbeat ends the connection.
            failure = first_failure(group)
            if failure is not None:
                raise failure from None
        finally:
            link.end_connection()
            await close_writer(self._writer)

    async def _read_loop(
        self, reader: asyncio.StreamReader, proto: wire.LinkProtocol, tg: asyncio.TaskGroup
    ) -> None:
        link = self._link
        idle = link.fed.idle_timeout_s
        validator: InboundValidator | None = None
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
                # arrives as the read completes, and a lost cancellation never ends the link.
                async with asyncio.timeout(idle):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                raise PeerError(f"nothing heard for {idle:.0f} s", reason="idle_timeout") from None
            if not data:
                log.info("federation %s: connection closed by the peer", link.peer.name)
                return
            if self._tap is not None:
                self._tap("in", data)
            messages = proto.receive_data(data)
            while messages:
                events: list[wire.EventMsg] = []
                for msg in messages:
                    if isinstance(msg, wire.EventMsg):
                        events.append(msg)
                        continue
                    if events:
                        assert validator is not None
                        await self._receive(events, validator)
                        events = []
                    match msg:
                        case wire.Hello():
                            validator = self._on_hello(msg, proto)
                        case wire.Resume():
                            link.connection_up(msg.last_applied)
                            name = link.peer.name
                            tg.create_task(link.send_loop(self), name=f"fed-send-{name}")
                            tg.create_task(self._heartbeat_loop(), name=f"fed-heartbeat-{name}")
                        case wire.Ack():
                            link.acked(msg.seq)
                        case wire.Heartbeat():
                            pass
                        case wire.ErrorMsg():
                            raise LinkRefused(f"peer ended the link: {msg.code}: {msg.message}")
                if events:
                    assert validator is not None
                    await self._receive(events, validator)
                messages = proto.more()

    def _on_hello(self, hello: wire.Hello, proto: wire.LinkProtocol) -> InboundValidator:
        problem = wire.check_hello(proto.local, hello)
        if problem is not None:
            code, text = problem
            self._write(wire.encode(wire.ErrorMsg(code=code.value, message=text)))
            raise LinkRefused(text)
        validator = self._link.peer_identified(hello.server_id)
        self._write(proto.accept_hello(self._link.last_applied))
        return validator

    async def _receive(self, events: list[wire.EventMsg], validator: InboundValidator) -> None:
        # The link returns once what it applied is durably noted: only then is it acknowledged.
        top = await self._link.receive([(m.seq, m.payload) for m in events], validator)
        self._write(wire.encode(wire.Ack(seq=top)))

    async def _heartbeat_loop(self) -> None:
        link = self._link
        while True:
            await asyncio.sleep(link.fed.heartbeat_s)
            self._write(wire.encode(wire.Heartbeat(time_ms=link.clock_ms())))
            await self._writer.drain()


async def serve(
    link: PeerLink,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tap: Tap | None = None,
) -> None:
    """Run one authenticated native-wire connection of ``link`` until it ends.

    Raises LinkRefused (the peer is not who it must be, or enforces another policy) or PeerError.
    """
    await NativeSession(link, writer, tap).serve(reader)
