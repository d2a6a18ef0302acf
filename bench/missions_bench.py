"""Mission benchmark (issue 13): change-notice latency and ``/changes`` answer time.

A real Liaison server (``liaison serve``, SQLite storage in a temporary folder, the CA and the
server certificate generated for the run) with its mutual-TLS stream and HTTPS listeners:

1. The owner creates a mission over HTTPS with its client certificate (``PUT
   /Marti/api/missions/{name}``) and fills it with ``--items`` map items, CoT sent on its TLS
   stream with ``<marti><dest mission="NAME"/></marti>`` (docs/api.md "Missions"), and with
   ``--files`` files (``POST /Marti/sync/missionupload`` then ``PUT .../contents`` with their
   hashes). A mission keeps at most 8,192 map items (``MAX_MISSION_ITEMS``, TAK's
   ``missionUidLimit``) and the window below adds ``--notices`` + 1 new ones, so the default
   10,000 items are 7,891 CoT items and 2,109 files (10,301 items once the window is over).
   The CoT goes at ``--fill-rate`` items a second: faster overflows the server's mission-store
   queue (docs/performance.md "Missions").
2. ``--subscribers`` devices, each with its own client certificate, subscribe over HTTPS (``PUT
   .../subscription?uid=``) and connect as TAK stream clients over mutual TLS (raw asyncio ssl
   streams in one reader process, ``worker`` below), each sending its own position report.
   One warm-up item must reach every one of them before measuring.
3. **Notice latency**: the owner sends ``--notices`` new mission items at ``--rate`` a second.
   For each item and subscriber, the time from the owner's write to the subscriber's read of
   the ``t-x-m-c`` notice naming it, and of the item itself (``time.time_ns()`` in both
   processes, same host clock). Goal: p99 < 100 ms.
4. **``GET /Marti/api/missions/{name}/changes?secago=3600``** timed ``--changes-calls`` times in a
   row (and ``GET /Marti/api/missions/{name}`` ``--get-calls`` times), from request to the last
   byte of the answer, over HTTPS with the owner's certificate. Goal: < 200 ms.

    .venv/bin/python bench/missions_bench.py               # the goal's load (about 2 minutes)
    .venv/bin/python bench/missions_bench.py --items 500 --files 100 --subscribers 10 --notices 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import resource
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "src"))

from liaison.identity.ca import ensure_server_pki  # noqa: E402
from liaison.identity.certs import ServerPki, new_rsa_key  # noqa: E402
from liaison.identity.issue import issue_client_cert  # noqa: E402
from liaison.identity.tls import client_ssl_context  # noqa: E402


def _sibling(name: str) -> ModuleType:
    """Load bench/<name>.py (bench/ is a folder of scripts, not a package), once per process."""
    module_name = f"liaison_bench_{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


loadgen = _sibling("loadgen")  # the /proc CPU and memory readers, nearest-rank percentile
compare = _sibling("run_compare")  # free ports, waiting for a port, stopping, machine notes

HOST = "127.0.0.1"
MAX_MISSION_ITEMS = 8_192  # src/liaison/missions.py
MAX_MISSION_CONTENTS = 4_096
MISSION = "bench.mission"
M = "/Marti/api/missions"
OWNER_UID = "BENCH-owner"
HTTP_TIMEOUT_S = 60.0
# Fill items in flight (sent, notice not yet back on the owner's stream): keeps the server's
# mission-store queue (MAX_PENDING_WRITES, two writes an item) and the owner's send queue short.
FILL_WINDOW = 500
NOTICE_RE = re.compile(rb"<contentUid>BENCH-lat-(\d+)</contentUid>")
ITEM_RE = re.compile(rb'uid="BENCH-lat-(\d+)"')
FILL_NOTICE_RE = re.compile(rb"<contentUid>BENCH-fill-\d+</contentUid>")
WARM = b"<contentUid>BENCH-warm</contentUid>"


def cot_time(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def sa(uid: str, callsign: str) -> bytes:
    """A device's self position report (the server learns the stream's client uid from it)."""
    now = int(time.time() * 1000)
    t, stale = cot_time(now), cot_time(now + 3_600_000)
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="50.45" lon="30.52" hae="120.5" ce="9.9" le="9999999.0"/>'
        f'<detail><contact callsign="{callsign}" endpoint="*:-1:stcp"/>'
        f'<__group name="Cyan" role="Team Member"/></detail></event>'
    ).encode()


def mission_item(uid: str, index: int) -> bytes:
    """A spot marker as ATAK's Data Sync publishes it to a mission (``marti/dest@mission``)."""
    now = int(time.time() * 1000)
    t, stale = cot_time(now), cot_time(now + 86_400_000)
    lat = 50.0 + (index % 1000) / 1000
    lon = 30.0 + (index // 1000) / 1000
    return (
        f'<event version="2.0" uid="{uid}" type="b-m-p-s-m" how="h-g-i-g-o" time="{t}"'
        f' start="{t}" stale="{stale}"><point lat="{lat:.4f}" lon="{lon:.4f}" hae="0" ce="9.9"'
        f' le="9999999.0"/><detail><contact callsign="{uid}"/><remarks>item {index}</remarks>'
        f'<marti><dest mission="{MISSION}"/></marti></detail></event>'
    ).encode()


# --- certificates and the server ---------------------------------------------------------------


def make_certs(data_dir: Path, names: Sequence[str]) -> dict[str, tuple[Path, Path]]:
    """The server's CA (made now, as ``liaison serve`` would on first start) and one client
    certificate per name, all over one RSA key (key generation would otherwise dominate the
    set-up; the server checks each certificate, not the key's uniqueness)."""
    pki = ensure_server_pki(data_dir, public_host="localhost")
    key = new_rsa_key()
    out = data_dir / "bench-clients"
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[Path, Path]] = {}
    for name in names:
        issued = issue_client_cert(pki, common_name=name, org=None, key=key)
        cert, key_path = out / f"{name}.pem", out / f"{name}.key"
        cert.write_bytes(issued.cert_pem)
        assert issued.key_pem is not None
        key_path.write_bytes(issued.key_pem)
        found[name] = (cert, key_path)
    return found


