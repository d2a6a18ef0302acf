"""Federation link status: state, backlog, acknowledgements and counts, as metrics and JSON.

Each peer link keeps one :class:`PeerStatus`. The running server writes them all to
``data_dir/federation/status.json`` every few seconds (atomically: write, fsync, rename), which
``liaison federation status`` reads; the same numbers are exported as metrics:
``liaison_federation_<count>_total{peer="..."}`` counters and per-peer gauges
``liaison_federation_up_<peer>``, ``..._backlog_<peer>`` and ``..._last_acked_<peer>``
(the metrics registry has one label per counter and none on gauges). Each peer's JSON also holds
``queue``: the ``statistics()`` of its link's queue of delivered events waiting for the guard.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liaison.metrics import Counter, Metrics
from liaison.transports.outbound import OutboundStatistics

STATUS_VERSION = 1

# Counts each link keeps; every one is also a metrics counter labelled by peer.
COUNTS = (
    "releases",  # events the guard released into the outbox (audited)
    "denials",  # events refused to the peer (audited): by the router's label decision, by
    # the guard, and send-time re-check failures; equals the deny/guard_mismatch records
    # naming federation:<peer>
    "sent",  # EVENT frames written (resends included)
    "acked",  # outbox rows deleted by the peer's ACK
    "received",  # EVENT frames received (duplicates included)
    "accepted",  # received events that passed inbound validation and were routed
    "rejections",  # received events refused by inbound validation (audited)
    "duplicates",  # received events dropped as already applied
    "coalesced",  # queued position reports replaced by a newer one
    "connects",  # connections that completed the handshake
    "refusals",  # connections refused (certificate, policy, version)
    "audit_failures",  # events not released because the audit log could not be written
)


class LinkState(enum.StrEnum):
    DOWN = "down"  # no connection (waiting to dial, or for the peer to dial us)
    CONNECTING = "connecting"  # TCP/TLS in progress
    HANDSHAKE = "handshake"  # HELLO/RESUME in progress
    UP = "up"  # events flow
    REFUSED = "refused"  # the last attempt was refused (see last_error)


def _metric_name(peer: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", peer.lower())


@dataclass(slots=True)
class PeerStatus:
    """The live status of one peer link (mutable; updated by the link)."""

    name: str
    dial: str | None = None
    protocol: str = "native"  # the wire the peer speaks: "native", "tak-v2" or "tak-v1"
    state: LinkState = LinkState.DOWN
    peer_server_id: str | None = None
    since_ms: int = 0  # when the state last changed
    backlog: int = 0
    last_seq: int = 0
    last_acked: int = 0
    last_applied: int = 0
    last_error: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    # The statistics of the link's queue of delivered events waiting for the guard (set by the
    # link; written as "queue", null without a link).
    queue: Callable[[], OutboundStatistics] | None = None
    # Items a TAK wire dropped, by reason (no_group_mapping_out/_in, mission_control, ...); each
    # is also counted by liaison_federation_dropped_total{reason} and audited.
    drops: dict[str, int] = field(default_factory=dict)
    # The federate group names the peer announced on its groups stream (tak-federation.md 7).
    remote_groups: list[str] = field(default_factory=list)
    _counters: Mapping[str, Counter] | None = None
    _drops: Counter | None = None

    def drop(self, reason: str, n: int = 1) -> None:
        """Count items dropped for ``reason`` (per peer here, all peers in the metric)."""
        self.drops[reason] = self.drops.get(reason, 0) + n
        if self._drops is not None:
            self._drops.inc(reason, n)

    def bump(self, what: str, n: int = 1) -> None:
        if n:
            self.counts[what] += n
            if self._counters is not None:
                self._counters[what].inc(self.name, n)

    def set_state(self, state: LinkState, now_ms: int, error: str | None = None) -> None:
        if state is not self.state:
            self.state = state
            self.since_ms = now_ms
        if error is not None:
            self.last_error = error

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "dial": self.dial,
            "protocol": self.protocol,
            "state": self.state.value,
            "peer_server_id": self.peer_server_id,
            "since_ms": self.since_ms,
            "backlog": self.backlog,
            "last_seq": self.last_seq,
            "last_acked": self.last_acked,
            "last_applied": self.last_applied,
            "last_error": self.last_error,
            "counts": dict(self.counts),
            "drops": dict(self.drops),
            "remote_groups": list(self.remote_groups),
            "queue": asdict(self.queue()) if self.queue is not None else None,
        }


class FederationStatus:
    """Every peer's status, with the metrics that export it."""

    def __init__(self, server_id: str, metrics: Metrics | None = None) -> None:
        self.server_id = server_id
        self.peers: dict[str, PeerStatus] = {}
        # In a cluster: the federation lease as this node last saw it (federation/leased.py),
        # written as "lease": {"node", "holder", "epoch", "held_here"}; None alone.
        self.lease: dict[str, object] | None = None
        self._metrics = metrics
        self._counters: dict[str, Counter] = {}
        self._drops: Counter | None = None
        if metrics is not None:
            self._drops = metrics.counter(
                "liaison_federation_dropped_total",
                "Items a TAK federation wire dropped, by reason",
                "reason",
            )
            for what in COUNTS:
                self._counters[what] = metrics.counter(
                    f"liaison_federation_{what}_total", f"Federation link {what}", "peer"
                )

    def add(self, name: str, dial: str | None, protocol: str = "native") -> PeerStatus:
        status = PeerStatus(
            name=name,
            dial=dial,
            protocol=protocol,
            _counters=self._counters or None,
            _drops=self._drops,
        )
        self.peers[name] = status
        m = self._metrics
        if m is not None:
            key = _metric_name(name)
            m.gauge(
                f"liaison_federation_up_{key}",
                f"1 while the link to {name} is up",
                lambda: 1.0 if status.state is LinkState.UP else 0.0,
            )
            m.gauge(
                f"liaison_federation_backlog_{key}",
                f"Events queued for {name} and not acknowledged",
                lambda: float(status.backlog),
            )
            m.gauge(
                f"liaison_federation_last_acked_{key}",
                f"Last sequence number {name} acknowledged",
                lambda: float(status.last_acked),
            )
        return status

    def snapshot(self, now_ms: int) -> dict[str, object]:
        doc: dict[str, object] = {
            "v": STATUS_VERSION,
            "server_id": self.server_id,
            "written_ms": now_ms,
            "peers": [p.to_json() for p in self.peers.values()],
        }
        if self.lease is not None:
            doc["lease"] = dict(self.lease)
        return doc

    def write(self, path: Path, now_ms: int) -> None:
        """Write the snapshot atomically (readers never see a partial file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(self.snapshot(now_ms), indent=2, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)


# A status file older than this many write intervals is stale: its server is not running (what
# ``liaison federation status`` reports; a standby may then replace the holder's file).
STALE_INTERVALS = 3


def status_path(data_dir: Path) -> Path:
    return data_dir / "federation" / "status.json"


def standby_may_write(path: Path, node: str, now_ms: int, *, stale_after_ms: int) -> bool:
    """Whether a cluster node that does not hold the federation lease may write its status
    (no peers) to ``path``: not while the file is the lease holder's (``lease.held_here`` true,
    another ``lease.node``) and written less than ``stale_after_ms`` ago. The workers of one
    node (``liaison serve --workers N``) share the data folder and so the file: the holder's
    links stay in it; a holder that stopped writing is replaced after ``stale_after_ms``."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return True
    if not isinstance(doc, dict):
        return True
    lease, written = doc.get("lease"), doc.get("written_ms")
    return not (
        isinstance(lease, dict)
        and lease.get("held_here") is True
        and lease.get("node") != node
        and isinstance(written, int)
        and 0 <= now_ms - written < stale_after_ms
    )


