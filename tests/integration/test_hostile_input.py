"""Hostile input: every refusal is counted, and the server keeps serving well-behaved clients."""

from __future__ import annotations

import asyncio

from liaison.app import Server
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import (
    Client,
    chat_event,
    clients,
    connect_tcp,
    negotiate_protobuf,
    proto_frame,
    sa_event,
)


def rejected(server: Server, reason: str) -> float:
    return server.metrics.snapshot().get(f'liaison_input_rejected_total{{reason="{reason}"}}', 0)


async def still_served(server: Server, sender: Client, receiver: Client, tag: str) -> None:
    """The well-behaved pair still exchange an event."""
    await sender.send(chat_event("uid-good", "GOOD", f"still here {tag}"))
    await receiver.wait_for(f"still here {tag}".encode())


async def _attack(server: Server, payload: bytes, *, expect_closed: bool) -> Client:
    assert server.tcp is not None
    bad = await connect_tcp(server.tcp.port, "attacker")
    await bad.send(payload)
    if expect_closed:
        assert await bad.closed_by_server(5.0)
    return bad


async def test_oversized_event_closes_only_that_session(start_server: ServerFactory) -> None:
    async with start_server(max_event_bytes=4096) as server:
        assert server.tcp is not None
        good_a = await connect_tcp(server.tcp.port, "good-a")
        good_b = await connect_tcp(server.tcp.port, "good-b")
        async with clients(good_a, good_b):
            huge = sa_event("big", "BIG", extra_detail="<remarks>" + "x" * 10_000 + "</remarks>")
            bad = await _attack(server, huge, expect_closed=True)
            await bad.close()
            assert rejected(server, "frame_too_large") == 1
            await still_served(server, good_a, good_b, "after oversize")


async def test_entity_tricks_are_refused(start_server: ServerFactory) -> None:
    billion_laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b'<event version="2.0" uid="x" type="a-f-G" how="m-g" time="2024-01-01T00:00:00Z"'
        b' start="2024-01-01T00:00:00Z" stale="2030-01-01T00:00:00Z">'
        b'<point lat="0" lon="0" hae="0" ce="0" le="0"/>'
        b"<detail><remarks>&lol2;</remarks></detail></event>"
    )
    xxe = (
        b'<!DOCTYPE event [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<event version="2.0" uid="x" type="a-f-G" how="m-g" time="2024-01-01T00:00:00Z"'
        b' start="2024-01-01T00:00:00Z" stale="2030-01-01T00:00:00Z">'
        b'<point lat="0" lon="0" hae="0" ce="0" le="0"/>'
        b"<detail><remarks>&xxe;</remarks></detail></event>"
    )
    async with start_server() as server:
        assert server.tcp is not None
        good_a = await connect_tcp(server.tcp.port, "good-a")
        good_b = await connect_tcp(server.tcp.port, "good-b")
        async with clients(good_a, good_b):
            for i, payload in enumerate((billion_laughs, xxe)):
                bad = await _attack(server, payload, expect_closed=True)
                await bad.close()
                await still_served(server, good_a, good_b, f"after entity trick {i}")
            assert rejected(server, "doctype") == 2
            assert not any(b"root:" in f for f in await good_b.collect(0.3))


async def test_invalid_events_are_refused_and_the_stream_continues(
    start_server: ServerFactory,
) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        sender = await connect_tcp(server.tcp.port, "sender")
        receiver = await connect_tcp(server.tcp.port, "receiver")
        async with clients(sender, receiver):
            await sender.send(sa_event("bad-lat", "BAD", lat=91.0))
            await sender.send(sa_event("bad-lon", "BAD").replace(b'lon="30.52"', b'lon="abc"'))
            await sender.send(sa_event("bad-nan", "BAD").replace(b'lat="50.45"', b'lat="NaN"'))
            await sender.send(sa_event("bad-time", "BAD").replace(b'time="', b'time="yesterday', 1))
            await sender.send(sa_event("no-uid", "BAD").replace(b' uid="no-uid"', b""))
            # The same session goes on: these framed correctly, only the events were wrong.
            await sender.send(sa_event("fine", "FINE"))
            await receiver.wait_for(b'uid="fine"')
            frames = await receiver.collect(0.3)
            assert not any(b"bad-" in f or b"no-uid" in f for f in frames)
            assert rejected(server, "bad_coordinates") == 3
            assert rejected(server, "bad_time") == 1
            assert rejected(server, "missing_field") == 1


