"""Release records over HTTP (issue 9 item 6), with real requests to a running server: a file or
data package downloaded across an organisation boundary leaves one ``release`` record, built like
every other one; ``/api/v1/health`` reveals counts and releases nothing."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from liaison.app import Server
from liaison.audit import verify
from liaison.gate import audit_paths, load_public_key
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.http.http_support import (
    cert_session,
    https_url,
    make_zip,
    sha256,
    upload_form,
    wait_until,
)
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

# The members of a release record (docs/labels.md section 5): the same on every path.
RELEASE_FIELDS = {
    "path",
    "uid",
    "type",
    "label_id",
    "originator",
    "to_org",
    "recipients",
    "sha256",
}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


def records(server: Server, kind: str) -> list[dict[str, object]]:
    log_path, _key, _pub = audit_paths(server.config.data_dir)
    out = []
    for line in log_path.read_bytes().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            out.append(rec["fields"])
    return out


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


async def test_downloads_across_organisations_are_recorded(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    part = marker("dp-part", "CANARY-DP", seclabel("SECRET", ["USA", "UKR"]))
    package = make_zip({"a/a.cot": part, "notes.txt": b"notes"})
    digest = sha256(package)
    async with start_server(policy_file=str(policy_file)) as server:
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        # Something on the map for health to count.
        assert server.tls is not None
        usa = certs["usa-s"]
        sender = await connect_tls(server.tls.port, cert=usa.cert, key=usa.key, ca=usa.ca)
        async with clients(sender):
            await sender.send(marker("m-both", "MAP-ITEM", seclabel("SECRET", ["USA", "UKR"])))
            await wait_until(
                lambda: "m-both" in {e.event.uid for e in server.router.latest_entries()},
                "the marker in the picture",
            )
        async with cert_session(server, usa) as http:
            url = https_url(server, f"/Marti/sync/missionupload?hash={digest}&filename=p.zip")
            async with http.post(url, data=upload_form(package)) as r:
                assert r.status == 200, await r.text()
        content = https_url(server, f"/Marti/sync/content?hash={digest}")
        before = len(records(server, "release"))

        # Same organisation as the file's label (USA): no boundary crossed, no record.
        async with cert_session(server, usa) as http:
            assert await _get(http, content) == (200, package)
        assert len(records(server, "release")) == before

        # A HEAD hands over no content: it is answered and leaves no record.
        async with cert_session(server, certs["ukr-s"]) as http, http.head(content) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(package)
        assert len(records(server, "release")) == before

        # UKR reads a USA package: exactly one release record, written before the bytes.
        async with cert_session(server, certs["ukr-s"]) as http:
            assert await _get(http, content) == (200, package)
        releases = records(server, "release")
        assert len(releases) == before + 1
        rec = releases[-1]
        assert set(rec) == RELEASE_FIELDS
        assert rec["path"] == "file" and rec["sha256"] == digest
        assert rec["to_org"] == "UKR" and rec["originator"] == "USA"
        assert rec["recipients"] == ["ukr-s"] and rec["type"] == "application/x-zip-compressed"

        # Refused (UNCLASSIFIED reader): 404 as for a missing file, and nothing recorded.
        async with cert_session(server, certs["ukr-u"]) as http:
            status, body = await _get(http, content)
            assert status == 404 and b"CANARY" not in body
            status, body = await _get(http, content.replace(digest, "0" * 64))
            assert status == 404
        assert len(records(server, "release")) == before + 1

        # The live path writes the same shape (ukr-s received the marker at connect).
        ukr = certs["ukr-s"]
        reader = await connect_tls(server.tls.port, cert=ukr.cert, key=ukr.key, ca=ukr.ca)
        async with clients(reader):
            await reader.wait_for(b"MAP-ITEM")
        live = [r for r in records(server, "release") if r["path"] == "replay"]
        assert live and all(set(r) == RELEASE_FIELDS for r in live)
    log_path, _key, pub_path = audit_paths(data_dir)
    assert verify(log_path, load_public_key(pub_path)).ok


async def test_health_reveals_counts_and_writes_no_release_record(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        assert server.tls is not None
        usa = certs["usa-s"]
        sender = await connect_tls(server.tls.port, cert=usa.cert, key=usa.key, ca=usa.ca)
        async with clients(sender):
            await sender.send(marker("m-both", "MAP-ITEM", seclabel("SECRET", ["USA", "UKR"])))
            await wait_until(
                lambda: "m-both" in {e.event.uid for e in server.router.latest_entries()},
                "the marker in the picture",
            )
        count = len(records(server, "release"))
        for name, items in (("ukr-s", 1), ("usa-u", 0), ("usa-s", 1)):
            async with cert_session(server, certs[name]) as http:
                for _ in range(3):
                    status, body = await _get(http, https_url(server, "/api/v1/health"))
                    assert status == 200
                    doc = json.loads(body)
                    assert doc["counts"]["items"] == items, name
                    assert b"MAP-ITEM" not in body and b"m-both" not in body
        assert len(records(server, "release")) == count
