"""Missions (Data Sync) end to end, called the way ATAK's Data Sync and iTAK call them
(tak-missions.md 8): HTTPS with client certificates on 8443, pytak clients on the TLS stream
receiving the mission CoT and the ``t-x-m-c`` notices; and two organisations with different
clearances subscribed to one mission, with canaries that must never reach the other."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ClientCert, ServerFactory, issue_cert
from tests.integration.helpers import Client, clients, connect_tls, sa_event
from tests.integration.http.http_support import cert_session, https_url
from tests.integration.test_labels_e2e import POLICY, USERS, seclabel

M = "/Marti/api/missions"


def mission_marker(uid: str, text: str, mission: str | None, label: str = "") -> bytes:
    """A spot marker as ATAK's Data Sync publishes it to a feed: ``marti/dest@mission``."""
    dest = f'<marti><dest mission="{mission}"/></marti>' if mission else ""
    return sa_event(
        uid,
        uid.upper(),
        cot_type="b-m-p-s-m",
        extra_detail=f"<remarks>{text}</remarks>{label}{dest}",
    ).replace(b' endpoint="*:-1:stcp"', b"")


async def call(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = None,
    header: str = "Authorization",
    **kwargs: Any,
) -> tuple[int, bytes]:
    headers = {header: f"Bearer {token}"} if token else {}
    async with http.request(method, https_url(server, path), headers=headers, **kwargs) as r:
        return r.status, await r.read()


def data(body: bytes) -> Any:
    doc = json.loads(body)
    assert doc["version"] == "3" and "nodeId" in doc
    return doc["data"]


async def connect(server: Server, cert: ClientCert, uid: str, name: str) -> Client:
    assert server.tls is not None
    c = await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)
    await c.send(sa_event(uid, name.upper()))
    return c


async def wait_subscribed(server: Server, *uids: str) -> None:
    """The router learns each client's uid from its self position report."""
    from tests.integration.http.http_support import wait_until

    await wait_until(
        lambda: set(uids) <= {s.client_uid for s in server.router.subscribers},
        "the clients' uids",
    )


