"""Revoking client certificates: the index's revoked flags, the signed CRL, the per-handshake
cache, and the events that tell live sessions a certificate or an account was revoked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from liaison.errors import PkiError
from liaison.identity.certs import (
    CaPrivateKey,
    ServerPki,
    aki,
    fingerprint_sha256,
    load_ca,
    load_ca_cert,
    utc_now,
)
from liaison.identity.files import atomic_write, exclusive_lock
from liaison.identity.issue import (
    IssuedRecord,
    iso_utc,
    list_issued,
    read_index,
    record_from_json,
    write_index,
)

# The CRL's nextUpdate (RFC 5280 5.1.2.5). Consumers of the CRL file (a partner's TAK Server, a
# reverse proxy) reject an expired CRL, so it is re-signed on every revocation and whenever
# ensure_server_pki finds it past half of this period.
CRL_VALIDITY_DAYS = 30


def current_crl(pki: ServerPki, *, der: bool = False) -> bytes | None:
    """The CRL every relying party should get: with PostgreSQL the newest any node signed (the
    database's), else this node's file; None when there is none yet."""
    if pki.db is not None:
        _, pem, der_bytes = pki.db.crl()
        return der_bytes if der else pem
    path = pki.crl_der if der else pki.crl
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def crl_needs_refresh(pki: ServerPki, ca: x509.Certificate, now: dt.datetime) -> bool:
    if pki.db is None and not (pki.crl.exists() and pki.crl_der.exists()):
        return True
    try:
        pem = current_crl(pki)
        if pem is None:
            return True
        crl = x509.load_pem_x509_crl(pem)
    except (ValueError, OSError):
        return True
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        return True
    # With PostgreSQL every revocation of this CA must be on it: a CRL imported beside an index
    # (identity/db_import.py) may be older than a revocation, and is then signed again. (The
    # files are written together under one lock: no such check, and no read of the index.)
    if pki.db is not None:
        on_crl = {entry.serial_number for entry in crl}
        ca_fp = fingerprint_sha256(ca)
        for rec in list_issued(pki):
            if rec.revoked and rec.issuer_sha256 == ca_fp and rec.serial not in on_crl:
                return True
    nxt = crl.next_update_utc
    return nxt is None or nxt - now < dt.timedelta(days=CRL_VALIDITY_DAYS / 2)


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
    t = utc_now(now)
    if pki.db is not None:
        return _revoke_shared(pki, serial, common_name, t)
    with exclusive_lock(pki.lock):
        doc = read_index(pki)
        newly = [rec.serial for rec, _ in _mark_revoked(doc["certs"], serial, common_name, t)]
        if newly:
            write_index(pki, doc)
        write_crl_unlocked(pki, t)
    return newly


def _mark_revoked(
    items: list[dict[str, Any]], serial: int | None, common_name: str | None, t: dt.datetime
) -> list[tuple[IssuedRecord, dict[str, Any]]]:
    """Mark revoked at ``t`` the index items of ``serial`` or of ``common_name`` not revoked yet
    (in place); returns each newly revoked one as (its record, its item). A serial never issued
    here is a PkiError (revoking twice is not an error)."""
    marked: list[tuple[IssuedRecord, dict[str, Any]]] = []
    found = False
    for item in items:
        rec = record_from_json(item)
        if (serial is not None and rec.serial == serial) or (
            common_name is not None and rec.common_name == common_name
        ):
            found = True
            if item.get("revoked_at") is None:
                item["revoked_at"] = iso_utc(t)
                marked.append((rec, item))
    if serial is not None and not found:
        raise PkiError(f"no certificate with serial {serial:x} was issued here")
    return marked


def _revoke_shared(
    pki: ServerPki, serial: int | None, common_name: str | None, t: dt.datetime
) -> list[int]:
    """``revoke`` on the index in PostgreSQL: the revocation and the CRL signed after it in one
    transaction under the cluster-wide identity lock (identity/shared_db.py)."""
    assert pki.db is not None
    ca, ca_key = load_ca(pki)

    def step(number: int, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
        marked = _mark_revoked(items, serial, common_name, t)
        changed = [item for _, item in marked]
        newly = [rec.serial for rec, _ in marked]
        return [*changed, _crl_item(ca, ca_key, number + 1, items, t)], newly

    newly: list[int] = pki.db.change_index(step)
    copy_shared_crl(pki)
    return newly


def _crl_item(
    ca: x509.Certificate,
    ca_key: CaPrivateKey,
    number: int,
    items: list[dict[str, Any]],
    now: dt.datetime,
) -> dict[str, Any]:
    crl = _sign_crl(ca, ca_key, number, items, now)
    return {
        "crl": {
            "number": number,
            "pem": crl.public_bytes(serialization.Encoding.PEM),
            "der": crl.public_bytes(serialization.Encoding.DER),
        }
    }


def copy_shared_crl(pki: ServerPki) -> None:
    """This node's crl.pem and crl.der, copied from the database's CRL (for tools that read
    the files; every node serves the database's)."""
    assert pki.db is not None
    _, pem, der = pki.db.crl()
    if pem is not None and der is not None:
        atomic_write(pki.crl_der, der)
        atomic_write(pki.crl, pem)


def revoked_serials(pki: ServerPki) -> frozenset[int]:
    return frozenset(r.serial for r in list_issued(pki) if r.revoked)


def is_revoked(pki: ServerPki, serial: int) -> bool:
    return serial in revoked_serials(pki)


# Most revocations another node may announce that one node keeps (users and certificates each);
# past it a notice is refused and counted (cluster/access.py), never a silent drop.
MAX_SHARED_REVOCATIONS = 1_000_000


class SharedRevocations:
    """Users and certificates revoked on other nodes of a cluster, as their notices arrived over
    the bus (``cluster/access.py``, replayed from its stream at start).

    Held in memory beside this node's own files, which it never writes: ``Identities`` and the
    users file's lookups (``UserDirectory.get``) count a name or serial here as revoked, exactly
    as one revoked in this node's files. ``version`` changes with every addition, so the session
    sweep looks at live principals again."""

    __slots__ = ("names", "serials", "version")

    def __init__(self) -> None:
        # Only added to, on the event loop; read from worker threads too (a password check).
        self.names: set[str] = set()
        self.serials: set[int] = set()
        self.version = 0

    def add_name(self, name: str) -> bool:
        """Count user ``name`` as revoked; False when it already was. OverflowError when full."""
        if name in self.names:
            return False
        if len(self.names) >= MAX_SHARED_REVOCATIONS:
            raise OverflowError(f"more than {MAX_SHARED_REVOCATIONS} revoked users")
        self.names.add(name)
        self.version += 1
        return True

    def add_serial(self, serial: int) -> bool:
        """Count certificate ``serial`` as revoked; False when it already was."""
        if serial in self.serials:
            return False
        if len(self.serials) >= MAX_SHARED_REVOCATIONS:
            raise OverflowError(f"more than {MAX_SHARED_REVOCATIONS} revoked certificates")
        self.serials.add(serial)
        self.version += 1
        return True


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
        return serial in self.revoked()

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        """(mtime_ns, size, inode) of issued.json as last read: changes with every revocation."""
        self.revoked()
        return self._stamp

    def revoked(self) -> frozenset[int]:
        """The revoked serials as of now: one ``stat`` of issued.json, re-read if it changed
        (with PostgreSQL: the database's copy in memory, re-read when it changed)."""
        if self._pki.db is not None:
            seq = (self._pki.db.certs_seq, 0, 0)
            if seq != self._stamp:
                self._revoked = revoked_serials(self._pki)
                self._stamp = seq
            return self._revoked
        try:
            st = self._pki.index.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            self._revoked = revoked_serials(self._pki) if stamp != (0, 0, 0) else frozenset()
            self._stamp = stamp
        return self._revoked


def write_crl_unlocked(pki: ServerPki, now: dt.datetime) -> Path:
    ca, ca_key = load_ca(pki)
    if pki.db is not None:
        pki.db.change_index(
            lambda number, items: ([_crl_item(ca, ca_key, number + 1, items, now)], None)
        )
        copy_shared_crl(pki)
        return pki.crl
    doc = read_index(pki)
    number = int(doc.get("crl_number", 0)) + 1
    doc["crl_number"] = number
    crl = _sign_crl(ca, ca_key, number, doc["certs"], now)
    atomic_write(pki.crl_der, crl.public_bytes(serialization.Encoding.DER))
    atomic_write(pki.crl, crl.public_bytes(serialization.Encoding.PEM))
    write_index(pki, doc)
    return pki.crl


def _sign_crl(
    ca: x509.Certificate,
    ca_key: CaPrivateKey,
    number: int,
    items: list[dict[str, Any]],
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    ca_fp = fingerprint_sha256(ca)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
        # RFC 5280 5.2.1 and 5.2.3: a conforming CRL carries the AKI and a monotonic CRL number.
        .add_extension(aki(ca), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for item in items:
        rec = record_from_json(item)
        # Only certificates of the current CA belong on its CRL (after import_ca the index still
        # lists certificates of the retired CA).
        if rec.revoked_at is not None and rec.issuer_sha256 == ca_fp:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(rec.serial)
                .revocation_date(rec.revoked_at)
                .build()
            )
    return builder.sign(ca_key, hashes.SHA256())


def refresh_crl(pki: ServerPki, *, now: dt.datetime | None = None) -> bool:
    """Re-sign the CRL when it is missing, invalid or past half its validity. True if re-signed.

    A long-running server calls this periodically, so partners never hold an expired CRL.
    """
    t = utc_now(now)
    ca = load_ca_cert(pki)
    if not crl_needs_refresh(pki, ca, t):
        return False
    write_crl(pki, now=t)
    return True


def write_crl(pki: ServerPki, *, now: dt.datetime | None = None) -> Path:
    """Sign a fresh CRL of every revoked certificate of the current CA; returns the PEM path."""
    with exclusive_lock(pki.lock):
        return write_crl_unlocked(pki, utc_now(now))
