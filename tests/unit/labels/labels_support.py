"""Shared test material for labels: the example policy, builders, strategies and a reference ACDF.

The reference decision (:func:`oracle_permits`) is deliberately written another way than
``liaison.model.labels.decide``: it turns the label into an Accumulo-style boolean expression
over access tokens (labels.md 3.2) and evaluates that with a tiny recursive-descent parser,
and it checks validity from the label's JSON form with its own code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from hypothesis import strategies as st

from liaison.model.labels import (
    AuthSet,
    CategoryDef,
    CategoryType,
    Label,
    Policy,
    label_to_json_obj,
)
from liaison.model.policy import load_auth_config, load_policy

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_TOML = (REPO / "examples" / "policy.toml").read_text()
POLICY = load_policy(EXAMPLE_TOML)
AUTHZ = load_auth_config(EXAMPLE_TOML, POLICY)
T0 = 1_764_072_000_000  # 2025-11-25T12:00:00.000Z


def lab(
    classification: str = "SECRET",
    *,
    policy: Policy = POLICY,
    originator: str = "USA",
    created_ms: int = T0,
    **categories: Iterable[str],
) -> Label:
    """A label under the example policy: lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"])."""
    return Label(
        policy_id=policy.id,
        classification=classification,
        categories={k: frozenset(v) for k, v in categories.items()},
        originator=originator,
        created_ms=created_ms,
    )


def auths(
    ceiling: str | None = "SECRET", *, policy: Policy = POLICY, **held: Iterable[str]
) -> AuthSet:
    return AuthSet(
        policy_id=policy.id, ceiling=ceiling, held={k: frozenset(v) for k, v in held.items()}
    )


# --- the reference implementation ---------------------------------------------------------------


def _oracle_valid(policy: Policy, label: Label) -> bool:
    data = label_to_json_obj(label)
    spec = policy.to_json_obj()
    if data["policy"] != spec["id"] or data["classification"] not in spec["classifications"]:
        return False
    vocab = {c["name"]: set(c["values"]) for c in spec["categories"]}  # type: ignore[index, union-attr]
    required = {c["name"] for c in spec["categories"] if c["required"]}  # type: ignore[index, union-attr]
    cats = data["categories"]
    assert isinstance(cats, dict)
    if not required <= set(cats):
        return False
    for name, values in cats.items():
        if name not in vocab or not values or not set(values) <= vocab[name]:
            return False
    rel_vocab = vocab["REL"]
    created = data["created"]
    return (
        data["originator"] in rel_vocab
        and isinstance(created, int)
        and not isinstance(created, bool)
        and 0 <= created <= 253_402_300_799_999
    )


def label_expression(policy: Policy, label: Label) -> str:
    """The label as an Accumulo-style expression: one operator per parenthesised level."""
    terms = [f'"C:{label.classification}"']
    types = {c.name: c.type for c in policy.categories}
    for name in sorted(label.categories):
        values = sorted(label.categories[name])
        kind = types[name]
        if kind is CategoryType.RESTRICTIVE:
            terms.extend(f'"{name}:{v}"' for v in values)
        elif kind is CategoryType.PERMISSIVE:
            terms.append("(" + "|".join(f'"{name}:{v}"' for v in values) + ")")
    return "&".join(terms)


def auth_tokens(policy: Policy, a: AuthSet) -> set[str]:
    tokens: set[str] = set()
    if a.policy_id != policy.id or a.ceiling not in policy.classifications:
        return tokens
    top = policy.classifications.index(a.ceiling)
    tokens.update(f"C:{c}" for c in policy.classifications[: top + 1])
    for name, values in a.held.items():
        tokens.update(f"{name}:{v}" for v in values)
    return tokens


