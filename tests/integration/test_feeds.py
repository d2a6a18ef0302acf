"""Feeds end to end: an aircraft.json served over a real local HTTP server, AIS sentences sent
to the feed's UDP port and served by a TCP server, and TAK clients over mutual TLS (pytak).

The feed's items carry its default label (RESTRICTED, releasable to its organisation USA): a
USA client cleared SECRET receives them, a USA client cleared UNCLASSIFIED receives none.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import re
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from liaison import cli
from liaison.app import Server
from liaison.errors import ListenError
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import Client, chat_event, clients, connect_tls
from tests.unit.feeds.samples import AIS_SAMPLE, AIS_TYPE5, aircraft_json

SBS1_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "adsb" / "sbs1-msgs.txt"

POLICY = """
[policy]
id = "LIAISON-FEEDS"
version = 1
classifications = ["UNCLASSIFIED", "RESTRICTED", "SECRET"]

[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]

[authz.profiles.usa-secret]
classification = "SECRET"
REL = ["USA"]

[authz.profiles.usa-restricted]
classification = "RESTRICTED"
REL = ["USA"]

[authz.profiles.usa-unclass]
classification = "UNCLASSIFIED"
REL = ["USA"]

[gate.listeners.tls]
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "UNCLASSIFIED"
"""

FEED = """
[feeds.{name}]
kind = "{kind}"
{where}
org = "USA"
ceiling = {{ classification = "RESTRICTED", REL = "*" }}
default_classification = "RESTRICTED"
affiliation = "n"
interval_s = 0.2
min_interval_s = 0.1
"""


def feed(name: str, kind: str, where: str) -> str:
    return FEED.format(name=name, kind=kind, where=where)


async def two_clients(server: Server, data_dir: Path) -> tuple[Client, Client]:
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("usa-s", "USA", profile="usa-secret")
    users.add_user("usa-u", "USA", profile="usa-unclass")
    assert server.tls is not None
    out = []
    for name in ("usa-s", "usa-u"):
        cert = issue_cert(server, name, "USA")
        out.append(
            await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)
        )
    return out[0], out[1]


def current_snapshot() -> bytes:
    """The real snapshot with its ``now`` moved to the present (a recorded feed replayed)."""
    doc = json.loads(aircraft_json())
    doc["now"] = time.time()
    return json.dumps(doc).encode()


async def test_adsb_http_and_ais_udp_reach_only_cleared_clients(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    requests = 0

    async def aircraft(_: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        if requests == 1:  # the first poll fails: the feed retries with backoff
            return web.Response(status=503)
        return web.Response(body=current_snapshot(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/data/aircraft.json", aircraft)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    policy = tmp_path / "policy.toml"
    # The aircraft feed may assert up to SECRET; its items are RESTRICTED unless a label rule
    # says otherwise (one aircraft SECRET), and one aircraft is hostile by an affiliation rule.
    planes = feed(
        "planes", "adsb-http", f'url = "http://127.0.0.1:{port}/data/aircraft.json"'
    ).replace('ceiling = { classification = "RESTRICTED"', 'ceiling = { classification = "SECRET"')
    planes += """
[[feeds.planes.rules]]
ids = ["407689"]
affiliation = "h"

[[feeds.planes.rules]]
country = ["DE"]
affiliation = "f"

