"""The stream limits hold on the mutual-TLS listener too (docs/performance.md, "Cheap connections").

TLS connections are read through a socket buffer shared by every connection of the listener
(transports/stream.py ``LeanSSLProtocol``); these tests prove that this changes nothing a client
can see: oversized frames are refused, slow readers are disconnected past their limit, and big
events from several TLS clients at once arrive intact.
"""

from __future__ import annotations

import asyncio
import hashlib

from liaison.app import Server
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import Client, chat_event, clients, connect_tls, sa_event


def _metric(server: Server, name: str) -> float:
    return server.metrics.snapshot().get(name, 0)


async def _tls_client(server: Server, name: str) -> Client:
    assert server.tls is not None
    c = issue_cert(server, name, "USA")
    return await connect_tls(server.tls.port, cert=c.cert, key=c.key, ca=c.ca, name=name)


async def test_oversized_event_over_tls_closes_only_that_session(
    start_server: ServerFactory,
) -> None:
    async with start_server(max_event_bytes=4096) as server:
        good_a = await _tls_client(server, "good-a")
        good_b = await _tls_client(server, "good-b")
        bad = await _tls_client(server, "attacker")
        async with clients(good_a, good_b, bad):
            huge = sa_event("big", "BIG", extra_detail="<remarks>" + "x" * 10_000 + "</remarks>")
            await bad.send(huge)
            assert await bad.closed_by_server(5.0)
            assert _metric(server, 'liaison_input_rejected_total{reason="frame_too_large"}') == 1
            assert _metric(server, 'liaison_sessions_closed_total{reason="frame_too_large"}') == 1
            await good_a.send(chat_event("uid-good", "GOOD", "still here over tls"))
            await good_b.wait_for(b"still here over tls")


async def test_slow_tls_reader_is_disconnected_and_others_keep_up(
    start_server: ServerFactory,
) -> None:
    async with start_server(max_pending=200) as server:
        sender = await _tls_client(server, "sender")
        fast = await _tls_client(server, "fast")
        slow = await _tls_client(server, "slow")  # never reads
        async with clients(sender, fast, slow):
            # As the TCP test (test_hostile_input.py): 16 MB in 20 rounds is far more than the
            # loopback buffers and asyncio's TLS write buffer hold for the reader that never reads.
            big_remarks = "<remarks>" + "y" * 8000 + "</remarks>"
            seen: set[bytes] = set()
            loop = asyncio.get_running_loop()
            for rnd in range(20):
                for i in range(rnd * 100, rnd * 100 + 100):
                    await sender.send(chat_event("uid-s", "S", f"msg-{i:05d}{big_remarks}"))
                deadline = loop.time() + 10
                while len(seen) < rnd * 100 + 100 and loop.time() < deadline:
                    for f in await fast.collect(0.05, limit_s=0.5):
                        if b"msg-" in f:
                            seen.add(f.split(b"msg-", 1)[1][:5])
            assert len(seen) == 2000  # the reader that keeps up lost nothing
            assert _metric(server, 'liaison_slow_consumer_total{outcome="disconnected"}') == 1
            assert _metric(server, 'liaison_sessions_closed_total{reason="slow_consumer"}') == 1
            assert await slow.closed_by_server(10.0)


def _big_event(sender: str, n: int, size: int) -> tuple[bytes, bytes]:
    """A marker with a ``size``-byte text unique to (sender, n) in a detail element of its own
    (remarks are limited to 16 K characters); and the text's digest."""
    seed = f"{sender}-{n}-".encode()
    text = f"big/{sender}/{n}/" + (seed * (size // len(seed) + 1))[:size].decode()
    event = sa_event(
        f"uid-{sender}-{n}", sender, cot_type="a-u-G", extra_detail=f"<__bench>{text}</__bench>"
    )
    return event, hashlib.sha256(text.encode()).digest()


async def test_big_events_from_several_tls_clients_at_once_arrive_intact(
    start_server: ServerFactory,
) -> None:
    """Three TLS clients each write 10 events of about 40 KB (events are limited to 48 KiB) in
    one go, more than the shared 256 KiB read buffer each, all at the same time; every event
    reaches the reader byte for byte: no connection ever sees another's bytes."""
    async with start_server() as server:
        senders = [await _tls_client(server, f"s{i}") for i in range(3)]
        reader = await _tls_client(server, "reader")
        async with clients(reader, *senders):
            expected: dict[str, bytes] = {}
            sends = []
            for i, s in enumerate(senders):
                batch = []
                for n in range(10):
                    event, digest = _big_event(f"s{i}", n, 40_000 + 1_001 * i + n)
                    expected[f"big/s{i}/{n}/"] = digest
                    batch.append(event)
                sends.append(s.send(b"".join(batch)))
            await asyncio.gather(*sends)
            got: dict[str, bytes] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(got) < len(expected) and loop.time() < deadline:
                for frame in await reader.collect(0.2, limit_s=2):
                    if b"<__bench>" not in frame:
                        continue
                    text = frame.split(b"<__bench>", 1)[1].split(b"</__bench>", 1)[0]
                    key = b"/".join(text.split(b"/", 3)[:3]).decode() + "/"
                    got[key] = hashlib.sha256(text).digest()
            assert got == expected


async def test_many_small_events_over_tls_arrive_in_order(start_server: ServerFactory) -> None:
    """Small events one after the other take LeanSSLProtocol's direct write (one open
    connection, nothing waiting): each of 300 chats from one TLS client reaches two TLS readers
    once, whole, in the order sent."""
    async with start_server() as server:
        sender = await _tls_client(server, "chatty")
        readers = [await _tls_client(server, f"r{i}") for i in range(2)]
        async with clients(sender, *readers):
            for i in range(300):
                await sender.send(chat_event("uid-chatty", "CHATTY", f"seq-{i:04d}-end"))
            loop = asyncio.get_running_loop()
            for reader in readers:
                seen: list[str] = []
                deadline = loop.time() + 30
                while len(seen) < 300 and loop.time() < deadline:
                    for frame in await reader.collect(0.2, limit_s=2):
                        if b"seq-" in frame:
                            seen.append(frame.split(b"seq-", 1)[1][:4].decode())
                assert seen == [f"{i:04d}" for i in range(300)]
