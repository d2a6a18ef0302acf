"""PKCS#12 files for TAK clients: truststores, client keystores, the v1 enrollment answer."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from liaison.errors import PkiError
from liaison.identity.certs import ServerPki, first_attr, load_chain, same_public_key

# The PKCS#12 password ATAK uses for the v1 enrollment response and as its default truststore
# password (ATAK CertificateSigningOperation.java, R.string.defaultTrustStorePassword; TAK Server
# CertManagerApi signClient).
TAK_DEFAULT_P12_PASSWORD = "atakatak"

# The alias ATAK looks up in the v1 enrollment PKCS#12; ATAK 4.8 crashes when it is missing
# (ATAK CertificateSigningOperation.java; AndroidTacticalAssaultKit-CIV issue #279).
SIGNED_CERT_ALIAS = "signedCert"

# PBE iteration count for PKCS#12 files: OpenSSL's default for `openssl pkcs12 -export`
# (PKCS12_DEFAULT_ITER), i.e. what TAK Server's scripts produce and every client has opened.
# More rounds would buy little: the password travels in the same data package as the file.
P12_KDF_ROUNDS = 2048

# Random PKCS#12 passwords: 16 URL-safe characters, about 96 bits.
P12_PASSWORD_BYTES = 12


def new_p12_password() -> str:
    """A random password for a PKCS#12 file in a connection package."""
    return secrets.token_urlsafe(P12_PASSWORD_BYTES)


def _legacy_p12_encryption(password: str) -> serialization.KeySerializationEncryption:
    # Legacy PBE on purpose: PBES1 pbeWithSHAAnd3-KeyTripleDES-CBC for keys and certificates and
    # an HMAC-SHA1 MAC (RFC 7292 appendix B and C). Android's BouncyCastle keystore before
    # Android 12, Java 8 before 8u301 and the Windows PKCS#12 import WinTAK relies on cannot open
    # the PBES2/AES-256 + SHA-256 files that modern OpenSSL and cryptography write by default
    # (WinTAK "Failed to load client certificate", OpenTAKServer issue #46). TAK Server's scripts
    # pass `-legacy` to openssl for the same reason (makeCert.sh). The password protects little
    # anyway: it travels in the data package next to the file.
    if not password:
        raise PkiError("a PKCS#12 password must not be empty (old keystores cannot open it)")
    return (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(P12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode("utf-8"))
    )


def _ca_alias(cert: x509.Certificate, index: int) -> bytes:
    cn = first_attr(cert.subject, NameOID.COMMON_NAME)
    return (cn or f"ca{index}").encode("utf-8")


def truststore_p12(pki: ServerPki, password: str, *, alias: str | None = None) -> bytes:
    """The truststore for clients: the signing CA and any chain above it, no key.

    The CA is stored under its CN as friendly name (alias), as TAK Server's makeRootCa.sh
    (`-caname`), and marked trusted for Java keystores (Oracle's trusted-key-usage attribute), so
    Java and Android KeyStore.getInstance("PKCS12") list it as a trusted certificate entry.
    """
    chain = load_chain(pki)
    entries = [
        pkcs12.PKCS12Certificate(
            c, alias.encode("utf-8") if (alias and i == 0) else _ca_alias(c, i)
        )
        for i, c in enumerate(chain)
    ]
    return pkcs12.serialize_java_truststore(entries, _legacy_p12_encryption(password))


def client_p12(
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate | Sequence[x509.Certificate],
    password: str,
    alias: str | None = None,
) -> bytes:
    """A client keystore: key + certificate under ``alias`` (default: the CN), CAs as ca0..N."""
    if not same_public_key(cert.public_key(), key.public_key()):
        raise PkiError("the key does not belong to the certificate")
    cas = [ca_cert] if isinstance(ca_cert, x509.Certificate) else list(ca_cert)
    name = alias or first_attr(cert.subject, NameOID.COMMON_NAME) or "client"
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"),
        key,
        cert,
        [pkcs12.PKCS12Certificate(c, f"ca{i}".encode()) for i, c in enumerate(cas)],
        _legacy_p12_encryption(password),
    )


def signed_cert_p12(
    cert: x509.Certificate,
    cas: Sequence[x509.Certificate],
    password: str = TAK_DEFAULT_P12_PASSWORD,
) -> bytes:
    """The v1 ``/api/tls/signClient`` answer: certificates only, aliases ``signedCert``, ca0..caN.

    ATAK loads it with the default truststore password and takes the alias ``signedCert`` as its
    certificate and every other alias as its trust chain (ATAK CertificateSigningOperation.java).
    """
    entries = [pkcs12.PKCS12Certificate(cert, SIGNED_CERT_ALIAS.encode())]
    entries += [pkcs12.PKCS12Certificate(c, f"ca{i}".encode()) for i, c in enumerate(cas)]
    return pkcs12.serialize_java_truststore(entries, _legacy_p12_encryption(password))
