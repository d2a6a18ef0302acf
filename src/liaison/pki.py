"""The server's certificate authority: CA, server and client certs, CRL, TLS contexts, PKCS#12.

Everything lives under ``<data_dir>/pki/``::

    ca.pem        the signing CA certificate (ours, or an imported enterprise CA / intermediate)
    ca.key        its private key, mode 0600
    chain.pem     the certificates above an imported CA, up to its root (absent for our own CA)
    server.pem    the server certificate followed by the CA chain (what the TLS listeners present)
    server.key    its private key, mode 0600
    crl.pem       the signed CRL (RFC 5280 section 5), also as crl.der
    issued.json   index of every client certificate issued: serial, CN, fingerprint, expiry, revoked
    issued/       a PEM copy of each issued client certificate, named by serial
    retired/      CA and server files moved aside by ``import_ca(..., replace=True)``

Nothing here runs at import time. Functions that change files take an exclusive ``flock`` on
``pki/.lock`` so the running server and a ``liaison`` CLI command cannot interleave their
read-modify-write of the index. This module touches files and ``ssl``; it is an IO-layer module,
not part of the pure ``protocol/`` and ``model/`` layers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.errors import PkiError

# --- Named choices, with their reasons ------------------------------------------------------

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

# Every signature (certificates, CRL) uses SHA-256, with PKCS#1 v1.5 for RSA keys and ECDSA for
# an imported EC CA: what every TAK client verifies (Apple devices refuse SHA-1 signatures on
# TLS certificates, Apple support HT210176).

# Smallest RSA key we sign in a CSR or accept in an imported CA (same reasoning as above).
MIN_RSA_KEY_BITS = 2048

# CA lifetime: ten years, as TAK Server's makeRootCa.sh (`-days 3652`). Replacing a CA means
# re-enrolling every device, so it should outlive the hardware it is installed on.
CA_VALIDITY_DAYS = 3652

# Server certificate lifetime: two years, as TAK Server's makeCert.sh (`-days 730`). Apple devices
# (iTAK) refuse TLS server certificates valid for more than 825 days (Apple support HT210176).
SERVER_VALIDITY_DAYS = 730

# Re-issue the server certificate at startup once it has fewer than this many days left, so a
# server that restarts at least monthly never presents an expired certificate.
SERVER_RENEW_BEFORE_DAYS = 30

# Default client certificate lifetime: one year. Shorter than TAK Server's 730 days because a lost
# device keeps working until its certificate expires or is revoked, and re-enrolment is cheap.
DEFAULT_CLIENT_VALIDITY_DAYS = 365

# Longest client certificate we will issue on request (the CA's own lifetime bounds it as well).
MAX_CLIENT_VALIDITY_DAYS = 825

# Certificates start this long before "now", so a device whose clock runs slow (phones in the field
# without network time) does not reject a certificate that is minutes old. Let's Encrypt backdates
# by one hour for the same reason.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(hours=1)

# The CRL's nextUpdate (RFC 5280 5.1.2.5). Consumers of the CRL file (a partner's TAK Server, a
# reverse proxy) reject an expired CRL, so it is re-signed on every revocation and whenever
# ensure_server_pki finds it past half of this period.
CRL_VALIDITY_DAYS = 30

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

# Longest value of a subject attribute we put in a certificate (RFC 5280 appendix A,
# ub-common-name = ub-organization-name = ub-organizational-unit-name = 64).
MAX_NAME_CHARS = 64

# Largest PEM/DER input we parse (a CSR, an imported CA bundle): generous for a chain of a few
# certificates, small enough that an enrollment request cannot make us parse megabytes.
MAX_PKI_INPUT_BYTES = 256 * 1024

_KEY_FILE_MODE = 0o600
# Certificates and the CRL are not secret, but nothing in the data folder is for other local
# users (storage/permissions.py): owner-only like the rest.
_PUBLIC_FILE_MODE = 0o600
_DIR_MODE = 0o700
_INDEX_VERSION = 1

# The Docker default bridge network; a public_host there is the FreeTAKServer issue #188 mistake
# (connection packages carrying the container's internal address).
_DOCKER_BRIDGE = ipaddress.ip_network("172.17.0.0/16")

CaPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- Paths and records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPki:
    """Where the server's PKI files are. Building one touches no file; see ``ensure_server_pki``."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    ca_chain: Path
    server_cert: Path
    server_key: Path
    crl: Path
    crl_der: Path
    index: Path
    issued_dir: Path
    retired_dir: Path
    lock: Path

    @classmethod
    def at(cls, data_dir: Path) -> ServerPki:
        d = Path(data_dir) / "pki"
        return cls(
            directory=d,
            ca_cert=d / "ca.pem",
            ca_key=d / "ca.key",
            ca_chain=d / "chain.pem",
            server_cert=d / "server.pem",
            server_key=d / "server.key",
            crl=d / "crl.pem",
            crl_der=d / "crl.der",
            index=d / "issued.json",
            issued_dir=d / "issued",
            retired_dir=d / "retired",
            lock=d / ".lock",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCert:
    """A client certificate we issued, with its key when we generated the key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | None
    chain: tuple[x509.Certificate, ...]  # the signing CA first, then its issuers
    serial: int
    fingerprint_sha256: str
    cert_pem: bytes
    key_pem: bytes | None  # unencrypted PKCS#8 PEM; None when the key stayed on the device
    not_after: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedRecord:
    """One line of pki/issued.json."""

    serial: int
    common_name: str
    fingerprint_sha256: str
    issuer_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerCert:
    """What a TLS peer's certificate says about it (the transports build a Principal from this)."""

    common_name: str | None
    org: str | None  # first O attribute
    org_units: tuple[str, ...]  # every OU attribute, in order
    subject: str  # RFC 4514 string
    issuer: str  # RFC 4514 string
    serial: int
    fingerprint_sha256: str  # lowercase hex of the SHA-256 of the DER certificate
    not_before: dt.datetime
    not_after: dt.datetime
    authority_key_id: str | None  # hex, from the AKI extension when present
    issuer_fingerprint_sha256: str | None  # set when one of the given issuers signed it


# --- Small helpers --------------------------------------------------------------------------


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def atomic_write(path: Path, data: bytes, *, mode: int = _PUBLIC_FILE_MODE) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix.

    The temporary file is created with ``mode`` (not widened by the umask later), fsynced, renamed
    over ``path``, and the directory is fsynced so the rename survives a power cut.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``lock_path`` for the duration of the block.

    Not re-entrant: a second acquisition from the same process on a new descriptor would block.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} is missing: {path}") from None
    except OSError as exc:
        raise PkiError(f"{what} cannot be read: {path}: {exc}") from exc


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER encoding (what TAK Server keys users by)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def new_p12_password() -> str:
    """A random password for a PKCS#12 file in a connection package."""
    return secrets.token_urlsafe(P12_PASSWORD_BYTES)


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def _key_pem(key: CaPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _same_public_key(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(a.public_bytes(der, fmt) == b.public_bytes(der, fmt))


def _check_name_value(value: str, what: str) -> str:
    if not value or not value.strip():
        raise PkiError(f"{what} is empty")
    if len(value) > MAX_NAME_CHARS:
        raise PkiError(f"{what} is longer than {MAX_NAME_CHARS} characters (RFC 5280 ub-name)")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise PkiError(f"{what} contains control characters")
    return value


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    if len(data) > MAX_PKI_INPUT_BYTES:
        raise PkiError(f"{what} is larger than {MAX_PKI_INPUT_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{what} is not a PEM certificate: {exc}") from exc


def _load_private_key(data: bytes, what: str, password: bytes | None = None) -> CaPrivateKey:
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


def _ski(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _aki(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 4.2.1.1: the AKI of a certificate is the SKI of its issuer when the issuer has one.
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _first_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _all_attrs(name: x509.Name, oid: x509.ObjectIdentifier) -> tuple[str, ...]:
    out: list[str] = []
    for a in name.get_attributes_for_oid(oid):
        v = a.value
        out.append(v if isinstance(v, str) else v.decode("utf-8", "replace"))
    return tuple(out)


# --- Loading --------------------------------------------------------------------------------


def load_ca(pki: ServerPki) -> tuple[x509.Certificate, CaPrivateKey]:
    """The signing CA certificate and its key; PkiError when missing or mismatched."""
    certs = _load_pem_certs(_read(pki.ca_cert, "CA certificate"), "CA certificate")
    if not certs:
        raise PkiError(f"CA certificate file holds no certificate: {pki.ca_cert}")
    key = _load_private_key(_read(pki.ca_key, "CA key"), "CA key")
    if not _same_public_key(certs[0].public_key(), key.public_key()):
        raise PkiError(f"CA key {pki.ca_key} does not belong to CA certificate {pki.ca_cert}")
    return certs[0], key


def load_ca_cert(pki: ServerPki) -> x509.Certificate:
    certs = _load_pem_certs(_read(pki.ca_cert, "CA certificate"), "CA certificate")
    if not certs:
        raise PkiError(f"CA certificate file holds no certificate: {pki.ca_cert}")
    return certs[0]


def load_chain(pki: ServerPki) -> list[x509.Certificate]:
    """The signing CA followed by the certificates above it (only itself for our own CA)."""
    chain = [load_ca_cert(pki)]
    if pki.ca_chain.exists():
        chain.extend(_load_pem_certs(_read(pki.ca_chain, "CA chain"), "CA chain"))
    return chain


def load_server_cert(pki: ServerPki) -> x509.Certificate:
    certs = _load_pem_certs(_read(pki.server_cert, "server certificate"), "server certificate")
    if not certs:
        raise PkiError(f"server certificate file holds no certificate: {pki.server_cert}")
    return certs[0]


# --- The CA and the server certificate ------------------------------------------------------


def _make_ca(ca_name: str, now: dt.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    _check_name_value(ca_name, "CA name")
    key = _new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
        # RFC 5280 4.2.1.9: a CA sets cA=TRUE, critical. pathLen 0: this CA signs end entities
        # only; an intermediate under it would need an imported enterprise CA instead.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # RFC 5280 4.2.1.3: keyCertSign to sign certificates, cRLSign to sign the CRL.
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _desired_names(public_host: str, extra_names: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for the server: public_host, localhost, 127.0.0.1, extras; IPs as IPs."""
    out: list[x509.GeneralName] = []
    seen: set[tuple[str, str]] = set()
    for raw in (public_host, "localhost", "127.0.0.1", *extra_names):
        gn = _general_name(raw)
        key = _gn_key(gn)
        if key not in seen:
            seen.add(key)
            out.append(gn)
    return out


def _general_name(raw: str) -> x509.GeneralName:
    value = raw.strip()
    if not value:
        raise PkiError("a server name is empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if "://" in value or "/" in value:
        raise PkiError(f"server name {raw!r} must be a host name or IP address, not a URL")
    if ":" in value:
        raise PkiError(f"server name {raw!r} must not carry a port")
    try:
        ascii_name = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise PkiError(f"server name {raw!r} is not a valid host name: {exc}") from exc
    labels = ascii_name.rstrip(".").split(".")
    for label in labels:
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise PkiError(f"server name {raw!r} is not a valid host name")
        if not all(ch.isalnum() or ch == "-" for ch in label):
            raise PkiError(f"server name {raw!r} is not a valid host name")
    return x509.DNSName(ascii_name.rstrip(".").lower())


def _gn_key(gn: x509.GeneralName) -> tuple[str, str]:
    if isinstance(gn, x509.IPAddress):
        return ("ip", str(gn.value))
    if isinstance(gn, x509.DNSName):
        return ("dns", gn.value.lower())
    return ("other", repr(gn))


def _cert_san_keys(cert: x509.Certificate) -> set[tuple[str, str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {_gn_key(gn) for gn in san}


def _make_server_cert(
    ca: x509.Certificate,
    ca_key: CaPrivateKey,
    names: list[x509.GeneralName],
    now: dt.datetime,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _new_rsa_key()
    first = names[0]
    cn = str(first.value)[:MAX_NAME_CHARS]
    not_after = min(now + dt.timedelta(days=SERVER_VALIDITY_DAYS), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # digitalSignature for (EC)DHE, keyEncipherment for TLS 1.2 RSA key exchange that older
        # Android releases still offer (RFC 5280 4.2.1.3; RFC 5246 7.4.2).
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # serverAuth for the listeners; clientAuth because the same certificate identifies this
        # server when it dials a federation partner (RFC 5280 4.2.1.12).
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        # Clients match the host against the SAN only; CN is ignored (RFC 6125 6.4.4, Apple).
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(_aki(ca), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _server_cert_ok(
    pki: ServerPki, ca: x509.Certificate, wanted: set[tuple[str, str]], now: dt.datetime
) -> bool:
    if not (pki.server_cert.exists() and pki.server_key.exists()):
        return False
    try:
        cert = load_server_cert(pki)
        key = _load_private_key(_read(pki.server_key, "server key"), "server key")
    except PkiError:
        return False
    if not _same_public_key(cert.public_key(), key.public_key()):
        return False
    if not _signed_by(cert, ca):
        return False  # the CA changed (import_ca): a certificate from the old CA is useless
    if cert.not_valid_after_utc - now < dt.timedelta(days=SERVER_RENEW_BEFORE_DAYS):
        return False
    return _cert_san_keys(cert) == wanted


def ensure_server_pki(
    data_dir: Path,
    *,
    public_host: str,
    extra_names: Sequence[str] = (),
    ca_name: str = "Liaison CA",
    now: dt.datetime | None = None,
) -> ServerPki:
    """Create the CA and the server certificate on first run; afterwards load what exists.

    The CA is never overwritten. The server certificate is re-issued (new key, same CA) when the
    configured names differ from its SANs, when it was not signed by the current CA, or when it
    has fewer than SERVER_RENEW_BEFORE_DAYS left. The CRL is written when missing or half-stale.
    """
    t = _now(now)
    pki = ServerPki.at(data_dir)
    wanted = _desired_names(public_host, extra_names)
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, _DIR_MODE)
    with exclusive_lock(pki.lock):
        if pki.ca_cert.exists():
            ca, ca_key = load_ca(pki)
        elif pki.ca_key.exists():
            # Never overwrite a key: a lone key means a half-finished import or a deleted cert.
            raise PkiError(f"{pki.ca_key} exists without {pki.ca_cert}; restore the certificate")
        else:
            ca, new_key = _make_ca(ca_name, t)
            atomic_write(pki.ca_key, _key_pem(new_key), mode=_KEY_FILE_MODE)
            atomic_write(pki.ca_cert, _cert_pem(ca))
            ca_key = new_key
        if not _server_cert_ok(pki, ca, {_gn_key(g) for g in wanted}, t):
            chain = [ca, *_load_chain_above(pki)]
            cert, key = _make_server_cert(ca, ca_key, wanted, t)
            atomic_write(pki.server_key, _key_pem(key), mode=_KEY_FILE_MODE)
            atomic_write(pki.server_cert, _cert_pem(cert, *chain))
        if _crl_needs_refresh(pki, ca, t):
            _write_crl_unlocked(pki, t)
    return pki


def _load_chain_above(pki: ServerPki) -> list[x509.Certificate]:
    if not pki.ca_chain.exists():
        return []
    return _load_pem_certs(_read(pki.ca_chain, "CA chain"), "CA chain")


def _crl_needs_refresh(pki: ServerPki, ca: x509.Certificate, now: dt.datetime) -> bool:
    if not (pki.crl.exists() and pki.crl_der.exists()):
        return True
    try:
        crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    except (ValueError, OSError):
        return True
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        return True
    nxt = crl.next_update_utc
    return nxt is None or nxt - now < dt.timedelta(days=CRL_VALIDITY_DAYS / 2)


def import_ca(
    data_dir: Path,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    chain_pem: bytes | None = None,
    *,
    key_password: bytes | None = None,
    replace: bool = False,
    now: dt.datetime | None = None,
) -> ServerPki:
    """Install an enterprise CA (or an intermediate of one) as the signing CA.

    ``ca_cert_pem`` is the signing CA (extra certificates after it are taken as its chain);
    ``chain_pem`` the certificates above it up to the root. Each must be a CA, unexpired, and
    sign the one below. The key must match. An existing CA is refused unless ``replace`` is set,
    in which case the old CA and server files are moved to ``pki/retired/<timestamp>/``. The
    server certificate is re-issued by the next ``ensure_server_pki``; the CRL is written now.
    The key is stored unencrypted, mode 0600, like our own CA key.
    """
    t = _now(now)
    certs = _load_pem_certs(ca_cert_pem, "CA certificate")
    if not certs:
        raise PkiError("CA certificate PEM holds no certificate")
    ca, above = certs[0], certs[1:]
    if chain_pem is not None:
        above.extend(_load_pem_certs(chain_pem, "CA chain"))
    key = _load_private_key(ca_key_pem, "CA key", key_password)
    if not _same_public_key(ca.public_key(), key.public_key()):
        raise PkiError("the CA key does not belong to the CA certificate")
    _check_is_ca(ca, "CA certificate", t)
    below = ca
    for i, issuer in enumerate(above):
        _check_is_ca(issuer, f"chain certificate {i}", t)
        if not _signed_by(below, issuer):
            raise PkiError(
                f"chain certificate {i} ({issuer.subject.rfc4514_string()}) did not sign "
                f"{below.subject.rfc4514_string()}"
            )
        below = issuer

    pki = ServerPki.at(data_dir)
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, _DIR_MODE)
    with exclusive_lock(pki.lock):
        if pki.ca_cert.exists() or pki.ca_key.exists():
            if not replace:
                raise PkiError(f"a CA already exists in {pki.directory}; pass replace=True")
            stamp = t.strftime("%Y%m%dT%H%M%SZ")
            dest = pki.retired_dir / stamp
            dest.mkdir(parents=True, exist_ok=True)
            os.chmod(pki.retired_dir, _DIR_MODE)
            for p in (pki.ca_cert, pki.ca_key, pki.ca_chain, pki.server_cert, pki.server_key):
                if p.exists():
                    shutil.move(str(p), dest / p.name)
        atomic_write(pki.ca_key, _key_pem(key), mode=_KEY_FILE_MODE)
        atomic_write(pki.ca_cert, _cert_pem(ca))
        if above:
            atomic_write(pki.ca_chain, _cert_pem(*above))
        elif pki.ca_chain.exists():
            pki.ca_chain.unlink()
        _write_crl_unlocked(pki, t)
    return pki


def _check_is_ca(cert: x509.Certificate, what: str, now: dt.datetime) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError(
            f"{what} has no basicConstraints; it is not a CA (RFC 5280 4.2.1.9)"
        ) from None
    if not bc.ca:
        raise PkiError(f"{what} has cA=FALSE; it is not a CA (RFC 5280 4.2.1.9)")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise PkiError(f"{what} lacks keyCertSign in keyUsage (RFC 5280 4.2.1.3)")
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise PkiError(
            f"{what} is not valid now (valid {cert.not_valid_before_utc} to "
            f"{cert.not_valid_after_utc})"
        )


# --- Client certificates --------------------------------------------------------------------


def _client_subject(common_name: str, org: str | None, ou: str | None) -> x509.Name:
    # The subject is built by the server, never copied from a CSR: a client must not choose its
    # own O/OU, because groups may be derived from them. Order O, OU, CN as TAK Server's
    # cert-metadata.sh SUBJBASE; /tls/config should advertise the same O and OU.
    attrs: list[x509.NameAttribute[str]] = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, _check_name_value(org, "O")))
    if ou:
        attrs.append(
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _check_name_value(ou, "OU"))
        )
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, _check_name_value(common_name, "CN")))
    return x509.Name(attrs)


def _client_key_usage(public_key: Any) -> x509.KeyUsage:
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key,  # as TAK Server's client profile; meaningless for EC
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_CLIENT_VALIDITY_DAYS:
        raise PkiError(f"validity must be 1..{MAX_CLIENT_VALIDITY_DAYS} days, not {days}")


def _check_client_public_key(public_key: Any) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_KEY_BITS:
            raise PkiError(f"RSA key of {public_key.key_size} bits; at least {MIN_RSA_KEY_BITS}")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise PkiError(f"EC curve {public_key.curve.name} is not accepted")
        return
    raise PkiError(f"key type {type(public_key).__name__} is not accepted (RSA or EC only)")


def _build_client_cert(
    pki: ServerPki,
    ca: x509.Certificate,
    ca_key: CaPrivateKey,
    *,
    subject: x509.Name,
    public_key: Any,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)
        # RFC 5280 4.1.2.2: positive, at most 20 octets; random_serial_number gives 159 bits.
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_client_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _record_issued(pki, cert, ca)
    return cert


def issue_client_cert(
    pki: ServerPki,
    *,
    common_name: str,
    org: str | None,
    ou: str | None = None,
    days: int = DEFAULT_CLIENT_VALIDITY_DAYS,
    key: rsa.RSAPrivateKey | None = None,
    now: dt.datetime | None = None,
) -> IssuedCert:
    """Issue a client certificate (clientAuth) for ``common_name``; generate an RSA key if none."""
    t = _now(now)
    _check_days(days)
    subject = _client_subject(common_name, org, ou)
    private_key = key if key is not None else _new_rsa_key()
    _check_client_public_key(private_key.public_key())
    with exclusive_lock(pki.lock):
        ca, ca_key = load_ca(pki)
        chain = tuple([ca, *_load_chain_above(pki)])
        cert = _build_client_cert(
            pki, ca, ca_key, subject=subject, public_key=private_key.public_key(), days=days, now=t
        )
    return IssuedCert(
        certificate=cert,
        private_key=private_key,
        chain=chain,
        serial=cert.serial_number,
        fingerprint_sha256=fingerprint_sha256(cert),
        cert_pem=_cert_pem(cert),
        key_pem=_key_pem(private_key),
        not_after=cert.not_valid_after_utc,
    )


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 CSR given as PEM, DER, or bare base64 (what ATAK posts to signClient)."""
    if len(data) > MAX_PKI_INPUT_BYTES:
        raise PkiError(f"CSR is larger than {MAX_PKI_INPUT_BYTES} bytes")
    try:
        # DER is binary: its last byte may be 0x0a or 0x20, so it must never be stripped.
        if data[:1] == b"\x30":  # DER SEQUENCE tag
            return x509.load_der_x509_csr(data)
        stripped = data.strip()
        if stripped.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(stripped)
        try:
            der = base64.b64decode(b"".join(stripped.split()), validate=True)
        except binascii.Error as exc:
            raise PkiError(f"CSR is neither PEM, DER nor base64: {exc}") from exc
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise PkiError(f"CSR cannot be parsed: {exc}") from exc


def validate_csr(csr_pem_or_der: bytes, *, expected_cn: str) -> x509.CertificateSigningRequest:
    """Every check ``sign_csr`` makes, without signing: lets the enrollment API refuse a bad
    request before it uses up a one-time token. PkiError says what is wrong."""
    csr = load_csr(csr_pem_or_der)
    if not csr.is_signature_valid:
        raise PkiError("CSR signature does not verify")
    cns = _all_attrs(csr.subject, NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise PkiError(f"CSR subject must have exactly one CN, has {len(cns)}")
    if cns[0] != expected_cn:
        raise PkiError(f"CSR CN {cns[0]!r} does not match the enrolling user {expected_cn!r}")
    _check_client_public_key(csr.public_key())
    return csr


def sign_csr(
    pki: ServerPki,
    csr_pem_or_der: bytes,
    *,
    expected_cn: str,
    org: str | None = None,
    ou: str | None = None,
    days: int = DEFAULT_CLIENT_VALIDITY_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign an enrollment CSR for the authenticated user ``expected_cn``.

    Refused (PkiError) when the CSR's self-signature does not verify (PKCS#10, RFC 2986 4.2: proof
    of possession of the key), when its subject has no CN or a CN other than ``expected_cn``, or
    when its key is weak. The issued subject is O=org, OU=ou, CN=expected_cn, built here.
    """
    t = _now(now)
    _check_days(days)
    csr = validate_csr(csr_pem_or_der, expected_cn=expected_cn)
    public_key = csr.public_key()
    subject = _client_subject(expected_cn, org, ou)
    with exclusive_lock(pki.lock):
        ca, ca_key = load_ca(pki)
        return _build_client_cert(
            pki, ca, ca_key, subject=subject, public_key=public_key, days=days, now=t
        )


# --- The index of issued certificates and revocation ---------------------------------------


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def _from_iso(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise PkiError(f"timestamp without timezone in the index: {s!r}")
    return t


def _read_index(pki: ServerPki) -> dict[str, Any]:
    if not pki.index.exists():
        return {"version": _INDEX_VERSION, "crl_number": 0, "certs": []}
    try:
        doc = json.loads(pki.index.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"certificate index {pki.index} is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != _INDEX_VERSION:
        raise PkiError(f"certificate index {pki.index} has an unknown format")
    return doc


def _write_index(pki: ServerPki, doc: dict[str, Any]) -> None:
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write(pki.index, data)


def _record_from_json(item: dict[str, Any]) -> IssuedRecord:
    try:
        revoked = item.get("revoked_at")
        return IssuedRecord(
            serial=int(item["serial"], 16),
            common_name=str(item["cn"]),
            fingerprint_sha256=str(item["fingerprint_sha256"]),
            issuer_sha256=str(item["issuer_sha256"]),
            not_before=_from_iso(item["not_before"]),
            not_after=_from_iso(item["not_after"]),
            revoked_at=_from_iso(revoked) if revoked else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PkiError(f"bad entry in the certificate index: {exc}") from exc


def _record_issued(pki: ServerPki, cert: x509.Certificate, ca: x509.Certificate) -> None:
    doc = _read_index(pki)
    cn = _first_attr(cert.subject, NameOID.COMMON_NAME) or ""
    # Serials are stored as hex strings: at 159 bits they overflow JSON numbers in most tools.
    doc["certs"].append(
        {
            "serial": format(cert.serial_number, "x"),
            "cn": cn,
            "fingerprint_sha256": fingerprint_sha256(cert),
            "issuer_sha256": fingerprint_sha256(ca),
            "not_before": _iso(cert.not_valid_before_utc),
            "not_after": _iso(cert.not_valid_after_utc),
            "revoked_at": None,
        }
    )
    pki.issued_dir.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    atomic_write(pki.issued_dir / f"{cert.serial_number:x}.pem", _cert_pem(cert))
    _write_index(pki, doc)


def list_issued(pki: ServerPki) -> list[IssuedRecord]:
    """Every client certificate issued, oldest first."""
    return [_record_from_json(item) for item in _read_index(pki)["certs"]]


def revoke(
    pki: ServerPki,
    *,
    serial: int | None = None,
    common_name: str | None = None,
    now: dt.datetime | None = None,
) -> list[int]:
    """Revoke one certificate by serial, or every live one issued to ``common_name``.

    Returns the serials newly revoked (revoking twice is not an error) and re-signs the CRL.
    A serial we never issued is a PkiError.
    """
    if (serial is None) == (common_name is None):
        raise ValueError("pass exactly one of serial or common_name")
    t = _now(now)
    newly: list[int] = []
    with exclusive_lock(pki.lock):
        doc = _read_index(pki)
        found = False
        for item in doc["certs"]:
            rec = _record_from_json(item)
            if (serial is not None and rec.serial == serial) or (
                common_name is not None and rec.common_name == common_name
            ):
                found = True
                if item.get("revoked_at") is None:
                    item["revoked_at"] = _iso(t)
                    newly.append(rec.serial)
        if serial is not None and not found:
            raise PkiError(f"no certificate with serial {serial:x} was issued here")
        if newly:
            _write_index(pki, doc)
        _write_crl_unlocked(pki, t)
    return newly


def revoked_serials(pki: ServerPki) -> frozenset[int]:
    return frozenset(r.serial for r in list_issued(pki) if r.revoked)


def is_revoked(pki: ServerPki, serial: int) -> bool:
    return serial in revoked_serials(pki)


class RevocationCache:
    """The revoked serials, re-read only when issued.json changes (for a check per handshake).

    The TLS handshake itself does not consult the CRL: Python's ssl module has no verify callback,
    and a CRL loaded into an SSLContext that later passes its nextUpdate would lock every client
    out. The transports call ``is_revoked(peer.serial)`` after the handshake instead.
    """

    __slots__ = ("_pki", "_revoked", "_stamp")

    def __init__(self, pki: ServerPki) -> None:
        self._pki = pki
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: frozenset[int] = frozenset()

    def is_revoked(self, serial: int) -> bool:
        try:
            st = self._pki.index.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            self._revoked = revoked_serials(self._pki) if stamp != (0, 0, 0) else frozenset()
            self._stamp = stamp
        return serial in self._revoked


def _write_crl_unlocked(pki: ServerPki, now: dt.datetime) -> Path:
    ca, ca_key = load_ca(pki)
    ca_fp = fingerprint_sha256(ca)
    doc = _read_index(pki)
    number = int(doc.get("crl_number", 0)) + 1
    doc["crl_number"] = number
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
        # RFC 5280 5.2.1 and 5.2.3: a conforming CRL carries the AKI and a monotonic CRL number.
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for item in doc["certs"]:
        rec = _record_from_json(item)
        # Only certificates of the current CA belong on its CRL (after import_ca the index still
        # lists certificates of the retired CA).
        if rec.revoked_at is not None and rec.issuer_sha256 == ca_fp:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(rec.serial)
                .revocation_date(rec.revoked_at)
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    atomic_write(pki.crl_der, crl.public_bytes(serialization.Encoding.DER))
    atomic_write(pki.crl, crl.public_bytes(serialization.Encoding.PEM))
    _write_index(pki, doc)
    return pki.crl


def refresh_crl(pki: ServerPki, *, now: dt.datetime | None = None) -> bool:
    """Re-sign the CRL when it is missing, invalid or past half its validity. True if re-signed.

    A long-running server calls this periodically, so partners never hold an expired CRL.
    """
    t = _now(now)
    ca = load_ca_cert(pki)
    if not _crl_needs_refresh(pki, ca, t):
        return False
    write_crl(pki, now=t)
    return True


def write_crl(pki: ServerPki, *, now: dt.datetime | None = None) -> Path:
    """Sign a fresh CRL of every revoked certificate of the current CA; returns the PEM path."""
    with exclusive_lock(pki.lock):
        return _write_crl_unlocked(pki, _now(now))


# --- TLS contexts and peer identity ---------------------------------------------------------


def server_ssl_context(pki: ServerPki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ server context presenting the server certificate and chain.

    With ``require_client_cert`` the handshake fails unless the client shows a certificate that
    chains to our CA (the only trust anchor: the system store is not loaded, so a certificate
    from any public CA is refused). Without it (the enrollment port) no certificate is requested.
    Revocation is checked after the handshake (see RevocationCache).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TAK Server's default for its inputs (XSD coreVersion2TlsVersions = TLSv1.2,TLSv1.3).
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load the server certificate/key: {exc}") from exc
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cadata=_cert_pem(*load_chain(pki)).decode("ascii"))
        except ssl.SSLError as exc:
            raise PkiError(f"cannot load the CA as trust anchor: {exc}") from exc
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_ssl_context(
    ca_cert_path: Path,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """TLS 1.2+ client context that trusts only ``ca_cert_path``, with an optional client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca_cert_path)
        if cert_path is not None:
            ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load client TLS material: {exc}") from exc
    return ctx


def peer_identity(der_cert: bytes, *, issuers: Sequence[x509.Certificate] = ()) -> PeerCert:
    """Read who a TLS peer is from its DER certificate (``SSLObject.getpeercert(True)``).

    ``issuers`` (normally ``load_chain(pki)``) lets us name the issuer's fingerprint: the first
    one whose signature verifies on the certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(der_cert)
    except ValueError as exc:
        raise PkiError(f"peer certificate cannot be parsed: {exc}") from exc
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        aki_hex = aki.key_identifier.hex() if aki.key_identifier is not None else None
    except x509.ExtensionNotFound:
        aki_hex = None
    issuer_fp = next(
        (
            fingerprint_sha256(i)
            for i in issuers
            if i.subject == cert.issuer and _signed_by(cert, i)
        ),
        None,
    )
    return PeerCert(
        common_name=_first_attr(cert.subject, NameOID.COMMON_NAME),
        org=_first_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        org_units=_all_attrs(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        fingerprint_sha256=fingerprint_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        authority_key_id=aki_hex,
        issuer_fingerprint_sha256=issuer_fp,
    )


# --- PKCS#12 --------------------------------------------------------------------------------


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
    cn = _first_attr(cert.subject, NameOID.COMMON_NAME)
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
    if not _same_public_key(cert.public_key(), key.public_key()):
        raise PkiError("the key does not belong to the certificate")
    cas = [ca_cert] if isinstance(ca_cert, x509.Certificate) else list(ca_cert)
    name = alias or _first_attr(cert.subject, NameOID.COMMON_NAME) or "client"
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


# --- Health checks for `liaison doctor` -----------------------------------------------------


def expiring(
    pki: ServerPki, within_days: int, now: dt.datetime | None = None
) -> list[tuple[str, dt.datetime]]:
    """Certificates (and the CRL) that expire within ``within_days``, soonest first.

    Covers the CA and its chain, the server certificate, the CRL's nextUpdate and every client
    certificate of the current CA that is not revoked. Already expired items are included.
    """
    t = _now(now)
    limit = t + dt.timedelta(days=within_days)
    out: list[tuple[str, dt.datetime]] = []
    chain = load_chain(pki)
    for i, c in enumerate(chain):
        label = "CA" if i == 0 else f"CA chain {i}"
        out.append((f"{label} {c.subject.rfc4514_string()}", c.not_valid_after_utc))
    if pki.server_cert.exists():
        s = load_server_cert(pki)
        out.append((f"server certificate {s.subject.rfc4514_string()}", s.not_valid_after_utc))
    if pki.crl.exists():
        try:
            crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
        except ValueError as exc:
            raise PkiError(f"CRL {pki.crl} cannot be parsed: {exc}") from exc
        if crl.next_update_utc is not None:
            out.append(("CRL next update", crl.next_update_utc))
    ca_fp = fingerprint_sha256(chain[0])
    for rec in list_issued(pki):
        if not rec.revoked and rec.issuer_sha256 == ca_fp:
            out.append((f"client {rec.common_name} serial {rec.serial:x}", rec.not_after))
    return sorted((item for item in out if item[1] <= limit), key=lambda item: item[1])


def check_names(pki: ServerPki, public_host: str, now: dt.datetime | None = None) -> list[str]:
    """Problems that stop clients from connecting to ``public_host``; empty when all is well."""
    t = _now(now)
    problems: list[str] = []
    try:
        gn = _general_name(public_host)
    except PkiError as exc:
        return [str(exc)]
    if isinstance(gn, x509.IPAddress):
        ip = gn.value
        if ip.is_loopback or ip.is_unspecified:
            problems.append(
                f"public_host {public_host} is a loopback/unspecified address; "
                "devices on other machines cannot reach it"
            )
        elif ip.is_link_local:
            problems.append(f"public_host {public_host} is link-local; it changes between networks")
        elif ip in _DOCKER_BRIDGE:
            problems.append(
                f"public_host {public_host} looks like a Docker-internal address; "
                "use the host's address (FreeTakServer issue #188)"
            )
    elif gn.value == "localhost" or gn.value.endswith(".localhost"):
        problems.append(f"public_host {public_host} only resolves on this machine")
    elif "." not in gn.value:
        problems.append(
            f"public_host {public_host} is a single-label name; phones rarely resolve those"
        )
    try:
        ca = load_ca_cert(pki)
        server = load_server_cert(pki)
    except PkiError as exc:
        problems.append(str(exc))
        return problems
    if _gn_key(gn) not in _cert_san_keys(server):
        problems.append(
            f"the server certificate does not name {public_host} in its subjectAltName; "
            "restart the server to re-issue it"
        )
    if not _signed_by(server, ca):
        problems.append("the server certificate was not signed by the current CA")
    if server.not_valid_after_utc < t:
        problems.append(f"the server certificate expired on {server.not_valid_after_utc}")
    if ca.not_valid_after_utc < t:
        problems.append(f"the CA certificate expired on {ca.not_valid_after_utc}")
    return problems
