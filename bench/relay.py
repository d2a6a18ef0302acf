"""A bare asyncio relay that parses nothing: the floor against which TAK servers are compared.

It accepts TCP clients and writes what each client sends to every other client. The only work it
does on the bytes is one search for the last `</event>` of each read, so that it forwards whole
events: without that, two senders' partial reads could interleave in a receiver's stream and
corrupt both events (the XML stream has no other framing, TAK protocol.txt, "Stream framing",
version 0). No parsing, no routing rules, no queues beyond asyncio's transport buffers, no
backpressure: this is what "shuffling bytes" costs in CPython, not a server design.

    python bench/relay.py --port 8087
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

EVENT_END = b"</event>"

# A client that sends this much without an end tag is cut off (it is not sending CoT).
MAX_PENDING_BYTES = 4 * 1024 * 1024


class RelayProtocol(asyncio.Protocol):
    """One connected client of the relay."""

    def __init__(self, peers: set[RelayProtocol]) -> None:
        self.peers = peers
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peers.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        end = buf.rfind(EVENT_END)
        if end < 0:
            self.pending = buf
            if len(buf) > MAX_PENDING_BYTES and self.transport is not None:
                self.transport.close()
            return
        end += len(EVENT_END)
        if end == len(buf):
            whole, self.pending = buf, b""
        else:
            whole, self.pending = buf[:end], buf[end:]
        for peer in self.peers:
            if peer is not self and peer.transport is not None:
                peer.transport.write(whole)


async def serve(
    host: str, port: int, stop: asyncio.Event, on_ready: Callable[[int], None] | None = None
) -> None:
    """Relay on host:port until `stop` is set; `on_ready` is called with the bound port."""
    loop = asyncio.get_running_loop()
    peers: set[RelayProtocol] = set()
    server = await loop.create_server(lambda: RelayProtocol(peers), host, port)
    if on_ready is not None:
        on_ready(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
        for peer in list(peers):
            if peer.transport is not None:
                peer.transport.close()


async def _main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(host, port, stop, lambda bound: print(f"relay listening on {host}:{bound}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and relay until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="bare asyncio CoT relay (benchmark floor)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8087)
    args = parser.parse_args(argv)
    # Line-buffered so that a parent reading our stdout sees the "listening" line at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(_main(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
