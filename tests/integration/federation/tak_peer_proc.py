"""One of our own TAK v2 test peers as a process of its own, so a test can kill it (SIGKILL) and
start it again, or run it inside a network namespace.

``--mode server``: tak_peer.TakPeer (TAK's server side, Liaison dials), listening on
``--listen HOST:PORT`` (port 0: any). ``--mode client``: tak_client_peer.TakClientPeer (TAK's
client side) dialling ``--dial HOST:PORT``, and dialling again 1 s after a session ends.
Certificates: ``--chain`` (leaf + CA), ``--key``, ``--ca`` (the CA that issued Liaison's
certificate). Prints one JSON object a line on stdout: ``{"ready": port}`` once serving or
dialling, then ``{"uid": ..., "other": ...}`` for each FederatedEvent with an event it
received, in arrival order. Runs until killed or stdin closes.

Usage: ``python -m tests.integration.federation.tak_peer_proc --mode server ...``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from liaison.federation.proto import fig_pb2
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.tak_peer import TakPeer

# Client mode: seconds between the end of a session and the next dial; sessions at most.
REDIAL_S = 1.0
MAX_SESSIONS = 1000


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Reported(list[bytes]):
    """The peer's list of received messages, each printed the moment it is appended: what the
    peer received is on stdout before the process can be killed (a poll would lose the last)."""

    def append(self, data: bytes) -> None:
        super().append(data)
        fed = fig_pb2.FederatedEvent.FromString(data)
        if fed.HasField("event"):
            _emit({"uid": fed.event.uid, "other": fed.event.other})


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def _dial_forever(
    target: str, chain: bytes, key: bytes, ca: bytes, received: list[bytes]
) -> None:
    """Dial, and dial again REDIAL_S after a session ends (as TAK's outgoing link does)."""
    for _ in range(MAX_SESSIONS):
        client = TakClientPeer(health_interval=1.0)
        client.received = received  # one record over every session
        client.start(target, chain=chain, key=key, ca=ca, host="localhost")
        assert client._task is not None
        await client._task
        print(f"session ended: {client.error}", file=sys.stderr, flush=True)
        await client.stop()
        await asyncio.sleep(REDIAL_S)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("server", "client"), required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--dial")
    p.add_argument("--chain", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    a = p.parse_args()
    chain, key, ca = (Path(f).read_bytes() for f in (a.chain, a.key, a.ca))  # noqa: ASYNC240
    tasks: list[asyncio.Task[None]] = []
    if a.mode == "server":
        server = TakPeer()
        server.received = Reported()
        bound = await server.start(cert_chain=chain, key=key, client_ca=ca, address=a.listen)
        _emit({"ready": bound})
    else:
        received = Reported()
        tasks.append(asyncio.create_task(_dial_forever(a.dial, chain, key, ca, received)))
        _emit({"ready": 0})
    await _stdin_closed()
    for task in tasks:
        task.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