class _Expr:
    """A recursive-descent evaluator: expr := term (('&' term)* | ('|' term)*)."""

    def __init__(self, text: str, tokens: set[str]) -> None:
        self.text, self.pos, self.tokens = text, 0, tokens

    def evaluate(self) -> bool:
        value = self._expr()
        assert self.pos == len(self.text), "trailing input"
        return value

    def _expr(self) -> bool:
        values = [self._term()]
        op = None
        while self.pos < len(self.text) and self.text[self.pos] in "&|":
            this = self.text[self.pos]
            assert op in (None, this), "mixed operators without parentheses"
            op = this
            self.pos += 1
            values.append(self._term())
        return any(values) if op == "|" else all(values)

    def _term(self) -> bool:
        if self.text[self.pos] == "(":
            self.pos += 1
            value = self._expr()
            assert self.text[self.pos] == ")"
            self.pos += 1
            return value
        assert self.text[self.pos] == '"'
        end = self.text.index('"', self.pos + 1)
        token = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return token in self.tokens


def oracle_permits(policy: Policy, label: Label, a: AuthSet) -> bool:
    if not _oracle_valid(policy, label):
        return False
    return _Expr(label_expression(policy, label), auth_tokens(policy, a)).evaluate()


# --- strategies -------------------------------------------------------------------------------

