"""Client certificates, CSR signing, revocation and the CRL, enterprise CA import, peer identity."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.errors import PkiError
from liaison.identity.ca import ensure_server_pki, import_ca
from liaison.identity.certs import (
    MAX_PKI_INPUT_BYTES,
    ServerPki,
    fingerprint_sha256,
    load_ca_cert,
    load_chain,
)
from liaison.identity.issue import (
    DEFAULT_CLIENT_VALIDITY_DAYS,
    MAX_CLIENT_VALIDITY_DAYS,
    issue_client_cert,
    list_issued,
    sign_csr,
)
from liaison.identity.revocation import (
    CRL_VALIDITY_DAYS,
    RevocationCache,
    is_revoked,
    refresh_crl,
    revoke,
    revoked_serials,
    write_crl,
)
from liaison.identity.tls import peer_identity

from .pki_helpers import NOW, PUBLIC_HOST, client_verifier, make_csr, make_test_ca, pem


def _cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def _check_client_profile(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """The checks a TLS server makes on a client certificate, done by hand (RFC 5280 6.1)."""
    cert.verify_directly_issued_by(ca)  # issuer name matches and the CA's key verifies it
    assert cert.issuer == ca.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_issued_client_cert_verifies_against_the_ca(fresh_pki: ServerPki) -> None:
    issued = issue_client_cert(fresh_pki, common_name="alice", org="Blue", ou="Ops", now=NOW)
    ca = load_ca_cert(fresh_pki)
    cert = issued.certificate
    _check_client_profile(cert, ca)
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=DEFAULT_CLIENT_VALIDITY_DAYS)
    assert cert.subject.rfc4514_string() == "CN=alice,OU=Ops,O=Blue"
    # full RFC 5280 path validation as well
    chain = client_verifier([ca], NOW).verify(cert, [])
    assert chain.chain[-1] == ca
    # the PEMs round-trip and belong together
    assert x509.load_pem_x509_certificate(issued.cert_pem) == cert
    assert issued.key_pem is not None
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert issued.serial == cert.serial_number
    assert issued.fingerprint_sha256 == fingerprint_sha256(cert)
    assert issued.chain == (ca,)


def test_client_cert_from_another_ca_does_not_verify(fresh_pki: ServerPki) -> None:
    other_ca, _ = make_test_ca("Other CA")
    issued = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    with pytest.raises(ValueError):
        issued.certificate.verify_directly_issued_by(other_ca)
    with pytest.raises(verification.VerificationError):
        client_verifier([other_ca], NOW).verify(issued.certificate, [])


def test_issuing_is_recorded_in_the_index(fresh_pki: ServerPki) -> None:
    a = issue_client_cert(fresh_pki, common_name="alice", org="Blue", now=NOW)
    b = issue_client_cert(fresh_pki, common_name="bob", org="Blue", now=NOW)
    records = list_issued(fresh_pki)
    assert [(r.serial, r.common_name) for r in records] == [(a.serial, "alice"), (b.serial, "bob")]
    assert records[0].fingerprint_sha256 == a.fingerprint_sha256
    assert records[0].not_after == a.not_after
    assert not records[0].revoked
    doc = json.loads(fresh_pki.index.read_text())
    assert doc["certs"][0]["serial"] == format(a.serial, "x")
    stored = x509.load_pem_x509_certificate(
        (fresh_pki.issued_dir / f"{a.serial:x}.pem").read_bytes()
    )
    assert stored == a.certificate


@pytest.mark.parametrize("days", [0, MAX_CLIENT_VALIDITY_DAYS + 1])
def test_validity_out_of_range_is_refused(fresh_pki: ServerPki, days: int) -> None:
    with pytest.raises(PkiError, match="validity"):
        issue_client_cert(fresh_pki, common_name="alice", org=None, days=days, now=NOW)


def test_bad_subject_values_are_refused(fresh_pki: ServerPki) -> None:
    with pytest.raises(PkiError, match="longer than 64"):
        issue_client_cert(fresh_pki, common_name="a" * 65, org=None, now=NOW)
    with pytest.raises(PkiError, match="control"):
        issue_client_cert(fresh_pki, common_name="al\nice", org=None, now=NOW)


# --- CSR signing (enrollment) ---------------------------------------------------------------


def test_sign_csr_with_matching_cn(fresh_pki: ServerPki) -> None:
    csr, key = make_csr("alice", org="WhateverTheClientSays")
    cert = sign_csr(
        fresh_pki,
        csr.public_bytes(serialization.Encoding.PEM),
        expected_cn="alice",
        org="Blue",
        now=NOW,
    )
    _check_client_profile(cert, load_ca_cert(fresh_pki))
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    # the server, not the CSR, decides the O (groups may be derived from it)
    assert cert.subject.rfc4514_string() == "CN=alice,O=Blue"
    assert [r.serial for r in list_issued(fresh_pki)] == [cert.serial_number]


def test_sign_csr_accepts_der_and_bare_base64(fresh_pki: ServerPki) -> None:
    csr, _ = make_csr("alice")
    der = csr.public_bytes(serialization.Encoding.DER)
    # ATAK posts the base64 body without PEM armour, possibly wrapped (tak-protocol.md 4)
    wrapped = b"\n".join(
        base64.b64encode(der)[i : i + 64] for i in range(0, len(base64.b64encode(der)), 64)
    )
    for body in (der, wrapped):
        cert = sign_csr(fresh_pki, body, expected_cn="alice", now=NOW)
        assert _cn(cert) == "alice"


def test_der_csr_ending_in_a_whitespace_byte_is_read_whole(fresh_pki: ServerPki) -> None:
    # A DER CSR whose last signature byte happens to be 0x0a or 0x20 (about 1 in 40) once lost
    # that byte to a strip() meant for the text forms.
    _, key = make_csr("alice")
    for i in range(2000):  # bounded: a hit is expected within about 40 tries
        csr, _ = make_csr("alice", key=key, org=f"O{i}")
        der = csr.public_bytes(serialization.Encoding.DER)
        if der[-1:] in (b"\n", b" ", b"\t", b"\r", b"\x0b", b"\x0c"):
            break
    else:
        pytest.fail("no CSR ended in a whitespace byte")
    cert = sign_csr(fresh_pki, der, expected_cn="alice", now=NOW)
    assert _cn(cert) == "alice"


def test_csr_with_another_cn_is_refused(fresh_pki: ServerPki) -> None:
    csr, _ = make_csr("mallory")
    with pytest.raises(PkiError, match="does not match"):
        sign_csr(
            fresh_pki, csr.public_bytes(serialization.Encoding.PEM), expected_cn="alice", now=NOW
        )
    assert list_issued(fresh_pki) == []


def test_csr_without_cn_is_refused(fresh_pki: ServerPki) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Blue")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PkiError, match="exactly one CN"):
        sign_csr(fresh_pki, csr.public_bytes(serialization.Encoding.DER), expected_cn="alice")


def test_csr_with_bad_signature_is_refused(fresh_pki: ServerPki) -> None:
    csr, _ = make_csr("alice")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature value
    with pytest.raises(PkiError, match="signature"):
        sign_csr(fresh_pki, bytes(der), expected_cn="alice", now=NOW)
    assert list_issued(fresh_pki) == []


def test_csr_with_weak_key_is_refused(fresh_pki: ServerPki) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr, _ = make_csr("alice", key=weak)
    with pytest.raises(PkiError, match="at least 2048"):
        sign_csr(fresh_pki, csr.public_bytes(serialization.Encoding.PEM), expected_cn="alice")


def test_csr_with_ec_key_is_signed_without_key_encipherment(fresh_pki: ServerPki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .sign(key, hashes.SHA256())
    )
    cert = sign_csr(fresh_pki, csr.public_bytes(serialization.Encoding.PEM), expected_cn="alice")
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


@pytest.mark.parametrize(
    "garbage", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"]
)
def test_garbage_csr_is_refused(fresh_pki: ServerPki, garbage: bytes) -> None:
    with pytest.raises(PkiError):
        sign_csr(fresh_pki, garbage, expected_cn="alice")


def test_oversized_csr_is_refused(fresh_pki: ServerPki) -> None:
    with pytest.raises(PkiError, match="larger than"):
        sign_csr(fresh_pki, b"A" * (MAX_PKI_INPUT_BYTES + 1), expected_cn="alice")


# --- Revocation and the CRL -----------------------------------------------------------------


def _load_crl(p: ServerPki) -> x509.CertificateRevocationList:
    crl = x509.load_pem_x509_crl(p.crl.read_bytes())
    assert x509.load_der_x509_crl(p.crl_der.read_bytes()) == crl
    return crl


def test_revoke_puts_the_serial_on_a_signed_crl(fresh_pki: ServerPki) -> None:
    alice = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    bob = issue_client_cert(fresh_pki, common_name="bob", org=None, now=NOW)
    ca = load_ca_cert(fresh_pki)
    empty = _load_crl(fresh_pki)
    assert len(empty) == 0
    later = NOW + dt.timedelta(hours=2)
    assert revoke(fresh_pki, serial=alice.serial, now=later) == [alice.serial]
    crl = _load_crl(fresh_pki)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    entry = crl.get_revoked_certificate_by_serial_number(alice.serial)
    assert entry is not None and entry.revocation_date_utc == later
    assert crl.get_revoked_certificate_by_serial_number(bob.serial) is None
    assert crl.next_update_utc == later + dt.timedelta(days=CRL_VALIDITY_DAYS)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    empty_number = empty.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > empty_number
    assert is_revoked(fresh_pki, alice.serial)
    assert not is_revoked(fresh_pki, bob.serial)
    assert revoked_serials(fresh_pki) == frozenset({alice.serial})
    # a second revocation changes nothing and is not an error
    assert revoke(fresh_pki, serial=alice.serial, now=later) == []


def test_crl_signature_fails_with_another_key(fresh_pki: ServerPki) -> None:
    other_ca, _ = make_test_ca("Other CA")
    crl = _load_crl(fresh_pki)
    assert not crl.is_signature_valid(other_ca.public_key())  # type: ignore[arg-type]


def test_revoke_by_common_name_revokes_every_live_cert(fresh_pki: ServerPki) -> None:
    a1 = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    a2 = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    b = issue_client_cert(fresh_pki, common_name="bob", org=None, now=NOW)
    assert sorted(revoke(fresh_pki, common_name="alice", now=NOW)) == sorted([a1.serial, a2.serial])
    crl = _load_crl(fresh_pki)
    assert {r.serial_number for r in crl} == {a1.serial, a2.serial}
    assert not is_revoked(fresh_pki, b.serial)


def test_revoke_unknown_serial_and_bad_arguments(fresh_pki: ServerPki) -> None:
    with pytest.raises(PkiError, match="no certificate"):
        revoke(fresh_pki, serial=12345)
    with pytest.raises(ValueError):
        revoke(fresh_pki)
    with pytest.raises(ValueError):
        revoke(fresh_pki, serial=1, common_name="alice")


def test_revocation_cache_follows_the_index(fresh_pki: ServerPki) -> None:
    cache = RevocationCache(fresh_pki)
    alice = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    assert not cache.is_revoked(alice.serial)
    revoke(fresh_pki, serial=alice.serial, now=NOW)
    assert cache.is_revoked(alice.serial)


def test_write_crl_refreshes_next_update(fresh_pki: ServerPki) -> None:
    later = NOW + dt.timedelta(days=20)
    path = write_crl(fresh_pki, now=later)
    assert path == fresh_pki.crl
    assert _load_crl(fresh_pki).next_update_utc == later + dt.timedelta(days=CRL_VALIDITY_DAYS)


def test_stale_crl_is_refreshed_by_ensure(fresh_pki: ServerPki, tmp_path: Path) -> None:
    before = _load_crl(fresh_pki).last_update_utc
    later = NOW + dt.timedelta(days=CRL_VALIDITY_DAYS)
    ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=later)
    assert _load_crl(fresh_pki).last_update_utc == later != before


def test_refresh_crl_re_signs_only_past_half_its_life(fresh_pki: ServerPki) -> None:
    assert not refresh_crl(fresh_pki, now=NOW + dt.timedelta(days=1))
    late = NOW + dt.timedelta(days=CRL_VALIDITY_DAYS * 0.75)
    assert refresh_crl(fresh_pki, now=late)
    assert _load_crl(fresh_pki).last_update_utc == late.replace(microsecond=0)
    assert not refresh_crl(fresh_pki, now=late + dt.timedelta(days=1))


# --- Enterprise CA import -------------------------------------------------------------------


def test_import_intermediate_with_chain(fresh_pki: ServerPki, tmp_path: Path) -> None:
    old_ca = load_ca_cert(fresh_pki)
    alice = issue_client_cert(fresh_pki, common_name="alice", org=None, now=NOW)
    revoke(fresh_pki, serial=alice.serial, now=NOW)

    root, root_key = make_test_ca("Enterprise Root", path_length=1)
    inter, inter_key = make_test_ca(
        "Enterprise TAK Issuing", issuer=(root, root_key), path_length=0
    )
    key_pem = inter_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    p = import_ca(
        tmp_path, pem(inter), key_pem, pem(root), key_password=b"secret", replace=True, now=NOW
    )
    assert p == fresh_pki
    assert load_ca_cert(p) == inter
    assert load_chain(p) == [inter, root]
    retired = list(p.retired_dir.iterdir())
    assert len(retired) == 1
    assert x509.load_pem_x509_certificate((retired[0] / "ca.pem").read_bytes()) == old_ca
    assert (retired[0] / "ca.key").stat().st_mode & 0o077 == 0

    # the next start re-issues the server certificate under the new CA and sends the chain
    ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    server_chain = x509.load_pem_x509_certificates(p.server_cert.read_bytes())
    assert server_chain[1:] == [inter, root]
    server_chain[0].verify_directly_issued_by(inter)

    bob = issue_client_cert(p, common_name="bob", org=None, now=NOW)
    assert bob.chain == (inter, root)
    verified = client_verifier([root], NOW).verify(bob.certificate, [inter])
    assert verified.chain == [bob.certificate, inter, root]

    # the new CRL is the new CA's: it does not list the retired CA's serials
    crl = _load_crl(p)
    assert crl.issuer == inter.subject
    assert crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(alice.serial) is None


def test_import_bundle_in_one_pem(tmp_path: Path) -> None:
    root, root_key = make_test_ca("Enterprise Root", path_length=1)
    inter, inter_key = make_test_ca("Issuing", issuer=(root, root_key), path_length=0)
    key_pem = inter_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    p = import_ca(tmp_path, pem(inter, root), key_pem, None, now=NOW)
    assert load_chain(p) == [inter, root]
    assert p.ca_key.stat().st_mode & 0o777 == 0o600


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_import_refuses_to_replace_silently(fresh_pki: ServerPki, tmp_path: Path) -> None:
    root, root_key = make_test_ca("Enterprise Root")
    before = fresh_pki.ca_cert.read_bytes()
    with pytest.raises(PkiError, match="replace=True"):
        import_ca(tmp_path, pem(root), _key_pem(root_key), now=NOW)
    assert fresh_pki.ca_cert.read_bytes() == before


def test_import_refuses_bad_material(tmp_path: Path) -> None:
    root, root_key = make_test_ca("Enterprise Root")
    other, other_key = make_test_ca("Unrelated Root")
    inter, inter_key = make_test_ca("Issuing", issuer=(root, root_key))
    with pytest.raises(PkiError, match="does not belong"):
        import_ca(tmp_path, pem(root), _key_pem(other_key), now=NOW)
    with pytest.raises(PkiError, match="did not sign"):
        import_ca(tmp_path, pem(inter), _key_pem(inter_key), pem(other), now=NOW)
    expired, expired_key = make_test_ca(
        "Old Root", not_before=NOW - dt.timedelta(days=400), days=365
    )
    with pytest.raises(PkiError, match="not valid now"):
        import_ca(tmp_path, pem(expired), _key_pem(expired_key), now=NOW)
    # an end-entity certificate is not a CA
    scratch = ensure_server_pki(tmp_path / "scratch", public_host=PUBLIC_HOST, now=NOW)
    leaf = issue_client_cert(scratch, common_name="leaf", org=None, now=NOW)
    assert leaf.private_key is not None
    with pytest.raises(PkiError, match="not a CA"):
        import_ca(tmp_path, leaf.cert_pem, _key_pem(leaf.private_key), now=NOW)
    with pytest.raises(PkiError, match="RSA 1024"):
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        import_ca(tmp_path, pem(root), _key_pem(weak), now=NOW)
    assert not (tmp_path / "pki" / "ca.pem").exists()


# --- Peer identity --------------------------------------------------------------------------


def test_peer_identity_reads_the_certificate(fresh_pki: ServerPki) -> None:
    issued = issue_client_cert(fresh_pki, common_name="alice", org="Blue", ou="Ops", now=NOW)
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    ca = load_ca_cert(fresh_pki)
    peer = peer_identity(der, issuers=load_chain(fresh_pki))
    assert peer.common_name == "alice"
    assert peer.org == "Blue"
    assert peer.org_units == ("Ops",)
    assert peer.serial == issued.serial
    assert peer.fingerprint_sha256 == issued.fingerprint_sha256
    assert peer.issuer_fingerprint_sha256 == fingerprint_sha256(ca)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert peer.authority_key_id == ski.digest.hex()
    assert peer.subject == "CN=alice,OU=Ops,O=Blue"
    assert peer.not_after == issued.not_after
    other_ca, _ = make_test_ca("Liaison CA")  # same name, different key
    assert peer_identity(der, issuers=[other_ca]).issuer_fingerprint_sha256 is None
    with pytest.raises(PkiError):
        peer_identity(b"\x30\x03\x02\x01\x00")
