"""Label codec (c): the display banner, e.g. ``SECRET//REL TO USA, UKR``, written and read with
one strict grammar (policy order, exact spacing)."""

from __future__ import annotations

from collections.abc import Iterable

from liaison.model.labels.parsing import _check_size, _finish, _parsing
from liaison.model.labels.values import CategoryDef, Label, LabelError, Policy, _require_valid


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
