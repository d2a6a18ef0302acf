"""Certificate plumbing shared by the CA, issuing, revocation, TLS and PKCS#12.

Everything lives under ``<data_dir>/pki/`` (``ServerPki`` names each file)::

    ca.pem        the signing CA certificate (ours, or an imported enterprise CA / intermediate)
    ca.key        its private key, mode 0600
    chain.pem     the certificates above an imported CA, up to its root (absent for our own CA)
    server.pem    the server certificate followed by the CA chain (what the TLS listeners present)
    server.key    its private key, mode 0600
    crl.pem       the signed CRL (RFC 5280 section 5), also as crl.der
    issued.json   index of every client certificate issued: serial, CN, fingerprint, expiry, revoked
    issued/       a PEM copy of each issued client certificate, named by serial
    retired/      CA and server files moved aside by ``import_ca(..., replace=True)``

Nothing here runs at import time. The modules of ``identity/`` that touch these files and ``ssl``
are IO-layer modules, not part of the pure ``protocol/`` and ``model/`` layers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from liaison.errors import PkiError
from liaison.identity.files import read_file

if TYPE_CHECKING:
    from liaison.identity.shared_db import IdentityDb

# Key algorithm for every key we generate: RSA 2048. TAK Server's own certificate scripts create
# RSA 2048 keys for the CA, the server and every client (TAK Server
# src/takserver-core/scripts/certs/makeCert.sh, `openssl req -newkey rsa:2048`), so RSA is what
# ATAK, WinTAK and iTAK are tested against. EC keys inside PKCS#12 files are where the older
# keystores fail: Android's legacy BouncyCastle PKCS#12 keystore and the Windows CNG import used by
# WinTAK handle RSA + 3DES PKCS#12 files everywhere, EC ones only on newer releases. 2048 bits is
# the minimum Apple accepts for TLS (Apple support HT210176) and NIST SP 800-57 rates it adequate
# through 2030.
RSA_KEY_BITS = 2048

RSA_PUBLIC_EXPONENT = 65537  # the only exponent anybody uses (RFC 8017 recommends 65537)

# Smallest RSA key we sign in a CSR or accept in an imported CA (same reasoning as above).
MIN_RSA_KEY_BITS = 2048

# Certificates start this long before "now", so a device whose clock runs slow (phones in the field
# without network time) does not reject a certificate that is minutes old. Let's Encrypt backdates
# by one hour for the same reason.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(hours=1)

# Longest value of a subject attribute we put in a certificate (RFC 5280 appendix A,
# ub-common-name = ub-organization-name = ub-organizational-unit-name = 64).
MAX_NAME_CHARS = 64

# Largest PEM/DER input we parse (a CSR, an imported CA bundle): generous for a chain of a few
# certificates, small enough that an enrollment request cannot make us parse megabytes.
MAX_PKI_INPUT_BYTES = 256 * 1024

CaPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPki:
    """Where the server's PKI files are. Building one touches no file; see ``ensure_server_pki``."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    ca_chain: Path
    server_cert: Path
    server_key: Path
    # The same server certificate with an ECDSA P-256 key, offered beside the RSA one to clients
    # that accept ECDSA (docs/certificates.md): its handshake signature costs 0.03 ms, not 0.7.
    server_ec_cert: Path
    server_ec_key: Path
    crl: Path
    crl_der: Path
    index: Path
    issued_dir: Path
    retired_dir: Path
    lock: Path
    # With PostgreSQL storage: the issued-certificate index and the CRL live in the database,
    # shared by every node (identity/shared_db.py); the CA and server files stay here.
    db: IdentityDb | None = field(default=None, compare=False, repr=False)

    @classmethod
    def at(cls, data_dir: Path, db: IdentityDb | None = None) -> ServerPki:
        d = Path(data_dir) / "pki"
        return cls(
            db=db,
            directory=d,
            ca_cert=d / "ca.pem",
            ca_key=d / "ca.key",
            ca_chain=d / "chain.pem",
            server_cert=d / "server.pem",
            server_key=d / "server.key",
            server_ec_cert=d / "server-ec.pem",
            server_ec_key=d / "server-ec.key",
            crl=d / "crl.pem",
            crl_der=d / "crl.der",
            index=d / "issued.json",
            issued_dir=d / "issued",
            retired_dir=d / "retired",
            lock=d / ".lock",
        )


