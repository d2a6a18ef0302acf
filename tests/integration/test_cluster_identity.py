"""Users, certificates and web sign-ins shared by two nodes through one PostgreSQL database
(identity/shared_db.py, docs/deployment.md "Users, certificates and sign-ins"): real servers on
one NATS (tests/integration/test_cluster.py's fixtures) and a database made for the test
(test_postgresql_app.py's), the ``liaison user`` command run as an operator would.

Skipped with the reason without NATS or PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from yarl import URL

from liaison.app import Server
from liaison.cli import main as cli_main
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from tests.integration.helpers import clients, connect_tls, sa_event
from tests.integration.http.http_support import PASSWORD, browser_session, write_groups
from tests.integration.http.http_support import enroll_url as page_url
from tests.integration.test_cluster import Nodes, bus, nodes  # noqa: F401 - fixtures
from tests.integration.test_enrollment import basic, csr_b64, https, new_key, write_identity
from tests.integration.test_enrollment import enroll_url as tls_url
from tests.integration.test_postgresql_app import database_url  # noqa: F401 - fixture

# docs/deployment.md: a change on one node is usable on the others within 1 s.
WITHIN_S = 1.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads LIAISON_* variables like the server does; none may leak in from outside.
    for key in list(os.environ):
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)


def share_one_ca(tmp_path: Path) -> None:
    """Node 0 and node 1 get one CA (docs/deployment.md asks for it); nothing else is copied."""
    ensure_server_pki(tmp_path / "node0", public_host="localhost")
    src, dst = ServerPki.at(tmp_path / "node0"), ServerPki.at(tmp_path / "node1")
    dst.directory.mkdir(parents=True)
    for name in ("ca_cert", "ca_key"):
        shutil.copy2(getattr(src, name), getattr(dst, name))


async def cli(
    monkeypatch: pytest.MonkeyPatch, server: Server, database: str, *args: str, stdin: str = ""
) -> None:
    """``liaison ARGS`` for ``server``'s data folder and database, from another shell."""
    config = server.config.data_dir.parent / f"{server.config.data_dir.name}-cli.toml"
    config.write_text(f'[storage]\nbackend = "{database}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    where = ["--config", str(config), "--data-dir", str(server.config.data_dir)]
    where += ["--public-host", "localhost"]
    assert await asyncio.to_thread(cli_main, [*args, *where]) == 0


async def enroll(server: Server, name: str, tmp_path: Path) -> tuple[Path, Path, int]:
    """Enroll a certificate for ``name`` with its password on ``server`` (signClient/v2)."""
    key = new_key()
    auth = basic(name, PASSWORD)
    async with await https(server) as session:
        url = tls_url(server, "signClient/v2?clientUid=ANDROID-0123456789abcdef&version=4.10")
        body = csr_b64(key, [("CN", name), ("O", "RED")])
        async with session.post(url, data=body, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            answer = json.loads(await resp.read())
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["signedCert"]))
    cert_path, key_path = write_identity(tmp_path / f"enrolled-{name}", name, cert, key)
    return cert_path, key_path, cert.serial_number


async def status_of(http: Any, server: Server, path: str = "/api/v1/me") -> int:
    async with http.get(page_url(server, path)) as r:
        return int(r.status)


async def test_a_user_added_and_enrolled_on_node_a_works_on_node_b_until_revoked_on_a(
    nodes: Nodes,  # noqa: F811 - the fixture imported above
    database_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    share_one_ca(tmp_path)
    groups = str(write_groups(tmp_path))
    async with nodes(2, groups_file=groups, storage=database_url) as (a, b):
        assert a.server_pki is not None and b.server_pki is not None
        assert a.tls is not None and b.tls is not None
        # The operator adds webred on node A (its shell, its data folder): node B never had a
        # users file, and its own stays absent.
        added = time.monotonic()
        await cli(
            monkeypatch,
            a,
            database_url,
            *("user", "add", "webred", "--org", "RED", "--groups", "red", "--password"),
            stdin=PASSWORD + "\n",
        )
        # The web sign-in works on B within 1 s of the command.
        async with browser_session(b) as on_b:
            body = {"username": "webred", "password": PASSWORD}
            for _ in range(50):  # bounded: 50 x 20 ms
                async with on_b.post(page_url(b, "/login"), json=body) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.02)
            assert r.status == 200
            assert time.monotonic() - added < 10.0  # the command itself takes a few seconds
        assert not (b.config.data_dir / "users.json").exists()

        # Enrollment on A with the password; the certificate is good on B's TLS listener, as
        # webred (groups "red"): a client of A and one of B see each other's positions.
        cert, key, serial = await enroll(a, "webred", tmp_path)
        on_a = await connect_tls(a.tls.port, cert=cert, key=key, ca=a.server_pki.ca_cert, name="a")
        on_b_tls = await connect_tls(
            b.tls.port, cert=cert, key=key, ca=b.server_pki.ca_cert, name="b"
        )
        async with clients(on_a, on_b_tls):
            await on_a.send(sa_event("ANDROID-webred-a", "WEBRED-A"))
            await on_b_tls.wait_for(b'uid="ANDROID-webred-a"')
            await on_b_tls.send(sa_event("ANDROID-webred-b", "WEBRED-B"))
            await on_a.wait_for(b'uid="ANDROID-webred-b"')

            # A web sign-in made on A: its cookie is good on B, CSRF rules unchanged there.
            async with browser_session(a) as browser_a, browser_session(b) as browser_b:
                async with browser_a.post(page_url(a, "/login"), json=body) as r:
                    assert r.status == 200
                    csrf = str((await r.json())["csrf"])
                cookie = browser_a.cookie_jar.filter_cookies(URL(page_url(a, "/")))
                browser_b.cookie_jar.update_cookies(
                    {k: v.value for k, v in cookie.items()}, response_url=URL(page_url(b, "/"))
                )
                async with browser_b.get(page_url(b, "/api/v1/me")) as r:
                    assert r.status == 200
                    assert (await r.json())["name"] == "webred"
                # A state-changing request without the sign-in's CSRF token is refused on B.
                async with browser_b.post(page_url(b, "/logout")) as r:
                    assert r.status == 403

                # Revoked on A (the operator's shell): on B the TLS client is closed and the
                # cookie refused, within 1 s of the command's end.
                await cli(monkeypatch, a, database_url, "user", "revoke", "webred")
                revoked = time.monotonic()
                assert await on_b_tls.closed_by_server(within=WITHIN_S + 1.0)
                assert time.monotonic() - revoked < WITHIN_S
                assert await status_of(browser_b, b) == 401
                assert await status_of(browser_a, a) == 401
                assert csrf  # the sign-in had one; it is gone with the sign-in
        # B's CRL (served from the database) lists the certificate enrolled on A.
        async with browser_session(b) as anon, anon.get(page_url(b, "/crl.pem")) as r:
            assert r.status == 200
            crl = x509.load_pem_x509_crl(await r.read())
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None


