"""AIS: NMEA 0183 ``!AIVDM``/``!AIVDO`` sentences to track reports, decoded with pyais.

Sans-IO: :class:`AisDecoder` is fed one line at a time (``feed(line, station)``) and returns the
reports it completed. Multipart messages are reassembled per (station, channel, sequential
message id), never in one global buffer, so fragments of two stations (or two channels)
interleaved on one stream still pair correctly (IEC 61162-1 §8.3.14 / ITU-R M.1371 annex 8:
fields 2 and 3 are the fragment count and number, field 4 the sequential message id, field 5 the
channel). A pending message that has not completed within ``max_age_lines`` further lines is
dropped; at most ``max_pending`` are pending at once (the oldest goes first). There is no clock:
age is counted in lines.

Position reports are message types 1, 2, 3 (class A), 4 (base station), 9 (SAR aircraft), 18,
19 (class B) and 21 (aid to navigation). Types 5 and 24 (static data) and 19/21 carry the name,
call sign and ship type, kept per MMSI (at most ``max_statics``) for later positions. "Not
available" values are left out (ITU-R M.1371-5 table 46): heading 511, course 360, speed 102.3
(class A/B, knots), latitude 91, longitude 181.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from pyais import NMEAMessage
from pyais.exceptions import AISBaseException

from liaison.model.event import UNKNOWN_ERROR
from liaison.protocol.feed_tracks import KNOTS_TO_MPS, TrackReport

# Longest NMEA sentence we look at: IEC 61162-1 allows 82 characters; tag blocks and
# non-conforming receivers make some longer, never near this.
MAX_LINE_BYTES = 1024
# Multipart messages waiting for their other fragments at once: a busy station interleaves a few.
MAX_PENDING = 256
# Lines after which an incomplete multipart message is dropped: its fragments follow each other
# within a few lines on any real stream.
MAX_AGE_LINES = 100
# Most MMSIs whose static data (name, call sign, ship type) we keep.
MAX_STATICS = 50_000
# Most fragments one message may have (a type 26 binary message needs 5).
MAX_FRAGMENTS = 9

POSITION_TYPES = frozenset({1, 2, 3, 4, 9, 18, 19, 21})
STATIC_TYPES = frozenset({5, 19, 21, 24})


@dataclass(slots=True)
class Static:
    name: str | None = None
    callsign: str | None = None
    ship_type: int | None = None


@dataclass(slots=True)
class _Pending:
    parts: dict[int, NMEAMessage]
    count: int
    first_line: int


@dataclass(slots=True)
class Counts:
    """What the decoder did, for metrics."""

    sentences: int = 0
    messages: int = 0
    reports: int = 0
    invalid: int = 0  # not an AIVDM/AIVDO sentence, bad checksum, undecodable payload
    expired: int = 0  # multipart messages dropped incomplete (age or the pending limit)


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.replace("@", "").strip()
    return text or None


def ship_cot_type(ship_type: int | None) -> str:
    """CoT type (``?`` for the affiliation) of a vessel from its AIS ship type (M.1371 table 53),
    by the MIL-STD-2525 surface hierarchy."""
    t = ship_type or 0
    if t == 30:
        return "a-?-S-X-F"  # fishing
    if t in (31, 32, 52):
        return "a-?-S-X-M-T-O"  # towing, tug
    if t == 35:
        return "a-?-S-C"  # military operations
    if t in (36, 37):
        return "a-?-S-X-R"  # sailing, pleasure craft
    if t in (51, 55):
        return "a-?-S-X-L"  # search and rescue, law enforcement
    if 60 <= t <= 69:
        return "a-?-S-X-M-P"  # passenger
    if 70 <= t <= 79:
        return "a-?-S-X-M-C"  # cargo
    if 80 <= t <= 89:
        return "a-?-S-X-M-O"  # tanker
    return "a-?-S-X"


def cot_type_for(msg_type: int, mmsi: str, ship_type: int | None) -> str:
    """CoT type from the message type, the MMSI's form (ITU-R M.585) and the ship type."""
    if msg_type == 9 or mmsi.startswith("111"):
        return "a-?-A-C-F"  # SAR aircraft
    if msg_type == 21 or mmsi.startswith("99"):
        return "a-?-G-I-N"  # aid to navigation (a fixed installation)
    if msg_type == 4 or mmsi.startswith("00"):
        return "a-?-G-I-U-T"  # base (coast) station: a communications installation
    return ship_cot_type(ship_type)


