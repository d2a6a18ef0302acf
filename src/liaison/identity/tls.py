"""TLS contexts for the listeners and the partner links, and who a TLS peer is (``PeerCert``)."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from liaison.errors import PkiError
from liaison.identity.certs import (
    ServerPki,
    all_attrs,
    cert_pem,
    fingerprint_sha256,
    first_attr,
    load_chain,
    signed_by,
)


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


def server_ssl_context(pki: ServerPki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ server context presenting the server certificate and chain (the ECDSA one to
    clients that accept it, the RSA one to the others).

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
        # A second certificate of another key type: OpenSSL keeps one per type and presents
        # the ECDSA one to clients whose signature_algorithms accept it (RFC 8446 4.4.2.2),
        # the RSA one to the others. ensure_server_pki makes both.
        if pki.server_ec_cert.exists():
            ctx.load_cert_chain(pki.server_ec_cert, pki.server_ec_key)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load the server certificate/key: {exc}") from exc
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cadata=cert_pem(*load_chain(pki)).decode("ascii"))
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
        (fingerprint_sha256(i) for i in issuers if i.subject == cert.issuer and signed_by(cert, i)),
        None,
    )
    return PeerCert(
        common_name=first_attr(cert.subject, NameOID.COMMON_NAME),
        org=first_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        org_units=all_attrs(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        fingerprint_sha256=fingerprint_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        authority_key_id=aki_hex,
        issuer_fingerprint_sha256=issuer_fp,
    )
