"""An event sent to a mission on one node of a cluster reaches the native partner through the
node holding the federation lease, as on a single node (docs/deployment.md "Partner links",
Missions; federation/links_missions.py; docs/protocol.md "Missions across the link").

Two nodes in this process on one NATS JetStream stream and one PostgreSQL schema (users,
missions, lease and outboxes there); node A holds the lease; the mission ``ops`` is made on node
B and its item sent by a device on node B. UKR, a Liaison server with its own ``ops``, federates
``ops`` both ways. The item releasable to UKR reaches UKR's ``ops``; a canary to the same mission
above the link's release ceiling never reaches UKR. Skipped without NATS or PostgreSQL, failed
under LIAISON_REQUIRE_SERVICES=1 (the ``services`` fixture).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from liaison.app import Server, run_server
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.federation.test_missions_link import mission_item
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session
from tests.integration.test_cluster_federation import RENEW_S, TTL_S, fp, services
from tests.integration.test_cluster_federation_inbound import add_user_in_database
from tests.integration.test_federation_app import free_port
from tests.integration.test_labels_e2e import POLICY, seclabel
from tests.integration.test_missions import M, call, connect, data, wait_subscribed

__all__ = ["services"]  # the fixture, shared with test_cluster_federation

SHARED = seclabel("UNCLASSIFIED", ["USA", "UKR"])
CANARY = seclabel("SECRET", ["USA"])  # above the link's release ceiling (REL UKR): never crosses
WAIT_S = 30.0


def peer(name: str, org: str, *, ca: Path, fingerprint: str, dial: str | None) -> str:
    where = f'dial = "{dial}"' if dial else "accept = true"
    return f"""
[[federation.peer]]
name = "{name}"
{where}
ca_file = "{ca}"
fingerprint = "{fingerprint}"
release_ceiling = {{ classification = "SECRET", REL = ["{org}", "LIAISON"] }}
originate = {{ org = "{org}", classification = "SECRET", REL = ["{org}", "LIAISON"] }}
allow_types = ["a-", "b-"]
missions = ["ops"]
details = {{ "a-" = ["contact", "__group", "track", "remarks", "marti"], "*" = ["contact"] }}
"""


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(int(WAIT_S / 0.1)):  # bounded: WAIT_S
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {WAIT_S} s: {what}")


def audit(server: Server) -> list[dict[str, Any]]:
    path = server.config.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def make_mission(http: aiohttp.ClientSession, server: Server, creator_uid: str) -> None:
    status, body = await call(
        http,
        server,
        "PUT",
        f"{M}/ops?creatorUid={creator_uid}",
        params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
    )
    assert status == 201, body


async def test_a_mission_item_sent_on_a_standby_node_reaches_the_partner(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    services.pop("schema")
    a_dir, b_dir, ukr_dir = tmp_path / "node0", tmp_path / "node1", tmp_path / "ukr"
    usa_pki = ensure_server_pki(a_dir, public_host="localhost")
    ukr_pki = ensure_server_pki(ukr_dir, public_host="localhost")
    ukr_port = free_port()
    usa_policy = tmp_path / "usa-policy.toml"
    usa_policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\nheartbeat_s = 0.5\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.3\nstatus_interval_s = 0.2\n"
        + f"lease_ttl_s = {TTL_S}\nlease_renew_s = {RENEW_S}\n"
        + peer(
            "ukr", "UKR", ca=ukr_pki.ca_cert, fingerprint=fp(ukr_pki), dial=f"127.0.0.1:{ukr_port}"
        )
    )
    ukr_policy = tmp_path / "ukr-policy.toml"
    ukr_policy.write_text(
        POLICY
        + f'\n[federation]\nserver_id = "ukr-liaison"\nlisten = "127.0.0.1:{ukr_port}"\n'
        + "heartbeat_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer("usa", "USA", ca=usa_pki.ca_cert, fingerprint=fp(usa_pki), dial=None)
    )
    await add_user_in_database(services["storage"], a_dir, tmp_path)
    UserDirectory.load(ukr_dir / "users.json").add_user("ukr-s", "UKR", profile="ukr-secret")

    def usa_node(data_dir: Path, name: str) -> Any:
        return run_server(
            make_config(
                data_dir,
                policy_file=str(usa_policy),
                udp="off",
                tcp="off",
                enroll="off",
                cluster_node=name,
                **services,
            )
        )

    ukr_config = make_config(
        ukr_dir, policy_file=str(ukr_policy), udp="off", tcp="off", enroll="off"
    )
    async with run_server(ukr_config) as ukr, usa_node(a_dir, "node0") as a:
        leased = a.federation_lease
        assert leased is not None

        async def a_holds_the_link() -> bool:
            fed = leased.federation
            return fed is not None and fed.status.peers["ukr"].state is LinkState.UP

        await eventually(a_holds_the_link, "node A holding the lease with the link up")
        async with usa_node(b_dir, "node1") as b:
            assert b.federation_lease is not None and b.federation_lease.federation is None
            usa_b, ukr_c = issue_cert(b, "usa-s", "USA"), issue_cert(ukr, "ukr-s", "UKR")
            us = await connect(b, usa_b, "ANDROID-usa", "usa-s")
            ks = await connect(ukr, ukr_c, "ANDROID-ukr", "ukr-s")
            async with (
                clients(us, ks),
                cert_session(b, usa_b) as uh,
                cert_session(ukr, ukr_c) as kh,
            ):
                await wait_subscribed(b, "ANDROID-usa")
                await wait_subscribed(ukr, "ANDROID-ukr")
                await make_mission(kh, ukr, "ANDROID-ukr")
                await make_mission(uh, b, "ANDROID-usa")  # on node B, its creator subscribed

                async def a_knows_the_writer() -> bool:
                    missions = a.missions
                    return missions is not None and missions.mission_record("ops") is not None

                await eventually(a_knows_the_writer, "node A reading the mission made on B")
                await asyncio.sleep(0.5)  # the subscription is in the same share message
                await us.send(mission_item("m-canary", "CANARY-ABOVE-CEILING", "ops", CANARY))
                await us.send(mission_item("m-shared", "X-SHARED", "ops", SHARED))

                async def ukr_ops_has_it() -> bool:
                    status, body = await call(kh, ukr, "GET", f"{M}/ops")
                    return status == 200 and "m-shared" in {
                        u["data"] for u in data(body)[0]["uids"]
                    }

                await eventually(ukr_ops_has_it, "the item in UKR's ops")
                got = await ks.wait_for(b'uid="m-shared"')
                assert b"X-SHARED" in got
                # Node A (the holder) released it to the link: its audit says so.
                released = [
                    r["fields"]
                    for r in audit(a)
                    if r.get("kind") == "release" and r["fields"].get("uid") == "m-shared"
                ]
                assert [(f["path"], f["peer"]) for f in released] == [("federation", "ukr")]
                assert not [r for r in audit(b) if r["fields"].get("peer") == "ukr"]
                await asyncio.sleep(1.0)
                await ks.collect(0.3)
                status, body = await call(kh, ukr, "GET", f"{M}/ops")
                assert status == 200
                assert [u["data"] for u in data(body)[0]["uids"]] == ["m-shared"]
                assert b"CANARY-ABOVE-CEILING" not in ks.raw and b"m-canary" not in ks.raw
                ingested = {
                    r["fields"].get("uid")
                    for r in audit(ukr)
                    if r.get("kind") == "ingest" and r["fields"].get("path") == "federation"
                }
                assert "m-shared" in ingested and "m-canary" not in ingested
