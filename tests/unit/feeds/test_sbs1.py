"""SBS-1 BaseStation lines to track reports (protocol/sbs1.py): the real sample, state carried
between message types, garbage."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.model.event import UNKNOWN_ERROR
from liaison.protocol import cot_xml
from liaison.protocol.feed_tracks import FEET_TO_M, KNOTS_TO_MPS, to_event
from liaison.protocol.sbs1 import Sbs1Decoder

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "adsb" / "sbs1-msgs.txt"
LINES = SAMPLE.read_bytes().splitlines()


def test_real_sample() -> None:
    d = Sbs1Decoder()
    reports = [r for i, line in enumerate(LINES) for r in d.feed(line, i)]
    # 4,184 lines; 74 are MSG,3 airborne positions, all with coordinates; 24 aircraft heard.
    assert d.counts.lines == 4184 and d.counts.invalid == 0
    assert len(reports) == 74 and len(d) == 24
    assert {r.uid for r in reports} == {
        "ICAO-4b1908",
        "ICAO-76cce2",
        "ICAO-a1ea32",
        "ICAO-a82aac",
        "ICAO-aa779d",
    }
    first = reports[0]
    # MSG,1,,,4B1908,,,,,,SWR40   ,... then MSG,3,,,4B1908,,,,,,,2525,,,33.96693,-118.25598
    assert first.uid == "ICAO-4b1908" and first.lat == 33.96693 and first.lon == -118.25598
    assert first.hae == round(2525 * FEET_TO_M, 1)
    assert first.time_ms == LINES.index(
        b"MSG,3,,,4B1908,,,,,,,2525,,,33.96693,-118.25598,,,0,0,0,0"
    )


def test_state_from_earlier_messages_fills_the_track() -> None:
    d = Sbs1Decoder()
    assert d.feed(b"MSG,1,,,3C71A1,,,,,,BCS361  ,,,,,,,,0,0,0,0", 0) == []
    assert d.feed(b"MSG,4,,,3C71A1,,,,,,,,533,79.6,,,0,,0,0,0,0", 0) == []
    assert d.feed(b"MSG,6,,,3C71A1,,,,,,,,,,,,,7700,0,-1,0,0", 0) == []
    (r,) = d.feed(b"MSG,3,,,3C71A1,,,,,,,41000,,,51.3,-2.05,,,0,0,0,0", 42)
    assert r.callsign == "BCS361" and r.course == 79.6
    assert r.speed_mps is not None and abs(r.speed_mps - 533 * KNOTS_TO_MPS) < 1e-9
    assert r.emergency == "ADS-B 7700 emergency" and r.time_ms == 42
    xml = cot_xml.render_xml(to_event(r, "u", 60_000))
    assert b'<emergency type="ADS-B 7700 emergency">BCS361</emergency>' in xml
    assert b'squawk="7700"' in xml and b'source="sbs1"' in xml
    (g,) = d.feed(b"MSG,2,,,3C71A1,,,,,,,,0,0,51.3,-2.05,,,0,0,0,-1", 43)
    assert g.hae == UNKNOWN_ERROR and g.detail_attrs["alt_baro"] == "ground"


def test_bounded_state() -> None:
    d = Sbs1Decoder(max_aircraft=3)
    for i in range(10):
        d.feed(f"MSG,8,,,{i:06x},,,,,,,,,,,,,,,,,".encode(), 0)
    assert len(d) == 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=160),
            st.lists(
                st.text(alphabet="MSG0123456789ABCDEF.-~ ", max_size=12), min_size=22, max_size=22
            ).map(lambda f: ",".join(["MSG", *f[1:]]).encode()),
        ),
        max_size=30,
    )
)
def test_garbage_never_crashes(lines: list[bytes]) -> None:
    d = Sbs1Decoder()
    for line in lines:
        for r in d.feed(line, 0):
            assert -90 <= r.lat <= 90 and -180 <= r.lon <= 180
