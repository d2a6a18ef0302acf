"""PKCS#12 builders: passwords, aliases (friendly names) and legacy-compatible encryption."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from liaison.errors import PkiError
from liaison.identity.certs import ServerPki, load_ca_cert, load_chain
from liaison.identity.issue import issue_client_cert
from liaison.identity.p12 import (
    TAK_DEFAULT_P12_PASSWORD,
    client_p12,
    new_p12_password,
    signed_cert_p12,
    truststore_p12,
)

# DER encodings of the algorithm OIDs inside a PKCS#12 file (RFC 7292 appendix C, RFC 3279,
# NIST CSOR), to check which encryption a file uses without an ASN.1 parser.
OID_PBE_SHA1_3DES = bytes.fromhex("060a2a864886f70d010c0103")  # 1.2.840.113549.1.12.1.3
OID_SHA1 = bytes.fromhex("06052b0e03021a")  # 1.3.14.3.2.26, the MAC digest
OID_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42


def _assert_legacy(p12: bytes) -> None:
    assert OID_PBE_SHA1_3DES in p12
    assert OID_SHA1 in p12
    assert OID_PBES2 not in p12
    assert OID_AES256_CBC not in p12


def test_legacy_check_tells_modern_files_apart(module_pki: ServerPki) -> None:
    # the default (modern) encryption uses PBES2 + AES-256: the byte check must notice
    modern = pkcs12.serialize_key_and_certificates(
        b"x", None, load_ca_cert(module_pki), None, BestAvailableEncryption(b"pw")
    )
    assert OID_PBES2 in modern and OID_AES256_CBC in modern
    assert OID_PBE_SHA1_3DES not in modern


def test_truststore_opens_with_its_password(module_pki: ServerPki) -> None:
    data = truststore_p12(module_pki, "trust-pass")
    loaded = pkcs12.load_pkcs12(data, b"trust-pass")
    ca = load_ca_cert(module_pki)
    assert loaded.key is None and loaded.cert is None
    assert [c.certificate for c in loaded.additional_certs] == [ca]
    # the alias is the CA's CN, as TAK Server's makeRootCa.sh (-caname)
    assert loaded.additional_certs[0].friendly_name == b"Liaison CA"
    _assert_legacy(data)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"wrong")


def test_truststore_alias_can_be_chosen(module_pki: ServerPki) -> None:
    data = truststore_p12(module_pki, "pw", alias="truststore-root")
    loaded = pkcs12.load_pkcs12(data, b"pw")
    assert loaded.additional_certs[0].friendly_name == b"truststore-root"


def test_client_p12_holds_key_cert_and_ca(module_pki: ServerPki) -> None:
    issued = issue_client_cert(module_pki, common_name="alice", org="Blue")
    assert issued.private_key is not None
    data = client_p12(issued.certificate, issued.private_key, issued.chain, "client-pass")
    loaded = pkcs12.load_pkcs12(data, b"client-pass")
    assert loaded.cert is not None and loaded.key is not None
    assert loaded.cert.certificate == issued.certificate
    assert loaded.cert.friendly_name == b"alice"  # default alias: the CN
    assert loaded.key.private_numbers() == issued.private_key.private_numbers()  # type: ignore[union-attr]
    assert [(c.certificate, c.friendly_name) for c in loaded.additional_certs] == [
        (load_ca_cert(module_pki), b"ca0")
    ]
    _assert_legacy(data)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"client-pas")


def test_client_p12_with_explicit_alias_and_single_ca(module_pki: ServerPki) -> None:
    issued = issue_client_cert(module_pki, common_name="bob", org=None)
    assert issued.private_key is not None
    ca = load_ca_cert(module_pki)
    data = client_p12(issued.certificate, issued.private_key, ca, "pw", alias="TAK Client Cert")
    loaded = pkcs12.load_pkcs12(data, b"pw")
    assert loaded.cert is not None and loaded.cert.friendly_name == b"TAK Client Cert"


def test_client_p12_refuses_a_foreign_key(module_pki: ServerPki) -> None:
    a = issue_client_cert(module_pki, common_name="alice", org=None)
    b = issue_client_cert(module_pki, common_name="bob", org=None)
    assert b.private_key is not None
    with pytest.raises(PkiError, match="does not belong"):
        client_p12(a.certificate, b.private_key, a.chain, "pw")


def test_signed_cert_p12_has_the_alias_atak_needs(module_pki: ServerPki) -> None:
    issued = issue_client_cert(module_pki, common_name="alice", org=None)
    data = signed_cert_p12(issued.certificate, load_chain(module_pki))
    # ATAK opens it with its default password and looks up "signedCert" (ATAK-CIV issue #279)
    loaded = pkcs12.load_pkcs12(data, TAK_DEFAULT_P12_PASSWORD.encode())
    by_alias = {c.friendly_name: c.certificate for c in loaded.additional_certs}
    assert by_alias == {b"signedCert": issued.certificate, b"ca0": load_ca_cert(module_pki)}
    _assert_legacy(data)


def test_empty_password_is_refused(module_pki: ServerPki) -> None:
    with pytest.raises(PkiError, match="empty"):
        truststore_p12(module_pki, "")


def test_new_password_is_random_and_long_enough() -> None:
    passwords = {new_p12_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) >= 16 for p in passwords)


def test_issued_cert_loads_from_p12_as_x509(module_pki: ServerPki) -> None:
    # sanity: what a client extracts is a parseable X.509 certificate from our CA
    issued = issue_client_cert(module_pki, common_name="carol", org=None)
    assert issued.private_key is not None
    data = client_p12(issued.certificate, issued.private_key, issued.chain, "pw")
    _, cert, _ = pkcs12.load_key_and_certificates(data, b"pw")
    assert isinstance(cert, x509.Certificate)
    cert.verify_directly_issued_by(load_ca_cert(module_pki))
