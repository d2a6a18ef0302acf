"""The release gate's configuration and bookkeeping: who holds which authorizations, the ingest
rules, and the audit records that every release across an organisation boundary leaves.

The access decision itself is ``model.access.can_see``, called by the router and nowhere else.
This module prepares what that decision needs (a Principal's ``auths`` and ``org``, an event's
authoritative label) and writes what it decided to the audit log. It is built from the ``[policy]``,
``[authz]`` and ``[gate]`` tables of the label policy file (docs/labels.md):

    [gate.listeners.tls]                  # one table per listener: tls, tcp, udp, mesh, https,
    ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }   # enroll, http
    default_classification = "UNCLASSIFIED"   # unlabelled events get this, REL = sender's org
    [gate.listeners.tcp]
    ceiling = { classification = "UNCLASSIFIED", REL = "*" }
    profile = "usa-unclass"               # what an anonymous client of this listener holds
    org = "USA"                           # and which organisation it belongs to
    [gate]
    release_authorities = { USA = ["alice"], UKR = ["olena"] }
    partner_updates = false               # may another org change an item it can see?

A listener without a table has no ceiling (sees and asserts nothing labelled): fail closed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from liaison.audit import release_record
from liaison.errors import ConfigError, StorageError
from liaison.identity.listeners import GATED, Listener
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.labels import AuthSet, Label, LabelError, Policy
from liaison.model.policy import (
    AuthConfig,
    authset_from_table,
    load_auth_config,
    load_policy,
    resolve_principal,
)
from liaison.model.principal import Principal
from liaison.protocol import cot_xml

log = logging.getLogger(__name__)

# Labels whose root marking and <__seclabel> element the gate keeps (Gate.labelled): a unit's
# updates keep one label, so each report reuses them. Past this many the table starts again.
MAX_LABEL_MARKINGS = 4096


class AuditSink(Protocol):
    """Where gate records go (``audit.AuditLog``); raises StorageError when it cannot write."""

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> object: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerGate:
    ceiling: AuthSet
    default_classification: str | None = None
    profile: str | None = None  # for anonymous clients of the listener
    org: str | None = None  # for anonymous clients of the listener


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConfig:
    policy: Policy
    authz: AuthConfig | None
    listeners: Mapping[str, ListenerGate]
    release_authorities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # May a principal of another organisation than an item's originator update or delete it
    # (when it may see it)? Default no: only the originating organisation changes its items.
    partner_updates: bool = False


def load_gate_config(text: str) -> GateConfig:
    """Parse the label policy file (``[policy]``, optional ``[authz]``, ``[gate]``)."""
    policy = load_policy(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # load_policy already parsed it; kept for types
        raise ConfigError("gate", f"not valid TOML: {exc}") from exc
    authz = load_auth_config(text, policy) if "authz" in doc else None
    raw = doc.get("gate", {})
    if not isinstance(raw, dict):
        raise ConfigError("gate", "must be a table")
    extra = set(raw) - {"listeners", "release_authorities", "partner_updates"}
    if extra:
        raise ConfigError(f"gate.{sorted(extra)[0]}", "unknown key")
    listeners: dict[str, ListenerGate] = {}
    raw_listeners = raw.get("listeners", {})
    if not isinstance(raw_listeners, dict):
        raise ConfigError("gate.listeners", "must be a table")
    profiles = authz.profiles if authz is not None else {}
    for name, table in raw_listeners.items():
        key = f"gate.listeners.{name}"
        if Listener.parse(name) not in GATED:
            raise ConfigError(key, f"unknown listener (one of {', '.join(GATED)})")
        if not isinstance(table, dict):
            raise ConfigError(key, "must be a table")
        extra = set(table) - {"ceiling", "default_classification", "profile", "org"}
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
        if "ceiling" not in table:
            raise ConfigError(f"{key}.ceiling", "missing")
        ceiling = authset_from_table(policy, table["ceiling"], f"{key}.ceiling")
        default = table.get("default_classification")
        if default is not None and (not isinstance(default, str) or policy.rank(default) is None):
            raise ConfigError(f"{key}.default_classification", "not a classification of the policy")
        profile = table.get("profile")
        if profile is not None and profile not in profiles:
            raise ConfigError(f"{key}.profile", f"no profile {profile!r} in [authz.profiles]")
        org = table.get("org")
        if org is not None and not isinstance(org, str):
            raise ConfigError(f"{key}.org", "must be a string")
        listeners[name] = ListenerGate(
            ceiling=ceiling, default_classification=default, profile=profile, org=org
        )
    authorities: dict[str, frozenset[str]] = {}
    raw_auth = raw.get("release_authorities", {})
    if not isinstance(raw_auth, dict):
        raise ConfigError("gate.release_authorities", "must be a table of org = [users]")
    for org, names in raw_auth.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"gate.release_authorities.{org}", "must be a list of usernames")
        authorities[org] = frozenset(names)
    partner_updates = raw.get("partner_updates", False)
    if not isinstance(partner_updates, bool):
        raise ConfigError("gate.partner_updates", "must be true or false")
    return GateConfig(
        policy=policy,
        authz=authz,
        listeners=listeners,
        release_authorities=authorities,
        partner_updates=partner_updates,
    )


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """An accepted event (rewritten with its authoritative label) or the reasons it was refused."""

    event: Event | None
    label: Label | None
    reasons: tuple[str, ...] = ()


def content_hash(data: bytes) -> str:
    """SHA-256 of released bytes: how two servers' audit logs cross-check each other."""
    return hashlib.sha256(data).hexdigest()


