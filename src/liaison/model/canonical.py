"""Canonical JSON (RFC 8785) and RFC 3339 times in integer milliseconds: the bottom of the model.

The audit log hashes and signs canonical JSON; labels and policies take their ids (``sha256:``
digests) from it and write their creation time in the RFC 3339 form below. Both need to give the
same bytes on every server and every run, so both live here, on their own.

Pure: no clock, no I/O, and no import from Liaison (``tests/unit/core/test_layers.py`` checks
it), so the audit log can use it without depending on the label model. Times are integer
milliseconds since the Unix epoch and come in as arguments.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping

# Deepest nesting canonical_json accepts; audit records and labels nest 3 levels at most.
MAX_JSON_DEPTH = 32

# Largest integer RFC 8785 serialises exactly (IEEE 754 double, 2^53 - 1).
MAX_SAFE_INT = 2**53 - 1

# Latest time a label may carry: 9999-12-31T23:59:59.999Z (the largest four-digit-year instant).
MAX_TIME_MS = 253_402_300_799_999

_STRICT_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z", re.ASCII
)
_LENIENT_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)

# --- canonical JSON ------------------------------------------------------------------------


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` as RFC 8785 (JCS) canonical JSON, UTF-8 encoded.

    Supported: None, bool, int within +-(2^53 - 1), str, lists/tuples and str-keyed mappings.
    Floats are refused (JCS number formatting is ECMAScript's, which Python does not reproduce
    exactly); use integers. Keys are sorted by UTF-16 code units (RFC 8785 section 3.2.3); strings
    are escaped minimally, as ``json.dumps(ensure_ascii=False)`` does (RFC 8785 section 3.2.2.2).
    Raises TypeError or ValueError for anything else.
    """
    if type(value) is dict and _flat(value):
        # A flat object (an audit record's fields): the C encoder writes the same bytes.
        text = _dumps_flat(value)
    else:
        out: list[str] = []
        _canon(value, out, 0)
        text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("canonical JSON needs valid Unicode (no lone surrogates)") from exc


# What ``json.dumps(s, ensure_ascii=False)`` returns for a str (json.JSONEncoder.encode calls
# exactly this), without building an encoder for every string.
_json_string: Callable[[str], str] = json.encoder.encode_basestring


# For flat objects, json.dumps with these options writes what _canon writes: members sorted by
# key (Python's order is UTF-16 code unit order for ASCII keys), no whitespace, strings escaped
# by the same encode_basestring (ensure_ascii=False), integers by int.__repr__, true, false
# and null. _flat admits only values whose encoding is the same in both (no floats, no nested
# objects, integers within the exact range, plain str/int/list/tuple types, ASCII keys).
_dumps_flat: Callable[[object], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True
).encode


def _flat(value: dict[object, object]) -> bool:
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:  # type: ignore[operator]
                return False
            continue
        if kind is list or kind is tuple:
            for element in item:  # type: ignore[attr-defined]
                if type(element) is not str:
                    return False
            continue
        return False
    return True


def _canon(value: object, out: list[str], depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError("JSON value nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise ValueError("integer outside the exact IEEE 754 range")
        out.append(int.__repr__(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise TypeError("JSON object keys must be strings")
        out.append("{")
        # ASCII keys (nearly all): UTF-16 code unit order is plain string order.
        if all(k.isascii() for k in keys):
            ordered = sorted(keys)
        else:
            ordered = sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        for i, key in enumerate(ordered):
            if i:
                out.append(",")
            out.append(_json_string(key))
            out.append(":")
            _canon(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        if depth < MAX_JSON_DEPTH and all(type(item) is str for item in value):
            # A list of plain strings (an audit record's recipients, a label's values): the
            # same bytes as the loop below, in one join (docs/performance.md, "The cost of
            # labels, counted").
            out.append("[" + ",".join(map(_json_string, value)) + "]")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canon(item, out, depth + 1)
        out.append("]")
    else:
        raise TypeError(f"not supported in canonical JSON: {type(value).__name__}")


def digest(value: object) -> str:
    """``sha256:<hex>`` over the canonical JSON of ``value`` (policy, label and AuthSet ids)."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


# --- times -------------------------------------------------------------------------------------

# Calendar arithmetic on integers (proleptic Gregorian, as RFC 3339 uses), so this pure module
# needs no datetime: H. Hinnant, "chrono-Compatible Low-Level Date Algorithms",
# days_from_civil / civil_from_days.
_MS_PER_DAY = 86_400_000


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def format_time_ms(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` for a time in ms since the epoch (0 <= ms <= MAX_TIME_MS)."""
    if type(ms) is not int or not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"time out of range: {ms!r}")
    days, rest = divmod(ms, _MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, milli = divmod(rest, 1000)
    hour, seconds = divmod(seconds, 3600)
    minute, second = divmod(seconds, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


def parse_rfc3339_ms(text: str, *, strict: bool = True) -> int:
    """Parse an RFC 3339 time into ms since the epoch; raises ValueError saying what is wrong.

    ``strict`` accepts only what :func:`format_time_ms` writes. The lenient form (for 4774
    import) also accepts 0 to 9 fraction digits (truncated to ms) and a numeric UTC offset.
    Leap seconds (``:60``) are refused. ``labels.parse_time_ms`` turns the ValueError into
    ``LabelError("bad_time")``.
    """
    match = (_STRICT_TIME_RE if strict else _LENIENT_TIME_RE).fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 time in the expected form")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    offset = "Z" if strict else match.group(8)
    if not (
        1 <= month <= 12
        and 1 <= day <= _days_in_month(year, month)
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        raise ValueError("date or time field out of range")
    offset_minutes = 0
    if offset != "Z":
        off_hours, off_minutes = int(offset[1:3]), int(offset[4:6])
        if off_hours > 23 or off_minutes > 59:
            raise ValueError("UTC offset out of range")
        offset_minutes = (off_hours * 60 + off_minutes) * (-1 if offset[0] == "-" else 1)
    seconds = (
        _days_from_civil(year, month, day) * 86_400
        + hour * 3600
        + minute * 60
        + second
        - offset_minutes * 60
    )
    ms = seconds * 1000 + int((fraction + "000")[:3])
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError("time out of range")
    return ms
