"""The rules that turn a certificate, a login, a token or a listener into a Principal.

Groups come from the groups file and the users file; with a label policy, organisation and
authorizations come from the gate (through the small ``Authorizer`` interface, so this package does
not import the gate). ``Identities.resolver(listener)`` is what a stream listener uses to name its
peers, chosen by how that listener kind authenticates (``listeners.Auth``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from liaison.identity.certs import ServerPki, load_chain
from liaison.identity.directory import Directory
from liaison.identity.events import AccessEvents
from liaison.identity.groups import GroupRules
from liaison.identity.listeners import Auth, Listener
from liaison.identity.revocation import RevocationCache, SharedRevocations
from liaison.identity.tls import peer_identity
from liaison.identity.users import User, UserDirectory
from liaison.model.labels import AuthSet
from liaison.model.principal import ANON_GROUP, Principal, PrincipalKind
from liaison.protocol import cot_xml

log = logging.getLogger(__name__)

# Turns (client certificate DER or None, peer address) into a Principal, or None to refuse.
PrincipalResolver = Callable[[bytes | None, str], Principal | None]


class Authorizer(Protocol):
    """Organisation and authorizations under a label policy (``gate.Gate``)."""

    def for_profile(self, profile: str | None, listener: str | None) -> AuthSet: ...

    def for_certificate(
        self,
        *,
        issuer_fingerprint: str | None,
        subject: Mapping[str, str],
        listener: str,
        user_profile: str | None,
        user_org: str | None,
    ) -> tuple[str | None, AuthSet]: ...

    def for_anonymous(self, listener: str) -> tuple[str | None, AuthSet]: ...


class Identities:
    """Turns certificates, logins and listeners into Principals: groups from the groups and users
    files, and (with a label policy) organisation and authorizations from the gate."""

    def __init__(
        self,
        *,
        cert_username_regex: str,
        groups: GroupRules,
        users: UserDirectory | None,
        server_pki: ServerPki | None,
        gate: Authorizer | None = None,
        directory: Directory | None = None,
        shared: SharedRevocations | None = None,
    ) -> None:
        self._groups = groups
        self._users = users
        # Users and certificates other cluster nodes revoked (cluster/access.py): revoked here
        # exactly as those of this node's files, the users file's lookups included.
        self.shared = shared if shared is not None else SharedRevocations()
        if users is not None:
            users.shared = self.shared
        # Directory (LDAP) users who signed in: asked for a name the users file does not have.
        self.directory = directory
        self._pki = server_pki
        self._gate = gate
        # Re-reads the issued index only when the file changed, so a handshake costs no disk read.
        self._revocations = RevocationCache(server_pki) if server_pki else None
        self._issuers = load_chain(server_pki) if server_pki else []
        self._username_re = re.compile(cert_username_regex)
        # Revocation and sign-out as events: live sessions subscribe, the sweep asks `revoked`.
        self.events = AccessEvents(self.revoked, self.revoked_among, self.revocation_state)

    def anonymous(self, peer: str, listener: Listener) -> Principal:
        in_g, out_g = self._groups.resolve({"user": None})
        org, auths = self._gate.for_anonymous(listener) if self._gate else (None, None)
        return Principal(
            name=f"{listener}:{peer}",
            kind=PrincipalKind.ANONYMOUS,
            in_groups=in_g,
            out_groups=out_g,
            org=org,
            auths=auths,
            listener=listener,
        )

    def from_certificate(
        self, der: bytes | None, peer: str, listener: Listener = Listener.TLS
    ) -> Principal | None:
        if der is None or self._revocations is None:
            return None
        ident = peer_identity(der, issuers=self._issuers)
        if self._revocations.is_revoked(ident.serial) or ident.serial in self.shared.serials:
            log.warning("tls %s: refused revoked certificate serial %x", peer, ident.serial)
            return None
        match = self._username_re.search(ident.subject)
        name = match.group(1).replace("\\", "") if match else None
        if not name:
            log.warning("tls %s: no username in certificate subject %s", peer, ident.subject)
            return None
        facts = {
            "user": name,
            "cn": ident.common_name,
            "o": ident.org,
            "ou": ident.org_units[0] if ident.org_units else None,
            "fingerprint": ident.fingerprint_sha256,
        }
        in_g, out_g = self._groups.resolve(facts)
        user = self._user(name)
        if (user is not None and user.revoked) or name in self.shared.names:
            log.warning("tls %s: refused certificate of revoked user %s", peer, name)
            return None
        if user is not None:
            in_g, out_g = _merge_user_groups(in_g, out_g, user)
        org = ident.org or (user.org if user is not None else None)
        auths = None
        if self._gate is not None:
            subject = {k: v for k, v in (("CN", ident.common_name), ("O", ident.org)) if v}
            if ident.org_units:
                subject["OU"] = ident.org_units[0]
            org, auths = self._gate.for_certificate(
                issuer_fingerprint=ident.issuer_fingerprint_sha256,
                subject=subject,
                listener=listener,
                user_profile=user.profile if user is not None else None,
                user_org=org,
            )
        return Principal(
            name=name,
            in_groups=in_g,
            out_groups=out_g,
            org=org,
            cert_serial=ident.serial,
            auths=auths,
            listener=listener,
        )

    def resolver(self, listener: Listener) -> PrincipalResolver:
        """How a stream listener of this kind names its peers: by their client certificate, or
        anonymously as the listener's own clients (an <auth> login may follow)."""
        if listener.facts.auth is Auth.CERTIFICATE:
            return lambda der, peer: self.from_certificate(der, peer, listener)

        def anonymous(_der: bytes | None, peer: str) -> Principal | None:
            return self.anonymous(peer, listener)

        return anonymous

    def revoked(self, principal: Principal) -> bool:
        """Whether a connected principal's certificate or account has since been revoked."""
        serial = principal.cert_serial
        if serial is not None and (
            serial in self.shared.serials
            or (self._revocations is not None and self._revocations.is_revoked(serial))
        ):
            return True
        if principal.name in self.shared.names:
            return True
        user = self._user(principal.name)
        return user is not None and user.revoked

    def _user(self, name: str) -> User | None:
        """The user of the users file named ``name``, else the directory user of that name."""
        user = self._users.get(name) if self._users is not None else None
        if user is None and self.directory is not None:
            user = self.directory.get(name)
        return user

    def revocation_state(self) -> tuple[object, ...]:
        """Changes whenever a certificate or a user is revoked (or anything else in those two
        files changes): the sweep looks at live principals only after it changed, since a
        principal revoked before its handshake or login is refused there."""
        return (
            *self.local_revocation_state(),
            self.directory.stamp if self.directory is not None else None,
            self.shared.version,
        )

    def local_revocation_state(self) -> tuple[object, ...]:
        """Changes whenever this node's own files may hold a new revocation (the issued index,
        the users file): the cluster bus then announces what is new (cluster/access.py)."""
        return (
            self._revocations.stamp if self._revocations is not None else None,
            self._users.stamp if self._users is not None else None,
        )

    def local_revocations(self) -> tuple[frozenset[str], frozenset[int]]:
        """The users and certificate serials revoked in this node's own files (not the
        directory's, which every node asks itself, nor those other nodes announced)."""
        names = self._users.revoked_names() if self._users is not None else frozenset()
        serials = self._revocations.revoked() if self._revocations is not None else frozenset()
        return names, serials

    def revoked_among(self, principals: Iterable[Principal]) -> list[Principal]:
        """Those of ``principals`` whose certificate or account was revoked: :meth:`revoked` for
        many at once, looking at the revocation index and the user file once, not once each (the
        session sweep asks this for every live session twice a second)."""
        serials = self._revocations.revoked() if self._revocations is not None else frozenset()
        names = self._users.revoked_names() if self._users is not None else frozenset()
        if self.shared.serials:
            serials = serials | self.shared.serials
        if self.shared.names:
            names = names | self.shared.names
        if self.directory is not None:
            # a name of the users file is that local user, whatever the directory says (_user)
            local = self._users
            names |= {
                n for n in self.directory.revoked_names() if local is None or not local.get(n)
            }
        if not serials and not names:
            return []
        return [
            p
            for p in principals
            if (p.cert_serial is not None and p.cert_serial in serials) or p.name in names
        ]

    def _user_principal(self, user: User, listener: Listener) -> Principal:
        in_g, out_g = self._groups.resolve({"user": user.name})
        in_g, out_g = _merge_user_groups(in_g, out_g, user)
        auths = self._gate.for_profile(user.profile, listener) if self._gate else None
        return Principal(
            name=user.name,
            in_groups=in_g,
            out_groups=out_g,
            org=user.org,
            auths=auths,
            listener=listener,
        )

    def from_username(self, name: str, listener: Listener = Listener.ENROLL) -> Principal | None:
        """A user whose password (or token) was already checked, e.g. by HTTP Basic."""
        user = self._user(name)
        if user is None or user.revoked or name in self.shared.names:
            return None
        return self._user_principal(user, listener)

    def from_login(
        self, request: cot_xml.AuthRequest, listener: Listener = Listener.TCP
    ) -> Principal | None:
        if self._users is None or not request.username or request.password is None:
            return None
        user = self._users.verify_password(request.username, request.password)
        if user is None or user.revoked:
            log.warning("auth: login refused for %r", request.username)
            return None
        return self._user_principal(user, listener)


def _merge_user_groups(
    in_g: frozenset[str], out_g: frozenset[str], user: User
) -> tuple[frozenset[str], frozenset[str]]:
    """Groups from the users file add to those of the groups file; __ANON__ only when neither."""
    if not user.in_groups and not user.out_groups:
        return in_g, out_g
    anon = frozenset({ANON_GROUP})
    if in_g == anon and out_g == anon:
        in_g = out_g = frozenset()
    return in_g | frozenset(user.in_groups), out_g | frozenset(user.out_groups)
