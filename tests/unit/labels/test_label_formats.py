"""The four label formats: exact writes, round trips, and the invalid families for each parser."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from liaison.model.labels import (
    NS_4774,
    Label,
    LabelError,
    cot_marking,
    cot_marking_conflicts,
    format_time_ms,
    label_from_banner,
    label_from_detail,
    label_from_json,
    label_from_json_obj,
    label_from_seclabel,
    label_from_seclabel_xml,
    label_from_stanag4774,
    label_to_banner,
    label_to_json,
    label_to_seclabel,
    label_to_stanag4774,
    parse_time_ms,
    seclabel_to_xml,
    with_seclabel,
)

from .labels_support import POLICY, T0, lab

FULL = lab("SECRET", REL=["UKR", "USA"], HANDLING=["ORCON"], TLP=["AMBER"])
PLAIN = lab("SECRET", REL=["USA", "UKR"])


def reason_of(exc: pytest.ExceptionInfo[LabelError]) -> str:
    return exc.value.reason


# --- label id -----------------------------------------------------------------------------------


def test_label_id_covers_the_core_only() -> None:
    same_core = lab("SECRET", REL=["USA", "UKR"], originator="UKR", created_ms=T0 + 5)
    assert same_core.label_id == PLAIN.label_id
    assert same_core != PLAIN  # item metadata still distinguishes the labels
    assert lab("SECRET", REL=["USA"]).label_id != PLAIN.label_id
    assert PLAIN.label_id.startswith("sha256:") and len(PLAIN.label_id) == 7 + 64


def test_label_is_immutable_and_hashable() -> None:
    assert {PLAIN, lab("SECRET", REL=["UKR", "USA"])} == {PLAIN}
    with pytest.raises(TypeError):
        PLAIN.categories["REL"] = frozenset()  # type: ignore[index]
    with pytest.raises(TypeError):
        Label(
            policy_id="P",
            classification="S",
            categories={"REL": "USA"},
            originator="USA",
            created_ms=0,
        )


# --- (b) JSON ---------------------------------------------------------------------------------


def test_json_is_canonical() -> None:
    text = label_to_json(FULL)
    assert text == (
        '{"categories":{"HANDLING":["ORCON"],"REL":["UKR","USA"],"TLP":["AMBER"]},'
        '"classification":"SECRET","created":1764072000000,'
        f'"id":"{FULL.label_id}","originator":"USA","policy":"LIAISON-USA-UKR","v":1}}'
    )
    assert label_from_json(POLICY, text) == FULL
    assert label_from_json(POLICY, text.encode()) == FULL


def test_json_accepts_whitespace_and_no_id() -> None:
    obj = json.loads(label_to_json(FULL))
    del obj["id"]
    assert label_from_json(POLICY, json.dumps(obj, indent=2)) == FULL


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"v":1}', "missing_field"),
        ("[]", "malformed"),
        ("", "malformed"),
        ("{", "malformed"),
        ("[" * 5000, "malformed"),
        ('{"v":1,"v":1}', "duplicate_field"),
        ("NaN", "malformed"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_json_gibberish(text: str | bytes, reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        label_from_json(POLICY, text)
    assert reason_of(exc) == reason


def _json_with(**changes: object) -> dict[str, object]:
    obj = json.loads(label_to_json(FULL))
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (_json_with(extra=1), "unknown_field"),
        (_json_with(v=2), "bad_version"),
        (_json_with(v=True), "bad_version"),
        (_json_with(created=True), "bad_created"),
        (_json_with(created=1.5), "bad_created"),
        (_json_with(id="sha256:" + "0" * 64), "id_mismatch"),
        (_json_with(categories={"REL": ["USA", "USA"]}), "duplicate_value:REL"),
        (_json_with(categories={"REL": "USA"}), "malformed"),
        (_json_with(categories={"REL": ["usa"]}), "bad_value"),
        (_json_with(categories={"REL": []}, id=None), "empty_category:REL"),
        (_json_with(categories={"HANDLING": ["ORCON"]}, id=None), "missing_required:REL"),
        (_json_with(classification="S"), "unknown_classification"),
        (_json_with(classification="S\ud800"), "unknown_classification"),
        (_json_with(policy="NATO"), "policy_mismatch"),
        (_json_with(originator="FRA"), "bad_originator"),
    ],
)
def test_json_invalid(obj: dict[str, object], reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        label_from_json_obj(POLICY, obj)
    assert reason_of(exc) == reason


# --- (a) CoT <__seclabel> --------------------------------------------------------------------


def test_seclabel_is_written_as_documented() -> None:
    assert seclabel_to_xml(POLICY, FULL) == (
        '<__seclabel v="1" policy="LIAISON-USA-UKR" cls="SECRET" orig="USA" '
        f'created="2025-11-25T12:00:00.000Z" id="{FULL.label_id}">'
        '<cat tag="HANDLING" type="RESTRICTIVE" v="ORCON" />'
        '<cat tag="REL" type="PERMISSIVE" v="USA UKR" />'
        '<cat tag="TLP" type="INFORMATIVE" v="AMBER" />'
        "</__seclabel>"
    )
    assert label_from_seclabel_xml(POLICY, seclabel_to_xml(POLICY, FULL)) == FULL


def test_seclabel_accepts_pretty_printing_and_any_value_order() -> None:
    text = """<__seclabel v="1" policy="LIAISON-USA-UKR" cls="SECRET" orig="USA"
        created="2025-11-25T12:00:00.000Z">
          <cat tag="REL" type="PERMISSIVE" v="UKR USA"/>
        </__seclabel>"""
    assert label_from_seclabel_xml(POLICY, text) == PLAIN


def _seclabel(attrs: str = "", cats: str = '<cat tag="REL" type="PERMISSIVE" v="USA"/>') -> str:
    base = (
        'v="1" policy="LIAISON-USA-UKR" cls="SECRET" orig="USA" created="2025-11-25T12:00:00.000Z"'
    )
    return f"<__seclabel {base} {attrs}>{cats}</__seclabel>"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # incomplete
        (_seclabel(cats=""), "missing_required:REL"),
        (
            '<__seclabel v="1" policy="LIAISON-USA-UKR" cls="SECRET" orig="USA"/>',
            "missing_attribute",
        ),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE"/>'), "missing_attribute"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v=""/>'), "bad_value"),
        # contradictory
        (_seclabel(cats='<cat tag="REL" type="RESTRICTIVE" v="USA"/>'), "type_mismatch:REL"),
        (_seclabel('id="sha256:' + "0" * 64 + '"'), "id_mismatch"),
        (
            _seclabel(
                cats='<cat tag="REL" type="PERMISSIVE" v="USA"/>'
                '<cat tag="REL" type="PERMISSIVE" v="UKR"/>'
            ),
            "duplicate_category:REL",
        ),
        # close but wrong
        (_seclabel(cats='<cat tag="REL" type="permissive" v="USA"/>'), "type_mismatch:REL"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="USA  UKR"/>'), "bad_value"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="USA USA"/>'), "duplicate_value:REL"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v=" USA"/>'), "bad_value"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="Usa"/>'), "bad_value"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="FRA"/>'), "unknown_value:REL"),
        (_seclabel(cats='<cat tag="Rel" type="PERMISSIVE" v="USA"/>'), "unknown_category"),
        (_seclabel('extra="1"'), "unknown_attribute"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="USA" x="1"/>'), "unknown_attribute"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="USA"/><bind/>'), "unknown_element"),
        (_seclabel(cats='<cat tag="REL" type="PERMISSIVE" v="USA">x</cat>'), "unexpected_text"),
        (_seclabel(cats='text<cat tag="REL" type="PERMISSIVE" v="USA"/>'), "unexpected_text"),
        (_seclabel().replace('v="1"', 'v="2"'), "bad_version"),
        (_seclabel().replace(".000Z", "Z"), "bad_time"),
        (_seclabel().replace("12:00:00", "25:00:00"), "bad_time"),
        # gibberish and hostile XML
        ("<__seclabel", "malformed"),
        ("", "malformed"),
        ("<x/>", "not_a_label"),
        ('<!DOCTYPE a [<!ENTITY e "x">]><__seclabel/>', "forbidden_markup"),
        (_seclabel(cats="<!-- c --><cat/>"), "forbidden_markup"),
        ('<__seclabel xmlns="urn:x"/>', "not_a_label"),
        ("x" * 300_000, "too_large"),
    ],
)
def test_seclabel_invalid(text: str, reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        label_from_seclabel_xml(POLICY, text)
    assert reason_of(exc) == reason


def _detail(inner: str) -> ET.Element:
    return ET.fromstring(f"<detail>{inner}</detail>")


def test_detail_extraction() -> None:
    one = seclabel_to_xml(POLICY, PLAIN)
    assert label_from_detail(POLICY, None) is None
    assert label_from_detail(POLICY, _detail('<contact callsign="A"/>')) is None
    assert label_from_detail(POLICY, _detail(f'<contact callsign="A"/>{one}')) == PLAIN
    detail = _detail("<contact/>")
    detail.append(label_to_seclabel(POLICY, FULL))
    assert label_from_detail(POLICY, detail) == FULL


@pytest.mark.parametrize(
    ("inner", "reason"),
    [
        ("{0}{0}", "duplicate_label"),
        ("<remarks>{0}</remarks>", "nested_label"),
        ("{0}<remarks>{0}</remarks>", "nested_label"),
        ('<x:__seclabel xmlns:x="urn:x"/>', "namespaced_label"),
        ("<__seclabel/>", "missing_attribute"),
    ],
)
def test_detail_label_tricks(inner: str, reason: str) -> None:
    detail = _detail(inner.format(seclabel_to_xml(POLICY, PLAIN)))
    with pytest.raises(LabelError) as exc:
        label_from_detail(POLICY, detail)
    assert reason_of(exc) == reason


def test_seclabel_element_round_trip() -> None:
    element = label_to_seclabel(POLICY, FULL)
    assert label_from_seclabel(POLICY, element) == FULL


# --- (c) banner -------------------------------------------------------------------------------


def test_banner_written_in_policy_order() -> None:
    assert label_to_banner(POLICY, PLAIN) == "SECRET//REL TO USA, UKR"
    assert label_to_banner(POLICY, FULL) == "SECRET//HANDLING ORCON//REL TO USA, UKR//TLP AMBER"
    for label in (PLAIN, FULL, lab("UNCLASSIFIED", REL=["LIAISON"], originator="UKR")):
        banner = label_to_banner(POLICY, label)
        back = label_from_banner(
            POLICY, banner, originator=label.originator, created_ms=label.created_ms
        )
        assert back == label


@pytest.mark.parametrize(
    ("banner", "reason"),
    [
        # out of order
        ("SECRET//REL TO UKR, USA", "out_of_order:REL"),
        ("SECRET//REL TO USA//HANDLING ORCON", "out_of_order:HANDLING"),
        ("SECRET//HANDLING ALPHA, ORCON//REL TO USA", "out_of_order:HANDLING"),
        # incomplete
        ("SECRET", "missing_required:REL"),
        ("SECRET//", "unknown_category"),
        ("SECRET//REL TO ", "unknown_value:REL"),
        ("//REL TO USA", "unknown_classification"),
        ("", "unknown_classification"),
        # contradictory
        ("SECRET//REL TO USA//REL TO UKR", "duplicate_category:REL"),
        ("SECRET//REL TO USA, USA", "duplicate_value:REL"),
        ("SECRET//REL TO USA//NOFORN", "unknown_category"),
        # close but wrong
        ("Secret//REL TO USA", "unknown_classification"),
        ("SECRET //REL TO USA", "unknown_classification"),
        ("SECRET//REL TO USA,UKR", "unknown_value:REL"),
        ("SECRET//REL TO USA ,UKR", "unknown_value:REL"),
        ("SECRET//REL USA", "unknown_category"),
        ("SECRET/REL TO USA", "unknown_classification"),
        ("SECRET//REL TO USA/UKR", "unknown_value:REL"),
        ("SECRET//REL TO U\u0405A", "unknown_value:REL"),
        ("S//REL TO USA", "unknown_classification"),
        ("UNCLASS//REL TO USA", "unknown_classification"),
        ("SECRET//REL TO USA//", "unknown_category"),
        # gibberish
        ("\x00\x01//\ufffd", "unknown_classification"),
        ("////////", "unknown_classification"),
    ],
)
def test_banner_invalid(banner: str, reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        label_from_banner(POLICY, banner, originator="USA", created_ms=T0)
    assert reason_of(exc) == reason


# --- (d) STANAG 4774 --------------------------------------------------------------------------


def test_4774_export_structure() -> None:
    text = label_to_stanag4774(POLICY, FULL)
    root = ET.fromstring(text)
    q = f"{{{NS_4774}}}"
    assert root.tag == q + "originatorConfidentialityLabel"
    info = root.find(q + "ConfidentialityInformation")
    assert info is not None
    pid = info.find(q + "PolicyIdentifier")
    assert pid is not None and pid.text == POLICY.id and pid.get("URI") == POLICY.uri
    assert [c.text for c in info.findall(q + "Classification")] == ["SECRET"]
    cats = {
        c.get("TagName"): (c.get("Type"), [v.text for v in c.findall(q + "GenericValue")])
        for c in info.findall(q + "Category")
    }
    assert cats == {
        "HANDLING": ("RESTRICTIVE", ["ORCON"]),
        "REL": ("PERMISSIVE", ["USA", "UKR"]),
        "TLP": ("INFORMATIVE", ["AMBER"]),
    }
    originator = root.find(q + "OriginatorID")
    assert originator is not None and originator.text == "urn:liaison:org:USA"
    assert originator.get("IDType") == "uniformResourceIdentifier"
    created = root.find(q + "CreationDateTime")
    assert created is not None and created.text == "2025-11-25T12:00:00.000Z"
    assert label_from_stanag4774(POLICY, text) == FULL


def test_4774_legacy_root_and_other_prefixes() -> None:
    text = label_to_stanag4774(POLICY, PLAIN, root="ConfidentialityLabel")
    assert text.startswith("<slab:ConfidentialityLabel ")
    assert label_from_stanag4774(POLICY, text) == PLAIN
    # Any prefix (or the default namespace) binds the same names.
    other = text.replace("slab:", "n:").replace("xmlns:slab", "xmlns:n")
    assert label_from_stanag4774(POLICY, other) == PLAIN
    default = text.replace("slab:", "").replace("xmlns:slab", "xmlns")
    assert label_from_stanag4774(POLICY, default.encode()) == PLAIN
    with pytest.raises(ValueError):
        label_to_stanag4774(POLICY, PLAIN, root="alternativeConfidentialityLabel")


def test_4774_import_accepts_other_time_forms_and_review() -> None:
    text = label_to_stanag4774(POLICY, PLAIN).replace(
        "2025-11-25T12:00:00.000Z", "2025-11-25T14:00:00.000999+02:00"
    )
    text = text.replace(
        "<slab:originatorConfidentialityLabel ",
        '<slab:originatorConfidentialityLabel ReviewDateTime="2030-01-01T00:00:00Z" ',
    )
    assert label_from_stanag4774(POLICY, text) == PLAIN


GOOD_4774 = label_to_stanag4774(POLICY, PLAIN)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GOOD_4774.replace(NS_4774, "urn:other"), "unsupported_root"),
        (
            GOOD_4774.replace("originatorConfidentialityLabel", "alternativeConfidentialityLabel"),
            "unsupported_root",
        ),
        (GOOD_4774.replace('Type="PERMISSIVE"', 'Type="permissive"'), "type_mismatch:REL"),
        (GOOD_4774.replace('Type="PERMISSIVE"', 'Type="RESTRICTIVE"'), "type_mismatch:REL"),
        (GOOD_4774.replace(">LIAISON-USA-UKR<", ">NATO<"), "policy_mismatch"),
        (GOOD_4774.replace("urn:oid:2.25.", "urn:oid:1.3."), "policy_mismatch"),
        (
            GOOD_4774.replace(
                "<slab:GenericValue>USA</slab:GenericValue>",
                "<slab:GenericValue> USA</slab:GenericValue>",
            ),
            "bad_value",
        ),
        (
            GOOD_4774.replace(
                "<slab:GenericValue>USA</slab:GenericValue>",
                "<slab:GenericValue>usa</slab:GenericValue>",
            ),
            "bad_value",
        ),
        (
            GOOD_4774.replace(
                "<slab:Classification>SECRET</slab:Classification>",
                "<slab:Classification>SECRET</slab:Classification>"
                "<slab:PrivacyMark>X</slab:PrivacyMark>",
            ),
            "unknown_element",
        ),
        (
            GOOD_4774.replace("<slab:Classification>SECRET</slab:Classification>", ""),
            "missing_element",
        ),
        (
            GOOD_4774.replace(
                '<slab:OriginatorID IDType="uniformResourceIdentifier">'
                "urn:liaison:org:USA</slab:OriginatorID>",
                "",
            ),
            "missing_element",
        ),
        (GOOD_4774.replace("uniformResourceIdentifier", "rfc822Name"), "bad_originator"),
        (GOOD_4774.replace("urn:liaison:org:USA", "urn:liaison:org:FRA"), "bad_originator"),
        (GOOD_4774.replace("2025-11-25T12:00:00.000Z", "yesterday"), "bad_time"),
        (
            GOOD_4774.replace('TagName="REL"', 'TagName="REL" URI="urn:oid:1.2"'),
            "unknown_attribute",
        ),
        (
            GOOD_4774.replace("<slab:Classification>", '<slab:Classification URI="x">'),
            "unknown_attribute",
        ),
        (
            GOOD_4774.replace(
                "</slab:CreationDateTime>", "</slab:CreationDateTime><slab:SuccessionHandling/>"
            ),
            "unknown_element",
        ),
        (GOOD_4774.replace("</slab:Category>", "</slab:Category>junk"), "unexpected_text"),
        ('<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>', "forbidden_markup"),
        ("<a><b></a>", "malformed"),
        (b"\x00\x01garbage", "malformed"),
    ],
)
def test_4774_invalid(text: str | bytes, reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        label_from_stanag4774(POLICY, text)
    assert reason_of(exc) == reason


# --- writers refuse invalid labels --------------------------------------------------------------


@pytest.mark.parametrize(
    "writer",
    [
        lambda lbl: label_to_banner(POLICY, lbl),
        lambda lbl: seclabel_to_xml(POLICY, lbl),
        lambda lbl: label_to_stanag4774(POLICY, lbl),
        lambda lbl: cot_marking(POLICY, lbl),
    ],
)
def test_writers_refuse_invalid_labels(writer: object) -> None:
    bad = lab("SECRET", REL=[])
    with pytest.raises(LabelError) as exc:
        writer(bad)  # type: ignore[operator]
    assert reason_of(exc) == "empty_category:REL"


# --- CoT root attributes --------------------------------------------------------------------------


def test_cot_marking_reads_as_the_tak_server_marking() -> None:
    marking = cot_marking(POLICY, PLAIN)
    assert (marking.access, marking.caveat, marking.releasable_to) == (
        "SECRET",
        None,
        "REL TO USA, UKR",
    )
    full = cot_marking(POLICY, FULL)
    assert (full.access, full.caveat, full.releasable_to) == (
        "SECRET",
        "HANDLING ORCON",
        "REL TO USA, UKR",
    )
    # TAK Server joins access//caveat//releasableTo (ClassificationServiceImpl.canAccess).
    joined = "//".join(p for p in (full.access, full.caveat, full.releasable_to) if p)
    assert joined == "SECRET//HANDLING ORCON//REL TO USA, UKR"


def test_cot_marking_conflicts() -> None:
    assert cot_marking_conflicts(POLICY, PLAIN, access=None, caveat=None, releasable_to=None) == ()
    assert (
        cot_marking_conflicts(
            POLICY, PLAIN, access="SECRET", caveat=None, releasable_to="REL TO USA, UKR"
        )
        == ()
    )
    assert cot_marking_conflicts(
        POLICY, PLAIN, access="UNCLASSIFIED", caveat="NOFORN", releasable_to="USA UKR"
    ) == ("access", "caveat", "releasableTo")


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (T0 + 123, "2025-11-25T12:00:00.123Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_time_format(ms: int, text: str) -> None:
    assert format_time_ms(ms) == text
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00.000Z",
        "1900-02-29T00:00:00.000Z",
        "2025-11-25T12:00:60.000Z",
        "2025-11-25 12:00:00.000Z",
        "2025-11-25T12:00:00.000+00:00",
        "\uff11\uff19\uff17\uff10-01-01T00:00:00.000Z",  # fullwidth digits
        "1969-12-31T23:59:59.999Z",
    ],
)
def test_time_strict_rejects(text: str) -> None:
    with pytest.raises(LabelError) as exc:
        parse_time_ms(text)
    assert reason_of(exc) == "bad_time"


def test_time_lenient() -> None:
    assert parse_time_ms("2025-11-25T12:00:00Z", strict=False) == T0
    assert parse_time_ms("2025-11-25T07:00:00.5-05:00", strict=False) == T0 + 500
    with pytest.raises(LabelError):
        parse_time_ms("2025-11-25T12:00:00+24:00", strict=False)
    with pytest.raises(ValueError):
        format_time_ms(-1)


def test_with_seclabel_replaces_every_copy_and_leaves_the_input_alone() -> None:
    old = seclabel_to_xml(POLICY, PLAIN)
    detail = _detail(
        f'<contact callsign="A"/>{old}<remarks>{old}</remarks><x:__seclabel xmlns:x="u"/>'
    )
    before = ET.tostring(detail)
    out = with_seclabel(POLICY, detail, FULL)
    assert ET.tostring(detail) == before
    assert label_from_detail(POLICY, out) == FULL
    assert [child.tag for child in out] == ["contact", "remarks", "__seclabel"]
    remarks = out.find("remarks")
    assert remarks is not None and len(remarks) == 0
    fresh = with_seclabel(POLICY, None, PLAIN)
    assert fresh.tag == "detail" and label_from_detail(POLICY, fresh) == PLAIN


def test_with_seclabel_without_nested_copies_gives_the_same_detail() -> None:
    """No __seclabel below the top level: the new detail shares the children (nothing is
    changed in place) and is the same XML as the deep copy's."""
    import copy

    old = seclabel_to_xml(POLICY, PLAIN)
    detail = _detail(
        f'<contact callsign="A"/>{old}<remarks>r</remarks><x:__seclabel xmlns:x="u"/><s a="1"/>'
    )
    before = ET.tostring(detail)
    out = with_seclabel(POLICY, detail, FULL)
    assert ET.tostring(detail) == before
    assert label_from_detail(POLICY, out) == FULL
    assert [child.tag for child in out] == ["contact", "remarks", "s", "__seclabel"]
    deep = copy.deepcopy(detail)
    for child in list(deep):
        if child.tag.rsplit("}", 1)[-1] == "__seclabel":
            deep.remove(child)
    deep.append(out[-1])
    assert ET.tostring(out) == ET.tostring(deep)
    plain = _detail('<contact callsign="A"/>')
    assert [c.tag for c in with_seclabel(POLICY, plain, FULL)] == ["contact", "__seclabel"]
    assert [c.tag for c in plain] == ["contact"]
