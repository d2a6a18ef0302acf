"""The ``[feeds.NAME]`` tables of the label policy file (docs/feeds.md).

Feeds live in the policy file, like ``[federation]``, because what a feed may assert (its ceiling)
and the label its items get (its default classification, releasable to its organisation) are
written in the policy's terms.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from liaison.config import Endpoint, parse_endpoint
from liaison.errors import ConfigError
from liaison.model.labels import AuthSet, Policy
from liaison.model.policy import authset_from_table
from liaison.protocol.countries import COUNTRIES
from liaison.protocol.feed_tracks import AFFILIATIONS, TrackRule
from liaison.protocol.geo import valid_cot_type

KINDS = ("adsb-http", "adsb-file", "sbs1-tcp", "ais-udp", "ais-tcp", "geojson", "kml")
# Kinds that import a document of features (markers, lines, shapes) rather than tracks.
GEO_KINDS = ("geojson", "kml")
# Keys only the geo kinds take, and keys they do not (track rules, thinning, sockets).
GEO_KEYS = {"point_type", "type_property", "label_property", "name_property"}
TRACK_KEYS = {"rules", "labels", "min_interval_s", "listen", "connect"}
# A geo feed's items stay in the picture this long after each publication (republished before).
GEO_STALE_S = 86_400.0
FEED_KEYS = {
    "kind",
    "url",
    "path",
    "listen",
    "connect",
    "interval_s",
    "org",
    "groups",
    "ceiling",
    "default_classification",
    "affiliation",
    "rules",
    "labels",
    "stale_s",
    "min_interval_s",
    *GEO_KEYS,
}
MATCH_KEYS = {"kind", "military", "ids", "icao_range", "mid", "country"}


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedConfig:
    name: str
    kind: str
    url: str | None = None
    path: Path | None = None
    listen: Endpoint | None = None
    connect: Endpoint | None = None
    interval_s: float = 5.0
    org: str
    groups: frozenset[str]
    ceiling: AuthSet
    default_classification: str
    affiliation: str = "u"
    rules: tuple[TrackRule, ...] = ()
    labels: tuple[TrackRule, ...] = ()
    stale_s: float = 60.0
    min_interval_s: float = 1.0
    # geojson and kml: read once (no interval_s) or every interval_s; what features become.
    once: bool = False
    point_type: str = "a-?-G"
    type_property: str | None = None
    label_property: str | None = None
    name_property: str = "name"

    @property
    def geo(self) -> bool:
        return self.kind in GEO_KINDS

    @property
    def listener(self) -> str:
        """What the feed's principal carries as its listener: its gate table's key."""
        return f"feed:{self.name}"


def _positive(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(key, "must be a number greater than 0")
    return float(value)


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a non-empty string")
    return value


def _affiliation(key: str, value: object) -> str:
    if not isinstance(value, str) or value not in AFFILIATIONS:
        raise ConfigError(key, f"must be one of {', '.join(sorted(AFFILIATIONS))}")
    return value


def _rule(key: str, raw: object, gives: str, policy: Policy, ceiling: AuthSet) -> TrackRule:
    """One ``rules`` table (``gives`` = "affiliation") or ``labels`` table ("classification")."""
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table")
    extra = set(raw) - MATCH_KEYS - {gives}
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
    if gives not in raw:
        raise ConfigError(f"{key}.{gives}", "missing")
    level: str | None = None
    if gives == "classification":
        level = raw[gives]
        rank = policy.rank(level)
        top = policy.rank(ceiling.ceiling)
        if rank is None:
            raise ConfigError(f"{key}.classification", "not a classification of the policy")
        if top is None or rank > top:
            raise ConfigError(f"{key}.classification", "above the feed's ceiling")
    kind = raw.get("kind")
    if kind is not None and kind not in ("aircraft", "vessel"):
        raise ConfigError(f"{key}.kind", "must be aircraft or vessel")
    military = raw.get("military")
    if military is not None and not isinstance(military, bool):
        raise ConfigError(f"{key}.military", "must be true or false")
    ids = raw.get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids)
    ):
        raise ConfigError(f"{key}.ids", "must be a list of ICAO hex addresses or MMSIs")
    icao_range = raw.get("icao_range")
    bounds: tuple[int, int] | None = None
    if icao_range is not None:
        try:
            low, high = (int(str(v), 16) for v in icao_range)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.icao_range", "must be [low, high] in hex") from None
        bounds = (low, high)
    mid = raw.get("mid")
    if mid is not None and (
        not isinstance(mid, list) or not all(isinstance(m, int) and 200 <= m <= 799 for m in mid)
    ):
        raise ConfigError(f"{key}.mid", "must be a list of MIDs (201..775)")
    country = raw.get("country")
    countries: frozenset[str] | None = None
    if country is not None:
        if not isinstance(country, list) or not all(isinstance(c, str) for c in country):
            raise ConfigError(f"{key}.country", "must be a list of ISO 3166-1 alpha-2 codes")
        for code in country:
            if code.upper() not in COUNTRIES:
                raise ConfigError(
                    f"{key}.country",
                    f"unknown country code {code!r} (ISO 3166-1 alpha-2, with an ICAO address"
                    " block or a MID: docs/feeds.md)",
                )
        countries = frozenset(c.upper() for c in country)
    return TrackRule(
        affiliation=_affiliation(f"{key}.affiliation", raw[gives]) if level is None else None,
        classification=level,
        kind=kind,
        military=military,
        ids=frozenset(str(i).lower() if isinstance(i, str) else str(i).zfill(9) for i in ids)
        if ids is not None
        else None,
        icao_range=bounds,
        mid=frozenset(mid) if mid is not None else None,
        country=countries,
    )


def parse_feeds(text: str, policy: Policy, *, base_dir: Path) -> list[FeedConfig]:
    """Every ``[feeds.NAME]`` table of the policy file (none when there is no ``[feeds]``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("feeds", f"not valid TOML: {exc}") from exc
    raw_feeds = doc.get("feeds", {})
    if not isinstance(raw_feeds, dict):
        raise ConfigError("feeds", "must be a table of [feeds.NAME] tables")
    feeds: list[FeedConfig] = []
    for name, raw in raw_feeds.items():
        key = f"feeds.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        extra = set(raw) - FEED_KEYS
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{key}.kind", f"must be one of {', '.join(KINDS)}")
        needs = {
            "adsb-http": "url",
            "adsb-file": "path",
            "sbs1-tcp": "connect",
            "ais-udp": "listen",
            "ais-tcp": "connect",
            "geojson": "url",
            "kml": "url",
        }
        geo = kind in GEO_KINDS
        if geo:
            if ("url" in raw) == ("path" in raw):
                raise ConfigError(f"{key}.url", f"kind {kind} needs one of url or path")
            wrong = sorted(set(raw) & TRACK_KEYS)
            if wrong:
                raise ConfigError(f"{key}.{wrong[0]}", f"not used by kind {kind}")
        else:
            if needs[kind] not in raw:
                raise ConfigError(f"{key}.{needs[kind]}", f"missing (needed by kind {kind})")
            wrong = sorted(set(raw) & GEO_KEYS)
            if wrong:
                raise ConfigError(f"{key}.{wrong[0]}", f"only for kinds {', '.join(GEO_KINDS)}")
        point_type = raw.get("point_type", "a-?-G")
        if not isinstance(point_type, str) or not valid_cot_type(point_type.replace("?", "u", 1)):
            raise ConfigError(f"{key}.point_type", "must be a CoT type such as a-?-G or a-f-G-U-C")
        for prop in ("type_property", "label_property", "name_property"):
            if prop in raw:
                _str(f"{key}.{prop}", raw[prop])
        for required in ("org", "ceiling", "default_classification"):
            if required not in raw:
                raise ConfigError(f"{key}.{required}", "missing")
        default = raw["default_classification"]
        if not isinstance(default, str) or policy.rank(default) is None:
            raise ConfigError(f"{key}.default_classification", "not a classification of the policy")
        groups = raw.get("groups", ["__ANON__"])
        if (
            not isinstance(groups, list)
            or not groups
            or not all(isinstance(g, str) for g in groups)
        ):
            raise ConfigError(f"{key}.groups", "must be a non-empty list of group names")
        url = raw.get("url")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{key}.url", "must be an http:// or https:// URL")
        path = raw.get("path")
        ceiling = authset_from_table(policy, raw["ceiling"], f"{key}.ceiling")
        raw_rules = raw.get("rules", [])
        if not isinstance(raw_rules, list):
            raise ConfigError(f"{key}.rules", "must be an array of tables")
        raw_labels = raw.get("labels", [])
        if not isinstance(raw_labels, list):
            raise ConfigError(f"{key}.labels", "must be an array of tables")
        feeds.append(
            FeedConfig(
                name=name,
                kind=kind,
                url=url,
                path=base_dir / _str(f"{key}.path", path) if path is not None else None,
                listen=parse_endpoint(f"{key}.listen", raw.get("listen")),
                connect=parse_endpoint(f"{key}.connect", raw.get("connect")),
                interval_s=_positive(f"{key}.interval_s", raw.get("interval_s", 5.0)),
                once=geo and "interval_s" not in raw,
                point_type=point_type,
                type_property=raw.get("type_property"),
                label_property=raw.get("label_property"),
                name_property=raw.get("name_property", "name"),
                org=_str(f"{key}.org", raw["org"]),
                groups=frozenset(groups),
                ceiling=ceiling,
                default_classification=default,
                affiliation=_affiliation(f"{key}.affiliation", raw.get("affiliation", "u")),
                rules=tuple(
                    _rule(f"{key}.rules[{i}]", r, "affiliation", policy, ceiling)
                    for i, r in enumerate(raw_rules)
                ),
                labels=tuple(
                    _rule(f"{key}.labels[{i}]", r, "classification", policy, ceiling)
                    for i, r in enumerate(raw_labels)
                ),
                stale_s=_positive(
                    f"{key}.stale_s", raw.get("stale_s", GEO_STALE_S if geo else 60.0)
                ),
                min_interval_s=_positive(f"{key}.min_interval_s", raw.get("min_interval_s", 1.0)),
            )
        )
    return feeds
