"""Issuing client certificates (generated keys or a device's CSR) and the index of what was
issued (``pki/issued.json``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.errors import PkiError
from liaison.identity.certs import (
    CLOCK_SKEW_ALLOWANCE,
    MAX_PKI_INPUT_BYTES,
    MIN_RSA_KEY_BITS,
    CaPrivateKey,
    ServerPki,
    aki,
    all_attrs,
    cert_pem,
    check_name_value,
    fingerprint_sha256,
    first_attr,
    key_pem,
    load_ca,
    load_chain_above,
    new_rsa_key,
    ski,
    utc_now,
)
from liaison.identity.files import DIR_MODE, atomic_write, exclusive_lock

# Default client certificate lifetime: one year. Shorter than TAK Server's 730 days because a lost
# device keeps working until its certificate expires or is revoked, and re-enrolment is cheap.
DEFAULT_CLIENT_VALIDITY_DAYS = 365

# Longest client certificate we will issue on request (the CA's own lifetime bounds it as well).
MAX_CLIENT_VALIDITY_DAYS = 825

_INDEX_VERSION = 1


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


def _client_subject(common_name: str, org: str | None, ou: str | None) -> x509.Name:
    # The subject is built by the server, never copied from a CSR: a client must not choose its
    # own O/OU, because groups may be derived from them. Order O, OU, CN as TAK Server's
    # cert-metadata.sh SUBJBASE; /tls/config should advertise the same O and OU.
    attrs: list[x509.NameAttribute[str]] = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, check_name_value(org, "O")))
    if ou:
        attrs.append(
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, check_name_value(ou, "OU"))
        )
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, check_name_value(common_name, "CN")))
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
        .add_extension(ski(public_key), critical=False)
        .add_extension(aki(ca), critical=False)
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
    t = utc_now(now)
    _check_days(days)
    subject = _client_subject(common_name, org, ou)
    private_key = key if key is not None else new_rsa_key()
    _check_client_public_key(private_key.public_key())
    with exclusive_lock(pki.lock):
        ca, ca_key = load_ca(pki)
        chain = tuple([ca, *load_chain_above(pki)])
        cert = _build_client_cert(
            pki, ca, ca_key, subject=subject, public_key=private_key.public_key(), days=days, now=t
        )
    return IssuedCert(
        certificate=cert,
        private_key=private_key,
        chain=chain,
        serial=cert.serial_number,
        fingerprint_sha256=fingerprint_sha256(cert),
        cert_pem=cert_pem(cert),
        key_pem=key_pem(private_key),
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
    cns = all_attrs(csr.subject, NameOID.COMMON_NAME)
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
    t = utc_now(now)
    _check_days(days)
    csr = validate_csr(csr_pem_or_der, expected_cn=expected_cn)
    public_key = csr.public_key()
    subject = _client_subject(expected_cn, org, ou)
    with exclusive_lock(pki.lock):
        ca, ca_key = load_ca(pki)
        return _build_client_cert(
            pki, ca, ca_key, subject=subject, public_key=public_key, days=days, now=t
        )


def iso_utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def _from_iso(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise PkiError(f"timestamp without timezone in the index: {s!r}")
    return t


def read_index(pki: ServerPki) -> dict[str, Any]:
    if pki.db is not None:  # the shared index in PostgreSQL, as of the copy in memory
        return {
            "version": _INDEX_VERSION,
            "crl_number": pki.db.crl()[0],
            "certs": pki.db.cert_items(),
        }
    if not pki.index.exists():
        return {"version": _INDEX_VERSION, "crl_number": 0, "certs": []}
    try:
        doc = json.loads(pki.index.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"certificate index {pki.index} is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != _INDEX_VERSION:
        raise PkiError(f"certificate index {pki.index} has an unknown format")
    return doc


def write_index(pki: ServerPki, doc: dict[str, Any]) -> None:
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write(pki.index, data)


def record_from_json(item: dict[str, Any]) -> IssuedRecord:
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
    cn = first_attr(cert.subject, NameOID.COMMON_NAME) or ""
    # Serials are stored as hex strings: at 159 bits they overflow JSON numbers in most tools.
    item = {
        "serial": format(cert.serial_number, "x"),
        "cn": cn,
        "fingerprint_sha256": fingerprint_sha256(cert),
        "issuer_sha256": fingerprint_sha256(ca),
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "revoked_at": None,
    }
    pki.issued_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    atomic_write(pki.issued_dir / f"{cert.serial_number:x}.pem", cert_pem(cert))
    if pki.db is not None:
        pki.db.change_index(lambda _number, _items: ([item], None))
        return
    doc = read_index(pki)
    doc["certs"].append(item)
    write_index(pki, doc)


def list_issued(pki: ServerPki) -> list[IssuedRecord]:
    """Every client certificate issued, oldest first."""
    return [record_from_json(item) for item in read_index(pki)["certs"]]
