"""ADS-B aircraft.json to track reports and CoT events (protocol/adsb.py)."""

from __future__ import annotations

import json

import pytest

from liaison.model.event import UNKNOWN_ERROR
from liaison.protocol import adsb, cot_xml
from liaison.protocol.feed_tracks import FEET_TO_M, KNOTS_TO_MPS, to_event
from tests.unit.feeds.samples import aircraft_json


def test_real_snapshot_reports_only_fresh_positions() -> None:
    data = aircraft_json()
    doc = json.loads(data)
    parsed = adsb.parse_document(data, now_ms=0)
    with_pos = [
        a for a in doc["aircraft"] if "lat" in a and a.get("seen_pos", a.get("seen", 0)) <= 60
    ]
    assert len(parsed.reports) == len(with_pos) == 24
    assert parsed.skipped == len(doc["aircraft"]) - 24
    by_uid = {r.uid: r for r in parsed.reports}
    r = by_uid["ICAO-3c71a1"]
    # "now": 1785349721.5, "seen_pos": 5.9
    assert r.time_ms == 1785349721500 - 5900
    assert r.callsign == "BCS361"  # padded with spaces in the source
    assert r.hae == round(42600 * FEET_TO_M, 1)  # alt_geom: above the WGS84 ellipsoid
    assert r.speed_mps == pytest.approx(533.7 * KNOTS_TO_MPS)
    assert r.course == pytest.approx(79.6)
    assert r.detail_attrs["squawk"] == "2274"
    assert r.emergency is None
    xml = cot_xml.render_xml(to_event(r, "n", 60_000))
    assert b'uid="ICAO-3c71a1" type="a-n-A"' in xml  # no category in the source
    assert b'<contact callsign="BCS361"' in xml
    assert b'<__adsb hex="3c71a1" flight="BCS361" squawk="2274"' in xml
    # A3 (large aircraft) is civil fixed wing.
    assert by_uid["ICAO-407689"].cot_type == "a-?-A-C-F"


def _doc(**fields: object) -> bytes:
    ac = {"hex": "43c6f1", "lat": 51.0, "lon": -1.0, "seen_pos": 1.0, **fields}
    return json.dumps({"now": 1_800_000_000, "aircraft": [ac]}).encode()


@pytest.mark.parametrize(
    ("category", "flags", "expected"),
    [
        ("A3", 0, "a-?-A-C-F"),
        ("A3", 1, "a-?-A-M-F"),
        ("A7", 0, "a-?-A-C-H"),
        ("A7", 1, "a-?-A-M-H"),
        ("B6", 0, "a-?-A-C-F-q"),
        ("B2", 0, "a-?-A-C-L"),
        ("C1", 0, "a-?-G-E-V"),
        (None, 1, "a-?-A-M"),
    ],
)
def test_type_from_category_and_military_flag(
    category: str | None, flags: int, expected: str
) -> None:
    fields: dict[str, object] = {"dbFlags": flags}
    if category:
        fields["category"] = category
    (r,) = adsb.parse_document(_doc(**fields), 0).reports
    assert r.cot_type == expected
    assert r.military == bool(flags & 1)


@pytest.mark.parametrize(
    ("squawk", "text"),
    [("7500", "unlawful"), ("7600", "radio failure"), ("7700", "emergency")],
)
def test_emergency_squawks_are_alerts(squawk: str, text: str) -> None:
    (r,) = adsb.parse_document(_doc(squawk=squawk, flight="RYR1 "), 0).reports
    assert r.emergency is not None and text in r.emergency
    xml = cot_xml.render_xml(to_event(r, "u", 60_000))
    assert f'<emergency type="{r.emergency}">RYR1</emergency>'.encode() in xml


def test_non_icao_kept_distinct_and_ground() -> None:
    data = json.dumps(
        {
            "now": 1_800_000_000,
            "aircraft": [
                {"hex": "~43c6f1", "lat": 1, "lon": 2, "alt_baro": "ground"},
                {"hex": "43c6f1", "lat": 1, "lon": 2, "alt_baro": 1000},
            ],
        }
    ).encode()
    a, b = adsb.parse_document(data, 0).reports
    assert (a.uid, b.uid) == ("ICAO-~43c6f1", "ICAO-43c6f1")
    assert a.hae == UNKNOWN_ERROR and a.detail_attrs["alt_baro"] == "ground"
    assert b.hae == pytest.approx(1000 * FEET_TO_M)


def test_aggregator_ac_array_with_milliseconds() -> None:
    data = json.dumps(
        {"now": 1_800_000_000_000, "ac": [{"hex": "ae1234", "lat": 1, "lon": 2, "seen_pos": 2}]}
    ).encode()
    (r,) = adsb.parse_document(data, 0).reports
    assert r.time_ms == 1_800_000_000_000 - 2000


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b'{"now": 1}', b'{"aircraft": 3}', b"\xff\xfe"]
)
def test_not_an_aircraft_json(data: bytes) -> None:
    with pytest.raises(adsb.AdsbError):
        adsb.parse_document(data, 0)


@pytest.mark.parametrize(
    "entry",
    [
        {"hex": "zz1234", "lat": 1, "lon": 2},
        {"hex": "123456", "lat": 91, "lon": 2},
        {"hex": "123456", "lat": 1},
        {"hex": "123456", "lat": 1, "lon": 2, "seen_pos": 61},
        {"hex": 5, "lat": 1, "lon": 2},
        "not an object",
    ],
)
def test_unusable_aircraft_are_skipped(entry: object) -> None:
    parsed = adsb.parse_document(json.dumps({"aircraft": [entry]}).encode(), 0)
    assert parsed.reports == [] and parsed.skipped == 1
