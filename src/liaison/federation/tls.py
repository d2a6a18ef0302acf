"""TLS for partner links: the dial and accept contexts, and pinning a peer's certificate.

Wire-agnostic: the native wire and any later one (TAK federation v2 runs over TLS too) use the
same contexts and the same check, a configured CA *and* a configured SHA-256 fingerprint.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from liaison.errors import PkiError
from liaison.federation.config import PeerConfig
from liaison.identity.tls import client_ssl_context, peer_identity


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _load_ca(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read the peer CA {path}: {exc}") from exc


def dial_context(peer: PeerConfig, cert: Path, key: Path) -> ssl.SSLContext:
    """Client context: our server certificate, trusting only this peer's CA.

    Host names are not checked: the peer is pinned by its certificate's fingerprint, which is
    stronger, and partners are often dialled by address.
    """
    return client_ssl_context(peer.ca_file, cert, key, check_hostname=False)


def accept_context(peers: Sequence[PeerConfig], cert: Path, key: Path) -> ssl.SSLContext:
    """Server context for the federation listener: trusts the CAs of the peers that dial us."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        for p in peers:
            ctx.load_verify_locations(cafile=p.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot set up the federation listener's TLS: {exc}") from exc
    return ctx


def verify_peer_certificate(peer: PeerConfig, der: bytes | None) -> str | None:
    """Why this certificate is not the peer's (None when it is): fingerprint AND its CA."""
    if der is None:
        return "no client certificate"
    fp = certificate_sha256(der)
    if fp != peer.fingerprint:
        return f"certificate fingerprint {fp} is not the configured {peer.fingerprint}"
    try:
        ident = peer_identity(der, issuers=_load_ca(peer.ca_file))
    except PkiError as exc:
        return str(exc)
    if ident.issuer_fingerprint_sha256 is None:
        return f"certificate is not issued by the CA configured for {peer.name}"
    return None