async def test_non_utf8_is_refused(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        sender = await connect_tcp(server.tcp.port, "sender")
        receiver = await connect_tcp(server.tcp.port, "receiver")
        async with clients(sender, receiver):
            await sender.send(
                sa_event("latin1", "CAF\xc9".encode("latin-1").decode("latin-1")).replace(
                    b"CAF\xc3\x89", b"CAF\xc9"
                )
            )
            await sender.send(sa_event("after-latin1", "OK"))
            await receiver.wait_for(b"after-latin1")
            assert rejected(server, "not_utf8") == 1


async def test_garbage_and_truncated_protobuf(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        good_a = await connect_tcp(server.tcp.port, "good-a")
        good_b = await connect_tcp(server.tcp.port, "good-b")
        async with clients(good_a, good_b):
            # A complete frame whose payload is not a TakMessage: refused, stream stays in sync.
            pb = await connect_tcp(server.tcp.port, "pb")
            await negotiate_protobuf(pb)
            await pb.send(b"\xbf\x05\xff\xff\xff\xff\xff")
            await pb.send(proto_frame(sa_event("pb-after-garbage", "PB")))
            await good_b.wait_for(b"pb-after-garbage")
            assert rejected(server, "bad_proto") == 1
            # A truncated frame followed by a hang-up: nothing is routed.
            frame = proto_frame(sa_event("pb-truncated", "PB"))
            await pb.send(frame[: len(frame) // 2])
            await pb.close()
            # A bad magic byte cannot be resynchronised: the session ends.
            pb2 = await connect_tcp(server.tcp.port, "pb2")
            await negotiate_protobuf(pb2)
            await pb2.send(b"\x00\x01\x02")
            assert await pb2.closed_by_server(5.0)
            await pb2.close()
            assert rejected(server, "malformed_stream") == 1
            assert not any(b"pb-truncated" in f for f in await good_b.collect(0.3))
            await still_served(server, good_a, good_b, "after protobuf garbage")


async def test_garbage_between_events_closes_the_session(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        good_a = await connect_tcp(server.tcp.port, "good-a")
        good_b = await connect_tcp(server.tcp.port, "good-b")
        async with clients(good_a, good_b):
            bad = await _attack(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", expect_closed=True)
            await bad.close()
            await still_served(server, good_a, good_b, "after http garbage")


async def test_silent_and_dripping_clients_are_dropped(start_server: ServerFactory) -> None:
    async with start_server(idle_timeout_s=1.0) as server:
        assert server.tcp is not None
        silent = await connect_tcp(server.tcp.port, "silent")
        drip = await connect_tcp(server.tcp.port, "drip")
        good_a = await connect_tcp(server.tcp.port, "good-a")
        good_b = await connect_tcp(server.tcp.port, "good-b")
        async with clients(silent, drip, good_a, good_b):
            event = sa_event("drip", "DRIP")

            async def dripper() -> None:
                for i in range(40):  # one byte every 0.1 s never completes a frame in time
                    try:
                        await drip.send(event[i : i + 1])
                    except (ConnectionError, OSError):
                        return
                    await asyncio.sleep(0.1)

            async def keep_alive() -> None:
                # Well-behaved clients talk (ATAK pings its server); good_b only pings.
                for i in range(8):
                    await good_a.send(chat_event("uid-good", "GOOD", f"tick {i}"))
                    await good_b.send(sa_event("uid-b-ping", "B", cot_type="t-x-c-t"))
                    await asyncio.sleep(0.4)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(dripper())
                tg.create_task(keep_alive())
                assert await silent.closed_by_server(4.0)
            assert await drip.closed_by_server(2.0)
            assert rejected(server, "idle_timeout") >= 2
            await still_served(server, good_a, good_b, "after idle drops")


async def test_slow_reader_is_disconnected_and_others_keep_up(start_server: ServerFactory) -> None:
    async with start_server(max_pending=200) as server:
        assert server.tcp is not None
        sender = await connect_tcp(server.tcp.port, "sender")
        fast = await connect_tcp(server.tcp.port, "fast")
        slow = await connect_tcp(server.tcp.port, "slow")  # never reads
        async with clients(sender, fast, slow):
            # 20 rounds of 100 x 8 KB: 16 MB is far more than the kernel's loopback socket
            # buffers hold, so the reader that never reads must overflow its queue, while the
            # reader that keeps up is given time to do so after each round.
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
            snap = server.metrics.snapshot()
            assert snap.get('liaison_slow_consumer_total{outcome="disconnected"}') == 1
            assert snap.get('liaison_sessions_closed_total{reason="slow_consumer"}') == 1
