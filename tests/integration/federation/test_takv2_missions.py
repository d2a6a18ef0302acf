"""Missions over TAK federation v2, as a TAK Server federate sees them (tak-federation.md 4.2
field 26 and section 11): a running Liaison server (USA, mission API over HTTPS, pytak clients)
and our own TAK v2 peer (``tak_peer.py`` when Liaison dials, ``tak_client_peer.py`` when the
peer dials), all on 127.0.0.1 with mutual TLS.

* Mission CoT crosses as a FederatedEvent with ``missionNames`` both ways; a mission item
  labelled above the peer's release ceiling, an item of a mission the peer's ``missions`` key does
  not name, and a mission labelled above the ceiling never appear in any gRPC message nor in any
  plaintext byte written to the link.
* ROL: ``create mission`` and ``update mission`` (ADD_CONTENT) go to the peer for allowed
  missions; the peer's ``create mission``, ``update mission`` and ``delete mission`` are executed
  as the peer; one whose ``classification`` does not parse is denied and counted, as is a
  program that is not ROL.
* A peer whose config has no ``missions`` receives no ROL and no mission CoT, and its ROL is not
  executed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from liaison.audit import verify
from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.conftest import issue_cert
from tests.integration.federation.fed_helpers import start_federation, stop_federation, wait_until
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.tak_peer import TakPeer
from tests.integration.federation.tak_v1_peer import TakV1Peer
from tests.integration.federation.test_e2e_labels import POLICY, marker, seclabel
from tests.integration.federation.test_missions_link import DETAILS, _server, mission_item
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session
from tests.integration.test_missions import M, call, connect, data, wait_subscribed
from tests.unit.federation.fed_support import peer_table

# The link carries at most CONFIDENTIAL: SECRET items and missions are the canaries.
CEILING = {"classification": "CONFIDENTIAL", "REL": ["UKR", "LIAISON"]}
DEFAULT_LABEL = {"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]}
SHARED = "UNCLASSIFIED//REL TO USA, UKR"


def _peer_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takpeer", public_host="127.0.0.1", ca_name="TAK Peer CA")


def _table(pki: ServerPki, **overrides: Any) -> dict[str, Any]:
    table = peer_table(
        name="ukr",
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v2",
        default_label=DEFAULT_LABEL,
        details=DETAILS,
        release_ceiling=CEILING,
    )
    table.update(overrides)
    return {k: v for k, v in table.items() if v is not None}


async def _mission(server: Any, http: Any, name: str, creator: str, banner: str) -> str:
    """Create the mission; returns the owner's token."""
    status, body = await call(
        http,
        server,
        "PUT",
        f"{M}/{name}?creatorUid={creator}",
        params={"classification": banner},
    )
    assert status == 201, body
    token = data(body)[0]["token"]
    assert isinstance(token, str)
    return token


def _geo(uid: str, text: str, missions: list[str]) -> fig_pb2.FederatedEvent:
    now = int(time.time() * 1000)
    geo = fig_pb2.GeoEvent(
        sendTime=now,
        startTime=now,
        staleTime=now + 600_000,
        lat=50.4,
        lon=30.5,
        hae=10.0,
        ce=10.0,
        le=10.0,
        uid=uid,
        type="a-h-G",
        coordSource="h-g-i-g-o",
        other=f'<detail><contact callsign="{uid.upper()}"/><remarks>{text}</remarks></detail>',
        missionNames=missions,
    )
    return fig_pb2.FederatedEvent(event=geo)


def _rol(program: str) -> fig_pb2.ROL:
    return fig_pb2.ROL(program=program)


def _create(name: str, classification: str | None = None) -> fig_pb2.ROL:
    body: dict[str, str] = {
        "type": "MissionMetadata",
        "name": name,
        "creatorUid": "TAK-DEVICE",
        "description": " ",
        "chatRoom": " ",
        "tool": "public",
    }
    if classification is not None:
        body["classification"] = classification
    return _rol("create mission\n" + json.dumps(body) + ";")


def _records(server: Any) -> list[dict[str, Any]]:
    path = server.config.data_dir / "audit"
    logs = sorted(path.glob("*.log")) + sorted(path.glob("*.jsonl"))
    return [json.loads(line) for f in logs for line in f.read_bytes().splitlines()]


