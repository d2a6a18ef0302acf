"""The label values: Policy (with its categories), Label, AuthSet, LabelError and validation.

Construction of a Policy validates it completely (ConfigError naming the key); a Label is checked
against a policy by :func:`validate_label`. Ids (``digest``, ``label_id``, ``auths_id``) are
``sha256:`` digests over canonical JSON (``model.canonical``). Pure: no clock, no I/O.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from liaison.errors import ConfigError
from liaison.model import canonical
from liaison.model.canonical import MAX_SAFE_INT, MAX_TIME_MS

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

# The releasability category every policy must define (labels.md section 0, decision 2).
REL = "REL"

# --- syntax of names -----------------------------------------------------------------------

_VALUE_RE = re.compile(r"[A-Z0-9][A-Z0-9_+-]{0,31}", re.ASCII)
_TAG_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}", re.ASCII)
_CLASS_RE = re.compile(r"[A-Z0-9][A-Z0-9_+-]*(?: [A-Z0-9_+-]+)*", re.ASCII)
_POLICY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)
# 4774: PolicyIdentifier/@URI "must be urn:oid:" (labels.md section 1.2). Arcs of up to 39 digits
# admit UUID-derived OIDs under 2.25 (ITU-T X.667).
_OID_URN_RE = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]{0,38})){1,63}", re.ASCII)
_PREFIX_RE = re.compile(r"[A-Z][A-Z0-9_-]*(?: [A-Z0-9_-]+)* ", re.ASCII)


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
        object.__setattr__(self, "digest", canonical.digest(self.to_json_obj()))

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
    if type(p.version) is not int or not 1 <= p.version <= MAX_SAFE_INT:
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


# Label ids remembered (the canonical JSON and SHA-256 of a label's core): every event with
# labels on makes a few Labels, nearly all with one of a handful of cores. Least recently used
# dropped past this many.
CORE_ID_CACHE = 4096


def _core_id(policy_id: str, classification: str, categories: Mapping[str, frozenset[str]]) -> str:
    return _core_id_of(policy_id, classification, tuple(categories.items()))


@functools.lru_cache(maxsize=CORE_ID_CACHE)
def _core_id_of(
    policy_id: str, classification: str, categories: tuple[tuple[str, frozenset[str]], ...]
) -> str:
    return canonical.digest(
        {
            "policy": policy_id,
            "classification": classification,
            "categories": {name: sorted(values) for name, values in categories},
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
            canonical.digest(
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


def _require_valid(policy: Policy, label: Label) -> None:
    reasons = validate_label(policy, label)
    if reasons:
        raise LabelError(reasons[0], "label is not valid under the policy", reasons=reasons)
