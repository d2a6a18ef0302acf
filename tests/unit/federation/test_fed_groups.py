"""Group mapping, contacts and loop rules of the TAK wires (fed_groups.py, fed_contacts.py,
fig_codec.py), the config keys, and the link's fail-closed outbound mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.errors import ConfigError
from liaison.federation import fed_contacts, fed_groups, fig_codec
from liaison.federation.config import Address, listen_warning
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outbox
from liaison.federation.proto import fig_pb2
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.router import Outgoing, Router
from tests.unit.federation.fed_support import POLICY, REL_BOTH, event, fed_config, peer, peer_table
from tests.unit.federation.test_peer_link import MemoryAudit

T0 = 1_764_072_000_000
IN = {"FedBlue": frozenset({"Blue"}), "*": frozenset({"Red"})}
OUT = {"Blue": frozenset({"FedBlue", "FedAll"}), "Green": frozenset({"FedAll"})}


def test_outbound_names_fail_closed() -> None:
    assert fed_groups.outbound_names(None, {"Red"}) == ()
    assert fed_groups.outbound_names(OUT, {"Blue", "Red"}) == ("FedAll", "FedBlue")
    assert fed_groups.outbound_names(OUT, {"Green"}) == ("FedAll",)
    assert fed_groups.outbound_names(OUT, {"Red"}) is None
    assert fed_groups.outbound_names(OUT, frozenset()) is None
    assert fed_groups.announced(OUT) == ("FedAll", "FedBlue")
    assert fed_groups.announced(None) == ()


def test_inbound_groups_and_the_wildcard() -> None:
    default = frozenset({"__ANON__"})
    assert fed_groups.inbound_groups(None, ["x"], default) == default
    assert fed_groups.inbound_groups(IN, ["FedBlue"], default) == {"Blue"}
    assert fed_groups.inbound_groups(IN, [], default) == {"Red"}  # stock TAK: no names
    assert fed_groups.inbound_groups(IN, ["Other"], default) == {"Red"}
    assert fed_groups.inbound_groups(IN, ["FedBlue", "Other"], default) == {"Blue", "Red"}
    named = {"FedBlue": frozenset({"Blue"})}
    assert fed_groups.inbound_groups(named, [], default) is None
    assert fed_groups.inbound_groups(named, ["Other"], default) is None
    assert fed_groups.not_federated("t-x-m-c") == "mission_control"
    assert fed_groups.not_federated("t-x-d-d") is None


def test_config_keys() -> None:
    p = peer(protocol="tak-v2", groups_in={"*": ["Red"]}, groups_out={"Blue": ["FedBlue"]})
    assert p.groups_in == {"*": {"Red"}} and p.groups_out == {"Blue": {"FedBlue"}}
    assert p.out_groups == {"Blue"} and p.in_groups == {"Red"}
    for bad, key in (
        ({"groups_out": {"Blue": ["X"]}}, "groups_out"),  # native peer
        ({"protocol": "tak-v2", "groups_out": {"*": ["X"]}}, "groups_out"),
        ({"protocol": "tak-v2", "groups_in": {"X": []}}, "groups_in"),
        ({"protocol": "tak-v2", "groups_in": {"X": ["*"]}}, "groups_in"),
        ({"protocol": "tak-v2", "groups_in": {"X": ["A"]}, "in_groups": ["A"]}, "groups_in"),
        ({"protocol": "tak-v2", "groups_out": {"A": ["X"]}, "out_groups": ["A"]}, "groups_out"),
    ):
        with pytest.raises(ConfigError) as err:
            peer(**bad)
        assert key in str(err.value)


def test_listen_default_port_is_the_native_links_own() -> None:
    assert fed_config().listen == Address("0.0.0.0", 9006)
    assert listen_warning(fed_config()) is None
    accepting = [peer_table(dial=None, accept=True)]
    old = fed_config(listen="0.0.0.0:9001", peers=accepting)
    assert old.listen == Address("0.0.0.0", 9001)  # still accepted...
    assert listen_warning(old) == (  # ...with a warning at start
        "federation: listen = 0.0.0.0:9001 uses port 9001, TAK federation v2's port; the"
        " native link's own default is now 9006 (set [federation] listen to move)"
    )
    # Only TAK peers dial 9001: TAK's own port, nothing to warn about.
    tak = [peer_table(dial=None, accept=True, protocol="tak-v2")]
    assert listen_warning(fed_config(listen="0.0.0.0:9001", peers=tak)) is None


def _link(tmp_path: Path, audit: MemoryAudit, **kw: object) -> PeerLink:
    fed = fed_config(peers=[peer_table(protocol="tak-v2", **kw)])
    return PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState()),
        audit=audit,
        outbox=Outbox.open(tmp_path / "ukr.db", durable=False),
        status=FederationStatus("usa-srv", Metrics()).add("ukr", None, "tak-v2"),
        clock_ms=lambda: T0,
    )


def test_link_maps_groups_and_refuses_what_matches_no_mapping(tmp_path: Path) -> None:
    audit = MemoryAudit()
    link = _link(tmp_path, audit, groups_out={"Blue": ["FedBlue"]})
    link.deliver(Outgoing(event(label=REL_BOTH, uid="blue"), frozenset({"Blue", "X"})))
    # No groups known (a path that lost them) or unmapped ones: refused, never queued.
    link.deliver(Outgoing(event(label=REL_BOTH, uid="nogroups")))
    link.deliver(Outgoing(event(label=REL_BOTH, uid="red"), frozenset({"Red"})))
    link.deliver(
        Outgoing(event(label=REL_BOTH, uid="mission", cot_type="t-x-m-c"), frozenset({"Blue"}))
    )
    link.flush()
    kinds = [(k, f["uid"], tuple(f.get("reasons", ()))) for k, f in audit.records]  # type: ignore[arg-type]
    assert kinds == [
        ("release", "blue", ()),
        ("deny", "nogroups", ("no_group_mapping",)),
        ("deny", "red", ("no_group_mapping",)),
        ("deny", "mission", ("mission_control",)),
    ]
    assert link.status.drops == {"no_group_mapping_out": 2, "mission_control": 1}
    link.outbox.start_connection(0)
    (row,) = link.outbox.take(10)
    assert row.uid == "blue" and row.groups == ("FedBlue",)
    link.outbox.close()
    # The names survive a reopen of the outbox (the column is persistent).
    again = Outbox.open(tmp_path / "ukr.db", durable=False)
    again.start_connection(0)
    assert [r.groups for r in again.take(10)] == [("FedBlue",)]
    again.close()


def _geo(**kw: object) -> fig_pb2.GeoEvent:
    base: dict[str, object] = {
        "sendTime": T0,
        "startTime": T0,
        "staleTime": T0 + 60_000,
        "uid": "u1",
        "type": "b-t-f",
        "other": "<detail><remarks>hi</remarks></detail>",
    }
    base.update(kw)
    return fig_pb2.GeoEvent(**base)  # type: ignore[arg-type]


def test_ptp_fields_become_explicit_destinations() -> None:
    geo = _geo()
    geo.ptpUids.append("client-1")
    geo.ptpCallsigns.append("BRAVO")
    geo.missionNames.append("m1")
    xml = fig_codec.federated_to_cot(fig_pb2.FederatedEvent(event=geo))
    dests = {(d.uid, d.callsign, d.mission) for d in event_of(xml).dests}
    assert dests == {("client-1", None, None), (None, "BRAVO", None), (None, None, "m1")}
    # A dest list in other that disagrees with the ptp fields is refused.
    geo2 = _geo(other='<detail><marti><dest uid="someone-else"/></marti></detail>')
    geo2.ptpUids.append("client-1")
    with pytest.raises(fig_codec.FigError, match="dest_mismatch"):
        fig_codec.federated_to_cot(fig_pb2.FederatedEvent(event=geo2))


def event_of(xml: bytes):  # type: ignore[no-untyped-def]
    from liaison.protocol import cot_xml

    return cot_xml.parse_event(xml)


def test_inbound_hops_never_below_what_the_message_says() -> None:
    geo = _geo(type="a-h-G", other='<detail><__federation origin="ukr" hops="1" /></detail>')
    fed = fig_pb2.FederatedEvent(event=geo)
    fed.federateHops.currentHops = 3
    xml = fig_codec.inbound_cot(
        fed, policy=POLICY, server_id="usa-srv", peer_server_id="ukr", default_label=None, now_ms=T0
    )
    assert b'hops="3"' in xml


def test_contacts_both_ways() -> None:
    hello = fed_contacts.contact_create("u1", "ALPHA")
    assert (hello.contact.operation, hello.contact.uid, hello.contact.callsign) == (
        fig_pb2.CREATE,
        "u1",
        "ALPHA",
    )
    got = fed_contacts.contact_as_event(hello, T0)
    assert got is not None
    xml = fig_codec.federated_to_cot(got)
    ev = event_of(xml)
    assert ev.is_contact and ev.callsign == "ALPHA" and ev.type == "a-f-G-U-C"
    assert ev.stale == T0 + fed_contacts.CONTACT_STALE_S * 1000
    bye = fed_contacts.contact_delete("u1", "a-f-G-U-C")
    got = fed_contacts.contact_as_event(bye, T0)
    assert got is not None
    ev = event_of(fig_codec.federated_to_cot(got))
    assert ev.is_delete and ev.link_uid == "u1"
    read = fig_pb2.FederatedEvent(contact=fig_pb2.ContactListEntry(operation=fig_pb2.READ))
    assert fed_contacts.contact_as_event(read, T0) is None
    bad = fig_pb2.FederatedEvent(
        contact=fig_pb2.ContactListEntry(operation=fig_pb2.CREATE, uid="a\nb")
    )
    with pytest.raises(fed_contacts.ContactError):
        fed_contacts.contact_as_event(bad, T0)
