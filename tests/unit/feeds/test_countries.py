"""Rules by country: the ICAO address blocks and MIDs of each country (protocol/countries.py), the
``country`` rule condition (protocol/feed_tracks.py) and its configuration (feeds/config.py)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liaison.errors import ConfigError
from liaison.feeds.config import parse_feeds
from liaison.gate import load_gate_config
from liaison.protocol.countries import COUNTRIES, ICAO_BLOCKS, MIDS, icao_country, mid_countries
from liaison.protocol.feed_tracks import TrackReport, TrackRule, affiliation, country_of

POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]
"""
FEED = """
[feeds.x]
kind = "ais-udp"
listen = ":0"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "UNCLASSIFIED"
"""


def report(kind: str, ident: str) -> TrackReport:
    return TrackReport(
        kind=kind, ident=ident, uid=ident, cot_type="a-?-A", time_ms=0, lat=0.0, lon=0.0
    )


def test_blocks_are_sorted_disjoint_and_24_bit() -> None:
    for first, last, country in ICAO_BLOCKS:
        assert 0 <= first <= last <= 0xFFFFFF
        assert len(country) == 2 and country.isupper()
    for (_, last, _), (first, _, _) in pairwise(ICAO_BLOCKS):
        assert last < first


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_every_address_has_at_most_one_country(address: int) -> None:
    owners = [c for first, last, c in ICAO_BLOCKS if first <= address <= last]
    assert len(owners) <= 1
    assert icao_country(address) == (owners[0] if owners else None)


@pytest.mark.parametrize(
    ("address", "country"),
    [
        (0xA00001, "US"),  # N1, the first N-number
        (0xADF7C7, "US"),  # N99999, the last
        (0xA00000, "US"),
        (0xAFFFFF, "US"),
        (0xB00000, None),
        (0x9FFFFF, None),
        (0x508000, "UA"),
        (0x50FFFF, "UA"),
        (0x507FFF, "UZ"),
        (0x510000, "BY"),
        (0x5103FF, "BY"),
        (0x510400, None),
        (0x100000, "RU"),
        (0x1FFFFF, "RU"),
        (0x0FFFFF, None),
        (0x3C0000, "DE"),
        (0x3C6DD4, "DE"),
        (0x3FFFFF, "DE"),
        (0x400000, "GB"),
        (0x43C6F1, "GB"),
        (0x488000, "PL"),
        (0x48FFFF, "PL"),
        (0x380000, "FR"),
        (0x300000, "IT"),
        (0xC00000, "CA"),
        (0xC3FFFF, "CA"),
        (0x7C0000, "AU"),
        (0xC80000, "NZ"),
        (0x840000, "JP"),
        (0x718000, "KR"),
        (0x780000, "CN"),
        (0x800000, "IN"),
        (0x4B8000, "TR"),
        (0x511000, "EE"),
        (0x502C00, "LV"),
        (0x503C00, "LT"),
        (0x899000, "TW"),
        (0x8993FF, "TW"),
        (0x899400, None),
        (0xF00000, None),  # ICAO's temporary addresses: no State
        (0x000000, None),
        (0xFFFFFF, None),
    ],
)
def test_known_addresses(address: int, country: str | None) -> None:
    assert icao_country(address) == country


