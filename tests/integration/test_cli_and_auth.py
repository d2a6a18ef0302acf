"""The command line as an operator uses it, and <auth> logins on a streaming listener."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from liaison import cli
from liaison.identity.users import UserDirectory
from liaison.sim import SimSettings, run_sim
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import chat_event, clients, connect_tcp, sa_event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_prints_where_it_listens_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tcp = free_port()
    env = {**os.environ, "LIAISON_LOG_LEVEL": "info"}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "liaison",
            "serve",
            "--data-dir",
            str(data),
            "--tcp",
            f"127.0.0.1:{tcp}",
            "--tls",
            "127.0.0.1:0",
            "--udp",
            "off",
            "--https",
            "off",
            "--enroll",
            "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    ) as proc:
        _drive(proc, data, tcp)
    # The event sent before the signal was flushed to the store.
    import sqlite3

    with sqlite3.connect(data / "liaison.db") as db:
        assert db.execute("select count(*) from history where uid = 'cli-uid'").fetchone()[0] == 1


def _drive(proc: subprocess.Popen[str], data: Path, tcp: int) -> None:
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Stop with Ctrl-C" in line:
                break
        out = "".join(lines)
        assert f"127.0.0.1:{tcp}" in out and "liaison user add" in out
        assert (data / "pki" / "ca.pem").exists() and (data / "liaison.db").exists()
        with socket.create_connection(("127.0.0.1", tcp), timeout=5) as s:
            s.sendall(sa_event("cli-uid", "CLI"))
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_check_config_prints_the_effective_configuration(capsys: object, tmp_path: Path) -> None:
    f = tmp_path / "liaison.toml"
    f.write_text('[listeners]\ntcp = "127.0.0.1:9999"\n')
    assert cli.main(["check-config", "--config", str(f), "--tls", "off"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert 'tcp = "127.0.0.1:9999"' in out and 'tls = "off"' in out
    f.write_text('[listeners]\ntcp = "nonsense"\n')
    assert cli.main(["check-config", "--config", str(f)]) == 2
    # A password in the storage URL is never printed.
    f.write_text('[storage]\nbackend = "postgresql://liaison:s3cret@db.example:5432/liaison"\n')
    assert cli.main(["check-config", "--config", str(f)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert 'backend = "postgresql://liaison:***@db.example:5432/liaison"' in out
    assert "s3cret" not in out


async def test_auth_listener_logs_in_with_a_password(
    start_server: ServerFactory, data_dir: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("field1", "USA", password="correct horse battery", groups=("blue",))
    users.add_user("field2", "USA", password="another good password", groups=("blue",))
    async with start_server(tcp_auth=True, auth_timeout_s=2.0) as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "a")
        b = await connect_tcp(server.tcp.port, "b")
        bad = await connect_tcp(server.tcp.port, "bad")
        silent = await connect_tcp(server.tcp.port, "silent")
        async with clients(a, b, bad, silent):
            await a.send(
                b'<auth><cot username="field1" password="correct horse battery" uid="A"/></auth>'
                + sa_event("uid-a", "A")
            )
            await b.send(b'<auth><cot username="field2" password="another good password"/></auth>')
            await b.wait_for(b'uid="uid-a"')  # replayed: a's report came with its login
            await b.send(chat_event("uid-b", "B", "logged in"))
            await a.wait_for(b"logged in")
            await bad.send(b'<auth><cot username="field1" password="wrong"/></auth>')
            assert await bad.closed_by_server(5.0)
            assert await silent.closed_by_server(5.0)  # no <auth> within auth_timeout_s
        snap = server.metrics.snapshot()
        assert snap.get('liaison_input_rejected_total{reason="auth_failed"}') == 1


async def test_sim_drives_units_through_a_server(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        report = await run_sim(
            SimSettings(port=server.tcp.port, clients=5, rate=5.0, duration_s=1.5)
        )
        assert report.connected == 5 and report.failed == 0
        assert report.sent >= 5 * 5
        # Every unit sees the others' reports: about sent x 4 deliveries.
        assert report.received_events >= report.sent * 4 * 0.8
        await asyncio.sleep(0)


def test_a_policy_that_does_not_load_stops_the_server_naming_the_problem(
    tmp_path: Path, capsys: object
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[policy]\nid = "P"\nversion = 1\nclassifications = ["UNCLASSIFIED"]\n'
        '[policy.categories.REL]\ntype = "permissive"\nrequired = true\nvalues = ["USA"]\n'
    )
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--tcp", "127.0.0.1:0"]
    args += ["--tls", "off", "--udp", "off", "--https", "off", "--enroll", "off"]
    args += ["--config", str(_config_with_policy(tmp_path, policy))]
    code = cli.main(args)
    assert code == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "policy.categories.REL.type" in err


def test_an_unknown_country_in_a_feed_rule_stops_the_server(tmp_path: Path, capsys: object) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[policy]\nid = "P"\nversion = 1\nclassifications = ["UNCLASSIFIED"]\n'
        '[policy.categories.REL]\ntype = "PERMISSIVE"\nrequired = true\nvalues = ["USA"]\n'
        '[feeds.rx]\nkind = "adsb-file"\npath = "aircraft.json"\norg = "USA"\n'
        'ceiling = { classification = "UNCLASSIFIED", REL = "*" }\n'
        'default_classification = "UNCLASSIFIED"\n'
        '[[feeds.rx.rules]]\ncountry = ["UA", "XK"]\naffiliation = "f"\n'
    )
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--tcp", "127.0.0.1:0"]
    args += ["--tls", "off", "--udp", "off", "--https", "off", "--enroll", "off"]
    args += ["--config", str(_config_with_policy(tmp_path, policy))]
    assert cli.main(args) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "feeds.rx.rules[0].country: unknown country code 'XK'" in err


def _config_with_policy(tmp_path: Path, policy: Path) -> Path:
    config = tmp_path / "liaison.toml"
    config.write_text(f'[labels]\npolicy_file = "{policy}"\n')
    return config
