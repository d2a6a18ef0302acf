"""ADS-B: readsb / dump1090 ``aircraft.json`` (and the aggregator form with an ``ac`` array) to
track reports. Pure; the poll time comes in as an argument.

Field meanings are those of readsb's README-json.md and dump1090-fa's README-json.md: ``hex``
(24-bit ICAO address, ``~`` first when it is not an ICAO address: TIS-B or other non-ICAO),
``flight`` (callsign, space padded), ``alt_baro`` (barometric altitude in feet, or the string
``"ground"``), ``alt_geom`` (GNSS altitude in feet above the WGS84 ellipsoid), ``gs`` (ground
speed, knots), ``track`` (degrees true), ``squawk`` (4 octal digits), ``emergency``, ``category``
(emitter category A0..D7, DO-260B 2.2.3.2.5.2), ``seen_pos`` (seconds since the position was
last updated), ``dbFlags`` (readsb: bit 0 military), ``now`` (seconds since the epoch; the
aggregator APIs give milliseconds). Older dump1090 writes ``altitude`` and ``speed``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from liaison.model.event import UNKNOWN_ERROR
from liaison.protocol.feed_tracks import FEET_TO_M, KNOTS_TO_MPS, TrackReport

# Most aircraft taken from one document: the busiest single receivers see under 1,000 at once
# and a whole-region aggregator a few thousand; a document with more is cut, and counted.
MAX_AIRCRAFT_PER_DOCUMENT = 20_000
# A position older than this (``seen_pos``) is not reported: readsb itself drops positions
# after 60 seconds from its own map.
MAX_POSITION_AGE_S = 60.0

# Squawk codes that declare an emergency (ICAO Annex 10 vol. IV, PANS-ATM 15.1.3).
EMERGENCY_SQUAWKS = {
    "7500": "ADS-B 7500 unlawful interference",
    "7600": "ADS-B 7600 radio failure",
    "7700": "ADS-B 7700 emergency",
}
# readsb's ``emergency`` values other than "none".
EMERGENCY_STATES = {
    "general": "ADS-B emergency",
    "lifeguard": "ADS-B lifeguard",
    "minfuel": "ADS-B minimum fuel",
    "nordo": "ADS-B 7600 radio failure",
    "unlawful": "ADS-B 7500 unlawful interference",
    "downed": "ADS-B downed aircraft",
}

# The source fields copied into the ``__adsb`` detail, when present.
DETAIL_FIELDS = (
    "hex",
    "flight",
    "squawk",
    "category",
    "alt_baro",
    "alt_geom",
    "gs",
    "track",
    "emergency",
    "type",
    "r",
    "t",
    "dbFlags",
    "seen_pos",
    "rssi",
)


class AdsbError(ValueError):
    """The document is not an aircraft.json (reason in the message)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    reports: list[TrackReport]
    skipped: int  # aircraft left out: no position, stale position, bad fields, over the limit


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def cot_type(category: str | None, military: bool) -> str:
    """The CoT type of an aircraft (``?`` for the affiliation) from its emitter category."""
    c = (category or "").upper()
    if c in ("C1", "C2"):  # surface emergency / service vehicle
        return "a-?-G-E-V"
    if c == "C3":  # point obstacle
        return "a-?-G"
    if c == "B2":  # lighter than air
        return "a-?-A-C-L" if not military else "a-?-A-M-L"
    if c == "B6":  # unmanned aerial vehicle
        return "a-?-A-M-F-Q" if military else "a-?-A-C-F-q"
    if c == "A7":  # rotorcraft
        return "a-?-A-M-H" if military else "a-?-A-C-H"
    if (c.startswith("A") and c != "A0") or c in ("B1", "B4"):  # fixed wing, glider, ultralight
        return "a-?-A-M-F" if military else "a-?-A-C-F"
    return "a-?-A-M" if military else "a-?-A-C" if c else "a-?-A"


