"""``liaison federation status`` counts every denial the audit log records for a peer: the
router's refusals by label (classification over the ceiling, REL, handling) as well as the
guard's own (type and detail allowlists), issue 9 item 7."""

from __future__ import annotations

import json
from pathlib import Path

from liaison import cli
from liaison.app import run_server
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.test_federation_app import free_port
from tests.integration.test_labels_e2e import POLICY, marker, seclabel


def _peer(name: str, *, ca: Path, fingerprint: str, org: str, dial: str | None) -> str:
    where = f'dial = "{dial}"' if dial else "accept = true"
    return f"""
[[federation.peer]]
name = "{name}"
{where}
ca_file = "{ca}"
fingerprint = "{fingerprint}"
release_ceiling = {{ classification = "CONFIDENTIAL", REL = ["{org}", "LIAISON"] }}
originate = {{ org = "{org}", classification = "SECRET", REL = ["{org}", "LIAISON"] }}
allow_types = ["a-", "b-"]
"""


def _fed(server_id: str, listen: str) -> str:
    return (
        f'\n[federation]\nserver_id = "{server_id}"\nlisten = "{listen}"\nheartbeat_s = 0.5\n'
        "backoff_base_s = 0.05\nbackoff_cap_s = 0.5\nstatus_interval_s = 0.2\n"
    )


async def test_status_denials_equal_the_deny_records_of_the_peer(tmp_path: Path) -> None:
    usa_dir, ukr_dir = tmp_path / "usa", tmp_path / "ukr"
    usa_pki = ensure_server_pki(usa_dir, public_host="localhost")
    ukr_pki = ensure_server_pki(ukr_dir, public_host="localhost")

    def fp(p: ServerPki) -> str:
        return fingerprint_sha256(load_server_cert(p))

    ukr_port = free_port()
    usa_policy = tmp_path / "usa-policy.toml"
    usa_policy.write_text(
        POLICY
        + _fed("usa-liaison", "off")
        + _peer(
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
        + _fed("ukr-liaison", f"127.0.0.1:{ukr_port}")
        + _peer("usa", ca=usa_pki.ca_cert, fingerprint=fp(usa_pki), org="USA", dial=None)
    )
    UserDirectory.load(usa_dir / "users.json").add_user("usa-s", "USA", profile="usa-secret")
    UserDirectory.load(ukr_dir / "users.json").add_user("ukr-s", "UKR", profile="ukr-secret")

    async with (
        run_server(make_config(usa_dir, policy_file=str(usa_policy))) as usa,
        run_server(make_config(ukr_dir, policy_file=str(ukr_policy))) as ukr,
    ):
        assert usa.federation is not None and usa.tls is not None and ukr.tls is not None
        u, k = issue_cert(usa, "usa-s", "USA"), issue_cert(ukr, "ukr-s", "UKR")
        usa_client = await connect_tls(usa.tls.port, cert=u.cert, key=u.key, ca=u.ca)
        ukr_client = await connect_tls(ukr.tls.port, cert=k.cert, key=k.key, ca=k.ca)
        async with clients(usa_client, ukr_client):
            both = ["USA", "UKR"]
            # Refused by label: over the ceiling's classification, outside its REL, a
            # restrictive handling value the ceiling lacks. Then by type (the guard).
            await usa_client.send(marker("m-secret", "CANARY-CLASS", seclabel("SECRET", both)))
            await usa_client.send(marker("m-usa", "CANARY-REL", seclabel("CONFIDENTIAL", ["USA"])))
            await usa_client.send(
                marker("m-orcon", "CANARY-ORCON", seclabel("CONFIDENTIAL", both, ["ORCON"]))
            )
            await usa_client.send(
                sa_event(
                    "u-shape",
                    "SHAPE",
                    cot_type="u-d-f",
                    extra_detail="<remarks>CANARY-TYPE</remarks>" + seclabel("CONFIDENTIAL", both),
                )
            )
            # Released last: once it arrives, every earlier decision has been made and recorded.
            await usa_client.send(marker("m-ok", "FED-OK", seclabel("CONFIDENTIAL", both)))
            await ukr_client.wait_for(b"FED-OK", within=WAIT_S * 2)
            assert b"CANARY" not in bytes(ukr_client.raw)
        counts = usa.federation.status.peers["ukr"].counts
        live_denials, live_releases = counts["denials"], counts["releases"]

    records = [
        json.loads(line) for line in (usa_dir / "audit" / "audit.jsonl").read_bytes().splitlines()
    ]
    to_ukr = [
        r
        for r in records
        if r["kind"] in ("deny", "guard_mismatch", "release")
        and "federation:ukr" in r["fields"]["recipients"]
    ]
    denies = [r for r in to_ukr if r["kind"] != "release"]
    reasons = {reason for r in denies for reason in r["fields"]["reasons"]}
    assert {"class_exceeds", "type_not_allowed"} <= reasons, reasons
    assert len(denies) == 4, denies
    assert live_denials == len(denies)
    assert live_releases == sum(1 for r in to_ukr if r["kind"] == "release") == 1
    # What `liaison federation status` shows, from the status file the server wrote last.
    assert cli.main(["federation", "status", "--data-dir", str(usa_dir), "--json"]) == 0
    status = json.loads((usa_dir / "federation" / "status.json").read_text())
    (ukr_status,) = [p for p in status["peers"] if p["name"] == "ukr"]
    assert ukr_status["counts"]["denials"] == len(denies)
