"""Two Liaison servers (USA, UKR) linked by the federation over real mutual TLS on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path

from liaison.audit import verify
from liaison.federation.status import LinkState
from tests.integration.conftest import issue_cert
from tests.integration.federation.fed_helpers import (
    Side,
    start_federation,
    stop_federation,
    two_servers,
    ukr_peer_of_usa,
    usa_peer_of_ukr,
    wait_until,
)
from tests.integration.helpers import clients, connect_tls
from tests.unit.federation.fed_support import cot, lab

REL_BOTH = lab("SECRET", REL=["USA", "UKR"])
USA_ONLY = lab("SECRET", REL=["USA"])
ORCON = lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"])
FROM_UKR = lab("SECRET", originator="UKR", REL=["UKR", "USA"])


def _audit_hashes(side: Side, kind: str) -> list[str]:
    import json

    out = []
    for line in side.audit.path.read_bytes().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            out.append(rec["fields"]["sha256"])
    return out


async def test_labelled_events_cross_both_ways_and_nothing_else(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as (usa, ukr):
        b = await start_federation(ukr, "ukr-srv", [usa_peer_of_ukr(usa)])
        assert b.fed.bound is not None
        a = await start_federation(
            usa, "usa-srv", [ukr_peer_of_usa(ukr, b.fed.bound.port)], listen="off"
        )
        try:
            await wait_until(
                lambda: a.fed.status.peers["ukr"].state is LinkState.UP, what="link up"
            )
            ca = issue_cert(usa, "usa-1", "USA")
            cb = issue_cert(ukr, "ukr-1", "UKR")
            assert usa.tls is not None and ukr.tls is not None
            ua = await connect_tls(usa.tls.port, cert=ca.cert, key=ca.key, ca=ca.ca, name="ua")
            ub = await connect_tls(ukr.tls.port, cert=cb.cert, key=cb.key, ca=cb.ca, name="ub")
            async with clients(ua, ub):
                secret = f"CANARY-{uuid.uuid4()}"
                orcon = f"CANARY-{uuid.uuid4()}"
                ok = f"SHARED-{uuid.uuid4()}"
                await ua.send(cot(uid=secret, label=USA_ONLY))
                await ua.send(cot(uid=orcon, label=ORCON))
                await ua.send(cot(uid=f"UNLABELLED-{uuid.uuid4()}"))
                await ua.send(cot(uid=ok, label=REL_BOTH))
                got = await ub.wait_for(ok.encode())
                assert b'<__federation origin="usa-srv" hops="1" />' in got
                back = f"FROM-UKR-{uuid.uuid4()}"
                await ub.send(cot(uid=back, label=FROM_UKR))
                await ua.wait_for(back.encode())
                rest = await ub.collect(quiet_s=0.5)
                assert not any(secret.encode() in f or orcon.encode() in f for f in rest)
            for canary in (secret, orcon, "UNLABELLED-"):
                assert canary.encode() not in bytes(a.wire_out)
                assert canary.encode() not in bytes(b.wire_in)
            sa = a.fed.status.peers["ukr"]
            assert sa.counts["releases"] == 1 and sa.counts["denials"] >= 3
            assert sa.counts["accepted"] == 1
        finally:
            await stop_federation(a)
            await stop_federation(b)
        # The two logs cross-check: what one side released, the other ingested, by content hash.
        assert set(_audit_hashes(a, "release")) == set(_audit_hashes(b, "ingest"))
        assert set(_audit_hashes(b, "release")) == set(_audit_hashes(a, "ingest"))
        a.audit.close()
        b.audit.close()
        assert verify(a.audit.path, None).ok
        assert verify(b.audit.path, None).ok
