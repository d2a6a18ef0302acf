"""The router with labels on: one decision per access key, ingest rules, audit before release,
releases stopping while the audit log fails, and relabelling. In-memory subscribers and audit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from liaison.errors import StorageError
from liaison.gate import Gate, load_gate_config
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
    return Router(metrics=Metrics(), clock_ms=lambda: NOW, gate=gate), gate, audit


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
