"""The ``[directory]`` section: parsing, refusals that name the key, and a password that
check-config never prints."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from liaison import config as config_mod
from liaison.errors import ConfigError
from liaison.identity import directory as directory_mod
from liaison.identity.directory_config import dn_key, parse_directory
from liaison.identity.users import User

SECRET = "s3rvice-pa55word"


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Directory CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def base(tmp_path: Path) -> dict[str, object]:
    ca = tmp_path / "ca.pem"
    if not ca.exists():
        ca.write_bytes(_ca_pem())
    (tmp_path / "pw").write_text(SECRET + "\n")
    return {
        "urls": ["ldaps://dc1.example.org"],
        "ca_file": "ca.pem",
        "bind_dn": "cn=liaison,dc=example,dc=org",
        "bind_password_file": "pw",
        "user_base": "ou=people,dc=example,dc=org",
        "org": "Example",
        "map": [{"group": "CN=Blue, OU=Groups,DC=example,DC=org", "groups": ["Blue"]}],
    }


def test_defaults_and_presets(tmp_path: Path) -> None:
    cfg = parse_directory(base(tmp_path), base_dir=tmp_path)
    assert cfg.kind == "openldap" and cfg.urls == ("ldaps://dc1.example.org",)
    assert cfg.user_filter == "(&(objectClass=person)(uid={username}))"
    assert cfg.group_attribute == "memberOf" and cfg.disabled_filter == ""
    assert cfg.bind_password == SECRET  # the trailing newline of the file is dropped
    assert cfg.ca_file == tmp_path / "ca.pem" and cfg.refresh_s == 60 and cfg.require_group
    assert cfg.maps[0].key == "cn=blue,ou=groups,dc=example,dc=org"
    ad = parse_directory({**base(tmp_path), "kind": "ad"}, base_dir=tmp_path)
    assert ad.user_filter == "(&(objectClass=user)(sAMAccountName={username}))"
    assert ad.disabled_filter == "(userAccountControl:1.2.840.113556.1.4.803:=2)"


def test_password_from_the_environment(tmp_path: Path) -> None:
    table = {**base(tmp_path), "bind_password_env": "LDAP_PW"}
    del table["bind_password_file"]
    cfg = parse_directory(table, base_dir=tmp_path, environ={"LDAP_PW": "from-env"})
    assert cfg.bind_password == "from-env" and "LDAP_PW" in cfg.bind_password_source
    with pytest.raises(ConfigError, match="unset"):
        parse_directory(table, base_dir=tmp_path, environ={})
    with pytest.raises(ConfigError, match="empty"):
        parse_directory(table, base_dir=tmp_path, environ={"LDAP_PW": ""})
    with pytest.raises(ConfigError, match="exactly one"):
        parse_directory({**table, "bind_password_file": "pw"}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"urls": ["http://x"]}, "directory.urls"),
        ({"urls": ["ldap://x"]}, "directory.urls"),  # cleartext without StartTLS
        ({"ca_file": "missing.pem"}, "directory.ca_file"),
        ({"user_filter": "(uid=alice)"}, "directory.user_filter"),  # no {username}
        ({"user_filter": "uid={username}"}, "directory.user_filter"),
        ({"group_filter": "(member={dn})"}, "directory.group_base"),
        ({"refresh_s": 0}, "directory.refresh_s"),
        ({"timeout_s": 600}, "directory.timeout_s"),
        ({"kind": "novell"}, "directory.kind"),
        ({"insecure": True}, "directory.insecure"),
        ({"map": [{"group": "cn=x"}]}, "directory.map[0]"),
        ({"map": [{"group": "cn=x", "groups": ["A"], "colour": 1}]}, "directory.map[0].colour"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, change: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_directory({**base(tmp_path), **change}, base_dir=tmp_path)
    assert err.value.key == key


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    table = base(tmp_path)
    del table["ca_file"]
    with pytest.raises(ConfigError, match="always checked"):
        parse_directory(table, base_dir=tmp_path)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no usable CA"):
        parse_directory({**table, "ca_file": "junk.pem"}, base_dir=tmp_path)


def test_config_file_section_and_check_config(tmp_path: Path) -> None:
    base(tmp_path)
    path = tmp_path / "liaison.toml"
    path.write_text(
        '[server]\npublic_host = "tak.example.org"\n\n[directory]\n'
        'urls = ["ldap://dc1.example.org", "ldaps://dc2.example.org"]\nstart_tls = true\n'
        'ca_file = "ca.pem"\nbind_dn = "cn=liaison,dc=example,dc=org"\n'
        'bind_password_file = "pw"\nuser_base = "dc=example,dc=org"\norg = "Example"\n'
    )
    cfg = config_mod.load(path, {})
    assert cfg.directory is not None and cfg.directory.start_tls
    text = config_mod.describe(cfg)
    assert 'bind_password = "***"' in text and SECRET not in text
    assert SECRET not in repr(cfg)
    assert config_mod.load(None, {}).directory is None
    # what check-config prints loads back to the same configuration (password read again)
    again = tmp_path / "sub" / "effective.toml"
    again.parent.mkdir()
    again.write_text(text)
    assert config_mod.load(again, {}) == cfg


def test_maps_round_trip_through_check_config(tmp_path: Path) -> None:
    table = base(tmp_path)
    table["map"] = [
        {"group": "cn=a,dc=x", "in": ["A"], "out": ["A", "HQ"], "org": "O1", "profile": "p"},
        {"group": "cn=b,dc=x", "profile": "q"},
    ]
    cfg = config_mod.Config(directory=parse_directory(table, base_dir=tmp_path))
    f = tmp_path / "effective.toml"
    f.write_text(config_mod.describe(cfg))
    assert config_mod.load(f, {}) == cfg


def test_dn_key() -> None:
    assert dn_key("CN=Blue , OU=Groups,DC=Example,DC=org") == "cn=blue,ou=groups,dc=example,dc=org"
    assert dn_key("cn=a\\,b,dc=x") == "cn=a\\,b,dc=x"  # an escaped comma stays in the value


def test_forgetting_keeps_revoked_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_mod, "MAX_ACCOUNTS", 3)
    d = directory_mod.Directory(parse_directory(base(tmp_path), base_dir=tmp_path))
    d._remember("old-revoked", User(name="old-revoked", org="O"))
    d._remember("old-revoked", None)  # gone from the directory: revoked
    d._remember("certs", User(name="certs", org="O"))
    d.add_cert_serial("certs", 7)
    d._remember("plain", User(name="plain", org="O"))
    d._remember("new", User(name="new", org="O"))
    assert d.names() == ["old-revoked", "certs", "new"]  # "plain" had no certificate
    d._remember("newer", User(name="newer", org="O"))
    assert d.names() == ["old-revoked", "certs", "newer"]
    assert d.revoked_names() == {"old-revoked"}
