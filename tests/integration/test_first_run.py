"""The first-run experience through the real ``liaison`` command: file permissions, ports in
packages, a port already in use, the start banner, ``user list``, ``sim`` and the help texts."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from liaison.app import run_server
from tests.integration.conftest import make_config
from tests.integration.helpers import chat_event

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"
START_S = 30.0


def liaison(
    *args: str,
    umask: int | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run the real command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "liaison", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        check=False,
    )


class Served:
    def __init__(self, proc: subprocess.Popen[str], banner: str) -> None:
        self.proc = proc
        self.banner = banner

    def port(self, label: str) -> int:
        """The port of a banner line such as ``  HTTP            127.0.0.1:40123``."""
        m = re.search(rf"^  {re.escape(label)}\s+\S+:(\d+)", self.banner, re.M)
        assert m, f"no {label!r} line in:\n{self.banner}"
        return int(m.group(1))


def start_serve(
    args: Sequence[str], *, umask: int | None = None, command: Sequence[str] = ("serve",)
) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "liaison", *command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "LIAISON_LOG_LEVEL": "info"},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Stop with Ctrl-C" in line:
            return Served(proc, "".join(lines))
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    raise AssertionError("server did not start:\n" + "".join(lines))


def stop(served: Served) -> str:
    """SIGTERM, wait, and return what it printed after the banner."""
    served.proc.send_signal(signal.SIGTERM)
    try:
        out, _ = served.proc.communicate(timeout=20)
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=10)
    assert served.proc.returncode == 0
    return out


@pytest.fixture
def serving() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=10)
        if s.proc.stdout is not None:
            s.proc.stdout.close()


def loose_entries(root: Path) -> list[str]:
    """Everything under ``root`` (and root itself) that group or others may access."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {mode:o}")
    return found


LOCAL = ["--udp", "off", "--https", "off", "--public-host", "localhost"]


