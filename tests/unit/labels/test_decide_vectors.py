"""Table-driven vectors for decide(): (label, authorizations) -> permit and exact reason codes.

Policy: examples/policy.toml (UNCLASSIFIED < RESTRICTED < CONFIDENTIAL < SECRET; HANDLING
RESTRICTIVE {ORCON, ALPHA}; REL PERMISSIVE required {USA, UKR, LIAISON}; TLP INFORMATIVE).
In the style of spiffing's test-data/tests.xml: one row per case, the invalid-label families
(incomplete, contradictory, close-but-wrong, gibberish) grouped at the end.
"""

from __future__ import annotations

import pytest

from liaison.model.labels import AuthSet, Label, decide
from liaison.model.labels import decision as labels_module

from .labels_support import POLICY, T0, auths, lab

USA_S = auths("SECRET", REL=["USA", "LIAISON"], HANDLING=["ORCON"])
USA_U = auths("UNCLASSIFIED", REL=["USA", "LIAISON"])
UKR_S = auths("SECRET", REL=["UKR", "LIAISON"])
UKR_U = auths("UNCLASSIFIED", REL=["UKR", "LIAISON"])
UKR_C = auths("CONFIDENTIAL", REL=["UKR"])
NOBODY = auths(None)

ACCESS_VECTORS = [
    pytest.param(lab("SECRET", REL=["USA", "UKR"]), USA_S, True, (), id="rel-both-usa-secret"),
    pytest.param(lab("SECRET", REL=["USA", "UKR"]), UKR_S, True, (), id="rel-both-ukr-secret"),
    pytest.param(
        lab("SECRET", REL=["USA"]), UKR_S, False, ("permissive_not_held:REL",), id="usa-only"
    ),
    pytest.param(
        lab("SECRET", REL=["USA", "UKR"]), UKR_U, False, ("class_exceeds",), id="above-ceiling"
    ),
    pytest.param(lab("CONFIDENTIAL", REL=["UKR"]), UKR_C, True, (), id="at-ceiling"),
    pytest.param(
        lab("SECRET", REL=["UKR"]), UKR_C, False, ("class_exceeds",), id="one-above-ceiling"
    ),
    pytest.param(lab("UNCLASSIFIED", REL=["LIAISON"]), UKR_U, True, (), id="community"),
    pytest.param(
        lab("UNCLASSIFIED", REL=["LIAISON"]),
        UKR_C,
        False,
        ("permissive_not_held:REL",),
        id="community-not-held",
    ),
    pytest.param(
        lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"]),
        UKR_S,
        False,
        ("restrictive_not_held:HANDLING",),
        id="orcon-partner",
    ),
    pytest.param(
        lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"]), USA_S, True, (), id="orcon-holder"
    ),
    pytest.param(
        lab("SECRET", REL=["USA"], HANDLING=["ORCON", "ALPHA"]),
        USA_S,
        False,
        ("restrictive_not_held:HANDLING",),
        id="restrictive-needs-all",
    ),
    pytest.param(
        lab("RESTRICTED", REL=["USA"], TLP=["RED"]),
        USA_U,
        False,
        ("class_exceeds",),
        id="informative-does-not-help",
    ),
    pytest.param(
        lab("UNCLASSIFIED", REL=["USA"], TLP=["RED"]), USA_U, True, (), id="informative-ignored"
    ),
    pytest.param(
        lab("SECRET", REL=["UKR"], HANDLING=["ALPHA"]),
        USA_U,
        False,
        ("class_exceeds", "restrictive_not_held:HANDLING", "permissive_not_held:REL"),
        id="every-reason-reported",
    ),
    pytest.param(
        lab("UNCLASSIFIED", REL=["USA"]),
        NOBODY,
        False,
        ("no_clearance", "permissive_not_held:REL"),
        id="no-clearance",
    ),
    pytest.param(
        lab("UNCLASSIFIED", REL=["USA"]),
        AuthSet(policy_id="NATO", ceiling="SECRET", held={"REL": frozenset({"USA"})}),
        False,
        ("auths_policy_mismatch",),
        id="auths-other-policy",
    ),
    pytest.param(
        lab("UNCLASSIFIED", REL=["USA"]),
        AuthSet(policy_id=POLICY.id, ceiling="COSMIC", held={"REL": frozenset({"USA"})}),
        False,
        ("no_clearance",),
        id="auths-unknown-ceiling",
    ),
]


