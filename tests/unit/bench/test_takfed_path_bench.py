"""bench/takfed_path.py, as users run it, at a tiny size: every event goes the whole outbound
path to a TAK v2 peer (router, guard, audit, outbox, translation, read-back re-check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench" / "takfed_path.py"
# Certificates and 60 events stay well under.
RUN_TIMEOUT_S = 120


def test_tiny_run_writes_every_event_and_its_contact_entries() -> None:
    argv = [sys.executable, str(BENCH), "--events", "50", "--warm", "10", "--batch", "20"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True, cwd=REPO
    ).stdout
    report = json.loads(out)
    # 50 events, 80 % position reports of new uids: each preceded by its ContactListEntry.
    assert report["events"] == 50 and report["denials"] == 0
    assert report["messages_written"] == 50 + 40
    assert report["us_cpu_per_event"] > 0 and report["events_per_cpu_second"] > 0
