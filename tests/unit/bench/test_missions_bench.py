"""The mission benchmark, run as users run it (a real ``liaison serve``), at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench" / "missions_bench.py"
# Certificates, server start, fill, subscriptions, 1 s of window and the drain stay well under.
RUN_TIMEOUT_S = 180


def test_tiny_run_measures_every_notice_and_the_changes_answer() -> None:
    argv = [sys.executable, str(BENCH), "--items", "60", "--subscribers", "3", "--notices", "8"]
    argv += ["--rate", "8", "--drain", "1", "--changes-calls", "2", "--get-calls", "1", "--json"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True, cwd=REPO
    ).stdout
    assert out.startswith("command: .venv/bin/python bench/missions_bench.py --items 60")
    report = json.loads(out.strip().splitlines()[-1])
    # 60 items: as many map items as fit beside the window's 9 (all of them), no files.
    assert report["mission"] == {"map_items": 60, "files": 0, "items": 60}
    assert report["subscribers"] == 3 and report["subscribers_warm"] == 3
    notices = report["notices"]
    assert notices["sent"] == 8 and notices["expected"] == 24
    assert notices["received"] == 24 and notices["loss"] == 0
    assert 0 < notices["p50_ms"] <= notices["p99_ms"] <= notices["max_ms"]
    assert report["items"]["received"] == 24
    changes = report["changes_secago_3600"]
    # The create, the 60 fill items, the warm-up item and the window's 8, squashed.
    assert changes["changes"] == 70 and changes["n"] == 2 and len(changes["calls_ms"]) == 2
    assert report["mission_writes_failed"] == {} and report["mission_refused"] == {}
    assert "load average: start" in out and ("PASS" in out or "FAIL" in out)
