"""Idle-connections benchmark: N mutual-TLS (or plain TCP) clients held by one server.

    python bench/idle_bench.py                       # 2,000 mutual-TLS clients
    python bench/idle_bench.py --clients 10000       # 10,000 (four worker processes)
    python bench/idle_bench.py --mode tcp            # the same over plain TCP, for comparison

The bench starts Liaison (TCP and TLS listeners on free loopback ports, data in a fresh temporary
directory), issues one client certificate from the server's CA, and then:

1. An observer (this process) connects, sends its own position report (uid ``IDLE-OBSERVER``)
   and keeps reading in a thread. A probe on the plain TCP port sends it addressed reports until
   one arrives, so the server is known to route to the observer before the clients start. The
   server's RSS and PSS are read: the baseline.
2. ``--workers`` worker processes (raw non-blocking sockets, ``ssl`` and one epoll loop each,
   so that the client side stays light) get ``go`` at the same moment and start all their
   connections at once. Each client completes its TLS handshake, sends one ATAK-style position
   report and then only reads. A client counts as connected when the first bytes of the
   server's session arrive (the ``t-x-takp-v`` offer it writes once the session is open), so
   "connect time" is from ``go`` to the last session opened, as a client sees it.
3. After ``--settle`` seconds the server's ``/proc/PID/smaps_rollup`` (Rss, Pss) and
   ``/proc/PID/status`` (VmRSS, VmHWM) are read again; per client = (after - baseline) / N.
4. The observer sends one position report with a unique marker; every one of the N clients must
   receive it (implicit broadcast). Arrivals are counted per client by the workers.

``--fanout`` decides where the clients' own reports go. ``observer`` (the default) addresses
each to the observer (``<marti><dest uid="IDLE-OBSERVER"/>``), so the connect phase costs the
server O(N) deliveries; ``all`` sends ordinary reports, which every other client receives and
every later client is replayed: N*(N-1) deliveries, fine for 2,000, not for 10,000.

The soft limit on open files is raised to the hard limit (servers and workers inherit it); a
run needs N + some hundred descriptors in the server. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import os
import resource
import selectors
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"

DEFAULT_SERVER_CMD = (
    "{repo}/.venv/bin/liaison serve --data-dir {data_dir} --tcp {host}:{tcp_port}"
    " --tls {host}:{tls_port} --udp off --https off --enroll off --public-host localhost"
)

# Clients per worker process when --workers is not given.
CLIENTS_PER_WORKER = 2500
# Seconds the whole connect phase may take before the run gives up on stragglers.
CONNECT_DEADLINE_S = 120.0
# Seconds the broadcast may take to reach every client.
BROADCAST_DEADLINE_S = 60.0
# Bytes one client keeps of what it read, to find a marker split across two reads.
TAIL_BYTES = 256
# The remark of the probe that confirms the server knows the observer, and how long that may take.
PROBE_MARK = b"idle-probe/"
OBSERVER_KNOWN_TIMEOUT_S = 60.0
READ_BYTES = 64 * 1024
OBSERVER_UID = "IDLE-OBSERVER"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def position_report(uid: str, callsign: str, remarks: str, dest_uid: str | None) -> bytes:
    """An ATAK-style self position report (as bench/loadgen.py's), optionally addressed."""
    now = dt.datetime.now(dt.UTC)
    t, stale = _iso(now), _iso(now + dt.timedelta(minutes=10))
    dest = f'<marti><dest uid="{dest_uid}"/></marti>' if dest_uid else ""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="40.01" lon="-72.01" hae="31.4" ce="4.9" le="9999999.0"/>'
        '<detail><takv os="34" version="4.10.0.7" device="GOOGLE PIXEL 7" platform="ATAK-CIV"/>'
        f'<contact endpoint="*:-1:stcp" callsign="{callsign}"/><uid Droid="{callsign}"/>'
        '<precisionlocation altsrc="GPS" geopointsrc="GPS"/>'
        '<__group role="Team Member" name="Cyan"/><status battery="87"/>'
        f'<track course="12.0" speed="1.2"/><remarks>{remarks}</remarks>{dest}'
        "</detail></event>"
    ).encode()


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return int(soft)


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the bench connects to 127.0.0.1; the chain is still verified
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