async def test_data_sync_flow_as_atak_and_itak_call_it(
    start_server: ServerFactory, data_dir: Path
) -> None:
    async with start_server() as server:
        alice_c, bob_c, carol_c = (issue_cert(server, n) for n in ("alice", "bob", "carol"))
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        carol = await connect(server, carol_c, "ANDROID-carol", "carol")
        async with (
            clients(alice, bob, carol),
            cert_session(server, alice_c) as a,
            cert_session(server, bob_c) as b,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob", "ANDROID-carol")
            # Data Sync lists the feeds first.
            status, body = await call(a, server, "GET", M)
            assert status == 200 and data(body) == []
            # Create: 201 with the owner's token and role; the same PUT again is 200, no token.
            status, body = await call(
                a, server, "PUT", f"{M}/ops.north?creatorUid=ANDROID-alice&description=Ops"
            )
            assert status == 201, body
            [created] = data(body)
            owner_token = created["token"]
            assert created["name"] == "ops.north" and created["tool"] == "public"
            assert created["ownerRole"]["type"] == "MISSION_OWNER"
            assert created["uids"] == [] and created["passwordProtected"] is False
            status, body = await call(a, server, "PUT", f"{M}/ops.north?creatorUid=ANDROID-alice")
            assert status == 200 and "token" not in data(body)[0]
            # Refused input: clear, counted, and the server goes on.
            status, body = await call(a, server, "PUT", f"{M}/bad", params={"description": "x\x01"})
            assert status == 400 and json.loads(body)["code"] == 2
            status, body = await call(a, server, "PUT", f"{M}/ops.north/subscription")
            assert status == 400 and b"uid is required" in body
            # Another device lists it, reads it, and its empty /cot.
            status, body = await call(b, server, "GET", M)
            assert [m["name"] for m in data(body)] == ["ops.north"]
            assert data(body)[0]["guid"] == created["guid"]
            status, body = await call(b, server, "GET", f"{M}/ops.north/cot")
            assert status == 200
            assert body.endswith(b"<events></events>")
            assert ET.fromstring(body).tag == "events" and len(ET.fromstring(body)) == 0
            # Subscribe: 201 with a SUBSCRIPTION token and the default role.
            status, body = await call(
                b, server, "PUT", f"{M}/ops.north/subscription?uid=ANDROID-bob"
            )
            assert status == 201, body
            sub = data(body)
            assert sub["clientUid"] == "ANDROID-bob" and sub["username"] == "bob"
            assert sub["role"]["type"] == "MISSION_SUBSCRIBER" and sub["token"].count(".") == 2
            status, body = await call(b, server, "GET", f"{M}/ops.north/changes")
            assert [c["type"] for c in data(body)] == ["CREATE_MISSION"]

            # ATAK publishes a marker to the feed: subscribers get it (without marti) and a
            # t-x-m-c; the author gets the notice, not its own event; carol (not subscribed)
            # gets nothing.
            await alice.send(mission_marker("m-north-1", "first", "ops.north"))
            got = await bob.wait_for(b'uid="m-north-1"')
            assert b"<marti" not in got and b"mission=" not in got
            notice = await bob.wait_for(b'type="t-x-m-c"')
            assert b"<contentUid>m-north-1</contentUid>" in notice
            assert b"<type>ADD_CONTENT</type>" in notice and b'name="ops.north"' in notice
            assert b"<contentUid>m-north-1</contentUid>" in await alice.wait_for(b'type="t-x-m-c"')
            status, body = await call(b, server, "GET", f"{M}/ops.north")
            [mission] = data(body)
            assert [u["data"] for u in mission["uids"]] == ["m-north-1"]
            assert mission["uids"][0]["creatorUid"] == "ANDROID-alice"
            assert mission["uids"][0]["details"]["type"] == "b-m-p-s-m"
            status, body = await call(b, server, "GET", f"{M}/ops.north/cot")
            events = ET.fromstring(body)
            assert [e.get("uid") for e in events] == ["m-north-1"]
            assert b"<marti" not in body
            status, body = await call(b, server, "GET", f"{M}/ops.north/changes")
            changes = data(body)
            assert [c["type"] for c in changes] == ["CREATE_MISSION", "ADD_CONTENT"]
            assert changes[1]["contentUid"] == "m-north-1"
            assert changes[1]["missionGuid"] == created["guid"]

            # iTAK: a plain CoT, then PUT contents by uid; the item is brokered to subscribers.
            await bob.send(mission_marker("m-north-2", "second", None))
            await alice.wait_for(b'uid="m-north-2"')  # the plain broadcast
            status, body = await call(
                b,
                server,
                "PUT",
                f"{M}/ops.north/contents?creatorUid=ANDROID-bob",
                json={"uids": ["m-north-2"]},
            )
            assert status == 200, body
            assert {u["data"] for u in data(body)[0]["uids"]} == {"m-north-1", "m-north-2"}
            assert b"<contentUid>m-north-2</contentUid>" in await bob.wait_for(b'type="t-x-m-c"')
            # An unknown uid is 404 with TAK's JSON error... of the mission's filter: empty.
            status, body = await call(
                b, server, "PUT", f"{M}/ops.north/contents", json={"uids": ["nope"]}
            )
            assert status == 404

            # Remove an item: REMOVE_CONTENT, t-x-m-c; the squashed list shows the removal.
            status, body = await call(
                b, server, "DELETE", f"{M}/ops.north/contents?uid=m-north-1&creatorUid=ANDROID-bob"
            )
            assert status == 200 and [u["data"] for u in data(body)[0]["uids"]] == ["m-north-2"]
            assert b"<type>REMOVE_CONTENT</type>" in await alice.wait_for(b"REMOVE_CONTENT")
            status, body = await call(b, server, "GET", f"{M}/ops.north/changes")
            squashed = [(c["type"], c.get("contentUid")) for c in data(body)]
            assert squashed == [
                ("CREATE_MISSION", None),
                ("ADD_CONTENT", "m-north-2"),
                ("REMOVE_CONTENT", "m-north-1"),
            ]
            status, body = await call(b, server, "GET", f"{M}/ops.north/changes?squashed=false")
            assert len(data(body)) == 4
            status, body = await call(b, server, "GET", f"{M}/ops.north/changes?secago=bad")
            assert status == 400 and json.loads(body)["status"] == "BAD_REQUEST"

            # Unsubscribe (disconnect only): bob no longer receives the mission's traffic.
            status, _ = await call(
                b, server, "DELETE", f"{M}/ops.north/subscription?uid=ANDROID-bob"
            )
            assert status == 200
            await alice.send(mission_marker("m-north-3", "third", "ops.north"))
            await alice.wait_for(b"<contentUid>m-north-3</contentUid>")
            await bob.collect(0.5)
            assert b'uid="m-north-3"' not in bob.raw and b'uid="m-north-3"' not in carol.raw

            # Delete: a subscriber (no owner token) is refused; the owner's token, sent the way
            # CloudTAK sends it, deletes; then the mission is gone (404, empty body).
            status, body = await call(b, server, "DELETE", f"{M}/ops.north")
            assert status == 403 and json.loads(body)["code"] == 3
            status, body = await call(
                a,
                server,
                "DELETE",
                f"{M}/ops.north",
                token=owner_token,
                header="MissionAuthorization",
            )
            assert status == 200 and data(body)[0]["name"] == "ops.north"
            status, body = await call(b, server, "GET", f"{M}/ops.north")
            assert (status, body) == (404, b"")
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            assert refused.get("forbidden") >= 1 and refused.get("bad_request") >= 3


async def test_missions_survive_a_restart(start_server: ServerFactory, data_dir: Path) -> None:
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        async with clients(alice), cert_session(server, alice_c) as a:
            await wait_subscribed(server, "ANDROID-alice")
            status, body = await call(a, server, "PUT", f"{M}/kept?creatorUid=ANDROID-alice")
            assert status == 201
            token = data(body)[0]["token"]
            await alice.send(mission_marker("m-kept", "kept", "kept"))
            await alice.wait_for(b"<contentUid>m-kept</contentUid>")
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, body = await call(a, server, "GET", f"{M}/kept")
            assert status == 200 and [u["data"] for u in data(body)[0]["uids"]] == ["m-kept"]
            status, body = await call(a, server, "GET", f"{M}/kept/changes")
            assert [c["type"] for c in data(body)] == ["CREATE_MISSION", "ADD_CONTENT"]
            # The owner's token still works after the restart.
            status, _ = await call(a, server, "DELETE", f"{M}/kept", token=token)
            assert status == 200


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def test_changes_are_released_in_parts_with_the_loop_running_between(
    start_server: ServerFactory,
    data_dir: Path,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``/changes`` releases and renders CHANGES_CHUNK changes at a time and lets the event loop
    run between parts; the answer is the same as in one part, in order, and a canary item of
    another organisation stays out of every part (two organisations, labels on)."""
    import asyncio

    from liaison.api import missions as api_missions
    from liaison.missions import Missions

    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        usa_c = issue_cert(server, "usa-s", "USA")
        ukr_c = issue_cert(server, "ukr-u", "UKR")
        usa = await connect(server, usa_c, "ANDROID-usa", "usa-s")
        ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
        async with (
            clients(usa, ukr),
            cert_session(server, usa_c) as us,
            cert_session(server, ukr_c) as ua,
        ):
            await wait_subscribed(server, "ANDROID-usa", "ANDROID-ukr")
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            status, _ = await call(ua, server, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
            assert status == 201
            shared = seclabel("UNCLASSIFIED", ["USA", "UKR"])
            secret = seclabel("SECRET", ["USA"])
            for i in range(3):
                await usa.send(mission_marker(f"m-shared-{i}", "shared", "joint", shared))
                await usa.send(mission_marker(f"m-secret-{i}", "CANARY-CHUNK", "joint", secret))
            await ukr.wait_for(b'uid="m-shared-2"')
            await usa.wait_for(b"<contentUid>m-secret-2</contentUid>")
            whole: dict[str, Any] = {}
            for who, http in (("usa", us), ("ukr", ua)):
                status, body = await call(http, server, "GET", f"{M}/joint/changes")
                assert status == 200, body
                whole[who] = data(body)

            monkeypatch.setattr(api_missions, "CHANGES_CHUNK", 2)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            seen: list[int] = []
            release = Missions.release_changes

            def counted(self: Missions, *args: Any, **kwargs: Any) -> Any:
                seen.append(ticks)
                return release(self, *args, **kwargs)

            monkeypatch.setattr(Missions, "release_changes", counted)
            task = asyncio.create_task(ticker())
            try:
                for who, http in (("usa", us), ("ukr", ua)):
                    seen.clear()
                    status, body = await call(http, server, "GET", f"{M}/joint/changes")
                    assert status == 200, body
                    assert data(body) == whole[who]  # same changes, same order
                    assert len(seen) == 4  # CREATE_MISSION and six items, two at a time
                    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # loop ran
                    if who == "ukr":
                        assert b"CANARY" not in body and b"m-secret" not in body
                        uids = [c.get("contentUid") for c in data(body)]
                        assert uids == [None, "m-shared-0", "m-shared-1", "m-shared-2"]
            finally:
                task.cancel()
            assert len(whole["usa"]) == 7


async def test_two_organisations_share_a_mission_and_canaries_stay_home(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        usa_c = issue_cert(server, "usa-s", "USA")
        ukr_c = issue_cert(server, "ukr-u", "UKR")
        usa = await connect(server, usa_c, "ANDROID-usa", "usa-s")
        ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
        async with (
            clients(usa, ukr),
            cert_session(server, usa_c) as us,
            cert_session(server, ukr_c) as ua,
        ):
            await wait_subscribed(server, "ANDROID-usa", "ANDROID-ukr")
            # Without a classification and without a listener default, no label: refused.
            status, body = await call(us, server, "PUT", f"{M}/joint?creatorUid=ANDROID-usa")
            assert status == 403, body
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            joint_owner = data(body)[0]["token"]
            # A USA-only mission stays invisible to UKR: not listed, 404 like a missing one.
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/usa-only?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA"},
            )
            assert status == 201, body
            usa_only_owner = data(body)[0]["token"]
            status, body = await call(ua, server, "GET", M)
            assert [m["name"] for m in data(body)] == ["joint"]
            # An invitation of UKR's user to the USA-only mission is never shown to UKR.
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/usa-only/invite/userName/ukr-u?creatorUid=ANDROID-usa",
                token=usa_only_owner,
            )
            assert status == 200, body
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint/invite/userName/ukr-u?creatorUid=ANDROID-usa",
                token=joint_owner,
            )
            assert status == 200, body
            status, body = await call(ua, server, "GET", f"{M}/invitations?clientUid=ANDROID-ukr")
            assert status == 200 and b"usa-only" not in body
            assert [i["missionName"] for i in data(body)] == ["joint"]
            status, body = await call(
                ua, server, "GET", f"{M}/all/invitations?clientUid=ANDROID-ukr"
            )
            assert status == 200 and data(body) == ["joint"]
            status, body = await call(us, server, "GET", f"{M}/invitations?clientUid=ANDROID-usa")
            assert status == 200 and data(body) == []
            assert (await call(ua, server, "GET", f"{M}/usa-only"))[0] == 404
            status, _ = await call(ua, server, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
            assert status == 201

            shared = seclabel("UNCLASSIFIED", ["USA", "UKR"])
            secret = seclabel("SECRET", ["USA"])
            await usa.send(mission_marker("m-secret", "CANARY-MISSION-SECRET", "joint", secret))
            await usa.send(mission_marker("m-shared", "shared-text", "joint", shared))
            await ukr.wait_for(b'uid="m-shared"')
            await usa.wait_for(b"<contentUid>m-shared</contentUid>")
            # The USA author sees both items; UKR only the shared one, everywhere.
            status, body = await call(us, server, "GET", f"{M}/joint")
            assert {u["data"] for u in data(body)[0]["uids"]} == {"m-secret", "m-shared"}
            answers: list[bytes] = []
            for path in (
                f"{M}",
                f"{M}/joint",
                f"{M}/joint?changes=true",
                f"{M}/joint/cot",
                f"{M}/joint/changes",
                f"{M}/joint/changes?squashed=false",
            ):
                status, body = await call(ua, server, "GET", path)
                assert status == 200, (path, body)
                answers.append(body)
            [mission] = data(answers[1])
            assert [u["data"] for u in mission["uids"]] == ["m-shared"]  # the count too
            assert [c.get("contentUid") for c in data(answers[4])] == [None, "m-shared"]
            assert [e.get("uid") for e in ET.fromstring(answers[3])] == ["m-shared"]
            # Removing the secret item (UKR cannot see it) is the same 404 as a missing one.
            status, _ = await call(ua, server, "DELETE", f"{M}/joint/contents?uid=m-secret")
            assert status == 404
            await ukr.collect(0.5)
            answers.append(bytes(ukr.raw))
            for body in answers:
                assert b"CANARY" not in body and b"m-secret" not in body
            # The shared item handed to UKR over HTTP left release records on the way out.
            await server.writer.flush()
    audit = b"".join(p.read_bytes() for p in (data_dir / "audit").glob("*") if p.is_file())
    assert b'"path":"mission"' in audit and b'"path":"mission-cot"' in audit
