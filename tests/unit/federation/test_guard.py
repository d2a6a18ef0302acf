"""The outbound guard and the inbound validator, table-driven."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from liaison.federation.guard import (
    Accepted,
    Denial,
    InboundValidator,
    OutboundGuard,
    Rejected,
    Release,
    _shape,
    read_provenance,
)
from liaison.model.labels import Label
from liaison.protocol import cot_xml
from tests.unit.federation.fed_support import (
    ORCON,
    POLICY,
    REL_BOTH,
    UKR_ORIG,
    UNCLASS_LIAISON,
    USA_ONLY,
    cot,
    event,
    lab,
    peer,
    seclabel,
)

CONTACT = '<contact callsign="ALPHA" endpoint="*:-1:stcp"/><__group name="Cyan"/>'


def guard(**overrides: object) -> OutboundGuard:
    return OutboundGuard(
        policy=POLICY, peer=peer(**overrides), server_id="usa-srv", peer_server_id="ukr-srv"
    )


# (case id, label, cot type, detail, peer overrides, expected denial reason or None)
CASES: list[tuple[str, Label | None, str, str, dict[str, object], str | None]] = [
    ("rel-both", REL_BOTH, "a-f-G-U-C", CONTACT, {}, None),
    ("liaison-community", UNCLASS_LIAISON, "a-f-G-U-C", CONTACT, {}, None),
    ("usa-only", USA_ONLY, "a-f-G-U-C", CONTACT, {}, "permissive_not_held:REL"),
    ("orcon", ORCON, "a-f-G-U-C", CONTACT, {}, "restrictive_not_held:HANDLING"),
    ("unlabelled", None, "a-f-G-U-C", CONTACT, {}, "no_label"),
    (
        "over-ceiling",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT,
        {"release_ceiling": {"classification": "CONFIDENTIAL", "REL": ["UKR"]}},
        "class_exceeds",
    ),
    ("type-not-allowed", REL_BOTH, "u-rb-a", "", {}, "type_not_allowed"),
    ("control", REL_BOTH, "t-x-c-t", "", {"allow_types": ["t-"]}, "control_message"),
    (
        "detail-deny",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__video url="rtsp://secret"/>',
        {"detail_policy": "deny"},
        "detail_not_allowed",
    ),
    (
        "relayed",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__federation origin="fra-srv" hops="1"/>',
        {},
        "relay_not_allowed",
    ),
    (
        "relayed-hop-limit",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__federation origin="fra-srv" hops="2"/>',
        {"relay": True, "max_hops": 2},
        "hop_limit",
    ),
    (
        "back-to-origin",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__federation origin="ukr-srv" hops="1"/>',
        {"relay": True, "max_hops": 3},
        "loop_peer_origin",
    ),
    (
        "own-origin-came-back",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__federation origin="usa-srv" hops="1"/>',
        {"relay": True, "max_hops": 3},
        "loop_own_origin",
    ),
    (
        "two-provenances",
        REL_BOTH,
        "a-f-G-U-C",
        CONTACT + '<__federation origin="a" hops="1"/><__federation origin="b" hops="1"/>',
        {"relay": True, "max_hops": 3},
        "duplicate_provenance",
    ),
]


@pytest.mark.parametrize(
    ("case", "label", "cot_type", "detail", "over", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_guard_decisions(
    case: str,
    label: Label | None,
    cot_type: str,
    detail: str,
    over: dict[str, object],
    reason: str | None,
) -> None:
    verdict = guard(**over).check(event(label=label, cot_type=cot_type, detail=detail))
    if reason is None:
        assert isinstance(verdict, Release), verdict
    else:
        assert isinstance(verdict, Denial), verdict
        assert reason in verdict.reasons
        assert verdict.stage == "guard"


def test_release_bytes_carry_label_marking_and_provenance_and_pass_the_recheck() -> None:
    g = guard()
    verdict = g.check(event(label=REL_BOTH, uid="u-1"))
    assert isinstance(verdict, Release)
    ev = cot_xml.parse_event(verdict.payload)
    assert ev.uid == "u-1" and ev.access == "SECRET" and ev.releasable_to == "REL TO USA, UKR"
    assert read_provenance(ev.detail) is not None
    assert verdict.banner == "SECRET//REL TO USA, UKR"
    assert verdict.priority == 2 and verdict.coalesce_key == "u-1"
    assert g.recheck(verdict.payload, label_id=verdict.label_id, uid="u-1", type=ev.type) == ()


def test_unlisted_details_are_removed_by_default_and_named() -> None:
    verdict = guard().check(
        event(label=REL_BOTH, detail=CONTACT + '<__video url="rtsp://CANARY"/><_flow-tags_/>')
    )
    assert isinstance(verdict, Release)
    assert set(verdict.removed) == {"__video", "_flow-tags_"}
    assert b"CANARY" not in verdict.payload and b"_flow-tags_" not in verdict.payload


def test_client_markings_are_replaced_not_trusted() -> None:
    verdict = guard().check(
        event(label=REL_BOTH, root_attrs=' access="UNCLASSIFIED" releasableTo="REL TO ALL"')
    )
    assert isinstance(verdict, Release)
    assert b'access="SECRET"' in verdict.payload and b"REL TO ALL" not in verdict.payload


def test_priorities_emergencies_then_chats_then_the_rest() -> None:
    g = guard()
    prios = {}
    for t in ("b-a-o-tbl", "b-t-f", "a-f-G-U-C", "t-x-d-d"):
        v = g.check(event(label=REL_BOTH, cot_type=t, detail="<link uid='x'/>"))
        assert isinstance(v, Release), (t, v)
        prios[t] = v.priority
    assert prios == {"b-a-o-tbl": 0, "b-t-f": 1, "a-f-G-U-C": 2, "t-x-d-d": 2}


def test_only_self_position_reports_coalesce() -> None:
    g = guard()
    marker = g.check(event(label=REL_BOTH, detail='<contact callsign="M"/>'))
    chat = g.check(event(label=REL_BOTH, cot_type="b-t-f", detail="<remarks>x</remarks>"))
    assert isinstance(marker, Release) and marker.coalesce_key is None
    assert isinstance(chat, Release) and chat.coalesce_key is None
    no_coalesce = guard(coalesce=False).check(event(label=REL_BOTH))
    assert isinstance(no_coalesce, Release) and no_coalesce.coalesce_key is None


# --- the independent re-check catches bytes that differ from what was decided ---------------


def _tamper(payload: bytes, old: bytes, new: bytes) -> bytes:
    # ElementTree and the CoT serializer differ only in the space before "/>".
    payload, old, new = (b.replace(b" />", b"/>") for b in (payload, old, new))
    assert old in payload
    return payload.replace(old, new, 1)


TAMPERS = [
    ("label-edited", b'v="USA UKR"', b'v="USA"', "invalid_label:id_mismatch"),
    (
        "label-swapped",
        seclabel(REL_BOTH).encode(),
        seclabel(USA_ONLY).encode(),
        "permissive_not_held:REL",
    ),
    (
        "label-lowered",
        seclabel(REL_BOTH).encode(),
        seclabel(lab("UNCLASSIFIED", REL=["USA", "UKR"])).encode(),
        "label_changed",
    ),
    ("label-dropped", seclabel(REL_BOTH).encode(), b"<remarks />", "no_label"),
    ("marking", b'access="SECRET"', b'access="UNCLASSIFIED"', "marking_conflict"),
    ("detail-smuggled", b"<__group", b"<__video/><__group", "detail_not_allowed"),
    ("uid", b'uid="u-1"', b'uid="u-2"', "identity_changed"),
    ("provenance", b'hops="1"', b'hops="7"', "hop_limit"),
    ("not-xml", b"</detail>", b"</detal>", "unparsable:bad_xml"),
]


@pytest.mark.parametrize(("case", "old", "new", "reason"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_recheck_catches_a_tampered_byte_string(
    case: str, old: bytes, new: bytes, reason: str
) -> None:
    g = guard()
    verdict = g.check(event(label=REL_BOTH, uid="u-1"))
    assert isinstance(verdict, Release)
    bad = _tamper(verdict.payload, old, new)
    problems = g.recheck(bad, label_id=verdict.label_id, uid="u-1", type="a-f-G-U-C")
    assert problems[0] == "guard_mismatch"
    assert any(p.startswith(reason) for p in problems), problems


def test_a_serializer_that_loses_the_label_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the renderer writes another (valid) label than the one decided on."""
    real = cot_xml.serialize_element

    def broken(el: ET.Element) -> str:
        return seclabel(USA_ONLY) if el.tag == "__seclabel" else real(el)

    monkeypatch.setattr(cot_xml, "serialize_element", broken)
    verdict = guard().check(event(label=REL_BOTH))
    assert isinstance(verdict, Denial) and verdict.stage == "recheck"
    assert verdict.reasons[0] == "guard_mismatch"
    assert "label_changed" in verdict.reasons and "permissive_not_held:REL" in verdict.reasons


