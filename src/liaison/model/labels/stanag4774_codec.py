"""Label codec (d): STANAG 4774 confidentiality label XML, for export and import with partners
(strict on structure and values; what Liaison cannot keep is refused, not dropped)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from liaison.model.canonical import format_time_ms
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
from liaison.model.labels.values import Label, LabelError, Policy, _require_valid, _tag_code

# 4774 confidentiality label namespace (ADatP-4774 App. 1; labels.md section 1.2).
NS_4774 = "urn:nato:stanag:4774:confidentialitymetadatalabel:1:0"
# How we write an originator as a 4774 OriginatorID of IDType uniformResourceIdentifier.
ORIGINATOR_URN_PREFIX = "urn:liaison:org:"

# The 4774 root elements we write and read. originatorConfidentialityLabel is the label the
# originator set; ConfidentialityLabel is the older root kept for backward compatibility
# (ADatP-4774 App. 1; labels.md 1.2). alternative/metadata labels mean something else: refused.
STANAG4774_ROOTS = ("originatorConfidentialityLabel", "ConfidentialityLabel")


def _q(name: str) -> str:
    return f"{{{NS_4774}}}{name}"


def _w(name: str) -> str:
    return f"slab:{name}"


def label_to_stanag4774(
    policy: Policy, label: Label, *, root: str = "originatorConfidentialityLabel"
) -> str:
    """The label as a STANAG 4774 confidentiality label document (for export).

    Elements are in the 4774 namespace (prefix ``slab``), attributes unqualified. Written:
    ``ConfidentialityInformation`` (``PolicyIdentifier`` with ``URI`` when the policy has one,
    ``Classification``, one ``Category TagName Type`` with ``GenericValue`` children per
    category), ``OriginatorID IDType="uniformResourceIdentifier"`` = ``urn:liaison:org:<ORG>``,
    and ``CreationDateTime``. Liaison labels carry no review time, so ``ReviewDateTime`` is
    not written.
    """
    if root not in STANAG4774_ROOTS:
        raise ValueError(f"root must be one of {STANAG4774_ROOTS}")
    _require_valid(policy, label)
    # Tags are written with the literal prefix "slab:" (bound on the root) rather than as
    # {namespace}name: ElementTree's default_namespace option refuses unqualified attributes,
    # and 4774 attributes are unqualified. The parser below reads any prefix.
    el = ET.Element(_w(root), {"xmlns:slab": NS_4774})
    info = ET.SubElement(el, _w("ConfidentialityInformation"))
    pid = ET.SubElement(info, _w("PolicyIdentifier"), {"URI": policy.uri} if policy.uri else {})
    pid.text = policy.id
    ET.SubElement(info, _w("Classification")).text = label.classification
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is None:
            continue
        cat = ET.SubElement(info, _w("Category"), {"TagName": cdef.name, "Type": cdef.type.value})
        for value in cdef.ordered(values):
            ET.SubElement(cat, _w("GenericValue")).text = value
    originator = ET.SubElement(el, _w("OriginatorID"), {"IDType": "uniformResourceIdentifier"})
    originator.text = ORIGINATOR_URN_PREFIX + label.originator
    ET.SubElement(el, _w("CreationDateTime")).text = format_time_ms(label.created_ms)
    return ET.tostring(el, encoding="unicode")


def _children(el: ET.Element, names: list[tuple[str, bool]]) -> dict[str, ET.Element]:
    """Match ``el``'s children to ``names`` (name, required) in order; no others allowed."""
    if not _blank(el.text):
        raise LabelError("unexpected_text", f"text inside {_local_name(el.tag)}")
    found: dict[str, ET.Element] = {}
    kids = list(el)
    i = 0
    for name, required in names:
        if i < len(kids) and kids[i].tag == _q(name):
            found[name] = kids[i]
            i += 1
        elif required:
            raise LabelError("missing_element", name)
    if i != len(kids):
        raise LabelError("unknown_element", f"{_local_name(kids[i].tag)} is not supported here")
    for kid in kids:
        if not _blank(kid.tail):
            raise LabelError("unexpected_text", "text between elements")
    return found