def server_argv(data_dir: Path, tls_port: int, https_port: int) -> list[str]:
    return [
        str(REPO_DIR / ".venv" / "bin" / "liaison"),
        "serve",
        "--data-dir",
        str(data_dir),
        "--tcp",
        "off",
        "--tls",
        f"{HOST}:{tls_port}",
        "--udp",
        "off",
        "--https",
        f"{HOST}:{https_port}",
        "--enroll",
        "off",
        "--public-host",
        "localhost",
        "--storage",
        "sqlite",
        "--log-level",
        "warning",
    ]


async def open_stream(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost"), 30
    )


# --- the reader process: the subscribers' streams -----------------------------------------------


async def _subscriber(
    index: int,
    reader: asyncio.StreamReader,
    seen: dict[tuple[int, int, int], int],
    warm: set[int],
    warm_all: asyncio.Event,
    total: int,
) -> None:
    tail = b""
    while True:
        chunk = await reader.read(65536)
        now = time.time_ns()
        if not chunk:
            return
        data = tail + chunk
        for m in NOTICE_RE.finditer(data):
            seen.setdefault((index, int(m.group(1)), 0), now)
        for m in ITEM_RE.finditer(data):
            seen.setdefault((index, int(m.group(1)), 1), now)
        if WARM in data and index not in warm:
            warm.add(index)
            if len(warm) == total:
                warm_all.set()
        tail = data[-128:]  # a marker split over two reads is found in the next one


async def worker_main(cfg: dict[str, Any]) -> int:
    """Connect every subscriber's stream, say ``ready``; say ``warm`` once every one got the
    warm-up notice; on ``stop`` on stdin write the receive times to ``cfg["out"]``."""
    ca = Path(cfg["ca"])
    seen: dict[tuple[int, int, int], int] = {}
    warm: set[int] = set()
    warm_all = asyncio.Event()
    total = len(cfg["subscribers"])
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []
    for index, (uid, cert, key) in enumerate(cfg["subscribers"]):
        ctx = client_ssl_context(ca, Path(cert), Path(key))
        reader, writer = await open_stream(cfg["tls_port"], ctx)
        writer.write(sa(uid, uid))
        writers.append(writer)
        tasks.append(asyncio.create_task(_subscriber(index, reader, seen, warm, warm_all, total)))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    cpu0 = 0.0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
        if line.strip() == "warm":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(warm_all.wait(), 30)
            print(f"warm {len(warm)}", flush=True)
            cpu0 = _own_cpu()
    cpu = _own_cpu() - cpu0
    samples = [[s, k, kind, ns] for (s, k, kind), ns in seen.items()]
    text = json.dumps({"samples": samples, "cpu_s": cpu})
    await asyncio.to_thread(Path(cfg["out"]).write_text, text)
    for t in tasks:
        t.cancel()
    for w in writers:
        w.close()
    print("done", flush=True)
    return 0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the parent: set-up, load and timing --------------------------------------------------------


