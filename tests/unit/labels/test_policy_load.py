"""Loading the policy and the authorization mapping from TOML; resolving a certificate."""

from __future__ import annotations

import pytest

from liaison.errors import ConfigError
from liaison.model.labels import (
    AuthSet,
    CategoryType,
    decide,
    full_authset,
    intersect_auths,
    label_from_banner,
)
from liaison.model.policy import (
    authset_from_table,
    load_auth_config,
    load_policy,
    resolve_authorizations,
    resolve_principal,
)

from .labels_support import AUTHZ, EXAMPLE_TOML, POLICY, auths

USA_CA = "11" * 32
UKR_CA = "22" * 32
SECRET_LISTENER = full_authset(POLICY, "SECRET")


def test_example_policy() -> None:
    assert POLICY.id == "LIAISON-USA-UKR"
    assert POLICY.version == 1
    assert POLICY.classifications == ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET")
    assert [(c.name, c.type, c.required) for c in POLICY.categories] == [
        ("HANDLING", CategoryType.RESTRICTIVE, False),
        ("REL", CategoryType.PERMISSIVE, True),
        ("TLP", CategoryType.INFORMATIVE, False),
    ]
    assert POLICY.rel.values == ("USA", "UKR", "LIAISON")
    assert POLICY.rank("SECRET") == 3 and POLICY.rank("TOP SECRET") is None


def test_digest_identifies_the_policy() -> None:
    assert load_policy(EXAMPLE_TOML).digest == POLICY.digest
    reordered = EXAMPLE_TOML.replace('values = ["ORCON", "ALPHA"]', 'values = ["ALPHA", "ORCON"]')
    assert load_policy(reordered).digest != POLICY.digest


MINIMAL = """
[policy]
id = "P"
version = 1
classifications = ["U", "S"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA"]
"""


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("", "not toml = = ="), "policy"),
        (('id = "P"', ""), "policy.id"),
        (('id = "P"', 'id = "P Q"'), "policy.id"),
        (('id = "P"', "id = 7"), "policy.id"),
        (("version = 1", 'version = "1"'), "policy.version"),
        (("version = 1", "version = 0"), "policy.version"),
        (("version = 1", "version = 1\nuri = 'http://x'"), "policy.uri"),
        (("version = 1", "version = 1\nextra = 1"), "policy.extra"),
        (('["U", "S"]', "[]"), "policy.classifications"),
        (('["U", "S"]', '["U", "U"]'), "policy.classifications"),
        (('["U", "S"]', '["U", "secret"]'), "policy.classifications"),
        (('["U", "S"]', '["U", "S//X"]'), "policy.classifications"),
        (('["U", "S"]', '"U"'), "policy.classifications"),
        (('type = "PERMISSIVE"', 'type = "permissive"'), "policy.categories.REL.type"),
        (('type = "PERMISSIVE"', 'type = "RESTRICTIVE"'), "policy.categories.REL"),
        (("required = true", "required = false"), "policy.categories.REL"),
        (("required = true", 'required = "yes"'), "policy.categories.REL.required"),
        (('values = ["USA"]', "values = []"), "policy.categories.REL.values"),
        (('values = ["USA"]', 'values = ["USA", "USA"]'), "policy.categories.REL.values"),
        (('values = ["USA"]', 'values = ["usa"]'), "policy.categories.REL.values"),
        (('values = ["USA"]', 'values = ["U\u0405A"]'), "policy.categories.REL.values"),
        (('values = ["USA"]', 'values = ["USA"]\ncolour = "red"'), "policy.categories.REL.colour"),
        (('values = ["USA"]', ""), "policy.categories.REL.values"),
        (("[policy.categories.REL]", "[policy.categories.RELX]"), "policy.categories.REL"),
        (("[policy.categories.REL]", "[policy.categories.rel]"), "policy.categories.rel"),
        (
            ('values = ["USA"]', 'values = ["USA"]\nbanner_prefix = "rel to "'),
            "policy.categories.REL.banner_prefix",
        ),
    ],
)
def test_bad_policy_names_the_key(change: tuple[str, str], key: str) -> None:
    old, new = change
    text = MINIMAL.replace(old, new, 1) if old else new
    with pytest.raises(ConfigError) as exc:
        load_policy(text)
    assert exc.value.key == key


