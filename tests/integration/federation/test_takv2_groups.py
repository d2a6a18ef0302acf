"""TAK federation v2: group mapping, contacts, directed chat and what never crosses, with a
running Liaison server, pytak clients over mutual TLS and our own TAK v2 test peers (written
from shared/reference/tak-federation.md), in both roles, all on 127.0.0.1.

Liaison's clients: usa-s and usa-b in local group Blue, usa-u in Red (groups file). The TAK
peer's groups: ``groups_out = {Blue = [FedBlue]}``; inbound ``FedBlue`` maps to Blue (and in
the client-role test the wildcard ``*`` to Red).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from liaison.app import Server, run_server
from liaison.audit import verify
from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.federation.fed_helpers import (
    Side,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.tak_peer import TakPeer
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    POLICY_TEXT,
    labelled_chat,
    marker,
    seclabel,
)
from tests.integration.federation.test_takv2 import _geo, _records
from tests.integration.helpers import Client, connect_tls, sa_event
from tests.unit.federation.fed_support import peer_table

USERS = {
    "usa-s": ("usa-secret", "Blue"),
    "usa-b": ("usa-secret", "Blue"),
    "usa-u": ("usa-secret", "Red"),
}
BOTH = seclabel("SECRET", "USA", ["USA", "UKR"])
DEFAULT_LABEL = {"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]}


def _peer_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takpeer", public_host="127.0.0.1", ca_name="TAK Peer CA")


def _server(root: Path) -> Any:
    data = root / "usa"
    users = UserDirectory.load(data / "users.json")
    for name, (profile, _group) in USERS.items():
        users.add_user(name, "USA", profile=profile)
    policy_file = root / "policy.toml"
    policy_file.write_text(POLICY_TEXT)
    groups = root / "groups.toml"
    groups.write_text(
        "".join(
            f'[[rule]]\nuser = "{name}"\ngroups = ["{group}"]\n\n'
            for name, (_p, group) in USERS.items()
        )
    )
    return run_server(
        make_config(
            data,
            udp="off",
            https="off",
            enroll="off",
            tcp="off",
            policy_file=str(policy_file),
            groups_file=str(groups),
        )
    )


async def _clients(server: Server) -> dict[str, Client]:
    assert server.tls is not None
    out = {}
    for name in USERS:
        cert = issue_cert(server, name, "USA")
        out[name] = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
        )
    return out


def _now() -> int:
    return int(time.time() * 1000)


def _contact(op: int, uid: str, callsign: str, groups: list[str]) -> fig_pb2.FederatedEvent:
    fed = fig_pb2.FederatedEvent(
        contact=fig_pb2.ContactListEntry(operation=op, uid=uid, callsign=callsign)  # type: ignore[arg-type]
    )
    fed.federateGroups.extend(groups)
    return fed


def _event(geo: fig_pb2.GeoEvent, groups: list[str]) -> fig_pb2.FederatedEvent:
    fed = fig_pb2.FederatedEvent(event=geo)
    fed.federateGroups.extend(groups)
    return fed


def _chat_to(uid: str, text: str) -> fig_pb2.GeoEvent:
    """A directed GeoChat as TAK Server forwards it: dests stripped, targets in ptpUids."""
    now = _now()
    other = (
        '<detail><__chat chatroom="TAK-ALPHA" id="x" senderCallsign="TAK-ALPHA">'
        '<chatgrp uid0="tak-alpha" uid1="x" id="x"/></__chat>'
        f'<link uid="tak-alpha" type="a-f-G-U-C" relation="p-p"/><remarks>{text}</remarks></detail>'
    )
    geo = fig_pb2.GeoEvent(
        sendTime=now,
        startTime=now,
        staleTime=now + 600_000,
        uid=f"GeoChat.tak-alpha.{text}",
        type="b-t-f",
        coordSource="h-g-i-g-o",
        ce=999999.0,
        le=999999.0,
        other=other,
    )
    geo.ptpUids.append(uid)
    return geo


def _delete(uid: str) -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return (
        f'<event version="2.0" uid="del-{uid}" type="t-x-d-d" how="h-g-i-g-o" time="{t}"'
        f' start="{t}" stale="{t}"><point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/>'
        f'<detail><link uid="{uid}" type="a-f-G-U-C" relation="p-p"/></detail></event>'
    ).encode()


def _tak_table(pki: ServerPki, **kw: Any) -> dict[str, Any]:
    return peer_table(
        name="ukr",
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v2",
        default_label=DEFAULT_LABEL,
        groups_out={"Blue": ["FedBlue"]},
        **kw,
    )


def _metric(server: Server, reason: str) -> float:
    return server.metrics.snapshot().get(
        f'liaison_federation_dropped_total{{reason="{reason}"}}', 0
    )


async def test_groups_contacts_and_directed_chat_liaison_dialling(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path) as usa:
        assert usa.server_pki is not None and usa.router.gate is not None
        tak = TakPeer()
        tak.announce = ["TakGroupA"]
        port = await tak.start(
            cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            key=pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        table = _tak_table(
            pki, dial=f"127.0.0.1:{port}", groups_in={"FedBlue": ["Blue"], "*": ["Red"]}
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
            await wait_until(lambda: status.state is LinkState.UP)
            c = await _clients(usa)
            s, b, u = c["usa-s"], c["usa-b"], c["usa-u"]
            await s.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=BOTH))
            await b.send(sa_event("uid-usa-b", "PLI-USA-B", extra_detail=BOTH))
            # Red matches no outbound mapping: neither its PLI nor its marker may cross.
            await u.send(sa_event("uid-usa-u", "CANARY-RED-PLI", extra_detail=BOTH))
            await u.send(marker("m-red", "CANARY-RED-MARKER", BOTH))

            def contacts() -> dict[str, fig_pb2.ContactListEntry]:
                return {f.contact.uid: f.contact for f in tak.decoded() if f.HasField("contact")}

            await wait_until(lambda: {"uid-usa-s", "uid-usa-b"} <= set(contacts()), what="CREATE")
            # Groups: the peer's names recorded; ours offered on ClientFederateGroupsStream.
            await wait_until(lambda: status.remote_groups == ["TakGroupA"], what="peer groups")
            await wait_until(lambda: tak.client_groups == ["FedBlue"], what="our groups")

            # The peer's contact: a presence in Blue's contact lists (mapped FedBlue -> Blue).
            await tak.send(_contact(fig_pb2.CREATE, "tak-alpha", "TAK-ALPHA", ["FedBlue"]))
            await s.wait_for(b"TAK-ALPHA")
            # Directed chat to the federated callsign: only to the peer, as ptpCallsigns.
            await s.send(
                labelled_chat("uid-usa-s", "DM-TO-ALPHA", BOTH).replace(
                    b"</detail>", b'<marti><dest callsign="TAK-ALPHA"/></marti></detail>'
                )
            )
            # Directed chat from the peer to usa-s by uid (ptpUids, no dest in other).
            await tak.send(_event(_chat_to("uid-usa-s", "DM-FROM-ALPHA"), ["FedBlue"]))
            await s.wait_for(b"DM-FROM-ALPHA")
            # No group names: the wildcard writes it into Red.
            await tak.send(_event(_geo("tak-red", "a-h-G", "MK-TAK", remarks="TO-RED-ONLY"), []))
            await u.wait_for(b"TO-RED-ONLY")
            # A mission notice never crosses (tak-federation.md 10).
            await tak.send(_event(_geo("tak-mission", "t-x-m-c", "MISSION-NOTICE"), ["FedBlue"]))
            await wait_until(lambda: status.drops.get("mission_control") == 1, what="drop")
            # The contact leaves: a t-x-d-d for it reaches Blue.
            await tak.send(_contact(fig_pb2.DELETE, "tak-alpha", "a-f-G-U-C", ["FedBlue"]))
            await s.wait_for(b'type="t-x-d-d"')
            # Our client's delete goes as a ContactListEntry DELETE.
            await s.send(_delete("uid-usa-s"))

            def deleted() -> bool:
                return any(
                    f.HasField("contact")
                    and f.contact.operation == fig_pb2.DELETE
                    and f.contact.uid == "uid-usa-s"
                    for f in tak.decoded()
                )

            await wait_until(deleted, what="our DELETE")
            for client in (s, b, u):
                await client.collect(0.3)
        finally:
            await stop_federation(side)
            await tak.stop()

        assert b"DM-FROM-ALPHA" not in b.raw and b"DM-FROM-ALPHA" not in u.raw
        assert b"TAK-ALPHA" not in u.raw  # the presence was Blue's only
        assert b"TO-RED-ONLY" not in s.raw
        assert b"MISSION-NOTICE" not in s.raw + b.raw + u.raw
        assert b"t-x-d-d" in s.raw and b'uid="tak-alpha"' in s.raw.split(b"t-x-d-d", 1)[1]
        assert _metric(usa, "mission_control") == 1
        decoded = tak.decoded()
        events = {f.event.uid: f for f in decoded if f.HasField("event")}
        # Outbound: mapped names on events and contacts; the CREATE came before the PLI.
        assert list(events["uid-usa-s"].federateGroups) == ["FedBlue"]
        order = [f.contact.uid if f.HasField("contact") else f.event.uid for f in decoded]
        assert order.index("uid-usa-s") < len(order)
        first = next(f for f in decoded if f.HasField("contact") and f.contact.uid == "uid-usa-s")
        assert first.contact.operation == fig_pb2.CREATE
        assert first.contact.callsign == "PLI-USA-S" and list(first.federateGroups) == ["FedBlue"]
        assert decoded.index(first) < decoded.index(events["uid-usa-s"])
        gone = [f.contact for f in decoded if f.HasField("contact") and f.contact.operation == 4]
        assert [(g.uid, g.callsign) for g in gone] == [("uid-usa-s", "a-f-G-U-C")]
        dm = [f.event for f in decoded if f.HasField("event") and "DM-TO-ALPHA" in f.event.other]
        assert len(dm) == 1 and list(dm[0].ptpCallsigns) == ["TAK-ALPHA"]
        # The canary: Red's items in no decoded message and no plaintext byte of the link.
        assert "uid-usa-u" not in events and "m-red" not in events
        assert "uid-usa-u" not in contacts_of(decoded)
        assert all("CANARY-RED" not in f.event.other for f in decoded)
        assert b"CANARY-RED" not in bytes(side.wire_out)
        # Red's items were refused to the link by the router's group decision, on record.
        refused = {
            r["fields"]["uid"]
            for r in _records(usa)
            if r["kind"] == "deny"
            and "federation:ukr" in r["fields"]["recipients"]
            and r["fields"]["reasons"] == ["no_shared_group"]
        }
        assert {"uid-usa-u", "m-red"} <= refused
        assert usa.metrics.snapshot()['liaison_denied_total{reason="no_shared_group"}'] >= 2
    for f in (usa.config.data_dir / "audit").glob("*.log"):
        assert verify(f, None).ok, f


def contacts_of(decoded: list[fig_pb2.FederatedEvent]) -> set[str]:
    return {f.contact.uid for f in decoded if f.HasField("contact")}


async def test_groups_contacts_and_directed_chat_tak_dialling(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path) as usa:
        assert usa.server_pki is not None and usa.router.gate is not None
        c = await _clients(usa)
        s, b, u = c["usa-s"], c["usa-b"], c["usa-u"]
        # Before the link: only in the latest state (the contact snapshot on subscription).
        await s.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=BOTH))
        await b.send(sa_event("uid-usa-b", "PLI-USA-B", extra_detail=BOTH))
        await u.send(sa_event("uid-usa-u", "CANARY-RED-PLI", extra_detail=BOTH))
        await s.collect(0.3)
        table = _tak_table(pki, dial=None, accept=True, groups_in={"FedBlue": ["Blue"]})
        side: Side = await start_federation(
            usa,
            "usa-srv",
            [table],
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        status = side.fed.status.peers["ukr"]
        tak = TakClientPeer(name="tak-dialler")
        tak.announce = ["TakGroupA", "TakGroupB"]
        try:
            assert side.fed.bound is not None
            tak.start(
                f"127.0.0.1:{side.fed.bound.port}",
                chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
                key=pki.server_key.read_bytes(),
                ca=usa.server_pki.ca_cert.read_bytes(),
                host="localhost",
            )
            await wait_until(
                lambda: {"uid-usa-s", "uid-usa-b"} <= contacts_of(tak.decoded()), what="snapshot"
            )
            await wait_until(lambda: tak.groups_received == ["FedBlue"], what="our groups")
            await wait_until(
                lambda: status.remote_groups == ["TakGroupA", "TakGroupB"], what="peer groups"
            )
            # Inbound without a wildcard: no names, or an unmapped name, is dropped and counted.
            await tak.send(_event(_geo("tak-none", "a-h-G", "CANARY-NO-GROUP"), []))
            await tak.send(_event(_geo("tak-other", "a-h-G", "CANARY-OTHER"), ["TakGroupB"]))
            await tak.send(_contact(fig_pb2.CREATE, "tak-bravo", "TAK-BRAVO", ["FedBlue"]))
            await s.wait_for(b"TAK-BRAVO")
            await wait_until(lambda: status.drops.get("no_group_mapping_in") == 2, what="drops")
            # Directed chat both ways, by uid.
            await s.send(labelled_chat("uid-usa-s", "DM-TO-BRAVO", BOTH, to_uid="tak-bravo"))
            await tak.send(_event(_chat_to("uid-usa-b", "DM-FROM-BRAVO"), ["FedBlue"]))
            await b.wait_for(b"DM-FROM-BRAVO")

            def dm_out() -> list[fig_pb2.GeoEvent]:
                return [
                    f.event
                    for f in tak.decoded()
                    if f.HasField("event") and "DM-TO-BRAVO" in f.event.other
                ]

            await wait_until(lambda: len(dm_out()) == 1, what="the DM")
            for client in (s, b, u):
                await client.collect(0.3)
        finally:
            await tak.stop()
            await stop_federation(side)

        assert list(dm_out()[0].ptpUids) == ["tak-bravo"]
        assert b"DM-FROM-BRAVO" not in s.raw + u.raw
        assert b"TAK-BRAVO" not in u.raw
        assert b"CANARY-NO-GROUP" not in s.raw + b.raw + u.raw
        assert b"CANARY-OTHER" not in s.raw + b.raw + u.raw
        assert _metric(usa, "no_group_mapping_in") == 2
        decoded = tak.decoded()
        assert "uid-usa-u" not in contacts_of(decoded)
        assert all("CANARY-RED" not in f.event.other for f in decoded)
        assert all(list(f.federateGroups) == ["FedBlue"] for f in decoded)
        assert b"CANARY-RED" not in bytes(side.wire_out)
