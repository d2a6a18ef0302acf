"""TAK federation v1: group mapping, contacts and directed chat ride the same code as v2
(``fig_link.encode_rows`` and ``apply_inbound``), proven here over a v1 link to our own
independent v1 peer (tak_v1_peer.py), Liaison dialling, with pytak clients over mutual TLS.

Liaison's clients: usa-s and usa-b in local group Blue, usa-u in Red. The peer:
``groups_out = {Blue = [FedBlue]}``, inbound ``FedBlue`` -> Blue and the wildcard ``*`` -> Red.
"""

from __future__ import annotations

from pathlib import Path

from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from tests.integration.federation.fed_helpers import start_federation, stop_federation, wait_until
from tests.integration.federation.tak_v1_peer import TakV1Peer
from tests.integration.federation.test_e2e_labels import POLICY, labelled_chat, marker
from tests.integration.federation.test_takv1 import _peer_pki, _table, _tls
from tests.integration.federation.test_takv2 import _geo
from tests.integration.federation.test_takv2_groups import (
    BOTH,
    _chat_to,
    _clients,
    _contact,
    _event,
    _server,
)
from tests.integration.helpers import sa_event


async def test_v1_groups_contacts_and_directed_chat(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path) as usa:
        assert usa.server_pki is not None and usa.router.gate is not None
        peer = TakV1Peer()
        port = await peer.listen(**_tls(pki, usa))
        table = _table(
            pki,
            dial=f"127.0.0.1:{port}",
            groups_out={"Blue": ["FedBlue"]},
            groups_in={"FedBlue": ["Blue"], "*": ["Red"]},
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            c = await _clients(usa)
            s, b, u = c["usa-s"], c["usa-b"], c["usa-u"]
            await s.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=BOTH))
            # Red matches no outbound mapping: neither its PLI nor its marker may cross.
            await u.send(sa_event("uid-usa-u", "CANARY-RED-PLI", extra_detail=BOTH))
            await u.send(marker("m-red", "CANARY-RED-MARKER", BOTH))
            await wait_until(lambda: "uid-usa-s" in peer.uids(), what="PLI")
            # The peer's contact, mapped FedBlue -> Blue: a presence for Blue only.
            await peer.send(_contact(fig_pb2.CREATE, "tak-alpha", "TAK-ALPHA", ["FedBlue"]))
            await s.wait_for(b"TAK-ALPHA")
            # Directed chat to the federated callsign, and from the peer to usa-s by uid.
            await s.send(
                labelled_chat("uid-usa-s", "DM-TO-ALPHA", BOTH).replace(
                    b"</detail>", b'<marti><dest callsign="TAK-ALPHA"/></marti></detail>'
                )
            )
            await peer.send(_event(_chat_to("uid-usa-s", "DM-FROM-ALPHA"), ["FedBlue"]))
            await s.wait_for(b"DM-FROM-ALPHA")
            # No group names: the wildcard writes it into Red.
            await peer.send(_event(_geo("tak-red", "a-h-G", "MK-TAK", remarks="TO-RED-ONLY"), []))
            await u.wait_for(b"TO-RED-ONLY")

            def dm_out() -> list[fig_pb2.GeoEvent]:
                return [
                    f.event
                    for f in peer.decoded()
                    if f.HasField("event") and "DM-TO-ALPHA" in f.event.other
                ]

            await wait_until(lambda: len(dm_out()) == 1, what="directed chat out")
            for client in (s, b, u):
                await client.collect(0.3)
        finally:
            await peer.stop()
            await stop_federation(side)

        assert b"DM-FROM-ALPHA" not in b.raw + u.raw
        assert b"TAK-ALPHA" not in u.raw and b"TO-RED-ONLY" not in s.raw + b.raw
        decoded = peer.decoded()
        events = {f.event.uid: f for f in decoded if f.HasField("event")}
        assert list(events["uid-usa-s"].federateGroups) == ["FedBlue"]
        first = next(f for f in decoded if f.HasField("contact") and f.contact.uid == "uid-usa-s")
        assert first.contact.operation == fig_pb2.CREATE and first.contact.callsign == "PLI-USA-S"
        assert list(first.federateGroups) == ["FedBlue"]
        assert decoded.index(first) < decoded.index(events["uid-usa-s"])
        assert list(dm_out()[0].ptpCallsigns) == ["TAK-ALPHA"]
        # The canary: Red's items in no decoded frame and no plaintext byte of the link.
        assert "uid-usa-u" not in events and "m-red" not in events
        assert all(b"CANARY-RED" not in payload for payload in peer.received)
        assert b"CANARY-RED" not in bytes(side.wire_out)
