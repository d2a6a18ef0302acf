"""The write rules: ingest (what a sender may assert), the dominant label, and relabelling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.model.labels import (
    Label,
    LabelError,
    RelabelDirection,
    check_ingest,
    check_relabel,
    decide,
    dominant,
    dominates,
    listener_default_label,
)

from .labels_support import POLICY, T0, auths, authsets, lab, labels, near_authsets

USA_S = auths("SECRET", REL=["USA", "LIAISON"], HANDLING=["ORCON"])
USA_U = auths("UNCLASSIFIED", REL=["USA", "LIAISON"])
UKR_C = auths("CONFIDENTIAL", REL=["UKR", "LIAISON"])
DEFAULT = listener_default_label(POLICY, "SECRET", T0, originator="USA")


# --- ingest ---------------------------------------------------------------------------------


def test_unlabelled_gets_the_default_capped_and_org_internal() -> None:
    result = check_ingest(POLICY, None, UKR_C, "UKR", DEFAULT)
    assert result.accepted and result.defaulted and result.reasons == ()
    assert result.label == lab("CONFIDENTIAL", REL=["UKR"], originator="UKR")
    full = check_ingest(POLICY, None, USA_S, "USA", DEFAULT)
    assert full.label == lab("SECRET", REL=["USA"])


def test_unlabelled_without_default_is_rejected() -> None:
    result = check_ingest(POLICY, None, USA_S, "USA", None)
    assert not result.accepted and result.label is None
    assert result.reasons == ("no_label",)


def test_default_the_sender_could_not_read_is_rejected() -> None:
    orcon_default = lab("SECRET", REL=["USA"], HANDLING=["ORCON"])
    result = check_ingest(POLICY, None, UKR_C, "UKR", orcon_default)
    assert not result.accepted
    assert result.reasons == ("default_not_readable", "restrictive_not_held:HANDLING")
    nobody = check_ingest(POLICY, None, auths(None), "UKR", DEFAULT)
    assert nobody.reasons == ("default_not_readable", "no_clearance")


@pytest.mark.parametrize(
    ("label", "sender", "org", "reasons"),
    [
        (lab("SECRET", REL=["USA", "UKR"]), USA_S, "USA", ()),
        (lab("UNCLASSIFIED", REL=["USA", "UKR"], originator="UKR"), UKR_C, "UKR", ()),
        (
            lab("SECRET", REL=["USA", "UKR"]),
            USA_U,
            "USA",
            ("not_readable_by_sender", "class_exceeds"),
        ),
        (
            lab("CONFIDENTIAL", REL=["UKR"], HANDLING=["ORCON"], originator="UKR"),
            UKR_C,
            "UKR",
            ("not_readable_by_sender", "restrictive_not_held:HANDLING"),
        ),
        (
            lab("CONFIDENTIAL", REL=["LIAISON"], originator="UKR"),
            UKR_C,
            "UKR",
            ("excludes_sender_org",),
        ),
        (
            lab("CONFIDENTIAL", REL=["USA"], originator="UKR"),
            UKR_C,
            "UKR",
            ("excludes_sender_org", "not_readable_by_sender", "permissive_not_held:REL"),
        ),
        (
            lab("CONFIDENTIAL", REL=["USA", "UKR"], originator="USA"),
            UKR_C,
            "UKR",
            ("originator_mismatch",),
        ),
        (lab("SECRET", REL=[]), USA_S, "USA", ("empty_category:REL",)),
        (lab("SECRET", REL=["USA"]), USA_S, "FRA", ("bad_sender_org",)),
    ],
)
def test_asserted_labels(label: Label, sender: object, org: str, reasons: tuple[str, ...]) -> None:
    result = check_ingest(POLICY, label, sender, org, DEFAULT)  # type: ignore[arg-type]
    assert result.reasons == reasons
    assert result.accepted is (reasons == ())
    assert result.label == (label if not reasons else None)
    assert not result.defaulted


def test_resharing_a_partner_item_keeps_the_partner_originator() -> None:
    stored = lab("UNCLASSIFIED", REL=["USA", "UKR"], originator="UKR")
    # By default only the originating organisation changes its items.
    refused = check_ingest(POLICY, stored, USA_S, "USA", DEFAULT, prior=stored)
    assert refused.reasons == ("other_org_item",)
    # With partner updates allowed, a USA client re-sends the UKR marker it received: the
    # stored label says UKR originated it; raising it is allowed, lowering it is a relabel.
    resent = check_ingest(POLICY, stored, USA_S, "USA", DEFAULT, prior=stored, partner_updates=True)
    assert resent.accepted
    raised = lab("CONFIDENTIAL", REL=["USA", "UKR"], originator="UKR")
    assert check_ingest(
        POLICY, raised, USA_S, "USA", DEFAULT, prior=stored, partner_updates=True
    ).accepted
    # The originator of an item never changes, even when a partner may update it.
    taken = lab("CONFIDENTIAL", REL=["USA", "UKR"], originator="USA")
    taken_over = check_ingest(
        POLICY, taken, USA_S, "USA", DEFAULT, prior=stored, partner_updates=True
    )
    assert taken_over.reasons == ("originator_mismatch",)
    secret = lab("SECRET", REL=["USA", "UKR"])
    widened = lab("SECRET", REL=["USA", "UKR", "LIAISON"])
    lowered = check_ingest(POLICY, widened, USA_S, "USA", DEFAULT, prior=secret)
    assert lowered.reasons == ("lowers_prior_label",)
    # Without the stored label, another org's originator is refused.
    assert check_ingest(POLICY, stored, USA_S, "USA", DEFAULT).reasons == ("originator_mismatch",)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_whatever_ingest_accepts_the_sender_can_read(data: st.DataObject) -> None:
    label = data.draw(st.none() | labels(POLICY))
    sender = data.draw(authsets(POLICY) | near_authsets(POLICY, label or DEFAULT))
    org = data.draw(st.sampled_from(POLICY.rel.values))
    default = data.draw(st.none() | st.just(DEFAULT))
    result = check_ingest(POLICY, label, sender, org, default)
    if result.accepted:
        assert result.label is not None
        assert decide(POLICY, result.label, sender).permit
        assert org in result.label.categories["REL"]
        assert result.defaulted == (label is None)
    else:
        assert result.label is None and result.reasons


# --- updates of a stored item (the rules hold for labelled and unlabelled events alike) --------

USA_SECRET_ITEM = lab("SECRET", REL=["USA"])
SHARED_ITEM = lab("UNCLASSIFIED", REL=["USA", "UKR"])


def test_an_unlabelled_update_keeps_the_stored_label() -> None:
    # ATAK never sends labels: moving a labelled marker must not relabel it to the default.
    moved = check_ingest(POLICY, None, USA_S, "USA", DEFAULT, prior=USA_SECRET_ITEM)
    assert moved.accepted and moved.kept and not moved.defaulted
    assert moved.label == USA_SECRET_ITEM
    low_default = listener_default_label(POLICY, "UNCLASSIFIED", T0, originator="USA")
    still = check_ingest(POLICY, None, USA_S, "USA", low_default, prior=USA_SECRET_ITEM)
    assert still.label == USA_SECRET_ITEM
    # No default on the listener does not matter: the stored label is the label.
    assert check_ingest(POLICY, None, USA_S, "USA", None, prior=USA_SECRET_ITEM).accepted


def test_an_item_the_sender_may_not_see_cannot_be_changed() -> None:
    # Another organisation: refused without saying why (the hidden label stays hidden).
    for label in (None, lab("CONFIDENTIAL", REL=["UKR"], originator="UKR")):
        for partners in (False, True):
            result = check_ingest(
                POLICY,
                label,
                UKR_C,
                "UKR",
                DEFAULT,
                prior=USA_SECRET_ITEM,
                partner_updates=partners,
            )
            assert result.reasons == ("prior_not_visible",) and result.label is None
    # The same organisation, below the item's classification: refused too.
    low = check_ingest(POLICY, None, USA_U, "USA", DEFAULT, prior=USA_SECRET_ITEM)
    assert low.reasons == ("prior_not_visible",)


def test_partners_change_items_they_see_only_when_the_policy_says_so() -> None:
    refused = check_ingest(POLICY, None, UKR_C, "UKR", DEFAULT, prior=SHARED_ITEM)
    assert refused.reasons == ("other_org_item",)
    allowed = check_ingest(
        POLICY, None, UKR_C, "UKR", DEFAULT, prior=SHARED_ITEM, partner_updates=True
    )
    assert allowed.accepted and allowed.kept and allowed.label == SHARED_ITEM
    # Another principal of the originating organisation who may see it: allowed.
    same_org = check_ingest(POLICY, None, USA_U, "USA", DEFAULT, prior=SHARED_ITEM)
    assert same_org.accepted and same_org.label == SHARED_ITEM


def test_a_labelled_update_may_not_lower_or_widen_the_stored_label() -> None:
    widened = lab("SECRET", REL=["USA", "UKR"])
    lowered = lab("UNCLASSIFIED", REL=["USA"])
    for label in (widened, lowered):
        result = check_ingest(POLICY, label, USA_S, "USA", DEFAULT, prior=USA_SECRET_ITEM)
        assert result.reasons == ("lowers_prior_label",)
    raised = lab("SECRET", REL=["USA"], HANDLING=["ORCON"])
    assert check_ingest(POLICY, raised, USA_S, "USA", DEFAULT, prior=USA_SECRET_ITEM).accepted


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_an_accepted_update_never_lowers_nor_changes_hands(data: st.DataObject) -> None:
    prior = data.draw(labels(POLICY))
    label = data.draw(st.none() | labels(POLICY))
    sender = data.draw(authsets(POLICY) | near_authsets(POLICY, prior))
    org = data.draw(st.sampled_from(POLICY.rel.values))
    partners = data.draw(st.booleans())
    result = check_ingest(
        POLICY, label, sender, org, DEFAULT, prior=prior, partner_updates=partners
    )
    if not result.accepted:
        assert result.label is None and result.reasons
        return
    assert result.label is not None
    assert decide(POLICY, prior, sender).permit, "the sender could see the stored item"
    assert partners or org == prior.originator
    assert dominates(POLICY, result.label, prior)
    assert result.label.originator == prior.originator
    assert decide(POLICY, result.label, sender).permit
    assert result.kept == (label is None)


# --- dominant ---------------------------------------------------------------------------------


def test_dominant_of_a_data_package() -> None:
    parts = [
        lab("UNCLASSIFIED", REL=["USA", "UKR", "LIAISON"], TLP=["GREEN"]),
        lab("SECRET", REL=["USA", "UKR"], created_ms=T0 + 10),
        lab("CONFIDENTIAL", REL=["USA", "UKR"], HANDLING=["ORCON"], TLP=["AMBER"]),
    ]
    top = dominant(POLICY, parts)
    assert top == lab(
        "SECRET",
        REL=["USA", "UKR"],
        HANDLING=["ORCON"],
        TLP=["GREEN", "AMBER"],
        created_ms=T0 + 10,
    )


def test_dominant_with_no_common_audience_is_releasable_to_nobody() -> None:
    top = dominant(
        POLICY,
        [lab("SECRET", REL=["USA"]), lab("SECRET", REL=["UKR"], originator="UKR")],
        originator="USA",
    )
    assert top.categories["REL"] == frozenset()
    everyone = auths("SECRET", REL=["USA", "UKR", "LIAISON"], HANDLING=["ORCON", "ALPHA"])
    assert decide(POLICY, top, everyone).reasons == ("empty_category:REL",)


def test_dominant_errors() -> None:
    with pytest.raises(LabelError) as exc:
        dominant(POLICY, [])
    assert exc.value.reason == "no_labels"
    mixed = [lab("SECRET", REL=["USA", "UKR"]), lab("SECRET", REL=["UKR"], originator="UKR")]
    with pytest.raises(LabelError) as exc:
        dominant(POLICY, mixed)
    assert exc.value.reason == "originator_required"
    with pytest.raises(LabelError) as exc:
        dominant(POLICY, [lab("SECRET", REL=["FRA"])])
    assert exc.value.reason == "unknown_value:REL"


# --- relabel ----------------------------------------------------------------------------------

OLD = lab("SECRET", REL=["USA"], HANDLING=["ORCON"])


def relabel(
    new: Label,
    *,
    actor: object = USA_S,
    org: str = "USA",
    authority: bool = False,
    why: str | None = None,
    old: Label = OLD,
) -> tuple[bool, RelabelDirection, tuple[str, ...]]:
    result = check_relabel(
        POLICY,
        old,
        new,
        actor_auths=actor,  # type: ignore[arg-type]
        actor_org=org,
        release_authority=authority,
        justification=why,
    )
    return result.allowed, result.direction, result.reasons


def test_raising_is_open_to_writers() -> None:
    new = lab("SECRET", REL=["USA"], HANDLING=["ORCON"], TLP=["RED"], created_ms=T0 + 1)
    assert relabel(new) == (True, RelabelDirection.UNCHANGED, ())
    lower_start = lab("CONFIDENTIAL", REL=["USA", "UKR"])
    assert relabel(OLD, old=lower_start) == (True, RelabelDirection.RAISE, ())


def test_raising_needs_read_access_to_both_labels() -> None:
    start = lab("UNCLASSIFIED", REL=["USA"])
    assert relabel(lab("SECRET", REL=["USA"]), actor=USA_U, old=start) == (
        False,
        RelabelDirection.RAISE,
        ("actor_cannot_read_new",),
    )


@pytest.mark.parametrize(
    "new",
    [
        lab("CONFIDENTIAL", REL=["USA"], HANDLING=["ORCON"]),  # lower class
        lab("SECRET", REL=["USA"]),  # drop a restrictive value
        lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"]),  # widen REL
        lab("CONFIDENTIAL", REL=["USA", "UKR"], HANDLING=["ORCON", "ALPHA"]),  # mixed
    ],
)
def test_lowering_needs_originator_release_authority_and_justification(new: Label) -> None:
    everything = auths("SECRET", REL=["USA"], HANDLING=["ORCON", "ALPHA"])
    allowed, direction, reasons = relabel(new, actor=everything)
    assert direction is RelabelDirection.LOWER
    assert not allowed
    assert reasons == ("release_authority_required", "justification_required")
    ok = relabel(new, actor=everything, authority=True, why="FDO release ticket 42")
    assert ok == (True, RelabelDirection.LOWER, ())
    blank = relabel(new, actor=everything, authority=True, why="   ")
    assert blank[2] == ("justification_required",)


def test_a_partner_cannot_lower_our_label() -> None:
    shared = lab("SECRET", REL=["USA", "UKR"])
    wider = lab("SECRET", REL=["USA", "UKR", "LIAISON"])
    ukr_officer = auths("SECRET", REL=["UKR"])
    assert relabel(wider, actor=ukr_officer, org="UKR", authority=True, why="x", old=shared) == (
        False,
        RelabelDirection.LOWER,
        ("not_originator_org",),
    )


def test_relabel_refuses_invalid_labels_and_originator_changes() -> None:
    assert relabel(lab("SECRET", REL=[]))[2] == ("empty_category:REL",)
    assert relabel(OLD, old=lab("SECRET", REL=["FRA"]))[2] == ("invalid_old",)
    moved = lab("SECRET", REL=["USA"], HANDLING=["ORCON"], originator="UKR")
    assert relabel(moved)[2] == ("originator_changed",)
    long_reason = relabel(OLD, why="x" * 2000)
    assert long_reason[2] == ("justification_too_long",)
