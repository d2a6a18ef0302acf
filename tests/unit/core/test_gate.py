"""The router with labels on: one decision per access key, ingest rules, audit before release,
releases stopping while the audit log fails, and relabelling. In-memory subscribers and audit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from liaison.errors import StorageError
from liaison.gate import Gate, load_gate_config
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router

NOW = 1_700_000_000_000
POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]
[authz.profiles.usa-secret]
classification = "SECRET"
REL = ["USA"]
[authz.profiles.ukr-secret]
classification = "SECRET"
REL = ["UKR"]
[authz.profiles.ukr-unclass]
classification = "UNCLASSIFIED"
REL = ["UKR"]
[gate.listeners.tls]
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "UNCLASSIFIED"
[gate]
release_authorities = { USA = ["boss"] }
"""


class FakeAudit:
    def __init__(self) -> None:
        self.records: list[tuple[str, Mapping[str, object]]] = []
        self.fail = False

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> object:
        if self.fail:
            raise StorageError("disk full")
        self.records.extend(entries)
        return None


@dataclass(eq=False)
class Sub:
    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Event] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out.event)


def setup() -> tuple[Router, Gate, FakeAudit]:
    audit = FakeAudit()
    gate = Gate(load_gate_config(POLICY), audit=audit, clock_ms=lambda: NOW)
    return (
        Router(metrics=Metrics(), clock_ms=lambda: NOW, gate=gate, latest=MemoryLatestState()),
        gate,
        audit,
    )


def person(gate: Gate, name: str, org: str, profile: str) -> Principal:
    return Principal(name=name, org=org, auths=gate.for_profile(profile, "tls"), listener="tls")


def label(gate: Gate, cls: str, *rel: str) -> labels.Label:
    return labels.Label(
        policy_id="P",
        classification=cls,
        categories={"REL": frozenset(rel)},
        originator=rel[0],
        created_ms=NOW,
    )


def event(uid: str, lab: labels.Label | None = None, gate: Gate | None = None) -> Event:
    detail = ET.Element("detail")
    if lab is not None and gate is not None:
        detail.append(labels.label_to_seclabel(gate.policy, lab))
    return make_event(
        uid=uid,
        type="b-m-p-s-m",
        how="h-e",
        time=NOW,
        start=NOW,
        stale=NOW + 60_000,
        lat=1.0,
        lon=2.0,
        detail=detail,
    )


def test_labels_decide_delivery_and_releases_are_audited_first() -> None:
    router, gate, audit = setup()
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    ukr_u = Sub(person(gate, "ukr-u", "UKR", "ukr-unclass"))
    for s in (usa, ukr, ukr_u):
        router.attach(s)
    sender = Sub(person(gate, "usa2", "USA", "usa-secret"))
    assert router.publish(event("both", label(gate, "SECRET", "USA", "UKR"), gate), sender) == 2
    assert [len(s.got) for s in (usa, ukr, ukr_u)] == [1, 1, 0]
    kinds = [k for k, _ in audit.records]
    assert kinds == ["ingest", "release", "deny"]
    release = audit.records[1][1]
    assert release["to_org"] == "UKR" and release["recipients"] == ["ukr"]
    # Unlabelled: the listener default, releasable to the sender's own organisation only.
    assert router.publish(event("plain"), sender) == 1
    assert usa.got[-1].releasable_to == "REL TO USA"
    assert usa.got[-1].detail is not None and usa.got[-1].detail.find("__seclabel") is not None


def test_ingest_refuses_labels_the_sender_could_not_read() -> None:
    router, gate, audit = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    low = Sub(person(gate, "low", "UKR", "ukr-unclass"))
    assert router.publish(event("x", label(gate, "SECRET", "UKR"), gate), low) == 0
    assert ukr.got == []
    assert audit.records[-1][0] == "ingest" and audit.records[-1][1]["accepted"] is False


