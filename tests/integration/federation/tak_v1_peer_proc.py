"""Our own TAK federation v1 test peer (tak_v1_peer.TakV1Peer) as a process of its own, so a
test can kill it (SIGKILL) and start it again, or run it inside a network namespace.

``--listen HOST:PORT`` (port 0: any): TAK's federation-server v1 port, Liaison dials it.
``--dial HOST:PORT``: TAK's federation-outgoing with protocolVersion 1, dialling Liaison's
federation listener, and dialling again ``REDIAL_S`` after a connection ends or a dial fails.
Certificates: ``--chain`` (leaf + CA), ``--key``, ``--ca`` (the CA that issued Liaison's
certificate). ``--frame-delay S``: seconds spent on each frame read (a busy server, so frames
wait unread in its socket).

Prints one JSON object a line on stdout, flushed at once: ``{"ready": port}`` once listening or
dialling, ``{"connection": "up"}`` / ``{"connection": "end"}`` for each connection, and
``{"uid": ..., "other": ...}`` for each FederatedEvent with an event it handled, the moment it
is handled (so what the peer handled is on the test's pipe before the process can be killed).
Runs until killed or stdin closes.

Usage: ``python -m tests.integration.federation.tak_v1_peer_proc --listen 127.0.0.1:0 ...``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from liaison.federation.proto import fig_pb2
from tests.integration.federation.tak_v1_peer import TakV1Peer

# Dial mode: seconds between the end of a connection (or a failed dial) and the next dial, and
# dials at most.
REDIAL_S = 1.0
MAX_DIALS = 1000


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Reported(list[bytes]):
    """The peer's list of handled frames, each printed the moment it is appended."""

    def append(self, data: bytes) -> None:
        super().append(data)
        fed = fig_pb2.FederatedEvent.FromString(data)
        if fed.HasField("event"):
            _emit({"uid": fed.event.uid, "other": fed.event.other})


class ReportingPeer(TakV1Peer):
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _emit({"connection": "up"})
        try:
            await super()._serve(reader, writer)
        finally:
            _emit({"connection": "end"})


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _dial_forever(peer: TakV1Peer, target: str, creds: dict[str, bytes]) -> None:
    host, port = _address(target)
    for _ in range(MAX_DIALS):
        try:
            task = await peer.dial(port, host=host, **creds)
            await task
        except OSError as exc:
            print(f"dial failed: {exc!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(REDIAL_S)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main() -> int:
    p = argparse.ArgumentParser()
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen")
    where.add_argument("--dial")
    p.add_argument("--chain", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--frame-delay", type=float, default=0.0)
    a = p.parse_args()
    chain, key, ca = (Path(f).read_bytes() for f in (a.chain, a.key, a.ca))  # noqa: ASYNC240
    creds = {"chain": chain, "key": key, "ca": ca}
    peer = ReportingPeer(frame_delay=a.frame_delay)
    peer.received = Reported()
    dialler: asyncio.Task[None] | None = None
    if a.listen is not None:
        host, port = _address(a.listen)
        _emit({"ready": await peer.listen(host=host, port=port, **creds)})
    else:
        dialler = asyncio.create_task(_dial_forever(peer, a.dial, creds))
        _emit({"ready": 0})
    await _stdin_closed()
    if dialler is not None:
        dialler.cancel()
    await peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