def test_guard_is_total() -> None:
    g = guard()
    weird = event(label=REL_BOTH, detail="<__seclabel/>")
    verdict = g.check(weird)
    assert isinstance(verdict, Denial)
    assert verdict.reasons[0].startswith("invalid_label")
    nested = event(label=None, detail=f"<x>{seclabel(REL_BOTH)}</x>")
    verdict = g.check(nested)
    assert isinstance(verdict, Denial) and verdict.reasons == ("invalid_label:nested_label",)


def test_label_reader_memo_matches_a_fresh_parse() -> None:
    g = guard()
    for label in (REL_BOTH, lab("SECRET", REL=["UKR", "USA"]), UNCLASS_LIAISON):
        v1 = g.check(event(label=label))
        v2 = g.check(event(label=label))
        assert isinstance(v1, Release) and isinstance(v2, Release)
        assert v1.label_id == v2.label_id == label.label_id


# --- inbound -----------------------------------------------------------------------------------


def validator(**overrides: object) -> InboundValidator:
    return InboundValidator(
        policy=POLICY, peer=peer(**overrides), server_id="usa-srv", peer_server_id="ukr-srv"
    )


PROV = '<__federation origin="ukr-srv" hops="1"/>'

INBOUND: list[tuple[str, bytes, str | None]] = [
    ("ok", cot(label=UKR_ORIG, detail=CONTACT + PROV), None),
    ("unlabelled", cot(detail=CONTACT + PROV), "no_label"),
    ("usa-originated", cot(label=REL_BOTH, detail=CONTACT + PROV), "originator_mismatch"),
    (
        "excludes-peer",
        cot(label=lab("SECRET", originator="UKR", REL=["USA"]), detail=CONTACT + PROV),
        "excludes_sender_org",
    ),
    (
        "over-originate-ceiling",
        cot(
            label=lab("SECRET", originator="UKR", REL=["UKR"], HANDLING=["ALPHA"]),
            detail=CONTACT + PROV,
        ),
        "not_readable_by_sender",
    ),
    ("no-provenance", cot(label=UKR_ORIG, detail=CONTACT), "no_provenance"),
    (
        "our-own-event",
        cot(label=UKR_ORIG, detail=CONTACT + '<__federation origin="usa-srv" hops="1"/>'),
        "loop_own_origin",
    ),
    (
        "relayed",
        cot(label=UKR_ORIG, detail=CONTACT + '<__federation origin="fra-srv" hops="2"/>'),
        "hop_limit",
    ),
    (
        "wrong-origin",
        cot(label=UKR_ORIG, detail=CONTACT + '<__federation origin="fra-srv" hops="1"/>'),
        "origin_mismatch",
    ),
    ("type", cot(label=UKR_ORIG, cot_type="u-rb-a", detail=PROV), "type_not_allowed"),
    (
        "marking",
        cot(label=UKR_ORIG, detail=CONTACT + PROV, root_attrs=' access="UNCLASSIFIED"'),
        "marking_conflict",
    ),
    ("garbage", b"<event", "unparsable:bad_xml"),
]