def render_status(doc: Mapping[str, object], now_ms: int, *, stale_after_ms: int) -> str:
    """Human-readable status for ``liaison federation status``."""
    lines: list[str] = []
    written = doc.get("written_ms")
    age_s = (now_ms - written) / 1000 if isinstance(written, int) else None
    head = f"server {doc.get('server_id')}"
    if age_s is not None:
        head += f", status written {age_s:.0f} s ago"
        if age_s * 1000 > stale_after_ms:
            head += " (stale: is the server running?)"
    lines.append(head)
    lease = doc.get("lease")
    if isinstance(lease, dict):
        holder = lease.get("holder") or "nobody"
        here = "this node" if lease.get("held_here") else f"not this node ({lease.get('node')})"
        lines.append(f"lease: held by {holder} (epoch {lease.get('epoch', 0)}), {here}")
        if not lease.get("held_here"):
            lines.append("the partner links run on the lease holder; its status is the current one")
    peers = doc.get("peers")
    if not isinstance(peers, list) or not peers:
        lines.append("no federation peers configured")
        return "\n".join(lines) + "\n"
    lines.append(
        f"{'peer':<12} {'wire':<7} {'state':<10} {'backlog':>8} {'last_acked':>10} {'releases':>9}"
        f" {'denials':>8} {'rejections':>10}  peer id / last error"
    )
    for p in peers:
        if not isinstance(p, dict):
            continue
        counts = p.get("counts") if isinstance(p.get("counts"), dict) else {}
        assert isinstance(counts, dict)
        note = p.get("peer_server_id") or ""
        if p.get("last_error"):
            note = f"{note} ({p['last_error']})" if note else str(p["last_error"])
        lines.append(
            f"{p.get('name', '?')!s:<12} {p.get('protocol', 'native')!s:<7}"
            f" {p.get('state', '?')!s:<10} {p.get('backlog', 0)!s:>8}"
            f" {p.get('last_acked', 0)!s:>10} {counts.get('releases', 0)!s:>9}"
            f" {counts.get('denials', 0)!s:>8} {counts.get('rejections', 0)!s:>10}  {note}"
        )
    return "\n".join(lines) + "\n"
