"""Run the load generator against Liaison, taky and a bare relay in one go, and compare them.

    python bench/run_compare.py --clients 200 --rate 1 --duration 30 --servers taky,liaison
    python bench/run_compare.py --clients 50 --duration 10 --servers taky --python-relay

Servers run one after another on the same machine, each on a free loopback port with its data
under a fresh temporary directory, and are stopped (SIGTERM, then SIGKILL) before the next starts.
The load generator (bench/loadgen.py) runs as its own process, so its CPU is not the server's.
taky is installed from PyPI into bench/.venv-taky on first use. Results go to
bench/results/<UTC timestamp>.json; the comparison table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN = BENCH_DIR / "loadgen.py"
RELAY = BENCH_DIR / "relay.py"

# taky 0.10 is the current release on PyPI (2024); pinned so that runs stay comparable.
DEFAULT_TAKY_SPEC = "taky==0.10"
DEFAULT_TAKY_VENV = BENCH_DIR / ".venv-taky"

# How Liaison is started. Placeholders: {repo} {data_dir} {host} {port}. Split with shlex and run
# without a shell, so that the PID we measure is the server's own.
DEFAULT_LIAISON_CMD = (
    "{repo}/.venv/bin/liaison serve --data-dir {data_dir} --tcp {host}:{port}"
    " --tls off --udp off --https off --enroll off"
)

TARGETS = ("taky", "liaison", "liaison-tls", "relay")

# Liaison on its mutual-TLS listener (the `liaison-tls` target, added by --tls). Placeholders as
# above, {port} being the TLS port and {tcp_port} a second free port for the TCP listener.
DEFAULT_LIAISON_TLS_CMD = (
    "{repo}/.venv/bin/liaison serve --data-dir {data_dir} --tcp {host}:{tcp_port}"
    " --tls {host}:{port} --udp off --https off --enroll off --public-host localhost"
)
HOST = "127.0.0.1"

# Seconds a server gets to start listening, and to exit after SIGTERM before SIGKILL. taky's
# select() loop wakes at least once a second, so it notices SIGTERM within a second.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Margin on top of warm-up + duration + drain before the load generator is considered hung.
LOADGEN_MARGIN_S = 120.0
# Lines of a failed server's log kept in the results.
LOG_TAIL_LINES = 20

# The goals of the streaming issue, checked for Liaison when the run matches their load.
GOAL_200_P99_MS = 50.0
GOAL_200_RSS_MB = 150.0
GOAL_200_CPU_RATIO = 0.5
GOAL_500_LOSS = 0.01


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    argv: list[str]
    version: str


@dataclasses.dataclass(slots=True, kw_only=True)
class TargetResult:
    """What one server's run gave: the load report, or why there is none."""

    name: str
    command: str
    version: str
    report: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    log_tail: list[str] = dataclasses.field(default_factory=list)
    loadavg_before: str = ""


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the server binds it right after; a race we accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once host:port accepts a connection; raise if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {host}:{port} within {timeout:g} s")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
    return proc.returncode


def ensure_taky(venv: Path, spec: str) -> Path:
    """The taky executable in `venv`, creating the venv and installing `spec` if needed."""
    taky = venv / "bin" / "taky"
    if not taky.exists():
        print(f"installing {spec} into {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", spec],
            check=True,
        )
    return taky


def write_taky_config(root: Path, host: str, port: int) -> Path:
    """A taky.conf for plain TCP on host:port with every data path under `root`.

    The keys are those taky 0.10 reads (taky/config.py, DEFAULT_CFG): `[cot_server] port`,
    `[ssl] enabled`, `[taky] bind_ip` and `root_dir` (where its management socket goes), and
    `[dp_server] upload_path`. With SSL off, taky serves CoT on the one plain TCP port and opens no
    monitor port. No redis: taky keeps its persistence in memory.
    """
    config = root / "taky.conf"
    config.write_text(
        "[taky]\n"
        "hostname = localhost\n"
        "node_id = BENCH\n"
        f"bind_ip = {host}\n"
        f"root_dir = {root}\n"
        "\n[cot_server]\n"
        f"port = {port}\n"
        "\n[dp_server]\n"
        f"upload_path = {root / 'dp-user'}\n"
        "\n[ssl]\n"
        "enabled = false\n"
    )
    return config


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return done.stdout.strip() or f"unknown (exit {done.returncode})"


