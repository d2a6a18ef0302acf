"""The `liaison user`, `liaison ca` and `liaison doctor` commands, run through the real CLI."""

from __future__ import annotations

import datetime as dt
import io
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from liaison import admin
from liaison import config as config_mod
from liaison.cli import main
from liaison.identity.certs import ServerPki, load_ca_cert, load_chain
from liaison.identity.issue import issue_client_cert
from liaison.identity.users import UserDirectory
from tests.unit.admin.admin_helpers import open_package
from tests.unit.identity.pki_helpers import make_test_ca, pem

HOST = "tak.example.org"
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def where(data_dir: Path, host: str = HOST) -> tuple[str, ...]:
    return ("--data-dir", str(data_dir), "--public-host", host)


def cfg(data_dir: Path, host: str = HOST) -> config_mod.Config:
    return config_mod.load(None, {}, {"data_dir": str(data_dir), "public_host": host})


def test_user_add_writes_packages_a_client_can_use(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "user", "add", "alice", "--org", "Blue", "--groups", "Cyan,HQ", *where(data_dir)
    )
    assert code == 0, out
    out_dir = data_dir / "packages" / "alice"
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    for name in ("alice-atak.zip", "alice-itak.zip", "alice-enroll-qr.png"):
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o600
        assert str(out_dir / name) in out

    ca = load_ca_cert(ServerPki.at(data_dir))
    atak = open_package((out_dir / "alice-atak.zip").read_bytes(), f"certs/{HOST}.pref")
    streams = atak.prefs["cot_streams"]
    assert streams["connectString0"] == f"{HOST}:8089:ssl"
    assert streams["caLocation0"] == f"cert/truststore-{HOST}.p12"
    assert streams["certificateLocation0"] == f"cert/alice-{HOST}.p12"
    assert atak.roots == [ca]
    assert atak.client_alias == b"alice"
    cert = atak.client.cert
    assert cert is not None
    subject = cert.certificate.subject.rfc4514_string()
    assert subject == "CN=alice,O=Blue"
    # the CA chain rides along in the client keystore as ca0
    assert [c.friendly_name for c in atak.client.additional_certs] == [b"ca0"]
    # the passwords printed are the ones in the package, and only those two
    assert f"truststore password  {streams['caPassword0']}" in out
    assert f"certificate password {streams['clientPassword0']}" in out

    itak = open_package((out_dir / "alice-itak.zip").read_bytes(), "config.pref")
    assert {"config.pref", "caCert.p12", "clientCert.p12"} <= itak.names
    assert itak.prefs["cot_streams"]["connectString0"] == f"{HOST}:8089:ssl"
    assert itak.client.cert is not None
    assert itak.client.cert.certificate == cert.certificate

    # the user exists with the certificate recorded, and the QR's token enrolls them
    user = UserDirectory.load(data_dir / "users.json").get("alice")
    assert user is not None and user.in_groups == ("Cyan", "HQ") == user.out_groups
    assert user.cert_serials == (cert.certificate.serial_number,)
    url = re.search(r"tak://com\.atakmap\.app/enroll\?\S+", out)
    assert url is not None
    assert f"host={HOST}&username=alice&token=" in url.group(0)
    token = url.group(0).rsplit("token=", 1)[1]
    directory = UserDirectory.load(data_dir / "users.json")
    assert directory.check_token("alice", token, dt.datetime.now(dt.UTC))
    assert (out_dir / "alice-enroll-qr.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "▄" in out or "█" in out  # the QR code in the terminal


def test_user_add_with_password_from_stdin_and_split_groups(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    out_dir = tmp_path / "handover"
    code, out, _ = run(
        capsys, "user", "add", "bob", "--org", "Red", "--password", "--in-groups", "Ops",
        "--out-groups", "Ops,Intel", "--profile", "field", "--out", str(out_dir), *where(data_dir),
    )  # fmt: skip
    assert code == 0
    assert "tak://" not in out and "liaison user token bob" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["bob-atak.zip", "bob-itak.zip"]
    directory = UserDirectory.load(data_dir / "users.json")
    user = directory.verify_password("bob", PASSWORD)
    assert user is not None and user.profile == "field"
    assert (user.in_groups, user.out_groups) == (("Ops",), ("Ops", "Intel"))


def test_user_add_refusals(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))[0] == 0
    code, _, err = run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "user", "add", "bad name", "--org", "Blue", *where(data_dir))
    assert code == 1 and "user name" in err
    code, _, err = run(
        capsys, "user", "add", "c", "--org", "B", "--groups", "A", "--out-groups", "B",
        *where(data_dir),
    )  # fmt: skip
    assert code == 1 and "not both" in err
    code, _, err = run(
        capsys, "user", "add", "c", "--org", "B", "--in-groups", "A", *where(data_dir)
    )
    assert code == 1 and "go together" in err
    with pytest.raises(SystemExit):  # argparse: a lifetime past 30 days
        main(["user", "add", "c", "--org", "B", "--token-ttl", "1000", *where(data_dir)])
    capsys.readouterr()