[[feeds.planes.labels]]
ids = ["3C71A1"]
classification = "SECRET"
"""
    # Rules by country: 3C71A1 is in Germany's ICAO block, MMSI 227006760's MID 227 is France's.
    ships = feed("ships", "ais-udp", 'listen = "127.0.0.1:0"')
    ships += '\n[[feeds.ships.rules]]\ncountry = ["fr"]\naffiliation = "a"\n'
    policy.write_text(POLICY + planes + ships)
    # The UDP sender: AIS sentences as a receiver forwards them, a few per datagram.
    lines = AIS_TYPE5.read_bytes().splitlines()[1:] + AIS_SAMPLE.read_bytes().splitlines()[:200]
    try:
        async with start_server(policy_file=str(policy)) as server:
            assert server.feeds is not None
            secret, unclass = await two_clients(server, data_dir)
            UserDirectory.load(data_dir / "users.json").add_user(
                "usa-r", "USA", profile="usa-restricted"
            )
            assert server.tls is not None
            cert = issue_cert(server, "usa-r", "USA")
            restricted = await connect_tls(
                server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="usa-r"
            )
            async with clients(secret, unclass, restricted):
                loop = asyncio.get_running_loop()
                udp, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol,
                    remote_addr=("127.0.0.1", server.feeds.udp_port("ships")),
                )
                for i in range(0, len(lines), 4):
                    udp.sendto(b"\r\n".join(lines[i : i + 4]) + b"\r\n")
                    await asyncio.sleep(0)
                udp.close()
                aircraft_frame = await secret.wait_for(b'uid="ICAO-3c71a1"', within=15)
                vessel_frame = await secret.wait_for(b'uid="MMSI-227006760"', within=15)
                hostile_frame = await restricted.wait_for(b'uid="ICAO-407689"', within=15)
                await restricted.wait_for(b'uid="MMSI-227006760"', within=15)
                await restricted.collect(0.5)
                await unclass.collect(0.5)
                await asyncio.sleep(0.5)
                await unclass.collect(0.5)
                feeds = server.feeds
                assert feeds.m_failures.get("planes") >= 1  # the 503, retried
                assert feeds.m_published.get("planes") >= 24
                assert feeds.m_published.get("ships") > 50
    finally:
        await runner.cleanup()
    assert b'type="a-f-A"' in aircraft_frame and b'<contact callsign="BCS361"' in aircraft_frame
    assert b'type="a-a-S-X"' in vessel_frame and b"<__ais " in vessel_frame
    assert b'type="a-h-A-C-F"' in hostile_frame  # the affiliation rule (before the country rule)
    # The label rule made one aircraft SECRET; the rest of the feed has its default label.
    assert b'access="SECRET" releasableTo="REL TO USA"' in aircraft_frame
    assert b'cls="SECRET" orig="USA"' in aircraft_frame
    for frame in (vessel_frame, hostile_frame):
        assert b'access="RESTRICTED" releasableTo="REL TO USA"' in frame
        assert b'cls="RESTRICTED" orig="USA"' in frame
    # The RESTRICTED client saw the feed's items except the SECRET one.
    assert b"ICAO-3c71a1" not in restricted.raw
    # The client cleared below the feed's label received none of the feed's items.
    assert b"ICAO-" not in unclass.raw and b"MMSI-" not in unclass.raw


async def test_ais_tcp_any_chunking_and_reconnect(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An AIS TCP server writes an over-long line, then the real sample cut into random chunks,
    then closes; the feed skips the long line, and reconnects (backoff) and reads it again."""
    stream = b"!" * 10_000 + b"\r\n" + AIS_SAMPLE.read_bytes()
    rnd = random.Random(15)
    connections = 0
    second = asyncio.Event()

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 2:
            second.set()
        i = 0
        while i < len(stream):
            n = rnd.randint(1, 300)
            writer.write(stream[i : i + n])
            i += n
            await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + feed("coast", "ais-tcp", f'connect = "127.0.0.1:{port}"'))
    try:
        async with start_server(policy_file=str(policy)) as server:
            assert server.feeds is not None
            feeds = server.feeds
            await asyncio.wait_for(second.wait(), 15)  # it reconnected after the close
            assert feeds.m_failures.get("coast") >= 1  # "closed the connection", retried
            # 764 position reports per pass (tests/unit/feeds/test_ais.py), 100 empty payloads.
            assert feeds.m_reports.get("coast") >= 764
            assert feeds.m_invalid.get("coast") >= 101  # the long line, 100 empty payloads
            # Logged at 1, 10, 100, ... unreadable lines, not once per line.
            logged = [
                r.getMessage() for r in caplog.records if "unreadable lines" in r.getMessage()
            ]
            assert logged[:3] == [
                "feed coast: unreadable lines so far: 1",
                "feed coast: unreadable lines so far: 10",
                "feed coast: unreadable lines so far: 100",
            ]
            assert len(logged) <= 4
            assert feeds.m_published.get("coast") > 0
            secret, unclass = await two_clients(server, data_dir)
            async with clients(secret, unclass):
                # Replay of the latest state on connect: the cleared client gets the vessels.
                await secret.wait_for(b'uid="MMSI-', within=10)
                await unclass.collect(0.5)
            assert b"MMSI-" not in unclass.raw
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_a_udp_feed_port_in_use_stops_the_start(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        policy = tmp_path / "policy.toml"
        # The first feed binds a free port, the second cannot: the first is closed again.
        policy.write_text(
            POLICY
            + feed("free", "ais-udp", 'listen = "127.0.0.1:0"')
            + feed("ships", "ais-udp", f'listen = "127.0.0.1:{port}"')
        )
        with pytest.raises(ListenError) as exc:
            async with start_server(policy_file=str(policy)):
                pass
    assert str(exc.value) == (
        f"cannot listen on 127.0.0.1:{port} for the AIS feed ships ([feeds.ships] listen): "
        "address already in use"
    )
    # Nothing was left bound: the port the first feed took is free again (a fresh bind of any
    # port works, and no datagram socket of this process remains besides the test's own).
    gc.collect()
    open_udp = [
        o
        for o in gc.get_objects()
        if isinstance(o, asyncio.DatagramTransport) and not o.is_closing()
    ]
    assert open_udp == []


async def test_two_receivers_of_one_picture_make_one_track_each(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two file feeds of the same organisation read the same snapshot (two receivers seeing the
    same aircraft): every aircraft is published once, the duplicates are dropped as ``old``."""
    snapshot = tmp_path / "aircraft.json"
    snapshot.write_bytes(current_snapshot())
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + feed("rx1", "adsb-file", 'path = "aircraft.json"')
        + feed("rx2", "adsb-file", 'path = "aircraft.json"')
    )
    async with start_server(policy_file=str(policy)) as server:
        assert server.feeds is not None
        feeds = server.feeds
        secret, unclass = await two_clients(server, data_dir)
        async with clients(secret, unclass):
            await secret.wait_for(b'uid="ICAO-3c71a1"', within=10)
            await asyncio.sleep(1.0)  # about five more polls of each feed
            frames = await secret.collect(0.5)
            await unclass.collect(0.3)
        published = feeds.m_published.get("rx1") + feeds.m_published.get("rx2")
        assert published == 24  # the snapshot's aircraft with a fresh position, once each
        assert feeds.m_reports.get("rx1") >= 24 * 3 and feeds.m_reports.get("rx2") >= 24 * 3
        assert feeds.m_dropped.get("old") == (
            feeds.m_reports.get("rx1") + feeds.m_reports.get("rx2") - 24
        )
        assert not any(b'uid="ICAO-3c71a1"' in f for f in frames)  # never sent twice
        assert len(feeds.tracks) == 24
    assert b"ICAO-" not in unclass.raw
    # The server wrote its feeds' status; `liaison feeds status` reads it.
    doc = json.loads((data_dir / "feeds" / "status.json").read_text())
    assert doc["v"] == 1 and doc["tracks"] == 24 and doc["dropped"]["old"] >= 24 * 2
    rx1, rx2 = doc["feeds"]
    assert (rx1["name"], rx1["kind"], rx1["state"]) == ("rx1", "adsb-file", "stopped")
    assert rx1["upstream"] == str(snapshot) and rx1["failures"] == 0
    assert rx1["published"] + rx2["published"] == 24 and rx1["last_data_ms"] is not None
    assert cli.main(["feeds", "status", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "tracks: 24, pending 0, thinning x1.00\n" in out
    assert f"dropped: old {doc['dropped']['old']}\n" in out
    assert f"rx1: stopped (adsb-file {snapshot}), data " in out
    assert f"  reports {rx1['reports']}, published {rx1['published']}, refused 0, invalid 0," in out
    assert cli.main(["feeds", "status", "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no feed status at" in capsys.readouterr().err


async def test_sbs1_tcp_cut_anywhere(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    """An SBS-1 server (port 30003 style) writes the real sample cut into random chunks."""
    stream = SBS1_SAMPLE.read_bytes()
    rnd = random.Random(30003)
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        while i < len(stream):
            n = rnd.randint(1, 200)
            writer.write(stream[i : i + n])
            i += n
            await writer.drain()
        done.set()
        await reader.read()  # hold the connection open, as a receiver does, until the feed goes
        writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + feed("sbs", "sbs1-tcp", f'connect = "127.0.0.1:{port}"'))
    try:
        async with start_server(policy_file=str(policy)) as server:
            assert server.feeds is not None
            feeds = server.feeds
            secret, unclass = await two_clients(server, data_dir)
            async with clients(secret, unclass):
                await asyncio.wait_for(done.wait(), 15)
                frame = await secret.wait_for(b'uid="ICAO-aa779d"', within=10)
                await unclass.collect(0.5)
            # 74 MSG,3 positions (tests/unit/feeds/test_sbs1.py), none lost to the chunking.
            assert feeds.m_reports.get("sbs") == 74
            assert feeds.m_invalid.get("sbs") == 0
            assert feeds.m_failures.get("sbs") == 0
    finally:
        upstream.close()
        await upstream.wait_closed()
    assert b'type="a-n-A"' in frame and b'source="sbs1"' in frame
    assert b'access="RESTRICTED" releasableTo="REL TO USA"' in frame
    assert b"ICAO-" not in unclass.raw
    # Each accepted feed event left an ingest record naming the feed's principal; the log verifies.
    records = [
        json.loads(line)
        for line in (data_dir / "audit" / "audit.jsonl").read_bytes().splitlines()
        if b'"kind":"ingest"' in line
    ]
    feed_records = [r["fields"] for r in records if r["fields"]["sender"] == "feed:sbs"]
    assert feed_records and all(
        f["listener"] == "feed:sbs" and f["org"] == "USA" and f["accepted"] for f in feed_records
    )
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 0


# The flood: this many aircraft, every one reported in each round, FLOOD_ROUNDS_PER_S rounds a
# second (10,000 lines a second, an aggregator's rate: far more fixes than the server can publish
# at min_interval_s 0.1 in this one process shared with the clients, not more than it can read).
FLOOD_AIRCRAFT = 1_000
FLOOD_ROUNDS_PER_S = 10
MAX_FLOOD_ROUNDS = 10_000
CHATS = 10
CHAT_EVERY_S = 0.4
# What a user may expect while a feed floods: chat within a second, flood tracks never old (the
# limits leave room for a shared machine: this one process runs the server, the upstream and the
# clients; measured 0.5-0.6 s chat, 0.5 s median and 1.9-2.6 s worst age at load average 4-6).
# Chat: the median within a second, the worst of the ~20 within 1.5 s (one CI run saw 1.02 s for
# one message, the machine busy with the whole suite); a flood queued ahead of chat would take
# many seconds (19-24 s before the adaptive publisher, docs/performance.md "Feeds").
CHAT_LATENCY_MEDIAN_LIMIT_S = 1.0
CHAT_LATENCY_LIMIT_S = 1.5
FLOOD_AGE_MEDIAN_LIMIT_S = 2.0
FLOOD_AGE_LIMIT_S = 5.0
FLOOD_FEED = """
[feeds.flood]
kind = "sbs1-tcp"
connect = "127.0.0.1:{port}"
org = "USA"
ceiling = {{ classification = "RESTRICTED", REL = "*" }}
default_classification = "RESTRICTED"
stale_s = 20
min_interval_s = 0.1
"""
ALT_RE = re.compile(rb'uid="ICAO-([0-9a-f]{6})".*?alt_baro="(\d+)"', re.DOTALL)


def flood_round(k: int) -> bytes:
    """Round ``k``: one MSG,3 line per aircraft, the round number as the altitude (the server
    copies it into the event's ``__adsb alt_baro``)."""
    return b"".join(
        f"MSG,3,1,1,{0xB00000 + i:06X},1,2026/12/07,12:00:00.000,2026/12/07,12:00:00.000,,{k},,,"
        f"{40 + i * 0.001:.5f},{-100 - (k % 100) * 0.0001:.5f},,,0,0,0,0\r\n".encode()
        for i in range(FLOOD_AIRCRAFT)
    )


class RawReader:
    """A client's reading side that keeps up: raw bytes, the flood's fixes found by a regular
    expression (a frame parser in this process would fall behind the server, and the test
    would measure the test client)."""

    def __init__(self, client: Client, written: dict[int, float]) -> None:
        self.client = client
        self.written = written
        self.ages: list[float] = []
        self.newest: dict[bytes, int] = {}
        self.seen: dict[bytes, float] = {}  # marker -> when it was read
        self.markers: set[bytes] = set()
        self._rest = b""

    async def run(self) -> None:
        while True:
            data = await self.client.reader.read(1 << 20)
            if not data:
                return
            now = time.monotonic()
            buf = self._rest + data
            end = buf.rfind(b"</event>")
            if end < 0:
                self._rest = buf
                continue
            end += len(b"</event>")
            chunk, self._rest = buf[:end], buf[end:]
            for uid, k in ALT_RE.findall(chunk):
                self.ages.append(now - self.written[int(k)])
                if int(k) > self.newest.get(uid, -1):
                    self.newest[uid] = int(k)
            for marker in self.markers:
                if marker not in self.seen and marker in chunk:
                    self.seen[marker] = now

    async def wait_for(self, marker: bytes, within: float) -> float:
        self.markers.add(marker)
        for _ in range(int(within / 0.01)):
            if marker in self.seen:
                return self.seen[marker]
            await asyncio.sleep(0.01)
        raise AssertionError(f"{marker!r} not read within {within} s")


async def test_a_flooding_feed_never_delays_chat_and_its_picture_is_never_late(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    """An SBS-1 upstream writes 1,000 aircraft ten times a second (10,000 fixes a second,
    published at most every 0.1 s each: far more than the server can deliver) while two clients
    chat: chat stays within a second, every flood fix a client gets is recent (the
    publisher thins instead of queueing), and once the flood stops each client holds every
    aircraft exactly once, at its last position."""
    written: dict[int, float] = {}  # round -> when it was written
    stop = asyncio.Event()
    rounds_done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = time.monotonic()
        for k in range(MAX_FLOOD_ROUNDS):
            if stop.is_set():
                break
            block = flood_round(k)
            written[k] = time.monotonic()
            writer.write(block)
            await writer.drain()
            await asyncio.sleep(max(0.0, start + (k + 1) / FLOOD_ROUNDS_PER_S - time.monotonic()))
        rounds_done.set()
        await reader.read()  # hold the connection open until the feed goes
        writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + FLOOD_FEED.format(port=port))
    try:
        async with start_server(policy_file=str(policy)) as server:
            assert server.feeds is not None
            feeds = server.feeds
            secret, unclass = await two_clients(server, data_dir)
            flood = RawReader(secret, written)
            async with clients(secret, unclass), asyncio.TaskGroup() as tg:
                reading = tg.create_task(flood.run())
                await flood.wait_for(b'uid="ICAO-b', within=10)
                latencies = []
                for n in range(CHATS):
                    # Each way: to the client that receives the flood, and from it.
                    text = f"flood-chat-{n}".encode()
                    sent = time.monotonic()
                    if n % 2 == 0:
                        await unclass.send(chat_event("uid-u", "usa-u", text.decode()))
                        latencies.append(await flood.wait_for(text, within=10) - sent)
                    else:
                        await secret.send(chat_event("uid-s", "usa-s", text.decode()))
                        await unclass.wait_for(text, within=10)
                        latencies.append(time.monotonic() - sent)
                    await asyncio.sleep(CHAT_EVERY_S)
                flooded_s = time.monotonic() - min(written.values())
                stop.set()
                await asyncio.wait_for(rounds_done.wait(), 10)
                last = max(written)
                # The flood is over: the pending fixes go out, then every aircraft is there.
                for _ in range(300):
                    if feeds.tracks.pending == 0:
                        break
                    await asyncio.sleep(0.1)
                assert feeds.tracks.pending == 0
                for _ in range(100):
                    if set(flood.newest.values()) == {last}:
                        break
                    await asyncio.sleep(0.1)
                reading.cancel()
                await unclass.collect(0.3)
            dropped = dict(feeds.m_dropped.values)
            behind = dict(feeds.m_behind.values)
            published = feeds.m_published.get("flood")
            refused = feeds.m_refused.get("flood")
            reports = feeds.m_reports.get("flood")
            tracks = len(feeds.tracks)
    finally:
        upstream.close()
        await upstream.wait_closed()
    # Far more was offered than published: the table coalesced and thinned it, counted.
    # Every line was either parsed into a report or skipped unparsed while the feed was more than
    # READ_BEHIND_BYTES behind the upstream (the last line of one skipped chunk is cut in two).
    skipped = dropped.get("skipped", 0)
    assert flooded_s >= 4.0 and last >= 3
    assert reports + skipped >= FLOOD_AIRCRAFT * (last + 1) - 2 * (skipped // 100 + 1)
    assert published < 0.75 * (reports + skipped)
    assert dropped.get("coalesced", 0) + dropped.get("thinned", 0) > 0
    # Every report read is accounted for: published, refused, or dropped with its reason (none
    # waits any more).
    not_published = sum(dropped.get(r, 0) for r in ("old", "coalesced", "thinned", "evicted"))
    assert reports == published + refused + not_published
    assert behind, "the flood never made the server behind: not a flood"
    # Chat was never held up by the flood, either way.
    assert sorted(latencies)[len(latencies) // 2] < CHAT_LATENCY_MEDIAN_LIMIT_S, latencies
    assert max(latencies) < CHAT_LATENCY_LIMIT_S, latencies
    # Every flood fix the client got was recent: the picture is coarser, never late (main, which
    # published each line as read and let the rest wait in TCP buffers, fell further behind for
    # as long as a flood lasted).
    ages = sorted(flood.ages)
    assert ages and ages[len(ages) // 2] < FLOOD_AGE_MEDIAN_LIMIT_S, ages[len(ages) // 2]
    assert ages[-1] < FLOOD_AGE_LIMIT_S, ages[-1]
    # The merge is exact: every aircraft once, in the server and at the client, at its last fix.
    assert tracks == FLOOD_AIRCRAFT
    assert len(flood.newest) == FLOOD_AIRCRAFT
    assert set(flood.newest.values()) == {last}
    assert b"ICAO-b" not in unclass.raw
