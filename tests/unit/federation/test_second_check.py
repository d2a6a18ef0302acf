"""The federation guard's own label decision, the second check behind the router's.

The router decides who may receive an event (``model.access.can_see``); for a partner link the
guard decides again, against the peer's configured release ceiling, before any byte is queued,
and once more on the exact bytes just before they are written (``OutboundGuard.recheck``). These
tests make the router's decision wrong on purpose and check that the guard alone still holds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from liaison.federation.guard import OutboundGuard, Release
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outbox
from liaison.federation.status import FederationStatus
from liaison.gate import Gate, load_gate_config
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router
from tests.unit.federation.fed_support import (
    POLICY,
    REL_BOTH,
    REPO,
    USA_ONLY,
    event,
    fed_config,
    peer,
)
from tests.unit.federation.test_peer_link import MemoryAudit


@dataclass(eq=False)
class WrongDecision:
    """A fake subscriber standing for the peer link with the wrong principal: the router decides
    for it as if the partner held every value up to SECRET, then hands the event to the link."""

    link: PeerLink
    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None

    def deliver(self, out: Outgoing) -> None:
        self.link.deliver(out)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _setup(tmp_path: Path) -> tuple[Router, PeerLink, MemoryAudit, Principal]:
    gate = Gate(
        load_gate_config((REPO / "examples" / "policy.toml").read_text()),
        audit=MemoryAudit(),
        clock_ms=_now_ms,
    )
    router = Router(metrics=Metrics(), clock_ms=_now_ms, gate=gate, latest=MemoryLatestState())
    fed = fed_config()
    link_audit = MemoryAudit()
    link = PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=router,
        audit=link_audit,
        outbox=Outbox.open(tmp_path / "ukr.db", durable=False),
        status=FederationStatus("usa-srv").add("ukr", None),
        clock_ms=_now_ms,
    )
    sender = Principal(
        name="usa-ops", org="USA", auths=gate.for_profile("usa-secret", "tls"), listener="tls"
    )
    return router, link, link_audit, sender


class _Source:
    def __init__(self, principal: Principal) -> None:
        self.principal = principal


def test_the_guard_refuses_what_a_wrong_router_decision_offers_the_link(tmp_path: Path) -> None:
    router, link, link_audit, sender = _setup(tmp_path)
    # Control: with the link's real principal the router itself keeps USA-only items back.
    router.attach(link)
    assert router.publish(event(label=USA_ONLY, uid="kept-back"), _Source(sender)) == 0
    assert link.status.counts["denials"] == 1  # the router's refusal, told to the link
    router.detach(link)

    over_cleared = dataclasses.replace(link.principal, auths=labels.full_authset(POLICY, "SECRET"))
    router.attach(WrongDecision(link, over_cleared))
    assert router.publish(event(label=USA_ONLY, uid="usa-only"), _Source(sender)) == 1
    assert router.publish(event(label=REL_BOTH, uid="shared"), _Source(sender)) == 1
    link.flush()

    verdicts = {f["uid"]: (kind, f) for kind, f in link_audit.records}
    assert "kept-back" not in verdicts  # never offered to the link
    kind, fields = verdicts["usa-only"]
    assert (kind, fields["stage"], fields["reasons"]) == (
        "deny",
        "guard",
        ["permissive_not_held:REL"],
    )
    assert verdicts["shared"][0] == "release"
    link.outbox.start_connection(0)
    assert [row.uid for row in link.outbox.take(10)] == ["shared"]
    assert link.status.counts["releases"] == 1 and link.status.counts["denials"] == 2
    link.outbox.close()


def test_the_send_time_recheck_decides_again_under_the_current_ceiling() -> None:
    """Bytes released under one ceiling and re-checked under a narrower one (the peer's ceiling
    was lowered while they waited in the outbox) are refused by the recheck's own decision."""
    wide = OutboundGuard(policy=POLICY, peer=peer(), server_id="usa-srv", peer_server_id="ukr-srv")
    verdict = wide.check(event(label=REL_BOTH, uid="u-1"))
    assert isinstance(verdict, Release)
    narrow = OutboundGuard(
        policy=POLICY,
        peer=peer(release_ceiling={"classification": "CONFIDENTIAL", "REL": ["UKR"]}),
        server_id="usa-srv",
        peer_server_id="ukr-srv",
    )
    args = {"label_id": verdict.label_id, "uid": "u-1", "type": "a-f-G-U-C"}
    assert wide.recheck(verdict.payload, **args) == ()
    problems = narrow.recheck(verdict.payload, **args)
    assert problems == ("guard_mismatch", "class_exceeds")