def _leaf_text(el: ET.Element, allowed_attrs: frozenset[str] = frozenset()) -> str:
    if len(el):
        raise LabelError("unknown_element", f"{_local_name(el.tag)} has no child elements")
    if set(el.attrib) - allowed_attrs:
        raise LabelError("unknown_attribute", f"on {_local_name(el.tag)}")
    return el.text or ""


def label_from_stanag4774(policy: Policy, text: str | bytes) -> Label:
    """Import a STANAG 4774 label written by :func:`label_to_stanag4774` or a peer.

    Strict on structure (4774 element order; unknown elements, ``PrivacyMark``,
    ``SuccessionHandling`` and extension elements are refused, not dropped) and on values
    (uppercase, no surrounding space). ``Type`` must equal the policy's type for the tag. Times
    may carry 0-9 fraction digits and a UTC offset. ``ReviewDateTime`` and ``Id`` on the root
    are accepted and checked but not kept (Liaison labels have no review time).
    """
    with _parsing():
        root = _parse_xml(text)
        if root.tag not in {_q(r) for r in STANAG4774_ROOTS}:
            raise LabelError("unsupported_root", "not a 4774 originator or confidentiality label")
        _check_attrs(root, set(), frozenset({"ReviewDateTime", "Id"}))
        review = root.get("ReviewDateTime")
        if review is not None:
            parse_time_ms(review, strict=False)
        top = _children(
            root,
            [
                ("ConfidentialityInformation", True),
                ("OriginatorID", True),
                ("CreationDateTime", True),
            ],
        )
        info = top["ConfidentialityInformation"]
        if not _blank(info.text):
            raise LabelError("unexpected_text", "text inside ConfidentialityInformation")
        kids = list(info)
        if any(not _blank(kid.tail) for kid in kids):
            raise LabelError("unexpected_text", "text between elements")
        # 4774 order: PolicyIdentifier, Classification, [PrivacyMark], Category*. PrivacyMark is
        # refused: dropping it on import would lose part of the originator's label.
        if len(kids) < 1 or kids[0].tag != _q("PolicyIdentifier"):
            raise LabelError("missing_element", "PolicyIdentifier")
        if len(kids) < 2 or kids[1].tag != _q("Classification"):
            raise LabelError("missing_element", "Classification")
        policy_id = _leaf_text(kids[0], frozenset({"URI"}))
        uri = kids[0].get("URI")
        if policy_id != policy.id or (uri is not None and uri != policy.uri):
            raise LabelError("policy_mismatch", "the label is under another policy")
        classification = _leaf_text(kids[1])
        categories: dict[str, frozenset[str]] = {}
        for cat in kids[2:]:
            if cat.tag != _q("Category"):
                raise LabelError("unknown_element", f"{_local_name(cat.tag)} is not supported")
            _check_attrs(cat, {"TagName", "Type"})
            tag = cat.get("TagName", "")
            if tag in categories:
                raise LabelError(_tag_code("duplicate_category", tag), "a category appears twice")
            cdef = _category_type(policy, tag, cat.get("Type", ""))
            if not _blank(cat.text):
                raise LabelError("unexpected_text", "text inside Category")
            values: list[str] = []
            for gv in cat:
                if gv.tag != _q("GenericValue"):
                    raise LabelError("unknown_element", "Category holds only GenericValue")
                if not _blank(gv.tail):
                    raise LabelError("unexpected_text", "text between elements")
                values.append(_leaf_text(gv))
            tokens = _token_syntax(values, tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{cdef.name}", "a value is listed twice")
            categories[cdef.name] = frozenset(tokens)
        originator_el = top["OriginatorID"]
        id_text = _leaf_text(originator_el, frozenset({"IDType"}))
        if originator_el.get("IDType") != "uniformResourceIdentifier" or not id_text.startswith(
            ORIGINATOR_URN_PREFIX
        ):
            raise LabelError("bad_originator", "OriginatorID must be urn:liaison:org:<ORG>")
        originator = id_text[len(ORIGINATOR_URN_PREFIX) :]
        created = parse_time_ms(_leaf_text(top["CreationDateTime"]), strict=False)
        _name_syntax(policy_id, classification, originator)
        label = Label(
            policy_id=policy_id,
            classification=classification,
            categories=categories,
            originator=originator,
            created_ms=created,
        )
        return _finish(policy, label, None)