def server_spec(name: str, data_dir: Path, port: int, args: argparse.Namespace) -> ServerSpec:
    """How to start target `name` on `port` with its data under `data_dir`."""
    if name == "taky":
        taky = ensure_taky(args.taky_venv, args.taky_spec)
        config = write_taky_config(data_dir, HOST, port)
        version = _output([str(taky), "--version"])
        return ServerSpec(
            name=name, argv=[str(taky), "-c", str(config), "-l", "warning"], version=version
        )
    if name == "liaison":
        line = args.liaison_cmd.format(repo=REPO_DIR, data_dir=data_dir, host=HOST, port=port)
        argv = shlex.split(line)
        version = _output(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])
        return ServerSpec(name=name, argv=argv, version=f"liaison {version}")
    if name == "liaison-tls":
        line = args.liaison_tls_cmd.format(
            repo=REPO_DIR, data_dir=data_dir, host=HOST, port=port, tcp_port=free_port()
        )
        version = _output(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])
        return ServerSpec(name=name, argv=shlex.split(line), version=f"liaison {version}")
    if name == "relay":
        argv = [sys.executable, str(RELAY), "--host", HOST, "--port", str(port)]
        return ServerSpec(name=name, argv=argv, version=f"python {platform.python_version()}")
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(TARGETS)}")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_target(name: str, args: argparse.Namespace) -> TargetResult:
    """Start server `name`, run the load generator against it, stop it."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"liaison-bench-{name}-") as tmp:
        data_dir = Path(tmp)
        try:
            spec = server_spec(name, data_dir, port, args)
        except (OSError, subprocess.CalledProcessError) as exc:
            return TargetResult(name=name, command="", version="", error=f"setup failed: {exc}")
        result = TargetResult(
            name=name,
            command=shlex.join(spec.argv),
            version=spec.version,
            loadavg_before=_loadavg(),
        )
        print(f"\n== {name}: {result.command}", flush=True)
        log_path = data_dir / "server.log"
        with log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(
                    spec.argv, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                result.error = f"could not start: {exc}"
                return result
            try:
                wait_for_port(HOST, port, proc, START_TIMEOUT_S)
                result.report = _run_loadgen(port, proc.pid, data_dir, args)
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                result.error = str(exc)
            finally:
                result.exit_code = stop(proc)
        if result.error is not None:
            lines = log_path.read_text(errors="replace").splitlines()
            result.log_tail = lines[-LOG_TAIL_LINES:]
    return result


def _run_loadgen(port: int, pid: int, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    json_out = data_dir / "report.json"
    argv = [
        sys.executable,
        str(LOADGEN),
        "--host",
        HOST,
        "--port",
        str(port),
        "--clients",
        str(args.clients),
        "--rate",
        f"{args.rate:g}",
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--drain",
        f"{args.drain:g}",
        "--seed",
        str(args.seed),
        "--server-pid",
        str(pid),
        "--json-out",
        str(json_out),
    ]
    if (data_dir / "pki" / "ca.pem").exists():
        argv += _client_certificate(data_dir)
    timeout = args.warmup + args.duration + args.drain + LOADGEN_MARGIN_S
    done = subprocess.run(argv, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator exited with code {done.returncode}")
    report: dict[str, Any] = json.loads(json_out.read_text())
    return report


def _client_certificate(data_dir: Path) -> list[str]:
    """Issue one client certificate from the server's CA (the `liaison-tls` target); the load
    generator's --tls-* arguments. Every simulated client presents it."""
    from liaison.identity.certs import ServerPki
    from liaison.identity.issue import issue_client_cert

    pki = ServerPki.at(data_dir)
    issued = issue_client_cert(pki, common_name="bench-loadgen", org=None)
    cert, key = data_dir / "loadgen.pem", data_dir / "loadgen.key"
    cert.write_bytes(issued.cert_pem)
    assert issued.key_pem is not None
    key.write_bytes(issued.key_pem)
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(pki.ca_cert)]


def _cell(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}"


def comparison_table(results: Sequence[TargetResult]) -> str:
    """The side-by-side table of every target's headline numbers."""
    header = (
        "server",
        "clients",
        "delivered/s",
        "loss %",
        "p50 ms",
        "p99 ms",
        "CPU us/deliv",
        "server CPU %",
        "peak RSS MB",
        "loadgen CPU %",
    )
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        report = result.report
        if report is None:
            rows.append((result.name, f"failed: {result.error}"))
            continue
        rows.append(
            (
                result.name,
                f"{report['connected']}/{report['clients']}",
                _cell(report["delivered_per_s"], digits=0),
                _cell(report["loss"], 100, 3),
                _cell(report["latency_p50_ms"], digits=2),
                _cell(report["latency_p99_ms"], digits=2),
                _cell(report["server_cpu_us_per_delivery"], digits=2),
                _cell(report["server_cpu_pct"]),
                _cell(report["server_peak_rss_mb"]),
                _cell(report["loadgen_cpu_pct"]),
            )
        )
    full = [row for row in rows if len(row) == len(header)]
    widths = [max(len(row[i]) for row in full) for i in range(len(header))]
    lines = []
    for row in rows:
        if len(row) < len(header):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
    return "\n".join(lines)


def cpu_ratio(results: Sequence[TargetResult]) -> float | None:
    """Liaison's CPU per delivery as a fraction of taky's, when both ran."""
    per: dict[str, float] = {}
    for result in results:
        if result.report and result.report.get("server_cpu_us_per_delivery"):
            per[result.name] = result.report["server_cpu_us_per_delivery"]
    if "liaison" in per and "taky" in per:
        return round(per["liaison"] / per["taky"], 3)
    return None


