"""The server's cost per delivery, counted rather than timed: instructions (callgrind) and calls.

Wall-clock CPU per delivery (``run_compare.py``) moves by 20-50 % from run to run on a shared
machine. This bench drives a fixed workload through a real server process and counts what the
server does for it:

1. Starts the server (Liaison on TCP, on mutual TLS, with the labels policy, or the bare relay
   ``bench/relay.py``), under ``valgrind --tool=callgrind --instr-atstart=no`` with ``--callgrind``.
2. Connects N clients (mutual TLS with a client certificate issued from the server's CA for
   ``--target tls``); each sends one position report so the server knows it; waits until all
   those reports arrived everywhere.
3. Turns counting on (``callgrind_control -i on``), then runs B bursts: in each, ``--burst`` K
   clients (in turn) send one report each, back to back, and the bench waits until every other
   client has received all K before the next burst. Every burst is K x (N - 1) deliveries. Then
   counting is turned off, the server stopped, and callgrind's total read.

Printed per delivery: the server's user-space instructions (callgrind ``Ir``: the same for the
same build and workload, whatever else runs on the machine), and its CPU time (utime, stime from
``/proc``) for reference. ``--strace`` instead counts the server's system calls over the same
window (``strace -c -f``): socket writes and reads per delivery, which is where the kernel's
share of the cost comes from (callgrind sees user space only).

    .venv/bin/python bench/delivery_cost_bench.py --target tcp --callgrind
    .venv/bin/python bench/delivery_cost_bench.py --target relay --callgrind
    .venv/bin/python bench/delivery_cost_bench.py --target tls --strace
    PYTHONPATH=<other tree>/src .venv/bin/python bench/delivery_cost_bench.py --target labels ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_event

REPO = Path(__file__).resolve().parent.parent
POLICY = Path(__file__).with_name("labels-policy.toml")
MARKER = b"<remarks>lbq/"
TARGETS = ("tcp", "tls", "labels", "relay")
# Seconds to wait for the server to listen (callgrind starts Python about 50 times slower).
START_TIMEOUT_S = 600.0
# Seconds without a new report arriving after which the clients' first reports count as done
# (the relay never delivers those sent before it accepted their receivers).
REGISTER_STALL_S = 30.0
# Seconds one burst (or the registration) may take to arrive everywhere.
ARRIVAL_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_argv(target: str, data_dir: Path, port: int, storage: str | None = None) -> list[str]:
    py = sys.executable
    if target == "relay":
        return [py, str(Path(__file__).with_name("relay.py")), "--port", str(port)]
    common = ["--data-dir", str(data_dir), "--udp", "off", "--https", "off", "--enroll", "off"]
    if storage is not None:
        common += ["--storage", storage]
    if target == "tls":
        tls = ["--tcp", f"127.0.0.1:{free_port()}", "--tls", f"127.0.0.1:{port}"]
        return [py, "-m", "liaison", "serve", *common, *tls, "--public-host", "localhost"]
    return [py, "-m", "liaison", "serve", *common, "--tcp", f"127.0.0.1:{port}", "--tls", "off"]


def client_context(data_dir: Path) -> ssl.SSLContext:
    """A client certificate from the new server's CA, as run_compare.py issues for its TLS run."""
    from liaison.identity.certs import ServerPki
    from liaison.identity.issue import issue_client_cert

    pki = ServerPki.at(data_dir)
    issued = issue_client_cert(pki, common_name="bench-delivery", org=None)
    cert, key = data_dir / "bench.pem", data_dir / "bench.key"
    cert.write_bytes(issued.cert_pem)
    assert issued.key_pem is not None
    key.write_bytes(issued.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # 127.0.0.1; the chain is still verified
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Counter:
    """Reports received by all clients (markers in the remarks), and a waiter for a total."""

    def __init__(self) -> None:
        self.received = 0
        self.target = 0
        self.reached = asyncio.Event()

    def add(self, n: int) -> None:
        self.received += n
        if self.received >= self.target:
            self.reached.set()

    async def wait_for(self, total: int, limit_s: float = ARRIVAL_TIMEOUT_S) -> None:
        self.target = total
        self.reached.clear()
        if self.received >= total:
            return
        await asyncio.wait_for(self.reached.wait(), limit_s)


class Client(asyncio.Protocol):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        n = buf.count(MARKER)
        # Keep what could be the start of a marker cut by the read boundary.
        self.tail = buf[-(len(MARKER) - 1) :] if not buf.endswith(MARKER) else b""
        if n:
            self.counter.add(n)


async def run_quietly(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"{argv[0]} failed")


def read_cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def drive(args: argparse.Namespace, pid: int, ctx: ssl.SSLContext | None) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    counter = Counter()
    clients: list[Client] = []
    for _ in range(args.clients):
        _, proto = await loop.create_connection(
            lambda: Client(counter), "127.0.0.1", args.port, ssl=ctx
        )
        clients.append(proto)
    await asyncio.sleep(args.settle)  # the server accepts (the bare relay says nothing when)
    now = dt.datetime.now(dt.UTC)
    seq = 0
    for i, c in enumerate(clients):  # each client makes itself known
        assert c.transport is not None
        c.transport.write(build_event(i, seq, 0, now))
    n = args.clients
    # Every report everywhere; the relay forwards only to peers it had accepted already, so
    # settle for "no more arriving" there.
    last = -1
    while counter.received < n * (n - 1) and counter.received != last:
        last = counter.received
        with contextlib.suppress(TimeoutError):
            # Under callgrind on a busy machine the server may take many seconds per round.
            await counter.wait_for(n * (n - 1), limit_s=max(args.settle * 3, REGISTER_STALL_S))
    await asyncio.sleep(args.settle)
    base = counter.received
    if args.callgrind:
        await run_quietly("callgrind_control", "-i", "on", str(pid))
    tracer = None
    if args.strace:
        tracer = await asyncio.create_subprocess_exec(
            *("strace", "-c", "-f", "-p", str(pid), "-o", str(args.strace_out)),
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(2.0)  # strace attaches to every thread
    cpu0 = read_cpu(pid)
    t0 = time.monotonic()
    k = args.burst
    sender = 0
    for b in range(args.bursts):
        seq += 1
        now = dt.datetime.now(dt.UTC)
        if args.senders == "one":
            # One client writes the burst's K reports (K clients' uids) in one write, so the
            # server reads them in one go and flushes each reader once: the same batching in
            # every run, whatever the machine's timing.
            c = clients[b % n]
            assert c.transport is not None
            burst = []
            for _ in range(k):
                if sender % n == b % n:
                    sender += 1  # not the writer's own uid: it gets no copy of that one
                burst.append(build_event(sender % n, seq, 0, now))
                sender += 1
            c.transport.write(b"".join(burst))
        else:
            for _ in range(k):
                c = clients[sender % n]
                assert c.transport is not None
                c.transport.write(build_event(sender % n, seq, 0, now))
                sender += 1
        await counter.wait_for(base + (b + 1) * k * (n - 1))
    wall = time.monotonic() - t0
    cpu1 = read_cpu(pid)
    if args.callgrind:
        await run_quietly("callgrind_control", "-i", "off", str(pid))
    if tracer is not None:
        tracer.send_signal(signal.SIGINT)
        await asyncio.wait_for(tracer.wait(), 60)
    deliveries = counter.received - base
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.5)
    return {
        "deliveries": deliveries,
        "utime_s": cpu1[0] - cpu0[0],
        "stime_s": cpu1[1] - cpu0[1],
        "wall_s": wall,
    }


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise RuntimeError("server did not listen in time")


def callgrind_total(path: Path) -> int:
    text = path.read_text(errors="replace")
    m = re.search(r"^totals:\s*(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no totals in {path}")
    return int(m.group(1))


def strace_calls(path: Path) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1].isidentifier():
            calls[parts[-1]] = int(parts[3])
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--target", choices=TARGETS, default="tcp")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--bursts", type=int, default=40)
    ap.add_argument("--burst", type=int, default=2, help="reports sent at once per burst")
    ap.add_argument(
        "--senders",
        choices=("one", "many"),
        default="one",
        help="a burst written by one client in one write (one: exact batching), or by K clients",
    )
    ap.add_argument("--storage", help="Liaison's --storage (sqlite, the default, or memory)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait between phases")
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    ap.add_argument("--strace", action="store_true", help="count system calls (strace -c)")
    ap.add_argument("--cprofile", type=Path, help="run the server under cProfile into FILE")
    ap.add_argument("--keep", action="store_true", help="keep the data folder and outputs")
    args = ap.parse_args(argv)
    if args.callgrind and args.strace:
        ap.error("--callgrind and --strace measure one at a time")
    tmp = Path(tempfile.mkdtemp(prefix="delivery-cost-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    args.port = free_port()
    args.strace_out = tmp / "strace.txt"
    cg_out = tmp / "callgrind.out"
    argv_ = server_argv(args.target, data_dir, args.port, args.storage)
    env = dict(os.environ, PYTHONHASHSEED="0")
    if args.target == "labels":
        env["LIAISON_POLICY_FILE"] = str(POLICY)
    if args.cprofile:
        argv_ = [argv_[0], "-m", "cProfile", "-o", str(args.cprofile), *argv_[1:]]
    if args.callgrind:
        argv_ = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={cg_out}",
            *argv_,
        ]
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(argv_, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(args.port, proc)
        ctx = client_context(data_dir) if args.target == "tls" else None
        result = asyncio.run(drive(args, proc.pid, ctx))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    d = result["deliveries"]
    expected = args.bursts * args.burst * (args.clients - 1)
    line = (
        f"target {args.target}  clients {args.clients}  bursts {args.bursts} x {args.burst}"
        f" ({args.senders})"
        f"  deliveries {d:.0f} (expected {expected})"
        f"  cpu us/delivery user {result['utime_s'] / d * 1e6:.2f}"
        f" sys {result['stime_s'] / d * 1e6:.2f}"
    )
    if args.callgrind:
        line += f"  Ir/delivery {callgrind_total(cg_out) / d:.0f}"
    if args.strace:
        calls = strace_calls(args.strace_out)
        writes = sum(calls.get(c, 0) for c in ("sendto", "sendmsg", "write", "writev"))
        reads = sum(calls.get(c, 0) for c in ("recvfrom", "recvmsg", "read"))
        line += f"  writes/delivery {writes / d:.3f}  reads/delivery {reads / d:.4f}"
        line += "  calls " + " ".join(f"{k}={v}" for k, v in sorted(calls.items()))
    print(line)
    print("reproduce:", shlex.join(["python", "bench/delivery_cost_bench.py", *sys.argv[1:]]))
    if args.keep:
        print("kept:", tmp)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if d == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
