"""``liaison federation status``: what the running server last wrote about its partner links."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from liaison.federation.config import DEFAULT_STATUS_INTERVAL_S
from liaison.federation.status import STALE_INTERVALS, render_status, status_path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``federation status`` to the ``liaison`` command."""
    p = subparsers.add_parser("federation", help="partner links (federation)")
    sub = p.add_subparsers(dest="federation_command", required=True)
    s = sub.add_parser("status", help="state, backlog, last acknowledged and counts per peer")
    s.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the server's data folder (default: LIAISON_DATA_DIR or ./liaison-data)",
    )
    s.add_argument("--json", action="store_true", help="print the status file as JSON")
    s.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or Path(os.environ.get("LIAISON_DATA_DIR", "liaison-data"))
    path = status_path(data_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(
            f"liaison: no federation status at {path} (is federation configured and the server"
            " running?)",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"liaison: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(doc, dict):
        print(f"liaison: {path} is not a status document", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return 0
    stale_ms = int(DEFAULT_STATUS_INTERVAL_S * STALE_INTERVALS * 1000)
    sys.stdout.write(render_status(doc, time.time_ns() // 1_000_000, stale_after_ms=stale_ms))
    return 0
