"""What the four label codecs share: strict, total parsing of small untrusted texts.

Every parser runs inside :func:`_parsing`, so any stray error becomes ``LabelError("malformed")``
and parsers raise nothing else on bad input; XML is parsed with no DTD, entity, comment or CDATA.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from liaison.model import canonical
from liaison.model.labels.values import (
    _CLASS_RE,
    _POLICY_ID_RE,
    MAX_NAME_CHARS,
    CategoryDef,
    Label,
    LabelError,
    Policy,
    _require_valid,
    _tag_code,
    is_value_token,
)

# Largest serialised label we parse, in characters. The most verbose form (4774 XML, about 75
# characters per value) of the largest label the policy bounds allow (16 x 128 values) is ~150 KB.
MAX_LABEL_TEXT_CHARS = 256 * 1024

_XML_SPACE = " \t\r\n"


def parse_time_ms(text: str, *, strict: bool = True) -> int:
    """Parse an RFC 3339 time into ms since the epoch; raises LabelError("bad_time").

    ``strict`` accepts only what :func:`format_time_ms` writes. The lenient form (for 4774
    import) also accepts 0 to 9 fraction digits (truncated to ms) and a numeric UTC offset.
    Leap seconds (``:60``) are refused.
    """
    try:
        return canonical.parse_rfc3339_ms(text, strict=strict)
    except ValueError as exc:
        raise LabelError("bad_time", str(exc)) from None


@contextmanager
def _parsing() -> Iterator[None]:
    """Turn any stray error of a parser into LabelError("malformed"), keeping parsers total."""
    try:
        yield
    except LabelError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RecursionError,
        SyntaxError,  # xml.etree.ElementTree.ParseError
    ) as exc:
        raise LabelError("malformed", type(exc).__name__) from exc


def _check_size(text: object) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_LABEL_TEXT_CHARS * 4:
            raise LabelError("too_large", "label text exceeds MAX_LABEL_TEXT_CHARS")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LabelError("malformed", "not UTF-8") from exc
    if not isinstance(text, str):
        raise LabelError("malformed", "label text must be str or bytes")
    if len(text) > MAX_LABEL_TEXT_CHARS:
        raise LabelError("too_large", "label text exceeds MAX_LABEL_TEXT_CHARS")
    return text


def _parse_xml(text: str | bytes) -> ET.Element:
    """Parse a small XML document with no DTD, entity, comment or CDATA allowed."""
    body = _check_size(text)
    # No "<!" at all: that refuses DOCTYPE and ENTITY declarations (XXE, billion laughs) before
    # the parser sees them, and comments and CDATA, which no label needs.
    if "<!" in body:
        raise LabelError("forbidden_markup", "DTDs, entities, comments and CDATA are refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise LabelError("malformed", "not well-formed XML") from exc


def _blank(text: str | None) -> bool:
    return text is None or text.strip(_XML_SPACE) == ""


def _check_attrs(
    el: ET.Element, required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    names = set(el.attrib)
    if names - required - optional:
        raise LabelError("unknown_attribute", f"{sorted(names - required - optional)}")
    if required - names:
        raise LabelError("missing_attribute", f"{sorted(required - names)}")


def _token_syntax(values: Iterable[object], what: str) -> list[str]:
    out: list[str] = []
    for v in values:
        if not is_value_token(v):
            raise LabelError("bad_value", f"{what}: not an uppercase value token")
        assert isinstance(v, str)
        out.append(v)
    return out


def _name_syntax(policy_id: object, classification: object, originator: object) -> None:
    # Refuse non-ASCII and oversized strings before they reach hashing, logs or reason codes.
    if not isinstance(policy_id, str) or _POLICY_ID_RE.fullmatch(policy_id) is None:
        raise LabelError("policy_mismatch", "not a policy id")
    if (
        not isinstance(classification, str)
        or len(classification) > MAX_NAME_CHARS
        or _CLASS_RE.fullmatch(classification) is None
    ):
        raise LabelError("unknown_classification", "not a classification name")
    if not is_value_token(originator):
        raise LabelError("bad_originator", "not an organisation token")


def _finish(policy: Policy, label: Label, claimed_id: str | None) -> Label:
    _require_valid(policy, label)
    if claimed_id is not None and claimed_id != label.label_id:
        raise LabelError("id_mismatch", "the id does not match the label's content")
    return label


def _category_type(policy: Policy, tag: str, type_text: str) -> CategoryDef:
    cdef = policy.category(tag)
    if cdef is None:
        raise LabelError(_tag_code("unknown_category", tag), "not a category of the policy")
    if type_text != cdef.type.value:
        raise LabelError(f"type_mismatch:{cdef.name}", "category type differs from the policy")
    return cdef


def _local_name(tag: object) -> str | None:
    if not isinstance(tag, str):
        return None  # comments and processing instructions
    return tag.rsplit("}", 1)[-1]