def test_releases_stop_while_the_audit_log_fails_and_resume_after() -> None:
    router, gate, audit = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    sender = Sub(person(gate, "usa", "USA", "usa-secret"))
    audit.fail = True
    assert router.publish(event("held", label(gate, "SECRET", "USA", "UKR"), gate), sender) == 0
    assert ukr.got == [] and router.congested
    audit.fail = False
    gate.recovered(audit)
    assert not router.congested
    assert router.audit_recovered() == 1
    assert [e.uid for e in ukr.got] == ["held"]


def test_one_decision_per_access_key_with_labels() -> None:
    import liaison.router as router_mod

    router, gate, _ = setup()
    subs = [
        Sub(person(gate, f"u{i}", "UKR", "ukr-secret" if i % 2 else "ukr-unclass"))
        for i in range(40)
    ]
    for s in subs:
        router.attach(s)
    calls = 0
    real = router_mod.can_see

    def counting(**kw: object) -> object:
        nonlocal calls
        calls += 1
        return real(**kw)  # type: ignore[arg-type]

    router_mod.can_see = counting  # type: ignore[assignment]
    try:
        router.publish(
            event("e", label(gate, "SECRET", "USA", "UKR"), gate),
            Sub(person(gate, "usa", "USA", "usa-secret")),
        )
    finally:
        router_mod.can_see = real
    assert calls == 2
    assert sum(len(s.got) for s in subs) == 20


def test_relabel_raising_is_open_lowering_needs_the_release_authority() -> None:
    router, gate, audit = setup()
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    router.attach(ukr)
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    router.publish(event("m", label(gate, "SECRET", "USA"), gate), usa)
    assert ukr.got == []
    widened = label(gate, "SECRET", "USA", "UKR")
    refused = router.relabel(usa.principal, "m", widened, "share with partner")
    assert refused is not None and not refused.allowed
    boss = person(gate, "boss", "USA", "usa-secret")
    assert router.relabel(boss, "m", widened, None) is not None  # no justification: refused
    allowed = router.relabel(boss, "m", widened, "agreed at the coordination meeting")
    assert allowed is not None and allowed.allowed
    assert [e.uid for e in ukr.got] == ["m"]
    assert [k for k, _ in audit.records if k == "relabel"] == ["relabel", "relabel", "relabel"]
    # A principal that may not see the item learns nothing: same answer as a missing uid.
    stranger = person(gate, "x", "UKR", "ukr-unclass")
    assert router.relabel(stranger, "m", widened, "x") is None
    assert router.relabel(stranger, "missing", widened, "x") is None


def test_the_documented_example_policy_loads() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "examples" / "policy.toml"
    config = load_gate_config(example.read_text())
    assert set(config.listeners) == {"tls", "https", "enroll"}
    assert config.listeners["tls"].default_classification == "UNCLASSIFIED"


def test_gate_config_errors_name_the_key() -> None:
    import pytest

    from liaison.errors import ConfigError

    bad = POLICY.replace(
        'default_classification = "UNCLASSIFIED"', 'default_classification = "TOP"'
    )
    with pytest.raises(ConfigError) as err:
        load_gate_config(bad)
    assert "gate.listeners.tls.default_classification" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_gate_config(
            POLICY + '\n[gate.listeners.ftp]\nceiling = { classification = "SECRET" }\n'
        )
    assert "gate.listeners.ftp" in str(err.value)


# --- who may change a stored item (updates and deletes) ----------------------------------------


def setup_partners(partner_updates: bool) -> tuple[Router, Gate, FakeAudit]:
    audit = FakeAudit()
    text = POLICY + f"partner_updates = {'true' if partner_updates else 'false'}\n"
    gate = Gate(load_gate_config(text), audit=audit, clock_ms=lambda: NOW)
    return (
        Router(metrics=Metrics(), clock_ms=lambda: NOW, gate=gate, latest=MemoryLatestState()),
        gate,
        audit,
    )


def delete(
    uid: str, target: str, lab: labels.Label | None = None, gate: Gate | None = None
) -> Event:
    base = event(uid, lab, gate)
    detail = base.detail if base.detail is not None else ET.Element("detail")
    ET.SubElement(detail, "link", {"uid": target, "relation": "none", "type": "none"})
    ET.SubElement(detail, "__forcedelete")
    return make_event(
        uid=uid,
        type="t-x-d-d",
        how="h-g-i-g-o",
        time=NOW,
        start=NOW,
        stale=NOW + 20_000,
        lat=0.0,
        lon=0.0,
        detail=detail,
    )


