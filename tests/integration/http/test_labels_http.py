"""Labels on the HTTP side: the REST API and the WebSocket feed release exactly what the gate
permits to each of four users (USA and UKR, two clearance levels each), and canaries of denied
items never appear in any byte of any answer."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.http.http_support import cert_session, https_url, wait_until
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

MARKERS = {
    "m-secret-both": ("CANARY-SECRET-BOTH", ("SECRET", ["USA", "UKR"], None)),
    "m-orcon": ("CANARY-ORCON", ("SECRET", ["USA", "UKR"], ["ORCON"])),
    "m-secret-usa": ("CANARY-SECRET-USA", ("SECRET", ["USA"], None)),
    "m-unclass-both": ("CANARY-UNCLASS-BOTH", ("UNCLASSIFIED", ["USA", "UKR"], None)),
}
EXPECTED = {
    "usa-s": {"m-secret-both", "m-orcon", "m-secret-usa", "m-unclass-both"},
    "usa-u": {"m-unclass-both"},
    "ukr-s": {"m-secret-both", "m-unclass-both"},
    "ukr-u": {"m-unclass-both"},
}
BANNERS = {
    "m-secret-both": "SECRET//REL TO USA, UKR",
    "m-orcon": "SECRET//HANDLING ORCON//REL TO USA, UKR",
    "m-secret-usa": "SECRET//REL TO USA",
    "m-unclass-both": "UNCLASSIFIED//REL TO USA, UKR",
}
CLEARANCE = {
    "usa-s": "SECRET//HANDLING ORCON//REL TO USA, LIAISON",
    "usa-u": "UNCLASSIFIED//REL TO USA, LIAISON",
    "ukr-s": "SECRET//REL TO UKR, LIAISON",
    "ukr-u": "UNCLASSIFIED//REL TO UKR, LIAISON",
}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def _body(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


async def test_rest_and_feed_release_exactly_what_the_gate_permits(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        assert server.tls is not None
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        usa = certs["usa-s"]
        sender = await connect_tls(server.tls.port, cert=usa.cert, key=usa.key, ca=usa.ca)
        async with clients(sender):
            for uid, (canary, (cls, rel, handling)) in MARKERS.items():
                await sender.send(marker(uid, canary, seclabel(cls, rel, handling)))
            await wait_until(
                lambda: set(MARKERS) <= {e.event.uid for e in server.router.latest_entries()},
                "the markers in the picture",
            )
            await server.writer.flush()
            for name, cert in certs.items():
                async with cert_session(server, cert) as http:
                    status, me = await _body(http, https_url(server, "/api/v1/me"))
                    assert json.loads(me)["clearance"] == CLEARANCE[name]
                    received: list[bytes] = [me]
                    status, pic = await _body(http, https_url(server, "/api/v1/picture?type=b-m"))
                    features = json.loads(pic)["features"]
                    assert {f["id"] for f in features} == EXPECTED[name], name
                    for f in features:
                        assert f["properties"]["label"] == BANNERS[f["id"]]
                    received.append(pic)
                    for query in (
                        "/api/v1/picture?format=cot",
                        "/api/v1/history",
                        "/api/v1/history?format=cot",
                        "/api/v1/chat",
                        "/api/v1/clients",
                        "/Marti/api/contacts/all",
                    ):
                        status, body = await _body(http, https_url(server, query))
                        assert status == 200, query
                        received.append(body)
                    status, hist = await _body(http, https_url(server, "/api/v1/history?type=b-m"))
                    assert {f["id"] for f in json.loads(hist)["features"]} == EXPECTED[name]
                    for uid in MARKERS:
                        status, body = await _body(http, https_url(server, f"/api/v1/items/{uid}"))
                        status_t, track = await _body(
                            http, https_url(server, f"/api/v1/items/{uid}/track")
                        )
                        if uid in EXPECTED[name]:
                            assert status == 200 and status_t == 200
                        else:
                            missing = await _body(http, https_url(server, "/api/v1/items/none"))
                            assert (status, body) == missing
                            assert status_t == 404
                        received.extend([body, track])
                    async with http.ws_connect(https_url(server, "/api/v1/stream")) as ws:
                        msg = await ws.receive(timeout=10)
                        snapshot = json.loads(msg.data)
                        received.append(msg.data.encode())
                    got = {f["id"] for f in snapshot["features"] if f["id"].startswith("m-")}
                    assert got == EXPECTED[name], name
                    everything = b"".join(received)
                    for uid, (canary, _) in MARKERS.items():
                        if uid not in EXPECTED[name]:
                            assert canary.encode() not in everything, (name, canary)
                            assert uid.encode() not in everything, (name, uid)


async def test_data_packages_carry_the_dominant_label_of_their_contents(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    from tests.integration.http.http_support import make_zip, sha256, upload_form

    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    secret_both = marker("dp-a", "CANARY-DP-A", seclabel("SECRET", ["USA", "UKR"]))
    unclass_both = marker("dp-b", "CANARY-DP-B", seclabel("UNCLASSIFIED", ["USA", "UKR"]))
    package = make_zip({"a/a.cot": secret_both, "b/b.cot": unclass_both, "notes.txt": b"CANARY"})
    unlabelled = make_zip({"notes.txt": b"CANARY-PLAIN"})

    def upload_url(server: object, data: bytes) -> str:
        return https_url(server, f"/Marti/sync/missionupload?hash={sha256(data)}&filename=p.zip")  # type: ignore[arg-type]

    async with start_server(policy_file=str(policy_file)) as server:
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        async with cert_session(server, certs["usa-s"]) as http:
            async with http.post(upload_url(server, package), data=upload_form(package)) as r:
                assert r.status == 200, await r.text()
            # 8443 has no default label in this policy: an unlabelled upload is refused there.
            async with http.post(upload_url(server, unlabelled), data=upload_form(unlabelled)) as r:
                assert r.status == 403 and "no_label" in await r.text()
        # The package is SECRET//REL TO USA, UKR: the highest part and the common REL.
        visible = {"usa-s": True, "usa-u": False, "ukr-s": True, "ukr-u": False}
        for name, cert in certs.items():
            async with cert_session(server, cert) as http:
                for data, may in ((package, visible[name]), (unlabelled, False)):
                    url = https_url(server, f"/Marti/sync/content?hash={sha256(data)}")
                    status, body = await _body(http, url)
                    if may:
                        assert status == 200 and body == data, name
                    else:
                        assert status == 404 and b"CANARY" not in body, name
        # An uploader may not assert, through the parts of a package, a label it cannot read.
        async with (
            cert_session(server, certs["usa-u"]) as http,
            http.post(upload_url(server, package), data=upload_form(package)) as r,
        ):
            assert r.status == 403


async def test_web_chat_with_a_chosen_label(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        assert server.tls is not None
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        ks, ku = certs["ukr-s"], certs["ukr-u"]
        secret = await connect_tls(server.tls.port, cert=ks.cert, key=ks.key, ca=ks.ca)
        unclass = await connect_tls(server.tls.port, cert=ku.cert, key=ku.key, ca=ku.ca)
        async with clients(secret, unclass), cert_session(server, certs["usa-s"]) as http:
            url = https_url(server, "/api/v1/chat")
            body = {"text": "CANARY-WEB-SECRET", "label": "SECRET//REL TO USA, UKR"}
            async with http.post(url, json=body) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["message"]["label"] == "SECRET//REL TO USA, UKR"
            await secret.wait_for(b"CANARY-WEB-SECRET")
            assert b"CANARY-WEB-SECRET" not in bytes(unclass.raw) + b"".join(
                await unclass.collect(0.3)
            )
            async with http.post(url, json={"text": "x", "label": "SECRET//REL TO NOWHERE"}) as r:
                assert r.status == 400
        async with cert_session(server, certs["usa-u"]) as http:
            body = {"text": "too high", "label": "SECRET//REL TO USA"}
            async with http.post(https_url(server, "/api/v1/chat"), json=body) as r:
                assert r.status == 403
                assert "class_exceeds" in await r.text() or "cannot_read" in await r.text()
            async with http.get(https_url(server, "/api/v1/me")) as r:
                assert (await r.json())["classifications"][0] == "UNCLASSIFIED"


async def test_a_chat_without_a_label_reports_the_default_it_was_given(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy-default.toml"
    https = (
        '[gate.listeners.https]\nceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }'
    )
    policy.write_text(POLICY.replace(https, https + '\ndefault_classification = "UNCLASSIFIED"'))
    assert "default_classification" in policy.read_text().split("[gate.listeners.https]")[1]
    UserDirectory.load(data_dir / "users.json").add_user("usa-s", "USA", profile="usa-secret")
    async with start_server(policy_file=str(policy)) as server:
        cert = issue_cert(server, "usa-s", "USA")
        async with (
            cert_session(server, cert) as http,
            http.post(https_url(server, "/api/v1/chat"), json={"text": "plain"}) as r,
        ):
            assert r.status == 201
            assert (await r.json())["message"]["label"] == "UNCLASSIFIED//REL TO USA"
