"""bench/delivery_cost_bench.py: small real runs (no valgrind, no strace) and its report parsers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench" / "delivery_cost_bench.py"
# Server start-up, 8 clients (TLS handshakes included), 3 bursts: well under this.
RUN_TIMEOUT_S = 180


def _module() -> ModuleType:
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("delivery_cost_bench", BENCH)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH.parent))


@pytest.mark.parametrize(
    ("target", "senders"),
    [("tcp", "one"), ("tcp", "many"), ("tls", "one"), ("labels", "one"), ("relay", "many")],
)
def test_every_delivery_of_every_burst_arrives(target: str, senders: str) -> None:
    argv = [sys.executable, str(BENCH), "--target", target, "--clients", "8"]
    argv += ["--bursts", "3", "--burst", "2", "--settle", "0.5", "--senders", senders]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # 3 bursts x 2 reports x 7 other clients, all received, nothing more or less.
    head = f"target {target}  clients 8  bursts 3 x 2 ({senders})  deliveries 42 (expected 42)"
    assert head in done.stdout
    assert "cpu us/delivery user " in done.stdout
    assert "reproduce: " in done.stdout


def test_callgrind_total_is_the_totals_line_not_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    # callgrind with --instr-atstart=no writes "summary: 0" before the per-function lines.
    out.write_text("events: Ir\nsummary: 0\nfn=(1) main\n3 12\ntotals: 142493495\n")
    assert _module().callgrind_total(out) == 142_493_495


def test_strace_summary_is_read_per_system_call(tmp_path: Path) -> None:
    out = tmp_path / "strace.txt"
    out.write_text(
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 97.51    0.118807          10     11830           sendto\n"
        "  1.20    0.001462           7       194        94 recvfrom\n"
        "  0.10    0.000120           0       205           epoll_wait\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        "100.00    0.121845           8     12229        94 total\n"
    )
    calls = _module().strace_calls(out)
    assert calls["sendto"] == 11830
    assert calls["recvfrom"] == 194
    assert calls["epoll_wait"] == 205


def test_one_counting_mode_at_a_time() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--callgrind", "--strace"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "one at a time" in done.stderr
