"""The CA and server certificate: created once, never overwritten, re-issued when names change."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.errors import PkiError
from liaison.identity.ca import SERVER_RENEW_BEFORE_DAYS, check_names, ensure_server_pki, expiring
from liaison.identity.certs import ServerPki, load_ca, load_ca_cert, load_server_cert
from liaison.identity.issue import issue_client_cert
from liaison.identity.revocation import revoke

from .pki_helpers import NOW, PUBLIC_HOST


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_call_creates_ca_server_cert_and_crl(tmp_path: Path) -> None:
    p = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    for path in (p.ca_cert, p.ca_key, p.server_cert, p.server_key, p.crl, p.crl_der):
        assert path.is_file(), path
    for path in (p.server_ec_cert, p.server_ec_key):
        assert path.is_file(), path
    assert _mode(p.ca_key) == 0o600
    assert _mode(p.server_key) == 0o600
    assert _mode(p.server_ec_key) == 0o600
    assert _mode(p.directory) == 0o700
    ca, key = load_ca(p)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Liaison CA"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert ca.not_valid_after_utc - NOW > dt.timedelta(days=3600)


def test_second_call_reuses_the_ca_and_server_cert(tmp_path: Path) -> None:
    p1 = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    files = (p1.ca_cert, p1.ca_key, p1.server_cert, p1.server_key, p1.server_ec_cert)
    before = {f: f.read_bytes() for f in (*files, p1.server_ec_key)}
    p2 = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW + dt.timedelta(days=1))
    assert p2 == p1
    for f, data in before.items():
        assert f.read_bytes() == data, f"{f.name} was rewritten"


def test_server_certificate_names_and_profile(module_pki: ServerPki) -> None:
    cert = load_server_cert(module_pki)
    sans = _sans(cert)
    assert x509.DNSName(PUBLIC_HOST) in sans
    assert x509.DNSName("localhost") in sans
    assert x509.IPAddress(ipaddress.ip_address("127.0.0.1")) in sans
    # an extra name that is an IP is written as an IP, not a DNS name
    assert x509.IPAddress(ipaddress.ip_address("10.1.2.3")) in sans
    assert x509.DNSName("10.1.2.3") not in sans
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku  # federation: the server dials partners
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=825)  # Apple's limit for TLS server certificates
    ca = load_ca_cert(module_pki)
    cert.verify_directly_issued_by(ca)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_server_certificate_passes_rfc5280_server_validation(module_pki: ServerPki) -> None:
    ca = load_ca_cert(module_pki)
    server = load_server_cert(module_pki)
    now = dt.datetime.now(dt.UTC)
    for name in (
        x509.DNSName(PUBLIC_HOST),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ):
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([ca]))
            .time(now)
            .build_server_verifier(name)
        )
        chain = verifier.verify(server, [])
        assert chain[-1] == ca
    wrong = (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .time(now)
        .build_server_verifier(x509.DNSName("other.example.org"))
    )
    with pytest.raises(verification.VerificationError):
        wrong.verify(server, [])


def test_server_cert_file_carries_the_chain(module_pki: ServerPki) -> None:
    certs = x509.load_pem_x509_certificates(module_pki.server_cert.read_bytes())
    assert len(certs) == 2
    assert certs[1] == load_ca_cert(module_pki)


def test_changed_names_reissue_server_cert_but_keep_ca(tmp_path: Path) -> None:
    p = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    ca_before = p.ca_cert.read_bytes()
    ca_key_before = p.ca_key.read_bytes()
    old = load_server_cert(p)
    ensure_server_pki(tmp_path, public_host="tak2.example.org", extra_names=["192.0.2.7"], now=NOW)
    new = load_server_cert(p)
    assert new.serial_number != old.serial_number
    assert x509.DNSName("tak2.example.org") in _sans(new)
    assert x509.DNSName(PUBLIC_HOST) not in _sans(new)
    assert x509.IPAddress(ipaddress.ip_address("192.0.2.7")) in _sans(new)
    assert p.ca_cert.read_bytes() == ca_before
    assert p.ca_key.read_bytes() == ca_key_before
    new.verify_directly_issued_by(load_ca_cert(p))
    # The ECDSA twin carries the same names, from the same CA, and only signs.
    ec_cert = load_server_cert(p, p.server_ec_cert)
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert set(_sans(ec_cert)) == set(_sans(new))
    ec_cert.verify_directly_issued_by(load_ca_cert(p))
    ku = ec_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


def test_name_order_and_case_do_not_trigger_reissue(tmp_path: Path) -> None:
    p = ensure_server_pki(
        tmp_path, public_host=PUBLIC_HOST, extra_names=["a.example", "10.0.0.1"], now=NOW
    )
    before = p.server_cert.read_bytes()
    ensure_server_pki(
        tmp_path,
        public_host=PUBLIC_HOST.upper(),
        extra_names=["10.0.0.1", "A.example", "localhost"],
        now=NOW,
    )
    assert p.server_cert.read_bytes() == before


def test_server_cert_renewed_when_close_to_expiry(tmp_path: Path) -> None:
    p = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    old = load_server_cert(p)
    later = old.not_valid_after_utc - dt.timedelta(days=SERVER_RENEW_BEFORE_DAYS - 1)
    ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=later)
    new = load_server_cert(p)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > old.not_valid_after_utc


def test_lone_ca_key_is_never_overwritten(tmp_path: Path) -> None:
    p = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    key = p.ca_key.read_bytes()
    p.ca_cert.unlink()
    with pytest.raises(PkiError, match="exists without"):
        ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    assert p.ca_key.read_bytes() == key


@pytest.mark.parametrize(
    "bad", ["", "https://tak.example.org", "tak.example.org:8089", "bad_name.example", "-x.example"]
)
def test_bad_public_host_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PkiError):
        ensure_server_pki(tmp_path, public_host=bad, now=NOW)


def test_check_names(module_pki: ServerPki) -> None:
    assert check_names(module_pki, PUBLIC_HOST) == []
    assert check_names(module_pki, "10.1.2.3") == []
    problems = check_names(module_pki, "other.example.org")
    assert any("does not name other.example.org" in p for p in problems)
    assert any("Docker" in p for p in check_names(module_pki, "172.17.0.2"))
    assert any("loopback" in p for p in check_names(module_pki, "127.0.0.1"))
    assert any("single-label" in p for p in check_names(module_pki, "takserver"))
    assert any("port" in p for p in check_names(module_pki, "tak.example.org:8089"))


def test_check_names_reports_expired_server_cert(module_pki: ServerPki) -> None:
    server = load_server_cert(module_pki)
    problems = check_names(
        module_pki, PUBLIC_HOST, now=server.not_valid_after_utc + dt.timedelta(days=1)
    )
    assert any("server certificate expired" in p for p in problems)


def test_expiring_lists_what_expires_soonest_first(fresh_pki: ServerPki) -> None:
    assert [n for n, _ in expiring(fresh_pki, 7, NOW)] == []
    issued = issue_client_cert(fresh_pki, common_name="alice", org="Blue", days=10, now=NOW)
    soon = expiring(fresh_pki, 20, NOW)
    assert [n for n, _ in soon] == [f"client alice serial {issued.serial:x}"]
    month = expiring(fresh_pki, 31, NOW)
    assert [n for n, _ in month] == [f"client alice serial {issued.serial:x}", "CRL next update"]
    assert month == sorted(month, key=lambda item: item[1])
    everything = expiring(fresh_pki, 4000, NOW)
    names = [n for n, _ in everything]
    assert names[-1].startswith("CA ")
    assert any(n.startswith("server certificate") for n in names)
    assert any(n.startswith("server ECDSA certificate") for n in names)
    revoke(fresh_pki, serial=issued.serial, now=NOW)
    assert not any("alice" in n for n, _ in expiring(fresh_pki, 4000, NOW))
