"""Counters and gauges, named once, exposed in the Prometheus text format by prometheus-client.

Each :class:`Metrics` owns its own ``prometheus_client.CollectorRegistry`` (never the library's
global one), so several servers in one process keep separate numbers. Counters and gauges are
custom collectors in that registry: the values stay plain Python numbers that the server reads
back (``get``, ``total``, ``snapshot``), and the library names, types and renders them by the
exposition format's rules (https://prometheus.io/docs/instrumenting/exposition_formats/): a
counter's family is its base name and its sample is ``<base>_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# What generate_latest writes: the text format 0.0.4 (prometheus-client's CONTENT_TYPE_LATEST is
# the 1.0.0 text format's type since 0.22, which generate_latest's default output is not labelled).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_SUFFIX = "_total"


def _base(name: str) -> str:
    """A counter's family name: prometheus-client appends ``_total`` itself."""
    return name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name


@dataclass(slots=True, eq=False)  # hashed by identity: the registry keys collectors
class Counter(Collector):
    """A monotonically increasing count, optionally split by one label (usually ``reason``).

    ``name`` is the exposed sample name (``liaison_denied_total``); one given without ``_total``
    gets it appended, as the exposition format requires of counters.
    """

    name: str
    help: str
    label: str | None = None
    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = _base(self.name) + _SUFFIX

    def inc(self, key: str = "", amount: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, key: str = "") -> int:
        return self.values.get(key, 0)

    def total(self) -> int:
        return sum(self.values.values())

    def _family(self) -> CounterMetricFamily:
        base = _base(self.name)
        if self.label is None:
            return CounterMetricFamily(base, self.help, value=self.values.get("", 0))
        family = CounterMetricFamily(base, self.help, labels=[self.label])
        for key, v in sorted(self.values.items()):
            family.add_metric([key], v)
        return family

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(_base(self.name), self.help)]

    def collect(self) -> Iterable[Metric]:
        return [self._family()]


@dataclass(slots=True, eq=False)  # hashed by identity: the registry keys collectors
class Gauge(Collector):
    """A value read when metrics are rendered (queue depths, connected sessions)."""

    name: str
    help: str
    read: Callable[[], float]

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.help)]

    def collect(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.help, value=float(self.read()))]


class Metrics:
    """The server's registry. One instance, built by the app and passed down."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def counter(self, name: str, help: str, label: str | None = None) -> Counter:
        c = Counter(name=name, help=help, label=label)
        existing = self._counters.get(c.name)
        if existing is not None:
            return existing
        self.registry.register(c)  # ValueError when the name is already a gauge's
        self._counters[c.name] = c
        return c

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        g = Gauge(name=name, help=help, read=read)
        old = self._gauges.pop(name, None)
        if old is not None:  # a gauge defined again (a peer re-added) replaces the old one
            self.registry.unregister(old)
        self.registry.register(g)
        self._gauges[name] = g
        return g

    def __iter__(self) -> Iterator[Counter]:
        return iter(self._counters.values())

    def snapshot(self) -> dict[str, float]:
        """Flat ``name{label="key"}`` -> value map, for tests and ``federation status``."""
        out: dict[str, float] = {}
        for c in self._counters.values():
            for key, v in c.values.items():
                out[f'{c.name}{{{c.label}="{key}"}}' if c.label else c.name] = v
        for g in self._gauges.values():
            out[g.name] = g.read()
        return out

    def render_prometheus(self) -> str:
        """The text exposition format (version 0.0.4), served with :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry).decode("utf-8")
