"""The certificate authority and the server's own certificate: creating the PKI folder on first
run, importing an enterprise CA, and the health checks of ``liaison doctor``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.errors import PkiError
from liaison.identity.certs import (
    CLOCK_SKEW_ALLOWANCE,
    MAX_NAME_CHARS,
    CaPrivateKey,
    ServerPki,
    aki,
    cert_pem,
    check_name_value,
    fingerprint_sha256,
    key_pem,
    load_ca,
    load_ca_cert,
    load_chain,
    load_pem_certs,
    load_private_key,
    load_server_cert,
    new_ec_key,
    new_rsa_key,
    same_public_key,
    signed_by,
    ski,
    utc_now,
)
from liaison.identity.files import DIR_MODE, KEY_FILE_MODE, atomic_write, exclusive_lock, read_file
from liaison.identity.issue import list_issued
from liaison.identity.revocation import (
    copy_shared_crl,
    crl_needs_refresh,
    current_crl,
    write_crl_unlocked,
)

if TYPE_CHECKING:
    from liaison.identity.shared_db import IdentityDb

# CA lifetime: ten years, as TAK Server's makeRootCa.sh (`-days 3652`). Replacing a CA means
# re-enrolling every device, so it should outlive the hardware it is installed on.
CA_VALIDITY_DAYS = 3652

# Server certificate lifetime: two years, as TAK Server's makeCert.sh (`-days 730`). Apple devices
# (iTAK) refuse TLS server certificates valid for more than 825 days (Apple support HT210176).
SERVER_VALIDITY_DAYS = 730

# Re-issue the server certificate at startup once it has fewer than this many days left, so a
# server that restarts at least monthly never presents an expired certificate.
SERVER_RENEW_BEFORE_DAYS = 30

# The Docker default bridge network; a public_host there is the FreeTAKServer issue #188 mistake
# (connection packages carrying the container's internal address).
_DOCKER_BRIDGE = ipaddress.ip_network("172.17.0.0/16")


def _make_ca(ca_name: str, now: dt.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    check_name_value(ca_name, "CA name")
    key = new_rsa_key()
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
        .add_extension(ski(key.public_key()), critical=False)
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
    key: CaPrivateKey,
) -> x509.Certificate:
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
        # Android releases still offer (RFC 5280 4.2.1.3; RFC 5246 7.4.2); an ECDSA key only
        # signs (RFC 5480 section 3).
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
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
        .add_extension(ski(key.public_key()), critical=False)
        .add_extension(aki(ca), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert


def _server_cert_ok(
    pki: ServerPki,
    ca: x509.Certificate,
    wanted: set[tuple[str, str]],
    now: dt.datetime,
    files: tuple[Path, Path, Callable[[], CaPrivateKey]],
) -> bool:
    cert_path, key_path, new_key = files
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = load_server_cert(pki, cert_path)
        key = load_private_key(read_file(key_path, "server key"), "server key")
    except PkiError:
        return False
    if not same_public_key(cert.public_key(), key.public_key()):
        return False
    if isinstance(key, rsa.RSAPrivateKey) != (new_key is new_rsa_key):
        return False  # an RSA key where the ECDSA one belongs, or the other way round
    if not signed_by(cert, ca):
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
    db: IdentityDb | None = None,
) -> ServerPki:
    """Create the CA and the server certificate on first run; afterwards load what exists.

    With ``db`` (PostgreSQL storage) the issued-certificate index and the CRL are the database's,
    shared by every node; the CA itself is still this folder's (give every node the same one).

    The CA is never overwritten. The server certificate is re-issued (new key, same CA) when the
    configured names differ from its SANs, when it was not signed by the current CA, or when it
    has fewer than SERVER_RENEW_BEFORE_DAYS left. The CRL is written when missing or half-stale.
    There are two server certificates with the same names: RSA-2048 (``server.pem``, TAK
    Server's kind, for every client) and ECDSA P-256 (``server-ec.pem``, chosen by OpenSSL for
    clients that accept ECDSA signatures); each is checked and re-issued on its own.
    """
    t = utc_now(now)
    pki = ServerPki.at(data_dir, db)
    wanted = _desired_names(public_host, extra_names)
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, DIR_MODE)
    with exclusive_lock(pki.lock):
        if pki.ca_cert.exists():
            ca, ca_key = load_ca(pki)
        elif pki.ca_key.exists():
            # Never overwrite a key: a lone key means a half-finished import or a deleted cert.
            raise PkiError(f"{pki.ca_key} exists without {pki.ca_cert}; restore the certificate")
        else:
            ca, new_key = _make_ca(ca_name, t)
            atomic_write(pki.ca_key, key_pem(new_key), mode=KEY_FILE_MODE)
            atomic_write(pki.ca_cert, cert_pem(ca))
            ca_key = new_key
        server_files: list[tuple[Path, Path, Callable[[], CaPrivateKey]]] = [
            (pki.server_cert, pki.server_key, new_rsa_key),
            (pki.server_ec_cert, pki.server_ec_key, new_ec_key),
        ]
        for files in server_files:
            if not _server_cert_ok(pki, ca, {_gn_key(g) for g in wanted}, t, files):
                cert_path, key_path, make_key = files
                chain = [ca, *load_chain_above(pki)]
                server_key = make_key()
                cert = _make_server_cert(ca, ca_key, wanted, t, server_key)
                atomic_write(key_path, key_pem(server_key), mode=KEY_FILE_MODE)
                atomic_write(cert_path, cert_pem(cert, *chain))
        if crl_needs_refresh(pki, ca, t):
            write_crl_unlocked(pki, t)
        elif pki.db is not None:
            copy_shared_crl(pki)
    return pki


def load_chain_above(pki: ServerPki) -> list[x509.Certificate]:
    if not pki.ca_chain.exists():
        return []
    return load_pem_certs(read_file(pki.ca_chain, "CA chain"), "CA chain")


def import_ca(
    data_dir: Path,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    chain_pem: bytes | None = None,
    *,
    key_password: bytes | None = None,
    replace: bool = False,
    now: dt.datetime | None = None,
    db: IdentityDb | None = None,
) -> ServerPki:
    """Install an enterprise CA (or an intermediate of one) as the signing CA.

    ``ca_cert_pem`` is the signing CA (extra certificates after it are taken as its chain);
    ``chain_pem`` the certificates above it up to the root. Each must be a CA, unexpired, and
    sign the one below. The key must match. An existing CA is refused unless ``replace`` is set,
    in which case the old CA and server files are moved to ``pki/retired/<timestamp>/``. The
    server certificate is re-issued by the next ``ensure_server_pki``; the CRL is written now.
    The key is stored unencrypted, mode 0600, like our own CA key.
    """
    t = utc_now(now)
    certs = load_pem_certs(ca_cert_pem, "CA certificate")
    if not certs:
        raise PkiError("CA certificate PEM holds no certificate")
    ca, above = certs[0], certs[1:]
    if chain_pem is not None:
        above.extend(load_pem_certs(chain_pem, "CA chain"))
    key = load_private_key(ca_key_pem, "CA key", key_password)
    if not same_public_key(ca.public_key(), key.public_key()):
        raise PkiError("the CA key does not belong to the CA certificate")
    _check_is_ca(ca, "CA certificate", t)
    below = ca
    for i, issuer in enumerate(above):
        _check_is_ca(issuer, f"chain certificate {i}", t)
        if not signed_by(below, issuer):
            raise PkiError(
                f"chain certificate {i} ({issuer.subject.rfc4514_string()}) did not sign "
                f"{below.subject.rfc4514_string()}"
            )
        below = issuer

    pki = ServerPki.at(data_dir, db)
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, DIR_MODE)
    with exclusive_lock(pki.lock):
        if pki.ca_cert.exists() or pki.ca_key.exists():
            if not replace:
                raise PkiError(f"a CA already exists in {pki.directory}; pass replace=True")
            stamp = t.strftime("%Y%m%dT%H%M%SZ")
            dest = pki.retired_dir / stamp
            dest.mkdir(parents=True, exist_ok=True)
            os.chmod(pki.retired_dir, DIR_MODE)
            for p in (
                pki.ca_cert,
                pki.ca_key,
                pki.ca_chain,
                pki.server_cert,
                pki.server_key,
                pki.server_ec_cert,
                pki.server_ec_key,
            ):
                if p.exists():
                    shutil.move(str(p), dest / p.name)
        atomic_write(pki.ca_key, key_pem(key), mode=KEY_FILE_MODE)
        atomic_write(pki.ca_cert, cert_pem(ca))
        if above:
            atomic_write(pki.ca_chain, cert_pem(*above))
        elif pki.ca_chain.exists():
            pki.ca_chain.unlink()
        write_crl_unlocked(pki, t)
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


def expiring(
    pki: ServerPki, within_days: int, now: dt.datetime | None = None
) -> list[tuple[str, dt.datetime]]:
    """Certificates (and the CRL) that expire within ``within_days``, soonest first.

    Covers the CA and its chain, the server certificate, the CRL's nextUpdate and every client
    certificate of the current CA that is not revoked. Already expired items are included.
    """
    t = utc_now(now)
    limit = t + dt.timedelta(days=within_days)
    out: list[tuple[str, dt.datetime]] = []
    chain = load_chain(pki)
    for i, c in enumerate(chain):
        label = "CA" if i == 0 else f"CA chain {i}"
        out.append((f"{label} {c.subject.rfc4514_string()}", c.not_valid_after_utc))
    if pki.server_cert.exists():
        s = load_server_cert(pki)
        out.append((f"server certificate {s.subject.rfc4514_string()}", s.not_valid_after_utc))
    if pki.server_ec_cert.exists():
        s = load_server_cert(pki, pki.server_ec_cert)
        out.append(
            (f"server ECDSA certificate {s.subject.rfc4514_string()}", s.not_valid_after_utc)
        )
    crl_pem = current_crl(pki)
    if crl_pem is not None:
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
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
    t = utc_now(now)
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
    if not signed_by(server, ca):
        problems.append("the server certificate was not signed by the current CA")
    if server.not_valid_after_utc < t:
        problems.append(f"the server certificate expired on {server.not_valid_after_utc}")
    if ca.not_valid_after_utc < t:
        problems.append(f"the CA certificate expired on {ca.not_valid_after_utc}")
    return problems
