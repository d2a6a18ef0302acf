"""What the feed parsers (``adsb``, ``ais``) produce, and what becomes of it: a track report, its
affiliation by the feed's rules, and the CoT event (the merge and thinning of the fixes:
``liaison.feeds.pending``). Pure: every time comes in as an argument (docs/feeds.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from liaison.model.event import UNKNOWN_ERROR, Event, make_event
from liaison.protocol.countries import icao_country, mid_countries

# CoT affiliations a rule may give (MIL-STD-2525 standard identities as CoT writes them):
# pending, unknown, assumed friend, friend, neutral, suspect, hostile, joker, faker, none.
AFFILIATIONS = frozenset("puafnshjko")

KNOTS_TO_MPS = 0.514444
FEET_TO_M = 0.3048


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackReport:
    """One position fix of one aircraft or vessel, as a feed parser read it.

    ``cot_type`` has ``?`` where the affiliation goes (``a-?-A-C-F``); :func:`to_event` puts in
    the affiliation the feed's rules give.
    """

    kind: str  # "aircraft" or "vessel"
    ident: str  # ICAO hex (lower case, "~" kept for non-ICAO) or MMSI as digits
    uid: str
    cot_type: str
    time_ms: int
    lat: float
    lon: float
    hae: float = UNKNOWN_ERROR
    course: float | None = None  # degrees true
    speed_mps: float | None = None
    callsign: str | None = None
    military: bool = False
    emergency: str | None = None  # why this track is an alert (squawk 7700, ...), or None
    detail_tag: str = "__adsb"
    detail_attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackRule:
    """One rule of a feed's ``rules`` (affiliation) or ``labels`` (classification) list; every
    condition given must hold, and the first rule that matches gives its ``affiliation`` or
    ``classification``.

    ``ids``: ICAO hex addresses or MMSIs; ``icao_range``: (low, high) hex, inclusive;
    ``mid``: Maritime Identification Digits (the first three digits of a ship's MMSI);
    ``military``: the source's military flag; ``kind``: "aircraft" or "vessel";
    ``country``: ISO 3166-1 alpha-2 codes, holding for an aircraft whose ICAO address is in one
    of their blocks and a vessel whose MMSI's MID belongs to one (``liaison.protocol.countries``).
    """

    affiliation: str | None = None
    classification: str | None = None
    kind: str | None = None
    military: bool | None = None
    ids: frozenset[str] | None = None
    icao_range: tuple[int, int] | None = None
    mid: frozenset[int] | None = None
    country: frozenset[str] | None = None

    def matches(self, report: TrackReport) -> bool:
        if self.kind is not None and report.kind != self.kind:
            return False
        if self.military is not None and report.military != self.military:
            return False
        if self.ids is not None and report.ident not in self.ids:
            return False
        if self.icao_range is not None:
            if report.kind != "aircraft" or report.ident.startswith("~"):
                return False
            try:
                address = int(report.ident, 16)
            except ValueError:
                return False
            if not self.icao_range[0] <= address <= self.icao_range[1]:
                return False
        if self.country is not None and not (country_of(report) & self.country):
            return False
        return self.mid is None or (report.kind == "vessel" and mid_of(report.ident) in self.mid)


def country_of(report: TrackReport) -> frozenset[str]:
    """The countries of a report's ICAO address (the State of its block; a non-ICAO ``~``
    address has none) or of its MMSI's MID (ITU-R M.585, see :func:`mid_of`)."""
    if report.kind == "aircraft":
        if report.ident.startswith("~"):
            return frozenset()
        try:
            address = int(report.ident, 16)
        except ValueError:
            return frozenset()
        country = icao_country(address)
        return frozenset((country,)) if country is not None else frozenset()
    mid = mid_of(report.ident)
    return mid_countries(mid) if mid is not None else frozenset()


def mid_of(mmsi: str) -> int | None:
    """The Maritime Identification Digits of a ship station's MMSI (ITU-R M.585: MIDxxxxxx);
    of a SAR aircraft (111MIDxxx), an aid to navigation (99MIDxxxx), a coast station
    (00MIDxxxx) or a craft associated with a parent ship (98MIDxxxx) the MID after its prefix."""
    if len(mmsi) != 9 or not mmsi.isdigit():
        return None
    if mmsi.startswith("111"):
        return int(mmsi[3:6])
    if mmsi.startswith(("00", "99", "98")):
        return int(mmsi[2:5])
    if mmsi[0] in "234567":
        return int(mmsi[:3])
    return None


def affiliation(report: TrackReport, rules: Sequence[TrackRule], default: str) -> str:
    """The affiliation of the first rule that matches, else the feed's default."""
    for rule in rules:
        if rule.affiliation is not None and rule.matches(report):
            return rule.affiliation
    return default


def classification(report: TrackReport, rules: Sequence[TrackRule]) -> str | None:
    """The classification of the first label rule that matches, else None (the feed's
    default label applies)."""
    for rule in rules:
        if rule.classification is not None and rule.matches(report):
            return rule.classification
    return None


def to_event(
    report: TrackReport, affiliation: str, stale_ms: int, extra: Sequence[ET.Element] = ()
) -> Event:
    """The CoT event of one report: ``how="m-g"`` (machine, GPS-derived), stale after
    ``stale_ms``, with ``contact``, ``track``, ``emergency``, the source's own detail and
    ``extra`` elements (a ``__seclabel`` chosen by a label rule)."""
    detail = ET.Element("detail")
    if report.callsign:
        ET.SubElement(detail, "contact", callsign=report.callsign)
    if report.course is not None or report.speed_mps is not None:
        track = ET.SubElement(detail, "track")
        if report.course is not None:
            track.set("course", f"{report.course:.1f}")
        if report.speed_mps is not None:
            track.set("speed", f"{report.speed_mps:.2f}")
    if report.emergency is not None:
        ET.SubElement(detail, "emergency", type=report.emergency).text = (
            report.callsign or report.uid
        )
    ET.SubElement(detail, report.detail_tag, dict(report.detail_attrs))
    detail.extend(extra)
    return make_event(
        uid=report.uid,
        type=report.cot_type.replace("?", affiliation, 1),
        how="m-g",
        time=report.time_ms,
        start=report.time_ms,
        stale=report.time_ms + stale_ms,
        lat=report.lat,
        lon=report.lon,
        hae=report.hae,
        detail=detail,
    )
