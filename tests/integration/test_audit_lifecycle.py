"""The audit log across server restarts, and ``liaison audit verify`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liaison import cli
from liaison.audit import verify
from liaison.gate import audit_paths, load_public_key
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.test_labels_e2e import POLICY, marker, seclabel


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def test_every_clean_shutdown_signs_a_checkpoint(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    # Issue 9 item 4: a server restarted more often than every 1000 records used to leave every
    # record unsigned. Three runs, a few records each: each stop signs what that run wrote.
    for run in range(3):
        async with start_server(policy_file=str(policy_file)) as server:
            assert server.tls is not None
            cert = issue_cert(server, f"usa-{run}", "USA")
            sender = await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
            async with clients(sender):
                await sender.send(marker(f"m-{run}", "X", seclabel("UNCLASSIFIED", ["USA"])))
                await sender.collect(quiet_s=0.3)
    log_path, _key, pub_path = audit_paths(data_dir)
    result = verify(log_path, load_public_key(pub_path))
    assert result.ok and result.signatures_checked
    assert result.checkpoints == 3 and result.unsigned_tail == 0
    kinds = [json.loads(line)["kind"] for line in log_path.read_bytes().splitlines()]
    assert kinds.count("config_load") == 3 and kinds[-1] == "checkpoint"


def test_audit_verify_reports_a_good_log(
    data_dir: Path, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from liaison.audit import AuditLog
    from liaison.gate import load_or_create_signing_key

    log_path, key_path, pub_path = audit_paths(data_dir)
    log = AuditLog.open(log_path, load_or_create_signing_key(key_path, pub_path))
    log.append("config_load", policy_id="P")
    log.close(checkpoint=True)
    code = cli.main(["audit", "verify", "--data-dir", str(data_dir)])
    assert code == 0
    assert "OK: 2 records, 1 signed checkpoints" in capsys.readouterr().out


def test_audit_verify_without_labels_says_there_is_no_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9 item 16: it used to fail with "no such file".
    monkeypatch.delenv("LIAISON_POLICY_FILE", raising=False)
    monkeypatch.delenv("LIAISON_CONFIG", raising=False)
    code = cli.main(["audit", "verify", "--data-dir", str(tmp_path / "fresh")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_NO_AUDIT_LOG == 3
    assert err.strip() == (
        "no audit log: labels are off (labels.policy_file is not set), so nothing is audited"
    )
    assert "No such file" not in err


def test_audit_verify_with_labels_on_but_no_log_yet(
    tmp_path: Path,
    policy_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIAISON_POLICY_FILE", str(policy_file))
    data = tmp_path / "fresh"
    code = cli.main(["audit", "verify", "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip() == (
        f"no audit log at {data / 'audit' / 'audit.jsonl'}: nothing has been audited yet"
    )


def test_audit_verify_checks_the_chain_of_every_worker(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liaison serve --workers N``: each worker keeps its own chain (audit-wI.jsonl), signed
    with the one key; ``liaison audit verify`` checks each and fails when any is bad."""
    from liaison.audit import AuditLog
    from liaison.gate import load_or_create_signing_key

    _log, key_path, pub_path = audit_paths(data_dir)
    key = load_or_create_signing_key(key_path, pub_path)
    for worker in (1, 2):
        log = AuditLog.open(audit_paths(data_dir, worker)[0], key)
        log.append("config_load", policy_id=f"policy-of-w{worker}")
        log.close(checkpoint=True)
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "audit-w1.jsonl: OK: 2 records, 1 signed checkpoints (signatures checked)" in out
    assert "audit-w2.jsonl: OK: 2 records, 1 signed checkpoints (signatures checked)" in out
    second = audit_paths(data_dir, 2)[0]
    second.write_bytes(second.read_bytes().replace(b"policy-of-w2", b"policy-of-w9"))
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    assert "audit-w1.jsonl: OK" in captured.out
    assert "audit-w2.jsonl: FAILED at line 1 (seq 1)" in captured.err
