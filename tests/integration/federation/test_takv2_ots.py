"""TAK federation v2 interop with an independent implementation: ots-federation
(shared/interop/ots-federation, MIT), run as a separate process in its own venv
(tests/integration/federation/ots_peer.py), with a running Liaison server and a pytak-style TLS
client on 127.0.0.1.

Both roles: Liaison dials ots-federation (its server role), and ots-federation dials Liaison's
federation listener (its client role, Liaison's server role). A PLI and a marker cross both
ways; a canary above the partner's release ceiling never reaches ots-federation nor any
plaintext byte of the link. Skips with the reason when ots-federation or its venv is
unavailable (fails instead under LIAISON_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from liaison.app import Server
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.federation.fed_helpers import (
    server_fingerprint,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.ots_peer import OtsPeer, free_port, ots_python, write_config
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.integration.helpers import sa_event
from tests.unit.federation.fed_support import peer_table

# Seconds to wait for a crossing through the other process (its health/dial cadence is 3 s).
CROSS_S = 30.0


def _ots_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "ots", public_host="127.0.0.1", ca_name="OTS Peer CA")


def _cot(uid: str, cot_type: str, callsign: str, remarks: str = "") -> str:
    now = dt.datetime.now(dt.UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.000Z"
    t, stale = now.strftime(fmt), (now + dt.timedelta(minutes=10)).strftime(fmt)
    detail = f'<contact callsign="{callsign}"/>'
    if remarks:
        detail += f"<remarks>{remarks}</remarks>"
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{t}" start="{t}" '
        f'stale="{stale}"><point lat="50.4" lon="30.5" hae="100.0" ce="10.0" le="999999.0"/>'
        f"<detail>{detail}</detail></event>"
    )


def _ots_config(
    tmp_path: Path, usa: Server, ots: ServerPki, listen_port: int | None, dial_port: int
) -> Path:
    assert usa.server_pki is not None
    chain = tmp_path / "ots-chain.pem"
    chain.write_bytes(ots.server_cert.read_bytes() + ots.ca_cert.read_bytes())
    return write_config(
        tmp_path / "federation.ini",
        server_id="ots-peer",
        listen_port=listen_port,
        ca_bundle=usa.server_pki.ca_cert,
        cert_chain=chain,
        key=ots.server_key,
        peer_server_id="usa-srv",
        peer_fingerprint=server_fingerprint(usa),
        peer_port=dial_port,
    )


async def test_liaison_dials_ots_federation(tmp_path: Path) -> None:
    ots_python()  # build (or find) its venv before any server starts; skips when impossible
    ots_pki = _ots_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        ots_port = free_port()
        ots = OtsPeer(_ots_config(tmp_path, usa, ots_pki, ots_port, dial_port=free_port()))
        await ots.start()
        table = peer_table(
            name="ukr",
            dial=f"127.0.0.1:{ots_port}",
            ca_file=str(ots_pki.ca_cert),
            fingerprint=fingerprint_sha256(load_server_cert(ots_pki)),
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
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, CROSS_S, "link up")
            cu = await _connect(usa, "usa")
            us = cu["usa-s"]
            both = seclabel("SECRET", "USA", ["USA", "UKR"])
            await us.send(sa_event("uid-usa-s", "PLI-USA-S", extra_detail=both))
            await us.send(marker("m-usa-both", "X-MARKER-USA", both))
            await us.send(marker("m-canary", "CANARY-USA-ONLY", seclabel("SECRET", "USA", ["USA"])))

            def got(needle: str) -> bool:
                return any(needle in x for x in ots.received)

            await wait_until(
                lambda: got('uid="uid-usa-s"') and got("X-MARKER-USA"), CROSS_S, "at ots"
            )
            await ots.send(_cot("ots-pli", "a-f-G-U-C", "PLI-OTS"))
            await ots.send(_cot("ots-marker", "a-h-G", "MK-OTS", remarks="X-MARKER-OTS"))
            await us.wait_for(b"PLI-OTS", within=CROSS_S)
            await us.wait_for(b"X-MARKER-OTS", within=CROSS_S)
            await us.collect(0.5)
            await us.close()
        finally:
            await stop_federation(side)
            await ots.stop()
        # ots-federation's local view of what crossed: the PLI's label kept in the detail.
        pli = next(x for x in ots.received if 'uid="uid-usa-s"' in x)
        assert "PLI-USA-S" in pli and "__seclabel" in pli
        # The canary never reached ots-federation nor any byte of the link.
        assert not got("CANARY-USA-ONLY") and not got("m-canary")
        assert b"CANARY-USA-ONLY" not in bytes(side.wire_out)
        assert b"X-MARKER-USA" in bytes(side.wire_out)
        assert b"X-MARKER-OTS" in bytes(side.wire_in)


async def test_ots_federation_dials_liaison(tmp_path: Path) -> None:
    """Liaison's server role with ots-federation's client role: ots dials the federation
    listener; the latest state reaches it on subscription, live events cross both ways, the
    canary never does."""
    ots_python()
    ots_pki = _ots_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        cu = await _connect(usa, "usa")
        us = cu["usa-s"]
        both = seclabel("SECRET", "USA", ["USA", "UKR"])
        await us.send(sa_event("uid-usa-early", "PLI-EARLY", extra_detail=both))
        await us.send(marker("m-canary", "CANARY-USA-ONLY", seclabel("SECRET", "USA", ["USA"])))
        await us.collect(0.3)
        table = peer_table(
            name="ukr",
            dial=None,
            accept=True,
            ca_file=str(ots_pki.ca_cert),
            fingerprint=fingerprint_sha256(load_server_cert(ots_pki)),
            protocol="tak-v2",
            default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [table],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        assert side.fed.bound is not None
        ots = OtsPeer(_ots_config(tmp_path, usa, ots_pki, None, dial_port=side.fed.bound.port))
        try:
            await ots.start()
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, CROSS_S, "link up")

            def got(needle: str) -> bool:
                return any(needle in x for x in ots.received)

            await wait_until(lambda: got("PLI-EARLY"), CROSS_S, "the latest state at ots")
            await us.send(marker("m-usa-live", "X-MARKER-USA", both))
            await wait_until(lambda: got("X-MARKER-USA"), CROSS_S, "a live event at ots")
            await ots.send(_cot("ots-pli", "a-f-G-U-C", "PLI-OTS"))
            await ots.send(_cot("ots-marker", "a-h-G", "MK-OTS", remarks="X-MARKER-OTS"))
            await us.wait_for(b"PLI-OTS", within=CROSS_S)
            await us.wait_for(b"X-MARKER-OTS", within=CROSS_S)
            await us.collect(0.5)
            await us.close()
        finally:
            await ots.stop()
            await stop_federation(side)
        assert not got("CANARY-USA-ONLY") and not got("m-canary")
        assert b"CANARY-USA-ONLY" not in bytes(side.wire_out)
        assert b"X-MARKER-OTS" in bytes(side.wire_in)