def utc_now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER encoding (what TAK Server keys users by)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 key (the curve every TLS 1.2/1.3 client offers, RFC 8446 section 9.1)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: CaPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def same_public_key(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(a.public_bytes(der, fmt) == b.public_bytes(der, fmt))


def check_name_value(value: str, what: str) -> str:
    if not value or not value.strip():
        raise PkiError(f"{what} is empty")
    if len(value) > MAX_NAME_CHARS:
        raise PkiError(f"{what} is longer than {MAX_NAME_CHARS} characters (RFC 5280 ub-name)")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise PkiError(f"{what} contains control characters")
    return value


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    if len(data) > MAX_PKI_INPUT_BYTES:
        raise PkiError(f"{what} is larger than {MAX_PKI_INPUT_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{what} is not a PEM certificate: {exc}") from exc


def load_private_key(data: bytes, what: str, password: bytes | None = None) -> CaPrivateKey:
    if len(data) > MAX_PKI_INPUT_BYTES:
        raise PkiError(f"{what} is larger than {MAX_PKI_INPUT_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{what} is not a usable PEM private key: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            raise PkiError(f"{what} is RSA {key.key_size}; at least {MIN_RSA_KEY_BITS} required")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    raise PkiError(f"{what} must be an RSA or EC key, not {type(key).__name__}")


def ski(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def aki(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 4.2.1.1: the AKI of a certificate is the SKI of its issuer when the issuer has one.
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def first_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def all_attrs(name: x509.Name, oid: x509.ObjectIdentifier) -> tuple[str, ...]:
    out: list[str] = []
    for a in name.get_attributes_for_oid(oid):
        v = a.value
        out.append(v if isinstance(v, str) else v.decode("utf-8", "replace"))
    return tuple(out)


def load_ca(pki: ServerPki) -> tuple[x509.Certificate, CaPrivateKey]:
    """The signing CA certificate and its key; PkiError when missing or mismatched."""
    certs = load_pem_certs(read_file(pki.ca_cert, "CA certificate"), "CA certificate")
    if not certs:
        raise PkiError(f"CA certificate file holds no certificate: {pki.ca_cert}")
    key = load_private_key(read_file(pki.ca_key, "CA key"), "CA key")
    if not same_public_key(certs[0].public_key(), key.public_key()):
        raise PkiError(f"CA key {pki.ca_key} does not belong to CA certificate {pki.ca_cert}")
    return certs[0], key


def load_ca_cert(pki: ServerPki) -> x509.Certificate:
    certs = load_pem_certs(read_file(pki.ca_cert, "CA certificate"), "CA certificate")
    if not certs:
        raise PkiError(f"CA certificate file holds no certificate: {pki.ca_cert}")
    return certs[0]


def load_chain(pki: ServerPki) -> list[x509.Certificate]:
    """The signing CA followed by the certificates above it (only itself for our own CA)."""
    chain = [load_ca_cert(pki)]
    if pki.ca_chain.exists():
        chain.extend(load_pem_certs(read_file(pki.ca_chain, "CA chain"), "CA chain"))
    return chain


def load_server_cert(pki: ServerPki, path: Path | None = None) -> x509.Certificate:
    """The server certificate (``pki.server_cert``, or ``path``: the ECDSA one)."""
    path = pki.server_cert if path is None else path
    certs = load_pem_certs(read_file(path, "server certificate"), "server certificate")
    if not certs:
        raise PkiError(f"server certificate file holds no certificate: {path}")
    return certs[0]


def load_chain_above(pki: ServerPki) -> list[x509.Certificate]:
    if not pki.ca_chain.exists():
        return []
    return load_pem_certs(read_file(pki.ca_chain, "CA chain"), "CA chain")
