"""Missions and files across the nodes of a cluster: two ``liaison serve`` nodes on one NATS
server sharing one PostgreSQL database (a database of its own, dropped after the test). A mission
made and filled on node A through the Marti API is read on node B at once (mission, contents,
changes, the file itself); a client subscribed on node B gets the change notice once; labels
decide on both nodes (a file a user is not cleared for is never shown or sent on either).

Skipped with the reason without NATS or PostgreSQL; failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from liaison.app import Server
from liaison.identity.users import UserDirectory
from liaison.storage.postgresql_missions import CHUNK_BYTES
from tests.integration.conftest import issue_cert
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session, https_url
from tests.integration.test_cluster import Nodes, bus, nodes  # noqa: F401 (fixtures)
from tests.integration.test_labels_e2e import POLICY, USERS, seclabel
from tests.integration.test_mission_contents import labelled_file
from tests.integration.test_missions import M, call, connect, data, wait_subscribed
from tests.integration.test_postgresql_app import database_url  # noqa: F401 (fixture)

WAIT_S = 10.0
POLL_S = 0.05


async def upload(http: aiohttp.ClientSession, server: Server, name: str, body: bytes) -> None:
    """``POST /Marti/sync/upload`` (raw body, streamed: it may be several MiB)."""
    url = https_url(server, f"/Marti/sync/upload?name={name}&CreatorUid=ANDROID-usa")
    headers = {"Content-Type": "application/xml"}
    async with http.post(url, data=io.BytesIO(body), headers=headers) as r:
        assert r.status == 200, await r.text()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (bounded: WAIT_S) until it holds."""
    for _ in range(int(WAIT_S / POLL_S)):
        if await check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what} within {WAIT_S}s")