def test_user_list_passwd_and_token(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "user", "list", *where(data_dir))
    assert code == 0 and "No users" in out
    code, _, err = run(capsys, "user", "token", "alice", *where(data_dir))
    assert code == 1 and "no certificate authority" in err
    run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))
    code, out, _ = run(capsys, "user", "list", *where(data_dir))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ORG", "GROUPS", "IN/OUT", "PROFILE", "SIGN-IN", "CERTS",
                                "STATUS"]  # fmt: skip
    assert re.search(r"^alice\s+Blue\s+__ANON__/__ANON__\s+-\s+1 token\s+1 live\s+active$",
                     lines[1])  # fmt: skip

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert run(capsys, "user", "passwd", "alice", *where(data_dir))[0] == 0
    directory = UserDirectory.load(data_dir / "users.json")
    assert directory.verify_password("alice", PASSWORD) is not None
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, "user", "passwd", "alice", *where(data_dir))
    assert code == 1 and "at least" in err
    assert run(capsys, "user", "passwd", "alice", "--clear", *where(data_dir))[0] == 0
    assert directory.verify_password("alice", PASSWORD) is None
    code, _, err = run(capsys, "user", "passwd", "nobody", "--clear", *where(data_dir))
    assert code == 1 and "nobody" in err

    code, out, _ = run(capsys, "user", "token", "alice", "--ttl", "2", *where(data_dir))
    assert code == 0
    token = re.search(r"token=(\S+)", out)
    assert token is not None
    now = dt.datetime.now(dt.UTC)
    assert directory.check_token("alice", token.group(1), now)
    assert not directory.check_token(
        "alice", token.group(1), now + dt.timedelta(hours=2, seconds=5)
    )
    code, out, _ = run(capsys, "user", "list", *where(data_dir))
    assert "2 tokens" in out
    assert run(capsys, "user", "token", "nobody", *where(data_dir))[0] == 1


def test_user_revoke_revokes_every_certificate_and_signs_the_crl(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))
    server_pki = ServerPki.at(data_dir)
    # a second certificate, as enrollment from another device would add
    second = issue_client_cert(server_pki, common_name="alice", org="Blue")
    UserDirectory.load(data_dir / "users.json").add_cert_serial("alice", second.serial)
    code, out, _ = run(capsys, "user", "revoke", "alice", *where(data_dir))
    assert code == 0 and "Revoked 2 certificate(s)" in out
    user = UserDirectory.load(data_dir / "users.json").get("alice")
    assert user is not None and user.revoked and not user.tokens
    crl = x509.load_pem_x509_crl(server_pki.crl.read_bytes())
    listed = {r.serial_number for r in crl}
    assert set(user.cert_serials) == listed and len(listed) == 2
    assert crl.is_signature_valid(load_ca_cert(server_pki).public_key())  # type: ignore[arg-type]
    code, out, _ = run(capsys, "user", "revoke", "alice", *where(data_dir))
    assert code == 0 and "No live certificate" in out
    code, out, _ = run(capsys, "user", "list", *where(data_dir))
    assert re.search(r"0 live, 2 revoked\s+revoked$", out.splitlines()[1])
    code, _, err = run(capsys, "user", "revoke", "nobody", *where(data_dir))
    assert code == 1 and "nobody" in err


