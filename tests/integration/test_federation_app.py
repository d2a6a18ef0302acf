"""Federation configured the way an operator does it: a [federation] table in each server's
label policy file; `liaison serve` (run_server) starts the links by itself."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from liaison import cli
from liaison.app import run_server
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.test_labels_e2e import POLICY, marker, seclabel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peer_toml(name: str, *, ca: Path, fingerprint: str, org: str, dial: str | None) -> str:
    where = f'dial = "{dial}"' if dial else "accept = true"
    return f"""
[[federation.peer]]
name = "{name}"
{where}
ca_file = "{ca}"
fingerprint = "{fingerprint}"
release_ceiling = {{ classification = "SECRET", REL = ["{org}", "LIAISON"] }}
originate = {{ org = "{org}", classification = "SECRET", REL = ["{org}", "LIAISON"] }}
allow_types = ["a-", "b-"]
"""


async def test_two_servers_linked_by_their_policy_files(tmp_path: Path) -> None:
    usa_dir, ukr_dir = tmp_path / "usa", tmp_path / "ukr"
    usa_pki = ensure_server_pki(usa_dir, public_host="localhost")
    ukr_pki = ensure_server_pki(ukr_dir, public_host="localhost")

    def fp(p: ServerPki) -> str:
        return fingerprint_sha256(load_server_cert(p))

    ukr_port = free_port()
    usa_policy = tmp_path / "usa-policy.toml"
    usa_policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\nheartbeat_s = 0.5\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml(
            "ukr",
            ca=ukr_pki.ca_cert,
            fingerprint=fp(ukr_pki),
            org="UKR",
            dial=f"127.0.0.1:{ukr_port}",
        )
    )
    ukr_policy = tmp_path / "ukr-policy.toml"
    ukr_policy.write_text(
        POLICY
        + f'\n[federation]\nserver_id = "ukr-liaison"\nlisten = "127.0.0.1:{ukr_port}"\n'
        + "heartbeat_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml("usa", ca=usa_pki.ca_cert, fingerprint=fp(usa_pki), org="USA", dial=None)
    )
    for d, name, org, profile in (
        (usa_dir, "usa-s", "USA", "usa-secret"),
        (ukr_dir, "ukr-s", "UKR", "ukr-secret"),
    ):
        UserDirectory.load(d / "users.json").add_user(name, org, profile=profile)

    async with (
        run_server(make_config(usa_dir, policy_file=str(usa_policy))) as usa,
        run_server(make_config(ukr_dir, policy_file=str(ukr_policy))) as ukr,
    ):
        assert usa.federation is not None and ukr.federation_address is not None
        assert ukr.federation_address.port == ukr_port
        assert usa.tls is not None and ukr.tls is not None
        u, k = issue_cert(usa, "usa-s", "USA"), issue_cert(ukr, "ukr-s", "UKR")
        usa_client = await connect_tls(usa.tls.port, cert=u.cert, key=u.key, ca=u.ca)
        ukr_client = await connect_tls(ukr.tls.port, cert=k.cert, key=k.key, ca=k.ca)
        async with clients(usa_client, ukr_client):
            await usa_client.send(marker("m-both", "FED-BOTH", seclabel("SECRET", ["USA", "UKR"])))
            await usa_client.send(marker("m-usa", "CANARY-FED-USA", seclabel("SECRET", ["USA"])))
            await ukr_client.wait_for(b"FED-BOTH", within=WAIT_S * 2)
            await ukr_client.send(
                sa_event("uid-ukr-s", "UKR-S", extra_detail=seclabel("SECRET", ["UKR", "USA"]))
            )
            await usa_client.wait_for(b'uid="uid-ukr-s"', within=WAIT_S * 2)
            assert b"CANARY-FED-USA" not in bytes(ukr_client.raw)

    # The operator's view of the link, and both audit logs verify.
    assert cli.main(["federation", "status", "--data-dir", str(usa_dir), "--json"]) == 0
    status = json.loads((usa_dir / "federation" / "status.json").read_text())
    assert "ukr" in json.dumps(status)
    for d in (usa_dir, ukr_dir):
        assert cli.main(["audit", "verify", "--data-dir", str(d)]) == 0
