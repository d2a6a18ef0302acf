"""Feed status: what each feed is doing, written to ``DATA_DIR/feeds/status.json`` by the running
server every :data:`STATUS_INTERVAL_S` seconds (atomically: write, rename) and read by
``liaison feeds status`` (docs/feeds.md, "Status")."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATUS_VERSION = 1
# Seconds between two writes of the status file.
STATUS_INTERVAL_S = 2.0
# A file older than this many intervals is reported as stale (the server is not running).
STALE_INTERVALS = 3


@dataclass(slots=True)
class FeedStatus:
    """One feed's state, as the status file and ``liaison feeds status`` show it."""

    name: str
    kind: str
    upstream: str  # the url, path, listen or connect address
    state: str = "starting"  # starting, running, failing, stopped
    failures: int = 0  # consecutive failures (0 while running)
    last_error: str | None = None
    last_data_ms: int | None = None  # when the upstream last gave something readable

    def to_json(self, counts: Mapping[str, int]) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "upstream": self.upstream,
            "state": self.state,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_data_ms": self.last_data_ms,
            **counts,
        }


def status_path(data_dir: Path) -> Path:
    return data_dir / "feeds" / "status.json"


def write_status(path: Path, doc: Mapping[str, object]) -> None:
    """Write ``doc`` atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _age(now_ms: int, then: object) -> str:
    if not isinstance(then, int):
        return "never"
    return f"{max(0, now_ms - then) / 1000:.1f} s ago"


def render_status(doc: Mapping[str, object], now_ms: int) -> str:
    """Human-readable status for ``liaison feeds status``."""
    lines: list[str] = []
    written = doc.get("written_ms")
    stale_ms = int(STATUS_INTERVAL_S * STALE_INTERVALS * 1000)
    if not isinstance(written, int) or now_ms - written > stale_ms:
        lines.append(f"status written {_age(now_ms, written)}: stale (is the server running?)")
    thinning = doc.get("thinning", 1.0)
    lines.append(
        f"tracks: {doc.get('tracks', 0)}, pending {doc.get('pending', 0)},"
        f" thinning x{thinning if isinstance(thinning, int | float) else 1.0:.2f}"
    )
    for key in ("dropped", "behind"):
        counts = doc.get(key)
        if isinstance(counts, dict) and counts:
            lines.append(f"{key}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    feeds = doc.get("feeds")
    for feed in feeds if isinstance(feeds, list) else []:
        if not isinstance(feed, dict):
            continue
        lines.append(
            f"{feed.get('name')}: {feed.get('state')} ({feed.get('kind')} {feed.get('upstream')}),"
            f" data {_age(now_ms, feed.get('last_data_ms'))}"
        )
        lines.append(
            "  reports {reports}, published {published}, refused {refused}, invalid {invalid},"
            " failures {failures_total}".format(
                **{k: feed.get(k, 0) for k in ("reports", "published", "refused", "invalid")},
                failures_total=feed.get("failures_total", 0),
            )
        )
        if feed.get("last_error"):
            lines.append(
                f"  last error: {feed.get('last_error')}"
                f" ({feed.get('failures')} consecutive failures)"
            )
    return "\n".join(lines) + "\n"
