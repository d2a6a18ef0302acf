"""``liaison feeds status``: what the running server last wrote about its feeds."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from liaison.feeds.status import render_status, status_path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``feeds status`` to the ``liaison`` command."""
    p = subparsers.add_parser("feeds", help="ADS-B and AIS feeds")
    sub = p.add_subparsers(dest="feeds_command", required=True)
    s = sub.add_parser("status", help="state, last data, last error and counts per feed")
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
            f"liaison: no feed status at {path} (are feeds configured and the server running?)",
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
    sys.stdout.write(render_status(doc, time.time_ns() // 1_000_000))
    return 0