# --- item 8: permissions ---------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_data_folder_is_owner_only_whatever_the_umask(
    tmp_path: Path, serving: list[Served], umask: int
) -> None:
    data = tmp_path / "data"
    served = start_serve(
        [
            "--data-dir",
            str(data),
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
            "--enroll",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            *LOCAL,
        ],
        umask=umask,
    )
    serving.append(served)
    # A directed chat goes into the database; an upload into files/ and its index.
    with socket.create_connection(("127.0.0.1", served.port("CoT over TCP")), timeout=5) as s:
        s.sendall(chat_event("perm-uid", "PERM", "secret words"))
        time.sleep(0.5)
    http = served.port("HTTP")
    req = urllib.request.Request(
        f"http://127.0.0.1:{http}/Marti/sync/upload?name=note.txt",
        data=b"uploaded content",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    # While it runs: the -wal and -shm files exist and must be private too.
    assert (data / "liaison.db-wal").exists() and (data / "files" / "index.db-wal").exists()
    assert (data / "pki" / "ca.key").exists()
    assert loose_entries(data) == []
    stop(served)
    assert loose_entries(data) == []
    # The user commands under the same umask write private files too.
    r = liaison("user", "add", "ann", "--org", "USA", "--data-dir", str(data), umask=umask)
    assert r.returncode == 0, r.stderr
    assert loose_entries(data) == []


def test_an_existing_install_with_loose_permissions_is_fixed_at_start(
    tmp_path: Path, serving: list[Served]
) -> None:
    data = tmp_path / "data"
    r = liaison(
        "user",
        "add",
        "ann",
        "--org",
        "USA",
        "--data-dir",
        str(data),
        "--password",
        stdin="a long enough password\n",
    )
    assert r.returncode == 0, r.stderr
    # What an older version left behind under umask 022.
    (data / "liaison.db").write_bytes(b"")
    os.chmod(data, 0o755)
    for p in [*data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert loose_entries(data)
    served = start_serve(
        [
            "--data-dir",
            str(data),
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
            "--enroll",
            "off",
            *LOCAL,
        ],
        umask=0o022,
    )
    serving.append(served)
    assert loose_entries(data) == []
    out = stop(served)
    assert "removed group/other permissions" in served.banner + out


async def test_run_server_in_process_keeps_files_private_under_umask_0(tmp_path: Path) -> None:
    """Without the command's umask (an embedding program): the databases, their -wal/-shm
    files and the PKI are still created owner-only."""
    data = tmp_path / "data"
    old = os.umask(0)
    try:
        config = make_config(data, udp="off", policy_file=str(POLICY))
        async with run_server(config) as server:
            assert server.tcp is not None
            with socket.create_connection(("127.0.0.1", server.tcp.port), timeout=5) as s:
                s.sendall(chat_event("umask0", "U0", "hello"))
            await server.writer.flush()
            assert (data / "liaison.db-wal").exists()
            assert (data / "audit" / "signing.pub").exists()
            assert loose_entries(data) == []
    finally:
        os.umask(old)


# --- item 9: the server's ports in packages and links -----------------------------------------


def _prefs(package: Path) -> str:
    with zipfile.ZipFile(package) as z:
        return "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".pref"))


def test_user_add_and_token_use_the_listener_flags(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flags = ["--tls", ":18089", "--enroll", ":18446", "--public-host", "tak.example.org"]
    r = liaison("user", "add", "alice", "--org", "Blue", "--data-dir", str(data), *flags)
    assert r.returncode == 0, r.stderr
    assert "for tak.example.org:18089:ssl." in r.stdout
    assert "host=tak.example.org:18446&username=alice" in r.stdout
    for kind in ("atak", "itak"):
        prefs = _prefs(data / "packages" / "alice" / f"alice-{kind}.zip")
        assert "tak.example.org:18089:ssl" in prefs and ":8089:" not in prefs
    r = liaison("user", "token", "alice", "--data-dir", str(data), *flags)
    assert r.returncode == 0, r.stderr
    assert "host=tak.example.org:18446&username=alice" in r.stdout


def test_user_add_and_token_read_the_listeners_from_the_config_file_and_environment(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "liaison.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{data}"\npublic_host = "tak.example.org"\n'
        '[listeners]\ntls = "0.0.0.0:28089"\nenroll = "0.0.0.0:28446"\n'
    )
    r = liaison("user", "add", "bob", "--org", "Blue", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "tak.example.org:28089:ssl" in _prefs(data / "packages" / "bob" / "bob-atak.zip")
    assert "host=tak.example.org:28446&username=bob" in r.stdout
    r = liaison(
        "user", "token", "bob", env={"LIAISON_CONFIG": str(cfg), "LIAISON_ENROLL": ":38446"}
    )
    assert r.returncode == 0, r.stderr
    assert "host=tak.example.org:38446&username=bob" in r.stdout


# --- item 14: a port already in use ----------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "kind", "what"),
    [
        ("--tls", socket.SOCK_STREAM, "TLS streaming (--tls)"),
        ("--enroll", socket.SOCK_STREAM, "HTTPS enrollment and web sign-in (--enroll)"),
        ("--udp", socket.SOCK_DGRAM, "UDP input (--udp)"),
    ],
)
def test_a_port_in_use_is_one_line_naming_the_listener_and_its_flag(
    tmp_path: Path, flag: str, kind: int, what: str
) -> None:
    listeners = {f: "off" for f in ("--tcp", "--tls", "--udp", "--https", "--enroll")}
    with socket.socket(socket.AF_INET, kind) as held:
        held.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            held.listen()
        port = held.getsockname()[1]
        listeners[flag] = f"127.0.0.1:{port}"
        args = [a for pair in listeners.items() for a in pair]
        r = liaison("serve", "--data-dir", str(tmp_path / "data"), *args, timeout=60)
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    expected = f"liaison: cannot listen on 127.0.0.1:{port} for {what}: address already in use"
    assert r.stderr.strip().splitlines()[-1] == expected
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


def test_a_partner_link_port_in_use_is_one_line_naming_the_policy_setting(tmp_path: Path) -> None:
    from liaison.identity.ca import ensure_server_pki
    from liaison.identity.certs import fingerprint_sha256, load_server_cert
    from tests.integration.test_federation_denials import _fed, _peer
    from tests.integration.test_labels_e2e import POLICY

    partner = ensure_server_pki(tmp_path / "partner", public_host="localhost")
    fingerprint = fingerprint_sha256(load_server_cert(partner))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        policy = tmp_path / "policy.toml"
        policy.write_text(
            POLICY
            + _fed("usa-liaison", f"127.0.0.1:{port}")
            + _peer("ukr", ca=partner.ca_cert, fingerprint=fingerprint, org="UKR", dial=None)
        )
        off = [a for f in ("--tcp", "--udp", "--https", "--enroll") for a in (f, "off")]
        off += ["--tls", "127.0.0.1:0"]  # the partner link needs the server's certificate
        r = liaison(
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            *off,
            env={"LIAISON_POLICY_FILE": str(policy)},
            timeout=60,
        )
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    expected = (
        f"liaison: cannot listen on 127.0.0.1:{port} for the partner link ([federation] listen"
        " in the label policy file): address already in use"
    )
    assert r.stderr.strip().splitlines()[-1] == expected


# --- item 17: liaison sim and the help texts ------------------------------------------------


@pytest.mark.parametrize(
    "bad", [["--rate", "0"], ["--rate", "-1"], ["--duration", "0"], ["--clients", "0"]]
)
def test_sim_refuses_values_that_cannot_run(bad: list[str]) -> None:
    r = liaison("sim", *bad)
    assert r.returncode == 2
    assert "must be greater than 0" in r.stderr and "Traceback" not in r.stderr


def test_sim_exits_1_when_no_unit_connects() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        r = liaison("sim", "--port", str(port), "--clients", "2", "--duration", "1")
    assert r.returncode == 1
    assert "units connected 0, failed 2" in r.stdout
    assert f"liaison: no unit could connect to 127.0.0.1:{port}" in r.stderr


def test_sim_prints_its_summary_on_ctrl_c() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(16)  # the kernel completes the connections; nobody reads
        port = held.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "liaison", "sim", "--port", str(port), "--clients", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2.0)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "units connected 3, failed 0" in out and "Traceback" not in err


def test_help_texts() -> None:
    top = liaison("--help")
    assert top.returncode == 0
    assert "DESIGN.md" not in top.stdout
    assert "runs `liaison serve`" in top.stdout and "3 cannot listen" in top.stdout
    sim = liaison("sim", "--help").stdout
    for default in (
        "(default: 127.0.0.1)",
        "(default: 8087)",
        "(default: 10)",
        "(default: 1.0)",
        "(default: 60.0)",
    ):
        assert default in sim
    verify = liaison("audit", "verify", "--help").stdout
    assert "--data-dir" in verify and "--config" in verify
    for listener in ("--tcp", "--tls", "--udp", "--https", "--enroll", "--http", "--multicast"):
        assert listener not in verify


def test_bare_liaison_says_it_runs_serve(tmp_path: Path, serving: list[Served]) -> None:
    served = start_serve(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "off",
            "--enroll",
            "off",
            *LOCAL,
        ],
        command=(),
    )
    serving.append(served)
    assert served.banner.startswith("liaison: no command given: running `liaison serve`")
    stop(served)


# --- item 18: user list ----------------------------------------------------------------------


def test_user_list_shows_no_sign_in_for_a_revoked_user(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    for name in ("carol", "dave"):
        r = liaison(
            "user",
            "add",
            name,
            "--org",
            "USA",
            "--password",
            *data,
            stdin="a long enough password\n",
        )
        assert r.returncode == 0, r.stderr
    assert liaison("user", "revoke", "carol", *data).returncode == 0
    r = liaison("user", "list", *data)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    # NAME ORG GROUPS PROFILE SIGN-IN CERTS... STATUS
    assert rows["carol"][4] == "-" and rows["carol"][-1] == "revoked"
    assert rows["dave"][4] == "password" and rows["dave"][-1] == "active"


# --- item 21: the start banner ---------------------------------------------------------------


def test_banner_names_the_web_map_the_web_user_command_and_warns_about_localhost(
    tmp_path: Path, serving: list[Served]
) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--tcp", "off", "--tls", "127.0.0.1:0", "--udp", "off"]
    served = start_serve(
        [*args, "--enroll", "127.0.0.1:0", "--https", "127.0.0.1:0", "--public-host", "localhost"]
    )
    serving.append(served)
    enroll, https = served.port("HTTPS (sign-in)"), served.port("HTTPS (certs)")
    banner = served.banner
    assert f"https://localhost:{enroll}/  sign in with a user's password" in banner
    assert f"https://localhost:{https}/  with a client certificate" in banner
    assert (
        f"liaison user add NAME --org ORG --password --data-dir {data} --public-host localhost"
        " --tls 127.0.0.1:0 --enroll 127.0.0.1:0" in banner
    )
    assert "Warning: the public host is localhost" in banner
    stop(served)
    served = start_serve(
        [*args, "--enroll", "127.0.0.1:0", "--https", "off", "--public-host", "tak.example.org"]
    )
    serving.append(served)
    assert "Warning" not in served.banner
    assert f"https://tak.example.org:{served.port('HTTPS (sign-in)')}/" in served.banner
    stop(served)
