"""TAK federation v2, Liaison dialling: a running Liaison server with a pytak client (mutual
TLS) federated over gRPC with an independent TAK v2 peer (tests/.../tak_peer.py, written from
the reference), all on 127.0.0.1.

A PLI and a marker cross both ways; a canary above the partner's release ceiling never appears
in any decoded gRPC message nor in the plaintext bytes of the link; an event whose provenance
already names this server is refused; the audit log holds the release, deny and ingest records.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from liaison.app import Server
from liaison.audit import verify
from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.federation.fed_helpers import (
    server_fingerprint,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.tak_peer import TakPeer
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.integration.helpers import sa_event
from tests.unit.federation.fed_support import peer_table


def _peer_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takpeer", public_host="127.0.0.1", ca_name="TAK Peer CA")


def _geo(uid: str, cot_type: str, callsign: str, remarks: str = "") -> fig_pb2.GeoEvent:
    now = int(time.time() * 1000)
    other = f'<detail><contact callsign="{callsign}"/>'
    if remarks:
        other += f"<remarks>{remarks}</remarks>"
    other += "</detail>"
    return fig_pb2.GeoEvent(
        sendTime=now,
        startTime=now,
        staleTime=now + 600_000,
        lat=50.4,
        lon=30.5,
        hae=100.0,
        ce=10.0,
        le=999999.0,
        uid=uid,
        type=cot_type,
        coordSource="m-g",
        other=other,
        speed=3.5,
        course=90.0,
        battery=80,
    )


def _records(server: Server) -> list[dict[str, Any]]:
    path = server.config.data_dir / "audit"
    logs = sorted(path.glob("*.log")) + sorted(path.glob("*.jsonl"))
    return [json.loads(line) for f in logs for line in f.read_bytes().splitlines()]


async def test_pli_and_marker_both_ways_with_a_tak_v2_peer(tmp_path: Path) -> None:
    peer_pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        tak = TakPeer()
        port = await tak.start(
            cert_chain=peer_pki.server_cert.read_bytes() + peer_pki.ca_cert.read_bytes(),
            key=peer_pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        table = peer_table(
            name="ukr",
            dial=f"127.0.0.1:{port}",
            ca_file=str(peer_pki.ca_cert),
            fingerprint=fingerprint_sha256(load_server_cert(peer_pki)),
            protocol="tak-v2",
            default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        try:
            await wait_until(lambda: side.fed.status.peers["ukr"].state is LinkState.UP)
            # TAK's call order and identity checks held (tak-federation.md 6.2).
            await wait_until(lambda: len(tak.opened) >= 3, what="the three first calls")
            assert tak.opened[:3] == [
                "ServerFederateGroupsStream",
                "ClientEventStream",
                "ServerEventStream",
            ]
            assert tak.order_ok is True
            assert tak.client_fingerprints == {server_fingerprint(usa)}
            cu = await _connect(usa, "usa")
            us = cu["usa-s"]
            both = seclabel("SECRET", "USA", ["USA", "UKR"])
            await us.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=both))
            await us.send(marker("m-usa-both", "X-MARKER-USA", both))
            await us.send(marker("m-canary", "CANARY-USA-ONLY", seclabel("SECRET", "USA", ["USA"])))

            def uids() -> set[str]:
                return {f.event.uid for f in tak.decoded()}

            await wait_until(lambda: {"uid-usa-s", "m-usa-both"} <= uids(), what="releases")
            # From the TAK peer: a PLI and a marker without labels (the default label applies),
            # and one whose provenance already names us (a loop).
            await tak.send(fig_pb2.FederatedEvent(event=_geo("tak-pli", "a-f-G-U-C", "PLI-TAK")))
            await tak.send(
                fig_pb2.FederatedEvent(
                    event=_geo("tak-marker", "a-h-G", "MK-TAK", remarks="X-MARKER-TAK")
                )
            )
            loop = fig_pb2.FederatedEvent(event=_geo("tak-loop", "a-h-G", "LOOP-TAK"))
            loop.federateProvenance.add(federationServerId="usa-srv")
            await tak.send(loop)
            await us.wait_for(b"PLI-TAK")
            await us.wait_for(b"X-MARKER-TAK")
            await wait_until(lambda: side.fed.status.peers["ukr"].counts["rejections"] >= 1)
            # Health checks ran and were answered SERVING; the ROL stream was opened after.
            await wait_until(lambda: "ClientROLStream" in tak.calls, within=8.0, what="ROL")
            assert tak.health_answers and set(tak.health_answers) == {fig_pb2.ServerHealth.SERVING}
            await us.collect(0.3)
            assert b"LOOP-TAK" not in us.raw
            await us.close()
        finally:
            await stop_federation(side)
            await tak.stop()

        decoded = tak.decoded()
        by_uid = {f.event.uid: f for f in decoded}
        pli, mk = by_uid["uid-usa-s"].event, by_uid["m-usa-both"].event
        # Labels mapped to the GeoEvent fields, <__seclabel> kept in the detail (other).
        for geo in (pli, mk):
            assert (geo.access, geo.releaseableTo) == ("SECRET", "REL TO USA, UKR")
            assert geo.other.startswith("<detail>") and "<__seclabel " in geo.other
            assert '<__federation origin="usa-srv" hops="1" />' in geo.other
        assert "X-MARKER-USA" in mk.other
        assert "PLI-USA-S" in pli.other and "<track" not in pli.other
        assert [p.federationServerId for p in by_uid["uid-usa-s"].federateProvenance] == ["usa-srv"]
        assert by_uid["uid-usa-s"].federateHops.currentHops == 1
        # The canary: in no decoded message and in no plaintext byte of the link.
        assert "m-canary" not in by_uid
        assert all("CANARY-USA-ONLY" not in f.event.other for f in decoded)
        assert b"CANARY-USA-ONLY" not in bytes(side.wire_out)
        assert b"X-MARKER-USA" in bytes(side.wire_out)

        recs = _records(usa)

        def of(kind: str) -> list[dict[str, Any]]:
            return [
                r["fields"] for r in recs if r["kind"] == kind and r["fields"].get("peer") == "ukr"
            ]

        released = {f["uid"] for f in of("release")}
        assert {"uid-usa-s", "m-usa-both"} <= released and "m-canary" not in released
        # The router refused the canary to the link (above its release ceiling), on record.
        assert any(
            r["kind"] == "deny"
            and r["fields"]["uid"] == "m-canary"
            and "federation:ukr" in r["fields"]["recipients"]
            for r in recs
        )
        ingested = {f["uid"]: f for f in of("ingest")}
        assert {"tak-pli", "tak-marker"} <= set(ingested)
        assert ingested["tak-pli"]["origin"] == "ukr"
        rejected = [f for f in of("ingest_reject") if f.get("uid") == "tak-loop"]
        assert rejected and "loop_own_origin" in rejected[0]["reasons"]
    for f in (usa.config.data_dir / "audit").glob("*.log"):
        assert verify(f, None).ok, f


async def test_a_peer_with_another_certificate_is_refused(tmp_path: Path) -> None:
    peer_pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        tak = TakPeer()
        port = await tak.start(
            cert_chain=peer_pki.server_cert.read_bytes() + peer_pki.ca_cert.read_bytes(),
            key=peer_pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        table = peer_table(
            name="ukr",
            dial=f"127.0.0.1:{port}",
            ca_file=str(peer_pki.ca_cert),
            fingerprint="0" * 64,  # not the peer's leaf
            protocol="tak-v2",
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.REFUSED, what="refusal")
            assert "fingerprint" in (status.last_error or "")
            await asyncio.sleep(0.2)
            assert tak.calls == []  # not one gRPC call reached the peer
        finally:
            await stop_federation(side)
            await tak.stop()