class Owner:
    """The mission owner's device: its TLS stream (its notices are read and counted) and an
    HTTPS session with the same certificate."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.fill_notices = 0
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        tail = b""
        while chunk := await self.reader.read(65536):
            data = tail + chunk
            # Count each marker once: those wholly inside the carried tail were counted before.
            self.fill_notices += len(FILL_NOTICE_RE.findall(data)) - len(
                FILL_NOTICE_RE.findall(tail)
            )
            self.changed.set()
            tail = data[-128:]

    async def wait_fill(self, count: int, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while self.fill_notices < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"fill: {self.fill_notices} notices of {count} came back")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


async def timed(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    async with http.request(method, url, **kw) as r:
        body = await r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {body[:200]!r}")
    return (time.perf_counter() - t0) * 1000, body


def pct(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return float(loadgen.percentile(ordered, fraction))


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 0.5), 2),
        "p99_ms": round(pct(values, 0.99), 2),
        "max_ms": round(max(values), 2),
    }


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    subs = [f"BENCH-sub-{i:03d}" for i in range(args.subscribers)]
    t_setup = time.monotonic()
    certs = make_certs(data_dir, ["owner", *subs])
    ca = ServerPki.at(data_dir).ca_cert
    tls_port, https_port = compare.free_port(), compare.free_port()
    argv = server_argv(data_dir, tls_port, https_port)
    log = (data_dir / "server.log").open("wb")
    # Blocking process starts are fine here: nothing is being timed yet.
    # /metrics is for operators (docs/api.md, Roles): here every certificate, all in __ANON__.
    env = {**os.environ, "LIAISON_OPERATOR_GROUP": "__ANON__"}
    proc = subprocess.Popen(  # noqa: ASYNC220
        argv, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    worker: subprocess.Popen[str] | None = None
    result: dict[str, Any] = {}
    try:
        compare.wait_for_port(HOST, tls_port, proc, 60)
        compare.wait_for_port(HOST, https_port, proc, 60)
        base = f"https://localhost:{https_port}"
        owner_ctx = client_ssl_context(ca, *certs["owner"])
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=owner_ctx, limit=8), timeout=timeout
        )
        async with http:
            owner = Owner(*await open_stream(tls_port, owner_ctx))
            owner.writer.write(sa(OWNER_UID, "OWNER"))
            _, body = await timed(http, "PUT", f"{base}{M}/{MISSION}?creatorUid={OWNER_UID}")
            await wait_connected(http, base, {OWNER_UID})

            # Fill: CoT items on the owner's stream at --fill-rate, at most FILL_WINDOW of them
            # awaiting their notice.
            t0 = time.monotonic()
            for i in range(args.cot):
                delay = t0 + i / args.fill_rate - time.monotonic()
                if delay > 0:
                    await owner.writer.drain()
                    await asyncio.sleep(delay)
                if i - owner.fill_notices >= FILL_WINDOW:
                    await owner.writer.drain()
                    await owner.wait_fill(i - FILL_WINDOW // 2, 120)
                owner.writer.write(mission_item(f"BENCH-fill-{i:05d}", i))
            await owner.writer.drain()
            await owner.wait_fill(args.cot, 120)
            fill_cot_s = time.monotonic() - t0
            failed_after = {"fill_cot": await writes_failed(http, base)}

            # Files: upload, then add them to the mission by hash, 200 a call.
            t0 = time.monotonic()
            hashes = await upload_files(http, base, args.files)
            for start in range(0, len(hashes), 200):
                await timed(
                    http,
                    "PUT",
                    f"{base}{M}/{MISSION}/contents?creatorUid={OWNER_UID}",
                    json={"hashes": hashes[start : start + 200]},
                )
            fill_files_s = time.monotonic() - t0
            failed_after["fill_files"] = await writes_failed(http, base)

            # Subscribers: HTTPS subscription with each device's own certificate, then streams.
            t0 = time.monotonic()
            for uid in subs:
                ctx = client_ssl_context(ca, *certs[uid])
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx), timeout=timeout
                ) as sub_http:
                    await timed(sub_http, "PUT", f"{base}{M}/{MISSION}/subscription?uid={uid}")
            out_file = data_dir / "samples.json"
            cfg = {
                "ca": str(ca),
                "tls_port": tls_port,
                "out": str(out_file),
                "subscribers": [[u, str(certs[u][0]), str(certs[u][1])] for u in subs],
            }
            worker = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, __file__, "worker", json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            await expect(worker, "ready", 120)
            await wait_connected(http, base, {OWNER_UID, *subs})
            subscribe_s = time.monotonic() - t0

            _, body = await timed(http, "GET", f"{base}{M}/{MISSION}")
            mission = json.loads(body)["data"][0]
            held = {"uids": len(mission["uids"]), "contents": len(mission["contents"])}

            # Warm-up: one item every subscriber must receive before the window opens.
            owner.writer.write(mission_item("BENCH-warm", 0))
            await owner.writer.drain()
            assert worker.stdin is not None
            worker.stdin.write("warm\n")
            worker.stdin.flush()
            warm_line = await expect(worker, "warm", 60)
            warm_count = int(warm_line.split()[1])
            setup_s = time.monotonic() - t_setup

            # (a) the notice latency window (with --changes-during, /changes?secago=3600 called
            # back to back on the same HTTPS session all through it).
            stop_changes = asyncio.Event()
            during_ms: list[float] = []

            async def changes_meanwhile() -> None:
                while not stop_changes.is_set():
                    ms, _ = await timed(http, "GET", f"{base}{M}/{MISSION}/changes?secago=3600")
                    during_ms.append(ms)

            during = asyncio.create_task(changes_meanwhile()) if args.changes_during else None
            cpu0 = loadgen.read_cpu_seconds(proc.pid)
            w0 = time.monotonic()
            sent: dict[int, int] = {}
            period = 1.0 / args.rate
            start = time.monotonic() + 0.2
            lag_max = 0.0
            for k in range(args.notices):
                due = start + k * period
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag_max = max(lag_max, time.monotonic() - due)
                payload = mission_item(f"BENCH-lat-{k:05d}", k)
                sent[k] = time.time_ns()
                owner.writer.write(payload)
            await owner.writer.drain()
            await asyncio.sleep(args.drain)
            stop_changes.set()
            if during is not None:
                await during
            window_s = time.monotonic() - w0
            server_cpu = loadgen.read_cpu_seconds(proc.pid) - cpu0
            worker.stdin.write("stop\n")
            worker.stdin.flush()
            await expect(worker, "done", 120)
            got = json.loads(out_file.read_text())
            notice_ms: list[float] = []
            item_ms: list[float] = []
            for _s, k, kind, ns in got["samples"]:
                if k in sent:
                    (notice_ms if kind == 0 else item_ms).append((ns - sent[k]) / 1e6)
            expected = len(sent) * len(subs)

            # (b) /changes?secago=3600 and the mission itself (under py-spy when asked).
            spy = start_spy(args.py_spy, proc.pid) if args.py_spy else None
            changes_ms: list[float] = []
            changes_n = changes_bytes = 0
            for _ in range(args.changes_calls):
                ms, body = await timed(http, "GET", f"{base}{M}/{MISSION}/changes?secago=3600")
                changes_ms.append(ms)
                changes_n, changes_bytes = len(json.loads(body)["data"]), len(body)
            get_ms: list[float] = []
            get_bytes = 0
            for _ in range(args.get_calls):
                ms, body = await timed(http, "GET", f"{base}{M}/{MISSION}")
                get_ms.append(ms)
                get_bytes = len(body)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(60)
            _, metrics_body = await timed(http, "GET", f"{base}/metrics")
            owner.task.cancel()
            owner.writer.close()

        hwm_kb, rss_kb = loadgen.read_memory_kb(proc.pid)
        result = {
            "mission": {
                "map_items": held["uids"],
                "files": held["contents"],
                "items": held["uids"] + held["contents"],
            },
            "subscribers": len(subs),
            "subscribers_warm": warm_count,
            "setup_s": {
                "fill_cot": round(fill_cot_s, 1),
                "fill_files": round(fill_files_s, 1),
                "subscribe_and_connect": round(subscribe_s, 1),
                "total": round(setup_s, 1),
            },
            "notices": {
                "sent": len(sent),
                "rate_per_s": args.rate,
                "expected": expected,
                "received": len(notice_ms),
                "loss": round(1 - len(notice_ms) / expected, 6) if expected else None,
                **(summary_ms(notice_ms) if notice_ms else {}),
                "send_lag_max_ms": round(lag_max * 1000, 2),
            },
            "items": {
                "expected": expected,
                "received": len(item_ms),
                **(summary_ms(item_ms) if item_ms else {}),
            },
            "changes_secago_3600": {
                "changes": changes_n,
                "bytes": changes_bytes,
                **summary_ms(changes_ms),
                "first_ms": round(changes_ms[0], 2),
                "later_p50_ms": round(pct(changes_ms[1:] or changes_ms, 0.5), 2),
                "calls_ms": [round(v, 1) for v in changes_ms],
            },
            "get_mission": {"bytes": get_bytes, **summary_ms(get_ms)},
            "server_cpu_pct_window": round(100 * server_cpu / window_s, 1),
            "reader_cpu_pct_window": round(100 * got["cpu_s"] / window_s, 1),
            "changes_during_window": summary_ms(during_ms) if during_ms else None,
            "server_peak_rss_mb": round(hwm_kb / 1024, 1),
            "server_rss_mb": round(rss_kb / 1024, 1),
            "mission_writes_failed": metric_lines(
                metrics_body, "liaison_mission_writes_failed_total"
            ),
            "mission_writes_failed_after": failed_after,
            "mission_refused": metric_lines(metrics_body, "liaison_mission_refused_total"),
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        code = compare.stop(proc)
        log.close()
        if not result:
            tail = (data_dir / "server.log").read_text(errors="replace")[-3000:]
            print(f"server exit {code}; last log lines:\n{tail}", file=sys.stderr)
    return result


def start_spy(out: str, pid: int) -> subprocess.Popen[bytes]:
    """py-spy record (collapsed stacks) of the server from now until SIGINT."""
    spy = REPO_DIR / ".venv" / "bin" / "py-spy"
    argv = [str(spy), "record", "--format", "raw", "-r", "250", "-o", out, "--pid", str(pid)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # attached
    return proc


async def writes_failed(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    _, body = await timed(http, "GET", f"{base}/metrics")
    return metric_lines(body, "liaison_mission_writes_failed_total")


def metric_lines(text: bytes, name: str) -> dict[str, float]:
    """Samples of one counter from the Prometheus text, by their labels."""
    found: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            found[key[len(name) :] or "{}"] = float(value)
    return found


async def wait_connected(http: aiohttp.ClientSession, base: str, uids: set[str]) -> None:
    """Until the server has learnt every device's uid from its position report."""
    deadline = time.monotonic() + 60
    url = f"{base}/Marti/api/clientEndPoints?showCurrentlyConnectedClients=true"
    while time.monotonic() < deadline:
        _, body = await timed(http, "GET", url)
        if uids <= {c["uid"] for c in json.loads(body)["data"]}:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the server did not learn every device's uid within 60 s")