def rejected(router: Router, reason: str) -> float:
    return router.m_rejected.values.get(reason, 0)


def test_an_unlabelled_update_keeps_the_label_and_other_orgs_cannot_replace_it() -> None:
    router, gate, audit = setup()
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    for s in (usa, ukr):
        router.attach(s)
    secret = label(gate, "SECRET", "USA")
    router.publish(event("x", secret, gate), usa)
    # A UKR client sends an unlabelled event with the same uid: refused, audited, counted.
    published = router.publish_checked(event("x"), ukr)
    assert published.refused == ("prior_not_visible",) and published.event is None
    assert usa.got == []
    kind, fields = audit.records[-1]
    assert kind == "ingest" and fields["accepted"] is False and fields["uid"] == "x"
    assert fields["reasons"] == ["prior_not_visible"] and fields["org"] == "UKR"
    assert rejected(router, "prior_not_visible") == 1
    viewer = person(gate, "usa2", "USA", "usa-secret")
    found = router.find(viewer, "x")
    assert found is not None and found.access == "SECRET"
    # The USA user moves it from ATAK (no label): the stored label is kept, not the default.
    moved = router.publish_checked(event("x"), usa)
    assert moved.event is not None and moved.event.access == "SECRET"
    assert moved.event.releasable_to == "REL TO USA"
    assert router.find(viewer, "x") is moved.event
    # A lowering label is refused.
    lower = router.publish_checked(event("x", label(gate, "UNCLASSIFIED", "USA"), gate), usa)
    assert lower.refused == ("lowers_prior_label",)


def test_deletes_follow_the_same_rules_and_reach_who_could_see_the_item() -> None:
    router, gate, audit = setup()
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    usa2 = Sub(person(gate, "usa2", "USA", "usa-secret"))
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    for s in (usa, usa2, ukr):
        router.attach(s)
    router.publish(event("x", label(gate, "SECRET", "USA"), gate), usa)
    router.publish(event("both", label(gate, "SECRET", "USA", "UKR"), gate), usa)
    usa2.got.clear()
    ukr.got.clear()
    # UKR may not delete an item it cannot see, nor (by default) one it sees but USA made.
    for target, reason in (("x", "prior_not_visible"), ("both", "other_org_item")):
        published = router.publish_checked(delete(f"d-{target}", target), ukr)
        assert published.refused == (reason,), target
        assert audit.records[-1][1]["link_uid"] == target
    assert usa.got == [] and usa2.got == []
    assert {e.event.uid for e in router.latest_entries()} == {"x", "both"}
    # Another USA user deletes the shared item: the delete carries the item's label, so UKR,
    # who could see the item, is told too.
    done = router.publish_checked(delete("d-ok", "both"), usa2)
    assert done.event is not None and done.event.releasable_to == "REL TO USA, UKR"
    assert [e.type for e in ukr.got] == ["t-x-d-d"] and [e.type for e in usa.got] == ["t-x-d-d"]
    assert {e.event.uid for e in router.latest_entries()} == {"x"}


def test_partner_updates_is_a_policy_setting() -> None:
    router, gate, _ = setup_partners(True)
    assert gate.config.partner_updates is True
    usa = Sub(person(gate, "usa", "USA", "usa-secret"))
    ukr = Sub(person(gate, "ukr", "UKR", "ukr-secret"))
    for s in (usa, ukr):
        router.attach(s)
    router.publish(event("x", label(gate, "SECRET", "USA"), gate), usa)
    router.publish(event("both", label(gate, "SECRET", "USA", "UKR"), gate), usa)
    # Still never an item it cannot see.
    assert router.publish_checked(event("x"), ukr).refused == ("prior_not_visible",)
    moved = router.publish_checked(event("both"), ukr)
    assert moved.event is not None and moved.event.releasable_to == "REL TO USA, UKR"
    assert usa.got[-1] is moved.event
    gone = router.publish_checked(delete("d", "both"), ukr)
    assert gone.event is not None and usa.got[-1].type == "t-x-d-d"
    assert load_gate_config(POLICY).partner_updates is False


