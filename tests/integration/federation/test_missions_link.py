"""Missions across the native partner link, between two real Liaison servers (USA and UKR) with
TAK clients (pytak over mutual TLS) and the Marti mission API over HTTPS on each.

Both servers have a mission ``ops``, federated by each side's ``missions`` key; ``other``
exists on both but is not federated. An item a USA subscriber sends to ``ops`` appears in the
UKR ``ops`` for its subscribers (live, in the mission's answers, marked as a federated change)
and the other way round; an item above the link's release ceiling (the canary) and an item of
the unfederated mission never cross: not in any byte written to the link, not at any UKR
client, not in UKR's mission answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from liaison.app import Server, run_server
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.federation.fed_helpers import (
    start_federation,
    stop_federation,
    ukr_peer_of_usa,
    usa_peer_of_ukr,
    wait_until,
)
from tests.integration.federation.test_e2e_labels import POLICY, POLICY_TEXT, USERS, seclabel
from tests.integration.helpers import clients, sa_event
from tests.integration.http.http_support import cert_session
from tests.integration.test_missions import M, call, connect, data, wait_subscribed

# The mission API on 8443 needs the listener's ceiling (who may read what over HTTPS there).
HTTPS_POLICY = (
    POLICY_TEXT
    + """
[gate.listeners.https]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
"""
)
# What crosses for a marker (a-h-G) sent to a mission: marti must be allowed, or the guard
# refuses the item (directed_without_dest) rather than let it become a broadcast.
DETAILS = {"a-": ["contact", "__group", "track", "remarks", "marti"], "*": ["contact", "remarks"]}


def mission_item(uid: str, text: str, mission: str, label: str) -> bytes:
    return sa_event(
        uid,
        uid.upper(),
        cot_type="a-h-G",
        extra_detail=f'<remarks>{text}</remarks>{label}<marti><dest mission="{mission}"/></marti>',
    ).replace(b' endpoint="*:-1:stcp"', b"")


def _server(root: Path, side: str) -> Any:
    data_dir = root / side
    users = UserDirectory.load(data_dir / "users.json")
    for name, profile in USERS[side].items():
        users.add_user(name, side.upper(), profile=profile)
    policy_file = root / "policy.toml"
    policy_file.write_text(HTTPS_POLICY)
    return run_server(
        make_config(data_dir, udp="off", enroll="off", tcp="off", policy_file=str(policy_file))
    )


async def _mission(
    server: Server,
    http: Any,
    name: str,
    creator_uid: str,
    banner: str = "UNCLASSIFIED//REL TO USA, UKR",
) -> None:
    status, body = await call(
        http,
        server,
        "PUT",
        f"{M}/{name}?creatorUid={creator_uid}",
        params={"classification": banner},
    )
    assert status == 201, body


async def test_mission_items_cross_the_link_where_allowed(tmp_path: Path) -> None:
    async with _server(tmp_path, "usa") as usa, _server(tmp_path, "ukr") as ukr:
        assert usa.router.gate is not None and ukr.router.gate is not None
        b = await start_federation(
            ukr,
            "ukr-srv",
            [usa_peer_of_ukr(usa, missions=["ops"], details=DETAILS)],
            policy=POLICY,
            audit=GateAudit(ukr.router.gate),  # type: ignore[arg-type]
        )
        assert b.fed.bound is not None
        a = await start_federation(
            usa,
            "usa-srv",
            [
                ukr_peer_of_usa(
                    ukr,
                    b.fed.bound.port,
                    # "hidden" is named, but the mission itself is SECRET: never named to UKR.
                    missions=["ops", "hidden"],
                    details=DETAILS,
                    # The link carries at most CONFIDENTIAL: a SECRET item is the canary.
                    release_ceiling={"classification": "CONFIDENTIAL", "REL": ["UKR", "LIAISON"]},
                )
            ],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        usa_c, ukr_c = issue_cert(usa, "usa-s", "USA"), issue_cert(ukr, "ukr-s", "UKR")
        ukr_u_c = issue_cert(ukr, "ukr-u", "UKR")
        try:
            await wait_until(lambda: a.fed.status.peers["ukr"].state is LinkState.UP)
            us = await connect(usa, usa_c, "ANDROID-usa", "usa-s")
            ks = await connect(ukr, ukr_c, "ANDROID-ukr", "ukr-s")
            ku = await connect(ukr, ukr_u_c, "ANDROID-ukr-u", "ukr-u")
            async with (
                clients(us, ks, ku),
                cert_session(usa, usa_c) as uh,
                cert_session(ukr, ukr_c) as kh,
            ):
                await wait_subscribed(usa, "ANDROID-usa")
                await wait_subscribed(ukr, "ANDROID-ukr", "ANDROID-ukr-u")
                # Each side has its own "ops" and "other"; the creators' devices subscribe.
                for name in ("ops", "other"):
                    await _mission(usa, uh, name, "ANDROID-usa")
                    await _mission(ukr, kh, name, "ANDROID-ukr")
                await _mission(usa, uh, "hidden", "ANDROID-usa", "SECRET//REL TO USA, UKR")
                shared = seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"])
                secret = seclabel("SECRET", "USA", ["USA", "UKR"])
                await us.send(mission_item("m-canary", "CANARY-ABOVE-CEILING", "ops", secret))
                await us.send(mission_item("m-other", "CANARY-NOT-FEDERATED", "other", shared))
                await us.send(mission_item("h-item", "CANARY-HIDDEN-MISSION", "hidden", shared))
                await us.send(mission_item("m-shared", "X-SHARED", "ops", shared))
                await us.wait_for(b"<contentUid>m-shared</contentUid>")

                # The UKR subscriber of ops gets the item live (without marti) and a t-x-m-c
                # marked as a federated change; ukr-u (not subscribed) gets neither.
                got = await ks.wait_for(b'uid="m-shared"')
                assert b"X-SHARED" in got and b"<marti" not in got
                notice = await ks.wait_for(b"<contentUid>m-shared</contentUid>")
                assert b"<isFederatedChange>true</isFederatedChange>" in notice
                assert b'name="ops"' in notice
                status, body = await call(kh, ukr, "GET", f"{M}/ops")
                assert status == 200
                assert [u["data"] for u in data(body)[0]["uids"]] == ["m-shared"]
                status, body = await call(kh, ukr, "GET", f"{M}/ops/changes")
                [change] = [c for c in data(body) if c.get("contentUid") == "m-shared"]
                assert change["isFederatedChange"] is True
                assert change["creatorUid"] == "federation:usa"

                # And back: a UKR subscriber's item in ops reaches the USA subscriber.
                back = seclabel("UNCLASSIFIED", "UKR", ["UKR", "USA"])
                await ks.send(mission_item("k-back", "X-BACK", "ops", back))
                got = await us.wait_for(b'uid="k-back"')
                assert b"X-BACK" in got
                await us.wait_for(b"<contentUid>k-back</contentUid>")
                status, body = await call(uh, usa, "GET", f"{M}/ops")
                assert {u["data"] for u in data(body)[0]["uids"]} == {
                    "m-canary",
                    "m-shared",
                    "k-back",
                }

                await asyncio.sleep(0.5)
                for c in (us, ks, ku):
                    await c.collect(0.3)
                assert b'uid="m-shared"' not in ku.raw and b"X-BACK" not in ku.raw
                # What never crossed: not written to the link, not at any UKR client, not in
                # the UKR missions.
                status, other = await call(kh, ukr, "GET", f"{M}/other")
                assert status == 200 and data(other)[0]["uids"] == []
                for needle in (
                    b"CANARY-ABOVE-CEILING",
                    b"m-canary",
                    b"CANARY-NOT-FEDERATED",
                    b"CANARY-HIDDEN-MISSION",
                    b"hidden",
                ):
                    assert needle not in a.wire_out, needle
                    assert needle not in b.wire_in, needle
                    for client in (ks, ku):
                        assert needle not in client.raw, needle
                status, body = await call(kh, ukr, "GET", f"{M}/ops/cot")
                assert b"CANARY" not in body
                assert b"X-SHARED" in a.wire_out  # the allowed item did cross the wire
                # The canary was refused by the decision against the link's ceiling, counted.
                assert a.fed.status.peers["ukr"].counts["denials"] >= 1
        finally:
            await stop_federation(a)
            await stop_federation(b)
