"""TAK federation v2 benchmark: events/s through the guard onto a v2 (gRPC) link to a local FIG
peer, and the latency from accept to the peer.

Liaison's side runs in this process: a real Router, a Federation with one ``tak-v2`` peer that
it dials over mutual TLS (certificates made for the run), the link's guard, persistent outbox
(durable, as in production) and the v2 client wire (translation to FederatedEvent, send-time
re-check from the serialized bytes, HealthCheck-confirmed delivery). Events are labelled
position reports, markers and chats (80/10/10) published into the router by a feed, each with
its accept time (``time.time_ns()``) in its uid.

The peer is a minimal TAK v2 server in a **separate process** (``--peer``, grpcio): it answers
the groups stream with SERVING, holds ClientEventStream, answers HealthCheck SERVING, and for
every FederatedEvent on ServerEventStream decodes it and notes the receipt time. Latency is
receipt time minus the accept time carried in the uid (same host clock).

Two phases:
1. ``throughput``: N events published as fast as the router takes them (in chunks, yielding to
   the loop between chunks); events/s = N / (first publish .. last receipt at the peer).
2. ``latency``: events published at a steady rate below saturation for a few seconds;
   p50/p99/max of accept -> peer receipt.

    .venv/bin/python bench/takfed_bench.py                  # 30,000 events, then 3 s at 1,000/s
    .venv/bin/python bench/takfed_bench.py --events 50000 --rate 2000 --json

Goal (issue 12): at least 10,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from liaison.federation.proto import fig_pb2  # noqa: E402

SERVICE = "com.atakmap.FederatedChannel"
# Events published between two yields to the loop in the throughput phase.
CHUNK = 200
# Seconds any phase may take before the benchmark gives up.
PHASE_LIMIT_S = 120.0


# --- the peer (separate process) -----------------------------------------------------------------


async def _peer_main(chain: bytes, key: bytes, ca: bytes) -> None:
    import grpc
    import grpc.aio

    times: list[tuple[int, int]] = []  # (accept ns from the uid, receipt ns)
    client_open = asyncio.Event()

    async def groups(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield fig_pb2.FederateGroups(
            streamUpdate=fig_pb2.ServerHealth(status=fig_pb2.ServerHealth.SERVING)
        ).SerializeToString()
        await asyncio.Event().wait()

    async def client_events(request: bytes, context: Any) -> AsyncIterator[bytes]:
        client_open.set()
        await asyncio.Event().wait()
        yield b""  # never reached

    async def server_events(requests: AsyncIterator[bytes], context: Any) -> bytes:
        parse = fig_pb2.FederatedEvent.FromString
        async for data in requests:
            now = time.time_ns()
            fed = parse(data)
            if fed.HasField("event"):  # contact entries (before a unit's first report) skipped
                times.append((int(fed.event.uid.rsplit("-", 1)[1]), now))
        return fig_pb2.Subscription().SerializeToString()

    async def health(request: bytes, context: Any) -> bytes:
        status = fig_pb2.ServerHealth.SERVING if client_open.is_set() else 0
        return fig_pb2.ServerHealth(status=status).SerializeToString()

    async def rol(request: bytes, context: Any) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    handlers = {
        "ServerFederateGroupsStream": grpc.unary_stream_rpc_method_handler(groups),
        "ClientEventStream": grpc.unary_stream_rpc_method_handler(client_events),
        "ServerEventStream": grpc.stream_unary_rpc_method_handler(server_events),
        "HealthCheck": grpc.unary_unary_rpc_method_handler(health),
        "ClientROLStream": grpc.unary_stream_rpc_method_handler(rol),
    }
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    creds = grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=ca,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # Commands: "report" prints what arrived since the last report and forgets it; EOF stops.
    for _ in range(1000):
        line = await reader.readline()
        if not line:
            break
        batch, times[:] = list(times), []
        print(json.dumps({"times": batch, "cpu_s": time.process_time()}), flush=True)
    await server.stop(0)


async def _peer_client_main(port: int, chain: bytes, key: bytes, ca: bytes) -> None:
    """The peer as a TAK v2 *client* (``--role server``): dials Liaison's federation listener,
    waits for SERVING on the groups stream, opens ClientEventStream (our events) and then
    ServerEventStream (held open, nothing sent), checks health every second, and notes the
    receipt time of every FederatedEvent with an event."""
    import grpc
    import grpc.aio

    times: list[tuple[int, int]] = []
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        creds,
        options=[
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ],
    )
    service = f"/{SERVICE}/"
    sub = fig_pb2.Subscription(
        identity=fig_pb2.Identity(name="bench-peer", serverId="bench-peer"),
        version=fig_pb2.TakServerVersion(major=5),
    ).SerializeToString()
    groups = channel.unary_stream(service + "ServerFederateGroupsStream")(sub)
    async for _update in groups:
        break  # SERVING comes first
    inbound = channel.unary_stream(service + "ClientEventStream")(sub)

    async def nothing() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""  # never reached

    held = channel.stream_unary(service + "ServerEventStream")(nothing())

    async def read() -> None:
        parse = fig_pb2.FederatedEvent.FromString
        async for data in inbound:
            now = time.time_ns()
            fed = parse(data)
            if fed.HasField("event"):
                times.append((int(fed.event.uid.rsplit("-", 1)[1]), now))

    async def health() -> None:
        check = channel.unary_unary(service + "HealthCheck")
        request = fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING).SerializeToString()
        while True:
            await check(request, timeout=10)
            await asyncio.sleep(1.0)

    tasks = [asyncio.ensure_future(read()), asyncio.ensure_future(health())]
    print(json.dumps({"port": port}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for _ in range(1000):
        line = await reader.readline()
        if not line:
            break
        batch, times[:] = list(times), []
        print(json.dumps({"times": batch, "cpu_s": time.process_time()}), flush=True)
    for task in tasks:
        task.cancel()
    held.cancel()
    await channel.close()


# --- Liaison's side ------------------------------------------------------------------------------


def _policy() -> Any:
    from liaison.model.policy import load_policy

    return load_policy((REPO / "examples" / "policy.toml").read_text())


class Feed:
    def __init__(self) -> None:
        from liaison.model.principal import Principal, PrincipalKind

        self._principal = Principal(name="bench-feed", kind=PrincipalKind.SERVICE, org="USA")

    @property
    def principal(self) -> Any:
        return self._principal


def _events(policy: Any, n: int, start: int) -> list[tuple[int, bytes]]:
    """(index, CoT XML with a {ns} placeholder in the uid), labelled releasable to UKR."""
    from liaison.model import labels
    from liaison.model.labels import Label
    from liaison.protocol import cot_xml

    now_ms = int(time.time() * 1000)
    t, stale = cot_xml.format_time(now_ms), cot_xml.format_time(now_ms + 3_600_000)
    lab = labels.seclabel_to_xml(
        policy,
        Label(
            policy_id=policy.id,
            classification="SECRET",
            categories={"REL": frozenset({"USA", "UKR"})},
            originator="USA",
            created_ms=now_ms,
        ),
    )
    out = []
    for i in range(start, start + n):
        kind = i % 10
        if kind == 0:
            typ = "b-t-f"
            detail = (
                f'<__chat chatroom="All Chat Rooms" id="All Chat Rooms"'
                f' senderCallsign="U{i % 200}">'
                f'<chatgrp uid0="u{i % 200}" uid1="All Chat Rooms" id="All Chat Rooms"/></__chat>'
                f'<link uid="u{i % 200}" type="a-f-G-U-C" relation="p-p"/>'
                f"<remarks>message {i}</remarks>"
            )
        elif kind == 1:
            typ = "a-h-G"
            detail = f'<contact callsign="M{i}"/><remarks>marker {i}</remarks>'
        else:
            typ = "a-f-G-U-C"
            detail = (
                f'<contact callsign="U{i % 200}" endpoint="*:-1:stcp"/><__group name="Cyan"'
                f' role="Team Member"/><track course="90.0" speed="1.5"/><status battery="80"/>'
            )
        xml = (
            f'<event version="2.0" uid="b{i}-{{ns}}" type="{typ}" how="m-g" time="{t}"'
            f' start="{t}" stale="{stale}"><point lat="50.4" lon="30.5" hae="100.0" ce="9.9"'
            f' le="9.9"/><detail>{detail}{lab}</detail></event>'
        )
        out.append((i, xml.encode()))
    return out


class Bench:
    def __init__(self, root: Path, role: str = "client", window: int = 1000) -> None:
        self.root = root
        self.window = window  # [federation] window: rows sent and not yet acknowledged/settled
        self.role = role  # Liaison's: "client" dials the peer, "server" is dialled by it

    async def start(self) -> None:
        from liaison.audit import AuditLog
        from liaison.federation.config import federation_from_table
        from liaison.federation.supervisor import Federation
        from liaison.identity.ca import ensure_server_pki
        from liaison.identity.certs import fingerprint_sha256, load_server_cert
        from liaison.latest import MemoryLatestState
        from liaison.metrics import Metrics
        from liaison.router import Router

        root = self.root
        self.policy = _policy()
        usa = ensure_server_pki(root / "usa", public_host="localhost")
        peer = ensure_server_pki(root / "peer", public_host="127.0.0.1", ca_name="Bench Peer CA")
        chain = root / "peer-chain.pem"
        pem = peer.server_cert.read_bytes() + peer.ca_cert.read_bytes()
        await asyncio.to_thread(chain.write_bytes, pem)
        if self.role == "client":
            await self._spawn("--peer", str(chain), str(peer.server_key), str(usa.ca_cert))
            assert self.proc.stdout is not None
            port = json.loads(await self.proc.stdout.readline())["port"]

        def now_ms() -> int:
            return time.time_ns() // 1_000_000

        where: dict[str, Any] = (
            {"dial": f"127.0.0.1:{port}"} if self.role == "client" else {"accept": True}
        )
        config = federation_from_table(
            {
                "server_id": "usa-srv",
                "window": self.window,
                "listen": "off" if self.role == "client" else "127.0.0.1:0",
                "peer": [
                    {
                        "name": "ukr",
                        **where,
                        "ca_file": str(peer.ca_cert),
                        "fingerprint": fingerprint_sha256(load_server_cert(peer)),
                        "protocol": "tak-v2",
                        "release_ceiling": {"classification": "SECRET", "REL": ["UKR", "LIAISON"]},
                        "originate": {"org": "UKR", "classification": "SECRET", "REL": ["UKR"]},
                        "allow_types": ["a-", "b-t-f"],
                        "coalesce": False,
                    }
                ],
            },
            self.policy,
            default_server_id="x",
        )
        self.router = Router(metrics=Metrics(), clock_ms=now_ms, latest=MemoryLatestState())
        self.audit = AuditLog.open(root / "usa" / "audit.log", None)
        self.fed = Federation(
            config=config,
            policy=self.policy,
            router=self.router,
            audit=self.audit,
            data_dir=root / "usa",
            server_cert=usa.server_cert,
            server_key=usa.server_key,
            clock_ms=now_ms,
        )
        await self.fed.start()
        self.task = asyncio.create_task(self.fed.run())
        self.link = self.fed.links["ukr"]
        if self.role == "server":
            assert self.fed.bound is not None
            await self._spawn(
                "--peer-client",
                str(self.fed.bound.port),
                str(chain),
                str(peer.server_key),
                str(usa.ca_cert),
            )
            assert self.proc.stdout is not None
            await self.proc.stdout.readline()
        self.feed = Feed()
        deadline = time.monotonic() + 30
        while self.link.status.state.value != "up":  # bounded poll
            if time.monotonic() > deadline:
                raise RuntimeError(f"link not up: {self.link.status.last_error}")
            await asyncio.sleep(0.05)

    async def _spawn(self, *args: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=256 * 1024 * 1024,
        )

    def publish(self, xml: bytes) -> None:
        from liaison.protocol import cot_xml

        data = xml.replace(b"{ns}", str(time.time_ns()).encode(), 1)
        self.router.publish(cot_xml.parse_event(data), self.feed)

    async def collect(self, expected: int) -> list[tuple[int, int]]:
        """Everything the peer received until ``expected`` arrived (or the phase limit); the
        peer's process CPU time at its last report is kept in ``peer_cpu_s``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + PHASE_LIMIT_S
        while len(got) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            self.proc.stdin.write(b"report\n")
            await self.proc.stdin.drain()
            report = json.loads(await self.proc.stdout.readline())
            got += [tuple(x) for x in report["times"]]
            self.peer_cpu_s = float(report["cpu_s"])
        return got

    async def peer_cpu(self) -> float:
        """The peer process's CPU seconds so far (what arrived meanwhile is not kept)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"report\n")
        await self.proc.stdin.drain()
        return float(json.loads(await self.proc.stdout.readline())["cpu_s"])

    async def stop(self) -> None:
        self.task.cancel()
        # A write cut short by the cancellation may end the session with grpcio's own error.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.audit.close()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(
    events: int, rate: float, seconds: float, root: Path, role: str = "client", window: int = 1000
) -> dict[str, Any]:
    bench = Bench(root, role, window)
    await bench.start()
    try:
        # 1. Throughput: publish as fast as the router takes them.
        batch = _events(bench.policy, events, 0)
        peer_cpu0 = await bench.peer_cpu()
        cpu0 = time.process_time()
        start_ns = time.time_ns()
        for k in range(0, events, CHUNK):
            for _, xml in batch[k : k + CHUNK]:
                bench.publish(xml)
            await asyncio.sleep(0)
        publish_s = (time.time_ns() - start_ns) / 1e9
        got = await bench.collect(events)
        cpu = time.process_time() - cpu0
        last_ns = max(r for _, r in got) if got else time.time_ns()
        wall = (last_ns - start_ns) / 1e9
        lat = [(r - a) / 1e6 for a, r in got]
        throughput = {
            "events": events,
            "received": len(got),
            "publish_s": publish_s,
            "wall_s": wall,
            "events_per_s": len(got) / wall,
            "liaison_cpu_us_per_event": cpu / max(1, len(got)) * 1e6,
            "peer_cpu_us_per_event": (bench.peer_cpu_s - peer_cpu0) / max(1, len(got)) * 1e6,
            "latency_ms_p50": _pct(lat, 50),
            "latency_ms_p99": _pct(lat, 99),
            "denials": bench.link.status.counts["denials"],
        }
        # 2. Latency at a steady rate below saturation.
        n = int(rate * seconds)
        paced = _events(bench.policy, n, events)
        t0 = time.monotonic()
        for j, (_, xml) in enumerate(paced):
            bench.publish(xml)
            delay = t0 + (j + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        got2 = await bench.collect(n)
        lat2 = [(r - a) / 1e6 for a, r in got2]
        latency = {
            "rate_per_s": rate,
            "events": n,
            "received": len(got2),
            "latency_ms_p50": _pct(lat2, 50),
            "latency_ms_p99": _pct(lat2, 99),
            "latency_ms_max": max(lat2),
            "latency_ms_mean": statistics.fmean(lat2),
        }
    finally:
        await bench.stop()
    return {"throughput": throughput, "latency": latency}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        chain, key, ca = (Path(f).read_bytes() for f in sys.argv[2:5])
        asyncio.run(_peer_main(chain, key, ca))
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "--peer-client":
        chain, key, ca = (Path(f).read_bytes() for f in sys.argv[3:6])
        asyncio.run(_peer_client_main(int(sys.argv[2]), chain, key, ca))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase, events/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="latency phase length")
    parser.add_argument(
        "--role",
        choices=("client", "server"),
        default="client",
        help="Liaison's role: client dials the peer (a grpcio server), server is dialled by it"
        " (a grpcio client)",
    )
    parser.add_argument(
        "--window", type=int, default=1000, help="[federation] window (1000 in production)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liaison-takfedbench-") as tmp:
        result = asyncio.run(
            run(args.events, args.rate, args.seconds, Path(tmp), args.role, args.window)
        )
    result["command"] = " ".join([".venv/bin/python", "bench/takfed_bench.py", *sys.argv[1:]])
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }
    result["goal_10000_events_per_s"] = result["throughput"]["events_per_s"] >= 10_000
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t, lat = result["throughput"], result["latency"]
    print(f"command: {result['command']}")
    print(
        f"throughput: {t['received']:,}/{t['events']:,} events at the peer in {t['wall_s']:.2f} s"
        f" = {t['events_per_s']:,.0f} events/s (publishing took {t['publish_s']:.2f} s;"
        f" {t['liaison_cpu_us_per_event']:.0f} us Liaison CPU/event,"
        f" {t['peer_cpu_us_per_event']:.0f} us peer CPU/event; latency under saturation"
        f" p50 {t['latency_ms_p50']:.0f} ms, p99 {t['latency_ms_p99']:.0f} ms)"
    )
    print(
        f"latency at {lat['rate_per_s']:,.0f} events/s: {lat['received']:,}/{lat['events']:,}"
        f" received, accept -> peer p50 {lat['latency_ms_p50']:.2f} ms,"
        f" p99 {lat['latency_ms_p99']:.2f} ms, max {lat['latency_ms_max']:.2f} ms"
    )
    print(f"machine: {result['machine']}")
    ok = result["goal_10000_events_per_s"]
    print(f"{'PASS' if ok else 'FAIL'} >= 10,000 events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
