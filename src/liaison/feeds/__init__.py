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

__all__ = ["FeedConfig", "FeedSource", "Feeds", "build_feeds", "feed_principal", "parse_feeds"]


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
