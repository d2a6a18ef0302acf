"""An operator switches a server from SQLite to PostgreSQL storage (docs/deployment.md "Users,
certificates and sign-ins (PostgreSQL)"): the users of users.json and the devices enrolled
before the switch are imported into the database at the first start, once. A user signs in
with the old password, an enrolled device connects with its certificate, a device revoked
before the switch stays refused, the CRL served lists it, and the import is an ``admin`` record
of the audit log (labels on).

Skipped with the reason without PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from liaison import admin
from liaison.cli import main as cli_main
from liaison.config import redacted_url
from liaison.gate import audit_paths
from liaison.identity.ca import ensure_server_pki
from liaison.identity.db_import import ImportRefused
from liaison.identity.issue import issue_client_cert
from liaison.identity.revocation import revoke
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, connect_tls, sa_event
from tests.integration.http.http_support import PASSWORD, add_user, browser_session, write_groups
from tests.integration.http.http_support import enroll_url as page_url
from tests.integration.test_cluster_identity import enroll
from tests.integration.test_labels_e2e import POLICY
from tests.integration.test_postgresql_app import database_url  # noqa: F401 - fixture


def import_records(data_dir: Path) -> list[dict[str, Any]]:
    log_path, _key, _pub = audit_paths(data_dir)
    out = []
    for line in log_path.read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] == "admin" and record["fields"]["action"] == "identity_import":
            out.append(record["fields"])
    return out


async def test_users_and_enrolled_devices_survive_the_switch_to_postgresql(
    start_server: ServerFactory,
    database_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    groups = str(write_groups(tmp_path))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    # Before: the default storage (SQLite), users and certificates in the data folder.
    async with start_server(groups_file=groups) as before:
        add_user(before, "webred", "USA", ["red"])
        add_user(before, "gone", "USA", ["red"])
        cert, key, serial = await enroll(before, "webred", tmp_path)
        gone_cert, gone_key, gone_serial = await enroll(before, "gone", tmp_path)
        assert admin.revoke_user(before.config, "gone") == [gone_serial]
    data_dir = before.config.data_dir

    # After: the same data folder, storage in PostgreSQL (and labels on: an audit log).
    for _start in range(2):  # the second start imports nothing again
        async with start_server(
            groups_file=groups, storage=database_url, policy_file=str(policy)
        ) as after:
            assert after.tls is not None and after.server_pki is not None
            ca = after.server_pki.ca_cert
            # The device enrolled before the switch connects with its certificate.
            device = await connect_tls(after.tls.port, cert=cert, key=key, ca=ca, name="webred")
            async with clients(device):
                await device.send(sa_event("ANDROID-webred", "WEBRED"))
                assert not await device.closed_by_server(within=0.5)
            # The device revoked before the switch is still refused.
            try:
                again = await connect_tls(
                    after.tls.port, cert=gone_cert, key=gone_key, ca=ca, name="gone"
                )
            except (ssl.SSLError, ConnectionError, OSError):
                pass
            else:
                async with clients(again):
                    assert await again.closed_by_server(within=5.0)
            async with browser_session(after) as http:
                # The password sign-in works with the password set before the switch.
                body = {"username": "webred", "password": PASSWORD}
                async with http.post(page_url(after, "/login"), json=body) as r:
                    assert r.status == 200
                body = {"username": "gone", "password": PASSWORD}
                async with http.post(page_url(after, "/login"), json=body) as r:
                    assert r.status == 401
                async with http.get(page_url(after, "/crl.pem")) as r:
                    assert r.status == 200
                    crl = x509.load_pem_x509_crl(await r.read())
            assert crl.get_revoked_certificate_by_serial_number(gone_serial) is not None
            assert crl.get_revoked_certificate_by_serial_number(serial) is None
        # One admin record, written by the first start only.
        [record] = import_records(data_dir)
        assert record["users"] == 2 and record["certificates"] == 2 and record["revoked"] == 1
        assert record["users_from"] == str(data_dir / "users.json")
        assert record["certificates_from"] == str(data_dir / "pki" / "issued.json")
        assert record["target"] == redacted_url(database_url)


async def test_a_corrupt_users_file_stops_the_start_and_imports_nothing(
    start_server: ServerFactory,
    database_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with start_server() as before:
        add_user(before, "webred", "USA", ["red"])
    users_file = before.config.resolved_users_file()
    good = users_file.read_bytes()
    users_file.write_bytes(good.replace(b'"org": "USA"', b'"org": ["USA"]'))
    with pytest.raises(ImportRefused, match=r"users\.json: user 0 \('webred'\) refused"):
        async with start_server(storage=database_url):
            raise AssertionError("the server started with a corrupt users file")
    users_file.write_bytes(good)  # repaired: the next start imports it
    async with start_server(storage=database_url) as after, browser_session(after) as http:
        body = {"username": "webred", "password": PASSWORD}
        async with http.post(page_url(after, "/login"), json=body) as r:
            assert r.status == 200


async def test_a_command_first_to_open_the_database_imports_and_says_so(
    database_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in list(os.environ):  # the CLI reads LIAISON_* as the server does
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)
    data_dir = tmp_path / "data"
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("webred", "USA", groups=["red"], password=PASSWORD)
    users.add_user("gone", "USA", groups=["red"])
    pki = ensure_server_pki(data_dir, public_host="localhost")
    serial = issue_client_cert(pki, common_name="gone", org="USA").serial
    users.add_cert_serial("gone", serial)
    revoke(pki, serial=serial)
    config = tmp_path / "liaison.toml"
    config.write_text(f'[storage]\nbackend = "{database_url}"\n')
    argv = ["user", "list", "--config", str(config), "--data-dir", str(data_dir)]
    assert await asyncio.to_thread(cli_main, argv) == 0
    out, err = capsys.readouterr()
    assert "Imported into PostgreSQL: 2 users from" in err
    assert "1 issued certificates (1 revoked)" in err
    assert "webred" in out and "0 live, 1 revoked" in out
    # The second command finds the tables filled: nothing imported, the same list.
    assert await asyncio.to_thread(cli_main, argv) == 0
    again, err = capsys.readouterr()
    assert "Imported" not in err and again == out
