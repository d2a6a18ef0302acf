"""What the TAK federation wires (v2 over gRPC, ``takv2.py``/``takv2_server.py``; v1 over a
plain length-prefixed stream, ``takv1.py``) share between the link and ``FederatedEvent``:
turning an outbox row into the message written (re-checked from its serialized bytes) and
applying what a peer sent. No gRPC here, so the v1 wire never loads grpcio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from liaison.errors import PeerError
from liaison.federation import fig_codec
from liaison.federation.guard import InboundValidator, content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2

log = logging.getLogger(__name__)

# Received events validated, audited and made durable together.
MAX_INBOUND_BATCH = 256


def encode_row(link: PeerLink, row: OutboxRow) -> bytes | None:
    """The serialized FederatedEvent for a row, re-checked from those very bytes (None: refused,
    with a deny record). Every TAK wire and role uses it."""
    try:
        fed = fig_codec.release_to_federated(
            row.payload, server_id=link.fed.server_id, max_hops=link.peer.max_hops
        )
        data = fed.SerializeToString()
        # The re-check reads what will be written, not what we meant to write.
        back = fig_codec.federated_to_cot(fig_pb2.FederatedEvent.FromString(data))
    except (fig_codec.FigError, PeerError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        link.wire_denied(row, ("guard_mismatch", f"fig_encode:{reason}"))
        return None
    problems = link.guard.recheck(back, label_id=row.label_id, uid=row.uid, type=row.type)
    if problems:
        log.error("federation %s: translated release refused: %s", link.peer.name, problems)
        link.wire_denied(row, problems)
        return None
    return data


async def apply_inbound(
    link: PeerLink,
    queue: asyncio.Queue[fig_pb2.FederatedEvent],
    validator: InboundValidator,
    applied: Callable[[Sequence[fig_pb2.FederatedEvent]], None] | None = None,
) -> None:
    """Translate, validate, audit and route what the peer sent, in batches (every TAK wire).

    ``applied``, if given, is called with each batch once it has been fully handled (routed,
    refused or ignored, and made durable): the v1 wire remembers those frames as seen then.
    """
    while True:
        batch = [await queue.get()]
        while len(batch) < MAX_INBOUND_BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        items: list[tuple[int, bytes]] = []
        seq = link.last_applied
        for fed in batch:
            if not fed.HasField("event"):
                # Contacts (and anything else without a GeoEvent) are not routed here.
                log.debug("federation %s: contact entry ignored", link.peer.name)
                continue
            try:
                xml = fig_codec.inbound_cot(
                    fed,
                    policy=link.policy,
                    server_id=link.fed.server_id,
                    peer_server_id=link.peer.name,
                    default_label=link.peer.default_label,
                    now_ms=link.clock_ms(),
                )
            except fig_codec.FigError as exc:
                log.warning(
                    "federation %s: refused a FederatedEvent: %s", link.peer.name, exc.reason
                )
                link.wire_rejected((exc.reason,), content_sha256(fed.SerializeToString()))
                continue
            seq += 1
            items.append((seq, xml))
        if items:
            await link.receive(items, validator)
        if applied is not None:
            applied(batch)
