"""Constants and checks shared by the PKI, users and data package tests."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

PUBLIC_HOST = "tak.example.org"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def client_verifier(roots: list[x509.Certificate], at: dt.datetime) -> verification.ClientVerifier:
    """cryptography's RFC 5280 path validation for client certificates.

    The web-PKI end-entity profile requires a subjectAltName; TAK client certificates carry none
    (the identity is the CN), so the SAN is made optional and everything else stays strict.
    """
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    return (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .time(at)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
        )
        .build_client_verifier()
    )


def make_test_ca(
    name: str,
    *,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    path_length: int | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    days: int = 3650,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A stand-in for an enterprise CA (self-signed root, or an intermediate under ``issuer``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Enterprise"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_csr(
    common_name: str,
    *,
    key: rsa.RSAPrivateKey | None = None,
    org: str | None = None,
) -> tuple[x509.CertificateSigningRequest, rsa.RSAPrivateKey]:
    """A CSR as ATAK builds it: the RDNs from /tls/config plus CN=<username>."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(key, hashes.SHA256())
    )
    return csr, key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
