"""Outages and restarts on a real link: nothing releasable is lost or duplicated, order per uid
holds; a wrong certificate or another policy never brings the link up."""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from pathlib import Path

from liaison.app import Server, run_server
from liaison.federation.status import LinkState
from tests.integration.conftest import issue_cert
from tests.integration.federation.fed_helpers import (
    Side,
    server_config,
    start_federation,
    stop_federation,
    ukr_peer_of_usa,
    usa_peer_of_ukr,
    wait_until,
)
from tests.integration.helpers import Client, connect_tls
from tests.unit.federation.fed_support import cot, lab

REL_BOTH = lab("SECRET", REL=["USA", "UKR"])
UIDS = 5


def marker(phase: str, uid: int, n: int) -> bytes:
    """A drawn point (never coalesced, by us or by a client's session) whose remarks carry its
    place in the sequence of its uid."""
    return cot(
        uid=f"{phase}-m{uid}",
        cot_type="u-d-p",
        label=REL_BOTH,
        detail=f'<contact callsign="{phase}-M{uid}"/><remarks>{phase}:{uid}:{n}</remarks>',
    )


async def receive_all(client: Client, phase: str, expected: int) -> dict[int, list[int]]:
    """Read until ``expected`` phase events arrived (bounded); sequences per uid."""
    seen: dict[int, list[int]] = defaultdict(list)
    pattern = re.compile(rf"<remarks>{phase}:(\d+):(\d+)</remarks>".encode())
    count = 0
    for _ in range(30):  # bounded: each collect takes at most 1 s
        for frame in await client.collect(quiet_s=0.3, limit_s=1.0):
            for m in pattern.finditer(frame):
                seen[int(m.group(1))].append(int(m.group(2)))
                count += 1
        if count >= expected:
            break
    # One more quiet read to catch any duplicate that would arrive late.
    for frame in await client.collect(quiet_s=0.5, limit_s=2.0):
        for m in pattern.finditer(frame):
            seen[int(m.group(1))].append(int(m.group(2)))
    return seen


def assert_exactly_once_in_order(seen: dict[int, list[int]], per_uid: int) -> None:
    assert sorted(seen) == list(range(UIDS))
    for uid, ns in seen.items():
        assert ns == list(range(per_uid)), (uid, ns)


async def _client(server: Server, name: str, org: str) -> Client:
    cert = issue_cert(server, name, org)
    assert server.tls is not None
    return await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)


async def test_link_cut_and_both_restarts_during_outages(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        usa = await stack.enter_async_context(run_server(server_config(tmp_path, "usa")))
        ukr_cm = run_server(server_config(tmp_path, "ukr"))
        ukr = await ukr_cm.__aenter__()
        ukr_open = True
        b = await start_federation(ukr, "ukr-srv", [usa_peer_of_ukr(usa)])
        assert b.fed.bound is not None
        port = b.fed.bound.port
        a = await start_federation(usa, "usa-srv", [ukr_peer_of_usa(ukr, port)], listen="off")
        sides: list[Side] = [a, b]
        try:
            link = a.fed.status.peers["ukr"]
            await wait_until(lambda: link.state is LinkState.UP, what="link up")
            ua = await _client(usa, "usa-1", "USA")
            ub = await _client(ukr, "ukr-1", "UKR")

            # 1. The link is cut (the partner's federation stops) under steady traffic.
            await stop_federation(b)
            await wait_until(lambda: link.state is not LinkState.UP, what="link down")
            for n in range(20):
                for uid in range(UIDS):
                    await ua.send(marker("cut", uid, n))
            await wait_until(lambda: link.backlog == 20 * UIDS, what="backlog queued")
            b = await start_federation(
                ukr, "ukr-srv", [usa_peer_of_ukr(usa)], listen=f"127.0.0.1:{port}", audit=b.audit
            )
            sides[1] = b
            assert_exactly_once_in_order(await receive_all(ub, "cut", 20 * UIDS), 20)
            await wait_until(lambda: link.backlog == 0, what="backlog acknowledged")

            # 2. The partner server restarts during an outage, then ours does too.
            await ub.close()
            await stop_federation(b)
            b.audit.close()
            ukr_open = False
            await ukr_cm.__aexit__(None, None, None)
            for n in range(15):
                for uid in range(UIDS):
                    await ua.send(marker("restart", uid, n))
            await wait_until(lambda: link.backlog == 15 * UIDS, what="backlog queued")
            await stop_federation(a)  # our server's federation restarts during the outage
            a.audit.close()
            ukr_cm = run_server(server_config(tmp_path, "ukr"))
            ukr = await ukr_cm.__aenter__()
            ukr_open = True
            ub = await _client(ukr, "ukr-2", "UKR")
            b = await start_federation(
                ukr, "ukr-srv", [usa_peer_of_ukr(usa)], listen=f"127.0.0.1:{port}"
            )
            a = await start_federation(usa, "usa-srv", [ukr_peer_of_usa(ukr, port)], listen="off")
            sides[:] = [a, b]
            link = a.fed.status.peers["ukr"]
            assert link.backlog == 15 * UIDS  # the outbox survived the restart
            assert_exactly_once_in_order(await receive_all(ub, "restart", 15 * UIDS), 15)
            await wait_until(lambda: link.backlog == 0, what="backlog acknowledged")
            assert b.fed.status.peers["usa"].counts["duplicates"] == 0
            await ua.close()
            await ub.close()
        finally:
            for side in sides:
                await stop_federation(side)
            if ukr_open:
                await ukr_cm.__aexit__(None, None, None)


async def test_wrong_fingerprint_or_policy_never_brings_the_link_up(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        usa = await stack.enter_async_context(run_server(server_config(tmp_path, "usa")))
        ukr = await stack.enter_async_context(run_server(server_config(tmp_path, "ukr")))
        b = await start_federation(ukr, "ukr-srv", [usa_peer_of_ukr(usa)])
        assert b.fed.bound is not None
        port = b.fed.bound.port
        a = await start_federation(
            usa, "usa-srv", [ukr_peer_of_usa(ukr, port, fingerprint="0" * 64)], listen="off"
        )
        try:
            link = a.fed.status.peers["ukr"]
            await wait_until(lambda: link.counts["refusals"] >= 2, what="refusals")
            assert link.state is LinkState.REFUSED
            assert link.last_error is not None and "fingerprint" in link.last_error
            assert link.counts["connects"] == 0
        finally:
            await stop_federation(a)
        # Same certificates, but our side runs another policy version: refused by the HELLO.
        other_policy = dict(ukr_peer_of_usa(ukr, port))
        a2 = await start_federation(
            usa, "usa-srv", [other_policy], listen="off", policy_version=2, audit=a.audit
        )
        try:
            link = a2.fed.status.peers["ukr"]
            await wait_until(lambda: link.counts["refusals"] >= 1, what="policy refusal")
            assert link.last_error is not None and "policy version differs" in link.last_error
            assert link.counts["connects"] == 0
            await wait_until(
                lambda: b.fed.status.peers["usa"].counts["refusals"] >= 1, what="peer refusal"
            )
        finally:
            await stop_federation(a2)
            await stop_federation(b)
