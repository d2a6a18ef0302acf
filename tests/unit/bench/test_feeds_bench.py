"""bench/feeds_bench.py end to end, small: two SBS-1 receivers, a real server, TCP clients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FEEDS_BENCH = REPO / "bench" / "feeds_bench.py"
# Server start-up, a 3 s warm-up, 3 s measured and the drain: well under this.
RUN_TIMEOUT_S = 240


def test_feeds_bench_merges_every_aircraft_once(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = [sys.executable, str(FEEDS_BENCH), "--aircraft", "60", "--clients", "4"]
    argv += ["--measure", "2", "--warmup", "3", "--duration", "3", "--json-out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    # 60 aircraft, 40% heard by both receivers: one track each, in the server and every client.
    assert report["aircraft"] == 60 and report["heard_by_both"] == 24
    assert report["tracks"] == 60 and report["uids_per_measuring_client"] == [60, 60]
    assert report["drained_after_s"] is not None
    assert report["feeds_published"] > 0 and report["deliveries_per_s"] > 0
    assert report["latency_samples"] > 0 and report["latency_ms_p99"] >= 0
    assert report["disconnects"] == 0
    assert "merged tracks: 60 (thinner), [60, 60] (measuring clients), expected 60: exact" in (
        done.stdout
    )