class Gate:
    """Label policy, authorizations, ingest rules and audit records for the router."""

    def __init__(
        self,
        config: GateConfig,
        *,
        audit: AuditSink | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.policy = config.policy
        self._audit = audit
        self._clock_ms = clock_ms
        self.audit_failed = False
        # Per label: its root marking and its <__seclabel> element (shared by every event
        # carrying it, never changed in place), made once (MAX_LABEL_MARKINGS).
        self._markings: dict[Label, tuple[labels.CotMarking, ET.Element, str]] = {}

    # --- authorizations -------------------------------------------------------------------

    def _listener(self, listener: str | None) -> ListenerGate | None:
        return self.config.listeners.get(listener or "")

    def _ceiling(self, listener: str | None) -> AuthSet:
        lg = self._listener(listener)
        return lg.ceiling if lg is not None else labels.no_authset(self.policy)

    def for_profile(self, profile: str | None, listener: str | None) -> AuthSet:
        """A user's authorizations: its profile intersected with the listener's ceiling."""
        authz = self.config.authz
        if profile is None or authz is None or profile not in authz.profiles:
            return labels.no_authset(self.policy)
        return labels.intersect_auths(self.policy, authz.profiles[profile], self._ceiling(listener))

    def for_certificate(
        self,
        *,
        issuer_fingerprint: str | None,
        subject: Mapping[str, str],
        listener: str,
        user_profile: str | None,
        user_org: str | None,
    ) -> tuple[str | None, AuthSet]:
        """(org, auths) of a certificate holder (labels.md 7c).

        A CA listed in ``[authz.cas]`` decides by its rules (the org comes from the CA). A
        certificate from this server's own CA that no rule covers takes the profile and org of
        the user it was issued to (``liaison user add --profile``).
        """
        authz = self.config.authz
        if (
            authz is not None
            and issuer_fingerprint is not None
            and authz.ca_by_fingerprint(issuer_fingerprint) is not None
        ):
            res = resolve_principal(authz, issuer_fingerprint, subject, self._ceiling(listener))
            return res.org, res.auths
        return user_org, self.for_profile(user_profile, listener)

    def for_anonymous(self, listener: str) -> tuple[str | None, AuthSet]:
        lg = self._listener(listener)
        if lg is None:
            return None, labels.no_authset(self.policy)
        return lg.org, self.for_profile(lg.profile, listener)

    def is_release_authority(self, principal: Principal, org: str) -> bool:
        return principal.name in self.config.release_authorities.get(org, frozenset())

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, event: Event, sender: Principal, prior: Label | None) -> IngestOutcome:
        """Apply the ingest rules; return the event carrying its authoritative label.

        The client's own ``__seclabel`` is read strictly (a label that cannot be parsed is a
        refusal, never "unlabelled"). The root attributes access/caveat/releasableTo are never
        trusted; they are rewritten from the label on output (TAK Server interop). ``prior`` is
        the stored label of the item the event changes (its uid, or the target of a delete):
        the sender must be allowed to change it, and an unlabelled update keeps it.
        """
        policy = self.policy
        try:
            claimed = labels.label_from_detail(policy, event.detail)
        except LabelError as exc:
            return IngestOutcome(None, None, ("bad_label", *exc.reasons))
        auths = sender.auths if sender.auths is not None else labels.no_authset(policy)
        org = sender.org
        if org is None:
            return IngestOutcome(None, None, ("sender_has_no_org",))
        if org not in policy.rel.value_set:
            # Refused before the default label is made: a label naming an organisation the
            # policy does not know cannot be built (labels.check_ingest refuses it the same way).
            return IngestOutcome(None, None, ("bad_sender_org",))
        lg = self._listener(sender.listener)
        default = None
        # The default is read only for a new item that carries no label (check_ingest); an
        # update keeps the stored label, so it is not made for every report of a known unit.
        if (
            claimed is None
            and prior is None
            and lg is not None
            and lg.default_classification is not None
        ):
            default = labels.listener_default_label(
                policy, lg.default_classification, event.time, originator=org
            )
        result = labels.check_ingest(
            policy,
            claimed,
            auths,
            org,
            default,
            prior=prior,
            partner_updates=self.config.partner_updates,
        )
        if not result.accepted or result.label is None:
            return IngestOutcome(None, None, result.reasons or ("rejected",))
        return IngestOutcome(self.labelled(event, result.label), result.label)

    def aggregate(
        self,
        parts: Sequence[Label | None],
        uploader: Principal,
        created_ms: int,
        *,
        prior: Label | None = None,
    ) -> tuple[Label | None, tuple[str, ...]]:
        """The label of an aggregate (a data package): the dominant label of its CoT parts, or
        the uploader's listener default when it has none; then the ingest rules, as for an event
        (the uploader may not assert what it could not read). (None, reasons) refuses.

        An unlabelled part (None) counts as the label it would get if sent on its own: the
        uploader's default label under :func:`labels.check_ingest`. Leaving it out would let the
        package reach readers that the part alone would not reach.

        ``prior`` is the stored label of what this replaces (a mission log entry being
        updated): the rules on changing a stored item apply (:func:`labels.check_ingest`: it
        must be visible to the sender and, unless ``partner_updates``, of its organisation; a
        label below it is refused; no label keeps it).
        """
        policy = self.policy
        org = uploader.org
        if org is None:
            return None, ("sender_has_no_org",)
        if org not in policy.rel.value_set:
            return None, ("bad_sender_org",)
        lg = self._listener(uploader.listener)
        default = None
        if lg is not None and lg.default_classification is not None:
            default = labels.listener_default_label(
                policy, lg.default_classification, created_ms, originator=org
            )
        auths = uploader.auths if uploader.auths is not None else labels.no_authset(policy)
        counted: list[Label] = []
        for part in parts:
            if part is None:
                alone = labels.check_ingest(policy, None, auths, org, default)
                if not alone.accepted or alone.label is None:
                    return None, alone.reasons or ("rejected",)
                part = alone.label
            counted.append(part)
        claimed: Label | None = None
        if counted:
            try:
                claimed = labels.dominant(policy, counted, originator=org, created_ms=created_ms)
            except LabelError as exc:
                return None, ("bad_label", *exc.reasons)
        result = labels.check_ingest(
            policy,
            claimed,
            auths,
            org,
            default,
            prior=prior,
            partner_updates=self.config.partner_updates,
        )
        if not result.accepted or result.label is None:
            return None, result.reasons or ("rejected",)
        return result.label, ()

    def labelled(self, event: Event, label: Label) -> Event:
        """``event`` with ``label`` as its one ``<__seclabel>`` and matching root attributes."""
        made = self._markings.get(label)
        if made is None:
            if len(self._markings) >= MAX_LABEL_MARKINGS:
                self._markings.clear()
            seclabel = labels.label_to_seclabel(self.policy, label)
            made = (
                labels.cot_marking(self.policy, label),
                seclabel,
                cot_xml.serialize_element(seclabel),
            )
            self._markings[label] = made
        marking, seclabel, seclabel_xml = made
        detail = labels.with_seclabel(self.policy, event.detail, label, seclabel=seclabel)
        xml = None
        if event.xml is not None and event.detail is not None:
            # The rewritten event's XML from the received bytes when they are of the plain
            # shape (render_relabelled): the same children, the label's element last, as
            # serialising ``detail`` would give, without walking it (docs/performance.md).
            xml = cot_xml.render_relabelled(
                event.xml,
                event,
                access=marking.access,
                caveat=marking.caveat,
                releasable_to=marking.releasable_to,
                appended=seclabel_xml,
            )
        return replace(
            event,
            detail=detail,
            access=marking.access,
            caveat=marking.caveat,
            releasable_to=marking.releasable_to,
            xml=xml,
            proto=None,
        )

    # --- audit ----------------------------------------------------------------------------

    def record(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> bool:
        """Write audit records before the releases they describe. False when the log failed:
        the caller must not release (and the router stops accepting until it recovers)."""
        if not entries or self._audit is None:
            return True
        try:
            self._audit.append_many(entries)
        except StorageError as exc:
            if not self.audit_failed:
                log.error("audit log cannot be written, releases stop: %s", exc)
            self.audit_failed = True
            return False
        return True

    @property
    def audit(self) -> AuditSink | None:
        return self._audit

    def recovered(self, audit: AuditSink) -> None:
        """A reopened audit log: releases may resume."""
        self._audit = audit
        if self.audit_failed:
            log.warning("audit log writable again, releases resume")
        self.audit_failed = False


def release_entries(
    *,
    path: str,
    uid: str,
    type: str,
    label: Label | None,
    sha256: str,
    recipients: Iterable[Principal],
) -> list[tuple[str, Mapping[str, object]]]:
    """One ``release`` record (``audit.release_record``) per recipient organisation other than
    the label's originator; a recipient without an organisation counts as ``"?"``."""
    if label is None:
        return []
    by_org: dict[str, list[str]] = {}
    for p in recipients:
        org = p.org or "?"
        if org != label.originator:
            by_org.setdefault(org, []).append(p.name)
    return [
        release_record(
            path=path,
            uid=uid,
            type=type,
            label_id=label.label_id,
            originator=label.originator,
            to_org=org,
            recipients=names,
            sha256=sha256,
        )
        for org, names in sorted(by_org.items())
    ]


def audit_paths(data_dir: Path, worker: int | None = None) -> tuple[Path, Path, Path]:
    """(log, signing key, public key) under DATA_DIR/audit/. A worker of ``liaison serve
    --workers N`` keeps its own chain, ``audit-wI.jsonl``, signed with the same key."""
    d = data_dir / "audit"
    log = d / ("audit.jsonl" if worker is None else f"audit-w{worker}.jsonl")
    return log, d / "signing.key", d / "signing.pub"


def worker_audit_logs(data_dir: Path) -> list[Path]:
    """The audit logs of ``liaison serve --workers N``'s workers in DATA_DIR/audit/, by number."""
    found = []
    for path in (data_dir / "audit").glob("audit-w*.jsonl"):
        number = path.name[len("audit-w") : -len(".jsonl")]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def load_or_create_signing_key(key_path: Path, pub_path: Path) -> Ed25519PrivateKey:
    """The server's Ed25519 audit key: created on first start (mode 0600), then reused."""
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(str(key_path), "is not an Ed25519 private key")
        return key
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    os.chmod(pub_path, 0o600)  # owner-only like everything in the data folder
    return key


def load_public_key(pub_path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pub_path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(str(pub_path), "is not an Ed25519 public key")
    return key