async def test_a_mission_made_on_node_a_is_read_and_announced_on_node_b(
    nodes: Nodes,  # noqa: F811
    database_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    for i in range(2):
        users = UserDirectory.load(tmp_path / f"node{i}" / "users.json")
        for name, (org, profile) in USERS.items():
            users.add_user(name, org, profile=profile)
    async with nodes(2, policy_file=str(policy), storage=database_url) as (a, b):
        assert a.missions is not None and b.missions is not None
        usa_a = issue_cert(a, "usa-s", "USA")  # USA SECRET, on node A
        usa_b = issue_cert(b, "usa-s", "USA")  # the same user, on node B
        ukr_b = issue_cert(b, "ukr-s", "UKR")  # UKR SECRET, on node B
        ukr_a = issue_cert(a, "ukr-s", "UKR")  # the same user, asking node A
        ukr_client = await connect(b, ukr_b, "ANDROID-ukr", "ukr-s")
        async with (
            clients(ukr_client),
            cert_session(a, usa_a) as us,
            cert_session(b, usa_b) as us_b,
            cert_session(b, ukr_b) as ua,
            cert_session(a, ukr_a) as ua_a,
        ):
            await wait_subscribed(b, "ANDROID-ukr")
            status, body = await call(
                us,
                a,
                "PUT",
                f"{M}/joint?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            guid = data(body)[0]["guid"]

            async def on_b(path: str, http: aiohttp.ClientSession = ua) -> bool:
                status, _ = await call(http, b, "GET", path)
                return status == 200

            await eventually(lambda: on_b(f"{M}/joint"), "node B knowing the mission")
            # UKR subscribes on node B; node A learns it (its notices name UKR's device).
            status, body = await call(ua, b, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
            assert status == 201, body

            async def a_knows_the_subscription() -> bool:
                status, _ = await call(ua_a, a, "GET", f"{M}/joint/subscription?uid=ANDROID-ukr")
                return status == 200

            await eventually(a_knows_the_subscription, "node A knowing B's subscription")

            # Files uploaded on node A: one releasable to UKR, one SECRET for USA only, and one
            # larger than two chunks (streamed from PostgreSQL a chunk at a time).
            shared = labelled_file(
                "f-shared", "shared-file", seclabel("UNCLASSIFIED", ["USA", "UKR"])
            )
            secret = labelled_file("f-secret", "CANARY-FILE-SECRET", seclabel("SECRET", ["USA"]))
            h_shared = hashlib.sha256(shared).hexdigest()
            h_secret = hashlib.sha256(secret).hexdigest()
            await upload(us, a, "shared.cot", shared)
            await upload(us, a, "canary-secret.cot", secret)
            # A data package (its label from the CoT inside) with a member of two chunks.
            package = io.BytesIO()
            with zipfile.ZipFile(package, "w") as zf:
                zf.writestr(
                    "marker.cot", labelled_file("f-big", "big", seclabel("UNCLASSIFIED", ["USA"]))
                )
                zf.writestr("big.bin", bytes(range(256)) * (2 * CHUNK_BYTES // 256 + 1))
            big = package.getvalue()
            assert len(big) > 2 * CHUNK_BYTES
            await upload(us, a, "big.zip", big)
            status, body = await call(
                us,
                a,
                "PUT",
                f"{M}/joint/contents?creatorUid=ANDROID-usa",
                json={"hashes": [h_secret, h_shared]},
            )
            assert status == 200, body

            # The change notice reaches UKR's device on node B, once; the secret one never.
            await ukr_client.wait_for(f"<hash>{h_shared}</hash>".encode(), WAIT_S)
            await ukr_client.collect(1.0)
            assert bytes(ukr_client.raw).count(f"<hash>{h_shared}</hash>".encode()) == 1
            assert h_secret.encode() not in ukr_client.raw
            assert b"CANARY" not in ukr_client.raw

            # Node B answers from the shared database at once: mission, contents, changes.
            answers: list[bytes] = []
            for path in (
                f"{M}/joint",
                f"{M}/guid/{guid}",
                f"{M}/joint/changes",
                f"{M}/joint?changes=true",
            ):
                status, body = await call(ua, b, "GET", path)
                assert status == 200, (path, body)
                answers.append(body)
            [mission] = data(answers[0])
            assert [c["data"]["hash"] for c in mission["contents"]] == [h_shared]
            assert [c.get("contentResource", {}).get("hash") for c in data(answers[2])] == [
                None,
                h_shared,
            ]
            # The file itself, uploaded on A, downloads from B (chunks from PostgreSQL).
            async with ua.get(https_url(b, f"/Marti/sync/content?hash={h_shared}")) as r:
                assert r.status == 200 and await r.read() == shared
            async with ua.get(https_url(b, f"/Marti/sync/content?hash={h_secret}")) as r:
                assert r.status == 404
                answers.append(await r.read())
            for body in answers:
                assert b"CANARY" not in body and h_secret.encode() not in body
            h_big = hashlib.sha256(big).hexdigest()
            async with us_b.get(https_url(b, f"/Marti/sync/content?hash={h_big}")) as r:
                assert r.status == 200 and r.content_length == len(big)
                assert await r.read() == big
            # USA, cleared, gets the secret file and sees it in the mission on node B too.
            async with us_b.get(https_url(b, f"/Marti/sync/content?hash={h_secret}")) as r:
                assert r.status == 200 and await r.read() == secret
            status, body = await call(us_b, b, "GET", f"{M}/joint")
            assert status == 200
            assert {c["data"]["hash"] for c in data(body)[0]["contents"]} == {h_secret, h_shared}

            # A mission-wide notice made on A (keywords: t-x-m-c-k, to every connected device
            # that may see the mission) reaches B's devices once, each node choosing its own.
            status, _ = await call(us, a, "PUT", f"{M}/joint/keywords", json=["north"])
            assert status == 200
            await ukr_client.wait_for(b'type="t-x-m-c-k"', WAIT_S)
            await ukr_client.collect(0.5)
            assert bytes(ukr_client.raw).count(b'type="t-x-m-c-k"') == 1
            status, body = await call(ua, b, "GET", f"{M}/joint")
            assert data(body)[0]["keywords"] == ["north"]

            # A removal on node B is seen on node A at once, and announced on B once.
            status, _ = await call(us_b, b, "DELETE", f"{M}/joint/contents?hash={h_shared}")
            assert status == 200

            async def a_saw_the_removal() -> bool:
                status, body = await call(us, a, "GET", f"{M}/joint")
                return status == 200 and h_shared.encode() not in body

            await eventually(a_saw_the_removal, "node A seeing B's removal")
            await ukr_client.wait_for(b"REMOVE_CONTENT", WAIT_S)
            await ukr_client.collect(0.5)
            assert bytes(ukr_client.raw).count(b"REMOVE_CONTENT") == 1
        # Change numbers of both nodes never collide (each carries its node's number).
        assert a.missions.mission_record("joint") is not None
