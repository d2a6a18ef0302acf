"""Who may change a stored item, over real sockets: TAK clients of two organisations (USA and
UKR) on mutual TLS, and the REST API.

A UKR client may not overwrite or delete a USA item, whether it can see the item or not; an
unlabelled update (ATAK never sends labels) keeps the stored label; another USA principal who
may see an item may move it. Every refusal is counted and audited.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ClientCert, ServerFactory, issue_cert
from tests.integration.helpers import Client, clients, connect_tls, delete_event
from tests.integration.http.http_support import (
    cert_session,
    https_url,
    make_zip,
    sha256,
    upload_form,
    wait_until,
)
from tests.integration.test_labels_e2e import POLICY, marker, seclabel

USERS = {
    "usa-s": ("USA", "usa-secret"),
    "usa-s2": ("USA", "usa-secret"),
    "usa-u": ("USA", "usa-unclass"),
    "ukr-s": ("UKR", "ukr-secret"),
}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def _item(server: Server, cert: ClientCert, uid: str) -> tuple[int, bytes]:
    async with (
        cert_session(server, cert) as http,
        http.get(https_url(server, f"/api/v1/items/{uid}")) as r,
    ):
        return r.status, await r.read()


def _rejected(server: Server, reason: str) -> float:
    return server.metrics.snapshot().get(f'liaison_ingest_rejected_total{{reason="{reason}"}}', 0)


async def test_other_organisations_cannot_overwrite_or_delete_and_labels_are_kept(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        assert server.tls is not None
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        conns: dict[str, Client] = {}
        for name, cert in certs.items():
            conns[name] = await connect_tls(
                server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
            )
        us, us2, uu, ks = (conns[n] for n in ("usa-s", "usa-s2", "usa-u", "ukr-s"))
        async with clients(*conns.values()):
            await us.send(marker("m-usa", "CANARY-USA", seclabel("SECRET", ["USA"])))
            await us.send(marker("m-both", "CANARY-BOTH", seclabel("SECRET", ["USA", "UKR"])))
            await us2.wait_for(b'uid="m-usa"')
            await us2.wait_for(b'uid="m-both"')
            await ks.wait_for(b'uid="m-both"')

            # UKR: an unlabelled event with the uid of a USA item it cannot see, deletes of
            # both USA items, and an unlabelled move of the USA item it can see.
            await ks.send(marker("m-usa", "CANARY-UKR-OVERWRITE"))
            await ks.send(delete_event("m-usa"))
            await ks.send(delete_event("m-both"))
            await ks.send(marker("m-both", "CANARY-UKR-MOVE"))
            # A sentinel both organisations may see: everything UKR sent before it is decided.
            await ks.send(
                marker("m-sentinel", "SENTINEL", seclabel("UNCLASSIFIED", ["UKR", "USA"]))
            )
            await us.wait_for(b'uid="m-sentinel"')
            await us2.wait_for(b'uid="m-sentinel"')
            for c in (us, us2):
                assert b"CANARY-UKR" not in c.raw and b"t-x-d-d" not in c.raw, c.name
            assert _rejected(server, "prior_not_visible") == 2
            assert _rejected(server, "other_org_item") == 2
            pictured = {e.event.uid for e in server.router.latest_entries()}
            assert {"m-usa", "m-both"} <= pictured

            # The USA SECRET user moves its marker from ATAK (no label): still SECRET, so the
            # USA UNCLASSIFIED user never gets it, the other USA SECRET user does.
            await us.send(marker("m-usa", "CANARY-USA-MOVED"))
            moved = await us2.wait_for(b"CANARY-USA-MOVED")
            assert b'access="SECRET"' in moved and b'releasableTo="REL TO USA"' in moved
            # Another USA principal who may see the shared item moves it: allowed, label kept,
            # and UKR, who may see it, is told.
            await us2.send(marker("m-both", "CANARY-BOTH-MOVED"))
            both = await ks.wait_for(b"CANARY-BOTH-MOVED")
            assert b'access="SECRET"' in both and b'releasableTo="REL TO USA, UKR"' in both
            await us.wait_for(b"CANARY-BOTH-MOVED")
            await uu.send(marker("m-sentinel-u", "SENTINEL-U", seclabel("UNCLASSIFIED", ["USA"])))
            await us.wait_for(b'uid="m-sentinel-u"')
            await uu.collect(0.3)
            assert b"CANARY-USA" not in uu.raw and b"CANARY-BOTH" not in uu.raw

            # REST: the USA item is still there for USA readers, at its label.
            await server.writer.flush()
            status, body = await _item(server, certs["usa-s2"], "m-usa")
            assert status == 200, body
            assert b"CANARY-USA-MOVED" in body and b"SECRET//REL TO USA" in body
            status, body = await _item(server, certs["ukr-s"], "m-both")
            assert status == 200 and b"CANARY-BOTH-MOVED" in body
            missing = await _item(server, certs["usa-u"], "no-such-item")
            assert await _item(server, certs["usa-u"], "m-usa") == missing
            assert await _item(server, certs["ukr-s"], "m-usa") == missing

        # Replay: a reconnecting USA user gets both USA items, as last written by USA.
        cert = certs["usa-s2"]
        again = await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
        async with clients(again):
            frame = await again.wait_for(b'uid="m-usa"')
            assert b"CANARY-USA-MOVED" in frame and b'access="SECRET"' in frame
            frame = await again.wait_for(b'uid="m-both"')
            assert b"CANARY-BOTH-MOVED" in frame

    # Every refusal is in the audit log as a refused ingest, with its reason.
    refused: list[dict[str, object]] = []
    for line in (data_dir / "audit" / "audit.jsonl").read_bytes().splitlines():
        record = json.loads(line)
        fields = record["fields"]
        if record["kind"] == "ingest" and fields.get("accepted") is False:
            refused.append(fields)
    outcomes = sorted((str(f.get("link_uid", f["uid"])), str(f["reasons"])) for f in refused)
    assert outcomes == [
        ("m-both", "['other_org_item']"),
        ("m-both", "['other_org_item']"),
        ("m-usa", "['prior_not_visible']"),
        ("m-usa", "['prior_not_visible']"),
    ]
    assert all(f["org"] == "UKR" for f in refused)
    shutil.rmtree(data_dir / "test-clients", ignore_errors=True)


PARTNER_POLICY = POLICY + "\n[gate]\npartner_updates = true\n"


async def test_partner_updates_setting_lets_a_partner_move_and_delete_what_it_sees(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy_file = tmp_path / "partners.toml"
    policy_file.write_text(PARTNER_POLICY)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        assert server.tls is not None
        certs = {n: issue_cert(server, n, USERS[n][0]) for n in ("usa-s", "ukr-s")}
        us, ks = [
            await connect_tls(server.tls.port, cert=c.cert, key=c.key, ca=c.ca, name=n)
            for n, c in certs.items()
        ]
        async with clients(us, ks):
            await us.send(marker("m-usa", "CANARY-USA", seclabel("SECRET", ["USA"])))
            await us.send(marker("m-both", "CANARY-BOTH", seclabel("SECRET", ["USA", "UKR"])))
            await ks.wait_for(b'uid="m-both"')
            await ks.send(delete_event("m-usa"))  # never an item it cannot see
            await ks.send(marker("m-both", "CANARY-UKR-MOVE"))
            moved = await us.wait_for(b"CANARY-UKR-MOVE")
            assert b'releasableTo="REL TO USA, UKR"' in moved
            await ks.send(delete_event("m-both"))
            deleted = await us.wait_for(b"t-x-d-d")
            assert b'uid="m-both"' in deleted
            assert b"m-usa" not in deleted
            await wait_until(
                lambda: (
                    {e.event.uid for e in server.router.latest_entries()} >= {"m-usa"}
                    and "m-both" not in {e.event.uid for e in server.router.latest_entries()}
                ),
                "m-both deleted, m-usa kept",
            )
            assert _rejected(server, "prior_not_visible") == 1
    shutil.rmtree(data_dir / "test-clients", ignore_errors=True)


# --- data packages: an unlabelled CoT part counts as the label it would get alone -------------

UPLOAD_POLICY = POLICY.replace(
    '[gate.listeners.https]\nceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }\n',
    '[gate.listeners.https]\nceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }\n'
    'default_classification = "UNCLASSIFIED"\n',
)


async def test_an_unlabelled_part_keeps_a_data_package_from_partners(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    assert UPLOAD_POLICY != POLICY
    policy_file = tmp_path / "upload.toml"
    policy_file.write_text(UPLOAD_POLICY)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    shared = marker("m-shared", "CANARY-SHARED", seclabel("SECRET", ["USA", "UKR"]))
    usa_only = marker("m-plain", "CANARY-USA-ONLY")  # alone: UNCLASSIFIED//REL TO USA
    package = make_zip({"a.cot": shared, "b.cot": usa_only})
    digest = sha256(package)
    async with start_server(policy_file=str(policy_file)) as server:
        certs = {n: issue_cert(server, n, USERS[n][0]) for n in ("usa-s", "usa-s2", "ukr-s")}
        upload = https_url(server, f"/Marti/sync/missionupload?hash={digest}&filename=pkg")
        async with (
            cert_session(server, certs["usa-s"]) as http,
            http.post(upload, data=upload_form(package)) as r,
        ):
            assert r.status == 200, await r.text()
            url = await r.text()
        async with cert_session(server, certs["usa-s2"]) as http, http.get(url) as r:
            assert r.status == 200 and await r.read() == package
        async with cert_session(server, certs["ukr-s"]) as http, http.get(url) as r:
            assert r.status == 404
            assert b"CANARY" not in await r.read()
    shutil.rmtree(data_dir / "test-clients", ignore_errors=True)