async def test_a_sign_out_on_node_a_ends_the_sign_in_on_node_b(
    nodes: Nodes,  # noqa: F811
    database_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    share_one_ca(tmp_path)
    groups = str(write_groups(tmp_path))
    async with nodes(2, groups_file=groups, storage=database_url) as (a, b):
        await cli(
            monkeypatch,
            a,
            database_url,
            *("user", "add", "webred", "--org", "RED", "--groups", "red", "--password"),
            stdin=PASSWORD + "\n",
        )
        body = {"username": "webred", "password": PASSWORD}
        async with browser_session(a) as browser_a, browser_session(b) as browser_b:
            async with browser_a.post(page_url(a, "/login"), json=body) as r:
                assert r.status == 200
                csrf = str((await r.json())["csrf"])
            cookie = browser_a.cookie_jar.filter_cookies(URL(page_url(a, "/")))
            browser_b.cookie_jar.update_cookies(
                {k: v.value for k, v in cookie.items()}, response_url=URL(page_url(b, "/"))
            )
            assert await status_of(browser_b, b) == 200
            # Signed out on B, with the CSRF token A gave: ended on A too.
            async with browser_b.post(page_url(b, "/logout"), headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 204
            signed_out = time.monotonic()
            for _ in range(50):  # bounded: 50 x 20 ms
                if await status_of(browser_a, a) == 401:
                    break
                await asyncio.sleep(0.02)
            assert await status_of(browser_a, a) == 401
            assert time.monotonic() - signed_out < WITHIN_S + 0.5
            assert await status_of(browser_b, b) == 401


async def test_a_bearer_token_from_node_a_works_on_node_b_and_refreshes_once(
    nodes: Nodes,  # noqa: F811
    database_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bearer tokens with PostgreSQL (docs/deployment.md "What is shared"): the keyring and the
    redeemed refresh tokens are the database's."""
    from liaison.identity.tokens import _header

    share_one_ca(tmp_path)
    groups = str(write_groups(tmp_path))
    async with nodes(2, groups_file=groups, storage=database_url) as (a, b):
        await cli(
            monkeypatch,
            a,
            database_url,
            *("user", "add", "webred", "--org", "RED", "--groups", "red", "--password"),
            stdin=PASSWORD + "\n",
        )
        form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
        async with browser_session(a) as on_a, browser_session(b) as on_b:
            async with on_a.post(page_url(a, "/oauth/token"), data=form) as r:
                assert r.status == 200, await r.text()
                issued = await r.json()
            bearer = {"Authorization": f"Bearer {issued['access_token']}"}
            async with on_b.get(page_url(b, "/api/v1/me"), headers=bearer) as r:
                assert r.status == 200
                assert (await r.json())["name"] == "webred"
            # The refresh token is redeemed on B, then refused on A (and on B again).
            again = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
            async with on_b.post(page_url(b, "/oauth/token"), data=again) as r:
                assert r.status == 200, await r.text()
                first_kid = _header((await r.json())["access_token"])
            for http, server in ((on_a, a), (on_b, b)):
                async with http.post(page_url(server, "/oauth/token"), data=again) as r:
                    assert r.status == 400
                    assert (await r.json())["error"] == "invalid_grant"
            # `liaison oauth rotate` from B's shell: A signs with the new key within 1 s.
            assert first_kid is not None
            await cli(monkeypatch, b, database_url, "oauth", "rotate")
            rotated = time.monotonic()
            kid = first_kid["kid"]
            for _ in range(50):  # bounded: 50 x 20 ms
                async with on_a.post(page_url(a, "/oauth/token"), data=form) as r:
                    assert r.status == 200
                    header = _header((await r.json())["access_token"])
                assert header is not None
                if header["kid"] != kid:
                    break
                await asyncio.sleep(0.02)
            assert header["kid"] != kid
            assert time.monotonic() - rotated < WITHIN_S + 0.5
            # The token signed before the rotation still verifies on both.
            for http, server in ((on_a, a), (on_b, b)):
                async with http.get(page_url(server, "/api/v1/me"), headers=bearer) as r:
                    assert r.status == 200
        # Neither node wrote a keyring file: the keys are the database's.
        for server in (a, b):
            assert not (server.config.data_dir / "tokens" / "keyring.json").exists()