# --- worker ------------------------------------------------------------------------------


class _Client:
    __slots__ = ("connected", "got_broadcast", "handshaken", "out", "sock", "tail", "tls")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.tls = False
        self.handshaken = False
        self.connected = False
        self.got_broadcast = False
        self.out = b""
        self.tail = b""


def worker(args: argparse.Namespace) -> int:
    """Hold ``--count`` clients; answer the parent's commands on stdin, one per line."""
    raise_nofile()
    ctx = client_context(args.cert, args.key, args.ca) if args.mode == "tls" else None
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    sel.register(stdin.fileno(), selectors.EVENT_READ, None)
    clients: list[_Client] = []
    marker = b""
    connected = failed = 0
    last_connect_ns = 0
    command_buf = b""
    read_bytes = 0

    def fail(c: _Client) -> None:
        nonlocal failed
        failed += 1
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(c.sock)
        c.sock.close()

    def on_open(c: _Client, index: int) -> None:
        c.out = position_report(
            f"IDLE-{args.first + index:05d}",
            f"idle-{args.first + index:05d}",
            f"idle-report/{args.first + index}",
            OBSERVER_UID if args.fanout == "observer" else None,
        )

    def pump(c: _Client, index: int) -> None:
        nonlocal connected, last_connect_ns, read_bytes
        sock = c.sock
        try:
            if not c.handshaken:
                if ctx is not None and not c.tls:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    sel.unregister(sock)
                    c.sock = sock = ctx.wrap_socket(
                        sock, server_side=False, do_handshake_on_connect=False
                    )
                    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
                    c.tls = True
                if isinstance(sock, ssl.SSLSocket):
                    sock.do_handshake()
                else:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                c.handshaken = True
                on_open(c, index)
            if c.out:
                sent = sock.send(c.out)
                c.out = c.out[sent:]
            sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), index)
            while True:
                data = sock.recv(READ_BYTES)
                if not data:
                    fail(c)
                    return
                read_bytes += len(data)
                if not c.connected:
                    c.connected = True
                    connected += 1
                    last_connect_ns = time.monotonic_ns()
                if marker and not c.got_broadcast:
                    seen = c.tail + data
                    if marker in seen:
                        c.got_broadcast = True
                    c.tail = seen[-TAIL_BYTES:]
        except (ssl.SSLWantReadError, BlockingIOError):
            # Wait for input only (a socket registered for writing would wake the loop at once).
            sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), index)
            return
        except ssl.SSLWantWriteError:
            sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
            return
        except (OSError, ssl.SSLError) as exc:
            if args.verbose:
                print(f"# client {index}: {exc}", file=sys.stderr, flush=True)
            fail(c)

    started = False

    def start_more() -> None:
        """Start connections: all at once, or keep --concurrency of them in progress."""
        limit = args.concurrency or args.count
        while len(clients) < args.count and len(clients) - connected - failed < limit:
            index = len(clients)
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.setblocking(False)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
            code = raw.connect_ex((args.host, args.port))
            c = _Client(raw)
            clients.append(c)
            if code not in (0, errno.EINPROGRESS):
                fail(c)
                continue
            sel.register(raw, selectors.EVENT_WRITE, index)

    def command(line: str) -> bool:
        nonlocal marker, started
        word, _, rest = line.partition(" ")
        if word == "go":
            started = True
            start_more()
        elif word == "marker":
            marker = rest.encode()
            for c in clients:
                c.tail = b""
        elif word == "status":
            got = sum(1 for c in clients if c.got_broadcast)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime
            print(
                f"status {connected} {failed} {last_connect_ns} {got} {cpu:.3f} {read_bytes}",
                flush=True,
            )
        elif word == "quit":
            return False
        return True

    print("ready", flush=True)
    running = True
    while running:
        for key, _events in sel.select(timeout=1.0):
            if key.data is None:
                chunk = stdin.read1(4096) if hasattr(stdin, "read1") else stdin.read(4096)
                if not chunk:
                    running = False
                    break
                command_buf += chunk
                while b"\n" in command_buf:
                    line, command_buf = command_buf.split(b"\n", 1)
                    if not command(line.decode().strip()):
                        running = False
                        break
                continue
            index = key.data
            pump(clients[index], index)
        if started and len(clients) < args.count:
            start_more()
    for c in clients:
        with contextlib.suppress(OSError):
            c.sock.close()
    return 0


