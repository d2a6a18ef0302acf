"""bench/delivery_path_bench.py and bench/tls_record_bench.py: small real runs, each printing its
figures and the command that reproduces them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# A few hundred deliveries or records: seconds, bounded here.
RUN_TIMEOUT_S = 120


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        check=True,
    )
    return done.stdout


def test_the_delivery_path_bench_flushes_each_session_once_per_burst() -> None:
    out = _run("delivery_path_bench.py", "--clients", "20", "--events", "40", "--rounds", "1")
    found = re.search(r"us/delivery (\d+\.\d+)\s+writes/delivery (\d+\.\d+)", out)
    assert found, out
    assert float(found.group(1)) > 0
    # Two reports (of two senders) per flush, and every session written once per flush: 20
    # writes for 2 x 19 deliveries.
    assert abs(float(found.group(2)) - 20 / 38) < 0.001
    assert "reproduce: .venv/bin/python bench/delivery_path_bench.py --clients 20" in out


def test_the_tls_record_bench_writes_records_with_each_suite() -> None:
    out = _run("tls_record_bench.py", "--records", "200", "--size", "500")
    lines = [ln for ln in out.splitlines() if "us per 500-byte record" in ln]
    assert [ln.split(":")[0] for ln in lines] == [
        "TLSv1.3 TLS_AES_256_GCM_SHA384",
        "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256",
        "TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384",
    ], out
    assert "reproduce: .venv/bin/python bench/tls_record_bench.py --records 200" in out