def test_banner_prefixes_must_not_shadow_each_other() -> None:
    text = MINIMAL + (
        '\n[policy.categories.RELX]\ntype = "INFORMATIVE"\nvalues = ["A"]\n'
        'banner_prefix = "REL TO X "\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_policy(text)
    assert exc.value.key == "policy.categories.RELX.banner_prefix"


def test_missing_policy_table() -> None:
    with pytest.raises(ConfigError) as exc:
        load_policy("[authz]\n")
    assert exc.value.key == "policy"


# --- authorizations -------------------------------------------------------------------------


def test_profiles_and_cas_from_the_example() -> None:
    assert set(AUTHZ.profiles) == {"usa-secret", "usa-unclass", "ukr-secret", "ukr-unclass"}
    assert AUTHZ.profiles["usa-secret"] == auths(
        "SECRET", REL=["USA", "LIAISON"], HANDLING=["ORCON"]
    )
    ukr = AUTHZ.ca_by_fingerprint(":".join(["22"] * 32).upper())
    assert ukr is not None and ukr.org == "UKR" and ukr.sha256 == UKR_CA
    assert AUTHZ.cas[0].ceiling.held["HANDLING"] == frozenset({"ORCON", "ALPHA"})  # "*"


@pytest.mark.parametrize(
    ("fingerprint", "subject", "listener", "org", "profile", "expected"),
    [
        (
            USA_CA,
            {"CN": "usa-alice", "OU": "ops-secret", "O": "US Army"},
            SECRET_LISTENER,
            "USA",
            "usa-secret",
            auths("SECRET", REL=["USA", "LIAISON"], HANDLING=["ORCON"]),
        ),
        (
            USA_CA,
            {"CN": "usa-bob"},
            SECRET_LISTENER,
            "USA",
            "usa-unclass",
            auths("UNCLASSIFIED", REL=["USA", "LIAISON"]),
        ),
        (
            UKR_CA,
            {"CN": "ukr-olena", "OU": "lno-secret"},
            full_authset(POLICY, "CONFIDENTIAL"),
            "UKR",
            "ukr-secret",
            auths("CONFIDENTIAL", REL=["UKR", "LIAISON"]),
        ),
        (
            UKR_CA,
            {"CN": "ukr-olena", "OU": "lno-secret"},
            auths("SECRET", REL=["LIAISON"]),
            "UKR",
            "ukr-secret",
            auths("SECRET", REL=["LIAISON"]),
        ),
    ],
)
def test_resolution_intersects_profile_ca_and_listener(
    fingerprint: str,
    subject: dict[str, str],
    listener: AuthSet,
    org: str,
    profile: str,
    expected: AuthSet,
) -> None:
    resolution = resolve_principal(AUTHZ, fingerprint, subject, listener)
    assert (resolution.org, resolution.profile, resolution.reason) == (org, profile, "ok")
    assert resolution.auths == expected
    assert resolve_authorizations(AUTHZ, fingerprint, subject, listener) == expected


def test_a_ca_cannot_mint_another_orgs_user() -> None:
    # A UKR-issued certificate claiming the USA secret OU gets no USA rule: rules are per CA,
    # and the org is the CA's.
    resolution = resolve_principal(
        AUTHZ, UKR_CA, {"CN": "usa-mallory", "OU": "ops-secret", "O": "USA"}, SECRET_LISTENER
    )
    assert resolution.reason == "no_matching_rule"
    assert resolution.org == "UKR"
    assert resolution.auths.ceiling is None and not resolution.auths.held


def test_unknown_ca_and_no_rule_read_nothing() -> None:
    unknown = resolve_principal(AUTHZ, "33" * 32, {"CN": "usa-x"}, SECRET_LISTENER)
    assert (unknown.reason, unknown.org, unknown.auths.ceiling) == ("unknown_ca", None, None)
    # Regexes match the whole attribute, and values are case-sensitive.
    for subject in ({"CN": "USA-bob"}, {"CN": "usa-bob x"}, {"CN": "xusa-bob"}, {}):
        assert resolve_principal(AUTHZ, USA_CA, subject, SECRET_LISTENER).reason == (
            "no_matching_rule"
        )


def test_ca_ceiling_caps_a_generous_profile() -> None:
    # The UKR CA holds no HANDLING values, so even a profile granting ORCON cannot pass it on.
    text = EXAMPLE_TOML.replace(
        '[authz.profiles.ukr-secret]\nclassification = "SECRET"\nREL = ["UKR", "LIAISON"]',
        '[authz.profiles.ukr-secret]\nclassification = "SECRET"\nREL = ["UKR", "LIAISON"]\n'
        'HANDLING = ["ORCON"]',
    )
    config = load_auth_config(text, POLICY)
    assert config.profiles["ukr-secret"].held["HANDLING"] == frozenset({"ORCON"})
    got = resolve_authorizations(config, UKR_CA, {"OU": "lno-secret"}, SECRET_LISTENER)
    assert "HANDLING" not in got.held


AUTHZ_MIN = """
[authz.profiles.p]
classification = "SECRET"
REL = ["USA"]
[[authz.cas]]
name = "ca"
sha256 = "%s"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
[[authz.rules]]
ca = "ca"
profile = "p"
subject = { OU = "x" }
""" % ("ab" * 32)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("[authz.profiles.p]", "[authz.profiles.p]\nlevel = 1"), "authz.profiles.p.level"),
        (('REL = ["USA"]', 'REL = ["FRA"]'), "authz.profiles.p.REL"),
        (('REL = ["USA"]', 'REL = "USA"'), "authz.profiles.p.REL"),
        (
            ('classification = "SECRET"\nREL', 'classification = "TS"\nREL'),
            "authz.profiles.p.classification",
        ),
        (('sha256 = "' + "ab" * 32, 'sha256 = "' + "ab" * 31), "authz.cas[0].sha256"),
        (('sha256 = "' + "ab" * 32, 'sha256 = "' + "zz" * 32), "authz.cas[0].sha256"),
        (('org = "USA"', 'org = "FRA"'), "authz.cas[0].org"),
        (('org = "USA"', 'org = "USA"\ntrust = "all"'), "authz.cas[0].trust"),
        (('name = "ca"', 'name = "c a"'), "authz.cas[0].name"),
        (("ceiling = {", "ceilin = {"), "authz.cas[0].ceilin"),
        (('ca = "ca"', 'ca = "other"'), "authz.rules[0].ca"),
        (('profile = "p"', 'profile = "q"'), "authz.rules[0].profile"),
        (
            ('subject = { OU = "x" }', 'subject_regex = { CN = "(" }'),
            "authz.rules[0].subject_regex.CN",
        ),
        (('subject = { OU = "x" }', "subject = { OU = 1 }"), "authz.rules[0].subject.OU"),
        (("[[authz.rules]]", "[[authz.rule]]"), "authz.rule"),
    ],
)
def test_bad_authz_names_the_key(change: tuple[str, str], key: str) -> None:
    text = AUTHZ_MIN.replace(change[0], change[1], 1)
    with pytest.raises(ConfigError) as exc:
        load_auth_config(text, POLICY)
    assert exc.value.key == key