# --- parent ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"server did not listen on port {port} within {timeout:g} s")


def memory_kb(pid: int) -> dict[str, int]:
    """Rss and Pss from smaps_rollup, VmRSS and VmHWM from status (proc(5)), in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Private_Dirty", "Anonymous"):
            out[name.lower()] = int(rest.split()[0])
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name.lower()] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Observer:
    """The parent's own client: receives the addressed reports, sends the broadcast."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None) -> None:
        raw = socket.create_connection((HOST, port), timeout=30)
        self.sock: socket.socket = ctx.wrap_socket(raw) if ctx is not None else raw
        self.sock.settimeout(1.0)
        self.reports = 0
        self.probes = 0
        self.closed = False
        self._tail = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(READ_BYTES)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                break
            if not data:
                break
            seen = self._tail + data
            self.reports += seen.count(b"idle-report/") - self._tail.count(b"idle-report/")
            self.probes += seen.count(PROBE_MARK) - self._tail.count(PROBE_MARK)
            self._tail = seen[-TAIL_BYTES:]
        self.closed = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()


def await_observer_known(observer: Observer, tcp_port: int) -> None:
    """Send the observer's position report until the server routes to its uid.

    The clients' reports are addressed to ``IDLE-OBSERVER``, and an event addressed to a uid the
    server does not know yet is dropped (TAK's rule for offline destinations), so the connect
    phase must not start before the server has bound the observer's uid. A probe client on the
    plain TCP port sends a report addressed to it; once one arrives, the uid is known. A loaded
    machine (CI) can take seconds for the first event; bounded by OBSERVER_KNOWN_TIMEOUT_S.
    """
    deadline = time.monotonic() + OBSERVER_KNOWN_TIMEOUT_S
    with socket.create_connection((HOST, tcp_port), timeout=30) as probe:
        while observer.probes == 0:
            if time.monotonic() > deadline or observer.closed:
                raise SystemExit("the server never routed a report to the observer")
            observer.send(position_report(OBSERVER_UID, "idle-observer", "idle-observer", None))
            time.sleep(0.2)
            probe.sendall(
                position_report("IDLE-PROBE", "idle-probe", PROBE_MARK.decode(), OBSERVER_UID)
            )
            time.sleep(0.3)