class _Peer:
    """Either test peer, as the scenario needs it."""

    def __init__(self, peer: TakPeer | TakClientPeer) -> None:
        self.p = peer

    def missions_cot(self) -> dict[str, list[str]]:
        return {f.event.uid: list(f.event.missionNames) for f in self.p.decoded()}

    def programs(self) -> list[str]:
        return self.p.rol_programs()


async def _scenario(tmp_path: Path, *, liaison_dials: bool) -> None:
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path, "usa") as usa:
        assert usa.router.gate is not None and usa.server_pki is not None
        usa_c = issue_cert(usa, "usa-s", "USA")
        tak_server: TakPeer | None = None
        tak_client: TakClientPeer | None = None
        missions = ["ops", "hidden", "tak-made", "tak-bad"]
        if liaison_dials:
            tak_server = TakPeer()
            port = await tak_server.start(
                cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
                key=pki.server_key.read_bytes(),
                client_ca=usa.server_pki.ca_cert.read_bytes(),
            )
            table = _table(pki, dial=f"127.0.0.1:{port}", missions=missions)
        else:
            table = _table(pki, dial=None, accept=True, missions=missions)
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off" if liaison_dials else "127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        if not liaison_dials:
            assert side.fed.bound is not None
            tak_client = TakClientPeer()
            tak_client.start(
                f"127.0.0.1:{side.fed.bound.port}",
                chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
                key=pki.server_key.read_bytes(),
                ca=usa.server_pki.ca_cert.read_bytes(),
                host="localhost",
            )
        tak = _Peer(tak_server if tak_server is not None else tak_client)  # type: ignore[arg-type]
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            us = await connect(usa, usa_c, "ANDROID-usa", "usa-s")
            async with clients(us), cert_session(usa, usa_c) as uh:
                await wait_subscribed(usa, "ANDROID-usa")
                ops_token = await _mission(usa, uh, "ops", "ANDROID-usa", SHARED)
                await _mission(usa, uh, "other", "ANDROID-usa", SHARED)  # not federated
                await _mission(usa, uh, "hidden", "ANDROID-usa", "SECRET//REL TO USA, UKR")
                shared = seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"])
                secret = seclabel("SECRET", "USA", ["USA", "UKR"])
                await us.send(mission_item("m-canary", "CANARY-ABOVE-CEILING", "ops", secret))
                await us.send(mission_item("m-other", "CANARY-NOT-FEDERATED", "other", shared))
                # An allowed item of the SECRET mission: the mission may not be named to the peer.
                await us.send(mission_item("h-item", "CANARY-HIDDEN-MISSION", "hidden", shared))
                await us.send(mission_item("m-shared", "X-SHARED", "ops", shared))
                await wait_until(
                    lambda: "m-shared" in tak.missions_cot(), within=15, what="mission CoT"
                )
                assert tak.missions_cot()["m-shared"] == ["ops"]
                await wait_until(
                    lambda: any('"uids":["m-shared"]' in p for p in tak.programs()),
                    within=15,
                    what="update mission ROL",
                )
                creates = [p for p in tak.programs() if p.startswith("create mission\n")]
                assert len(creates) == 1 and '"name":"ops"' in creates[0]
                assert f'"classification":"{SHARED}"' in creates[0]
                [add] = [p for p in tak.programs() if '"uids":["m-shared"]' in p]
                assert add.startswith("update mission\n") and '"changeType":"ADD_CONTENT"' in add
                assert '"missionName":"ops"' in add

                # From the peer: mission CoT for ops (no label: the default label applies).
                await tak.p.send(_geo("tak-item", "X-FROM-TAK", ["ops"]))
                got = await us.wait_for(b'uid="tak-item"')
                assert b"X-FROM-TAK" in got and b"<marti" not in got
                await us.wait_for(b"<contentUid>tak-item</contentUid>")
                status_, body = await call(uh, usa, "GET", f"{M}/ops")
                assert status_ == 200
                assert "tak-item" in {u["data"] for u in data(body)[0]["uids"]}
                # ROL from the peer: its ADD_CONTENT for that item, a mission it creates, one
                # whose label does not parse, one that is not ROL at all.
                await tak.p.send_rol(
                    _rol(
                        'update mission\n{"content":{"hashes":[],"uids":["tak-item"]},'
                        '"creatorUid":"TAK-DEVICE","changeType":"ADD_CONTENT",'
                        '"missionName":"ops","missionCreatorUid":"TAK-DEVICE",'
                        '"missionChatRoom":null,"missionTool":"public","missionDescription":null};'
                    )
                )
                await tak.p.send_rol(_create("tak-made", SHARED))
                await tak.p.send_rol(_create("tak-bad", "NOT//A LABEL AT ALL"))
                await tak.p.send_rol(_rol("create mission {this is not rol"))
                await tak.p.send_rol(_create("not-named"))  # not in the peer's missions key

                def listed() -> set[str]:
                    return set(usa.missions._missions)  # type: ignore[union-attr]

                await wait_until(lambda: "tak-made" in listed(), what="ROL create")
                await wait_until(
                    lambda: status.drops.get("rol_label", 0) >= 1, what="bad label counted"
                )
                await wait_until(
                    lambda: status.drops.get("mission_not_federated", 0) >= 1,
                    what="unnamed mission counted",
                )
                assert "tak-bad" not in listed() and "not-named" not in listed()
                made = usa.missions.mission_record("tak-made")  # type: ignore[union-attr]
                assert made is not None and made.creator == "federation:ukr"
                status_, body = await call(uh, usa, "GET", f"{M}/tak-made")
                assert status_ == 200, body
                # The peer deletes what it created.
                await tak.p.send_rol(
                    _rol('delete mission\n{"type":"MissionMetadata","name":"tak-made"};')
                )
                await wait_until(lambda: "tak-made" not in listed(), what="ROL delete")
                # The peer removes its own item from ops, and tries to remove ours (ignored).
                missions_ = usa.missions
                assert missions_ is not None
                for uid in ("tak-item", "m-shared"):
                    await tak.p.send_rol(
                        _rol(
                            'update mission\n{"content":{"hashes":[],"uids":["' + uid + '"]},'
                            '"creatorUid":"TAK-DEVICE","changeType":"REMOVE_CONTENT",'
                            '"missionName":"ops"};'
                        )
                    )
                await wait_until(
                    lambda: not missions_.federated_has("ops", "tak-item"), what="ROL remove"
                )
                await wait_until(
                    lambda: status.drops.get("rol_remove_ignored", 0) >= 1, what="remove ignored"
                )
                assert missions_.federated_has("ops", "m-shared")
                # Ours: removing an item and deleting the mission go to the peer as ROL.
                status_, _ = await call(
                    uh, usa, "DELETE", f"{M}/ops/contents?uid=m-shared&creatorUid=ANDROID-usa"
                )
                assert status_ == 200
                await wait_until(
                    lambda: any('"changeType":"REMOVE_CONTENT"' in p for p in tak.programs()),
                    what="REMOVE_CONTENT ROL",
                )
                status_, _ = await call(uh, usa, "DELETE", f"{M}/ops", token=ops_token)
                assert status_ == 200
                await wait_until(
                    lambda: any(p.startswith("delete mission\n") for p in tak.programs()),
                    what="delete mission ROL",
                )
                [gone] = [p for p in tak.programs() if p.startswith("delete mission\n")]
                assert '"name":"ops"' in gone
                [removed] = [p for p in tak.programs() if "REMOVE_CONTENT" in p]
                assert '"uids":["m-shared"]' in removed and '"missionName":"ops"' in removed
                await us.collect(0.5)
        finally:
            if tak_client is not None:
                await tak_client.stop()
            await stop_federation(side)
            if tak_server is not None:
                await tak_server.stop()

        # Never crossed: in no decoded message (events and ROL) and no plaintext byte.
        wire = bytes(side.wire_out)
        for needle in (
            b"CANARY-ABOVE-CEILING",
            b"m-canary",
            b"CANARY-NOT-FEDERATED",
            b"m-other",
            b"CANARY-HIDDEN-MISSION",
            b"h-item",
        ):
            assert needle not in wire, needle
        assert b'"hidden"' not in wire and b"hidden" not in wire
        assert b"X-SHARED" in wire
        for f in tak.p.decoded():
            assert f.event.uid not in ("m-canary", "m-other")
            assert "other" not in f.event.missionNames and "hidden" not in f.event.missionNames
        assert all("hidden" not in p and "m-canary" not in p for p in tak.programs())
        # tak-made came from the peer: never sent back.
        assert all("tak-made" not in p for p in tak.programs())

        recs = _records(usa)

        def of(kind: str) -> list[dict[str, Any]]:
            return [r["fields"] for r in recs if r["kind"] == kind]

        released = [f for f in of("release") if f.get("path") == "federation"]
        assert any(f["type"] == "mission" and f.get("peer") == "ukr" for f in released)
        # The ROL naming m-shared was released on record (same organisation rules as events).
        assert any(f["type"] == "mission_item" and f["uid"] == "m-shared" for f in released)
        assert not any(f["uid"] in ("m-canary", "h-item") for f in released)
        denied = [f for f in of("deny") if f.get("peer") == "ukr" and f.get("type") == "mission"]
        assert denied, "the SECRET mission's create was denied on record"
        bad = [
            f for f in of("ingest") if f.get("path") == "federation" and f.get("accepted") is False
        ]
        assert any("bad_label" in f.get("reasons", []) for f in bad)
        rejected = [f for f in of("ingest_reject") if f.get("peer") == "ukr"]
        assert any("rol_syntax" in f["reasons"] for f in rejected)
    for f in (usa.config.data_dir / "audit").glob("*.log"):
        assert verify(f, None).ok, f


