"""Feeds: ADS-B and AIS upstreams as sources of the router, each a principal of its own
(docs/feeds.md). ``build_feeds`` is what app.py calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from liaison.feeds.config import FeedConfig, parse_feeds
from liaison.feeds.runner import Feeds, FeedSource, feed_principal
from liaison.gate import Gate, ListenerGate
from liaison.metrics import Metrics
from liaison.router import Router

__all__ = [
    "FeedConfig",
    "FeedSource",
    "Feeds",
    "audit_fields",
    "build_feeds",
    "feed_principal",
    "parse_feeds",
]


def build_feeds(
    policy_text: str,
    gate: Gate,
    router: Router,
    metrics: Metrics,
    clock_ms: Callable[[], int],
    base_dir: Path,
    data_dir: Path,
) -> Feeds | None:
    """The feeds of the policy file's ``[feeds.NAME]`` tables, or None when it has none.

    Each feed gets a gate table of its own (``feed:NAME``: its ceiling and default
    classification), so the router's ingest rules label its events as they label a listener's.
    """
    configs = parse_feeds(policy_text, gate.policy, base_dir=base_dir)
    if not configs:
        return None
    tables = {
        c.listener: ListenerGate(
            ceiling=c.ceiling, default_classification=c.default_classification, org=c.org
        )
        for c in configs
    }
    gate.config = replace(gate.config, listeners={**gate.config.listeners, **tables})
    return Feeds(configs, router, metrics, clock_ms, data_dir, gate.policy)


def audit_fields(configs: list[FeedConfig]) -> list[dict[str, object]]:
    """What the ``config_load`` audit record says of each feed (docs/labels.md): who it writes
    as, what it may assert and the label its items get. Integers and strings only (the audit
    log's canonical JSON has no floats); never its upstream (a URL may carry credentials)."""
    return [
        {
            "name": c.name,
            "kind": c.kind,
            "principal": f"feed:{c.name}",
            "org": c.org,
            "groups": sorted(c.groups),
            "ceiling": {
                "classification": c.ceiling.ceiling,
                "held": {k: sorted(v) for k, v in sorted(c.ceiling.held.items())},
            },
            "default_classification": c.default_classification,
            "label_rules": [r.classification for r in c.labels if r.classification is not None],
        }
        for c in configs
    ]
