"""The operator API (/api/v1/admin/...) over real HTTPS against a running server: operators
succeed, everyone else is refused 403 (counted and audited), cookie sessions need the CSRF
token, a user added here signs in and enrolls, a revocation made here closes the user's live
TLS stream, and every action leaves an ``admin`` record in the audit log."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from cryptography import x509

from liaison import config as config_mod
from liaison.app import Server, run_server
from liaison.audit import AuditLog
from liaison.gate import audit_paths
from liaison.identity import packages
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import fingerprint_sha256, load_server_cert
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.http.http_support import (
    PASSWORD,
    add_user,
    browser_session,
    cert_session,
    certs,
    enroll_url,
    https_url,
    wait_until,
    write_groups,
)
from tests.integration.test_enrollment import csr_b64, new_key
from tests.integration.test_federation_app import free_port, peer_toml
from tests.integration.test_feeds import feed
from tests.integration.test_labels_e2e import POLICY

A = "/api/v1/admin"
NEW_PASSWORD = "another long enough password"
# Every route of the operator API, with a body for the POSTs.
ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET", f"{A}/users", f"{A}/users", None),
    ("POST", f"{A}/users", f"{A}/users", {"name": "mallory", "org": "RED"}),
    ("POST", f"{A}/users/{{name}}/revoke", f"{A}/users/webops/revoke", {}),
    ("POST", f"{A}/users/{{name}}/password", f"{A}/users/webops/password", {"password": None}),
    ("POST", f"{A}/users/{{name}}/enrollment", f"{A}/users/webops/enrollment", {}),
    ("GET", f"{A}/users/{{name}}/package", f"{A}/users/webops/package", None),
    ("GET", f"{A}/certificates", f"{A}/certificates", None),
    ("GET", f"{A}/status", f"{A}/status", None),
    ("GET", f"{A}/audit", f"{A}/audit", None),
]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def _call(
    http: aiohttp.ClientSession,
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=headers) as r:
        data = await r.read()
        if r.content_type == "application/json":
            return r.status, json.loads(data)
        return r.status, data


def _zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}


def _admin_records(server: Server) -> list[tuple[str, str, int]]:
    log_path, _key, _pub = audit_paths(server.config.data_dir)
    out = []
    for line in log_path.read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] == "admin":
            f = record["fields"]
            assert f["address"] == "127.0.0.1" and f["who"] in ("ops", "webops"), f
            out.append((f["action"], f["target"], f["status"]))
    return out


async def test_operator_api_end_to_end(start_server: ServerFactory, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    # A partner link that cannot connect and a feed, for the status; the password listener's
    # ceiling, so that a user's profile gives a clearance there.
    partner = ensure_server_pki(tmp_path / "partner", public_host="localhost")
    policy.write_text(
        POLICY
        + "\n[gate.listeners.enroll]\n"
        + 'ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }\n'
        + '\n[federation]\nserver_id = "ops-liaison"\nlisten = "off"\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml(
            "ukr",
            ca=partner.ca_cert,
            fingerprint=fingerprint_sha256(load_server_cert(partner)),
            org="UKR",
            dial=f"127.0.0.1:{free_port()}",
        )
        + feed("ships", "ais-udp", 'listen = "127.0.0.1:0"')
    )
    expected: list[tuple[str, str, int]] = []
    async with start_server(
        policy_file=str(policy), groups_file=str(write_groups(tmp_path))
    ) as server:
        add_user(server, "webops", "USA", [])  # an operator by the groups file
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("ops", "USA"), ("red1", "RED"))

        # Refusals: a certificate and a password caller who are not operators, on every route.
        async with cert_session(server, c["red1"]) as http:
            for method, _, path, body in ROUTES:
                status, doc = await _call(http, https_url(server, path), method, body)
                assert (status, doc) == (403, {"error": "operator role required"}), path
        async with browser_session(server) as http:
            for method, _, path, body in ROUTES:
                url = enroll_url(server, path)
                status, doc = await _call(http, url, method, body, _basic("webred", PASSWORD))
                assert (status, doc) == (403, {"error": "operator role required"}), path
        snap = server.metrics.snapshot()
        for _, template, _, _ in ROUTES:
            # Counted by route template (GET and POST /users share one), audited with the method.
            times = 2 * sum(1 for route in ROUTES if route[1] == template)
            assert snap.get(f'liaison_role_denied_total{{route="{template}"}}') == times

        async with cert_session(server, c["ops"]) as http:
            # Add a user with a password and a profile: it signs in at once.
            carol = {"name": "carol", "org": "USA", "groups": ["blue"], "profile": "usa-secret"}
            status, doc = await _call(
                http, https_url(server, f"{A}/users"), "POST", {**carol, "password": PASSWORD}
            )
            assert status == 201, doc
            expected.append(("user_add", "carol", 201))
            assert doc["enrollment"] is None
            user = doc["user"]
            assert {k: user[k] for k in ("name", "org", "profile", "in_groups", "out_groups")} == {
                **{k: v for k, v in carol.items() if k != "groups"},
                "in_groups": ["blue"],
                "out_groups": ["blue"],
            }
            assert user["revoked"] is False and user["password"] is True
            assert user["live_tokens"] == 0
            [cert] = user["certificates"]
            assert cert["revoked"] is False and cert["common_name"] == "carol"
            async with browser_session(server) as web:
                me_status, me = await _call(
                    web, enroll_url(server, "/api/v1/me"), headers=_basic("carol", PASSWORD)
                )
            assert me_status == 200 and me["name"] == "carol"
            assert user["clearance"] == me["clearance"] and me["clearance"] is not None

            # Add a user with an enrollment link: the token enrolls a certificate.
            status, doc = await _call(
                http,
                https_url(server, f"{A}/users"),
                "POST",
                {"name": "dave", "org": "USA", "in_groups": ["blue"], "out_groups": ["red"]},
            )
            assert status == 201, doc
            expected.append(("user_add", "dave", 201))
            link = doc["enrollment"]
            assert link["url"].startswith("tak://com.atakmap.app/enroll?")
            assert link["qr_png"].startswith("data:image/png;base64,")
            png = base64.b64decode(link["qr_png"].split(",", 1)[1])
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            token = parse_qs(urlsplit(link["url"]).query)["token"][0]
            assert doc["user"]["live_tokens"] == 1
            async with browser_session(server) as web:
                key = new_key()
                async with web.post(
                    enroll_url(server, "/Marti/api/tls/signClient/v2?clientUid=ANDROID-dave"),
                    data=csr_b64(key, [("CN", "dave"), ("O", "USA")]),
                    headers=_basic("dave", token),
                ) as r:
                    assert r.status == 200, await r.text()
                    signed = json.loads(await r.read())["signedCert"]
            enrolled = x509.load_der_x509_certificate(base64.b64decode(signed))

            # Refused adds: answered and recorded with their status.
            for body, want in (
                ({"name": "carol", "org": "USA"}, 409),
                ({"name": "bad name!", "org": "USA"}, 400),
                ({"name": "frank", "org": "USA", "groups": ["a"], "in_groups": ["b"]}, 400),
                ({"name": "frank", "org": "USA", "in_groups": ["b"]}, 400),
                ({"name": "frank", "org": "USA", "password": "short"}, 400),
                ({"name": "frank", "org": "USA", "token_ttl_hours": 0}, 400),
                ({"name": "x" * 1000, "org": "USA"}, 400),
            ):
                status, doc = await _call(http, https_url(server, f"{A}/users"), "POST", body)
                assert status == want and "error" in doc, (body, status, doc)
                expected.append(("user_add", str(body["name"])[:128], want))
            async with http.post(https_url(server, f"{A}/users"), data=b"name=x") as r:
                assert r.status == 415
            expected.append(("user_add", "", 415))

            # The list: both users, their certificates (dave's enrolled one included).
            status, doc = await _call(http, https_url(server, f"{A}/users"))
            assert status == 200
            users = {u["name"]: u for u in doc["users"]}
            assert {"carol", "dave", "webops", "webred"} <= set(users)
            dave_serials = {x["serial"] for x in users["dave"]["certificates"]}
            assert f"{enrolled.serial_number:x}" in dave_serials and len(dave_serials) == 2
            assert users["dave"]["in_groups"] == ["blue"] and users["dave"]["password"] is False

            # Packages: enrollment style (no key) by default, the pre-issued one on request.
            pkg = https_url(server, f"{A}/users/carol/package")
            async with http.get(pkg) as r:
                assert r.status == 200 and r.content_type == "application/zip"
                assert "carol-enroll-atak.zip" in r.headers["Content-Disposition"]
                entries = _zip(await r.read())
            expected.append(("user_package", "carol", 200))
            [pref_name] = [n for n in entries if n.endswith(".pref")]
            prefs = packages.parse_pref(entries[pref_name])["cot_streams"]
            assert prefs["enrollForCertificateWithTrust0"] == "true"
            assert prefs["username0"] == "carol"
            assert len([n for n in entries if n.endswith(".p12")]) == 1  # the truststore only
            async with http.get(pkg + "?client=itak&style=certificate") as r:
                assert r.status == 200
                entries = _zip(await r.read())
            expected.append(("user_package", "carol", 200))
            assert {"config.pref", "caCert.p12", "clientCert.p12"} <= set(entries)
            for query, want in (("?client=wintak", 400), ("?style=other", 400)):
                status, _ = await _call(http, pkg + query)
                assert status == want
                expected.append(("user_package", "carol", want))
            status, doc = await _call(http, https_url(server, f"{A}/users/nobody/package"))
            assert (status, doc) == (404, {"error": "no such user"})
            expected.append(("user_package", "nobody", 404))

            # A new enrollment link for an existing user.
            status, doc = await _call(
                http,
                https_url(server, f"{A}/users/carol/enrollment"),
                "POST",
                {"token_ttl_hours": 2},
            )
            assert status == 201 and doc["name"] == "carol", doc
            assert "username=carol" in doc["url"] and doc["qr_png"].startswith("data:image/png")
            expected.append(("user_enrollment", "carol", 201))

            # Reset carol's password: the old one stops working, the new one works.
            pw_url = https_url(server, f"{A}/users/carol/password")
            status, doc = await _call(http, pw_url, "POST", {"password": NEW_PASSWORD})
            assert (status, doc) == (200, {"name": "carol", "password": True})
            expected.append(("user_password", "carol", 200))
            status, _ = await _call(http, pw_url, "POST", {"password": "short"})
            assert status == 400
            expected.append(("user_password", "carol", 400))
            status, _ = await _call(
                http, https_url(server, f"{A}/users/nobody/password"), "POST", {"password": None}
            )
            assert status == 404
            expected.append(("user_password", "nobody", 404))
            async with browser_session(server) as web:
                me_url = enroll_url(server, "/api/v1/me")
                assert (await _call(web, me_url, headers=_basic("carol", PASSWORD)))[0] == 401
                assert (await _call(web, me_url, headers=_basic("carol", NEW_PASSWORD)))[0] == 200

            # Certificates, and those expiring within a window.
            status, doc = await _call(http, https_url(server, f"{A}/certificates"))
            assert status == 200 and doc["within_days"] == 30
            serials = {x["serial"]: x for x in doc["certificates"]}
            assert f"{enrolled.serial_number:x}" in serials
            assert not any(x["expiring"] for x in doc["certificates"])
            status, doc = await _call(http, https_url(server, f"{A}/certificates?within_days=400"))
            assert status == 200
            assert all(x["expiring"] for x in doc["certificates"])  # a year's validity
            assert any(e["what"].startswith("client carol serial ") for e in doc["expiring"])
            status, _ = await _call(http, https_url(server, f"{A}/certificates?within_days=0"))
            assert status == 400

            # Status and the audit log's check.
            for _ in range(int(WAIT_S / 0.1)):
                status, doc = await _call(http, https_url(server, f"{A}/status"))
                assert status == 200
                [peer] = doc["federation"]["peers"]
                if peer["last_error"] is not None:
                    break
                await asyncio.sleep(0.1)
            assert doc["federation"]["server_id"] == "ops-liaison"
            assert peer["name"] == "ukr" and peer["protocol"] == "native"
            assert peer["state"] in ("down", "connecting") and peer["last_error"], peer
            assert peer["backlog"] == 0 and peer["counts"]["connects"] == 0
            [ships] = doc["feeds"]["feeds"]
            assert ships["name"] == "ships" and ships["kind"] == "ais-udp"
            async with http.get(https_url(server, "/api/v1/feeds")) as r:
                assert doc["feeds"] == await r.json()
            counters = doc["counters"]
            assert counters["liaison_role_denied_total"] == 2 * len(ROUTES)
            assert counters["liaison_connections_total"] >= 0
            assert set(counters) == {
                "liaison_subscribers",
                "liaison_latest_uids",
                "liaison_missions",
                "liaison_events_in_total",
                "liaison_deliveries_total",
                "liaison_denied_total",
                "liaison_ingest_rejected_total",
                "liaison_connections_total",
                "liaison_connections_refused_total",
                "liaison_sessions_closed_total",
                "liaison_ws_connections_total",
                "liaison_http_auth_failed_total",
                "liaison_role_denied_total",
                "liaison_store_dropped_total",
            }
            status, doc = await _call(http, https_url(server, f"{A}/audit"))
            assert status == 200
            assert doc["enabled"] is True and doc["ok"] is True and doc["complete"] is True
            assert doc["records"] > 0 and doc["failure"] is None
            assert doc["signatures_checked"] is True

        # A web session: POSTs need the CSRF token; revoking closes the user's live TLS stream.
        add_user(server, "eve", "USA", ["blue"])
        eve_cert = issue_cert(server, "eve", "USA")
        assert server.tls is not None
        eve = await connect_tls(
            server.tls.port, cert=eve_cert.cert, key=eve_cert.key, ca=eve_cert.ca, name="eve"
        )
        async with clients(eve), browser_session(server) as web:
            await eve.send(sa_event("uid-eve", "EVE"))
            async with web.post(
                enroll_url(server, "/login"), json={"username": "webops", "password": PASSWORD}
            ) as r:
                assert r.status == 200
                csrf = (await r.json())["csrf"]
            revoke = enroll_url(server, f"{A}/users/eve/revoke")
            async with web.post(revoke, json={}) as r:
                assert r.status == 403 and "CSRF" in await r.text()
            async with web.post(revoke, json={}, headers={"X-CSRF-Token": "wrong"}) as r:
                assert r.status == 403
            cross = {"X-CSRF-Token": csrf, "Origin": "https://elsewhere.example"}
            async with web.post(revoke, json={}, headers=cross) as r:
                assert r.status == 403
            assert not await eve.closed_by_server(within=0.6)
            status, doc = await _call(web, revoke, "POST", {}, {"X-CSRF-Token": csrf})
            assert status == 200 and doc["name"] == "eve", doc
            revoked_at = time.monotonic()
            assert f"{eve_cert_serial(eve_cert):x}" in doc["revoked_serials"]
            expected.append(("user_revoke", "eve", 200))
            assert await eve.closed_by_server(within=5.0)
            assert time.monotonic() - revoked_at < 5.0
            status, doc = await _call(web, enroll_url(server, f"{A}/users"), "GET")
            assert status == 200
            assert {u["name"]: u for u in doc["users"]}["eve"]["revoked"] is True
            # A revoked user gets no new link or package.
            status, _ = await _call(
                web,
                enroll_url(server, f"{A}/users/eve/enrollment"),
                "POST",
                {},
                {"X-CSRF-Token": csrf},
            )
            assert status == 409
            expected.append(("user_enrollment", "eve", 409))
            status, _ = await _call(
                web,
                enroll_url(server, f"{A}/users/nobody/revoke"),
                "POST",
                {},
                {"X-CSRF-Token": csrf},
            )
            assert status == 404
            expected.append(("user_revoke", "nobody", 404))

    assert _admin_records(server) == expected
    log_path, _key, _pub = audit_paths(server.config.data_dir)
    denied = []
    for line in log_path.read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] == "access_denied":
            f = record["fields"]
            assert f["need"] == "operator" and f["address"] == "127.0.0.1", f
            denied.append((f["method"], f["route"], f["who"]))
    assert sorted(denied) == sorted(
        (method, template, who) for method, template, _, _ in ROUTES for who in ("red1", "webred")
    )


def eve_cert_serial(cert: Any) -> int:
    return x509.load_pem_x509_certificate(Path(cert.cert).read_bytes()).serial_number


async def test_without_labels_the_audit_check_says_so(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path)), http="127.0.0.1:0") as server:
        # Not on the anonymous listener: operators are identified callers.
        assert server.http is not None
        async with aiohttp.ClientSession() as anonymous:
            url = f"http://127.0.0.1:{server.http.port}{A}/status"
            assert (await _call(anonymous, url))[0] == 404
        c = certs(server, ("ops", "OPS"))
        async with cert_session(server, c["ops"]) as http:
            status, doc = await _call(http, https_url(server, f"{A}/audit"))
            assert (status, doc) == (200, {"enabled": False})
            # Actions still work (recorded in the server log only).
            status, doc = await _call(
                http, https_url(server, f"{A}/users"), "POST", {"name": "gil", "org": "OPS"}
            )
            assert status == 201 and doc["user"]["clearance"] is None
        # Bearer tokens: the operator's work (no CSRF token: there is no cookie), others' not.
        add_user(server, "webops", "OPS", [])
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            tokens = {}
            for name in ("webops", "webred"):
                form = {"grant_type": "password", "username": name, "password": PASSWORD}
                async with http.post(enroll_url(server, "/oauth/token"), data=form) as r:
                    assert r.status == 200
                    tokens[name] = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
            url = enroll_url(server, f"{A}/users/gil/password")
            body = {"password": NEW_PASSWORD}
            status, doc = await _call(http, url, "POST", body, tokens["webred"])
            assert (status, doc) == (403, {"error": "operator role required"})
            status, doc = await _call(http, url, "POST", body, tokens["webops"])
            assert (status, doc) == (200, {"name": "gil", "password": True})
            status, doc = await _call(
                http, enroll_url(server, f"{A}/status"), "GET", None, tokens["webops"]
            )
            assert status == 200 and doc["federation"] == {"server_id": None, "peers": []}
            assert doc["feeds"] == {"tracks": 0, "feeds": []}


async def test_directory_users_are_listed_with_their_state(data_dir: Path, tmp_path: Path) -> None:
    """Users remembered from the directory (docs/directory.md) are listed after the users file's,
    ``revoked`` when the directory no longer lets them in; a local name hides a directory one."""
    ca = ensure_server_pki(tmp_path / "ldap-ca", public_host="localhost").ca_cert
    secret = tmp_path / "service-password"
    secret.write_text("unused\n")
    toml = tmp_path / "liaison.toml"
    toml.write_text(
        "[directory]\n"
        f'urls = ["ldaps://127.0.0.1:{free_port()}"]\n'  # nobody answers: nothing is re-checked
        f'ca_file = "{ca}"\n'
        'bind_dn = "cn=service,dc=example,dc=org"\n'
        f'bind_password_file = "{secret}"\n'
        'user_base = "ou=people,dc=example,dc=org"\n'
        'org = "Example"\n'
        "refresh_s = 3600\n"
        "timeout_s = 1\n"
    )
    accounts = [
        {"name": "dora", "org": "Example", "profile": None, "in_groups": ["Blue"],
         "out_groups": ["Blue"], "cert_serials": [], "revoked": False},
        {"name": "dan", "org": "Example", "profile": None, "in_groups": [], "out_groups": [],
         "cert_serials": [], "revoked": True},
        {"name": "webops", "org": "Example", "profile": None, "in_groups": [],
         "out_groups": [], "cert_serials": [], "revoked": True},
    ]  # fmt: skip
    _remembered(data_dir, accounts)
    overrides = {
        "data_dir": str(data_dir),
        "public_host": "localhost",
        "groups_file": str(write_groups(tmp_path)),
        # make_config's listeners
        **{name: "127.0.0.1:0" for name in ("tcp", "tls", "udp", "https", "enroll")},
    }
    config = config_mod.load(toml, {}, overrides)
    async with run_server(config) as server:
        add_user(server, "webops", "OPS", [])
        async with browser_session(server) as http:
            status, doc = await _call(
                http, enroll_url(server, f"{A}/users"), headers=_basic("webops", PASSWORD)
            )
    assert status == 200, doc
    assert [(u["name"], u["source"], u["revoked"]) for u in doc["users"]] == [
        ("webops", "users_file", False),
        ("dan", "directory", True),
        ("dora", "directory", False),
    ]
    dora = doc["users"][2]
    assert dora["in_groups"] == ["Blue"] and dora["password"] is False and dora["org"] == "Example"


def _remembered(data_dir: Path, accounts: list[dict[str, Any]]) -> None:
    """The directory users a server remembers (DATA_DIR/directory-users.json, version 1)."""
    data_dir.mkdir(parents=True)
    state = {"version": 1, "users": accounts}
    (data_dir / "directory-users.json").write_text(json.dumps(state))


async def test_actions_are_refused_while_the_audit_log_cannot_be_written(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    async with start_server(
        policy_file=str(policy), groups_file=str(write_groups(tmp_path))
    ) as server:
        gate = server.router.gate
        assert gate is not None and isinstance(gate.audit, AuditLog)
        log_path = gate.audit.path
        c = certs(server, ("ops", "USA"))
        async with cert_session(server, c["ops"]) as http:
            # The log fails for good: closed, and a directory where the server would reopen it.
            gate.audit.close()
            moved = log_path.with_name("moved.jsonl")
            log_path.rename(moved)
            log_path.mkdir()
            # The server notices (its periodic sync, or the next record) and holds releases.
            await wait_until(lambda: gate.audit_failed, "the audit log failure noticed")
            users = https_url(server, f"{A}/users")
            body = {"name": "hal", "org": "USA", "password": PASSWORD}
            status, doc = await _call(http, users, "POST", body)
            assert (status, doc) == (503, {"error": "audit log unavailable"})
            status, doc = await _call(http, users)  # reads go on
            assert status == 200 and "hal" not in {u["name"] for u in doc["users"]}
            # The log back: the server reopens it and actions are done and recorded again.
            log_path.rmdir()
            moved.rename(log_path)
            await wait_until(lambda: not gate.audit_failed, "the audit log reopened")
            status, doc = await _call(http, users, "POST", body)
            assert status == 201, doc
    assert _admin_records(server) == [("user_add", "hal", 201)]
