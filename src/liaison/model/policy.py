"""Load the label policy and the certificate-to-authorizations mapping from TOML, and resolve them.

Both live in TOML (``tomllib``, in the standard library since 3.11): a full STANAG 4774 SPIF is
a large XML document whose schema cannot be redistributed, and we use a small subset of it
(ordered classifications, typed categories with closed vocabularies, required flags). TOML keeps
that subset readable by the people who approve it, allows comments, has no entity or include
mechanism to harden, and costs no dependency. docs/labels.md documents the format.

The policy is read from the ``[policy]`` table and the authorizations from ``[authz]``; they
may share one file or live in two. Every error is a ConfigError naming the key at fault.
Pure: the caller reads the file and passes its text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from liaison.errors import ConfigError
from liaison.model.labels import (
    AuthSet,
    CategoryDef,
    CategoryType,
    Policy,
    intersect_auths,
    no_authset,
)

# Keys of a certificate subject we match on. Values are compared exactly (case-sensitive).
_SUBJECT_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,31}", re.ASCII)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)

# Longest subject regex we accept. Config is trusted, but a short pattern is a reviewable one.
MAX_SUBJECT_REGEX_CHARS = 256


def _parse_toml(text: str, what: str) -> dict[str, object]:
    if not isinstance(text, str):
        raise ConfigError(what, "configuration text must be a string")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(what, f"not valid TOML: {exc}") from exc


def _table(data: Mapping[str, object], name: str, key: str) -> dict[str, object]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise ConfigError(key, "missing table" if value is None else "must be a table")
    return value


def _only_keys(table: Mapping[str, object], allowed: set[str], key: str) -> None:
    extra = set(table) - allowed
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    return tuple(value)


# --- the policy --------------------------------------------------------------------------------

_POLICY_KEYS = {"id", "version", "uri", "classifications", "categories"}
_CATEGORY_KEYS = {"type", "required", "values", "banner_prefix"}


def load_policy(text: str) -> Policy:
    """Parse the ``[policy]`` table of a TOML document into a validated :class:`Policy`.

    Raises ConfigError naming the key (``policy.categories.REL.type`` and so on) on any problem.
    """
    data = _parse_toml(text, "policy")
    table = _table(data, "policy", "policy")
    _only_keys(table, _POLICY_KEYS, "policy")
    for required in ("id", "version", "classifications", "categories"):
        if required not in table:
            raise ConfigError(f"policy.{required}", "missing")
    policy_id = table["id"]
    if not isinstance(policy_id, str):
        raise ConfigError("policy.id", "must be a string")
    version = table["version"]
    if type(version) is not int:
        raise ConfigError("policy.version", "must be an integer")
    uri = table.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise ConfigError("policy.uri", "must be a string")
    classifications = _str_list(table["classifications"], "policy.classifications")
    raw_categories = _table(table, "categories", "policy.categories")
    categories: list[CategoryDef] = []
    # tomllib keeps document order, which is the display order of the banner.
    for name, raw in raw_categories.items():
        key = f"policy.categories.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        _only_keys(raw, _CATEGORY_KEYS, key)
        type_text = raw.get("type")
        try:
            category_type = CategoryType(type_text)
        except ValueError:
            raise ConfigError(
                f"{key}.type", "must be PERMISSIVE, RESTRICTIVE or INFORMATIVE (uppercase)"
            ) from None
        required = raw.get("required", False)
        if not isinstance(required, bool):
            raise ConfigError(f"{key}.required", "must be true or false")
        if "values" not in raw:
            raise ConfigError(f"{key}.values", "missing")
        prefix = raw.get("banner_prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise ConfigError(f"{key}.banner_prefix", "must be a string")
        categories.append(
            CategoryDef(
                name=name,
                type=category_type,
                values=_str_list(raw["values"], f"{key}.values"),
                required=required,
                banner_prefix=prefix,
            )
        )
    # Policy() checks everything else (syntax, vocabulary, REL) and names the key itself.
    return Policy(
        id=policy_id,
        version=version,
        uri=uri,
        classifications=classifications,
        categories=tuple(categories),
    )


# --- authorizations ---------------------------------------------------------------------------


def authset_from_table(policy: Policy, table: object, key: str) -> AuthSet:
    """An AuthSet from a TOML table ``{classification = "SECRET", REL = ["USA"], HANDLING = "*"}``.

    Each category key lists the values held; ``"*"`` means every value of that category; a
    category not listed holds nothing (fail closed). Values must be in the policy's vocabulary:
    a typo is an error here, not a token that silently matches nothing. Exposed for listener
    and peer ceilings defined in the server configuration.
    """
    if not isinstance(table, dict):
        raise ConfigError(key, "must be a table")
    classification = table.get("classification")
    if not isinstance(classification, str) or policy.rank(classification) is None:
        raise ConfigError(
            f"{key}.classification", f"must be one of {', '.join(policy.classifications)}"
        )
    held: dict[str, frozenset[str]] = {}
    for name, value in table.items():
        if name == "classification":
            continue
        cdef = policy.category(name)
        if cdef is None:
            raise ConfigError(f"{key}.{name}", "not a category of the policy")
        if value == "*":
            held[name] = cdef.value_set
            continue
        values = _str_list(value, f"{key}.{name}")
        unknown = [v for v in values if v not in cdef.value_set]
        if unknown:
            raise ConfigError(f"{key}.{name}", f"{unknown[0]!r} is not a value of {name}")
        held[name] = frozenset(values)
    return AuthSet(policy_id=policy.id, ceiling=classification, held=held)


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits; accepts ``AB:CD:...`` and any case."""
    return text.replace(":", "").strip().lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class CaEntry:
    """A trusted issuing CA: its fingerprint, the org it speaks for and its ceiling."""

    name: str
    sha256: str  # normalised: 64 lowercase hex digits
    org: str  # a value of the policy's REL category
    ceiling: AuthSet


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectRule:
    """Certificates from ``ca`` whose subject matches get ``profile``. First match wins."""

    ca: str
    profile: str
    exact: Mapping[str, str] = field(default_factory=dict)
    patterns: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def matches(self, subject: Mapping[str, str]) -> bool:
        for name, wanted in self.exact.items():
            if subject.get(name) != wanted:
                return False
        for name, pattern in self.patterns.items():
            value = subject.get(name)
            if value is None or pattern.fullmatch(value) is None:
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """The ``[authz]`` part of the configuration: profiles, CAs and rules, in file order."""

    policy: Policy
    profiles: Mapping[str, AuthSet]
    cas: tuple[CaEntry, ...]
    rules: tuple[SubjectRule, ...]

    def ca_by_fingerprint(self, fingerprint: str) -> CaEntry | None:
        wanted = normalize_fingerprint(fingerprint)
        return next((ca for ca in self.cas if ca.sha256 == wanted), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """Who a certificate makes its holder: the CA's org, the profile, and the effective AuthSet.

    ``reason`` is ``ok``, ``unknown_ca`` or ``no_matching_rule``; in the last two cases
    ``auths`` may read nothing.
    """

    org: str | None
    ca: str | None
    profile: str | None
    auths: AuthSet
    reason: str


def load_auth_config(text: str, policy: Policy) -> AuthConfig:
    """Parse the ``[authz]`` table of a TOML document, checked against ``policy``."""
    data = _parse_toml(text, "authz")
    authz = _table(data, "authz", "authz")
    _only_keys(authz, {"profiles", "cas", "rules"}, "authz")
    raw_profiles = _table(authz, "profiles", "authz.profiles")
    profiles: dict[str, AuthSet] = {}
    for name, table in raw_profiles.items():
        if _NAME_RE.fullmatch(name) is None:
            raise ConfigError(f"authz.profiles.{name}", "names are A-Z a-z 0-9 _ . -")
        profiles[name] = authset_from_table(policy, table, f"authz.profiles.{name}")

    # No [[authz.cas]] is allowed: then every certificate comes from the server's own CA and its
    # holder's profile and org are those recorded for the user (``liaison user add --profile``).
    raw_cas = authz.get("cas", [])
    if not isinstance(raw_cas, list):
        raise ConfigError("authz.cas", "must be an array of tables ([[authz.cas]])")
    cas: list[CaEntry] = []
    for i, raw in enumerate(raw_cas):
        key = f"authz.cas[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        _only_keys(raw, {"name", "sha256", "org", "ceiling"}, key)
        ca_name = raw.get("name")
        if not isinstance(ca_name, str) or _NAME_RE.fullmatch(ca_name) is None:
            raise ConfigError(f"{key}.name", "required; A-Z a-z 0-9 _ . -")
        if any(ca.name == ca_name for ca in cas):
            raise ConfigError(f"{key}.name", f"duplicate CA name {ca_name!r}")
        fingerprint = raw.get("sha256")
        if not isinstance(fingerprint, str) or not _FINGERPRINT_RE.fullmatch(
            normalize_fingerprint(fingerprint)
        ):
            raise ConfigError(f"{key}.sha256", "must be a SHA-256 fingerprint (64 hex digits)")
        sha256 = normalize_fingerprint(fingerprint)
        if any(ca.sha256 == sha256 for ca in cas):
            raise ConfigError(f"{key}.sha256", "two CAs with the same fingerprint")
        org = raw.get("org")
        if not isinstance(org, str) or org not in policy.rel.value_set:
            raise ConfigError(f"{key}.org", "must be a value of the policy's REL category")
        ceiling = authset_from_table(policy, raw.get("ceiling"), f"{key}.ceiling")
        cas.append(CaEntry(name=ca_name, sha256=sha256, org=org, ceiling=ceiling))

    raw_rules = authz.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("authz.rules", "must be an array of tables ([[authz.rules]])")
    rules: list[SubjectRule] = []
    for i, raw in enumerate(raw_rules):
        key = f"authz.rules[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        _only_keys(raw, {"ca", "profile", "subject", "subject_regex"}, key)
        rule_ca = raw.get("ca")
        if not isinstance(rule_ca, str) or not any(ca.name == rule_ca for ca in cas):
            raise ConfigError(f"{key}.ca", "must name a CA of authz.cas")
        profile = raw.get("profile")
        if not isinstance(profile, str) or profile not in profiles:
            raise ConfigError(f"{key}.profile", "must name a profile of authz.profiles")
        rules.append(
            SubjectRule(
                ca=rule_ca,
                profile=profile,
                exact=_subject_table(raw.get("subject", {}), f"{key}.subject"),
                patterns=_regex_table(raw.get("subject_regex", {}), f"{key}.subject_regex"),
            )
        )
    return AuthConfig(policy=policy, profiles=profiles, cas=tuple(cas), rules=tuple(rules))


def _subject_table(value: object, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of subject attribute = value")
    out: dict[str, str] = {}
    for name, wanted in value.items():
        if _SUBJECT_KEY_RE.fullmatch(name) is None or not isinstance(wanted, str):
            raise ConfigError(f"{key}.{name}", "must be a string for a subject attribute (O, OU)")
        out[name] = wanted
    return out


def _regex_table(value: object, key: str) -> dict[str, re.Pattern[str]]:
    out: dict[str, re.Pattern[str]] = {}
    for name, pattern in _subject_table(value, key).items():
        if len(pattern) > MAX_SUBJECT_REGEX_CHARS:
            raise ConfigError(f"{key}.{name}", "pattern too long")
        try:
            out[name] = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{key}.{name}", f"bad regular expression: {exc}") from exc
    return out


def resolve_principal(
    config: AuthConfig,
    ca_fingerprint: str,
    subject: Mapping[str, str],
    listener_ceiling: AuthSet,
) -> Resolution:
    """Map a client certificate to its org, profile and effective AuthSet (labels.md 7c).

    The issuing CA is found by fingerprint; the first rule for that CA whose subject
    attributes match (exact values, then full-match regexes) names the profile. The effective
    AuthSet is profile ∩ CA ceiling ∩ listener ceiling. The org always comes from the CA, never
    from the certificate's own O=, so a CA can only mint members of its own org.
    """
    policy = config.policy
    ca = config.ca_by_fingerprint(ca_fingerprint)
    if ca is None:
        return Resolution(
            org=None, ca=None, profile=None, auths=no_authset(policy), reason="unknown_ca"
        )
    for rule in config.rules:
        if rule.ca == ca.name and rule.matches(subject):
            profile = config.profiles[rule.profile]
            auths = intersect_auths(policy, profile, ca.ceiling, listener_ceiling)
            return Resolution(
                org=ca.org, ca=ca.name, profile=rule.profile, auths=auths, reason="ok"
            )
    return Resolution(
        org=ca.org, ca=ca.name, profile=None, auths=no_authset(policy), reason="no_matching_rule"
    )


def resolve_authorizations(
    config: AuthConfig,
    ca_fingerprint: str,
    subject: Mapping[str, str],
    listener_ceiling: AuthSet,
) -> AuthSet:
    """The effective AuthSet of a client certificate; see :func:`resolve_principal`."""
    return resolve_principal(config, ca_fingerprint, subject, listener_ceiling).auths
