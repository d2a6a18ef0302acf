"""bench/idle_bench.py end to end, small: a real server, real TLS and TCP clients, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
IDLE_BENCH = REPO / "bench" / "idle_bench.py"
# Server start-up, 30 clients, a 0.5 s settle and the broadcast: well under this.
RUN_TIMEOUT_S = 120


@pytest.mark.parametrize("mode", ["tls", "tcp"])
def test_idle_bench_holds_every_client_and_the_broadcast_reaches_all(
    mode: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    argv = [sys.executable, str(IDLE_BENCH), "--clients", "30", "--mode", mode]
    argv += ["--workers", "2", "--settle", "0.5", "--json-out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["mode"] == mode
    assert report["connected"] == 30 and report["failed"] == 0
    assert report["observer_reports"] == 30  # every client's addressed report arrived
    assert report["broadcast_received"] == 30
    assert report["worker_processes"] == 2
    assert report["server_rss_mb"] > 0 and report["baseline_rss_mb"] > 0
    assert report["server_pss_mb"] > 0
    assert "reproduce: " in done.stdout
