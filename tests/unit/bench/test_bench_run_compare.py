"""bench/run_compare.py: runs servers in turn, records failures, compares and checks the goals."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[3]
RUN_COMPARE = REPO / "bench" / "run_compare.py"
# Relay start-up, a 1 s window with warm-up and drain, and a failing "server": well under this.
RUN_TIMEOUT_S = 60


def _load() -> ModuleType:
    # bench/ is a folder of scripts, not an installed package: load the file itself.
    spec = importlib.util.spec_from_file_location("liaison_bench_run_compare", RUN_COMPARE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_compare = _load()


def _report(**fields: Any) -> dict[str, Any]:
    report = {
        "clients": 200,
        "connected": 200,
        "rate": 1.0,
        "delivered_per_s": 39800.0,
        "loss": 0.0,
        "latency_p50_ms": 2.0,
        "latency_p99_ms": 20.0,
        "server_cpu_us_per_delivery": 8.0,
        "server_cpu_pct": 30.0,
        "server_peak_rss_mb": 60.0,
        "loadgen_cpu_pct": 20.0,
    }
    report.update(fields)
    return report


def _result(name: str, report: dict[str, Any] | None, error: str | None = None) -> Any:
    return run_compare.TargetResult(
        name=name, command=name, version="1", report=report, error=error
    )


def test_failed_server_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    # A "Liaison" that prints a line and exits before listening.
    failing = shlex.join([sys.executable, "-c", "print('no such server'); raise SystemExit(3)"])
    done = subprocess.run(
        [
            sys.executable,
            str(RUN_COMPARE),
            "--servers",
            "liaison",
            "--python-relay",
            "--liaison-cmd",
            failing,
            "--clients",
            "3",
            "--rate",
            "5",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--drain",
            "0.5",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    [path] = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    liaison, relay = record["results"]

    assert liaison["name"] == "liaison"
    assert liaison["report"] is None
    assert "exited with code 3 before listening" in liaison["error"]
    assert liaison["log_tail"] == ["no such server"]

    assert relay["name"] == "relay"
    assert relay["error"] is None
    assert relay["exit_code"] is not None
    report = relay["report"]
    assert report["connected"] == 3
    assert report["expected"] == report["sent"] * 2 > 0
    assert report["received"] == report["expected"]
    assert report["server_cpu_s"] is not None
    assert report["server_peak_rss_mb"] > 0

    assert record["machine"]["cpus"] >= 1
    assert record["load"] == {
        "clients": 3,
        "rate": 5.0,
        "duration": 1.0,
        "warmup": 0.5,
        "drain": 0.5,
        "seed": 1,
    }
    assert record["command"].startswith("python bench/run_compare.py --servers liaison")
    assert "relay  " in done.stdout and "liaison  failed: server exited" in done.stdout
    assert f"results: {path}" in done.stdout


def test_cpu_ratio_and_goals_at_200_clients() -> None:
    results = [
        _result("taky", _report(server_cpu_us_per_delivery=17.0)),
        _result("liaison", _report(server_cpu_us_per_delivery=8.0, latency_p99_ms=60.0)),
        _result("relay", None, error="boom"),
    ]
    ratio = run_compare.cpu_ratio(results)
    assert ratio == round(8.0 / 17.0, 3)
    assert run_compare.goal_checks(results, ratio) == [
        "PASS  200 clients: zero loss",
        "FAIL  200 clients: p99 < 50 ms",
        "PASS  200 clients: peak RSS < 150 MB",
        "PASS  200 clients: CPU per delivery <= 0.5 x taky's",
    ]
    table = run_compare.comparison_table(results).splitlines()
    assert table[0].split() == [
        "server",
        "clients",
        "delivered/s",
        "loss",
        "%",
        "p50",
        "ms",
        "p99",
        "ms",
        "CPU",
        "us/deliv",
        "server",
        "CPU",
        "%",
        "peak",
        "RSS",
        "MB",
        "loadgen",
        "CPU",
        "%",
    ]
    assert table[1].split()[:7] == ["taky", "200/200", "39800", "0.000", "2.00", "20.00", "17.00"]
    assert table[3].split() == ["relay", "failed:", "boom"]


def test_goals_at_500_clients_and_other_loads() -> None:
    lossy = [_result("liaison", _report(clients=500, connected=500, loss=0.02))]
    assert run_compare.goal_checks(lossy, None) == ["FAIL  500 clients: loss < 1 %"]
    fine = [_result("liaison", _report(clients=500, connected=500, loss=0.004))]
    assert run_compare.goal_checks(fine, None) == ["PASS  500 clients: loss < 1 %"]
    # No goal is defined for other loads, nor for other servers.
    assert run_compare.goal_checks([_result("liaison", _report(clients=50))], None) == []
    assert run_compare.goal_checks([_result("taky", _report())], None) == []
    assert run_compare.cpu_ratio([_result("taky", _report())]) is None


def test_taky_config_keeps_everything_under_its_directory(tmp_path: Path) -> None:
    path = run_compare.write_taky_config(tmp_path, "127.0.0.1", 18087)
    text = path.read_text()
    assert path.parent == tmp_path
    assert "port = 18087\n" in text
    assert "enabled = false\n" in text
    assert "bind_ip = 127.0.0.1\n" in text
    assert f"root_dir = {tmp_path}\n" in text
    assert f"upload_path = {tmp_path / 'dp-user'}\n" in text


def test_relative_cpu_against_the_relay_and_tls_against_tcp() -> None:
    results = [
        _result("liaison", _report(server_cpu_us_per_delivery=6.0)),
        _result("liaison-tls", _report(server_cpu_us_per_delivery=6.6)),
        _result("relay", _report(server_cpu_us_per_delivery=7.5)),
    ]
    assert run_compare.relative_cpu(results) == [
        "liaison CPU per delivery / bare relay's: 0.800",
        "liaison-tls CPU per delivery / bare relay's: 0.880",
        "liaison-tls CPU per delivery / liaison (TCP)'s: 1.100",
    ]
    assert run_compare.relative_cpu(results[:1]) == []


def test_tls_option_runs_liaison_tls_right_after_liaison() -> None:
    args = run_compare.parse_args(["--servers", "liaison,relay", "--tls"])
    assert args.server_list == ["liaison", "liaison-tls", "relay"]
    args = run_compare.parse_args(["--servers", "relay", "--tls"])
    assert args.server_list == ["relay", "liaison-tls"]