async def upload_files(http: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    """n small distinct files through ATAK's mission upload (8 at a time); their hashes."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        content = f"mission bench file {i}\n".encode() * 4
        digest = hashlib.sha256(content).hexdigest()
        form = aiohttp.FormData()
        form.add_field("assetfile", content, filename=f"file-{i:05d}.txt")
        async with sem:
            await timed(
                http,
                "POST",
                f"{base}/Marti/sync/missionupload?hash={digest}&filename=file-{i:05d}.txt"
                f"&creatorUid={OWNER_UID}",
                data=form,
            )
        return digest

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def expect(proc: subprocess.Popen[str], word: str, limit_s: float) -> str:
    """The reader process's next line, which must start with ``word``."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), limit_s)
    if not line.startswith(word):
        raise RuntimeError(f"reader process said {line!r}, expected {word!r}")
    return line.strip()


def format_report(r: dict[str, Any]) -> str:
    n, i, c, g = r["notices"], r["items"], r["changes_secago_3600"], r["get_mission"]
    m = r["mission"]
    lines = [
        f"mission: {m['items']:,} items ({m['map_items']:,} CoT, {m['files']:,} files), "
        f"{r['subscribers']} subscribers ({r['subscribers_warm']} got the warm-up)",
        f"set-up s: {r['setup_s']}",
        f"t-x-m-c notices: {n['received']:,}/{n['expected']:,} (loss {n['loss']}), "
        f"p50 {n.get('p50_ms')} ms, p99 {n.get('p99_ms')} ms, max {n.get('max_ms')} ms "
        f"({n['sent']} items at {n['rate_per_s']}/s; send lag max {n['send_lag_max_ms']} ms)",
        f"mission items:   {i['received']:,}/{i['expected']:,}, p50 {i.get('p50_ms')} ms, "
        f"p99 {i.get('p99_ms')} ms, max {i.get('max_ms')} ms",
        f"GET /changes?secago=3600: {c['changes']:,} changes, {c['bytes']:,} bytes, "
        f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms ({c['n']} calls; "
        f"first {c['first_ms']} ms, later p50 {c['later_p50_ms']} ms)",
        f"GET /missions/{{name}}: {g['bytes']:,} bytes, p50 {g['p50_ms']} ms, "
        f"p99 {g['p99_ms']} ms ({g['n']} calls)",
        f"server CPU {r['server_cpu_pct_window']} % of a core in the window, reader "
        f"{r['reader_cpu_pct_window']} %, peak RSS {r['server_peak_rss_mb']} MB",
        f"mission writes failed: {r['mission_writes_failed']}; refused: {r['mission_refused']}",
        f"/changes calls during the window: {r['changes_during_window']}",
    ]
    if n.get("p99_ms") is not None:
        ok = n["p99_ms"] < 100 and n["loss"] == 0
        lines.append(f"{'PASS' if ok else 'FAIL'}: notice p99 < 100 ms with no loss")
    lines.append(f"{'PASS' if c['p99_ms'] < 200 else 'FAIL'}: /changes?secago=3600 p99 < 200 ms")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=10_000, help="mission items before the window")
    p.add_argument("--fill-rate", type=float, default=400.0, help="CoT items a second in the fill")
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--notices", type=int, default=300, help="items sent in the latency window")
    p.add_argument("--rate", type=float, default=20.0, help="items a second in the window")
    p.add_argument("--drain", type=float, default=3.0, help="seconds to read after the last")
    p.add_argument("--changes-calls", type=int, default=20)
    p.add_argument(
        "--changes-during",
        action="store_true",
        help="call /changes?secago=3600 back to back all through the latency window",
    )
    p.add_argument("--get-calls", type=int, default=5)
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    p.add_argument("--py-spy", metavar="FILE", help="py-spy record the server during (b), raw")
    args = p.parse_args(argv)
    if args.notices < 1 or args.rate <= 0 or args.fill_rate <= 0 or args.subscribers < 1:
        p.error("--notices and --subscribers >= 1, --rate and --fill-rate > 0")
    # Map items first, leaving room for the window's items; files for the rest.
    args.cot = max(0, min(args.items, MAX_MISSION_ITEMS - args.notices - 1))
    args.files = args.items - args.cot
    if args.cot < 1 or args.files > MAX_MISSION_CONTENTS:
        p.error("too many --notices or --items for one mission (8,192 map items, 4,096 files)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return asyncio.run(worker_main(json.loads(argv[1])))
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/missions_bench.py", *argv])
    print(f"command: {command}", flush=True)
    machine = compare.machine_notes()
    print(f"machine: {machine} (shared with other work)", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="liaison-missions-bench-"))
    try:
        report = asyncio.run(run(args, data_dir))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    machine["loadavg_end"] = compare._loadavg()
    report = {"command": command, "machine": machine, **report}
    print(format_report(report))
    print(f"load average: start {machine['loadavg_start']}, end {machine['loadavg_end']}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
