"""Counters and gauges, named once, rendered in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class Counter:
    """A monotonically increasing count, optionally split by one label (usually ``reason``)."""

    name: str
    help: str
    label: str | None = None
    values: dict[str, int] = field(default_factory=dict)

    def inc(self, key: str = "", amount: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, key: str = "") -> int:
        return self.values.get(key, 0)

    def total(self) -> int:
        return sum(self.values.values())


@dataclass(slots=True)
class Gauge:
    """A value read when metrics are rendered (queue depths, connected sessions)."""

    name: str
    help: str
    read: Callable[[], float]


class Metrics:
    """The server's registry. One instance, built by the app and passed down."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def counter(self, name: str, help: str, label: str | None = None) -> Counter:
        existing = self._counters.get(name)
        if existing is not None:
            return existing
        c = Counter(name=name, help=help, label=label)
        self._counters[name] = c
        return c

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        g = Gauge(name=name, help=help, read=read)
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
        lines: list[str] = []
        for c in self._counters.values():
            lines.append(f"# HELP {c.name} {c.help}")
            lines.append(f"# TYPE {c.name} counter")
            if not c.values:
                lines.append(f"{c.name} 0" if c.label is None else f"{c.name}_total 0")
            for key, v in sorted(c.values.items()):
                if c.label:
                    lines.append(f'{c.name}{{{c.label}="{_escape(key)}"}} {v}')
                else:
                    lines.append(f"{c.name} {v}")
        for g in self._gauges.values():
            lines.append(f"# HELP {g.name} {g.help}")
            lines.append(f"# TYPE {g.name} gauge")
            lines.append(f"{g.name} {g.read()}")
        return "\n".join(lines) + "\n"
