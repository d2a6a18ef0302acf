"""Several workers' ``/metrics`` texts as one (``liaison serve --workers N``, docs/deployment.md).

:func:`merge_worker_texts` is pure: each worker's text, by worker name, in; one text out. Each
text is parsed by prometheus-client's parser (``text_string_to_metric_families``), every sample
gets the label ``worker="<name>"``, families of the same name are merged into one (one ``# HELP``
and one ``# TYPE``, the first worker's help), and prometheus-client renders the result
(``generate_latest``, the text format 0.0.4:
https://prometheus.io/docs/instrumenting/exposition_formats/). A gauge ``liaison_worker_up``
says, per worker, 1 when its text is in the answer and 0 when it is not.

A worker's text is left out whole, and the worker reported down, when it is missing (``None``:
the worker did not answer) or when it cannot join the others honestly: it does not parse, a
family has a type other than the five the text format has, a sample already carries a
``worker`` label or is written twice, a family's type differs from the same family's type on a
worker taken before, a sample name belongs to another family, or it holds ``liaison_worker_up``
itself. One worker's bad text never fails the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

WORKER_LABEL = "worker"
UP = "liaison_worker_up"
UP_HELP = (
    "1 when the worker's metrics are in this answer, 0 when they are not (no answer in time, too "
    "long, or a text that could not be merged)"
)
# The families the text format 0.0.4 has (prometheus-client's parser calls untyped "unknown").
TEXT_TYPES = frozenset({"counter", "gauge", "summary", "histogram", "unknown"})


def _order(name: str) -> tuple[int, str]:
    """Workers in number order (w2 before w10), names that are not ``wN`` after them."""
    digits = name[1:]
    return (int(digits), name) if name.startswith("w") and digits.isdigit() else (1 << 30, name)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _parse(
    worker: str, text: str, types: Mapping[str, str], owners: Mapping[str, str]
) -> list[Metric] | None:
    """``text``'s families with ``worker`` on every sample, or None when it cannot join (see
    the module's docstring). ``types``: family name -> type so far; ``owners``: sample name ->
    family name so far."""
    try:
        parsed = list(text_string_to_metric_families(text))
    except Exception as exc:  # any failure of one worker's text: that worker is down
        log.warning("metrics of worker %s do not parse, left out: %s", worker, exc)
        return None
    out: list[Metric] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    mine: dict[str, str] = {}
    for family in parsed:
        problem = None
        if family.name == UP:
            problem = f"it writes {UP} itself"
        elif family.type not in TEXT_TYPES:
            problem = f"family {family.name} has type {family.type}"
        elif types.get(family.name, family.type) != family.type:
            problem = f"family {family.name} is a {family.type}, not a {types[family.name]}"
        labelled = Metric(family.name, family.documentation, family.type)
        for sample in family.samples:
            if problem is not None:
                break
            key = (sample.name, tuple(sorted(sample.labels.items())))
            owner = owners.get(sample.name, mine.get(sample.name, family.name))
            if WORKER_LABEL in sample.labels:
                problem = f"sample {sample.name} has a {WORKER_LABEL} label"
            elif key in seen:
                problem = f"sample {sample.name} is written twice"
            elif owner != family.name:
                problem = f"sample {sample.name} is in family {family.name} and {owner}"
            seen.add(key)
            mine[sample.name] = family.name
            labelled.samples.append(sample._replace(labels={**sample.labels, WORKER_LABEL: worker}))
        if problem is not None:
            log.warning("metrics of worker %s left out: %s", worker, problem)
            return None
        out.append(labelled)
    return out


def merge_worker_texts(texts: Mapping[str, str | None]) -> str:
    """One text for every worker's: ``texts`` maps a worker's name (``w1``) to its text, or to
    None when it did not answer (see the module's docstring)."""
    merged: dict[str, Metric] = {}
    types: dict[str, str] = {}
    owners: dict[str, str] = {}
    up: list[tuple[str, bool]] = []
    for worker in sorted(texts, key=_order):
        text = texts[worker]
        families = None if text is None else _parse(worker, text, types, owners)
        up.append((worker, families is not None))
        for family in families or ():
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = into = Metric(family.name, family.documentation, family.type)
                types[family.name] = family.type
            into.samples.extend(family.samples)
            for sample in family.samples:
                owners[sample.name] = family.name
    gauge = GaugeMetricFamily(UP, UP_HELP, labels=[WORKER_LABEL])
    for worker, answered in up:
        gauge.add_metric([worker], 1.0 if answered else 0.0)
    return generate_latest(_Families([*merged.values(), gauge])).decode("utf-8")