def _raw(classification: str, categories: dict[str, set[str]], **kw: object) -> Label:
    fields: dict[str, object] = {
        "policy_id": POLICY.id,
        "originator": "USA",
        "created_ms": T0,
    } | kw
    return Label(classification=classification, categories=categories, **fields)  # type: ignore[arg-type]


INVALID_VECTORS = [
    # incomplete
    pytest.param(_raw("SECRET", {}), ("missing_required:REL",), id="incomplete-no-rel"),
    pytest.param(
        _raw("SECRET", {"REL": set()}), ("empty_category:REL",), id="incomplete-empty-rel"
    ),
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}, "HANDLING": set()}),
        ("empty_category:HANDLING",),
        id="incomplete-empty-handling",
    ),
    # contradictory: another policy, an originator outside the policy's organisations
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}}, policy_id="NATO"), ("policy_mismatch",), id="other-policy"
    ),
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}}, originator="LIAISONX"),
        ("bad_originator",),
        id="originator",
    ),
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}}, created_ms=-1), ("bad_created",), id="created-negative"
    ),
    # close but wrong
    pytest.param(_raw("Secret", {"REL": {"USA"}}), ("unknown_classification",), id="close-case"),
    pytest.param(_raw("SECRET ", {"REL": {"USA"}}), ("unknown_classification",), id="close-space"),
    pytest.param(_raw("TOP SECRET", {"REL": {"USA"}}), ("unknown_classification",), id="close-ts"),
    pytest.param(_raw("SECRET", {"REL": {"usa"}}), ("unknown_value:REL",), id="close-lowercase"),
    pytest.param(
        _raw("SECRET", {"REL": {"U\u041aR"}}), ("unknown_value:REL",), id="close-homoglyph-K"
    ),
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}, "Rel": {"UKR"}}),
        ("unknown_category",),  # not a well-formed tag: kept out of the reason code
        id="close-tag-case",
    ),
    pytest.param(
        _raw("SECRET", {"REL": {"USA"}, "HANDLING": {"NOFORN"}}),
        ("unknown_value:HANDLING",),
        id="close-foreign-control",
    ),
    # gibberish
    pytest.param(
        _raw("", {"\x00<x>": {"\U0001f600"}}),
        ("unknown_classification", "unknown_category", "missing_required:REL"),
        id="gibberish",
    ),
]


@pytest.mark.parametrize(("label", "auth", "permit", "reasons"), ACCESS_VECTORS)
def test_access_vectors(
    label: Label, auth: AuthSet, permit: bool, reasons: tuple[str, ...]
) -> None:
    decision = decide(POLICY, label, auth)
    assert decision.permit is permit
    assert decision.reasons == reasons


@pytest.mark.parametrize(("label", "reasons"), INVALID_VECTORS)
def test_invalid_labels_deny_everyone(label: Label, reasons: tuple[str, ...]) -> None:
    everything = auths(
        "SECRET", REL=["USA", "UKR", "LIAISON"], HANDLING=["ORCON", "ALPHA"], Rel=["UKR"]
    )
    decision = decide(POLICY, label, everything)
    assert decision.permit is False
    assert decision.reasons == reasons


def test_missing_label_and_auths_deny() -> None:
    assert decide(POLICY, None, USA_S).reasons == ("no_label",)
    assert decide(POLICY, "SECRET//REL TO USA", USA_S).reasons == ("no_label",)  # type: ignore[arg-type]
    assert decide(POLICY, lab("SECRET", REL=["USA"]), None).reasons == ("invalid_auths",)


def test_internal_error_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> tuple[str, ...]:
        raise RuntimeError("bug")

    monkeypatch.setattr(labels_module, "validate_label", broken)
    decision = decide(POLICY, lab("UNCLASSIFIED", REL=["USA"]), USA_S)
    assert decision.permit is False
    assert decision.reasons == ("internal_error",)
