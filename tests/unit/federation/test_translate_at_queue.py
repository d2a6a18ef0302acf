"""A TAK link translates a release to its FederatedEvent when it queues it, from the tree the
guard's re-check read the release bytes into (fig_link.pretranslate); what is written is still
re-checked from the serialized message decoded again, against the guard as it is then, and a
row whose queued bytes differ from what was translated is parsed and re-checked in full."""

from __future__ import annotations

from pathlib import Path

from liaison.federation import fig_link
from liaison.federation.guard import OutboundGuard
from liaison.federation.link import MAX_TRANSLATED, PeerLink
from liaison.federation.outbox import Outbox
from liaison.federation.proto import fig_pb2
from liaison.federation.status import FederationStatus
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.router import Outgoing, Router
from tests.unit.federation.fed_support import (
    POLICY,
    REL_BOTH,
    T0,
    event,
    fed_config,
    peer,
    peer_table,
)
from tests.unit.federation.test_peer_link import MemoryAudit


def _link(path: Path, audit: MemoryAudit, *, translate: bool = True) -> PeerLink:
    fed = fed_config(peers=[peer_table(protocol="tak-v2")])
    link = PeerLink(
        fed=fed,
        peer=fed.peers[0],
        policy=POLICY,
        router=Router(metrics=Metrics(), clock_ms=lambda: 0, latest=MemoryLatestState()),
        audit=audit,
        outbox=Outbox.open(path, durable=False),
        status=FederationStatus("usa-srv", Metrics()).add("ukr", None, "tak-v2"),
        clock_ms=lambda: T0,
    )
    if translate:
        fig_link.install_translator(link)
    return link


def _queue(link: PeerLink, *uids: str) -> None:
    for uid in uids:
        link.deliver(Outgoing(event(label=REL_BOTH, uid=uid, time_ms=T0)))
    link.flush()


def _written(link: PeerLink) -> list[bytes]:
    """What the wire writes for every row the link takes now (send-time check included)."""
    link.outbox.start_connection(0)
    book = fig_link.ContactBook()
    out: list[bytes] = []
    for row in link.outbox.take(100, check=link._send_check):
        out += fig_link.encode_rows(link, row, book)
    return out


def _events(messages: list[bytes]) -> list[fig_pb2.FederatedEvent]:
    decoded = [fig_pb2.FederatedEvent.FromString(m) for m in messages]
    return [m for m in decoded if m.HasField("event")]


def test_translated_when_queued_gives_the_bytes_a_translation_at_send_time_gives(
    tmp_path: Path,
) -> None:
    audit = MemoryAudit()
    link = _link(tmp_path / "ukr.db", audit)
    _queue(link, "a1", "a2")
    assert len(link._translated) == 2  # one per release, keyed by its bytes
    early = _written(link)
    assert link._translated == {} and link._ready == {}
    assert [m.event.uid for m in _events(early)] == ["a1", "a2"]
    # The same releases with nothing translated when queued (the rows of an outbox reopened
    # after a restart): parsed, re-checked and translated at send time, to the same bytes.
    cold = _link(tmp_path / "cold.db", MemoryAudit(), translate=False)
    _queue(cold, "a1", "a2")
    assert cold._translated == {}
    late = _written(cold)
    assert [e.SerializeToString() for e in _events(late)] == [
        e.SerializeToString() for e in _events(early)
    ]
    assert [k for k, _f in audit.records] == ["release", "release"]
    link.outbox.close()
    cold.outbox.close()


def test_what_was_translated_is_refused_when_the_guard_refuses_it_at_send_time(
    tmp_path: Path,
) -> None:
    # The canary: a message translated when queued is never written on that strength alone.
    # The ceiling is lowered while the row waits; the re-check of the serialized message read
    # back decides again and refuses it (guard_mismatch, stage send), nothing is written.
    audit = MemoryAudit()
    link = _link(tmp_path / "ukr.db", audit)
    _queue(link, "b1")
    assert len(link._translated) == 1
    lowered = peer(
        protocol="tak-v2", release_ceiling={"classification": "CONFIDENTIAL", "REL": ["UKR"]}
    )
    link.guard = OutboundGuard(policy=POLICY, peer=lowered, server_id="usa-srv")
    assert _written(link) == []
    kind, fields = audit.records[-1]
    assert kind == "guard_mismatch" and fields["stage"] == "send" and fields["uid"] == "b1"
    link.outbox.close()


def test_a_row_whose_bytes_changed_in_the_outbox_is_parsed_and_checked_again(
    tmp_path: Path,
) -> None:
    audit = MemoryAudit()
    link = _link(tmp_path / "ukr.db", audit)
    _queue(link, "c1")
    (original,) = link._translated
    # The stored bytes are changed (a damaged or edited row): the label's id no longer fits
    # its content. The lookup compares the bytes, so the translation made from the original
    # is not used; the send-time re-check parses what is stored and refuses it.
    damaged = original.replace(b'cls="SECRET"', b'cls="CONFIDENTIAL"')
    assert damaged != original
    link.outbox._conn.execute("UPDATE outbox SET payload = ?", (damaged,))
    link._send_denials = []
    assert _written(link) == []
    (denial,) = link._send_denials  # recorded by the send loop (guard_mismatch, stage send)
    assert denial.stage == "send" and denial.uid == "c1" and denial.reasons[0] == "guard_mismatch"
    assert link.outbox.dropped == 1
    link.outbox.close()


def test_translations_waiting_are_bounded(tmp_path: Path) -> None:
    link = _link(tmp_path / "ukr.db", MemoryAudit())
    link._translated.update({b"%d" % i: None for i in range(MAX_TRANSLATED)})
    _queue(link, "d1")
    assert len(link._translated) == MAX_TRANSLATED
    assert b"0" not in link._translated  # the oldest forgotten
    assert [m.event.uid for m in _events(_written(link))] == ["d1"]
    link.outbox.close()
