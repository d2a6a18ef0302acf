"""metrics_merge.merge_worker_texts: several workers' /metrics texts as one, read back with
prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from liaison.metrics import Metrics
from liaison.metrics_merge import merge_worker_texts

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _read(text: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, sorted labels) -> value, of ``text``."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in types, f"family {family.name} twice"
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"sample {key} twice"
            samples[key] = s.value
    return types, samples


def _worker(events: int, denied: dict[str, int], subscribers: float, only: bool) -> str:
    m = Metrics()
    m.counter("liaison_deliveries_total", "Events handed to subscribers").inc(amount=events)
    reasons = m.counter("liaison_denied_total", "Deliveries refused", "reason")
    for reason, n in denied.items():
        reasons.inc(reason, n)
    m.gauge("liaison_subscribers", "Connected subscribers", lambda: subscribers)
    if only:
        m.counter("liaison_feed_reports_total", "Feed reports read", "feed").inc("ais", 7)
    return m.render_prometheus()


def test_two_workers_are_one_text_each_sample_labelled_with_its_worker() -> None:
    w1 = _worker(3, {"no_group": 2}, 4, only=True)
    w2 = _worker(5, {"no_group": 1, "label": 6}, 1, only=False)
    text = merge_worker_texts({"w2": w2, "w1": w1})
    types, samples = _read(text)
    assert types == {
        "liaison_deliveries": "counter",
        "liaison_denied": "counter",
        "liaison_subscribers": "gauge",
        "liaison_feed_reports": "counter",
        "liaison_worker_up": "gauge",
    }
    assert samples == {
        ("liaison_deliveries_total", (("worker", "w1"),)): 3.0,
        ("liaison_deliveries_total", (("worker", "w2"),)): 5.0,
        ("liaison_denied_total", (("reason", "no_group"), ("worker", "w1"))): 2.0,
        ("liaison_denied_total", (("reason", "label"), ("worker", "w2"))): 6.0,
        ("liaison_denied_total", (("reason", "no_group"), ("worker", "w2"))): 1.0,
        ("liaison_subscribers", (("worker", "w1"),)): 4.0,
        ("liaison_subscribers", (("worker", "w2"),)): 1.0,
        ("liaison_feed_reports_total", (("feed", "ais"), ("worker", "w1"))): 7.0,
        ("liaison_worker_up", (("worker", "w1"),)): 1.0,
        ("liaison_worker_up", (("worker", "w2"),)): 1.0,
    }
    # One HELP and one TYPE per family, the exposition format's counter naming, w1 before w2.
    assert text.count("# TYPE liaison_denied_total counter\n") == 1
    assert text.count("# HELP liaison_denied_total ") == 1
    assert 'liaison_worker_up{worker="w1"} 1.0\n' in text
    assert 'liaison_worker_up{worker="w2"} 1.0\n' in text
    assert text.index('liaison_deliveries_total{worker="w1"}') < text.index(
        'liaison_deliveries_total{worker="w2"}'
    )
    assert "_total_total" not in text


def test_workers_are_in_number_order() -> None:
    texts: dict[str, str | None] = {f"w{i}": _worker(i, {}, 0, only=False) for i in (10, 2, 1)}
    text = merge_worker_texts(texts)
    lines = [line for line in text.splitlines() if line.startswith("liaison_worker_up{")]
    assert lines == [f'liaison_worker_up{{worker="w{i}"}} 1.0' for i in (1, 2, 10)]


def test_a_worker_that_did_not_answer_is_reported_down_and_left_out() -> None:
    text = merge_worker_texts({"w1": _worker(3, {}, 1, only=False), "w2": None})
    _types, samples = _read(text)
    assert samples[("liaison_worker_up", (("worker", "w2"),))] == 0.0
    assert samples[("liaison_worker_up", (("worker", "w1"),))] == 1.0
    assert 'liaison_worker_up{worker="w2"} 0.0\n' in text
    assert not [k for k in samples if ("worker", "w2") in k[1] and k[0] != "liaison_worker_up"]


def test_hostile_or_unparsable_texts_put_their_worker_down_never_fail_the_answer() -> None:
    good = _worker(3, {"no_group": 2}, 1, only=False)
    hostile = {
        "garbage": "this is { not metrics\n",
        "bad_value": "liaison_deliveries_total abc\n",
        "bad_type": "# TYPE liaison_x nonsense\nliaison_x 1\n",
        "info_type": "# TYPE liaison_x info\nliaison_x_info 1\n",
        "worker_label": 'liaison_deliveries_total{worker="w1"} 99\n',
        "writes_up": "# TYPE liaison_worker_up gauge\nliaison_worker_up 1\n",
        "other_type": "# TYPE liaison_subscribers_total counter\nliaison_subscribers_total 1\n"
        "# TYPE liaison_deliveries gauge\nliaison_deliveries 1\n",
        "twice": "# TYPE liaison_y gauge\nliaison_y 1\nliaison_y 2\n",
        "stolen_sample": "# TYPE liaison_deliveries_total gauge\nliaison_deliveries_total 5\n",
        "binary": "\x00\xff\x01{}}\n",
    }
    for what, text in hostile.items():
        merged = merge_worker_texts({"w1": good, "w2": text})
        _types, samples = _read(merged)
        assert samples[("liaison_worker_up", (("worker", "w2"),))] == 0.0, what
        assert samples[("liaison_worker_up", (("worker", "w1"),))] == 1.0, what
        assert not [k for k in samples if ("worker", "w2") in k[1] and k[0] != "liaison_worker_up"]
        assert samples[("liaison_deliveries_total", (("worker", "w1"),))] == 3.0, what


def test_untyped_summary_and_histogram_families_keep_their_samples() -> None:
    w2 = (
        "# TYPE other_latency histogram\n"
        'other_latency_bucket{le="1.0"} 2\nother_latency_bucket{le="+Inf"} 3\n'
        "other_latency_sum 2.5\nother_latency_count 3\n"
        "other_untyped 4\n"
    )
    text = merge_worker_texts({"w1": _worker(1, {}, 0, only=False), "w2": w2})
    types, samples = _read(text)
    assert types["other_latency"] == "histogram" and types["other_untyped"] == "unknown"
    assert samples[("other_latency_bucket", (("le", "+Inf"), ("worker", "w2")))] == 3.0
    assert samples[("other_untyped", (("worker", "w2"),))] == 4.0
    assert samples[("liaison_worker_up", (("worker", "w2"),))] == 1.0


def test_no_worker_at_all_is_only_the_up_family() -> None:
    assert merge_worker_texts({}) == (
        "# HELP liaison_worker_up 1 when the worker's metrics are in this answer, 0 when they are "
        "not (no answer in time, too long, or a text that could not be merged)\n"
        "# TYPE liaison_worker_up gauge\n"
    )
