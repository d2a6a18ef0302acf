"""metrics.Metrics on prometheus-client: one registry per instance, names by the format's rules."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from liaison.metrics import Metrics


def _families(m: Metrics) -> dict[str, tuple[str, dict[str, float]]]:
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for f in text_string_to_metric_families(m.render_prometheus()):
        out[f.name] = (f.type, {f"{s.name}{sorted(s.labels.items())}": s.value for s in f.samples})
    return out


def test_two_servers_keep_separate_numbers() -> None:
    a, b = Metrics(), Metrics()
    a.counter("liaison_denied_total", "Denied", "reason").inc("no_group", 2)
    b.counter("liaison_denied_total", "Denied", "reason").inc("label")
    assert a.counter("liaison_denied_total", "Denied", "reason").get("no_group") == 2
    assert a.snapshot() == {'liaison_denied_total{reason="no_group"}': 2}
    assert b.snapshot() == {'liaison_denied_total{reason="label"}': 1}
    assert _families(a)["liaison_denied"] == (
        "counter",
        {"liaison_denied_total[('reason', 'no_group')]": 2.0},
    )


def test_counter_names_get_one_total_suffix() -> None:
    m = Metrics()
    m.counter("liaison_denied_total", "Denied", "reason")  # nothing counted yet
    m.counter("liaison_deliveries", "Delivered").inc(amount=3)  # no suffix given
    m.gauge("liaison_subscribers", "Subscribers", lambda: 4)
    text = m.render_prometheus()
    assert "_total_total" not in text
    fams = _families(m)
    assert fams["liaison_denied"] == ("counter", {})
    assert fams["liaison_deliveries"] == ("counter", {"liaison_deliveries_total[]": 3.0})
    assert fams["liaison_subscribers"] == ("gauge", {"liaison_subscribers[]": 4.0})
    assert m.snapshot()["liaison_deliveries_total"] == 3


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.counter("liaison_x_total", "X", "reason").inc('a"b\\c\nd')
    (_, samples) = _families(m)["liaison_x"]
    assert samples == {"liaison_x_total[('reason', 'a\"b\\\\c\\nd')]": 1.0}


def test_gauge_redefined_replaces_and_names_do_not_clash() -> None:
    m = Metrics()
    m.gauge("liaison_federation_up_p", "up", lambda: 0)
    m.gauge("liaison_federation_up_p", "up", lambda: 1)
    assert _families(m)["liaison_federation_up_p"] == (
        "gauge",
        {"liaison_federation_up_p[]": 1.0},
    )
    with pytest.raises(ValueError):
        m.counter("liaison_federation_up_p", "a counter under a gauge's name")