class AisDecoder:
    """Lines in, track reports out; bounded reassembly and static tables."""

    def __init__(
        self,
        *,
        max_pending: int = MAX_PENDING,
        max_age_lines: int = MAX_AGE_LINES,
        max_statics: int = MAX_STATICS,
    ) -> None:
        self.max_pending = max_pending
        self.max_age_lines = max_age_lines
        self.max_statics = max_statics
        self.counts = Counts()
        self._line = 0
        self._pending: OrderedDict[tuple[str, str, str], _Pending] = OrderedDict()
        self._statics: OrderedDict[str, Static] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def static(self, mmsi: str) -> Static | None:
        return self._statics.get(mmsi)

    def feed(self, line: bytes, station: str, now_ms: int) -> list[TrackReport]:
        """Take one line (a sentence, optionally after a ``\\...\\`` tag block) received at
        ``now_ms`` from ``station``; return the position reports it completed."""
        self._line += 1
        self._expire()
        line = line.strip()
        if not line or line.startswith(b"#"):
            return []
        self.counts.sentences += 1
        if line.startswith(b"\\"):
            end = line.find(b"\\", 1)
            line = line[end + 1 :] if end > 0 else b""
        if len(line) > MAX_LINE_BYTES or not line.startswith((b"!AIVDM", b"!AIVDO", b"!")):
            self.counts.invalid += 1
            return []
        try:
            sentence = NMEAMessage(line)
        except (AISBaseException, ValueError, IndexError, TypeError):
            self.counts.invalid += 1
            return []
        if not sentence.is_valid or sentence.talker is None:
            self.counts.invalid += 1
            return []
        count, number = sentence.frag_cnt, sentence.frag_num
        if not 1 <= number <= count <= MAX_FRAGMENTS:
            self.counts.invalid += 1
            return []
        if count == 1:
            return self._decode(sentence, now_ms)
        key = (station, str(sentence.channel), str(sentence.seq_id))
        pending = self._pending.get(key)
        if pending is None or pending.count != count or number in pending.parts:
            if pending is not None:  # a new message reusing the id: the old one is lost
                self.counts.expired += 1
            pending = _Pending({}, count, self._line)
            self._pending[key] = pending
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.counts.expired += 1
        pending.parts[number] = sentence
        if len(pending.parts) < count:
            return []
        del self._pending[key]
        try:
            whole = NMEAMessage.assemble_from_iterable([pending.parts[i + 1] for i in range(count)])
        except (AISBaseException, ValueError, IndexError, TypeError, KeyError):
            self.counts.invalid += 1
            return []
        return self._decode(whole, now_ms)

    def _expire(self) -> None:
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if self._line - oldest.first_line <= self.max_age_lines:
                break
            del self._pending[key]
            self.counts.expired += 1

    def _decode(self, sentence: NMEAMessage, now_ms: int) -> list[TrackReport]:
        try:
            fields = sentence.decode().asdict()
        except (AISBaseException, ValueError, IndexError, TypeError, KeyError, OverflowError):
            self.counts.invalid += 1
            return []
        self.counts.messages += 1
        msg_type = fields.get("msg_type")
        mmsi_raw = fields.get("mmsi")
        if not isinstance(msg_type, int) or not isinstance(mmsi_raw, int | str):
            return []
        mmsi = str(mmsi_raw).zfill(9)
        if msg_type in STATIC_TYPES:
            self._remember(mmsi, fields)
        if msg_type not in POSITION_TYPES:
            return []
        report = self._report(msg_type, mmsi, fields, now_ms)
        if report is None:
            return []
        self.counts.reports += 1
        return [report]

    def _remember(self, mmsi: str, fields: Mapping[str, object]) -> None:
        static = self._statics.pop(mmsi, None) or Static()
        name = _text(fields.get("shipname")) or _text(fields.get("name"))
        if name is not None:
            static.name = name
        callsign = _text(fields.get("callsign"))
        if callsign is not None:
            static.callsign = callsign
        ship_type = fields.get("ship_type")
        if isinstance(ship_type, int) and ship_type > 0:
            static.ship_type = int(ship_type)
        self._statics[mmsi] = static
        while len(self._statics) > self.max_statics:
            self._statics.popitem(last=False)

    def _report(
        self, msg_type: int, mmsi: str, fields: Mapping[str, object], now_ms: int
    ) -> TrackReport | None:
        lat, lon = fields.get("lat"), fields.get("lon")
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # 91 / 181: not available
            return None
        attrs: dict[str, str] = {"mmsi": mmsi, "msg_type": str(msg_type)}
        course = fields.get("course")
        course_v = float(course) if isinstance(course, int | float) and course < 360 else None
        speed = fields.get("speed")
        speed_v: float | None = None
        if msg_type == 9:  # SAR aircraft: knots, 1023 not available
            if isinstance(speed, int | float) and speed < 1023:
                speed_v = float(speed)
        elif isinstance(speed, int | float) and speed < 102.3:
            speed_v = float(speed)
        heading = fields.get("heading")
        if isinstance(heading, int) and heading < 360:  # 511: not available
            attrs["heading"] = str(heading)
        status = fields.get("status")
        if isinstance(status, int) and msg_type in (1, 2, 3):
            attrs["status"] = str(int(status))
        hae = UNKNOWN_ERROR
        alt = fields.get("alt")
        if msg_type == 9 and isinstance(alt, int) and alt < 4095:  # metres; 4095 not available
            hae = float(alt)
        static = self._statics.get(mmsi)
        name = _text(fields.get("shipname")) or _text(fields.get("name"))
        ship_type = static.ship_type if static is not None else None
        if static is not None:
            name = name or static.name
            if static.callsign:
                attrs["callsign"] = static.callsign
        if name:
            attrs["name"] = name
        if ship_type is not None:
            attrs["ship_type"] = str(ship_type)
        return TrackReport(
            kind="vessel",
            ident=mmsi,
            uid=f"MMSI-{mmsi}",
            cot_type=cot_type_for(msg_type, mmsi, ship_type),
            time_ms=now_ms,
            lat=float(lat),
            lon=float(lon),
            hae=hae,
            course=course_v,
            speed_mps=speed_v * KNOTS_TO_MPS if speed_v is not None else None,
            callsign=name or mmsi,
            military=ship_type == 35,
            detail_tag="__ais",
            detail_attrs=attrs,
        )