def relative_cpu(results: Sequence[TargetResult]) -> list[str]:
    """CPU per delivery of each Liaison target against the bare relay and Liaison over TCP, when
    they ran in this invocation (issue 11: at most 0.8x the relay; TLS at most 1.15x TCP)."""
    per = {
        r.name: r.report["server_cpu_us_per_delivery"]
        for r in results
        if r.report and r.report.get("server_cpu_us_per_delivery")
    }
    lines = []
    for name in ("liaison", "liaison-tls"):
        if name in per and "relay" in per:
            lines.append(f"{name} CPU per delivery / bare relay's: {per[name] / per['relay']:.3f}")
    if "liaison" in per and "liaison-tls" in per:
        lines.append(
            f"liaison-tls CPU per delivery / liaison (TCP)'s: "
            f"{per['liaison-tls'] / per['liaison']:.3f}"
        )
    return lines


def goal_checks(results: Sequence[TargetResult], ratio: float | None) -> list[str]:
    """The issue's goals for Liaison, checked when this run's load is the goal's load."""
    checks: list[str] = []
    for result in results:
        report = result.report
        if result.name != "liaison" or report is None or report["rate"] != 1:
            continue
        if report["clients"] == 200:
            p99 = report["latency_p99_ms"]
            rss = report["server_peak_rss_mb"]
            checks += [
                _check("200 clients: zero loss", report["loss"] == 0),
                _check(
                    f"200 clients: p99 < {GOAL_200_P99_MS:g} ms",
                    p99 is not None and p99 < GOAL_200_P99_MS,
                ),
                _check(
                    f"200 clients: peak RSS < {GOAL_200_RSS_MB:g} MB",
                    rss is not None and rss < GOAL_200_RSS_MB,
                ),
            ]
            if ratio is not None:
                checks.append(
                    _check(
                        f"200 clients: CPU per delivery <= {GOAL_200_CPU_RATIO:g} x taky's",
                        ratio <= GOAL_200_CPU_RATIO,
                    )
                )
        if report["clients"] == 500:
            checks.append(
                _check(
                    f"500 clients: loss < {100 * GOAL_500_LOSS:g} %", report["loss"] < GOAL_500_LOSS
                )
            )
    return checks


def _check(what: str, passed: bool) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {what}"


def machine_notes() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": _loadavg(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1.0, help="events/s per client")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--servers",
        default="taky,liaison",
        help=f"comma-separated, run in this order; from {', '.join(TARGETS)}",
    )
    parser.add_argument(
        "--python-relay", action="store_true", help="also run the bare relay (bench/relay.py)"
    )
    parser.add_argument(
        "--liaison-cmd",
        default=DEFAULT_LIAISON_CMD,
        help="how to start Liaison; placeholders {repo} {data_dir} {host} {port}",
    )
    parser.add_argument(
        "--liaison-tls-cmd",
        default=DEFAULT_LIAISON_TLS_CMD,
        help="how to start Liaison for liaison-tls; placeholders as --liaison-cmd, {port} the "
        "TLS port, {tcp_port} another free port",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also run liaison-tls (Liaison's mutual-TLS listener) right after liaison",
    )
    parser.add_argument("--taky-spec", default=DEFAULT_TAKY_SPEC)
    parser.add_argument("--taky-venv", type=Path, default=DEFAULT_TAKY_VENV)
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if args.tls and "liaison-tls" not in servers:
        at = servers.index("liaison") + 1 if "liaison" in servers else len(servers)
        servers.insert(at, "liaison-tls")
    if args.python_relay and "relay" not in servers:
        servers.append("relay")
    for name in servers:
        if name not in TARGETS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(TARGETS)}")
    args.server_list = servers
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every requested server in turn; print and save the comparison."""
    args = parse_args(argv)
    command = shlex.join(
        ["python", "bench/run_compare.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = dt.datetime.now(dt.UTC)
    machine = machine_notes()
    results = [run_target(name, args) for name in args.server_list]
    ratio = cpu_ratio(results)
    checks = goal_checks(results, ratio)

    print("\n" + comparison_table(results))
    if ratio is not None:
        print(f"\nLiaison CPU per delivery / taky's: {ratio:g}")
    relative = relative_cpu(results)
    for line in relative + checks:
        print(line)
    for result in results:
        if result.error is not None:
            print(f"\n{result.name} failed: {result.error}")
            for line in result.log_tail:
                print(f"  | {line}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    record = {
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "load": {
            "clients": args.clients,
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "drain": args.drain,
            "seed": args.seed,
        },
        "machine": machine,
        "results": [dataclasses.asdict(result) for result in results],
        "liaison_cpu_per_delivery_vs_taky": ratio,
        "relative_cpu": relative,
        "goal_checks": checks,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nresults: {out}\nreproduce: {command}")
    return 0 if all(result.error is None for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
