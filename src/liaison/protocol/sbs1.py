"""SBS-1 BaseStation lines (dump1090/readsb port 30003) to track reports. Sans-IO.

Each line is ``MSG,<type>,<session>,<aircraft id>,<hex>,<flight id>,<date gen>,<time gen>,
<date logged>,<time logged>,<callsign>,<altitude>,<ground speed>,<track>,<lat>,<lon>,
<vertical rate>,<squawk>,<alert>,<emergency>,<spi>,<on ground>`` (22 fields; the BaseStation
socket format as dump1090 writes it in net_io.c's SBS output: altitude in feet, speed in knots,
flags ``-1`` true and ``0`` false). Message types say which fields are filled: 1 callsign;
2 surface position; 3 airborne position; 4 velocity; 5, 6, 7 altitude (6 also squawk);
8 all-call reply. A line carries part of an aircraft's state, so the decoder keeps each
aircraft's latest callsign, altitude, speed, track and squawk (at most ``max_aircraft``) and
reports a track for every line of type 2 or 3 with a position. Time comes in with the line.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from liaison.model.event import UNKNOWN_ERROR
from liaison.protocol.adsb import EMERGENCY_SQUAWKS, cot_type
from liaison.protocol.feed_tracks import FEET_TO_M, KNOTS_TO_MPS, TrackReport

# Longest line looked at: a full line is under 150 bytes.
MAX_LINE_BYTES = 512
# Aircraft whose partial state we keep (the least recently heard is forgotten first).
MAX_AIRCRAFT = 20_000
FIELDS = 22


@dataclass(slots=True)
class _State:
    callsign: str | None = None
    altitude_ft: float | None = None
    speed_kt: float | None = None
    track: float | None = None
    squawk: str | None = None
    emergency: bool = False
    on_ground: bool = False


@dataclass(slots=True)
class Counts:
    lines: int = 0
    invalid: int = 0
    reports: int = 0


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Sbs1Decoder:
    """BaseStation lines in, track reports out; bounded per-aircraft state."""

    def __init__(self, *, max_aircraft: int = MAX_AIRCRAFT) -> None:
        self.max_aircraft = max_aircraft
        self.counts = Counts()
        self._state: OrderedDict[str, _State] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def feed(self, line: bytes, now_ms: int) -> list[TrackReport]:
        """One line received at ``now_ms``; the track report it completes, if any."""
        line = line.strip()
        if not line:
            return []
        self.counts.lines += 1
        if len(line) > MAX_LINE_BYTES:
            self.counts.invalid += 1
            return []
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self.counts.invalid += 1
            return []
        f = text.split(",")
        if len(f) != FIELDS or f[0] != "MSG" or f[1] not in "12345678" or len(f[1]) != 1:
            self.counts.invalid += 1
            return []
        hex_ = f[4].strip().lower()
        digits = hex_[1:] if hex_.startswith("~") else hex_
        if not 1 <= len(digits) <= 6 or any(ch not in "0123456789abcdef" for ch in digits):
            self.counts.invalid += 1
            return []
        state = self._state.pop(hex_, None) or _State()
        self._state[hex_] = state
        while len(self._state) > self.max_aircraft:
            self._state.popitem(last=False)
        if f[10].strip():
            state.callsign = f[10].strip()
        altitude = _float(f[11]) if f[11] else None
        if altitude is not None:
            state.altitude_ft = altitude
        speed = _float(f[12]) if f[12] else None
        if speed is not None and speed >= 0:
            state.speed_kt = speed
        track = _float(f[13]) if f[13] else None
        if track is not None and 0 <= track < 360:
            state.track = track
        if f[17].strip():
            state.squawk = f[17].strip()
        if f[19]:
            state.emergency = f[19] == "-1"
        if f[21]:
            state.on_ground = f[21] == "-1"
        if f[1] not in "23":
            return []
        lat, lon = _float(f[14]) if f[14] else None, _float(f[15]) if f[15] else None
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return []
        self.counts.reports += 1
        return [self._report(hex_, digits, state, lat, lon, now_ms)]

    def _report(
        self, hex_: str, digits: str, s: _State, lat: float, lon: float, now_ms: int
    ) -> TrackReport:
        attrs = {"hex": hex_, "source": "sbs1"}
        if s.callsign:
            attrs["flight"] = s.callsign
        if s.squawk:
            attrs["squawk"] = s.squawk
        if s.on_ground:
            attrs["alt_baro"] = "ground"
        elif s.altitude_ft is not None:
            attrs["alt_baro"] = f"{s.altitude_ft:g}"
        emergency = EMERGENCY_SQUAWKS.get(s.squawk or "")
        if emergency is None and s.emergency:
            emergency = "ADS-B emergency"
        non_icao = hex_.startswith("~")
        return TrackReport(
            kind="aircraft",
            ident=hex_,
            uid=f"ICAO-~{digits}" if non_icao else f"ICAO-{digits}",
            cot_type=cot_type(None, False),
            time_ms=now_ms,
            lat=lat,
            lon=lon,
            hae=(
                round(s.altitude_ft * FEET_TO_M, 1)
                if s.altitude_ft is not None and not s.on_ground
                else UNKNOWN_ERROR
            ),
            course=s.track,
            speed_mps=s.speed_kt * KNOTS_TO_MPS if s.speed_kt is not None else None,
            callsign=s.callsign or (f"~{digits}" if non_icao else digits.upper()),
            emergency=emergency,
            detail_tag="__adsb",
            detail_attrs=attrs,
        )