async def test_missions_cross_a_tak_v2_link_liaison_dialling(tmp_path: Path) -> None:
    await _scenario(tmp_path, liaison_dials=True)


async def test_missions_cross_a_tak_v2_link_peer_dialling(tmp_path: Path) -> None:
    await _scenario(tmp_path, liaison_dials=False)


async def test_a_peer_without_missions_gets_none(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path, "usa") as usa:
        assert usa.router.gate is not None and usa.server_pki is not None
        usa_c = issue_cert(usa, "usa-s", "USA")
        tak = TakPeer()
        port = await tak.start(
            cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            key=pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, dial=f"127.0.0.1:{port}")],  # no missions key
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            us = await connect(usa, usa_c, "ANDROID-usa", "usa-s")
            async with clients(us), cert_session(usa, usa_c) as uh:
                await wait_subscribed(usa, "ANDROID-usa")
                await _mission(usa, uh, "ops", "ANDROID-usa", SHARED)
                shared = seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"])
                await us.send(mission_item("m-quiet", "X-MISSION-ONLY", "ops", shared))
                await us.wait_for(b"<contentUid>m-quiet</contentUid>")
                await tak.send_rol(_create("tak-made", SHARED))
                await tak.send(_geo("tak-item", "X-FROM-TAK", ["ops"]))
                await wait_until(
                    lambda: status.drops.get("rol_not_federated", 0) >= 1, what="ROL dropped"
                )
                # A marker that is no mission item does cross (the link works).
                await us.send(marker("m-plain", "X-PLAIN", shared))
                await wait_until(
                    lambda: "m-plain" in {f.event.uid for f in tak.decoded()}, what="plain"
                )
                await us.collect(0.5)
                assert b"X-FROM-TAK" not in us.raw
                assert usa.missions is not None
                assert usa.missions.mission_record("tak-made") is None
                assert not usa.missions.federated_has("ops", "tak-item")
        finally:
            await stop_federation(side)
            await tak.stop()
        assert tak.rol_received == []
        assert all(not f.event.missionNames for f in tak.decoded())
        assert b"X-MISSION-ONLY" not in bytes(side.wire_out)


