"""Hypothesis properties of the label model (labels.md 7g, P1-P7).

P1 agreement with an independent reference ACDF; P2 monotone in the authorizations; P3 a
stricter label never gains access; P4 soundness of the dominant label; P5 round trips of all
four formats; P6 the canonical id; P7 totality of decide() and of every parser, plus a short
fuzz of the parsers on arbitrary and on mutated text.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liaison.model.labels import (
    AuthSet,
    CategoryType,
    Label,
    LabelError,
    Policy,
    decide,
    dominant,
    dominates,
    label_from_banner,
    label_from_detail,
    label_from_json,
    label_from_seclabel_xml,
    label_from_stanag4774,
    label_to_banner,
    label_to_json,
    label_to_stanag4774,
    seclabel_to_xml,
    validate_label,
)

from .labels_support import (
    POLICY,
    T0,
    authsets,
    invalid_labels,
    labels,
    minimal_authset,
    near_authsets,
    oracle_permits,
    policies,
    widen,
)

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None)


@st.composite
def policy_label_auths(
    draw: st.DrawFn, *, valid_only: bool = False
) -> tuple[Policy, Label, AuthSet]:
    policy = draw(policies())
    strategy = labels(policy) if valid_only else labels(policy) | invalid_labels(policy)
    label = draw(strategy)
    return policy, label, draw(authsets(policy) | near_authsets(policy, label))


# --- P1: agreement with the reference implementation -----------------------------------------


@PROPS
@given(policy_label_auths())
def test_decide_agrees_with_reference(case: tuple[Policy, Label, AuthSet]) -> None:
    policy, label, auths = case
    decision = decide(policy, label, auths)
    assert decision.permit == oracle_permits(policy, label, auths)
    assert decision.permit == (decision.reasons == ())


@PROPS
@given(policy_label_auths(valid_only=True))
def test_reasons_name_exactly_the_failed_checks(case: tuple[Policy, Label, AuthSet]) -> None:
    policy, label, auths = case
    reasons = set(decide(policy, label, auths).reasons)
    ceiling = policy.rank(auths.ceiling)
    over = ceiling is not None and policy.rank(label.classification) > ceiling  # type: ignore[operator]
    assert ("class_exceeds" in reasons) == over
    assert ("no_clearance" in reasons) == (ceiling is None)
    for c in policy.categories:
        values = label.categories.get(c.name)
        held = auths.held.get(c.name, frozenset())
        expect_r = c.type is CategoryType.RESTRICTIVE and values is not None and not values <= held
        expect_p = c.type is CategoryType.PERMISSIVE and values is not None and not values & held
        assert (f"restrictive_not_held:{c.name}" in reasons) == expect_r
        assert (f"permissive_not_held:{c.name}" in reasons) == expect_p


@PROPS
@given(st.data())
def test_minimal_authorizations_are_exactly_sufficient(data: st.DataObject) -> None:
    """Each rule, checked at its boundary: removing any one needed element denies."""
    policy = data.draw(policies())
    label = data.draw(labels(policy))
    minimal = minimal_authset(policy, label)
    assert decide(policy, label, minimal).permit
    rank = policy.classifications.index(label.classification)
    lower = policy.classifications[rank - 1] if rank else None
    cut = AuthSet(policy_id=policy.id, ceiling=lower, held=minimal.held)
    expected = ("class_exceeds",) if lower else ("no_clearance",)
    assert decide(policy, label, cut).reasons == expected
    for name, values in minimal.held.items():
        cdef = policy.category(name)
        assert cdef is not None
        kind = "restrictive" if cdef.type is CategoryType.RESTRICTIVE else "permissive"
        for value in values:
            held = dict(minimal.held) | {name: values - {value}}
            fewer = AuthSet(policy_id=policy.id, ceiling=minimal.ceiling, held=held)
            assert decide(policy, label, fewer).reasons == (f"{kind}_not_held:{name}",)


# --- P2 / P3: monotonicity ---------------------------------------------------------------------


@st.composite
def widened(draw: st.DrawFn) -> tuple[Policy, Label, AuthSet, AuthSet]:
    policy, label, auths = draw(policy_label_auths())
    extra = {c.name: draw(st.frozensets(st.sampled_from(c.values))) for c in policy.categories}
    more = widen(policy, auths, extra, draw(st.integers(0, 4)))
    return policy, label, auths, more


@PROPS
@given(widened())
def test_more_authorizations_never_lose_access(
    case: tuple[Policy, Label, AuthSet, AuthSet],
) -> None:
    policy, label, auths, more = case
    if decide(policy, label, auths).permit:
        assert decide(policy, label, more).permit


@st.composite
def tightened(draw: st.DrawFn) -> tuple[Policy, Label, Label, AuthSet]:
    """A valid label and a stricter one, made by a random series of tightening steps."""
    policy = draw(policies())
    label = draw(labels(policy))
    classification = label.classification
    cats = dict(label.categories)
    for _ in range(draw(st.integers(1, 4))):
        step = draw(st.sampled_from(["raise", "add_restrictive", "narrow_permissive", "add_cat"]))
        c = draw(st.sampled_from(policy.categories))
        if step == "raise":
            rank = policy.classifications.index(classification)
            classification = policy.classifications[min(rank + 1, len(policy.classifications) - 1)]
        elif step == "add_restrictive" and c.type is CategoryType.RESTRICTIVE:
            cats[c.name] = cats.get(c.name, frozenset()) | {draw(st.sampled_from(c.values))}
        elif step == "narrow_permissive" and c.type is CategoryType.PERMISSIVE and c.name in cats:
            current = sorted(cats[c.name])
            if len(current) > 1:
                cats[c.name] = frozenset(current) - {draw(st.sampled_from(current))}
        elif step == "add_cat" and c.name not in cats:
            cats[c.name] = frozenset({draw(st.sampled_from(c.values))})
    stricter = Label(
        policy_id=label.policy_id,
        classification=classification,
        categories=cats,
        originator=label.originator,
        created_ms=label.created_ms,
    )
    auths = draw(authsets(policy) | near_authsets(policy, label) | near_authsets(policy, stricter))
    return policy, label, stricter, auths


@PROPS
@given(tightened())
def test_a_stricter_label_never_gains_access(case: tuple[Policy, Label, Label, AuthSet]) -> None:
    policy, label, stricter, auths = case
    assert dominates(policy, stricter, label)
    if decide(policy, stricter, auths).permit:
        assert decide(policy, label, auths).permit


@PROPS
@given(st.data())
def test_dominates_is_sound(data: st.DataObject) -> None:
    policy = data.draw(policies())
    a, b = data.draw(labels(policy)), data.draw(labels(policy))
    auths = data.draw(authsets(policy) | near_authsets(policy, a))
    if dominates(policy, a, b) and decide(policy, a, auths).permit:
        assert decide(policy, b, auths).permit


# --- P4: the dominant label --------------------------------------------------------------------


@PROPS
@given(st.data())
def test_dominant_is_sound(data: st.DataObject) -> None:
    policy = data.draw(policies())
    parts = data.draw(st.lists(labels(policy), min_size=1, max_size=4))
    top = dominant(policy, parts, originator=parts[0].originator)
    auths = data.draw(authsets(policy) | near_authsets(policy, top))
    if decide(policy, top, auths).permit:
        assert all(decide(policy, p, auths).permit for p in parts)
    if not validate_label(policy, top):
        assert all(dominates(policy, top, p) for p in parts)
    else:
        # Only an empty PERMISSIVE intersection can make it invalid: releasable to nobody.
        assert all(r.startswith("empty_category:") for r in validate_label(policy, top))


@PROPS
@given(st.data())
def test_dominant_is_the_least_upper_bound(data: st.DataObject) -> None:
    policy = data.draw(policies())
    parts = data.draw(st.lists(labels(policy), min_size=1, max_size=3))
    top = dominant(policy, parts, originator=parts[0].originator)
    # Any label that dominates every part dominates the dominant label (it is the least).
    upper = dominant(policy, [*parts, data.draw(labels(policy))], originator=parts[0].originator)
    if not validate_label(policy, upper) and not validate_label(policy, top):
        assert dominates(policy, upper, top)
    if not validate_label(policy, top):
        assert dominant(policy, [top], originator=top.originator) == top


# --- P5 / P6: round trips and the canonical id ---------------------------------------------------


@PROPS
@given(st.data())
def test_all_formats_round_trip(data: st.DataObject) -> None:
    policy = data.draw(policies())
    label = data.draw(labels(policy))
    assert label_from_json(policy, label_to_json(label)) == label
    assert label_from_seclabel_xml(policy, seclabel_to_xml(policy, label)) == label
    assert label_from_stanag4774(policy, label_to_stanag4774(policy, label)) == label
    banner = label_to_banner(policy, label)
    back = label_from_banner(
        policy, banner, originator=label.originator, created_ms=label.created_ms
    )
    assert back == label


@PROPS
@given(st.data())
def test_banner_is_injective(data: st.DataObject) -> None:
    policy = data.draw(policies())
    a, b = data.draw(labels(policy)), data.draw(labels(policy))
    if label_to_banner(policy, a) == label_to_banner(policy, b):
        assert a.label_id == b.label_id


@PROPS
@given(st.data())
def test_label_id_is_canonical(data: st.DataObject) -> None:
    policy = data.draw(policies())
    label = data.draw(labels(policy))
    shuffled = {
        name: data.draw(st.permutations(sorted(values)))
        for name, values in data.draw(st.permutations(list(label.categories.items())))
    }
    again = Label(
        policy_id=label.policy_id,
        classification=label.classification,
        categories=shuffled,
        originator=data.draw(st.sampled_from(policy.rel.values)),
        created_ms=data.draw(st.integers(0, 10**12)),
    )
    assert again.label_id == label.label_id
    other = data.draw(labels(policy))
    same_core = (other.classification, dict(other.categories)) == (
        label.classification,
        dict(label.categories),
    )
    assert (other.label_id == label.label_id) == same_core


# --- P7: totality -------------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.builds(object),
    st.just(AuthSet(policy_id="X", ceiling=None, held={})),
)


@FUZZ
@given(policies(), JUNK, JUNK)
def test_decide_never_raises_on_junk(policy: Policy, label: object, auths: object) -> None:
    decision = decide(policy, label, auths)  # type: ignore[arg-type]
    assert decision.permit is False and decision.reasons


def _banner(text: str) -> Label:
    return label_from_banner(POLICY, text, originator="USA", created_ms=T0)


PARSERS: list[Callable[[str], Label]] = [
    lambda t: label_from_json(POLICY, t),
    lambda t: label_from_seclabel_xml(POLICY, t),
    lambda t: label_from_stanag4774(POLICY, t),
    _banner,
]


def _only_label_errors(parse: Callable[[str], Label], text: str) -> None:
    try:
        label = parse(text)
    except LabelError as exc:
        assert exc.reason and exc.reasons
    else:
        assert validate_label(POLICY, label) == ()


@FUZZ
@given(st.sampled_from(range(len(PARSERS))), st.text(max_size=300))
def test_parsers_are_total_on_arbitrary_text(which: int, text: str) -> None:
    _only_label_errors(PARSERS[which], text)


@FUZZ
@given(st.binary(max_size=300))
def test_byte_parsers_are_total(data: bytes) -> None:
    for parse in (label_from_json, label_from_seclabel_xml, label_from_stanag4774):
        with contextlib.suppress(LabelError):
            parse(POLICY, data)


SAMPLE = Label(
    policy_id=POLICY.id,
    classification="SECRET",
    categories={"REL": frozenset({"USA", "UKR"}), "HANDLING": frozenset({"ORCON"})},
    originator="USA",
    created_ms=T0,
)
SERIALISED = [
    label_to_json(SAMPLE),
    seclabel_to_xml(POLICY, SAMPLE),
    label_to_stanag4774(POLICY, SAMPLE),
    label_to_banner(POLICY, SAMPLE),
]
# Characters a near miss is made of: structure, case, look-alikes, zero-width and control.
EDIT_CHARS = st.sampled_from(list("<>/=\"' ,&;:{}[]\\!-_SsUuAaKkRr0\u0410\u200b\x00\n\t\ufeff"))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, str]:
    which = draw(st.integers(0, len(SERIALISED) - 1))
    text = SERIALISED[which]
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if op == "insert":
            text = text[:pos] + draw(EDIT_CHARS) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
        elif op == "replace" and pos < len(text):
            text = text[:pos] + draw(EDIT_CHARS) + text[pos + 1 :]
        else:
            end = min(len(text), pos + draw(st.integers(1, 40)))
            text = text[:end] + text[pos:end] + text[end:]
    return which, text


@FUZZ
@given(mutated())
def test_parsers_are_total_on_near_misses(case: tuple[int, str]) -> None:
    which, text = case
    _only_label_errors(PARSERS[which], text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("<>/ =\"'_abcdeilst")), max_size=200))
def test_detail_extraction_is_total(text: str) -> None:
    try:
        detail = ET.fromstring(f"<detail>{text}</detail>")
    except ET.ParseError:
        return
    with contextlib.suppress(LabelError):
        label_from_detail(POLICY, detail)