NATO_EU_AND_OTHERS = [
    *("AL", "BE", "BG", "CA", "HR", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IS", "IT"),
    *("LV", "LT", "LU", "ME", "NL", "MK", "NO", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "TR"),
    *("GB", "US", "AT", "CY", "IE", "MT", "UA", "RU", "BY", "AU", "NZ", "JP", "KR", "CN", "IN"),
]


@pytest.mark.parametrize("country", NATO_EU_AND_OTHERS)
def test_the_named_states_have_a_block_and_a_mid(country: str) -> None:
    assert any(c == country for _, _, c in ICAO_BLOCKS), country
    assert any(country in cs for cs in MIDS.values()), country


def test_known_mids() -> None:
    assert mid_countries(211) == {"DE"} and mid_countries(218) == {"DE"}
    assert mid_countries(272) == {"UA"}
    assert mid_countries(273) == {"RU"}
    assert mid_countries(206) == {"BY"}
    assert mid_countries(261) == {"PL"}
    assert all(mid_countries(m) == {"US"} for m in (303, 338, 366, 367, 368, 369))
    assert mid_countries(316) == {"CA"}
    assert mid_countries(503) == {"AU"} and mid_countries(512) == {"NZ"}
    assert mid_countries(306) == {"BQ", "CW", "SX"}
    # Areas with their own ISO code keep it: not US.
    assert [mid_countries(m) for m in (358, 379, 536, 559)] == [{"PR"}, {"VI"}, {"MP"}, {"AS"}]
    assert mid_countries(200) == frozenset() and mid_countries(800) == frozenset()
    assert all(201 <= m <= 775 for m in MIDS)


@pytest.mark.parametrize(
    ("kind", "ident", "countries"),
    [
        ("vessel", "211123456", {"DE"}),  # ship station MIDxxxxxx
        ("vessel", "272000001", {"UA"}),
        ("vessel", "111272001", {"UA"}),  # SAR aircraft 111MIDxxx
        ("vessel", "992111234", {"DE"}),  # aid to navigation 99MIDxxxx
        ("vessel", "002721234", {"UA"}),  # coast station 00MIDxxxx
        ("vessel", "982111234", {"DE"}),  # craft associated with a parent ship 98MIDxxxx
        ("vessel", "970123456", set()),  # SART: no MID
        ("vessel", "200000000", set()),  # not an allocated MID
        ("vessel", "27200001", set()),  # not 9 digits
        ("aircraft", "508000", {"UA"}),
        ("aircraft", "a00001", {"US"}),
        ("aircraft", "~508000", set()),  # non-ICAO address
        ("aircraft", "zz", set()),
    ],
)
def test_country_of_a_report(kind: str, ident: str, countries: set[str]) -> None:
    assert country_of(report(kind, ident)) == countries


def test_country_rule_matches_aircraft_and_vessels() -> None:
    rules = [
        TrackRule(affiliation="f", country=frozenset({"UA", "PL"})),
        TrackRule(affiliation="h", country=frozenset({"RU", "BY"}), kind="aircraft"),
    ]
    assert affiliation(report("aircraft", "50ffff"), rules, "u") == "f"
    assert affiliation(report("aircraft", "488000"), rules, "u") == "f"
    assert affiliation(report("vessel", "272111222"), rules, "u") == "f"
    assert affiliation(report("vessel", "261000001"), rules, "u") == "f"
    assert affiliation(report("aircraft", "154f2a"), rules, "u") == "h"
    assert affiliation(report("aircraft", "510000"), rules, "u") == "h"
    assert affiliation(report("vessel", "273000001"), rules, "u") == "u"  # kind = aircraft
    assert affiliation(report("aircraft", "510400"), rules, "u") == "u"  # past Belarus' block
    assert affiliation(report("aircraft", "a00001"), rules, "u") == "u"


def test_country_in_config_any_case() -> None:
    text = POLICY + FEED + '[[feeds.x.rules]]\ncountry = ["ua", "PL"]\naffiliation = "f"\n'
    (feed,) = parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert feed.rules[0].country == frozenset({"UA", "PL"})
    labels = POLICY + FEED + '[[feeds.x.labels]]\ncountry = ["RU"]\nclassification = "SECRET"\n'
    (feed,) = parse_feeds(labels, load_gate_config(labels).policy, base_dir=Path("."))
    assert feed.labels[0].country == frozenset({"RU"})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('["XX"]', "unknown country code 'XX'"),
        ('["UKR"]', "unknown country code 'UKR'"),
        ('["AQ"]', "unknown country code 'AQ'"),  # ISO code, but no block and no MID
        ('"UA"', "must be a list"),
        ("[804]", "must be a list"),
    ],
)
def test_bad_country_is_a_config_error(value: str, reason: str) -> None:
    text = POLICY + FEED + f'[[feeds.x.rules]]\ncountry = {value}\naffiliation = "f"\n'
    with pytest.raises(ConfigError) as exc:
        parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert exc.value.key == "feeds.x.rules[0].country"
    assert reason in str(exc.value)


def test_every_country_is_two_letters() -> None:
    assert all(len(c) == 2 and c.isalpha() and c.isupper() for c in COUNTRIES)


def test_the_country_example_in_docs_feeds_md_parses() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "feeds.md").read_text()
    section = doc.split("### Rules by country", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = POLICY.replace('"USA", "UKR"', '"GBR"')
    text = policy + example
    (feed,) = parse_feeds(text, load_gate_config(text).policy, base_dir=Path("."))
    assert [r.country for r in feed.rules] == [
        frozenset({"UA", "PL", "LT", "LV", "EE"}),
        frozenset({"RU", "BY"}),
    ]
    assert affiliation(report("aircraft", "508123"), feed.rules, feed.affiliation) == "f"
    assert affiliation(report("vessel", "273111222"), feed.rules, feed.affiliation) == "s"
