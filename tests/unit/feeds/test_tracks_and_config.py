"""Affiliation and label rules and the [feeds.NAME] tables (protocol/feed_tracks.py,
feeds/config.py); the merge and thinning are in test_pending.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.errors import ConfigError
from liaison.feeds.config import parse_feeds
from liaison.gate import load_gate_config
from liaison.protocol.feed_tracks import TrackReport, affiliation, classification

POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "RESTRICTED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]
"""


def report(kind: str, ident: str, military: bool = False) -> TrackReport:
    return TrackReport(
        kind=kind,
        ident=ident,
        uid=ident,
        cot_type="a-?-A",
        time_ms=0,
        lat=0,
        lon=0,
        military=military,
    )


def test_affiliation_rules_in_order() -> None:
    text = (
        POLICY
        + """
[feeds.air]
kind = "adsb-http"
url = "http://127.0.0.1:1/data/aircraft.json"
org = "USA"
ceiling = { classification = "RESTRICTED", REL = "*" }
default_classification = "RESTRICTED"
affiliation = "n"
[[feeds.air.rules]]
military = true
icao_range = ["AE0000", "AFFFFF"]
affiliation = "f"
[[feeds.air.rules]]
ids = ["3C71A1", 211000001]
affiliation = "h"
[[feeds.air.rules]]
kind = "vessel"
mid = [273]
affiliation = "s"
"""
    )
    (c,) = parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert c.listener == "feed:air" and c.org == "USA" and c.groups == frozenset({"__ANON__"})
    pick = lambda r: affiliation(r, c.rules, c.affiliation)  # noqa: E731
    assert pick(report("aircraft", "ae1234", military=True)) == "f"
    assert pick(report("aircraft", "ae1234")) == "n"  # not military
    assert pick(report("aircraft", "3c71a1")) == "h"
    assert pick(report("vessel", "211000001")) == "h"
    assert pick(report("vessel", "273000001")) == "s"
    assert pick(report("vessel", "244000001")) == "n"


def test_label_rules_pick_a_classification_within_the_ceiling() -> None:
    text = (
        POLICY
        + """
[feeds.sea]
kind = "ais-udp"
listen = ":0"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "RESTRICTED"
[[feeds.sea.labels]]
military = true
classification = "SECRET"
[[feeds.sea.labels]]
mid = [273]
classification = "UNCLASSIFIED"
"""
    )
    (c,) = parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert classification(report("vessel", "273000001", military=True), c.labels) == "SECRET"
    assert classification(report("vessel", "273000001"), c.labels) == "UNCLASSIFIED"
    assert classification(report("vessel", "244000001"), c.labels) is None  # the default
    assert affiliation(report("vessel", "273000001"), c.labels, "u") == "u"  # labels only


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('kind = "carrier-pigeon"', "feeds.x.kind"),
        ('kind = "adsb-http"', "feeds.x.url"),
        (
            'kind = "ais-udp"\nlisten = ":0"\norg = "USA"\ndefault_classification = "U"\n'
            'ceiling = { classification = "SECRET", REL = "*" }',
            "feeds.x.default_classification",
        ),
        (
            'kind = "ais-udp"\nlisten = ":0"\norg = "USA"\ndefault_classification = "SECRET"',
            "feeds.x.ceiling",
        ),
        ('kind = "ais-udp"\nlisten = ":0"\nsurprise = 1', "feeds.x.surprise"),
        (
            'kind = "ais-tcp"\nconnect = "h:1"\norg = "USA"\ndefault_classification = "SECRET"\n'
            'ceiling = { classification = "SECRET", REL = "*" }\naffiliation = "z"',
            "feeds.x.affiliation",
        ),
        (
            'kind = "ais-udp"\nlisten = ":0"\norg = "USA"\ndefault_classification = "RESTRICTED"\n'
            'ceiling = { classification = "RESTRICTED", REL = "*" }\n'
            '[[feeds.x.labels]]\nmilitary = true\nclassification = "SECRET"',
            "feeds.x.labels[0].classification",
        ),
        (
            'kind = "ais-udp"\nlisten = ":0"\norg = "USA"\ndefault_classification = "RESTRICTED"\n'
            'ceiling = { classification = "RESTRICTED", REL = "*" }\n'
            '[[feeds.x.labels]]\nmilitary = true\naffiliation = "h"',
            "feeds.x.labels[0].affiliation",
        ),
    ],
)
def test_bad_tables_are_refused_by_key(table: str, key: str) -> None:
    text = POLICY + "[feeds.x]\n" + table + "\n"
    with pytest.raises(ConfigError) as exc:
        parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert exc.value.key == key


def test_status_rendering_shows_failures_and_staleness() -> None:
    from liaison.feeds.status import render_status

    doc = {
        "v": 1,
        "written_ms": 10_000,
        "tracks": 3,
        "pending": 2,
        "thinning": 2.5,
        "dropped": {"thinned": 40, "old": 4},
        "behind": {"overdue": 3},
        "feeds": [
            {
                "name": "air",
                "kind": "adsb-http",
                "upstream": "http://192.0.2.1/data/aircraft.json",
                "state": "failing",
                "failures": 2,
                "last_error": "HTTP 503 from http://192.0.2.1/data/aircraft.json",
                "last_data_ms": 4_000,
                "reports": 10,
                "published": 7,
                "refused": 1,
                "invalid": 0,
                "failures_total": 5,
            }
        ],
    }
    assert render_status(doc, 11_000) == (
        "tracks: 3, pending 2, thinning x2.50\n"
        "dropped: old 4, thinned 40\n"
        "behind: overdue 3\n"
        "air: failing (adsb-http http://192.0.2.1/data/aircraft.json), data 7.0 s ago\n"
        "  reports 10, published 7, refused 1, invalid 0, failures 5\n"
        "  last error: HTTP 503 from http://192.0.2.1/data/aircraft.json (2 consecutive failures)\n"
    )
    assert render_status(doc, 20_000).startswith(
        "status written 10.0 s ago: stale (is the server running?)\n"
    )


def test_the_example_in_docs_feeds_md_parses() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "feeds.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = """
[policy]
id = "EXAMPLE"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["GBR"]
"""
    text = policy + example
    air, sea = parse_feeds(text, load_gate_config(text).policy, base_dir=Path("/etc/liaison"))
    assert (air.name, air.kind, air.url, air.interval_s) == (
        "heathrow-adsb",
        "adsb-http",
        "http://192.0.2.10:8080/data/aircraft.json",
        2.0,
    )
    assert air.affiliation == "n" and len(air.rules) == 1 and len(air.labels) == 1
    assert air.labels[0].ids == frozenset({"43c6f1"})
    assert sea.kind == "ais-udp" and sea.listen is not None and sea.listen.port == 10110
    assert sea.affiliation == "u" and sea.stale_s == 60.0 and sea.min_interval_s == 1.0
