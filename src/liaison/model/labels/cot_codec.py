"""Label codec (a): the label on a CoT event. The ``<__seclabel>`` element under ``<detail>`` is
the label; the root attributes ``access``, ``caveat`` and ``releasableTo`` are written from it
for TAK readers (:func:`cot_marking`) and never read as a label."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from liaison.model.canonical import format_time_ms
from liaison.model.labels.banner_codec import _banner_segment
from liaison.model.labels.parsing import (
    _blank,
    _category_type,
    _check_attrs,
    _finish,
    _local_name,
    _name_syntax,
    _parse_xml,
    _parsing,
    _token_syntax,
    parse_time_ms,
)
from liaison.model.labels.values import (
    REL,
    CategoryType,
    Label,
    LabelError,
    Policy,
    _require_valid,
    _tag_code,
)

SECLABEL_TAG = "__seclabel"
SECLABEL_VERSION = "1"

# --- (a) CoT <__seclabel> -----------------------------------------------------------------------

_SECLABEL_REQUIRED = {"v", "policy", "cls", "orig", "created"}
_SECLABEL_OPTIONAL = frozenset({"id"})
_CAT_REQUIRED = {"tag", "type", "v"}


def label_to_seclabel(policy: Policy, label: Label) -> ET.Element:
    """The ``<__seclabel>`` element to put (once) under a CoT ``<detail>``.

    ``<__seclabel v="1" policy=".." cls=".." orig=".." created="..Z" id="sha256:..">`` with one
    ``<cat tag=".." type=".." v="A B"/>`` per category (policy order, values space-separated in
    policy order). No namespace: several TAK parsers are namespace-unaware. The leading ``__``
    follows TAK's meta-detail convention (``__group``, ``__chat``); ATAK keeps unknown detail
    children and re-emits them (ATAK CIV OpaqueHandler.java), and TAK protocol v1 carries them
    in ``Detail.xmlDetail`` (takproto detail.proto), so the label survives both.
    """
    _require_valid(policy, label)
    el = ET.Element(
        SECLABEL_TAG,
        {
            "v": SECLABEL_VERSION,
            "policy": label.policy_id,
            "cls": label.classification,
            "orig": label.originator,
            "created": format_time_ms(label.created_ms),
            "id": label.label_id,
        },
    )
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is not None:
            ET.SubElement(
                el,
                "cat",
                {"tag": cdef.name, "type": cdef.type.value, "v": " ".join(cdef.ordered(values))},
            )
    return el


def seclabel_to_xml(policy: Policy, label: Label) -> str:
    """:func:`label_to_seclabel` as XML text."""
    return ET.tostring(label_to_seclabel(policy, label), encoding="unicode")


def label_from_seclabel(policy: Policy, element: ET.Element) -> Label:
    """Parse a ``<__seclabel>`` element. Strict: unknown attributes or children are invalid."""
    with _parsing():
        if element.tag != SECLABEL_TAG:
            raise LabelError("not_a_label", "the element is not <__seclabel>")
        _check_attrs(element, _SECLABEL_REQUIRED, _SECLABEL_OPTIONAL)
        if element.get("v") != SECLABEL_VERSION:
            raise LabelError("bad_version", "v must be 1")
        if not _blank(element.text):
            raise LabelError("unexpected_text", "__seclabel holds only <cat> elements")
        _name_syntax(element.get("policy"), element.get("cls"), element.get("orig"))
        created = parse_time_ms(element.get("created", ""))
        categories: dict[str, frozenset[str]] = {}
        for child in element:
            if child.tag != "cat":
                raise LabelError("unknown_element", "__seclabel holds only <cat> elements")
            _check_attrs(child, _CAT_REQUIRED)
            if len(child) or not _blank(child.text) or not _blank(child.tail):
                raise LabelError("unexpected_text", "<cat> is an empty element")
            tag = child.get("tag", "")
            if tag in categories:
                raise LabelError(_tag_code("duplicate_category", tag), "a category appears twice")
            cdef = _category_type(policy, tag, child.get("type", ""))
            tokens = _token_syntax(child.get("v", "").split(" "), tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{cdef.name}", "a value is listed twice")
            categories[cdef.name] = frozenset(tokens)
        label = Label(
            policy_id=element.get("policy", ""),
            classification=element.get("cls", ""),
            categories=categories,
            originator=element.get("orig", ""),
            created_ms=created,
        )
        return _finish(policy, label, element.get("id"))


def label_from_seclabel_xml(policy: Policy, text: str | bytes) -> Label:
    """Parse ``<__seclabel>`` from XML text (hardened: no DTD, entities, comments or CDATA)."""
    with _parsing():
        return label_from_seclabel(policy, _parse_xml(text))


def label_from_detail(policy: Policy, detail: ET.Element | None) -> Label | None:
    """The label of an event from its ``<detail>``; None when the event is unlabelled.

    Exactly one ``<__seclabel>`` directly under ``<detail>`` is allowed. Two of them
    (``duplicate_label``), one nested deeper (``nested_label``) or one in a namespace
    (``namespaced_label``) make the event's label invalid: a reader that picked another copy
    would see another label.
    """
    with _parsing():
        if detail is None:
            return None
        if not _mentions_seclabel(detail):
            return None  # no element is named __seclabel in any namespace: unlabelled
        found: list[ET.Element] = []
        for child in detail:
            if child.tag == SECLABEL_TAG:
                found.append(child)
            elif _local_name(child.tag) == SECLABEL_TAG:
                raise LabelError("namespaced_label", "a namespaced __seclabel is not a label")
        for el in detail.iter():
            nested = el is not detail and not any(el is f for f in found)
            if nested and _local_name(el.tag) == SECLABEL_TAG:
                raise LabelError("nested_label", "__seclabel must be a child of <detail>")
        if len(found) > 1:
            raise LabelError("duplicate_label", "more than one __seclabel")
        if not found:
            return None
        return label_from_seclabel(policy, found[0])


def _mentions_seclabel(detail: ET.Element) -> bool:
    """Whether some element of ``detail`` may be named ``__seclabel`` (in any namespace). False
    only when no tag contains the name: a local name is the end of its tag, so then none is it.
    Comments and processing instructions (tags that are not strings) count as maybe."""
    for el in detail.iter():
        tag = el.tag
        if not isinstance(tag, str) or SECLABEL_TAG in tag:
            return True
    return False


def with_seclabel(
    policy: Policy, detail: ET.Element | None, label: Label, *, seclabel: ET.Element | None = None
) -> ET.Element:
    """A copy of ``detail`` (or a new ``<detail>``) carrying exactly one, fresh ``<__seclabel>``.

    Every element named ``__seclabel`` (at any depth, in any namespace) is removed from the copy
    first: the server writes the authoritative label, a client's copy never rides along. The
    input is not modified (Event.detail is shared and must stay immutable). ``seclabel`` is
    ``label_to_seclabel(policy, label)`` made earlier (the gate keeps one per label: like the
    received children, it is shared and never changed in place).
    """
    fresh = label_to_seclabel(policy, label) if seclabel is None else seclabel
    if detail is not None and (
        not _mentions_seclabel(detail)
        or not any(
            el is not child and _local_name(el.tag) == SECLABEL_TAG
            for child in detail
            for el in child.iter()
        )
    ):
        # No __seclabel below the top level (the usual case): a new <detail> sharing the
        # children, which is safe because an event's detail is never changed in place (every
        # change, here and in Event.without_dests/keep_dests, works on a copy).
        shallow = ET.Element(detail.tag, dict(detail.attrib))
        shallow.text, shallow.tail = detail.text, detail.tail
        shallow.extend(c for c in detail if _local_name(c.tag) != SECLABEL_TAG)
        shallow.append(fresh)
        return shallow
    out = ET.Element("detail") if detail is None else copy.deepcopy(detail)
    for parent in list(out.iter()):
        for child in list(parent):
            if _local_name(child.tag) == SECLABEL_TAG:
                parent.remove(child)
    out.append(fresh)
    return out


# --- CoT root attributes (output only) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CotMarking:
    """Values for the CoT ``<event>`` attributes ``access``, ``caveat`` and ``releasableTo``."""

    access: str
    caveat: str | None
    releasable_to: str


def cot_marking(policy: Policy, label: Label) -> CotMarking:
    """The root marking attributes to write on egress, for TAK Server and MIL-STD-6090 readers.

    TAK Server builds an item's marking as ``access + "//" + caveat + "//" + releasableTo``
    (TSc ClassificationServiceImpl.canAccess) and hands it to an ISM service, so we write
    ``access`` = the classification, ``caveat`` = the banner segments of the other RESTRICTIVE
    and PERMISSIVE categories (None when there are none) and ``releasableTo`` = the REL segment
    (``REL TO USA, UKR``); joined they read as the banner. These attributes are never read on
    input: the ``<__seclabel>`` detail element is the label (labels.md 7b).
    """
    _require_valid(policy, label)
    caveats = [
        _banner_segment(cdef, label.categories[cdef.name])
        for cdef in policy.categories
        if cdef.name != REL
        and cdef.name in label.categories
        and cdef.type is not CategoryType.INFORMATIVE
    ]
    return CotMarking(
        access=label.classification,
        caveat="//".join(caveats) if caveats else None,
        releasable_to=_banner_segment(policy.rel, label.categories[REL]),
    )


def cot_marking_conflicts(
    policy: Policy,
    label: Label,
    *,
    access: str | None,
    caveat: str | None,
    releasable_to: str | None,
) -> tuple[str, ...]:
    """Which root attributes received on an event contradict its label (empty: none do).

    An absent attribute never conflicts. A conflict suggests a client that shows users a
    marking other than the real label; labels.md 7b recommends rejecting such events.
    """
    expected = cot_marking(policy, label)
    conflicts: list[str] = []
    if access is not None and access != expected.access:
        conflicts.append("access")
    if caveat is not None and caveat != (expected.caveat or ""):
        conflicts.append("caveat")
    if releasable_to is not None and releasable_to != expected.releasable_to:
        conflicts.append("releasableTo")
    return tuple(conflicts)