@pytest.mark.parametrize(("case", "payload", "reason"), INBOUND, ids=[c[0] for c in INBOUND])
def test_inbound_validation(case: str, payload: bytes, reason: str | None) -> None:
    result = validator().check(payload)
    if reason is None:
        assert isinstance(result, Accepted), result
        assert result.provenance.origin == "ukr-srv"
    else:
        assert isinstance(result, Rejected), result
        assert reason in result.reasons
        assert len(result.sha256) == 64


def test_what_one_guard_releases_the_other_side_accepts() -> None:
    ukr_side_guard = OutboundGuard(
        policy=POLICY,
        peer=peer(
            name="usa",
            release_ceiling={"classification": "SECRET", "REL": ["USA"]},
            originate={"org": "USA", "classification": "SECRET", "REL": ["USA"]},
        ),
        server_id="ukr-srv",
    )
    verdict = ukr_side_guard.check(event(label=UKR_ORIG))
    assert isinstance(verdict, Release)
    result = validator().check(verdict.payload)
    assert isinstance(result, Accepted)
    assert result.sha256 == verdict.sha256


def test_a_directed_message_goes_with_its_dests_or_not_at_all() -> None:
    dm = '<remarks>hi</remarks><marti><dest uid="uid-ukr-s"/></marti>'
    kept = guard().check(event(label=REL_BOTH, cot_type="b-t-f", detail=dm))
    assert isinstance(kept, Release) and b'<dest uid="uid-ukr-s"' in kept.payload
    # A type whose allowlist has no marti would lose the dests and become a broadcast: denied.
    refused = guard().check(event(label=REL_BOTH, cot_type="a-f-G-U-C", detail=CONTACT + dm))
    assert isinstance(refused, Denial) and "directed_without_dest" in refused.reasons