class Workers:
    def __init__(self, argvs: list[list[str]]) -> None:
        self.procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for argv in argvs
        ]
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline().decode().strip()
            if line != "ready":
                raise RuntimeError(f"worker did not start: {line!r}")

    def send(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()

    def status(self) -> list[list[str]]:
        self.send("status")
        out = []
        for p in self.procs:
            assert p.stdout is not None
            out.append(p.stdout.readline().decode().split()[1:])
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("quit")
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    if nofile < args.clients + 200:
        raise SystemExit(f"open-file limit {nofile} is too low for {args.clients} clients")
    tcp_port, tls_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="liaison-idle-") as tmp:
        data_dir = Path(tmp)
        argv = shlex.split(
            args.server_cmd.format(
                repo=REPO_DIR, data_dir=data_dir, host=HOST, tcp_port=tcp_port, tls_port=tls_port
            )
        )
        log_path = data_dir / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
            try:
                return _measure(args, proc, data_dir, tcp_port, tls_port, argv)
            except BaseException:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def _measure(
    args: argparse.Namespace,
    proc: subprocess.Popen[bytes],
    data_dir: Path,
    tcp_port: int,
    tls_port: int,
    server_argv: list[str],
) -> dict[str, Any]:
    wait_for_port(tcp_port, proc, START_TIMEOUT_S)
    port = tls_port if args.mode == "tls" else tcp_port
    ctx: ssl.SSLContext | None = None
    cert = key = ca = ""
    if args.mode == "tls":
        from liaison.identity.certs import ServerPki
        from liaison.identity.issue import issue_client_cert

        pki = ServerPki.at(data_dir)
        issued = issue_client_cert(pki, common_name="idle-bench", org=None)
        cert, key, ca = str(data_dir / "c.pem"), str(data_dir / "c.key"), str(pki.ca_cert)
        Path(cert).write_bytes(issued.cert_pem)
        assert issued.key_pem is not None
        Path(key).write_bytes(issued.key_pem)
        # The observer has its own certificate (its own principal).
        own = issue_client_cert(pki, common_name="idle-observer", org=None)
        assert own.key_pem is not None
        Path(data_dir / "o.pem").write_bytes(own.cert_pem)
        Path(data_dir / "o.key").write_bytes(own.key_pem)
        ctx = client_context(str(data_dir / "o.pem"), str(data_dir / "o.key"), ca)
    observer = Observer(port, ctx)
    await_observer_known(observer, tcp_port)
    base_mem = memory_kb(proc.pid)
    workers_n = args.workers or max(1, -(-args.clients // CLIENTS_PER_WORKER))
    share = [
        args.clients // workers_n + (1 if i < args.clients % workers_n else 0)
        for i in range(workers_n)
    ]
    argvs = []
    first = 0
    for count in share:
        argvs.append(
            [
                sys.executable,
                __file__,
                "worker",
                "--host",
                HOST,
                "--port",
                str(port),
                "--mode",
                args.mode,
                "--first",
                str(first),
                "--count",
                str(count),
                "--fanout",
                args.fanout,
                "--cert",
                cert,
                "--key",
                key,
                "--ca",
                ca,
                "--rcvbuf",
                str(args.rcvbuf),
                "--concurrency",
                str(args.concurrency),
            ]
            + (["--verbose"] if args.verbose else [])
        )
        first += count
    workers = Workers(argvs)
    try:
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic_ns()
        workers.send("go")
        deadline = time.monotonic() + args.connect_deadline
        while True:
            time.sleep(0.25)
            st = workers.status()
            connected = sum(int(s[0]) for s in st)
            failed = sum(int(s[1]) for s in st)
            if connected + failed >= args.clients or time.monotonic() > deadline:
                break
        last = max(int(s[2]) for s in st)
        connect_s = (last - t0) / 1e9 if connected else None
        connect_cpu = cpu_seconds(proc.pid) - cpu0
        print(
            f"# connected {connected}/{args.clients} ({failed} failed) in {connect_s} s", flush=True
        )
        # Wait for the reports to reach the observer (observer fan-out) and the server to settle.
        deadline = time.monotonic() + args.settle + 30
        while args.fanout == "observer" and observer.reports < connected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        idle_cpu0, idle_t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.settle)
        idle_cpu = cpu_seconds(proc.pid) - idle_cpu0
        idle_s = time.monotonic() - idle_t0
        mem = memory_kb(proc.pid)
        marker = f"idle-broadcast/{uuid.uuid4().hex}"
        workers.send(f"marker {marker}")
        workers.status()  # the marker is set in every worker before the broadcast goes out
        cpu1 = cpu_seconds(proc.pid)
        tb = time.monotonic()
        observer.send(position_report(OBSERVER_UID, "idle-observer", marker, None))
        deadline = tb + BROADCAST_DEADLINE_S
        while True:
            st = workers.status()
            got = sum(int(s[3]) for s in st)
            if got >= connected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        broadcast_s = time.monotonic() - tb
        broadcast_cpu = cpu_seconds(proc.pid) - cpu1
        worker_cpu = sum(float(s[4]) for s in st)
        after = memory_kb(proc.pid)
    finally:
        workers.close()
        observer.close()
    n = max(connected, 1)
    report: dict[str, Any] = {
        "mode": args.mode,
        "fanout": args.fanout,
        "clients": args.clients,
        "concurrency": args.concurrency,
        "connected": connected,
        "failed": failed,
        "connect_s": connect_s,
        "server_connect_cpu_s": round(connect_cpu, 2),
        "server_idle_cpu_pct": round(100 * idle_cpu / idle_s, 2),
        "observer_reports": observer.reports,
        "broadcast_received": got,
        "broadcast_s": round(broadcast_s, 3),
        "server_broadcast_cpu_s": round(broadcast_cpu, 2),
        "server_rss_mb": round(mem["rss"] / 1024, 1),
        "server_pss_mb": round(mem["pss"] / 1024, 1),
        "server_hwm_mb": round(after["vmhwm"] / 1024, 1),
        "baseline_rss_mb": round(base_mem["rss"] / 1024, 1),
        "rss_kb_per_client": round(mem["rss"] / n, 1),
        "pss_kb_per_client": round(mem["pss"] / n, 1),
        "delta_rss_kb_per_client": round((mem["rss"] - base_mem["rss"]) / n, 1),
        "delta_pss_kb_per_client": round((mem["pss"] - base_mem["pss"]) / n, 1),
        "worker_processes": len(share),
        "worker_cpu_s": round(worker_cpu, 2),
        "loadavg_before": os.getloadavg(),
        "server_cmd": shlex.join(server_argv),
    }
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="(internal) one client process")
    w.add_argument("--host", default=HOST)
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--mode", choices=("tls", "tcp"), required=True)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--fanout", choices=("observer", "all"), default="observer")
    w.add_argument("--cert", default="")
    w.add_argument("--key", default="")
    w.add_argument("--ca", default="")
    w.add_argument("--rcvbuf", type=int, default=16384)
    w.add_argument("--concurrency", type=int, default=0)
    w.add_argument("--verbose", action="store_true")
    parser.add_argument("--clients", type=int, default=2000, help="clients to hold (2000)")
    parser.add_argument(
        "--mode", choices=("tls", "tcp"), default="tls", help="tls (default) or tcp"
    )
    parser.add_argument(
        "--fanout",
        choices=("observer", "all"),
        default="observer",
        help="where the clients' reports go: observer (default) or all",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help=f"client processes (default: one per {CLIENTS_PER_WORKER})",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring (5)")
    parser.add_argument(
        "--rcvbuf",
        type=int,
        default=16384,
        help="client SO_RCVBUF bytes (16384): keeps 10,000 clients light",
    )
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER_CMD,
        help="how to start the server; placeholders {repo} {data_dir} {host} {tcp_port} {tls_port}",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="connections each worker keeps in progress at once (default 0: all at once)",
    )
    parser.add_argument(
        "--connect-deadline",
        type=float,
        default=CONNECT_DEADLINE_S,
        help=f"seconds the connect phase may take ({CONNECT_DEADLINE_S:g})",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="log client failures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        return worker(args)
    report = run(args)
    for name, value in report.items():
        print(f"{name:28} {value}")
    line = json.dumps(report)
    print(line)
    print("reproduce: " + shlex.join([sys.executable, *sys.argv]))
    if args.json_out is not None:
        args.json_out.write_text(line + "\n")
    ok = report["connected"] == args.clients and report["broadcast_received"] == args.clients
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