def parse_document(data: bytes, now_ms: int) -> Parsed:
    """Every aircraft with a fresh position in one ``aircraft.json`` document.

    ``now_ms`` is used when the document carries no ``now``. Raises :class:`AdsbError` when
    the document is not JSON or has no aircraft array.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdsbError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AdsbError("not a JSON object")
    aircraft = doc.get("aircraft", doc.get("ac"))
    if not isinstance(aircraft, list):
        raise AdsbError("no 'aircraft' or 'ac' array")
    doc_now = _number(doc.get("now"))
    if doc_now is None:
        base_ms = now_ms
    elif doc_now > 1e11:  # the aggregator APIs (adsb.lol, adsbexchange v2) give milliseconds
        base_ms = int(doc_now)
    else:
        base_ms = int(doc_now * 1000)
    reports: list[TrackReport] = []
    skipped = max(0, len(aircraft) - MAX_AIRCRAFT_PER_DOCUMENT)
    for entry in aircraft[:MAX_AIRCRAFT_PER_DOCUMENT]:
        report = parse_aircraft(entry, base_ms) if isinstance(entry, dict) else None
        if report is None:
            skipped += 1
        else:
            reports.append(report)
    return Parsed(reports, skipped)


def parse_aircraft(ac: Mapping[str, object], base_ms: int) -> TrackReport | None:
    """One aircraft entry, or None when it has no usable, fresh position."""
    raw_hex = ac.get("hex")
    if not isinstance(raw_hex, str):
        return None
    hex_ = raw_hex.strip().lower()
    non_icao = hex_.startswith("~")
    digits = hex_[1:] if non_icao else hex_
    if not 1 <= len(digits) <= 6 or any(ch not in "0123456789abcdef" for ch in digits):
        return None
    lat, lon = _number(ac.get("lat")), _number(ac.get("lon"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    seen_pos = _number(ac.get("seen_pos"))
    if seen_pos is None:
        seen_pos = _number(ac.get("seen")) or 0.0
    if not 0 <= seen_pos <= MAX_POSITION_AGE_S:
        return None
    time_ms = base_ms - int(seen_pos * 1000)

    alt_geom = _number(ac.get("alt_geom"))
    alt_baro_raw = ac.get("alt_baro", ac.get("altitude"))
    alt_baro = _number(alt_baro_raw)
    hae = UNKNOWN_ERROR
    if alt_geom is not None:
        hae = round(alt_geom * FEET_TO_M, 1)
    elif alt_baro is not None:  # barometric (pressure) altitude stands in for height
        hae = round(alt_baro * FEET_TO_M, 1)
    speed = _number(ac.get("gs", ac.get("speed")))
    course = _number(ac.get("track"))
    if course is not None and not 0 <= course < 360:
        course = None
    flags = ac.get("dbFlags")
    military = isinstance(flags, int) and not isinstance(flags, bool) and bool(flags & 1)
    category = ac.get("category")
    category = category if isinstance(category, str) else None
    flight = ac.get("flight")
    callsign = flight.strip() if isinstance(flight, str) and flight.strip() else None
    squawk = ac.get("squawk")
    squawk = squawk if isinstance(squawk, str) else None
    state = ac.get("emergency")
    emergency = EMERGENCY_SQUAWKS.get(squawk or "")
    if emergency is None and isinstance(state, str):
        emergency = EMERGENCY_STATES.get(state)

    attrs: dict[str, str] = {}
    for name in DETAIL_FIELDS:
        value = ac.get(name)
        if isinstance(value, str):
            attrs[name] = value.strip()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = str(value)
    if alt_baro_raw == "ground":
        attrs["alt_baro"] = "ground"
    return TrackReport(
        kind="aircraft",
        ident=hex_,
        uid=f"ICAO-~{digits}" if non_icao else f"ICAO-{digits}",
        cot_type=cot_type(category, military),
        time_ms=time_ms,
        lat=lat,
        lon=lon,
        hae=hae,
        course=course,
        speed_mps=speed * KNOTS_TO_MPS if speed is not None and speed >= 0 else None,
        callsign=callsign or (f"~{digits}" if non_icao else digits.upper()),
        military=military,
        emergency=emergency,
        detail_tag="__adsb",
        detail_attrs=attrs,
    )
