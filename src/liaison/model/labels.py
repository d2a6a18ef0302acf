"""Confidentiality labels: policy, Label, AuthSet, the one access decision, and the label formats.

The model follows STANAG 4774 (ADatP-4774 Ed. A, "Confidentiality Metadata Label Syntax"): a label
names a policy, one classification from an ordered list, and categories, each typed PERMISSIVE,
RESTRICTIVE or INFORMATIVE with values from a closed vocabulary (docs/labels.md has the whole
story; shared/reference/labels.md section 1 has the sources).

Everything here is pure: no clock, no I/O. Times are integer milliseconds since the Unix epoch and
come in as arguments. Policies are built by ``liaison.model.policy.load_policy``.

Decision semantics (the "ACDF"; not normative in 4774, but shared by X.841, spiffing and the
AuthzForce SPIF-to-XACML transform, see labels.md section 1.4):

* classification rank <= the holder's ceiling;
* RESTRICTIVE: every value of the label is held;
* PERMISSIVE: at least one value of each such category is held;
* INFORMATIVE: ignored;
* every required category is present (so a missing ``REL`` never means "releasable to all");
* same policy; anything unknown or malformed denies.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from liaison.errors import ConfigError

# --- named limits ---------------------------------------------------------------------------

# Policy size bounds. Real mission policies have 3 to 6 classifications and a handful of tags
# (the NATO policy has five categories); these bounds keep every label small and every parse cheap.
MAX_CLASSIFICATIONS = 16
MAX_CATEGORIES = 16
MAX_CATEGORY_VALUES = 128

# A value token: uppercase ASCII, at most 32 characters (labels.md 7a). Uppercase ASCII only closes
# the homoglyph trick (a Cyrillic A, U+0410, inside "UKR") and the case-folding ambiguity of
# 4774 practice.
MAX_VALUE_CHARS = 32
MAX_NAME_CHARS = 64

# Largest serialised label we parse, in characters. The most verbose form (4774 XML, about 75
# characters per value) of the largest label the policy bounds allow (16 x 128 values) is ~150 KB.
MAX_LABEL_TEXT_CHARS = 256 * 1024

# Deepest nesting canonical_json accepts; audit records and labels nest 3 levels at most.
MAX_JSON_DEPTH = 32

# Latest time a label may carry: 9999-12-31T23:59:59.999Z (the largest four-digit-year instant).
MAX_TIME_MS = 253_402_300_799_999

# The releasability category every policy must define (labels.md section 0, decision 2).
REL = "REL"

# 4774 confidentiality label namespace (ADatP-4774 App. 1; labels.md section 1.2).
NS_4774 = "urn:nato:stanag:4774:confidentialitymetadatalabel:1:0"
# How we write an originator as a 4774 OriginatorID of IDType uniformResourceIdentifier.
ORIGINATOR_URN_PREFIX = "urn:liaison:org:"

SECLABEL_TAG = "__seclabel"
SECLABEL_VERSION = "1"
JSON_VERSION = 1

# --- syntax of names -----------------------------------------------------------------------

_VALUE_RE = re.compile(r"[A-Z0-9][A-Z0-9_+-]{0,31}", re.ASCII)
_TAG_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}", re.ASCII)
_CLASS_RE = re.compile(r"[A-Z0-9][A-Z0-9_+-]*(?: [A-Z0-9_+-]+)*", re.ASCII)
_POLICY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)
# 4774: PolicyIdentifier/@URI "must be urn:oid:" (labels.md section 1.2). Arcs of up to 39 digits
# admit UUID-derived OIDs under 2.25 (ITU-T X.667).
_OID_URN_RE = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]{0,38})){1,63}", re.ASCII)
_PREFIX_RE = re.compile(r"[A-Z][A-Z0-9_-]*(?: [A-Z0-9_-]+)* ", re.ASCII)
_STRICT_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z", re.ASCII
)
_LENIENT_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_XML_SPACE = " \t\r\n"


def is_value_token(text: object) -> bool:
    """True for a syntactically valid category value (uppercase ASCII token)."""
    return isinstance(text, str) and _VALUE_RE.fullmatch(text) is not None


# --- errors --------------------------------------------------------------------------------


class LabelError(ValueError):
    """A label could not be parsed or is not valid under the policy.

    ``reason`` is a short stable code (for audit and metrics); ``reasons`` lists every problem
    found when validation found several. Parsers raise nothing else on bad input.
    """

    def __init__(self, reason: str, message: str = "", *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.reasons = reasons or (reason,)


# --- canonical JSON ------------------------------------------------------------------------

# Largest integer RFC 8785 serialises exactly (IEEE 754 double, 2^53 - 1).
_MAX_SAFE_INT = 2**53 - 1


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` as RFC 8785 (JCS) canonical JSON, UTF-8 encoded.

    Supported: None, bool, int within +-(2^53 - 1), str, lists/tuples and str-keyed mappings.
    Floats are refused (JCS number formatting is ECMAScript's, which Python does not reproduce
    exactly); use integers. Keys are sorted by UTF-16 code units (RFC 8785 section 3.2.3); strings
    are escaped minimally, as ``json.dumps(ensure_ascii=False)`` does (RFC 8785 section 3.2.2.2).
    Raises TypeError or ValueError for anything else.
    """
    out: list[str] = []
    _canon(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("canonical JSON needs valid Unicode (no lone surrogates)") from exc


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
        if not -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            raise ValueError("integer outside the exact IEEE 754 range")
        out.append(int.__repr__(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise TypeError("JSON object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _canon(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canon(item, out, depth + 1)
        out.append("]")
    else:
        raise TypeError(f"not supported in canonical JSON: {type(value).__name__}")


def _digest(value: object) -> str:
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


def parse_time_ms(text: str, *, strict: bool = True) -> int:
    """Parse an RFC 3339 time into ms since the epoch; raises LabelError("bad_time").

    ``strict`` accepts only what :func:`format_time_ms` writes. The lenient form (for 4774
    import) also accepts 0 to 9 fraction digits (truncated to ms) and a numeric UTC offset.
    Leap seconds (``:60``) are refused.
    """
    match = (_STRICT_TIME_RE if strict else _LENIENT_TIME_RE).fullmatch(text)
    if match is None:
        raise LabelError("bad_time", "not an RFC 3339 time in the expected form")
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
        raise LabelError("bad_time", "date or time field out of range")
    offset_minutes = 0
    if offset != "Z":
        off_hours, off_minutes = int(offset[1:3]), int(offset[4:6])
        if off_hours > 23 or off_minutes > 59:
            raise LabelError("bad_time", "UTC offset out of range")
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
        raise LabelError("bad_time", "time out of range")
    return ms


# --- the policy ------------------------------------------------------------------------------


class CategoryType(enum.Enum):
    """How a category constrains access (ADatP-4774 Category/@Type, uppercase only)."""

    PERMISSIVE = "PERMISSIVE"  # at least one value must be held
    RESTRICTIVE = "RESTRICTIVE"  # every value must be held
    INFORMATIVE = "INFORMATIVE"  # not used in the access decision


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryDef:
    """One category (tag) of a policy: its type, closed vocabulary and display prefix.

    ``values`` is in display order: banners and XML list a label's values in this order (put
    ``USA`` first for a US-style ``REL TO`` line). ``banner_prefix`` defaults to ``"REL TO "``
    for ``REL`` and ``"<NAME> "`` otherwise.
    """

    name: str
    type: CategoryType
    values: tuple[str, ...]
    required: bool = False
    banner_prefix: str | None = None
    value_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_set", frozenset(self.values))

    @property
    def prefix(self) -> str:
        """The effective banner prefix of this category."""
        if self.banner_prefix is not None:
            return self.banner_prefix
        return "REL TO " if self.name == REL else f"{self.name} "

    def ordered(self, values: Iterable[str]) -> list[str]:
        """``values`` (a subset of the vocabulary) in the policy's display order."""
        chosen = frozenset(values)
        return [v for v in self.values if v in chosen]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A mission security policy: a small SPIF (see docs/labels.md for the file format).

    Construction validates everything and raises ConfigError naming the offending key, so a
    Policy that exists is well formed. ``digest`` (``sha256:<hex>`` over the canonical JSON of the
    whole policy) identifies the exact policy, for federation link setup and decision caches.
    """

    id: str
    version: int
    classifications: tuple[str, ...]  # lowest first: rank = index
    categories: tuple[CategoryDef, ...]  # in display (banner) order
    uri: str | None = None
    digest: str = field(init=False)
    _ranks: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, CategoryDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate_policy(self)
        object.__setattr__(
            self, "_ranks", MappingProxyType({c: i for i, c in enumerate(self.classifications)})
        )
        object.__setattr__(self, "_by_name", MappingProxyType({c.name: c for c in self.categories}))
        object.__setattr__(self, "digest", _digest(self.to_json_obj()))

    def rank(self, classification: object) -> int | None:
        """The rank of a classification (0 = lowest), or None when it is not in this policy."""
        if not isinstance(classification, str):
            return None
        return self._ranks.get(classification)

    def category(self, name: object) -> CategoryDef | None:
        if not isinstance(name, str):
            return None
        return self._by_name.get(name)

    @property
    def rel(self) -> CategoryDef:
        """The mandatory releasability category."""
        return self._by_name[REL]

    def to_json_obj(self) -> dict[str, object]:
        """The policy as plain JSON data (the input of ``digest``)."""
        return {
            "id": self.id,
            "version": self.version,
            "uri": self.uri,
            "classifications": list(self.classifications),
            "categories": [
                {
                    "name": c.name,
                    "type": c.type.value,
                    "required": c.required,
                    "values": list(c.values),
                    "banner_prefix": c.prefix,
                }
                for c in self.categories
            ],
        }


def _validate_policy(p: Policy) -> None:
    """Raise ConfigError (naming the key) unless ``p`` is a well-formed policy."""
    if not isinstance(p.id, str) or _POLICY_ID_RE.fullmatch(p.id) is None:
        raise ConfigError("policy.id", "must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    if type(p.version) is not int or not 1 <= p.version <= _MAX_SAFE_INT:
        raise ConfigError("policy.version", "must be a positive integer")
    if p.uri is not None and (not isinstance(p.uri, str) or _OID_URN_RE.fullmatch(p.uri) is None):
        raise ConfigError("policy.uri", "must be an OID URN such as urn:oid:2.25.1234 (4774)")
    classes = p.classifications
    if not isinstance(classes, tuple) or not 1 <= len(classes) <= MAX_CLASSIFICATIONS:
        raise ConfigError(
            "policy.classifications", f"must list 1 to {MAX_CLASSIFICATIONS} classifications"
        )
    for name in classes:
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _CLASS_RE.fullmatch(name):
            raise ConfigError(
                "policy.classifications",
                f"{name!r} is not an uppercase ASCII name (A-Z 0-9 _ + -, single spaces)",
            )
    if len(set(classes)) != len(classes):
        raise ConfigError("policy.classifications", "duplicate classification")
    cats = p.categories
    if not isinstance(cats, tuple) or not 1 <= len(cats) <= MAX_CATEGORIES:
        raise ConfigError("policy.categories", f"must define 1 to {MAX_CATEGORIES} categories")
    seen: set[str] = set()
    for c in cats:
        if not isinstance(c, CategoryDef):
            raise ConfigError("policy.categories", "entries must be CategoryDef")
        key = f"policy.categories.{c.name}"
        if not isinstance(c.name, str) or _TAG_RE.fullmatch(c.name) is None:
            raise ConfigError(key, "a category name is 1-32 characters of A-Z 0-9 _ -")
        if c.name in seen:
            raise ConfigError(key, "duplicate category")
        seen.add(c.name)
        if not isinstance(c.type, CategoryType):
            raise ConfigError(f"{key}.type", "must be PERMISSIVE, RESTRICTIVE or INFORMATIVE")
        if not isinstance(c.required, bool):
            raise ConfigError(f"{key}.required", "must be true or false")
        if not isinstance(c.values, tuple) or not 1 <= len(c.values) <= MAX_CATEGORY_VALUES:
            raise ConfigError(f"{key}.values", f"must list 1 to {MAX_CATEGORY_VALUES} values")
        for v in c.values:
            if not is_value_token(v):
                raise ConfigError(
                    f"{key}.values", f"{v!r} is not an uppercase token of 1-32 A-Z 0-9 _ + -"
                )
        if len(c.value_set) != len(c.values):
            raise ConfigError(f"{key}.values", "duplicate value")
        if c.banner_prefix is not None and (
            not isinstance(c.banner_prefix, str)
            or len(c.banner_prefix) > MAX_NAME_CHARS
            or _PREFIX_RE.fullmatch(c.banner_prefix) is None
        ):
            raise ConfigError(
                f"{key}.banner_prefix",
                "must be uppercase words ending in one space, e.g. 'REL TO '",
            )
    rel = next((c for c in cats if c.name == REL), None)
    if rel is None:
        raise ConfigError("policy.categories.REL", "every policy must define the REL category")
    if rel.type is not CategoryType.PERMISSIVE or not rel.required:
        raise ConfigError("policy.categories.REL", "REL must be PERMISSIVE and required")
    # Banner parsing finds a segment's category by its prefix, so no prefix may start another.
    for a in cats:
        for b in cats:
            if a is not b and b.prefix.startswith(a.prefix):
                raise ConfigError(
                    f"policy.categories.{b.name}.banner_prefix",
                    f"banner prefix {b.prefix!r} starts with {a.name}'s prefix {a.prefix!r}",
                )


# --- labels ----------------------------------------------------------------------------------


def _freeze_categories(categories: Mapping[str, Iterable[str]]) -> Mapping[str, frozenset[str]]:
    items: list[tuple[str, frozenset[str]]] = []
    for name, values in categories.items():
        if isinstance(values, str):
            raise TypeError("category values must be a collection of strings, not one string")
        items.append((name, frozenset(values)))
    items.sort(key=lambda kv: kv[0])
    return MappingProxyType(dict(items))


def _core_id(policy_id: str, classification: str, categories: Mapping[str, frozenset[str]]) -> str:
    return _digest(
        {
            "policy": policy_id,
            "classification": classification,
            "categories": {name: sorted(values) for name, values in categories.items()},
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """A confidentiality label: immutable, comparable, hashable.

    ``categories`` maps a tag to its values (any mapping of iterables is accepted and frozen).
    ``label_id`` is ``sha256:<hex>`` over the canonical JSON of the decision-relevant core
    (policy, classification, categories): equal markings share an id, so decisions can be cached
    by it. ``originator`` (the org that created the item) and ``created_ms`` are item metadata.

    Constructing a Label does not check it against a policy: see :func:`validate_label`. The
    parsers only ever return labels that are valid under the policy they were given.
    """

    policy_id: str
    classification: str
    categories: Mapping[str, frozenset[str]]
    originator: str
    created_ms: int
    label_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        cats = _freeze_categories(self.categories)
        object.__setattr__(self, "categories", cats)
        object.__setattr__(self, "label_id", _core_id(self.policy_id, self.classification, cats))

    def __hash__(self) -> int:
        return hash((self.label_id, self.originator, self.created_ms))

    def values(self, tag: str) -> frozenset[str]:
        """The values of ``tag`` (empty when the label does not carry that category)."""
        return self.categories.get(tag, frozenset())


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSet:
    """What a principal may read: a classification ceiling and the category values it holds.

    ``ceiling`` None means no clearance at all (every decision denies). Values held for
    INFORMATIVE categories are ignored. ``auths_id`` (a digest) is the cache key: principals with
    equal AuthSets get equal decisions.
    """

    policy_id: str
    ceiling: str | None
    held: Mapping[str, frozenset[str]]
    auths_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        held = _freeze_categories(self.held)
        object.__setattr__(self, "held", held)
        object.__setattr__(
            self,
            "auths_id",
            _digest(
                {
                    "policy": self.policy_id,
                    "ceiling": self.ceiling,
                    "held": {k: sorted(v) for k, v in held.items()},
                }
            ),
        )

    def __hash__(self) -> int:
        return hash(self.auths_id)


def no_authset(policy: Policy) -> AuthSet:
    """The AuthSet that may read nothing (unknown CA, no matching rule)."""
    return AuthSet(policy_id=policy.id, ceiling=None, held={})


def full_authset(policy: Policy, ceiling: str) -> AuthSet:
    """Every category value, up to ``ceiling``: a ceiling that limits classification only."""
    if policy.rank(ceiling) is None:
        raise ValueError(f"unknown classification {ceiling!r}")
    return AuthSet(
        policy_id=policy.id,
        ceiling=ceiling,
        held={c.name: c.value_set for c in policy.categories},
    )


def intersect_auths(policy: Policy, *sets: AuthSet) -> AuthSet:
    """The meet of several AuthSets: the lowest ceiling and the common values of every tag.

    Any set under another policy, or with an unknown ceiling, makes the result :func:`no_authset`
    (fail closed).
    """
    if not sets:
        return no_authset(policy)
    ranks: list[int] = []
    for s in sets:
        rank = policy.rank(s.ceiling)
        if s.policy_id != policy.id or rank is None:
            return no_authset(policy)
        ranks.append(rank)
    held: dict[str, frozenset[str]] = {}
    for c in policy.categories:
        common = sets[0].held.get(c.name, frozenset())
        for s in sets[1:]:
            common = common & s.held.get(c.name, frozenset())
        if common:
            held[c.name] = common
    return AuthSet(policy_id=policy.id, ceiling=policy.classifications[min(ranks)], held=held)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :func:`decide`: permit, plus stable reason codes (empty when permitted)."""

    permit: bool
    reasons: tuple[str, ...] = ()


_DENY_INTERNAL = Decision(permit=False, reasons=("internal_error",))


def _tag_code(code: str, tag: object) -> str:
    # Only well-formed tag names go into reason codes, which end up in logs and audit records.
    if isinstance(tag, str) and _TAG_RE.fullmatch(tag):
        return f"{code}:{tag}"
    return code


def validate_label(policy: Policy, label: Label) -> tuple[str, ...]:
    """Every reason ``label`` is not valid under ``policy``; empty when it is valid.

    Codes: ``policy_mismatch``, ``unknown_classification``, ``unknown_category[:TAG]``,
    ``empty_category:TAG``, ``unknown_value:TAG``, ``missing_required:TAG``, ``bad_originator``
    (not a value of REL: originators are organisations of the policy), ``bad_created``.
    """
    reasons: list[str] = []
    if label.policy_id != policy.id:
        reasons.append("policy_mismatch")
    if policy.rank(label.classification) is None:
        reasons.append("unknown_classification")
    for tag, values in label.categories.items():
        cdef = policy.category(tag)
        if cdef is None:
            reasons.append(_tag_code("unknown_category", tag))
        elif not values:
            reasons.append(f"empty_category:{cdef.name}")
        elif not values <= cdef.value_set:
            reasons.append(f"unknown_value:{cdef.name}")
    for cdef in policy.categories:
        if cdef.required and cdef.name not in label.categories:
            reasons.append(f"missing_required:{cdef.name}")
    if not isinstance(label.originator, str) or label.originator not in policy.rel.value_set:
        reasons.append("bad_originator")
    if type(label.created_ms) is not int or not 0 <= label.created_ms <= MAX_TIME_MS:
        reasons.append("bad_created")
    return tuple(reasons)


def decide(policy: Policy, label: Label | None, auths: AuthSet | None) -> Decision:
    """May a holder of ``auths`` see an item labelled ``label``? Pure, total, never raises.

    Reason codes when denied: the :func:`validate_label` codes, ``no_label``, ``invalid_auths``,
    ``auths_policy_mismatch``, ``no_clearance``, ``class_exceeds``,
    ``restrictive_not_held:TAG``, ``permissive_not_held:TAG``, ``internal_error``.
    """
    try:
        return _decide(policy, label, auths)
    except Exception:
        # The one broad except in Liaison, on purpose: the access decision must be total. A bug
        # or an odd input must turn into a DENY here, not an exception that some caller up the
        # stack might handle by dropping the check, or that aborts a whole fan-out.
        return _DENY_INTERNAL


def _decide(policy: Policy, label: Label | None, auths: AuthSet | None) -> Decision:
    if not isinstance(label, Label):
        return Decision(permit=False, reasons=("no_label",))
    if not isinstance(auths, AuthSet):
        return Decision(permit=False, reasons=("invalid_auths",))
    reasons = list(validate_label(policy, label))
    if reasons:
        return Decision(permit=False, reasons=tuple(reasons))
    if auths.policy_id != policy.id:
        reasons.append("auths_policy_mismatch")
    ceiling = policy.rank(auths.ceiling)
    label_rank = policy.rank(label.classification)
    if ceiling is None:
        reasons.append("no_clearance")
    elif label_rank is None or label_rank > ceiling:
        reasons.append("class_exceeds")
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is None or cdef.type is CategoryType.INFORMATIVE:
            continue
        held = auths.held.get(cdef.name, frozenset())
        if cdef.type is CategoryType.RESTRICTIVE:
            if not values <= held:
                reasons.append(f"restrictive_not_held:{cdef.name}")
        elif values.isdisjoint(held):
            reasons.append(f"permissive_not_held:{cdef.name}")
    return Decision(permit=not reasons, reasons=tuple(reasons))


def _require_valid(policy: Policy, label: Label) -> None:
    reasons = validate_label(policy, label)
    if reasons:
        raise LabelError(reasons[0], "label is not valid under the policy", reasons=reasons)


# --- ordering, aggregation ---------------------------------------------------------------------


def dominates(policy: Policy, a: Label, b: Label) -> bool:
    """True when ``a`` is at least as restrictive as ``b`` (whoever may see ``a`` may see ``b``).

    Class rank of a >= b; every RESTRICTIVE value of b is in a; every PERMISSIVE category of b is
    in a with a subset of b's values. INFORMATIVE categories do not count. Both labels must be
    valid under ``policy`` (False otherwise).
    """
    if validate_label(policy, a) or validate_label(policy, b):
        return False
    rank_a = policy.rank(a.classification)
    rank_b = policy.rank(b.classification)
    if rank_a is None or rank_b is None or rank_a < rank_b:
        return False
    for cdef in policy.categories:
        va = a.categories.get(cdef.name)
        vb = b.categories.get(cdef.name)
        if cdef.type is CategoryType.RESTRICTIVE:
            if vb is not None and (va is None or not vb <= va):
                return False
        elif (
            cdef.type is CategoryType.PERMISSIVE and vb is not None and (va is None or not va <= vb)
        ):
            return False
    return True


def dominant(
    policy: Policy,
    labels: Iterable[Label],
    *,
    originator: str | None = None,
    created_ms: int | None = None,
) -> Label:
    """The least upper bound of ``labels``, for aggregates (data packages, fused tracks).

    Highest classification; union of each RESTRICTIVE and INFORMATIVE category; intersection of
    each PERMISSIVE category over the labels that carry it (ADatP-4774.1 section 4.4, except that
    a PERMISSIVE category absent from some labels is kept, not dropped: dropping it would let a
    reader of the aggregate skip a constraint of one part). An empty intersection stays empty,
    which makes the result invalid, so :func:`decide` denies it to everyone: an aggregate with
    no common audience is releasable to nobody.

    ``originator`` defaults to the parts' common originator (LabelError ``originator_required``
    when they differ); ``created_ms`` defaults to the latest part. Raises LabelError when
    ``labels`` is empty (``no_labels``) or a part is not valid under ``policy``.
    """
    parts = tuple(labels)
    if not parts:
        raise LabelError("no_labels", "dominant() needs at least one label")
    for part in parts:
        _require_valid(policy, part)
    top = max(parts, key=lambda lab: policy.rank(lab.classification) or 0)
    categories: dict[str, frozenset[str]] = {}
    for cdef in policy.categories:
        present = [p.categories[cdef.name] for p in parts if cdef.name in p.categories]
        if not present:
            continue
        if cdef.type is CategoryType.PERMISSIVE:
            categories[cdef.name] = frozenset.intersection(*present)
        else:
            categories[cdef.name] = frozenset.union(*present)
    if originator is None:
        origins = {p.originator for p in parts}
        if len(origins) != 1:
            raise LabelError("originator_required", "parts have different originators")
        originator = origins.pop()
    return Label(
        policy_id=policy.id,
        classification=top.classification,
        categories=categories,
        originator=originator,
        created_ms=max(p.created_ms for p in parts) if created_ms is None else created_ms,
    )


# --- ingest and relabel rules ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """What :func:`check_ingest` decided: accept with ``label`` (possibly a default), or reject."""

    accepted: bool
    label: Label | None
    defaulted: bool = False
    kept: bool = False  # an unlabelled update of a stored item: the stored label was kept
    reasons: tuple[str, ...] = ()


def _reject(*reasons: str) -> IngestResult:
    return IngestResult(accepted=False, label=None, reasons=tuple(reasons))


def check_ingest(
    policy: Policy,
    label: Label | None,
    sender_auths: AuthSet,
    sender_org: str,
    default_label: Label | None,
    *,
    prior: Label | None = None,
    partner_updates: bool = False,
) -> IngestResult:
    """The write rule: may this sender put this item in, and under which label?

    ``sender_auths`` must already include the listener's ceiling (``resolve_authorizations``
    intersects it). ``prior`` is the stored label of the same item (same uid, or the target of a
    delete), None for a new item.

    With ``prior``, the rules on the stored item come first and hold whether or not the update
    carries a label: a sender who may not see the stored item is refused
    (``prior_not_visible``, with no decision reasons, so a refusal tells nothing of the hidden
    label); a sender of another organisation than the item's originator is refused
    (``other_org_item``) unless ``partner_updates`` allows partners to change items they may
    see. An update that carries no label then keeps ``prior`` unchanged (``kept``): ATAK never
    sends labels, and moving a labelled marker must not relabel it.

    Without ``prior``, unlabelled items get ``default_label`` with its classification capped at
    the sender's ceiling, ``REL`` set to the sender's own org and the sender's org as originator;
    no default means reject (``no_label``).

    An asserted label is rejected, never repaired, when it is invalid, when the sender could not
    read it (``not_readable_by_sender`` plus the decision reasons), when its ``REL`` excludes the
    sender's org (``excludes_sender_org``), or when its originator is not the sender's org for a
    new item, or not the stored originator for an update (``originator_mismatch``: the
    originator of an item never changes). With ``prior``, a label less restrictive than it is
    refused (``lowers_prior_label``): lowering or widening is a relabel (:func:`check_relabel`).
    """
    if not isinstance(sender_org, str) or sender_org not in policy.rel.value_set:
        return _reject("bad_sender_org")
    if prior is not None:
        # Who may change a stored item (docs/labels.md "Writing: ingest rules"). An item the
        # sender cannot see must not be replaced, hidden or deleted by it.
        if not decide(policy, prior, sender_auths).permit:
            return _reject("prior_not_visible")
        if prior.originator != sender_org and not partner_updates:
            return _reject("other_org_item")
        if label is None:
            return IngestResult(accepted=True, label=prior, kept=True)
    if label is None:
        if default_label is None:
            return _reject("no_label")
        return _apply_default(policy, default_label, sender_auths, sender_org)
    reasons = list(validate_label(policy, label))
    if reasons:
        return _reject(*reasons)
    expected_originator = sender_org if prior is None else prior.originator
    if label.originator != expected_originator:
        reasons.append("originator_mismatch")
    if sender_org not in label.values(REL):
        reasons.append("excludes_sender_org")
    readable = decide(policy, label, sender_auths)
    if not readable.permit:
        reasons.append("not_readable_by_sender")
        reasons.extend(readable.reasons)
    if prior is not None and not dominates(policy, label, prior):
        reasons.append("lowers_prior_label")
    if reasons:
        return _reject(*reasons)
    return IngestResult(accepted=True, label=label)


def _apply_default(
    policy: Policy, template: Label, sender_auths: AuthSet, sender_org: str
) -> IngestResult:
    template_rank = policy.rank(template.classification)
    ceiling_rank = policy.rank(sender_auths.ceiling)
    if template_rank is None:
        return _reject("invalid_default", "unknown_classification")
    if ceiling_rank is None:
        return _reject("default_not_readable", "no_clearance")
    categories = dict(template.categories)
    categories[REL] = frozenset({sender_org})
    label = Label(
        policy_id=template.policy_id,
        classification=policy.classifications[min(template_rank, ceiling_rank)],
        categories=categories,
        originator=sender_org,
        created_ms=template.created_ms,
    )
    invalid = validate_label(policy, label)
    if invalid:
        return _reject("invalid_default", *invalid)
    readable = decide(policy, label, sender_auths)
    if not readable.permit:
        return _reject("default_not_readable", *readable.reasons)
    return IngestResult(accepted=True, label=label, defaulted=True)


def listener_default_label(
    policy: Policy, listener_ceiling: str, created_ms: int, *, originator: str
) -> Label:
    """The recommended listener default (labels.md 7b): the listener's ceiling, REL = originator.

    :func:`check_ingest` replaces REL and the originator with the sender's org anyway; this is
    the template to pass as its ``default_label``.
    """
    label = Label(
        policy_id=policy.id,
        classification=listener_ceiling,
        categories={REL: frozenset({originator})},
        originator=originator,
        created_ms=created_ms,
    )
    _require_valid(policy, label)
    return label


class RelabelDirection(enum.Enum):
    UNCHANGED = "unchanged"  # the same access semantics (only INFORMATIVE values differ)
    RAISE = "raise"  # strictly more restrictive
    LOWER = "lower"  # anything less restrictive: lower class, fewer restrictive, wider REL


@dataclass(frozen=True, slots=True, kw_only=True)
class RelabelResult:
    allowed: bool
    direction: RelabelDirection
    reasons: tuple[str, ...] = ()


# A justification long enough for a sentence or two and a ticket reference, short enough to audit.
MAX_JUSTIFICATION_CHARS = 1024


def check_relabel(
    policy: Policy,
    old: Label,
    new: Label,
    *,
    actor_auths: AuthSet,
    actor_org: str,
    release_authority: bool,
    justification: str | None,
) -> RelabelResult:
    """The relabel rule (labels.md 7h): a relabel makes a new version; this says if it may.

    Raising (or an INFORMATIVE-only change) is open to any writer: an actor who can read both the
    old and the new label. Lowering, which includes widening a PERMISSIVE category such as REL,
    also needs the originating org's release authority (``actor_org == old.originator`` and
    ``release_authority``) and a non-empty justification, which the caller records in the audit
    log. The originator never changes. Reasons: ``invalid_old``, the new label's validation
    codes, ``originator_changed``, ``actor_cannot_read_old``, ``actor_cannot_read_new``,
    ``not_originator_org``, ``release_authority_required``, ``justification_required``,
    ``justification_too_long``.
    """
    reasons: list[str] = []
    if validate_label(policy, old):
        reasons.append("invalid_old")
    reasons.extend(validate_label(policy, new))
    if reasons:
        return RelabelResult(
            allowed=False, direction=RelabelDirection.LOWER, reasons=tuple(reasons)
        )
    up = dominates(policy, new, old)
    down = dominates(policy, old, new)
    if up and down:
        direction = RelabelDirection.UNCHANGED
    elif up:
        direction = RelabelDirection.RAISE
    else:
        direction = RelabelDirection.LOWER
    if new.originator != old.originator:
        reasons.append("originator_changed")
    if not decide(policy, old, actor_auths).permit:
        reasons.append("actor_cannot_read_old")
    if not decide(policy, new, actor_auths).permit:
        reasons.append("actor_cannot_read_new")
    if direction is RelabelDirection.LOWER:
        if actor_org != old.originator:
            reasons.append("not_originator_org")
        if not release_authority:
            reasons.append("release_authority_required")
        if justification is None or not justification.strip():
            reasons.append("justification_required")
    if justification is not None and len(justification) > MAX_JUSTIFICATION_CHARS:
        reasons.append("justification_too_long")
    return RelabelResult(allowed=not reasons, direction=direction, reasons=tuple(reasons))


# --- CoT root attributes (output only) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CotMarking:
    """Values for the CoT ``<event>`` attributes ``access``, ``caveat`` and ``releasableTo``."""

    access: str
    caveat: str | None
    releasable_to: str


def cot_marking(policy: Policy, label: Label) -> CotMarking:
    """The root marking attributes to write on egress, for TAK Server and MIL-STD-6090 readers.

    TAK Server builds an item's marking as ``access + "//" + caveat + "//" + releasableTo``
    (TSc ClassificationServiceImpl.canAccess) and hands it to an ISM service, so we write
    ``access`` = the classification, ``caveat`` = the banner segments of the other RESTRICTIVE
    and PERMISSIVE categories (None when there are none) and ``releasableTo`` = the REL segment
    (``REL TO USA, UKR``); joined they read as the banner. These attributes are never read on
    input: the ``<__seclabel>`` detail element is the label (labels.md 7b).
    """
    _require_valid(policy, label)
    caveats = [
        _banner_segment(cdef, label.categories[cdef.name])
        for cdef in policy.categories
        if cdef.name != REL
        and cdef.name in label.categories
        and cdef.type is not CategoryType.INFORMATIVE
    ]
    return CotMarking(
        access=label.classification,
        caveat="//".join(caveats) if caveats else None,
        releasable_to=_banner_segment(policy.rel, label.categories[REL]),
    )


def cot_marking_conflicts(
    policy: Policy,
    label: Label,
    *,
    access: str | None,
    caveat: str | None,
    releasable_to: str | None,
) -> tuple[str, ...]:
    """Which root attributes received on an event contradict its label (empty: none do).

    An absent attribute never conflicts. A conflict suggests a client that shows users a
    marking other than the real label; labels.md 7b recommends rejecting such events.
    """
    expected = cot_marking(policy, label)
    conflicts: list[str] = []
    if access is not None and access != expected.access:
        conflicts.append("access")
    if caveat is not None and caveat != (expected.caveat or ""):
        conflicts.append("caveat")
    if releasable_to is not None and releasable_to != expected.releasable_to:
        conflicts.append("releasableTo")
    return tuple(conflicts)


# --- parsing helpers ---------------------------------------------------------------------------


@contextmanager
def _parsing() -> Iterator[None]:
    """Turn any stray error of a parser into LabelError("malformed"), keeping parsers total."""
    try:
        yield
    except LabelError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RecursionError,
        SyntaxError,  # xml.etree.ElementTree.ParseError
    ) as exc:
        raise LabelError("malformed", type(exc).__name__) from exc


def _check_size(text: object) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_LABEL_TEXT_CHARS * 4:
            raise LabelError("too_large", "label text exceeds MAX_LABEL_TEXT_CHARS")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LabelError("malformed", "not UTF-8") from exc
    if not isinstance(text, str):
        raise LabelError("malformed", "label text must be str or bytes")
    if len(text) > MAX_LABEL_TEXT_CHARS:
        raise LabelError("too_large", "label text exceeds MAX_LABEL_TEXT_CHARS")
    return text


def _parse_xml(text: str | bytes) -> ET.Element:
    """Parse a small XML document with no DTD, entity, comment or CDATA allowed."""
    body = _check_size(text)
    # No "<!" at all: that refuses DOCTYPE and ENTITY declarations (XXE, billion laughs) before
    # the parser sees them, and comments and CDATA, which no label needs.
    if "<!" in body:
        raise LabelError("forbidden_markup", "DTDs, entities, comments and CDATA are refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise LabelError("malformed", "not well-formed XML") from exc


def _blank(text: str | None) -> bool:
    return text is None or text.strip(_XML_SPACE) == ""


def _check_attrs(
    el: ET.Element, required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    names = set(el.attrib)
    if names - required - optional:
        raise LabelError("unknown_attribute", f"{sorted(names - required - optional)}")
    if required - names:
        raise LabelError("missing_attribute", f"{sorted(required - names)}")


def _token_syntax(values: Iterable[object], what: str) -> list[str]:
    out: list[str] = []
    for v in values:
        if not is_value_token(v):
            raise LabelError("bad_value", f"{what}: not an uppercase value token")
        assert isinstance(v, str)
        out.append(v)
    return out


def _name_syntax(policy_id: object, classification: object, originator: object) -> None:
    # Refuse non-ASCII and oversized strings before they reach hashing, logs or reason codes.
    if not isinstance(policy_id, str) or _POLICY_ID_RE.fullmatch(policy_id) is None:
        raise LabelError("policy_mismatch", "not a policy id")
    if (
        not isinstance(classification, str)
        or len(classification) > MAX_NAME_CHARS
        or _CLASS_RE.fullmatch(classification) is None
    ):
        raise LabelError("unknown_classification", "not a classification name")
    if not is_value_token(originator):
        raise LabelError("bad_originator", "not an organisation token")


def _finish(policy: Policy, label: Label, claimed_id: str | None) -> Label:
    _require_valid(policy, label)
    if claimed_id is not None and claimed_id != label.label_id:
        raise LabelError("id_mismatch", "the id does not match the label's content")
    return label


def _category_type(policy: Policy, tag: str, type_text: str) -> CategoryDef:
    cdef = policy.category(tag)
    if cdef is None:
        raise LabelError(_tag_code("unknown_category", tag), "not a category of the policy")
    if type_text != cdef.type.value:
        raise LabelError(f"type_mismatch:{cdef.name}", "category type differs from the policy")
    return cdef


# --- (b) JSON ----------------------------------------------------------------------------------

_JSON_REQUIRED = frozenset({"v", "policy", "classification", "categories", "originator", "created"})
_JSON_ALLOWED = _JSON_REQUIRED | {"id"}


def label_to_json_obj(label: Label) -> dict[str, object]:
    """The label as plain JSON data (values sorted); see :func:`label_to_json`."""
    return {
        "v": JSON_VERSION,
        "policy": label.policy_id,
        "classification": label.classification,
        "categories": {tag: sorted(values) for tag, values in label.categories.items()},
        "originator": label.originator,
        "created": label.created_ms,
        "id": label.label_id,
    }


def label_to_json(label: Label) -> str:
    """Canonical JSON (RFC 8785: sorted keys, no whitespace) for the API and storage."""
    return canonical_json(label_to_json_obj(label)).decode("utf-8")


def label_from_json_obj(policy: Policy, obj: object) -> Label:
    """Build a label from JSON data (as produced by :func:`label_to_json_obj`). Strict."""
    with _parsing():
        if not isinstance(obj, dict):
            raise LabelError("malformed", "a label is a JSON object")
        keys = set(obj)
        if not all(isinstance(k, str) for k in keys):
            raise LabelError("malformed", "keys must be strings")
        if keys - _JSON_ALLOWED:
            raise LabelError("unknown_field", f"{sorted(keys - _JSON_ALLOWED)}")
        if _JSON_REQUIRED - keys:
            raise LabelError("missing_field", f"{sorted(_JSON_REQUIRED - keys)}")
        if type(obj["v"]) is not int or obj["v"] != JSON_VERSION:
            raise LabelError("bad_version", "v must be 1")
        _name_syntax(obj["policy"], obj["classification"], obj["originator"])
        created = obj["created"]
        if type(created) is not int:
            raise LabelError("bad_created", "created must be an integer (ms)")
        raw = obj["categories"]
        if not isinstance(raw, dict):
            raise LabelError("malformed", "categories must be an object")
        categories: dict[str, frozenset[str]] = {}
        for tag, values in raw.items():
            if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
                raise LabelError("unknown_category", "not a category name")
            if not isinstance(values, list):
                raise LabelError("malformed", f"{tag}: values must be an array")
            tokens = _token_syntax(values, tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{tag}", "a value is listed twice")
            categories[tag] = frozenset(tokens)
        claimed = obj.get("id")
        if claimed is not None and not isinstance(claimed, str):
            raise LabelError("id_mismatch", "id must be a string")
        label = Label(
            policy_id=obj["policy"],
            classification=obj["classification"],
            categories=categories,
            originator=obj["originator"],
            created_ms=created,
        )
        return _finish(policy, label, claimed)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            # Duplicate keys are how two parsers are made to disagree about one document.
            raise LabelError("duplicate_field", "a JSON key appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> object:
    raise LabelError("malformed", f"{name} is not JSON")


def label_from_json(policy: Policy, text: str | bytes) -> Label:
    """Parse a JSON label (any whitespace; no duplicate keys, NaN or Infinity)."""
    with _parsing():
        body = _check_size(text)
        obj = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
        return label_from_json_obj(policy, obj)


# --- (a) CoT <__seclabel> -----------------------------------------------------------------------

_SECLABEL_REQUIRED = {"v", "policy", "cls", "orig", "created"}
_SECLABEL_OPTIONAL = frozenset({"id"})
_CAT_REQUIRED = {"tag", "type", "v"}


def label_to_seclabel(policy: Policy, label: Label) -> ET.Element:
    """The ``<__seclabel>`` element to put (once) under a CoT ``<detail>``.

    ``<__seclabel v="1" policy=".." cls=".." orig=".." created="..Z" id="sha256:..">`` with one
    ``<cat tag=".." type=".." v="A B"/>`` per category (policy order, values space-separated in
    policy order). No namespace: several TAK parsers are namespace-unaware. The leading ``__``
    follows TAK's meta-detail convention (``__group``, ``__chat``); ATAK keeps unknown detail
    children and re-emits them (ATAK CIV OpaqueHandler.java), and TAK protocol v1 carries them
    in ``Detail.xmlDetail`` (takproto detail.proto), so the label survives both.
    """
    _require_valid(policy, label)
    el = ET.Element(
        SECLABEL_TAG,
        {
            "v": SECLABEL_VERSION,
            "policy": label.policy_id,
            "cls": label.classification,
            "orig": label.originator,
            "created": format_time_ms(label.created_ms),
            "id": label.label_id,
        },
    )
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is not None:
            ET.SubElement(
                el,
                "cat",
                {"tag": cdef.name, "type": cdef.type.value, "v": " ".join(cdef.ordered(values))},
            )
    return el


def seclabel_to_xml(policy: Policy, label: Label) -> str:
    """:func:`label_to_seclabel` as XML text."""
    return ET.tostring(label_to_seclabel(policy, label), encoding="unicode")


def label_from_seclabel(policy: Policy, element: ET.Element) -> Label:
    """Parse a ``<__seclabel>`` element. Strict: unknown attributes or children are invalid."""
    with _parsing():
        if element.tag != SECLABEL_TAG:
            raise LabelError("not_a_label", "the element is not <__seclabel>")
        _check_attrs(element, _SECLABEL_REQUIRED, _SECLABEL_OPTIONAL)
        if element.get("v") != SECLABEL_VERSION:
            raise LabelError("bad_version", "v must be 1")
        if not _blank(element.text):
            raise LabelError("unexpected_text", "__seclabel holds only <cat> elements")
        _name_syntax(element.get("policy"), element.get("cls"), element.get("orig"))
        created = parse_time_ms(element.get("created", ""))
        categories: dict[str, frozenset[str]] = {}
        for child in element:
            if child.tag != "cat":
                raise LabelError("unknown_element", "__seclabel holds only <cat> elements")
            _check_attrs(child, _CAT_REQUIRED)
            if len(child) or not _blank(child.text) or not _blank(child.tail):
                raise LabelError("unexpected_text", "<cat> is an empty element")
            tag = child.get("tag", "")
            if tag in categories:
                raise LabelError(_tag_code("duplicate_category", tag), "a category appears twice")
            cdef = _category_type(policy, tag, child.get("type", ""))
            tokens = _token_syntax(child.get("v", "").split(" "), tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{cdef.name}", "a value is listed twice")
            categories[cdef.name] = frozenset(tokens)
        label = Label(
            policy_id=element.get("policy", ""),
            classification=element.get("cls", ""),
            categories=categories,
            originator=element.get("orig", ""),
            created_ms=created,
        )
        return _finish(policy, label, element.get("id"))


def label_from_seclabel_xml(policy: Policy, text: str | bytes) -> Label:
    """Parse ``<__seclabel>`` from XML text (hardened: no DTD, entities, comments or CDATA)."""
    with _parsing():
        return label_from_seclabel(policy, _parse_xml(text))


def _local_name(tag: object) -> str | None:
    if not isinstance(tag, str):
        return None  # comments and processing instructions
    return tag.rsplit("}", 1)[-1]


def label_from_detail(policy: Policy, detail: ET.Element | None) -> Label | None:
    """The label of an event from its ``<detail>``; None when the event is unlabelled.

    Exactly one ``<__seclabel>`` directly under ``<detail>`` is allowed. Two of them
    (``duplicate_label``), one nested deeper (``nested_label``) or one in a namespace
    (``namespaced_label``) make the event's label invalid: a reader that picked another copy
    would see another label.
    """
    with _parsing():
        if detail is None:
            return None
        found: list[ET.Element] = []
        for child in detail:
            if child.tag == SECLABEL_TAG:
                found.append(child)
            elif _local_name(child.tag) == SECLABEL_TAG:
                raise LabelError("namespaced_label", "a namespaced __seclabel is not a label")
        for el in detail.iter():
            nested = el is not detail and not any(el is f for f in found)
            if nested and _local_name(el.tag) == SECLABEL_TAG:
                raise LabelError("nested_label", "__seclabel must be a child of <detail>")
        if len(found) > 1:
            raise LabelError("duplicate_label", "more than one __seclabel")
        if not found:
            return None
        return label_from_seclabel(policy, found[0])


def with_seclabel(policy: Policy, detail: ET.Element | None, label: Label) -> ET.Element:
    """A copy of ``detail`` (or a new ``<detail>``) carrying exactly one, fresh ``<__seclabel>``.

    Every element named ``__seclabel`` (at any depth, in any namespace) is removed from the copy
    first: the server writes the authoritative label, a client's copy never rides along. The
    input is not modified (Event.detail is shared and must stay immutable).
    """
    fresh = label_to_seclabel(policy, label)
    out = ET.Element("detail") if detail is None else copy.deepcopy(detail)
    for parent in list(out.iter()):
        for child in list(parent):
            if _local_name(child.tag) == SECLABEL_TAG:
                parent.remove(child)
    out.append(fresh)
    return out


# --- (c) banner --------------------------------------------------------------------------------


def _banner_segment(cdef: CategoryDef, values: Iterable[str]) -> str:
    return cdef.prefix + ", ".join(cdef.ordered(values))


def label_to_banner(policy: Policy, label: Label) -> str:
    """The display banner, e.g. ``SECRET//REL TO USA, UKR``.

    ``//`` separates segments (DoDM 5200.01 Vol. 2 banner grammar): the classification, then
    one ``<prefix><values>`` segment per category the label carries, in policy order, values
    in policy order separated by ``", "``.
    """
    _require_valid(policy, label)
    segments = [label.classification]
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is not None:
            segments.append(_banner_segment(cdef, values))
    return "//".join(segments)


def label_from_banner(policy: Policy, text: str, *, originator: str, created_ms: int) -> Label:
    """Parse a banner exactly as :func:`label_to_banner` writes it (strict grammar).

    A banner carries no originator or time, so the caller supplies them. Segments and values
    out of policy order are refused (``out_of_order``), as are lowercase, extra spaces,
    duplicates and unknown words: a banner is typed by people, and a near miss must not
    silently become some other label.
    """
    with _parsing():
        body = _check_size(text)
        segments = body.split("//")
        classification = segments[0]
        if policy.rank(classification) is None:
            raise LabelError(
                "unknown_classification", "the banner must start with a classification"
            )
        categories: dict[str, frozenset[str]] = {}
        last_index = -1
        for segment in segments[1:]:
            index, cdef = next(
                ((i, c) for i, c in enumerate(policy.categories) if segment.startswith(c.prefix)),
                (-1, None),
            )
            if cdef is None:
                raise LabelError("unknown_category", "a segment names no category of the policy")
            if cdef.name in categories:
                raise LabelError(f"duplicate_category:{cdef.name}", "a category appears twice")
            if index < last_index:
                raise LabelError(f"out_of_order:{cdef.name}", "segments follow the policy order")
            last_index = index
            words = segment[len(cdef.prefix) :].split(", ")
            positions: list[int] = []
            for word in words:
                if word not in cdef.value_set:
                    raise LabelError(f"unknown_value:{cdef.name}", "not a value of the category")
                positions.append(cdef.values.index(word))
            if len(set(positions)) != len(positions):
                raise LabelError(f"duplicate_value:{cdef.name}", "a value is listed twice")
            if positions != sorted(positions):
                raise LabelError(f"out_of_order:{cdef.name}", "values follow the policy order")
            categories[cdef.name] = frozenset(words)
        label = Label(
            policy_id=policy.id,
            classification=classification,
            categories=categories,
            originator=originator,
            created_ms=created_ms,
        )
        return _finish(policy, label, None)


# --- (d) STANAG 4774 XML -------------------------------------------------------------------------

# The 4774 root elements we write and read. originatorConfidentialityLabel is the label the
# originator set; ConfidentialityLabel is the older root kept for backward compatibility
# (ADatP-4774 App. 1; labels.md 1.2). alternative/metadata labels mean something else: refused.
STANAG4774_ROOTS = ("originatorConfidentialityLabel", "ConfidentialityLabel")


def _q(name: str) -> str:
    return f"{{{NS_4774}}}{name}"


def _w(name: str) -> str:
    return f"slab:{name}"


def label_to_stanag4774(
    policy: Policy, label: Label, *, root: str = "originatorConfidentialityLabel"
) -> str:
    """The label as a STANAG 4774 confidentiality label document (for export).

    Elements are in the 4774 namespace (prefix ``slab``), attributes unqualified. Written:
    ``ConfidentialityInformation`` (``PolicyIdentifier`` with ``URI`` when the policy has one,
    ``Classification``, one ``Category TagName Type`` with ``GenericValue`` children per
    category), ``OriginatorID IDType="uniformResourceIdentifier"`` = ``urn:liaison:org:<ORG>``,
    and ``CreationDateTime``. Liaison labels carry no review time, so ``ReviewDateTime`` is
    not written.
    """
    if root not in STANAG4774_ROOTS:
        raise ValueError(f"root must be one of {STANAG4774_ROOTS}")
    _require_valid(policy, label)
    # Tags are written with the literal prefix "slab:" (bound on the root) rather than as
    # {namespace}name: ElementTree's default_namespace option refuses unqualified attributes,
    # and 4774 attributes are unqualified. The parser below reads any prefix.
    el = ET.Element(_w(root), {"xmlns:slab": NS_4774})
    info = ET.SubElement(el, _w("ConfidentialityInformation"))
    pid = ET.SubElement(info, _w("PolicyIdentifier"), {"URI": policy.uri} if policy.uri else {})
    pid.text = policy.id
    ET.SubElement(info, _w("Classification")).text = label.classification
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is None:
            continue
        cat = ET.SubElement(info, _w("Category"), {"TagName": cdef.name, "Type": cdef.type.value})
        for value in cdef.ordered(values):
            ET.SubElement(cat, _w("GenericValue")).text = value
    originator = ET.SubElement(el, _w("OriginatorID"), {"IDType": "uniformResourceIdentifier"})
    originator.text = ORIGINATOR_URN_PREFIX + label.originator
    ET.SubElement(el, _w("CreationDateTime")).text = format_time_ms(label.created_ms)
    return ET.tostring(el, encoding="unicode")


def _children(el: ET.Element, names: list[tuple[str, bool]]) -> dict[str, ET.Element]:
    """Match ``el``'s children to ``names`` (name, required) in order; no others allowed."""
    if not _blank(el.text):
        raise LabelError("unexpected_text", f"text inside {_local_name(el.tag)}")
    found: dict[str, ET.Element] = {}
    kids = list(el)
    i = 0
    for name, required in names:
        if i < len(kids) and kids[i].tag == _q(name):
            found[name] = kids[i]
            i += 1
        elif required:
            raise LabelError("missing_element", name)
    if i != len(kids):
        raise LabelError("unknown_element", f"{_local_name(kids[i].tag)} is not supported here")
    for kid in kids:
        if not _blank(kid.tail):
            raise LabelError("unexpected_text", "text between elements")
    return found


def _leaf_text(el: ET.Element, allowed_attrs: frozenset[str] = frozenset()) -> str:
    if len(el):
        raise LabelError("unknown_element", f"{_local_name(el.tag)} has no child elements")
    if set(el.attrib) - allowed_attrs:
        raise LabelError("unknown_attribute", f"on {_local_name(el.tag)}")
    return el.text or ""


def label_from_stanag4774(policy: Policy, text: str | bytes) -> Label:
    """Import a STANAG 4774 label written by :func:`label_to_stanag4774` or a peer.

    Strict on structure (4774 element order; unknown elements, ``PrivacyMark``,
    ``SuccessionHandling`` and extension elements are refused, not dropped) and on values
    (uppercase, no surrounding space). ``Type`` must equal the policy's type for the tag. Times
    may carry 0-9 fraction digits and a UTC offset. ``ReviewDateTime`` and ``Id`` on the root
    are accepted and checked but not kept (Liaison labels have no review time).
    """
    with _parsing():
        root = _parse_xml(text)
        if root.tag not in {_q(r) for r in STANAG4774_ROOTS}:
            raise LabelError("unsupported_root", "not a 4774 originator or confidentiality label")
        _check_attrs(root, set(), frozenset({"ReviewDateTime", "Id"}))
        review = root.get("ReviewDateTime")
        if review is not None:
            parse_time_ms(review, strict=False)
        top = _children(
            root,
            [
                ("ConfidentialityInformation", True),
                ("OriginatorID", True),
                ("CreationDateTime", True),
            ],
        )
        info = top["ConfidentialityInformation"]
        if not _blank(info.text):
            raise LabelError("unexpected_text", "text inside ConfidentialityInformation")
        kids = list(info)
        if any(not _blank(kid.tail) for kid in kids):
            raise LabelError("unexpected_text", "text between elements")
        # 4774 order: PolicyIdentifier, Classification, [PrivacyMark], Category*. PrivacyMark is
        # refused: dropping it on import would lose part of the originator's label.
        if len(kids) < 1 or kids[0].tag != _q("PolicyIdentifier"):
            raise LabelError("missing_element", "PolicyIdentifier")
        if len(kids) < 2 or kids[1].tag != _q("Classification"):
            raise LabelError("missing_element", "Classification")
        policy_id = _leaf_text(kids[0], frozenset({"URI"}))
        uri = kids[0].get("URI")
        if policy_id != policy.id or (uri is not None and uri != policy.uri):
            raise LabelError("policy_mismatch", "the label is under another policy")
        classification = _leaf_text(kids[1])
        categories: dict[str, frozenset[str]] = {}
        for cat in kids[2:]:
            if cat.tag != _q("Category"):
                raise LabelError("unknown_element", f"{_local_name(cat.tag)} is not supported")
            _check_attrs(cat, {"TagName", "Type"})
            tag = cat.get("TagName", "")
            if tag in categories:
                raise LabelError(_tag_code("duplicate_category", tag), "a category appears twice")
            cdef = _category_type(policy, tag, cat.get("Type", ""))
            if not _blank(cat.text):
                raise LabelError("unexpected_text", "text inside Category")
            values: list[str] = []
            for gv in cat:
                if gv.tag != _q("GenericValue"):
                    raise LabelError("unknown_element", "Category holds only GenericValue")
                if not _blank(gv.tail):
                    raise LabelError("unexpected_text", "text between elements")
                values.append(_leaf_text(gv))
            tokens = _token_syntax(values, tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{cdef.name}", "a value is listed twice")
            categories[cdef.name] = frozenset(tokens)
        originator_el = top["OriginatorID"]
        id_text = _leaf_text(originator_el, frozenset({"IDType"}))
        if originator_el.get("IDType") != "uniformResourceIdentifier" or not id_text.startswith(
            ORIGINATOR_URN_PREFIX
        ):
            raise LabelError("bad_originator", "OriginatorID must be urn:liaison:org:<ORG>")
        originator = id_text[len(ORIGINATOR_URN_PREFIX) :]
        created = parse_time_ms(_leaf_text(top["CreationDateTime"]), strict=False)
        _name_syntax(policy_id, classification, originator)
        label = Label(
            policy_id=policy_id,
            classification=classification,
            categories=categories,
            originator=originator,
            created_ms=created,
        )
        return _finish(policy, label, None)