_TYPES = [CategoryType.RESTRICTIVE, CategoryType.PERMISSIVE, CategoryType.INFORMATIVE]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Random small policies: 1-5 classes, REL plus 0-3 categories of random type."""
    n_classes = draw(st.integers(1, 5))
    classes = tuple(f"C{i}" for i in range(n_classes))
    rel_values = tuple(f"O{i}" for i in range(draw(st.integers(1, 5))))
    categories = [
        CategoryDef(name="REL", type=CategoryType.PERMISSIVE, required=True, values=rel_values)
    ]
    for i in range(draw(st.integers(0, 3))):
        categories.append(
            CategoryDef(
                name=f"T{i}",
                type=draw(st.sampled_from(_TYPES)),
                required=draw(st.booleans()),
                values=tuple(f"V{j}" for j in range(draw(st.integers(1, 4)))),
            )
        )
    order = draw(st.permutations(categories))
    return Policy(id="P-TEST", version=1, classifications=classes, categories=tuple(order))


def _subset(values: tuple[str, ...], *, min_size: int = 0) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(values), min_size=min_size, max_size=len(values))


@st.composite
def labels(draw: st.DrawFn, policy: Policy) -> Label:
    """Labels valid under ``policy`` by construction."""
    categories: dict[str, frozenset[str]] = {}
    for c in policy.categories:
        if c.required or draw(st.booleans()):
            categories[c.name] = draw(_subset(c.values, min_size=1))
    return Label(
        policy_id=policy.id,
        classification=draw(st.sampled_from(policy.classifications)),
        categories=categories,
        originator=draw(st.sampled_from(policy.rel.values)),
        created_ms=draw(st.integers(0, 253_402_300_799_999)),
    )


@st.composite
def invalid_labels(draw: st.DrawFn, policy: Policy) -> Label:
    """A valid label with one defect (the invalid-label families of labels.md 7g)."""
    base = draw(labels(policy))
    cats: dict[str, frozenset[str]] = dict(base.categories)
    fields: dict[str, object] = {
        "policy_id": base.policy_id,
        "classification": base.classification,
        "originator": base.originator,
        "created_ms": base.created_ms,
    }
    defect = draw(
        st.sampled_from(
            [
                "policy",
                "class",
                "unknown_cat",
                "empty_cat",
                "unknown_value",
                "missing_required",
                "originator",
                "created",
                "lowercase",
            ]
        )
    )
    if defect == "policy":
        fields["policy_id"] = "OTHER"
    elif defect == "class":
        fields["classification"] = "TOP SECRET"
    elif defect == "unknown_cat":
        cats["ZZ"] = frozenset({"V0"})
    elif defect == "empty_cat":
        cats["REL"] = frozenset()
    elif defect == "unknown_value":
        cats["REL"] = cats["REL"] | {"NOPE"}
    elif defect == "missing_required":
        del cats["REL"]
    elif defect == "originator":
        fields["originator"] = "XXX"
    elif defect == "created":
        fields["created_ms"] = draw(st.sampled_from([-1, 253_402_300_800_000]))
    else:
        fields["classification"] = base.classification.lower()
    return Label(categories=cats, **fields)  # type: ignore[arg-type]


@st.composite
def authsets(draw: st.DrawFn, policy: Policy) -> AuthSet:
    ceiling = draw(st.none() | st.sampled_from(policy.classifications))
    held: dict[str, frozenset[str]] = {}
    for c in policy.categories:
        if draw(st.booleans()):
            held[c.name] = draw(_subset(c.values) | st.just(frozenset({"UNKNOWN"})))
    return AuthSet(policy_id=policy.id, ceiling=ceiling, held=held)


def widen(
    policy: Policy, a: AuthSet, extra: Mapping[str, frozenset[str]], raise_by: int
) -> AuthSet:
    """``a`` with more values held and a ceiling ``raise_by`` ranks higher (capped)."""
    held = {
        c.name: a.held.get(c.name, frozenset()) | extra.get(c.name, frozenset())
        for c in policy.categories
    }
    if a.ceiling is None:
        ceiling = (
            policy.classifications[min(raise_by, len(policy.classifications) - 1)]
            if raise_by
            else None
        )
    else:
        rank = policy.classifications.index(a.ceiling)
        ceiling = policy.classifications[min(rank + raise_by, len(policy.classifications) - 1)]
    return AuthSet(policy_id=a.policy_id, ceiling=ceiling, held=held)


@st.composite
def near_authsets(draw: st.DrawFn, policy: Policy, label: Label) -> AuthSet:
    """AuthSets at the boundary of ``label``: just sufficient, then 0-2 random perturbations.

    Random AuthSets mostly fail several checks at once, which hides a wrong rule behind a right
    one; these fail (or pass) by one step.
    """
    classes = policy.classifications
    rank = classes.index(label.classification) if label.classification in classes else 0
    held: dict[str, set[str]] = {}
    for c in policy.categories:
        values = sorted(label.categories.get(c.name, frozenset()) & c.value_set)
        if c.type is CategoryType.RESTRICTIVE:
            held[c.name] = set(values)
        elif c.type is CategoryType.PERMISSIVE and values:
            held[c.name] = {draw(st.sampled_from(values))}
    for _ in range(draw(st.integers(0, 2))):
        step = draw(st.sampled_from(["lower", "raise", "drop", "add"]))
        c = draw(st.sampled_from(policy.categories))
        if step == "lower":
            rank -= 1
        elif step == "raise":
            rank = min(rank + 1, len(classes) - 1)
        elif step == "drop":
            names = sorted(name for name, values in held.items() if values)
            if names:
                name = draw(st.sampled_from(names))
                held[name].discard(draw(st.sampled_from(sorted(held[name]))))
        elif step == "add":
            held.setdefault(c.name, set()).add(draw(st.sampled_from(c.values)))
    return AuthSet(
        policy_id=policy.id,
        ceiling=classes[rank] if rank >= 0 else None,
        held={k: frozenset(v) for k, v in held.items()},
    )


def minimal_authset(policy: Policy, label: Label) -> AuthSet:
    """The smallest AuthSet that may read a valid ``label``: its class, every RESTRICTIVE value
    and the first value (in policy order) of each PERMISSIVE category."""
    held: dict[str, frozenset[str]] = {}
    for c in policy.categories:
        values = label.categories.get(c.name)
        if values is None:
            continue
        if c.type is CategoryType.RESTRICTIVE:
            held[c.name] = values
        elif c.type is CategoryType.PERMISSIVE:
            held[c.name] = frozenset(c.ordered(values)[:1])
    return AuthSet(policy_id=policy.id, ceiling=label.classification, held=held)
