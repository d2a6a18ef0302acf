"""The tak-v2 peer keys of [[federation.peer]] and the CoT <-> FederatedEvent round trip."""

from __future__ import annotations

import pytest

from liaison.errors import ConfigError
from liaison.federation import fig_codec
from liaison.federation.config import PROTOCOL_NATIVE, PROTOCOL_TAK_V2
from liaison.federation.guard import OutboundGuard, Release
from liaison.federation.proto import fig_pb2
from tests.unit.federation.fed_support import POLICY, REL_BOTH, event, fed_config, peer, peer_table


def test_protocol_defaults_to_native_and_accepts_tak_v2() -> None:
    assert peer().protocol == PROTOCOL_NATIVE and peer().default_label is None
    p = peer(protocol="tak-v2", default_label={"classification": "SECRET", "REL": ["UKR"]})
    assert p.protocol == PROTOCOL_TAK_V2
    assert p.default_label is not None and p.default_label.originator == "UKR"
    # The server role: a TAK Server dials us.
    accepted = peer(protocol="tak-v2", dial=None, accept=True)
    assert accepted.protocol == PROTOCOL_TAK_V2 and accepted.dial is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"protocol": "tak-v3"}, "protocol"),
        ({"default_label": {"classification": "SECRET", "REL": ["UKR"]}}, "default_label"),
        ({"protocol": "tak-v2", "default_label": {"classification": "TOP"}}, "default_label"),
    ],
)
def test_bad_tak_v2_keys_are_refused(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        fed_config(peers=[peer_table(**overrides)])
    assert key in str(err.value)


def test_a_release_survives_translation_and_passes_the_recheck() -> None:
    p = peer(protocol="tak-v2")
    guard = OutboundGuard(policy=POLICY, peer=p, server_id="usa-srv")
    release = guard.check(
        event(
            label=REL_BOTH,
            detail='<contact callsign="ALPHA"/><track speed="2.0" course="45.0"/>'
            '<status battery="77"/>',
        )
    )
    assert isinstance(release, Release)
    fed = fig_codec.release_to_federated(release.payload, server_id="usa-srv", max_hops=1)
    geo = fed.event
    assert (geo.speed, geo.course, geo.battery) == (2.0, 45.0, 77)
    assert "<track" not in geo.other and "<__seclabel " in geo.other
    assert geo.access == "SECRET" and geo.releaseableTo
    back = fig_codec.federated_to_cot(fig_pb2.FederatedEvent.FromString(fed.SerializeToString()))
    assert guard.recheck(back, label_id=release.label_id, uid=release.uid, type=release.type) == ()


def test_other_that_is_not_one_detail_is_refused() -> None:
    fed = fig_pb2.FederatedEvent(
        event=fig_pb2.GeoEvent(uid="x", type="a-f-G", other="<remarks>hi</remarks>")
    )
    with pytest.raises(fig_codec.FigError) as err:
        fig_codec.federated_to_cot(fed)
    assert err.value.reason == "other_not_detail"


def test_one_parse_shared_and_the_readback_checked_as_a_tree() -> None:
    """The send-time re-check hands its tree to the translation (same message as from the
    bytes), and the serialized message decoded again is re-checked as a tree with the same
    outcome as its XML: passing, and refusing a changed label, uid or detail child."""
    guard = OutboundGuard(policy=POLICY, peer=peer(protocol="tak-v2"), server_id="usa-srv")
    release = guard.check(
        event(label=REL_BOTH, detail='<contact callsign="A"/><track speed="2.0" course="45.0"/>')
    )
    assert isinstance(release, Release)
    ids = {"label_id": release.label_id, "uid": release.uid, "type": release.type}
    problems, tree = guard.recheck_parsed(release.payload, **ids)
    assert problems == () and tree is not None
    shared, _facts = fig_codec.release_from_tree(tree, server_id="usa-srv", max_hops=1)
    alone = fig_codec.release_to_federated(release.payload, server_id="usa-srv", max_hops=1)
    assert shared.SerializeToString() == alone.SerializeToString()
    data = shared.SerializeToString()
    back = fig_codec.federated_to_tree(fig_pb2.FederatedEvent.FromString(data))
    assert guard.recheck_tree(back, **ids) == ()
    assert (
        guard.recheck(fig_codec.federated_to_cot(fig_pb2.FederatedEvent.FromString(data)), **ids)
        == ()
    )
    assert guard.recheck_tree(back, **{**ids, "uid": "other"}) == (
        "guard_mismatch",
        "identity_changed",
    )
    assert guard.recheck_tree(back, **{**ids, "label_id": "sha256:00"}) == (
        "guard_mismatch",
        "label_changed",
    )
    tampered = fig_pb2.FederatedEvent.FromString(data)
    tampered.event.other = tampered.event.other.replace("</detail>", "<secret/></detail>")
    assert guard.recheck_tree(fig_codec.federated_to_tree(tampered), **ids) == (
        "guard_mismatch",
        "detail_not_allowed",
    )
    # Bytes that do not parse give no tree.
    assert guard.recheck_parsed(b"<event", **ids) == (
        ("guard_mismatch", "unparsable:bad_xml"),
        None,
    )


def test_mission_dests_become_mission_names_and_back() -> None:
    p = peer(protocol="tak-v2", details={"a-": ["contact", "marti"]})
    guard = OutboundGuard(policy=POLICY, peer=p, server_id="usa-srv")
    release = guard.check(
        event(
            label=REL_BOTH,
            detail='<contact callsign="ALPHA"/><marti><dest mission="ops"/></marti>',
        )
    )
    assert isinstance(release, Release)
    fed = fig_codec.release_to_federated(release.payload, server_id="usa-srv", max_hops=1)
    assert list(fed.event.missionNames) == ["ops"]  # field 26 (tak-federation.md 4.2)
    back = fig_codec.federated_to_cot(fig_pb2.FederatedEvent.FromString(fed.SerializeToString()))
    assert b'<dest mission="ops"' in back
    # missionNames alone (TAK strips marti from other) is put back as a mission dest ...
    bare = fig_pb2.FederatedEvent(
        event=fig_pb2.GeoEvent(uid="x", type="a-h-G", other="<detail/>", missionNames=["ops"])
    )
    assert b'<marti><dest mission="ops" /></marti>' in fig_codec.federated_to_cot(bare)
    # ... and one whose other names other missions is refused.
    fed.event.missionNames[:] = ["elsewhere"]
    with pytest.raises(fig_codec.FigError) as err:
        fig_codec.federated_to_cot(fed)
    assert err.value.reason == "dest_mismatch"