@pytest.mark.parametrize("liaison_dials", [True, False])
async def test_mission_cot_crosses_a_tak_v1_link(tmp_path: Path, liaison_dials: bool) -> None:
    """v1 has no ROL, but its FederatedEvent has missionNames: mission CoT crosses both ways,
    in both roles."""
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path, "usa") as usa:
        assert usa.router.gate is not None and usa.server_pki is not None
        usa_c = issue_cert(usa, "usa-s", "USA")
        peer = TakV1Peer()
        tls = {
            "chain": pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            "key": pki.server_key.read_bytes(),
            "ca": usa.server_pki.ca_cert.read_bytes(),
        }
        if liaison_dials:
            port = await peer.listen(**tls)
            table = _table(pki, dial=f"127.0.0.1:{port}", protocol="tak-v1", missions=["ops"])
        else:
            table = _table(pki, dial=None, accept=True, protocol="tak-v1", missions=["ops"])
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off" if liaison_dials else "127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        if not liaison_dials:
            assert side.fed.bound is not None
            await peer.dial(side.fed.bound.port, **tls)
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            us = await connect(usa, usa_c, "ANDROID-usa", "usa-s")
            async with clients(us), cert_session(usa, usa_c) as uh:
                await wait_subscribed(usa, "ANDROID-usa")
                await _mission(usa, uh, "ops", "ANDROID-usa", SHARED)
                shared = seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"])
                secret = seclabel("SECRET", "USA", ["USA", "UKR"])
                await us.send(mission_item("m-canary", "CANARY-ABOVE-CEILING", "ops", secret))
                await us.send(mission_item("m-shared", "X-SHARED", "ops", shared))

                def cot() -> dict[str, list[str]]:
                    return {f.event.uid: list(f.event.missionNames) for f in peer.decoded()}

                await wait_until(lambda: "m-shared" in cot(), within=15, what="mission CoT")
                assert cot()["m-shared"] == ["ops"]
                await peer.send(_geo("tak-item", "X-FROM-TAK", ["ops"]))
                got = await us.wait_for(b'uid="tak-item"')
                assert b"X-FROM-TAK" in got
                await us.wait_for(b"<contentUid>tak-item</contentUid>")
                assert usa.missions is not None and usa.missions.federated_has("ops", "tak-item")
        finally:
            await stop_federation(side)
            await peer.stop()
        assert "m-canary" not in {f.event.uid for f in peer.decoded()}
        assert b"CANARY-ABOVE-CEILING" not in bytes(side.wire_out)
        assert b"m-canary" not in bytes(side.wire_out)


