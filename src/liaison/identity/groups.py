"""The groups file: maps users and certificate fields to TAK IN/OUT groups.

TAK Server takes group membership from server-side sources only (its user file, LDAP, certificate
RDNs), never from the client's ``__group`` detail, and puts a user with no groups into ``__ANON__``
(tak-protocol.md section 7). A groups file here is TOML:

    [[rule]]
    user = "alice"                 # any of: user, cn, o, ou, fingerprint; all given must match
    in = ["Blue"]
    out = ["Blue", "HQ"]

    [[rule]]
    o = "UKR"                      # every certificate with O=UKR
    groups = ["UKR"]               # shorthand for in = out = groups

Every matching rule adds its groups. A principal that matches no rule gets ``__ANON__`` both ways.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from liaison.errors import ConfigError
from liaison.model.principal import ANON_GROUP

_MATCH_KEYS = ("user", "cn", "o", "ou", "fingerprint")


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRule:
    match: tuple[tuple[str, str], ...]
    in_groups: frozenset[str]
    out_groups: frozenset[str]

    def matches(self, facts: Mapping[str, str | None]) -> bool:
        return all(facts.get(k) is not None and facts.get(k) == v for k, v in self.match)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRules:
    rules: tuple[GroupRule, ...] = ()

    def resolve(self, facts: Mapping[str, str | None]) -> tuple[frozenset[str], frozenset[str]]:
        """IN and OUT groups for the principal described by ``facts`` (user, cn, o, ou, ...)."""
        in_g: set[str] = set()
        out_g: set[str] = set()
        for rule in self.rules:
            if rule.matches(facts):
                in_g |= rule.in_groups
                out_g |= rule.out_groups
        if not in_g and not out_g:
            return frozenset({ANON_GROUP}), frozenset({ANON_GROUP})
        return frozenset(in_g), frozenset(out_g)


def _str_list(value: object, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, "must be a list of non-empty strings")
    return frozenset(value)


def parse_group_rules(text: str, *, source: str = "groups") -> GroupRules:
    """Parse a groups file. Errors name the offending rule and key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    unknown = set(doc) - {"rule"}
    if unknown:
        raise ConfigError(source, f"unknown keys {sorted(unknown)}")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}.rule", "must be an array of tables ([[rule]])")
    rules: list[GroupRule] = []
    for i, raw in enumerate(raw_rules):
        key = f"{source}.rule[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        extra = set(raw) - {*_MATCH_KEYS, "in", "out", "groups"}
        if extra:
            raise ConfigError(key, f"unknown keys {sorted(extra)}")
        match = tuple((k, str(raw[k])) for k in _MATCH_KEYS if k in raw)
        if not match:
            raise ConfigError(key, f"needs at least one of {', '.join(_MATCH_KEYS)}")
        both = _str_list(raw["groups"], f"{key}.groups") if "groups" in raw else frozenset()
        in_g = both | (_str_list(raw["in"], f"{key}.in") if "in" in raw else frozenset())
        out_g = both | (_str_list(raw["out"], f"{key}.out") if "out" in raw else frozenset())
        if not in_g and not out_g:
            raise ConfigError(key, "gives no groups (set groups, in or out)")
        rules.append(GroupRule(match=match, in_groups=in_g, out_groups=out_g))
    return GroupRules(rules=tuple(rules))


def load_group_file(path: Path | None) -> GroupRules:
    """The rules of the groups file at ``path`` (``auth.groups_file``); none when unset."""
    if path is None:
        return GroupRules()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("auth.groups_file", f"cannot read {path}: {exc}") from exc
    return parse_group_rules(text, source=str(path))