def test_ca_import_and_show(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_test_ca("Example Root")
    inter = make_test_ca("Example TAK Issuing", issuer=root, path_length=0)
    files = {
        "inter.pem": pem(inter[0]),
        "root.pem": pem(root[0]),
        "inter.key": inter[1].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key secret"),
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    args = ("ca", "import", "--cert", str(tmp_path / "inter.pem"), "--key",
            str(tmp_path / "inter.key"), "--chain", str(tmp_path / "root.pem"))  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("key secret\n"))
    code, out, err = run(capsys, *args, *where(data_dir))
    assert code == 0, err
    assert "Imported signing CA: CN=Example TAK Issuing" in out and "chain 0: " in out
    assert load_chain(ServerPki.at(data_dir)) == [inter[0], root[0]]

    monkeypatch.setattr("sys.stdin", io.StringIO("key secret\n"))
    code, _, err = run(capsys, *args, *where(data_dir))
    assert code == 1 and "already exists" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong\n"))
    code, _, err = run(capsys, *args, "--replace", *where(data_dir))
    assert code == 1 and "key" in err.lower()
    code, _, err = run(capsys, "ca", "import", "--cert", str(tmp_path / "missing.pem"), "--key",
                       str(tmp_path / "inter.key"), *where(data_dir))  # fmt: skip
    assert code == 1 and "cannot read" in err

    # a user added now is issued by the imported CA, and `ca show` names everything
    run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))
    code, out, _ = run(capsys, "ca", "show", *where(data_dir))
    assert code == 0
    assert "Signing CA: CN=Example TAK Issuing,O=Example Enterprise" in out
    assert "CA chain 0: CN=Example Root" in out
    assert f"names    {HOST}, localhost, 127.0.0.1" in out
    assert "Client certificates issued: 1 (0 revoked)" in out
    assert "/crl.pem" in out


def test_ca_show_without_a_ca(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ca", "show", *where(data_dir))
    assert code == 1 and "no certificate authority" in err


def test_doctor_reports_expiry_and_names(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "doctor", *where(data_dir))
    assert code == 1 and "no certificate authority" in out
    run(capsys, "user", "add", "alice", "--org", "Blue", *where(data_dir))
    code, out, _ = run(capsys, "doctor", *where(data_dir))
    assert code == 0 and "All good" in out, out  # the fresh CRL is not reported

    # a certificate issued 360 days ago for a year: 5 days left
    server_pki = ServerPki.at(data_dir)
    now = dt.datetime.now(dt.UTC)
    old = issue_client_cert(
        server_pki, common_name="bob", org="Red", now=now - dt.timedelta(days=360)
    )
    code, out, _ = run(capsys, "doctor", *where(data_dir))
    assert code == 1
    assert re.search(rf"in [45] days\s+client bob serial {old.serial:x}$", out, re.M), out
    assert "Problems" not in out
    # a public host the server certificate does not name, and one phones cannot reach
    code, out, _ = run(capsys, "doctor", *where(data_dir, "other.example.org"))
    assert code == 1 and "does not name other.example.org" in out
    code, out, _ = run(capsys, "doctor", *where(data_dir, "172.17.0.2"))
    assert "Docker-internal" in out


def test_doctor_function_with_time(data_dir: Path) -> None:
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    added = admin.add_user(cfg(data_dir), name="alice", org="Blue", token_ttl_s=None, now=t0)
    assert admin.doctor(cfg(data_dir), now=t0).healthy
    # 20 days later the CRL is past half its life; 340 days on, alice's certificate is due
    later = admin.doctor(cfg(data_dir), now=t0 + dt.timedelta(days=20))
    assert [what for what, _ in later.expiring] == [admin.CRL_ITEM]
    year = admin.doctor(cfg(data_dir), now=t0 + dt.timedelta(days=340))
    assert f"client alice serial {added.serial:x}" in [what for what, _ in year.expiring]
    # two years on the server certificate has expired: reported as expiring and as a problem
    gone = admin.doctor(cfg(data_dir), now=t0 + dt.timedelta(days=731))
    assert any(what.startswith("server certificate") for what, _ in gone.expiring)
    assert any("expired" in p for p in gone.problems)
    assert admin.doctor(cfg(data_dir, "localhost"), now=t0).problems == [
        "public_host localhost only resolves on this machine"
    ]


def test_packages_and_links_use_the_configured_ports(data_dir: Path) -> None:
    config = config_mod.load(
        None,
        {},
        {"data_dir": str(data_dir), "public_host": HOST, "tls": ":9089", "enroll": ":9446"},
    )
    added = admin.add_user(config, name="alice", org="Blue")
    opened = open_package(added.atak_package.read_bytes(), f"certs/{HOST}.pref")
    assert opened.prefs["cot_streams"]["connectString0"] == f"{HOST}:9089:ssl"
    assert added.link is not None
    assert f"host={HOST}:9446&username=alice&token=" in added.link.url
