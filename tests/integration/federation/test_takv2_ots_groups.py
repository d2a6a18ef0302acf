"""Group mapping, contacts and directed chat against the independent FIG implementation
ots-federation (shared/interop/ots-federation, MIT), run as a separate process
(tests/integration/federation/ots_peer.py), with a running Liaison server and pytak clients.

ots-federation maps group names itself (``accept_as``/``share_as``) and, in its client role,
turns a ContactListEntry into a contact event; it sends no ContactListEntry and no ptp fields of
its own (directed chat from it travels with its ``marti/dest`` in ``other``). Liaison's clients:
usa-s and usa-b in Blue, usa-u in Red (tests/.../test_takv2_groups.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from liaison.app import Server
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.certs import ServerPki
from tests.integration.federation.fed_helpers import (
    server_fingerprint,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.ots_peer import OtsPeer, free_port, ots_python, write_config
from tests.integration.federation.test_e2e_labels import POLICY, labelled_chat, marker
from tests.integration.federation.test_takv2_groups import (
    BOTH,
    _clients,
    _peer_pki,
    _server,
    _tak_table,
)
from tests.integration.federation.test_takv2_ots import CROSS_S
from tests.integration.helpers import sa_event


def _cot(uid: str, cot_type: str, detail: str) -> str:
    now = dt.datetime.now(dt.UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.000Z"
    t, stale = now.strftime(fmt), (now + dt.timedelta(minutes=10)).strftime(fmt)
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{t}" start="{t}" '
        f'stale="{stale}"><point lat="50.4" lon="30.5" hae="100.0" ce="10.0" le="999999.0"/>'
        f"<detail>{detail}</detail></event>"
    )


def _config(tmp_path: Path, usa: Server, ots: ServerPki, listen: int | None, dial: int) -> Path:
    assert usa.server_pki is not None
    chain = tmp_path / "ots-chain.pem"
    chain.write_bytes(ots.server_cert.read_bytes() + ots.ca_cert.read_bytes())
    return write_config(
        tmp_path / "federation.ini",
        server_id="ots-peer",
        listen_port=listen,
        ca_bundle=usa.server_pki.ca_cert,
        cert_chain=chain,
        key=ots.server_key,
        peer_server_id="usa-srv",
        peer_fingerprint=server_fingerprint(usa),
        peer_port=dial,
        # No wildcard: ots admits only what carries Liaison's mapped name FedBlue.
        accept_as="FedBlue:FedIn",
        share_as="FedOut:FedOut",
    )


async def test_group_names_and_directed_chat_with_ots_federation(tmp_path: Path) -> None:
    """Liaison dials ots-federation: each side maps the other's group names by name only."""
    ots_python()  # build (or find) its venv first; skips when impossible
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path) as usa:
        assert usa.server_pki is not None and usa.router.gate is not None
        port = free_port()
        ots = OtsPeer(_config(tmp_path, usa, pki, port, dial=free_port()))
        await ots.start()
        table = _tak_table(pki, dial=f"127.0.0.1:{port}", groups_in={"FedOut": ["Blue"]})
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )

        def got(needle: str) -> bool:
            return any(needle in x for x in ots.received)

        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, CROSS_S, "link up")
            c = await _clients(usa)
            s, b, u = c["usa-s"], c["usa-b"], c["usa-u"]
            await s.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=BOTH))
            await b.send(sa_event("uid-usa-b", "PLI-USA-B", extra_detail=BOTH))
            await u.send(sa_event("uid-usa-u", "CANARY-RED-PLI", extra_detail=BOTH))
            await s.send(marker("m-blue", "X-MARKER-BLUE", BOTH))
            await wait_until(lambda: got("X-MARKER-BLUE"), CROSS_S, "Blue's marker at ots")
            # ots's user, in its group FedOut (mapped to Blue here), with a contact endpoint.
            contact = '<contact callsign="OTS-USER" endpoint="*:-1:stcp"/>'
            await ots.send(_cot("ots-user", "a-f-G-U-C", contact))
            await s.wait_for(b"OTS-USER", within=CROSS_S)
            # Directed chat to ots's user (learned from its position report) ...
            await s.send(
                labelled_chat("uid-usa-s", "DM-TO-OTS", BOTH).replace(
                    b"</detail>", b'<marti><dest callsign="OTS-USER"/></marti></detail>'
                )
            )
            await wait_until(lambda: got("DM-TO-OTS"), CROSS_S, "the DM at ots")
            # ... and from it, to usa-b only (its dest travels in ots's detail).
            t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            chat = (
                '<__chat parent="RootContactGroup" chatroom="PLI-USA-B" id="uid-usa-b"'
                ' senderCallsign="OTS-USER"><chatgrp uid0="ots-user" uid1="uid-usa-b"'
                ' id="uid-usa-b"/></__chat>'
                '<link uid="ots-user" type="a-f-G-U-C" relation="p-p"/>'
                f'<remarks time="{t}">DM-FROM-OTS</remarks>'
                '<marti><dest callsign="PLI-USA-B"/></marti>'
            )
            await ots.send(_cot("GeoChat.ots-user.x.1", "b-t-f", chat))
            await b.wait_for(b"DM-FROM-OTS", within=CROSS_S)
            for client in (s, b, u):
                await client.collect(0.5)
        finally:
            await stop_federation(side)
            await ots.stop()
        assert b"DM-FROM-OTS" not in s.raw + u.raw
        assert b"OTS-USER" not in u.raw  # FedOut maps to Blue only
        assert not got("CANARY-RED") and not got("uid-usa-u")
        assert b"CANARY-RED" not in bytes(side.wire_out)
        dm = next(x for x in ots.received if "DM-TO-OTS" in x)
        assert "OTS-USER" in dm


async def test_ots_federation_sees_our_contacts(tmp_path: Path) -> None:
    """ots-federation dials Liaison (its client role turns ContactListEntry into contacts): the
    snapshot on subscription announces Blue's clients, never Red's."""
    ots_python()
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path) as usa:
        assert usa.server_pki is not None and usa.router.gate is not None
        c = await _clients(usa)
        await c["usa-s"].send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=BOTH))
        await c["usa-u"].send(sa_event("uid-usa-u", "CANARY-RED-PLI", extra_detail=BOTH))
        await c["usa-s"].collect(0.3)
        table = _tak_table(pki, dial=None, accept=True, groups_in={"FedOut": ["Blue"]})
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        assert side.fed.bound is not None
        ots = OtsPeer(_config(tmp_path, usa, pki, None, dial=side.fed.bound.port))

        def contact_events() -> list[str]:
            # What ots made of our ContactListEntry: a presence with how h-g-i-g-o (our PLI
            # itself arrives with how m-g).
            return [x for x in ots.received if 'how="h-g-i-g-o"' in x and "uid-usa-s" in x]

        try:
            await ots.start()
            await wait_until(lambda: bool(contact_events()), CROSS_S, "our contact at ots")
            await wait_until(
                lambda: any('how="m-g"' in x and "uid-usa-s" in x for x in ots.received),
                CROSS_S,
                "our PLI at ots",
            )
        finally:
            await ots.stop()
            await stop_federation(side)
        assert "PLI-USA-S" in contact_events()[0]
        assert not any("uid-usa-u" in x or "CANARY-RED" in x for x in ots.received)
        assert b"CANARY-RED" not in bytes(side.wire_out)