def test_duplicate_cas_are_refused() -> None:
    twice = AUTHZ_MIN.replace(
        "[[authz.rules]]",
        '[[authz.cas]]\nname = "ca2"\nsha256 = "%s"\norg = "UKR"\n'
        'ceiling = { classification = "SECRET" }\n[[authz.rules]]' % ("AB" * 32),
    )
    with pytest.raises(ConfigError) as exc:
        load_auth_config(twice, POLICY)
    assert exc.value.key == "authz.cas[1].sha256"


def test_authset_from_table_and_intersection() -> None:
    ceiling = authset_from_table(POLICY, {"classification": "CONFIDENTIAL", "REL": "*"}, "l")
    assert ceiling == auths("CONFIDENTIAL", REL=["USA", "UKR", "LIAISON"])
    profile = auths("SECRET", REL=["USA"], HANDLING=["ORCON"])
    assert intersect_auths(POLICY, profile, ceiling) == auths("CONFIDENTIAL", REL=["USA"])
    other_policy = AuthSet(policy_id="NATO", ceiling="SECRET", held={})
    assert intersect_auths(POLICY, profile, other_policy).ceiling is None
    assert intersect_auths(POLICY).ceiling is None
    with pytest.raises(ConfigError):
        authset_from_table(POLICY, ["SECRET"], "l")


# The matrix printed in docs/labels.md section 1, checked end to end: certificate -> AuthSet ->
# decision on a parsed banner.
CLIENTS = {
    "usa-secret": (USA_CA, {"CN": "usa-a", "OU": "ops-secret"}),
    "usa-unclass": (USA_CA, {"CN": "usa-b"}),
    "ukr-secret": (UKR_CA, {"CN": "ukr-c", "OU": "lno-secret"}),
    "ukr-unclass": (UKR_CA, {"CN": "ukr-d"}),
}
MATRIX = [
    ("SECRET//REL TO USA, UKR", (True, False, True, False)),
    ("SECRET//REL TO USA", (True, False, False, False)),
    ("SECRET//HANDLING ORCON//REL TO USA, UKR", (True, False, False, False)),
    ("UNCLASSIFIED//REL TO LIAISON", (True, True, True, True)),
    ("CONFIDENTIAL//REL TO UKR", (False, False, True, False)),
]


@pytest.mark.parametrize(("banner", "expected"), MATRIX)
def test_documented_delivery_matrix(banner: str, expected: tuple[bool, ...]) -> None:
    label = label_from_banner(POLICY, banner, originator="USA", created_ms=0)
    got = tuple(
        decide(POLICY, label, resolve_authorizations(AUTHZ, fp, subject, SECRET_LISTENER)).permit
        for fp, subject in CLIENTS.values()
    )
    assert got == expected