def _shape_by_search(detail: ET.Element) -> tuple[int, int, bool, bool]:
    """The shape as first written: every matching element looked up among the direct ones."""
    direct_labels = [c for c in detail if c.tag == "__seclabel"]
    direct_prov = [c for c in detail if c.tag == "__federation"]
    odd_label = odd_prov = False
    for el in detail.iter():
        if not isinstance(el.tag, str) or el is detail:
            continue
        if el.tag.endswith("__seclabel"):
            odd_label = odd_label or not any(el is f for f in direct_labels)
        elif el.tag == "__federation":
            odd_prov = odd_prov or not any(el is f for f in direct_prov)
    return len(direct_labels), len(direct_prov), odd_label, odd_prov


def test_shape_counts_odd_labels_and_provenance_in_one_walk() -> None:
    # The one-walk count agrees with a search per element on every kind of odd placement.
    label = seclabel(REL_BOTH)
    prov = '<__federation origin="usa-srv" hops="1"/>'
    details = [
        f"<detail>{label}</detail>",
        f"<detail>{label}{label}</detail>",
        f"<detail>{label}<x>{label}</x></detail>",
        f"<detail><x>{label}</x></detail>",
        f'<detail xmlns:n="urn:n">{label}<n:__seclabel/></detail>',
        "<detail><x__seclabel/></detail>",
        f"<detail>{prov}</detail>",
        f"<detail>{prov}<y>{prov}</y></detail>",
        f"<detail>{prov}{prov}{label}</detail>",
        "<detail><contact callsign='A'/><remarks>r</remarks></detail>",
        "<detail/>",
    ]
    seen = set()
    for text in details:
        detail = ET.fromstring(text)
        shape = _shape(detail)
        got = (len(shape.labels), len(shape.provenance), shape.odd_label, shape.odd_provenance)
        assert got == _shape_by_search(detail), text
        seen.add(got[2:])
    # Comments and processing instructions (kept by a parser that keeps them) are skipped.
    builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
    parser = ET.XMLParser(target=builder)
    parser.feed(f"<detail><!-- c --><?pi x?>{label}</detail>".encode())
    detail = parser.close()
    shape = _shape(detail)
    assert (len(shape.labels), shape.odd_label, shape.odd_provenance) == (1, False, False)
    assert _shape_by_search(detail) == (1, 0, False, False)
    assert seen == {(False, False), (True, False), (False, True)}
