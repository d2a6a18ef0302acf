"""AIS NMEA to track reports (protocol/ais.py): the real samples, reassembly per station and
channel, not-available values, and hypothesis for garbage and any interleaving."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pyais.encode import encode_dict

from liaison.protocol.ais import AisDecoder, cot_type_for, ship_cot_type
from liaison.protocol.feed_tracks import KNOTS_TO_MPS
from tests.unit.feeds.samples import AIS_SAMPLE, AIS_TYPE5

SAMPLE_LINES = AIS_SAMPLE.read_bytes().splitlines()
TYPE5_LINES = AIS_TYPE5.read_bytes().splitlines()
# The two-part type 5 of 351759000 (EVER DIADEM) in the aishub sample, seq id 1, channel A.
REAL_PARTS = [line for line in TYPE5_LINES if line.startswith(b"!AIVDM,2,")]


def decode_all(decoder: AisDecoder, lines: list[bytes], station: str = "s") -> list[object]:
    out: list[object] = []
    for i, line in enumerate(lines):
        out.extend(decoder.feed(line, station, 1_000 + i))
    return out


def test_real_stream_sample() -> None:
    d = AisDecoder()
    reports = decode_all(d, SAMPLE_LINES)
    # 897 lines: 100 have an empty payload; the 20 first fragments of type 5 have no second
    # fragment in the sample and expire; types 1, 3, 4 and 18 are positions.
    assert d.counts.invalid == 100
    assert d.counts.reports == len(reports) == 764
    assert d.pending == 2  # the last two first-fragments, within 100 lines of the end
    assert d.counts.expired == 18


def test_type5_then_position_names_the_vessel() -> None:
    d = AisDecoder()
    decode_all(d, TYPE5_LINES)
    static = d.static("351759000")
    assert static is not None
    assert (static.name, static.callsign, static.ship_type) == ("EVER DIADEM", "3FOF8", 70)
    (report,) = d.feed(
        encode_dict(
            {
                "type": 1,
                "mmsi": 351759000,
                "lat": 51.5,
                "lon": 1.5,
                "speed": 12.3,
                "course": 90.0,
                "heading": 511,
            },
        )[0].encode(),
        "s",
        5_000,
    )
    assert report.uid == "MMSI-351759000"
    assert report.callsign == "EVER DIADEM"
    assert report.cot_type == "a-?-S-X-M-C"  # ship type 70: cargo
    assert report.speed_mps is not None
    assert abs(report.speed_mps - 12.3 * KNOTS_TO_MPS) < 1e-6
    assert report.course == 90.0
    assert "heading" not in report.detail_attrs  # 511: not available


def test_not_available_values_are_left_out() -> None:
    line = encode_dict(
        {
            "type": 1,
            "mmsi": 244000001,
            "lat": 52.0,
            "lon": 4.0,
            "speed": 102.3,
            "course": 360.0,
            "heading": 511,
        }
    )[0].encode()
    (r,) = AisDecoder().feed(line, "s", 0)
    assert r.speed_mps is None and r.course is None and "heading" not in r.detail_attrs
    no_position = encode_dict({"type": 1, "mmsi": 244000001, "lat": 91.0, "lon": 181.0})[0]
    assert AisDecoder().feed(no_position.encode(), "s", 0) == []


def test_interleaved_multipart_from_two_stations() -> None:
    """Two stations send different two-part messages with the same channel and sequence id,
    interleaved fragment by fragment: each is reassembled from its own station's parts."""
    other = [
        s.encode()
        for s in encode_dict(
            {
                "type": 5,
                "mmsi": 211000001,
                "shipname": "SECOND SHIP",
                "callsign": "DABC",
                "ship_type": 60,
            },
            talker_id="AI",
            sentence_type="VDM",
            radio_channel="A",
            seq_id=1,
        )
    ]
    assert other[0].split(b",")[3:5] == REAL_PARTS[0].split(b",")[3:5]  # same seq id, channel
    d = AisDecoder()
    d.feed(REAL_PARTS[0], "station-1", 0)
    d.feed(other[0], "station-2", 0)
    d.feed(REAL_PARTS[1], "station-1", 0)
    d.feed(other[1], "station-2", 0)
    assert d.counts.messages == 2 and d.counts.invalid == 0 and d.pending == 0
    first, second = d.static("351759000"), d.static("211000001")
    assert first is not None and first.name == "EVER DIADEM" and first.ship_type == 70
    assert second is not None and second.name == "SECOND SHIP" and second.ship_type == 60


def test_incomplete_messages_expire_by_line_count_and_limit() -> None:
    d = AisDecoder(max_pending=2, max_age_lines=3)
    d.feed(REAL_PARTS[0], "a", 0)
    for _ in range(4):
        d.feed(b"!AIVDM,1,1,,B,,0*25", "a", 0)
    assert d.pending == 0 and d.counts.expired == 1
    for station in ("a", "b", "c"):
        d.feed(REAL_PARTS[0], station, 0)
    assert d.pending == 2 and d.counts.expired == 2
    # The oldest ("a") was dropped: its second part alone completes nothing.
    d.feed(REAL_PARTS[1], "a", 0)
    assert d.static("351759000") is None
    d.feed(REAL_PARTS[1], "c", 0)
    assert d.static("351759000") is not None


def test_types_from_mmsi_form_and_message_type() -> None:
    assert cot_type_for(9, "111232001", None) == "a-?-A-C-F"  # SAR aircraft
    assert cot_type_for(21, "992351001", None) == "a-?-G-I-N"  # aid to navigation
    assert cot_type_for(4, "002320001", None) == "a-?-G-I-U-T"  # base station
    assert ship_cot_type(30) == "a-?-S-X-F"
    assert ship_cot_type(35) == "a-?-S-C"
    assert ship_cot_type(84) == "a-?-S-X-M-O"
    assert ship_cot_type(None) == "a-?-S-X"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_garbage_never_crashes(lines: list[bytes]) -> None:
    d = AisDecoder()
    for line in lines:
        assert isinstance(d.feed(line, "x", 0), list)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=90),
            st.text(alphabet="!AIVDM,0123456789ABab*<>@`", max_size=90).map(str.encode),
        ),
        max_size=20,
    ),
    st.randoms(use_true_random=False),
)
def test_garbage_between_real_lines_changes_nothing(garbage: list[bytes], rnd: object) -> None:
    """Real lines with any garbage lines inserted anywhere decode to the same reports (garbage
    is from another station, so it cannot complete or replace the real station's fragments)."""
    import random

    assert isinstance(rnd, random.Random)
    real = SAMPLE_LINES[:120] + REAL_PARTS
    expected = [r.uid for r in decode_all(AisDecoder(), real)]
    mixed: list[tuple[bytes, str]] = [(line, "real") for line in real]
    for g in garbage:
        mixed.insert(rnd.randrange(len(mixed) + 1), (g, "noise"))
    d = AisDecoder()
    got = [r.uid for line, station in mixed for r in d.feed(line, station, 0)]
    assert got == expected
    assert d.static("351759000") is not None
