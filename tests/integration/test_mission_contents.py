"""Files, keywords and metadata in missions, the ``/guid/`` twins, ``POST /missions/{name}``,
``DELETE /missions?guid=``, ``API_VERSION`` and ``GET /Marti/api/cot/xml/{uid}``, end to end:
HTTPS with client certificates, pytak clients on the TLS stream receiving the notices, and two
organisations with different clearances sharing one mission with canary files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, sa_event
from tests.integration.http.http_support import cert_session, https_url
from tests.integration.test_labels_e2e import POLICY, USERS, seclabel
from tests.integration.test_missions import (
    M,
    call,
    connect,
    data,
    mission_marker,
    wait_subscribed,
)
from tests.integration.test_postgresql_app import fresh_database


async def upload(
    http: aiohttp.ClientSession, server: Server, name: str, body: bytes, creator: str
) -> dict[str, Any]:
    """``POST /Marti/sync/upload`` as iTAK sends a mission attachment (raw body)."""
    url = https_url(server, f"/Marti/sync/upload?name={name}&CreatorUid={creator}")
    async with http.post(url, data=body, headers={"Content-Type": "image/png"}) as r:
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json(content_type=None)
        return result


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """Server settings: the default (SQLite missions.db, files on disk) or a fresh PostgreSQL
    database keeping the missions and files (docs/storage.md "Missions and files in
    PostgreSQL")."""
    if request.param == "sqlite":
        yield {}
        return
    async with fresh_database() as url:
        yield {"storage": url}


async def test_files_keywords_and_routes_as_data_sync_calls_them(
    start_server: ServerFactory, data_dir: Path, storage: dict[str, str]
) -> None:
    async with start_server(**storage) as server:
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
            # POST creates (201, token) and updates (200) like PUT.
            status, body = await call(a, server, "POST", f"{M}/files?creatorUid=ANDROID-alice")
            assert status == 201, body
            [created] = data(body)
            guid = created["guid"]
            assert created["token"] and created["contents"] == []
            # An update is announced to every connected client that may see the mission
            # (t-x-m-c-m), carol included although she is not subscribed.
            status, body = await call(
                a, server, "POST", f"{M}/files?creatorUid=ANDROID-alice&description=Plans"
            )
            assert status == 200 and "token" not in data(body)[0]
            assert data(body)[0]["description"] == "Plans"
            notice = await carol.wait_for(b'type="t-x-m-c-m"')
            assert b'name="files"' in notice and b'authorUid="ANDROID-alice"' in notice
            assert b'how="h-g-i-g-o"' in notice

            # Subscribe by guid with API_VERSION 3: the answer carries the mission.
            async with b.put(
                https_url(server, f"{M}/guid/{guid}/subscription?uid=ANDROID-bob"),
                headers={"API_VERSION": "3"},
            ) as r:
                assert r.status == 201, await r.text()
                sub = data(await r.read())
            assert sub["mission"]["name"] == "files"
            assert [c["type"] for c in sub["mission"]["missionChanges"]] == ["CREATE_MISSION"]
            # Without the header (version 2) the subscription only.
            status, body = await call(b, server, "PUT", f"{M}/files/subscription?uid=ANDROID-bob")
            assert status == 201 and "mission" not in data(body)

            # Upload a file, then add it to the mission by hash.
            content = b"\x89PNG mission attachment"
            meta = await upload(b, server, "photo.png", content, "ANDROID-bob")
            digest = hashlib.sha256(content).hexdigest()
            assert meta["Hash"] == digest
            status, body = await call(
                b,
                server,
                "PUT",
                f"{M}/files/contents?creatorUid=ANDROID-bob",
                json={"hashes": [digest]},
            )
            assert status == 200, body
            [entry] = data(body)[0]["contents"]
            assert entry["creatorUid"] == "ANDROID-bob" and entry["keywords"] == []
            resource = entry["data"]
            assert resource["hash"] == digest and resource["name"] == "photo.png"
            assert resource["filename"] == "photo.png" and resource["mimeType"] == "image/png"
            assert resource["size"] == len(content) and resource["submitter"] == "bob"
            assert resource["uid"] == meta["UID"] and resource["creatorUid"] == "ANDROID-bob"
            assert resource["submissionTime"].endswith("Z")
            # Subscribers (the author too) get a t-x-m-c with the contentResource.
            for client in (alice, bob):
                notice = await client.wait_for(b"<contentResource>")
                doc = ET.fromstring(notice)
                change = doc.find("detail/mission/MissionChanges/MissionChange")
                assert change is not None
                assert change.findtext("type") == "ADD_CONTENT"
                assert change.findtext("contentResource/hash") == digest
                assert change.findtext("contentResource/name") == "photo.png"
                assert change.findtext("missionGuid") == guid
            status, body = await call(a, server, "GET", f"{M}/guid/{guid}/changes")
            changes = data(body)
            assert [c["type"] for c in changes] == ["CREATE_MISSION", "ADD_CONTENT"]
            assert changes[1]["contentResource"]["hash"] == digest
            assert "contentUid" not in changes[1]
            # The file itself comes from the file path, as before.
            async with a.get(https_url(server, f"/Marti/sync/content?hash={digest}")) as r:
                assert r.status == 200 and await r.read() == content
            # Unknown hash: 404 (empty body); not a hash: 400; no uids and no hashes: 400.
            status, body = await call(
                b, server, "PUT", f"{M}/files/contents", json={"hashes": ["a" * 64]}
            )
            assert (status, body) == (404, b"")
            status, body = await call(
                b, server, "PUT", f"{M}/files/contents", json={"hashes": ["nothex"]}
            )
            assert status == 400 and json.loads(body)["code"] == 2
            status, _ = await call(b, server, "PUT", f"{M}/files/contents", json={})
            assert status == 400

            # Content keywords: t-x-m-c-k-c to the subscribers.
            status, body = await call(
                b, server, "PUT", f"{M}/files/content/{digest}/keywords", json=["bridge", "pic"]
            )
            assert status == 200, body
            assert data(body)[0]["contents"][0]["keywords"] == ["bridge", "pic"]
            assert b'name="files"' in await alice.wait_for(b'type="t-x-m-c-k-c"')
            # Mission keywords: PUT replaces and broadcasts t-x-m-c-k (carol too); DELETE one.
            status, body = await call(
                b, server, "PUT", f"{M}/files/keywords?creatorUid=ANDROID-bob", json=["a", "b"]
            )
            assert status == 200 and data(body)[0]["keywords"] == ["a", "b"]
            assert b'authorUid="ANDROID-bob"' in await carol.wait_for(b'type="t-x-m-c-k"')
            status, body = await call(b, server, "DELETE", f"{M}/files/keywords/a")
            assert status == 200 and data(body)[0]["keywords"] == ["b"]
            status, body = await call(b, server, "PUT", f"{M}/files/keywords", json={"a": 1})
            assert status == 400

            # A mission-only item answers GET /Marti/api/cot/xml/{uid}; an unknown uid 404.
            await bob.send(mission_marker("m-files-1", "spot", "files"))
            await alice.wait_for(b"<contentUid>m-files-1</contentUid>")
            async with a.get(https_url(server, "/Marti/api/cot/xml/m-files-1")) as r:
                assert r.status == 200
                assert ET.fromstring(await r.read()).get("uid") == "m-files-1"
            async with a.get(https_url(server, "/Marti/api/cot/xml/ANDROID-bob")) as r:
                assert r.status == 200  # the picture too
            async with a.get(https_url(server, "/Marti/api/cot/xml/nothing-here")) as r:
                assert r.status == 404
            status, body = await call(a, server, "GET", f"{M}/guid/{guid}/cot")
            assert [e.get("uid") for e in ET.fromstring(body)] == ["m-files-1"]
            # Item keywords: t-x-m-c-k-u to the subscribers; kept when the item is updated.
            status, body = await call(
                b, server, "PUT", f"{M}/files/uid/m-files-1/keywords", json=["ford"]
            )
            assert status == 200 and data(body)[0]["uids"][0]["keywords"] == ["ford"]
            assert b'name="files"' in await alice.wait_for(b'type="t-x-m-c-k-u"')
            await bob.send(mission_marker("m-files-1", "moved", "files"))
            await alice.wait_for(b"moved")
            status, body = await call(a, server, "GET", f"{M}/files")
            assert data(body)[0]["uids"][0]["keywords"] == ["ford"]
            status, _ = await call(b, server, "PUT", f"{M}/files/uid/nope/keywords", json=["x"])
            assert status == 404

            # Remove the file by hash: REMOVE_CONTENT with the contentResource, t-x-m-c.
            status, body = await call(
                a,
                server,
                "DELETE",
                f"{M}/guid/{guid}/contents?hash={digest}&creatorUid=ANDROID-alice",
            )
            assert status == 200 and data(body)[0]["contents"] == []
            notice = await bob.wait_for(b"<type>REMOVE_CONTENT</type>")
            assert f"<hash>{digest}</hash>".encode() in notice
            status, body = await call(a, server, "GET", f"{M}/files/changes")
            squashed = [(c["type"], c.get("contentResource", {}).get("hash")) for c in data(body)]
            assert squashed == [
                ("CREATE_MISSION", None),
                ("ADD_CONTENT", None),
                ("REMOVE_CONTENT", digest),
            ]
            status, body = await call(a, server, "DELETE", f"{M}/files/contents?hash={digest}")
            assert (status, body) == (404, b"")

            # guid twins: 400 for a guid that is not a UUID, 404 for an unknown one.
            status, body = await call(a, server, "GET", f"{M}/guid/not-a-uuid")
            assert status == 400 and json.loads(body)["code"] == 2
            status, body = await call(
                a, server, "GET", f"{M}/guid/00000000-0000-4000-8000-000000000000"
            )
            assert (status, body) == (404, b"")
            status, body = await call(a, server, "GET", f"{M}/guid/{guid}")
            assert status == 200 and data(body)[0]["name"] == "files"
            # DELETE /missions?guid= with the owner's token.
            status, body = await call(
                a, server, "DELETE", f"{M}?guid={guid}", token=created["token"]
            )
            assert status == 200 and data(body)[0]["name"] == "files"
            assert (await call(a, server, "GET", f"{M}/files"))[0] == 404


async def test_files_and_keywords_survive_a_restart(
    start_server: ServerFactory, data_dir: Path, storage: dict[str, str]
) -> None:
    content = b"kept attachment"
    digest = hashlib.sha256(content).hexdigest()
    async with start_server(**storage) as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, _ = await call(a, server, "PUT", f"{M}/kept?creatorUid=ANDROID-alice")
            assert status == 201
            await upload(a, server, "kept.png", content, "ANDROID-alice")
            status, _ = await call(
                a, server, "PUT", f"{M}/kept/contents", json={"hashes": [digest]}
            )
            assert status == 200
            status, _ = await call(
                a, server, "PUT", f"{M}/kept/content/{digest}/keywords", json=["k1"]
            )
            assert status == 200
            status, _ = await call(a, server, "PUT", f"{M}/kept/keywords", json=["north"])
            assert status == 200
    if storage:  # nothing in the data folder: missions and files are in PostgreSQL
        assert not (data_dir / "missions.db").exists() and not (data_dir / "files").exists()
    else:  # the contents table came from a recorded migration
        with sqlite3.connect(data_dir / "missions.db") as db:
            assert db.execute("SELECT 1 FROM meta WHERE key = 'migration:1-contents'").fetchone()
    async with start_server(**storage) as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, body = await call(a, server, "GET", f"{M}/kept")
            [mission] = data(body)
            assert mission["keywords"] == ["north"]
            [entry] = mission["contents"]
            assert entry["data"]["hash"] == digest and entry["keywords"] == ["k1"]
            status, body = await call(a, server, "GET", f"{M}/kept/changes")
            assert [c["type"] for c in data(body)] == ["CREATE_MISSION", "ADD_CONTENT"]
            assert data(body)[1]["contentResource"]["hash"] == digest


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


def labelled_file(uid: str, text: str, label: str) -> bytes:
    """A CoT event uploaded as a file: the file carries the event's label."""
    return sa_event(
        uid, uid.upper(), cot_type="b-m-p-s-m", extra_detail=f"<remarks>{text}</remarks>{label}"
    )


async def test_two_organisations_see_only_their_files_in_a_shared_mission(
    start_server: ServerFactory, data_dir: Path, policy_file: Path, storage: dict[str, str]
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file), **storage) as server:
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
            guid = data(body)[0]["guid"]
            status, _ = await call(ua, server, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
            assert status == 201
            secret = labelled_file("f-secret", "CANARY-FILE-SECRET", seclabel("SECRET", ["USA"]))
            shared = labelled_file(
                "f-shared", "shared-file", seclabel("UNCLASSIFIED", ["USA", "UKR"])
            )
            h_secret = hashlib.sha256(secret).hexdigest()
            h_shared = hashlib.sha256(shared).hexdigest()
            await upload(us, server, "canary-secret.cot", secret, "ANDROID-usa")
            await upload(us, server, "shared.cot", shared, "ANDROID-usa")
            # UKR cannot add the secret file: it does not exist for UKR.
            status, _ = await call(
                ua, server, "PUT", f"{M}/joint/contents", json={"hashes": [h_secret]}
            )
            assert status == 404
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint/contents?creatorUid=ANDROID-usa",
                json={"hashes": [h_secret, h_shared]},
            )
            assert status == 200, body
            assert {c["data"]["hash"] for c in data(body)[0]["contents"]} == {h_secret, h_shared}
            await ukr.wait_for(f"<hash>{h_shared}</hash>".encode())
            await usa.wait_for(f"<hash>{h_secret}</hash>".encode())
            status, _ = await call(
                us, server, "PUT", f"{M}/joint/content/{h_secret}/keywords", json=["canary"]
            )
            assert status == 200
            await usa.wait_for(b'type="t-x-m-c-k-c"')

            answers: list[bytes] = []
            for path in (
                f"{M}/joint",
                f"{M}/guid/{guid}",
                f"{M}/joint?changes=true",
                f"{M}/joint/changes",
                f"{M}/joint/changes?squashed=false",
                f"{M}/guid/{guid}/changes",
            ):
                status, body = await call(ua, server, "GET", path)
                assert status == 200, (path, body)
                answers.append(body)
            [mission] = data(answers[0])
            assert [c["data"]["hash"] for c in mission["contents"]] == [h_shared]  # count too
            assert [c.get("contentResource", {}).get("hash") for c in data(answers[3])] == [
                None,
                h_shared,
            ]
            # The secret file: no download, no removal, no keywords, no cot/xml for UKR.
            async with ua.get(https_url(server, f"/Marti/sync/content?hash={h_secret}")) as r:
                assert r.status == 404
                answers.append(await r.read())
            status, _ = await call(ua, server, "DELETE", f"{M}/joint/contents?hash={h_secret}")
            assert status == 404
            status, _ = await call(
                ua, server, "PUT", f"{M}/joint/content/{h_secret}/keywords", json=["x"]
            )
            assert status == 404
            async with ua.get(https_url(server, f"/Marti/sync/content?hash={h_shared}")) as r:
                assert r.status == 200 and await r.read() == shared
            # A secret item kept only in the mission: GET /Marti/api/cot/xml answers USA, not
            # UKR (404 like a missing uid).
            await usa.send(
                mission_marker("m-secret", "CANARY-ITEM", "joint", seclabel("SECRET", ["USA"]))
            )
            await usa.wait_for(b"<contentUid>m-secret</contentUid>")
            async with us.get(https_url(server, "/Marti/api/cot/xml/m-secret")) as r:
                assert r.status == 200 and b"CANARY-ITEM" in await r.read()
            async with ua.get(https_url(server, "/Marti/api/cot/xml/m-secret")) as r:
                assert r.status == 404
                answers.append(await r.read())
            status, body = await call(
                ua, server, "PUT", f"{M}/joint/uid/m-secret/keywords", json=["x"]
            )
            assert (status, body) == (404, b"")
            # Keywords of a USA-only mission are announced to USA's clients, never to UKR's.
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/usa-only?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA"},
            )
            assert status == 201, body
            status, _ = await call(
                us, server, "PUT", f"{M}/usa-only/keywords", json=["CANARY-KEYWORD"]
            )
            assert status == 200
            assert b'name="usa-only"' in await usa.wait_for(b'type="t-x-m-c-k"')
            await ukr.collect(0.5)
            answers.append(bytes(ukr.raw))
            assert b"t-x-m-c-k" not in ukr.raw  # neither the file's nor the mission's
            assert b"usa-only" not in ukr.raw
            for body in answers:
                assert b"CANARY" not in body and h_secret.encode() not in body
                assert b"canary" not in body and b"m-secret" not in body
            await server.writer.flush()
    audit = b"".join(p.read_bytes() for p in (data_dir / "audit").glob("*") if p.is_file())
    assert b'"path":"mission"' in audit and b'"path":"file"' in audit