async def test_mission_rol_follows_the_group_mapping(tmp_path: Path) -> None:
    """With groups_out/groups_in (tak-federation.md 7), ROL carries the mission's groups as
    federate group names, and the peer's ROL creates a mission only in groups that map."""
    pki = _peer_pki(tmp_path)
    async with _server(tmp_path, "usa") as usa:
        assert usa.router.gate is not None and usa.server_pki is not None
        usa_c = issue_cert(usa, "usa-s", "USA")
        tak = TakPeer()
        port = await tak.start(
            cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            key=pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        table = _table(
            pki,
            dial=f"127.0.0.1:{port}",
            missions=["*"],
            groups_out={"__ANON__": ["FedBlue"]},
            groups_in={"FedIn": ["__ANON__"]},
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
        missions_ = usa.missions
        assert missions_ is not None
        try:
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            us = await connect(usa, usa_c, "ANDROID-usa", "usa-s")
            async with clients(us), cert_session(usa, usa_c) as uh:
                await wait_subscribed(usa, "ANDROID-usa")
                await _mission(usa, uh, "ops", "ANDROID-usa", SHARED)
                await wait_until(lambda: tak.rol_received != [], what="create mission ROL")
                [sent] = [fig_pb2.ROL.FromString(b) for b in tak.rol_received]
                assert list(sent.federateGroups) == ["FedBlue"]
                unmapped = _create("tak-unmapped", SHARED)
                unmapped.federateGroups.append("Elsewhere")
                mapped = _create("tak-mapped", SHARED)
                mapped.federateGroups.append("FedIn")
                await tak.send_rol(unmapped)
                await tak.send_rol(mapped)
                await wait_until(
                    lambda: missions_.mission_record("tak-mapped") is not None, what="mapped"
                )
                await wait_until(
                    lambda: status.drops.get("no_group_mapping_in", 0) >= 1, what="unmapped"
                )
        finally:
            await stop_federation(side)
            await tak.stop()
        assert missions_.mission_record("tak-unmapped") is None
        made = missions_.mission_record("tak-mapped")
        assert made is not None and made.groups == frozenset({"__ANON__"})