def test_partner_updates_must_be_a_boolean() -> None:
    import pytest

    from liaison.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_gate_config(POLICY + 'partner_updates = "yes"\n')
    assert "gate.partner_updates" in str(err.value)


def test_an_unlabelled_part_counts_in_the_label_of_a_data_package() -> None:
    router, gate, audit = setup()
    usa = person(gate, "usa", "USA", "usa-secret")
    shared = cot_xml_bytes(event("a", label(gate, "SECRET", "USA", "UKR"), gate))
    plain = cot_xml_bytes(event("b"))
    stored, refused = router.label_upload(usa, [shared, plain])
    assert refused == () and stored is not None
    lab = labels.label_from_json(gate.policy, stored)
    # The unlabelled part alone would be UNCLASSIFIED//REL TO USA: the package is USA-only.
    assert lab.classification == "SECRET" and lab.categories["REL"] == frozenset({"USA"})
    ukr = person(gate, "ukr", "UKR", "ukr-secret")
    assert not router.permits(ukr, sender_groups=usa.in_groups, label=stored)
    record = audit.records[-1][1]
    assert record["parts_labelled"] == 1 and record["parts_unlabelled"] == 1
    # Without a default label an unlabelled part is refused, as it would be alone.
    nodefault, _, _ = setup_partners(False)
    anon = Principal(name="n", org="USA", auths=usa.auths, listener="https")
    assert nodefault.label_upload(anon, [shared, plain]) == (None, ("no_label",))


def cot_xml_bytes(ev: Event) -> bytes:
    from liaison.protocol import cot_xml

    return cot_xml.render_xml(ev)


def test_a_partner_may_not_relabel_another_organisations_item_unless_the_policy_allows() -> None:
    for partner_updates in (False, True):
        router, gate, audit = setup_partners(partner_updates)
        usa = Sub(person(gate, "usa", "USA", "usa-secret"))
        ukr = person(gate, "ukr", "UKR", "ukr-secret")
        router.attach(usa)
        router.publish(event("u", label(gate, "UNCLASSIFIED", "USA", "UKR"), gate), usa)
        raised = label(gate, "SECRET", "USA", "UKR")  # a raise UKR could read
        result = router.relabel(ukr, "u", raised, None)
        assert result is not None
        viewer = person(gate, "usa2", "USA", "usa-secret")
        found = router.find(viewer, "u")
        assert found is not None
        if partner_updates:
            assert result.allowed and found.access == "SECRET"
        else:
            assert not result.allowed and result.reasons == ("other_org_item",)
            assert found.access == "UNCLASSIFIED"
            kind, fields = audit.records[-1]
            assert kind == "relabel" and fields["allowed"] is False
            assert fields["reasons"] == ["other_org_item"]
            # The originating organisation may still raise it.
            mine = router.relabel(person(gate, "usa3", "USA", "usa-secret"), "u", raised, None)
            assert mine is not None and mine.allowed


def test_a_sender_of_an_organisation_the_policy_does_not_know_is_refused_not_raised() -> None:
    """A certificate user whose organisation is no value of REL: a new unlabelled item would get
    a default label naming that organisation, which cannot be built. It is a refusal
    (``bad_sender_org``), counted, never an exception out of the session."""
    router, gate, _audit = setup()
    reader = Sub(person(gate, "usa", "USA", "usa-secret"))
    router.attach(reader)
    stranger = Sub(person(gate, "fra", "FRA", "usa-secret"))
    outcome = gate.ingest(event("new-item"), stranger.principal, None)
    assert (outcome.event, outcome.reasons) == (None, ("bad_sender_org",))
    labelled = event("labelled", label(gate, "SECRET", "USA"), gate)
    assert gate.ingest(labelled, stranger.principal, None).reasons == ("bad_sender_org",)
    assert router.publish(event("new-item"), stranger) == 0
    assert reader.got == []
    assert gate.aggregate([None], stranger.principal, NOW) == (None, ("bad_sender_org",))
