"""Mission log entries end to end (tak-missions.md 4.5, 5.4): posted, updated, read and deleted
over HTTPS with client certificates the way ATAK's Data Sync calls them, the ``t-x-m-c-l``
notice on the TLS stream of a pytak client, kept across a restart; and labelled entries that a
reader of another organisation, or below the entry's classification, never sees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session
from tests.integration.test_labels_e2e import POLICY, USERS
from tests.integration.test_missions import M, call, connect, data, https_url, wait_subscribed

ENTRIES = f"{M}/logs/entries"
PADDED = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


async def test_log_entries_as_data_sync_posts_them(
    start_server: ServerFactory, data_dir: Path
) -> None:
    async with start_server() as server:
        alice_c, bob_c = (issue_cert(server, n) for n in ("alice", "bob"))
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        async with (
            clients(alice, bob),
            cert_session(server, alice_c) as a,
            cert_session(server, bob_c) as b,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob")
            status, body = await call(a, server, "PUT", f"{M}/journal?creatorUid=ANDROID-alice")
            assert status == 201
            guid = data(body)[0]["guid"]
            status, _ = await call(b, server, "PUT", f"{M}/journal/subscription?uid=ANDROID-bob")
            assert status == 201

            # POST: 201 with the entry; the server sets id, servertime and created.
            entry = {
                "content": "bridge out at grid 123",
                "creatorUid": "ANDROID-alice",
                "missionNames": ["journal"],
                "dtg": "2026-01-02T03:04:05.678Z",
                "entryUid": "log-1",
                "contentHashes": [],
                "keywords": ["bridge"],
            }
            status, body = await call(a, server, "POST", ENTRIES, json=entry)
            assert status == 201, body
            doc = json.loads(body)
            assert doc["type"] == "com.bbn.marti.sync.model.LogEntry"
            posted = doc["data"]
            assert set(posted) == {
                "id",
                "content",
                "creatorUid",
                "entryUid",
                "missionNames",
                "servertime",
                "dtg",
                "created",
                "contentHashes",
                "keywords",
            }
            assert posted["content"] == "bridge out at grid 123"
            assert posted["missionNames"] == ["journal"] and posted["keywords"] == ["bridge"]
            assert posted["dtg"] == "2026-01-02T03:04:05.678Z"
            assert posted["entryUid"] == "log-1" and posted["creatorUid"] == "ANDROID-alice"
            for key in ("servertime", "created"):
                assert re.match(PADDED, posted[key]), posted[key]
            # The subscriber hears of it on the stream: t-x-m-c-l with the TAK template.
            notice = await bob.wait_for(b"t-x-m-c-l")
            assert b'how="h-g-i-g-o"' in notice and b'name="journal"' in notice
            assert f'guid="{guid}"'.encode() in notice
            assert b'authorUid="ANDROID-alice"' in notice and b'type="CHANGE"' in notice

            # Read: the mission's log, one entry by id.
            status, body = await call(b, server, "GET", f"{M}/journal/log")
            assert status == 200 and [e["id"] for e in data(body)] == [posted["id"]]
            status, body = await call(b, server, "GET", f"{ENTRIES}/{posted['id']}")
            assert status == 200 and data(body)["content"] == "bridge out at grid 123"
            status, body = await call(b, server, "GET", f"{M}/journal?logs=true")
            assert [e["content"] for e in data(body)[0]["logs"]] == ["bridge out at grid 123"]
            status, body = await call(b, server, "GET", f"{M}/journal")
            assert "logs" not in data(body)[0]
            status, body = await call(b, server, "GET", f"{M}/journal/log?secago=bad")
            assert status == 400

            # Refused: an id on POST, no content, no mission, an unknown mission.
            status, body = await call(a, server, "POST", ENTRIES, json={**entry, "id": "x"})
            assert status == 400 and json.loads(body)["code"] == 2
            status, _ = await call(a, server, "POST", ENTRIES, json={"missionNames": ["journal"]})
            assert status == 400
            status, _ = await call(a, server, "POST", ENTRIES, json={"content": "x"})
            assert status == 400
            status, body = await call(
                a, server, "POST", ENTRIES, json={"content": "x", "missionNames": ["nope"]}
            )
            assert (status, body) == (404, b"")

            # PUT updates (201); created stays, servertime moves, content changes.
            update = {**entry, "id": posted["id"], "content": "bridge repaired"}
            status, body = await call(b, server, "PUT", ENTRIES, json=update)
            assert status == 201, body
            updated = data(body)
            assert updated["id"] == posted["id"] and updated["created"] == posted["created"]
            assert updated["content"] == "bridge repaired"
            assert b"t-x-m-c-l" in await alice.wait_for(b"t-x-m-c-l")
            status, _ = await call(b, server, "PUT", ENTRIES, json={**update, "id": "nope"})
            assert status == 404
            status, _ = await call(b, server, "PUT", ENTRIES, json=entry)
            assert status == 400  # no id

            second = {**entry, "content": "second entry", "entryUid": "log-2"}
            status, body = await call(a, server, "POST", ENTRIES, json=second)
            assert status == 201
            second_id = data(body)["id"]
            # DELETE: 200 with the entry; then it is gone.
            status, body = await call(a, server, "DELETE", f"{ENTRIES}/{second_id}")
            assert status == 200 and data(body)["content"] == "second entry"
            status, _ = await call(a, server, "GET", f"{ENTRIES}/{second_id}")
            assert status == 404
    # Kept across a restart (the SQLite mission store).
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, body = await call(a, server, "GET", f"{M}/journal/log")
            assert status == 200
            [kept] = data(body)
            assert kept["content"] == "bridge repaired" and kept["created"] == posted["created"]
            # Deleting the mission takes its entries with it.
            status, body = await call(
                a, server, "GET", f"{M}/journal/subscription?uid=ANDROID-alice"
            )
            token = data(body)["token"]
            status, _ = await call(a, server, "DELETE", f"{M}/journal", token=token)
            assert status == 200
            status, _ = await call(a, server, "GET", f"{ENTRIES}/{posted['id']}")
            assert status == 404


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def test_labelled_log_entries_reach_only_who_may_read_them(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        usa_c = issue_cert(server, "usa-s", "USA")
        usau_c = issue_cert(server, "usa-u", "USA")
        ukr_c = issue_cert(server, "ukr-u", "UKR")
        usa = await connect(server, usa_c, "ANDROID-usa", "usa-s")
        usau = await connect(server, usau_c, "ANDROID-usau", "usa-u")
        ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
        async with (
            clients(usa, usau, ukr),
            cert_session(server, usa_c) as us,
            cert_session(server, usau_c) as uu,
            cert_session(server, ukr_c) as ua,
        ):
            await wait_subscribed(server, "ANDROID-usa", "ANDROID-usau", "ANDROID-ukr")
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            for session, uid in ((uu, "ANDROID-usau"), (ua, "ANDROID-ukr")):
                status, _ = await call(session, server, "PUT", f"{M}/joint/subscription?uid={uid}")
                assert status == 201

            def entry(text: str) -> dict[str, object]:
                return {"content": text, "creatorUid": "ANDROID-usa", "missionNames": ["joint"]}

            # No classification and no listener default: no label, refused.
            status, _ = await call(us, server, "POST", ENTRIES, json=entry("unlabelled"))
            assert status == 403
            # Above the poster's clearance: refused (usa-u holds UNCLASSIFIED only).
            status, _ = await call(
                uu,
                server,
                "POST",
                ENTRIES,
                json=entry("too high"),
                params={"classification": "SECRET//REL TO USA"},
            )
            assert status == 403
            status, body = await call(
                us,
                server,
                "POST",
                ENTRIES,
                json=entry("CANARY-LOG-SECRET"),
                params={"classification": "SECRET//REL TO USA"},
            )
            assert status == 201, body
            secret_id = data(body)["id"]
            status, body = await call(
                us,
                server,
                "POST",
                ENTRIES,
                json=entry("shared-log"),
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            await ukr.wait_for(b"t-x-m-c-l")
            await usau.wait_for(b"t-x-m-c-l")

            status, body = await call(us, server, "GET", f"{M}/joint/log")
            assert [e["content"] for e in data(body)] == ["CANARY-LOG-SECRET", "shared-log"]
            answers: list[bytes] = []
            for session in (ua, uu):
                status, body = await call(session, server, "GET", f"{M}/joint/log")
                assert status == 200 and [e["content"] for e in data(body)] == ["shared-log"]
                answers.append(body)
                status, body = await call(session, server, "GET", f"{M}/joint?logs=true")
                assert [e["content"] for e in data(body)[0]["logs"]] == ["shared-log"]
                answers.append(body)
                # API_VERSION 3: the subscribe answer carries the mission with its logs.
                uid = "ANDROID-ukr" if session is ua else "ANDROID-usau"
                url = https_url(server, f"{M}/joint/subscription?uid={uid}")
                async with session.put(url, headers={"API_VERSION": "3"}) as r:
                    assert r.status == 201
                    body = await r.read()
                assert [e["content"] for e in data(body)["mission"]["logs"]] == ["shared-log"]
                answers.append(body)
                status, body = await call(session, server, "GET", f"{ENTRIES}/{secret_id}")
                assert (status, body) == (404, b"")
                status, body = await call(session, server, "DELETE", f"{ENTRIES}/{secret_id}")
                assert (status, body) == (404, b"")
                update = {**entry("overwritten"), "id": secret_id}
                status, _ = await call(session, server, "PUT", ENTRIES, json=update)
                assert status == 404
            # Only one notice reached each of them (the shared entry's), none for the secret one.
            for client in (ukr, usau):
                await client.collect(0.5)
                assert bytes(client.raw).count(b"t-x-m-c-l") == 1
                answers.append(bytes(client.raw))
            shared_id = next(e["id"] for e in data(answers[0]) if e["content"] == "shared-log")
            # UKR may see the USA entry but not change or delete it (gate.partner_updates off).
            status, body = await call(
                ua, server, "PUT", ENTRIES, json={**entry("ukr rewrite"), "id": shared_id}
            )
            assert status == 403 and b"other_org_item" in body
            status, body = await call(ua, server, "DELETE", f"{ENTRIES}/{shared_id}")
            assert status == 403
            # The author may update; without a classification the label is kept (still hidden
            # from UKR); widening it to UKR is a relabel, refused.
            status, body = await call(
                us, server, "PUT", ENTRIES, json={**entry("CANARY-LOG-EDITED"), "id": secret_id}
            )
            assert status == 201, body
            status, body = await call(
                us,
                server,
                "PUT",
                ENTRIES,
                json={**entry("CANARY-LOG-WIDENED"), "id": secret_id},
                params={"classification": "SECRET//REL TO USA, UKR"},
            )
            assert status == 403 and b"lowers_prior_label" in body
            for session in (ua, uu):
                status, body = await call(session, server, "GET", f"{M}/joint/log")
                assert [e["content"] for e in data(body)] == ["shared-log"]
                answers.append(body)
            status, body = await call(us, server, "GET", f"{ENTRIES}/{secret_id}")
            assert data(body)["content"] == "CANARY-LOG-EDITED"
            await ukr.collect(0.3)
            answers.append(bytes(ukr.raw))
            for body in answers:
                assert b"CANARY" not in body and secret_id.encode() not in body
            await server.writer.flush()
    audit = b"".join(p.read_bytes() for p in (data_dir / "audit").glob("*") if p.is_file())
    assert b'"path":"mission-log"' in audit
