"""cluster/access.py without NATS: what a node announces of its own files and sign-outs, and
what it does with another node's notices (the NATS side: tests/integration/test_cluster.py)."""

from __future__ import annotations

from pathlib import Path

from liaison.api.auth import WebSessions
from liaison.cluster.access import MAX_SIGN_OUTS, AccessShare
from liaison.cluster.bus import ClusterSettings, NatsBus
from liaison.identity.events import EXPIRED, SIGNED_OUT, AccessEnded
from liaison.identity.groups import GroupRules
from liaison.identity.principals import Identities
from liaison.identity.users import UserDirectory
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.protocol import cluster_wire
from liaison.protocol.cluster_wire import KIND_SIGN_OUT, KIND_USER, AccessNotice
from liaison.router import Router
from liaison.session import SessionRegistry

PREFIX = "liaison"


def share(tmp_path: Path) -> tuple[AccessShare, Identities, UserDirectory, WebSessions, Metrics]:
    metrics = Metrics()
    router = Router(metrics=metrics, clock_ms=lambda: 0, latest=MemoryLatestState())
    bus = NatsBus(ClusterSettings(servers=("nats://127.0.0.1:1",), node="me"), router, metrics)
    users = UserDirectory.load(tmp_path / "users.json")
    ids = Identities(
        cert_username_regex=r"CN=([^,]+)", groups=GroupRules(), users=users, server_pki=None
    )
    registry = SessionRegistry(lambda: 0)
    registry.follow(ids.events)
    web = WebSessions(lambda: 0.0)
    return AccessShare(bus, ids, registry, web, metrics), ids, users, web, metrics


def test_only_new_revocations_of_this_nodes_files_are_queued_once(tmp_path: Path) -> None:
    access, ids, users, _, _ = share(tmp_path)
    for name in ("alice", "bob", "carol"):
        users.add_user(name, "USA")
    access._watch()
    assert list(access._unpublished) == []
    users.revoke_user("alice")
    users.revoke_user("bob")
    ids.shared.add_name("bob")  # another node announced bob already: not announced again
    access._watch()
    access._watch()  # nothing changed since: nothing more
    assert list(access._unpublished) == [AccessNotice(KIND_USER, "me", name="alice")]
    users.revoke_user("carol")
    access._watch()
    assert [n.name for n in access._unpublished] == ["alice", "carol"]


def test_only_this_nodes_own_sign_outs_are_announced_and_boundedly(tmp_path: Path) -> None:
    access, _, _, _, metrics = share(tmp_path)
    access._sign_in_ended(AccessEnded(reason=SIGNED_OUT, sign_in="t", username="alice"))
    access._sign_in_ended(AccessEnded(reason=EXPIRED, sign_in="t", username="bob"))
    access._sign_in_ended(
        AccessEnded(reason=SIGNED_OUT, sign_in="t", username="carol", node="other")
    )
    assert list(access._sign_outs) == ["alice"]
    for i in range(MAX_SIGN_OUTS + 5):
        access._sign_in_ended(AccessEnded(reason=SIGNED_OUT, sign_in="t", username=f"u{i}"))
    assert len(access._sign_outs) == MAX_SIGN_OUTS
    errors = metrics.registry.get_sample_value("liaison_cluster_access_publish_errors_total")
    assert errors == 6


def test_another_nodes_sign_out_ends_that_users_sign_ins_here_and_not_its_own(
    tmp_path: Path,
) -> None:
    access, _, _, web, metrics = share(tmp_path)
    ended: list[AccessEnded] = []
    web.events.subscribe(ended.append)
    alice1, _ = web.create("alice")
    alice2, _ = web.create("alice")
    bob, _ = web.create("bob")
    subject = cluster_wire.sign_out_subject(PREFIX)
    own = cluster_wire.encode_notice(AccessNotice(KIND_SIGN_OUT, "me", name="alice"))
    assert access.receive_sign_out(subject, own) == 0  # this node's own, echoed by NATS
    theirs = cluster_wire.encode_notice(AccessNotice(KIND_SIGN_OUT, "n2", name="alice"))
    assert access.receive_sign_out(subject, theirs) == 2
    assert {(e.sign_in, e.reason, e.node) for e in ended} == {
        (alice1, SIGNED_OUT, "n2"),
        (alice2, SIGNED_OUT, "n2"),
    }
    assert web.alive(bob) and not web.alive(alice1)
    assert list(access._sign_outs) == []  # a sign-out from elsewhere is not announced again
    assert access.receive_sign_out(subject, b"{}") == 0
    refused = metrics.registry.get_sample_value("liaison_cluster_access_refused_total")
    assert refused == 1


def test_another_nodes_revocation_is_applied_once_and_counted_once(tmp_path: Path) -> None:
    access, ids, users, _, metrics = share(tmp_path)
    users.add_user("alice", "USA")
    notice = AccessNotice(KIND_USER, "n2", name="alice")
    subject = cluster_wire.notice_subject(PREFIX, notice)
    payload = cluster_wire.encode_notice(notice)
    assert access.receive_revocation(subject, payload)
    assert not access.receive_revocation(subject, payload)  # known: nothing new
    assert "alice" in ids.shared.names
    alice = users.get("alice")
    assert alice is not None and alice.revoked
    received = metrics.registry.get_sample_value(
        "liaison_cluster_access_received_total", {"kind": "user"}
    )
    assert received == 1
    # This node's own notice back from the stream is applied but not counted.
    own = AccessNotice(KIND_USER, "me", name="bob")
    assert access.receive_revocation(
        cluster_wire.notice_subject(PREFIX, own), cluster_wire.encode_notice(own)
    )
    assert metrics.registry.get_sample_value("liaison_cluster_revoked_users") == 2
    assert received == metrics.registry.get_sample_value(
        "liaison_cluster_access_received_total", {"kind": "user"}
    )
